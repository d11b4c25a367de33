"""The mailbox DHT: kademlia's routing table with our own RPC engine, storage and lookup."""
