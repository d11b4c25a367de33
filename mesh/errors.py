"""One exception tree for mesh-messenger, split by whose fault it is.

    MeshError
    ├── LocalError                 the user's (or calling code's) mistake
    │   ├── InvalidIdError         an ID with a typo, wrong length or checksum
    │   ├── InvalidInviteError     a network invite with a typo, or a bad network name
    │   ├── MessageTooLargeError   text over MAX_TEXT_BYTES
    │   ├── EmptyMessageError      nothing to send
    │   ├── UnknownContactError    a contact name that is not in the address book
    │   ├── IdentityExistsError    `init` on a home that already has an identity
    │   ├── NoIdentityError        a home with no identity
    │   ├── WrongPassphraseError   identity file could not be decrypted
    │   ├── AlreadyRunningError    a second daemon on one home
    │   ├── ControlRequestError    a control-socket request that is malformed or unknown
    │   ├── BundleError            `mesh share`: no install bundle, or a damaged one
    │   ├── InvalidAddressError    a HOST:PORT that is not an IP literal and port 1-65535
    │   └── GroupError             a group step refused: not a contact, not an admin, left
    ├── RemoteProtocolError        a peer (or the network) sent something bad
    │   ├── MalformedError         not decodable / wrong types / wrong sizes
    │   │   └── DatagramError      framing or header refused (carries a drop reason)
    │   ├── BadSignatureError      signature does not verify
    │   ├── NotForUsError          sealed to someone else, or addressed to someone else
    │   ├── ExpiredError           past its absolute expiry
    │   └── RefusedError           a peer refused a request (quota, format, auth)
    ├── NetworkError               nobody answered
    │   ├── RpcTimeout             one peer did not answer a call, even after the retry
    │   └── UnreachableError       no peer reachable; nothing was stored
    ├── StoreError                 the local SQLite store failed or is corrupt
    ├── NodeStoppedError           the daemon of a home stopped answering (chat)
    ├── DemoError                  a step of `mesh demo` did not happen in time
    └── SimulationStalled          nothing is scheduled: a simulation would block forever
                                   (also a RuntimeError, as it was before it moved here)

`cli.main.CliError` is not part of the tree: it is the adapter that turns a MeshError into
click's one-line error and exit code at the edge.

Peer misbehaviour never escapes a datagram handler: handlers catch RemoteProtocolError,
count it and drop the datagram.
"""

from __future__ import annotations


class MeshError(Exception):
    """Root of every error mesh-messenger raises on purpose."""


class LocalError(MeshError):
    """The caller's mistake; the message says what to do."""


class InvalidIdError(LocalError):
    pass


class InvalidInviteError(LocalError):
    pass


class MessageTooLargeError(LocalError):
    pass


class EmptyMessageError(LocalError):
    pass


class UnknownContactError(LocalError):
    pass


class NoRequestsError(LocalError):
    """The person does not accept requests from people who have not added them."""


class IdentityExistsError(LocalError):
    pass


class NoIdentityError(LocalError):
    pass


class WrongPassphraseError(LocalError):
    pass


class LockedError(WrongPassphraseError):
    """The home is locked and no passphrase was given (the message says only "locked")."""


class AlreadyRunningError(LocalError):
    pass


class ControlRequestError(LocalError):
    """A control request that is malformed or names an unknown operation."""


class BundleError(LocalError):
    """`mesh share`: no install bundle, or one that is incomplete or altered."""


class InvalidAddressError(LocalError):
    """A HOST:PORT typed by the user that is not an IP literal and a port 1-65535."""


class GroupError(LocalError):
    pass


class RemoteProtocolError(MeshError):
    """Something that came from a peer is bad. Dropped and counted, never fatal."""


class MalformedError(RemoteProtocolError):
    pass


class DatagramError(MalformedError):
    """A datagram refused by framing or header checks; `reason` is one word of
    `wire.DROP_REASONS`, safe as a counter name (never attacker data)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class BadSignatureError(RemoteProtocolError):
    pass


class NotForUsError(RemoteProtocolError):
    pass


class ExpiredError(RemoteProtocolError):
    pass


class RefusedError(RemoteProtocolError):
    pass


class NetworkError(MeshError):
    pass


class RpcTimeout(NetworkError):
    """The peer did not answer, even after the retry."""


class UnreachableError(NetworkError):
    pass


class StoreError(MeshError):
    pass


class NodeStoppedError(MeshError):
    """The daemon of the home does not answer any more."""


class DemoError(MeshError):
    """A step of the demo did not happen in time."""


class SimulationStalled(MeshError, RuntimeError):
    """Nothing is scheduled and nothing can happen: the simulation would block forever."""
