"""What happens in a simulated run, decided up front from the seed (pure: no I/O).

`Scenario` holds the knobs of `mesh sim`; `make_plan` turns them into a sorted list of
`Event`s. Times are seconds since the start of the run (after the initial peers joined).

The model, so that `delivered == acked` is a fair target:

- `peers` peers are online at t = 0, each with its own address and identity.
- churn: `round(churn * peers)` times a random online peer leaves abruptly (no goodbye,
  in-flight sends are cut) between 5 % and 75 % of the run, and comes back with its
  store (same identity, outbox, held records) after 2 % to 20 % of the run, so every
  departed peer is back by 95 %. Half as many brand-new peers join over the same window.
- messages: `messages` sends spread between 5 % and 80 % of the run; sender `i % senders`
  of a fixed random set of senders writes to a random other peer that exists by then
  (online or not). A send whose sender is offline at that moment is skipped.
- partition: at `partition_at` a random half of all peers (newcomers included) is cut
  off from the other half, until `heal_at` (or the end of the run).
"""

from __future__ import annotations

import bisect
import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass

from mesh.dht.server import DhtConfig
from mesh.node import NodeOptions

CHURN_WINDOW = (0.05, 0.75)
DOWNTIME = (0.02, 0.20)
SEND_WINDOW = (0.05, 0.80)
NEW_PEERS_PER_DEPARTURE = 0.5


def sim_config() -> DhtConfig:
    """DHT settings of `--settings fast`, a simulator-only speed-up: slower background
    renewals than production (see docs/simulation.md for what each costs)."""
    return DhtConfig(listen_duration=3600, maintenance_interval=300.0)


def sim_options() -> NodeOptions:
    """Node settings of `--settings fast`: rare polling and outbox retries."""
    return NodeOptions(poll_interval=3600.0, live_poll_interval=3600.0, outbox_interval=300.0)


# Named settings: what a run's nodes use unless `config`/`options` are given. The
# default is what ships; anything else is named in the report.
SETTINGS: dict[str, tuple[Callable[[], DhtConfig], Callable[[], NodeOptions]]] = {
    "production": (DhtConfig, NodeOptions),
    "fast": (sim_config, sim_options),
}


def settings_diff(config: DhtConfig, options: NodeOptions) -> dict[str, dict[str, object]]:
    """The fields of `config` and `options` that differ from the production defaults."""
    out: dict[str, dict[str, object]] = {}
    for name, value, default in (("dht", config, DhtConfig()), ("node", options, NodeOptions())):
        ours, base = dataclasses.asdict(value), dataclasses.asdict(default)
        out[name] = {k: v for k, v in ours.items() if base[k] != v}
    return out


@dataclass(frozen=True)
class Scenario:
    peers: int = 20
    duration: float = 600.0
    churn: float = 0.0
    loss: float = 0.0
    senders: int | None = None  # default: min(peers, 10)
    messages: int | None = None  # default: 5 per sender
    partition_at: float | None = None
    heal_at: float | None = None
    seed: int = 1
    duplicate: float = 0.0
    real: bool = False
    settings: str = "production"  # a key of SETTINGS: the defaults of config and options
    config: DhtConfig | None = None  # None: the named settings' DhtConfig
    options: NodeOptions | None = None  # None: the named settings' NodeOptions
    charge_cpu: bool = False  # the virtual clock also advances by each callback's CPU time
    network_key: bool = False  # every peer in one private mesh: every datagram sealed

    def __post_init__(self) -> None:
        if self.settings not in SETTINGS:
            raise ValueError(f"unknown settings {self.settings!r}: one of {', '.join(SETTINGS)}")
        make_config, make_options = SETTINGS[self.settings]
        if self.config is None:
            object.__setattr__(self, "config", make_config())
        if self.options is None:
            object.__setattr__(self, "options", make_options())
        problem = self._problem()
        if problem:
            raise ValueError(problem)

    @property
    def dht_config(self) -> DhtConfig:
        assert self.config is not None  # set by __post_init__
        return self.config

    @property
    def node_options(self) -> NodeOptions:
        assert self.options is not None  # set by __post_init__
        return self.options

    def settings_report(self) -> dict[str, object]:
        """Which settings ran: the name, and every field that differs from production."""
        diff = settings_diff(self.dht_config, self.node_options)
        custom = self.settings == "production" and any(diff.values())
        return {"name": "custom" if custom else self.settings, "differs_from_production": diff}

    def _problem(self) -> str | None:
        if self.peers < 2:
            return "a simulation needs at least 2 peers"
        if self.duration <= 0:
            return "the duration must be positive"
        if not 0.0 <= self.churn <= 1.0:
            return "churn is a fraction of the peers, between 0 and 1"
        if not 0.0 <= self.loss < 1.0 or not 0.0 <= self.duplicate < 1.0:
            return "loss and duplication are probabilities, at least 0 and below 1"
        if self.senders is not None and not 1 <= self.senders <= self.peers:
            return "senders must be between 1 and the number of peers"
        if self.messages is not None and self.messages < 0:
            return "messages cannot be negative"
        if self.heal_at is not None and self.partition_at is None:
            return "--heal-at needs --partition-at"
        if self.partition_at is not None:
            heal = self.duration if self.heal_at is None else self.heal_at
            if not 0 <= self.partition_at < heal <= self.duration:
                return "need 0 <= partition-at < heal-at <= duration"
        return None

    @property
    def sender_count(self) -> int:
        return self.senders if self.senders is not None else min(self.peers, 10)

    @property
    def message_count(self) -> int:
        return self.messages if self.messages is not None else 5 * self.sender_count


