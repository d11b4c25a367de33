"""mesh sim: the virtual clock, the in-memory network, the plan, and small seeded runs of
real nodes with exact expected outcomes."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli.main import cli
from mesh.dht.server import DhtConfig, DhtServer
from mesh.node import Node, NodeOptions
from mesh.sim import (
    Event,
    LinkModel,
    Network,
    Plan,
    Scenario,
    SimulationStalled,
    VirtualTimeLoop,
    make_plan,
    run_virtual,
    simulate,
)
from mesh.sim.report import percentile

VOLATILE = ("wall_s", "cpu_s", "rss_mb")


def stable(report_json: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report_json.items() if k not in VOLATILE}


# -- clock ----------------------------------------------------------------------------


def test_virtual_clock_jumps_to_each_timer_in_order() -> None:
    async def main() -> list[tuple[float, str]]:
        loop = asyncio.get_running_loop()
        seen: list[tuple[float, str]] = []
        loop.call_later(7200.0, lambda: seen.append((loop.time(), "late")))
        loop.call_later(0.25, lambda: seen.append((loop.time(), "early")))
        await asyncio.sleep(3600.0)
        seen.append((loop.time(), "slept"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 10.0)
        await asyncio.sleep(3600.0)
        return seen

    assert run_virtual(main(), start=100.0) == [
        (100.25, "early"),
        (3700.0, "slept"),
        (7300.0, "late"),
    ]


def test_virtual_clock_still_serves_real_io() -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(None, sum, [1, 2, 3])
        assert loop.time() == 0.0  # waiting for a thread does not move simulated time
        return result

    assert run_virtual(main()) == 6


def test_a_loop_with_nothing_to_do_reports_a_stall() -> None:
    loop = VirtualTimeLoop(stall_timeout=0.01)
    try:
        with pytest.raises(SimulationStalled):
            loop.run_until_complete(asyncio.Event().wait())
    finally:
        loop.close()


# -- network ----------------------------------------------------------------------------


class Recorder(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[float, bytes, Any]] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append((asyncio.get_running_loop().time(), data, addr))


async def two_endpoints(network: Network) -> tuple[Any, Recorder, Recorder]:
    a, b = Recorder(), Recorder()
    ta, _ = await network.bind(lambda: a, "10.0.0.1", 1)  # type: ignore[arg-type,return-value]
    await network.bind(lambda: b, "10.0.0.2", 1)  # type: ignore[arg-type,return-value]
    return ta, a, b


def test_network_delays_every_datagram_by_the_link_latency() -> None:
    async def main() -> list[tuple[float, bytes, Any]]:
        network = Network(random.Random(1), LinkModel(base=0.01, spread=0.0, jitter=0.0))
        ta, _, b = await two_endpoints(network)
        for i in range(3):
            ta.sendto(bytes([i]), ("10.0.0.2", 1))
        ta.sendto(b"nobody", ("10.0.0.9", 1))
        await asyncio.sleep(1.0)
        assert network.statistics() == {"sent": 4, "delivered": 3, "unreachable": 1}
        return b.got

    got = run_virtual(main())
    assert [(round(t, 9), d, a) for t, d, a in got] == [
        (0.01, b"\x00", ("10.0.0.1", 1)),
        (0.01, b"\x01", ("10.0.0.1", 1)),
        (0.01, b"\x02", ("10.0.0.1", 1)),
    ]


def test_network_also_runs_on_a_plain_asyncio_loop() -> None:
    async def main() -> list[bytes]:
        network = Network(random.Random(1), LinkModel(base=0.001, spread=0.0, jitter=0.0))
        ta, _, b = await two_endpoints(network)
        ta.sendto(b"first", ("10.0.0.2", 1))
        ta.sendto(b"second", ("10.0.0.2", 1))
        for _ in range(200):  # bounded: about 1 ms of real time is needed
            if len(b.got) == 2:
                break
            await asyncio.sleep(0.005)
        return [d for _, d, _ in b.got]

    assert asyncio.run(main()) == [b"first", b"second"]


def test_network_loss_and_duplication_follow_the_seed() -> None:
    async def main(seed: int) -> tuple[int, dict[str, int]]:
        network = Network(random.Random(seed), LinkModel(loss=0.2, duplicate=0.1))
        ta, _, b = await two_endpoints(network)
        for _ in range(2000):
            ta.sendto(b"x", ("10.0.0.2", 1))
        await asyncio.sleep(1.0)
        return len(b.got), network.statistics()

    first, again, other = run_virtual(main(5)), run_virtual(main(5)), run_virtual(main(6))
    assert first == again != other
    count, stats = first
    assert 300 < stats["lost"] < 500 and 120 < stats["duplicated"] < 240
    assert count == 2000 - stats["lost"] + stats["duplicated"]


def test_partition_drops_datagrams_in_flight_and_heal_restores() -> None:
    async def main() -> tuple[int, dict[str, int]]:
        network = Network(random.Random(1))
        ta, _, b = await two_endpoints(network)
        ta.sendto(b"in flight", ("10.0.0.2", 1))
        network.impairments.partition([["10.0.0.1"], ["10.0.0.2"]])
        ta.sendto(b"during", ("10.0.0.2", 1))
        await asyncio.sleep(1.0)
        network.impairments.heal()
        ta.sendto(b"after", ("10.0.0.2", 1))
        await asyncio.sleep(1.0)
        assert [d for _, d, _ in b.got] == [b"after"]
        return len(b.got), network.statistics()

    _, stats = run_virtual(main())
    assert stats["blocked"] == 2 and stats["delivered"] == 1


def test_link_model_rejects_impossible_probabilities() -> None:
    with pytest.raises(ValueError, match="loss"):
        LinkModel(loss=1.0)


# -- plan -----------------------------------------------------------------------------


def test_plan_churn_returns_every_departed_peer_before_the_end() -> None:
    scenario = Scenario(peers=40, duration=1000, churn=0.5, messages=60, seed=3)
    plan = make_plan(scenario, random.Random(3))
    leaves = [e for e in plan.events if e.kind == "leave"]
    returns = [e for e in plan.events if e.kind == "return"]
    assert len(leaves) == len(returns) == 20 and plan.count("join") == 10
    assert plan.slots == 50
    for leave in leaves:
        back = min(r.at for r in returns if r.peer == leave.peer and r.at > leave.at)
        assert back <= 0.95 * scenario.duration
    assert list(plan.events) == sorted(plan.events)
    joined = {e.peer: e.at for e in plan.events if e.kind == "join"}
    for send in (e for e in plan.events if e.kind == "send"):
        assert send.peer != send.other and joined.get(send.other, 0.0) <= send.at
        assert send.peer in plan.senders


def test_scenario_rejects_contradictory_options() -> None:
    with pytest.raises(ValueError, match="heal-at needs"):
        Scenario(heal_at=10)
    with pytest.raises(ValueError, match="partition-at < heal-at"):
        Scenario(duration=100, partition_at=50, heal_at=40)
    with pytest.raises(ValueError, match="senders"):
        Scenario(peers=3, senders=4)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (50, 95, 99)] == [50.0, 95.0, 99.0]
    assert percentile([], 50) is None


# -- whole runs (real nodes, virtual time) ------------------------------------------------


def test_same_seed_same_report_under_churn_and_loss() -> None:
    scenario = Scenario(peers=16, duration=400, churn=0.3, loss=0.05, messages=24, seed=11)
    first = simulate(scenario).to_json()
    again = simulate(scenario).to_json()
    assert stable(first) == stable(again)
    assert first["events"] == {"join": 2, "leave": 5, "return": 5, "send": 24}
    assert first["network"]["lost"] > 0 and first["acked"] > 0
    assert first["delivered"] == first["acked"] and first["lost"] == []
    assert first["errors"] == {}  # no join or departure failed
    other = simulate(Scenario(peers=16, duration=400, churn=0.3, loss=0.05, messages=24, seed=12))
    assert stable(other.to_json()) != stable(first)


RUN_IN_CHILD = (
    "import json; from mesh.sim import Scenario, simulate; "
    "print(json.dumps(simulate(Scenario(peers=8, duration=200, loss=0.1, churn=0.25, "
    "messages=8, seed=9)).to_json()))"
)


def test_same_seed_same_report_across_processes_and_hash_seeds() -> None:
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        child = subprocess.run(
            [sys.executable, "-c", RUN_IN_CHILD],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        outputs.append(stable(json.loads(child.stdout.strip().splitlines()[-1])))
    assert outputs[0] == outputs[1]
    assert outputs[0]["events"]["leave"] == 2 and outputs[0]["network"]["lost"] > 0


def test_heavy_loss_still_delivers_every_acked_message() -> None:
    report = simulate(Scenario(peers=12, duration=300, loss=0.2, messages=20, seed=4))
    data = report.to_json()
    assert data["network"]["lost"] > 0.15 * data["network"]["sent"]
    assert data["delivered"] == data["acked"] and data["lost"] == []
    # A send may fail outright (UnreachableError): it stays queued and the outbox delivers it.
    assert data["acked"] + data["delivered_unacked"] == 20
    # Deliveries that waited for a retransmission (rpc_timeout: 1 s) make the tail. (How
    # many of them there are, and so the median, depends on the random stream.)
    assert data["latency_ms"]["p95"] > 1000


def test_partition_then_heal_delivers_what_crossed_it_after_the_heal() -> None:
    scenario = Scenario(peers=16, duration=900, messages=30, partition_at=100, heal_at=400, seed=2)
    report = simulate(scenario)
    data = report.to_json()
    assert data["network"]["blocked"] > 0
    assert data["delivered"] == data["acked"] == 30 and data["lost"] == []
    half = set(make_plan(scenario, random.Random(2)).sides[0])
    crossing = [
        s for s in report.sent if 100 < s.at < 400 and (s.sender in half) != (s.recipient in half)
    ]
    assert crossing, "the seed should put some messages across the cut"
    for sent in crossing:
        assert sent.delivered_at is not None and sent.delivered_at >= 400


def staged(events: list[tuple[float, str, int, int]], slots: int = 8) -> Plan:
    return Plan(
        slots=slots,
        senders=(0,),
        sides=(frozenset(range(slots // 2)), frozenset(range(slots // 2, slots))),
        events=tuple(
            Event(at, i, kind, peer, other, seq=i if kind == "send" else -1)
            for i, (at, kind, peer, other) in enumerate(events)
        ),
    )


def test_offline_recipient_gets_its_mail_when_it_comes_back() -> None:
    plan = staged([(5.0, "leave", 1, -1), (10.0, "send", 0, 1), (200.0, "return", 1, -1)])
    report = simulate(Scenario(peers=8, duration=300, seed=5), plan=plan)
    (sent,) = report.sent
    assert sent.acked and sent.delivered_at is not None
    assert 200.0 <= sent.delivered_at < 230.0  # fetched on rejoin, not at the next poll


def test_sender_killed_mid_send_is_not_lost_and_its_outbox_delivers_later() -> None:
    plan = staged([(10.0, "send", 0, 1), (10.001, "leave", 0, -1), (100.0, "return", 0, -1)])
    report = simulate(Scenario(peers=8, duration=300, seed=6), plan=plan)
    data = report.to_json()
    (sent,) = report.sent
    assert sent.error == "sender left" and not sent.acked
    assert data["lost"] == [] and data["delivered_unacked"] == 1
    assert sent.delivered_at is not None and sent.delivered_at >= 100.0


# -- the command ----------------------------------------------------------------------


def test_cli_json_is_the_last_line_and_has_the_promised_fields(tmp_path: Path) -> None:
    png = tmp_path / "run.png"
    args = ["sim", "--peers", "8", "--duration", "120", "--messages", "6", "--seed", "3"]
    result = CliRunner().invoke(cli, [*args, "--json", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output.strip().splitlines()[-1])
    for field in ("peers", "sim_s", "wall_s", "sent", "acked", "delivered", "lost", "rss_mb"):
        assert field in data
    assert set(data["latency_ms"]) == {"p50", "p95", "p99"}
    assert data["peers"] == 8 and data["sim_s"] == 120.0 and data["delivered"] == 6
    assert png.read_bytes().startswith(b"\x89PNG")


def test_cli_explains_bad_options_and_a_missing_plot_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result = CliRunner().invoke(cli, ["sim", "--heal-at", "30"])
    assert result.exit_code == 2 and "--heal-at needs --partition-at" in result.output
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = CliRunner().invoke(cli, ["sim", "--plot", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    assert "pip install 'mesh-messenger[plot]'" in result.output


# -- what runs: settings, delivery paths, CPU charged to the clock ------------------------


def test_the_simulator_runs_the_production_defaults_unless_told_otherwise() -> None:
    assert Scenario().config == DhtConfig() and Scenario().options == NodeOptions()
    assert Scenario().settings_report() == {
        "name": "production",
        "differs_from_production": {"dht": {}, "node": {}},
    }
    fast = Scenario(settings="fast").settings_report()
    assert fast["name"] == "fast"
    assert fast["differs_from_production"]["node"]["poll_interval"] == 3600.0
    custom = Scenario(options=NodeOptions(poll_interval=5.0)).settings_report()
    assert custom == {
        "name": "custom",
        "differs_from_production": {"dht": {}, "node": {"poll_interval": 5.0}},
    }
    with pytest.raises(ValueError, match="unknown settings"):
        Scenario(settings="turbo")


def test_the_report_says_which_settings_ran_and_how_each_message_came() -> None:
    data = simulate(Scenario(peers=10, duration=300, messages=12, seed=5)).to_json()
    assert data["settings"]["name"] == "production"
    assert data["delivered"] == data["acked"] == 12
    # Every delivery is counted once, by the path that brought it; all online: push.
    assert sum(data["delivered_via"].values()) == data["delivered"]
    assert data["delivered_via"]["push"] == data["delivered"]


def test_a_node_whose_listen_is_live_polls_rarely_and_often_without_one() -> None:
    async def main() -> tuple[bool, bool, bool]:
        net = Network(random.Random(1))
        first = await Node.start(host="10.1.0.1", port=4000, bind=net.bind)
        second = await Node.start(
            host="10.1.0.2", port=4000, bootstrap=[first.address], bind=net.bind
        )
        now = asyncio.get_running_loop().time()
        minute_ago = now - 60.0
        live = not second.poll_due(minute_ago, now)  # a live listen: not after 60 s ...
        rare = second.poll_due(now - second.options.live_poll_interval, now)  # ... but then
        second.subscription.live_until = -1e9  # the grant ran out, no renewal got through
        dead = second.poll_due(minute_ago, now)  # every poll_interval (30 s) again
        await asyncio.gather(first.stop(), second.stop())
        return live, rare, dead

    assert run_virtual(main()) == (True, True, True)


def test_charge_cpu_moves_the_virtual_clock_by_the_cpu_time_spent() -> None:
    async def burn() -> float:
        loop = asyncio.get_running_loop()
        started = time.thread_time()
        while time.thread_time() - started < 0.05:
            pass
        await asyncio.sleep(0)
        return loop.time()

    assert run_virtual(burn()) == 0.0  # by default, CPU is free in virtual time
    charged = run_virtual(burn(), charge_cpu=True)
    assert 0.05 <= charged < 5.0


def test_an_idle_network_smaller_than_k_does_not_look_itself_up_every_round() -> None:
    """A table thinner than k in a network smaller than k stays thin: one lookup per
    change of the table, not one every maintenance round (was ~9 finds per peer per 30 s)."""

    async def main() -> int:
        net = Network(random.Random(2))
        servers = [DhtServer(random.Random(i).randbytes(20)) for i in range(10)]
        for i, server in enumerate(servers):
            await server.listen(f"10.2.0.{i + 1}", 4000, net.bind)
        for server in servers[1:]:
            await server.bootstrap([("10.2.0.1", 4000)])
        await asyncio.sleep(120.0)  # joined, verified, first maintenance rounds done
        before = sum(s.protocol.stats["requests_out"] for s in servers if s.protocol)
        await asyncio.sleep(1800.0)  # idle: 60 maintenance rounds each
        after = sum(s.protocol.stats["requests_out"] for s in servers if s.protocol)
        await asyncio.gather(*(s.close() for s in servers))
        return after - before

    assert run_virtual(main()) < 10 * 10  # under 10 requests per peer in half an hour
