"""Issue 14 in virtual time: contacts' mailboxes change every day; under churn, every
acknowledged message is delivered once, including those sent around each midnight.

The full scenario of the issue (200 peers, 3 days) takes ~26 min of wall time on two
shared cores: it runs with MESH_SLOW=1 (its saved result: benchmarks/results/
sim-epochs-200.json). The suite runs the same checks on 25 peers over 2 days."""

from __future__ import annotations

import dataclasses
import os
import random

import pytest

from mesh.keyring import EPOCH_SECONDS
from mesh.sim import Scenario, simulate
from mesh.sim.plan import Event, Plan, make_plan
from mesh.sim.scenario import SIM_EPOCH

# Around each midnight: just before, at, and just after (relative to the boundary as the
# run's clock sees it; the setup's few virtual seconds shift them a little, both ways).
AROUND_MIDNIGHT = (-1800.0, -90.0, -5.0, 5.0, 90.0, 600.0)


def midnight_plan(scenario: Scenario) -> Plan:
    """The seed's plan, plus sends from its senders around every change of day."""
    plan = make_plan(scenario, random.Random(scenario.seed))
    rng = random.Random(scenario.seed + 7)
    first = EPOCH_SECONDS - SIM_EPOCH % EPOCH_SECONDS
    boundaries = [
        first + k * EPOCH_SECONDS for k in range(int(scenario.duration // EPOCH_SECONDS) + 1)
    ]
    seq = max((e.seq for e in plan.events if e.kind == "send"), default=-1) + 1
    extra = []
    for boundary in boundaries:
        for offset in AROUND_MIDNIGHT:
            at = boundary + offset
            if 0 < at < scenario.duration * 0.9:
                sender = rng.choice(plan.senders)
                recipient = rng.choice([s for s in range(scenario.peers) if s != sender])
                extra.append((at, sender, recipient, seq))
                seq += 1
    events = sorted(
        [(e.at, e.kind, e.peer, e.other, e.seq) for e in plan.events]
        + [(at, "send", p, o, q) for at, p, o, q in extra]
    )
    renumbered = tuple(Event(at, i, k, p, o, q) for i, (at, k, p, o, q) in enumerate(events))
    return dataclasses.replace(plan, events=renumbered)


def check(scenario: Scenario) -> None:
    plan = midnight_plan(scenario)
    report = simulate(scenario, plan=plan)
    acked = report.acked
    near = [
        s
        for s in acked
        if any(
            abs((s.at + SIM_EPOCH) % EPOCH_SECONDS - EPOCH_SECONDS * (x > 0)) < 1900 for x in (0, 1)
        )
    ]
    print(
        f"\n{scenario.peers} peers x {scenario.duration / 86400:.0f} days: "
        f"{len(acked)} acked ({len(near)} around midnight), lost {len(report.lost)}, "
        f"wall {report.wall_s:.1f} s"
    )
    assert len(acked) >= 0.8 * plan.count("send")
    assert len(near) >= len(AROUND_MIDNIGHT)
    assert report.lost == []  # every acknowledged message delivered...
    delivered = [s for s in acked if s.delivered_at is not None]
    assert report.protocol["received"] == len(delivered)  # ...each exactly once


def test_two_days_of_churn_deliver_everything_at_every_midnight() -> None:
    check(Scenario(peers=25, duration=2 * EPOCH_SECONDS, churn=0.3, seed=14))


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MESH_SLOW"), reason="~26 min: set MESH_SLOW=1")
def test_200_peers_three_days_of_churn_deliver_everything_at_every_midnight() -> None:
    check(Scenario(peers=200, duration=3 * EPOCH_SECONDS, churn=0.3, seed=14))