@dataclass(frozen=True, order=True)
class Event:
    at: float
    order: int  # ties: events at the same time keep their planned order
    kind: str  # send | leave | return | join | partition | heal
    peer: int = -1  # the peer slot (the sender, for a send)
    other: int = -1  # the recipient slot of a send
    seq: int = -1  # the message number of a send


@dataclass(frozen=True)
class Plan:
    slots: int  # peers that ever exist: the initial ones, then the newcomers
    senders: tuple[int, ...]
    sides: tuple[frozenset[int], frozenset[int]]  # the halves of a partition
    events: tuple[Event, ...]

    def count(self, kind: str) -> int:
        return sum(1 for e in self.events if e.kind == kind)


def make_plan(scenario: Scenario, rng: random.Random) -> Plan:
    d = scenario.duration
    n = scenario.peers
    departures = round(scenario.churn * n)
    newcomers = round(departures * NEW_PEERS_PER_DEPARTURE)
    slots = n + newcomers
    raw: list[tuple[float, str, int, int, int]] = []
    joined_at = [0.0] * n + sorted(rng.uniform(*_window(d, CHURN_WINDOW)) for _ in range(newcomers))
    raw += [(joined_at[s], "join", s, -1, -1) for s in range(n, slots)]
    raw += _churn(departures, joined_at, d, rng)
    senders = tuple(rng.sample(range(n), scenario.sender_count))
    raw += _sends(scenario.message_count, senders, joined_at, d, rng)
    shuffled = list(range(slots))
    rng.shuffle(shuffled)
    half = frozenset(shuffled[: slots // 2])
    if scenario.partition_at is not None:
        raw.append((scenario.partition_at, "partition", -1, -1, -1))
        if scenario.heal_at is not None:
            raw.append((scenario.heal_at, "heal", -1, -1, -1))
    raw.sort(key=lambda r: r[0])
    events = tuple(Event(at, i, kind, p, o, q) for i, (at, kind, p, o, q) in enumerate(raw))
    return Plan(slots, senders, (half, frozenset(range(slots)) - half), events)


def _window(duration: float, fractions: tuple[float, float]) -> tuple[float, float]:
    return (duration * fractions[0], duration * fractions[1])


def _churn(
    departures: int, joined_at: list[float], d: float, rng: random.Random
) -> list[tuple[float, str, int, int, int]]:
    """Leave and return times; a peer only leaves while it is online."""
    events: list[tuple[float, str, int, int, int]] = []
    back_at: dict[int, float] = {}
    for t in sorted(rng.uniform(*_window(d, CHURN_WINDOW)) for _ in range(departures)):
        slot = _pick_online(bisect.bisect_right(joined_at, t), back_at, t, rng)
        if slot is None:
            continue
        back_at[slot] = t + rng.uniform(*_window(d, DOWNTIME))
        events.append((t, "leave", slot, -1, -1))
        events.append((back_at[slot], "return", slot, -1, -1))
    return events


def _pick_online(
    existing: int, back_at: dict[int, float], t: float, rng: random.Random
) -> int | None:
    for _ in range(64):  # most peers are online: a few draws find one
        slot = rng.randrange(existing)
        if back_at.get(slot, -1.0) < t:
            return slot
    online = [s for s in range(existing) if back_at.get(s, -1.0) < t]
    return rng.choice(online) if online else None


def _sends(
    count: int, senders: tuple[int, ...], joined_at: list[float], d: float, rng: random.Random
) -> list[tuple[float, str, int, int, int]]:
    events: list[tuple[float, str, int, int, int]] = []
    times = sorted(rng.uniform(*_window(d, SEND_WINDOW)) for _ in range(count))
    for seq, t in enumerate(times):
        sender = senders[seq % len(senders)]
        recipient = rng.randrange(bisect.bisect_right(joined_at, t) - 1)
        if recipient >= sender:
            recipient += 1  # anyone who exists by then but the sender
        events.append((t, "send", sender, recipient, seq))
    return events
