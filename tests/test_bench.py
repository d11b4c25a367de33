"""`mesh bench` end to end on a dozen loopback peers: every documented JSON key is there
and its value is sane and complete. Never speed: the timings depend on the machine."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import math
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from cli import bench as cli_bench
from cli.main import cli
from mesh.tools import bench, bench_kv

PEERS = 12
TRIALS = 2


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    args = ["bench", "--peers", str(PEERS), "--trials", str(TRIALS), "--json"]
    outcome = CliRunner().invoke(cli, args)
    assert outcome.exit_code == 0, outcome.output
    last_line = outcome.stdout.strip().splitlines()[-1]
    parsed: dict[str, Any] = json.loads(last_line)
    return parsed


def assert_timing(value: Any, samples: int | None = None) -> None:
    assert set(value) >= {"p50", "p95", "n"}
    assert math.isfinite(value["p50"]) and value["p50"] > 0
    assert value["p95"] >= value["p50"]
    if samples is not None:
        assert value["n"] == samples


def test_top_level_keys(result: dict[str, Any]) -> None:
    assert result["peers"] == PEERS
    assert result["trials"] == TRIALS
    assert result["peer_kind"] == {"dht_server": 0, "node": PEERS}  # 12 < 20 senders
    assert result["loop"] in {"uvloop", "asyncio"}
    assert result["rss_kb_per_peer"] > 0
    assert result["extra_nodes"] == TRIALS + 1  # one recipient per trial, one online
    assert result["notes"] == [] or all(isinstance(n, str) for n in result["notes"])


def test_send_fetch_push_are_complete(result: dict[str, Any]) -> None:
    assert_timing(result["send_ms"], samples=bench_kv.MAILBOX_SENDERS * TRIALS)
    assert_timing(result["fetch20_ms"], samples=TRIALS)
    assert_timing(result["open20_ms"], samples=TRIALS)
    assert_timing(result["catchup_ms"], samples=TRIALS)
    assert_timing(result["push_ms"], samples=bench.PUSH_SAMPLES_PER_TRIAL * TRIALS)
    assert result["fetch20_complete"] == 1.0
    assert result["catchup_complete"] == 1.0
    assert result["push_complete"] == 1.0
    assert result["send_replicas"]["min"] >= 1


def test_our_dht_and_baselines_have_one_shape(result: dict[str, Any]) -> None:
    assert result["dht"]["mailbox_values"] == bench_kv.MAILBOX_SENDERS
    kademlia = result["baselines"]["kademlia"]
    opendht = result["baselines"]["opendht"]
    for name, kv in [("dht", result["dht"]), ("kademlia", kademlia), ("opendht", opendht)]:
        if kv is None:
            assert name == "opendht" and importlib.util.find_spec("opendht") is None
            continue
        assert_timing(kv["set_ms"], samples=(1 + bench_kv.MAILBOX_SENDERS) * TRIALS)
        assert_timing(kv["get_ms"], samples=TRIALS)
        assert 0 <= kv["mailbox_values"] <= bench_kv.MAILBOX_SENDERS
    assert kademlia["mailbox_values"] <= 1  # one value per key: the flaw we measure
    assert "dht_set_vs_kademlia" in result["ratios"]


def test_human_summary_prints(result: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    cli_bench._print_summary(result)
    out = capsys.readouterr().out
    assert "fetch20" in out and "kademlia" in out


def test_loopback_addresses_are_distinct_and_loopback() -> None:
    addresses = [bench_kv.loopback_address(i) for i in range(1000)]
    assert len(set(addresses)) == len(addresses)
    assert all(ipaddress.ip_address(a).is_loopback for a in addresses)


def test_percentile_and_summary() -> None:
    samples = [float(x) for x in range(1, 101)]
    assert bench_kv.percentile(samples, 0.5) == 50.0
    assert bench_kv.percentile(samples, 0.95) == 95.0
    assert bench_kv.percentile([3.0], 0.95) == 3.0
    assert math.isnan(bench_kv.percentile([], 0.5))
    assert bench_kv.summary([]) == {"p50": None, "p95": None, "n": 0}
    assert bench_kv.summary([2.0, 1.0]) == {"p50": 1.0, "p95": 2.0, "n": 2}


def test_too_few_peers_is_a_clear_error() -> None:
    outcome = CliRunner().invoke(cli, ["bench", "--peers", "1"])
    assert outcome.exit_code != 0


async def test_discovery_is_skipped_with_a_note_when_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "mesh.tools.bench_discovery", None)  # import now fails
    notes: list[str] = []
    assert await bench.discovery_result(1, notes) is None
    assert notes and notes[0].startswith("discovery: skipped")


def test_missing_baseline_is_null_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    notes: list[str] = []
    assert bench.run_worker("opendht", bench.BenchOptions(peers=2, trials=1), notes) is None
    assert notes and "not installed" in notes[0]
