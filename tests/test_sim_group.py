"""Issue 17 in virtual time (mesh.sim.groups): a group over the simulated network,
members churning, one removed half-way, one offline for a day.

The issue's run (100 members over 300 peers, 50 messages, production settings) takes
several minutes of wall time on two shared cores: it runs with MESH_SLOW=1, and its
saved result is benchmarks/results/sim-group-300.json. The suite runs the same checks
on 8 members over 20 peers with the simulator's named `fast` settings."""

from __future__ import annotations

import os

import pytest

from mesh.sim.groups import GroupReport, GroupScenario, simulate_group


def check(report: GroupReport) -> None:
    summary = report.summary()
    print("\n", summary)
    assert report.joined == report.scenario.members  # every invitation arrived
    sent = [s for s in report.sent if s.message_id]
    assert len(sent) == report.scenario.messages and report.send_errors == 0
    assert report.missing == []  # every member who was one when it was sent has it
    assert report.duplicates == 0  # once
    assert report.leaked == []  # nothing sent after the removal opens for the removed
    assert any(s.at >= (report.removed_at_or_inf()) for s in sent)  # and some were sent
    assert report.away_expected > 0 and report.away_got == report.away_expected


def test_a_group_delivers_every_message_once_through_churn_removal_and_a_day_away() -> None:
    check(simulate_group(GroupScenario(peers=20, members=8, messages=8, settings="fast")))


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MESH_SLOW"), reason="several minutes: set MESH_SLOW=1")
def test_the_issue_run_100_members_over_300_peers() -> None:
    check(simulate_group(GroupScenario(peers=300, members=100, messages=50)))
