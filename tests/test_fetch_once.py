"""Issue 18 item 11: `Node.fetch()` returns every received message not yet returned by
`fetch()` or `messages()`, including those `start()` already fetched; each message once."""

from __future__ import annotations

from pathlib import Path

from netutil import bounded, prepare_contacts, start_network, stop_all

from mesh import Node


async def test_fetch_after_start_returns_what_start_found(tmp_path: Path) -> None:
    home = tmp_path / "r"
    nodes = await start_network(6, seed=18)
    away = await Node.start(home=home, host="127.0.0.1")
    prepare_contacts([away], nodes)
    recipient_id = away.id
    await away.stop()
    try:
        await bounded(nodes[0].send(recipient_id, "while you were away"))
        back = await Node.start(home=home, host="127.0.0.1", bootstrap=[nodes[3].address])
        try:
            assert [m.text for m in back.inbox()] == ["while you were away"]  # start fetched
            got = await bounded(back.fetch())
            assert [m.text for m in got] == ["while you were away"]
            assert await bounded(back.fetch()) == []  # once each

            await bounded(nodes[1].send(recipient_id, "sent while running"))
            got = await bounded(back.fetch())  # pushed or fetched now: returned either way
            assert [m.text for m in got] == ["sent while running"]

            await bounded(nodes[2].send(recipient_id, "third"))
            await bounded(back.fetch_mailbox())  # accepted, not returned yet
            stream = back.messages()
            assert (await bounded(anext(stream))).text == "third"
            assert await bounded(back.fetch()) == []  # messages() returned it already
            assert len(back.inbox()) == 3
        finally:
            await back.stop()
    finally:
        await stop_all(nodes)
