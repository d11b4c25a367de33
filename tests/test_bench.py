"""`mesh bench` end to end on a dozen loopback peers: every documented JSON key is there
and its value is sane and complete. Never speed: the timings depend on the machine."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli import bench as cli_bench
from cli.main import cli
from mesh.errors import LocalError
from mesh.tools import bench, bench_kv

PEERS = 26  # 20 sending Nodes and 6 DhtServer-only peers (the cold readers)
TRIALS = 2
HAVE_OPENDHT = importlib.util.find_spec("opendht") is not None
needs_opendht = pytest.mark.skipif(
    not HAVE_OPENDHT, reason="OpenDHT is not installed: pip install 'mesh-messenger[bench]'"
)


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    args = ["bench", "--peers", str(PEERS), "--trials", str(TRIALS), "--group", "6", "--json"]
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


def systems(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every DHT whose key/value trials ran: ours, ours at k = 8, each baseline."""
    ours = result["dht"] | {"replication": result["replication"]}
    out = {"dht": ours | {"preparation": result["preparation"]}, "k8": result["equal_work"]}
    out.update({n: b for n, b in result["baselines"].items() if b is not None})
    return out


def test_top_level_keys(result: dict[str, Any]) -> None:
    assert result["peers"] == PEERS
    assert result["trials"] == TRIALS
    assert result["peer_kind"] == {"dht_server": PEERS - 20, "node": 20}
    assert result["store"] == "memory"
    assert result["loop"] in {"uvloop", "asyncio"}
    assert result["rss_kb_per_peer"] > 0
    # Nothing failed: a baseline that did not run is a note (and only OpenDHT may be absent).
    expected = (
        [] if HAVE_OPENDHT else ["opendht: not installed (pip install 'mesh-messenger[bench]')"]
    )
    assert result["notes"] == expected


def test_send_fetch_push_are_complete(result: dict[str, Any]) -> None:
    assert_timing(result["send_ms"], samples=bench_kv.MAILBOX_SENDERS * TRIALS)
    assert_timing(result["fetch20_cold_ms"], samples=TRIALS)
    assert_timing(result["fetch20_warm_ms"], samples=TRIALS)
    assert_timing(result["open20_ms"], samples=TRIALS)
    assert_timing(result["catchup_ms"], samples=TRIALS)
    assert_timing(result["push_ms"], samples=bench.PUSH_SAMPLES_PER_TRIAL * TRIALS)
    assert result["fetch20_cold_complete"] == 1.0
    assert result["fetch20_warm_complete"] == 1.0
    assert result["catchup_complete"] == 1.0
    assert result["push_complete"] == 1.0
    assert result["send_replicas"]["min"] >= 1


def test_a_group_message_is_one_put_and_reaches_every_member(result: dict[str, Any]) -> None:
    assert result["group_members"] == result["group_joined"] == 6
    assert_timing(result["group_send_ms"], TRIALS * 5)
    assert result["group_send_replicas_min"] >= 1
    assert result["group_push_complete"] == 1.0
    assert_timing(result["group_push_all_ms"], TRIALS * 5)
    assert result["group_push_all_ms"]["p50"] >= result["group_push_first_ms"]["p50"]
    assert result["group_send_vs_send"] is not None and result["group_send_vs_send"] > 0


def test_every_dht_gets_the_same_preparation(result: dict[str, Any]) -> None:
    preparations = {name: kv["preparation"] for name, kv in systems(result).items()}
    assert len(preparations) == (4 if HAVE_OPENDHT else 3)
    expected = {"policy": "settle", "settle_s": bench_kv.SETTLE_S, "gc_freeze": True}
    for name, preparation in preparations.items():
        assert preparation == expected | {"bucket_refresh": False}, name


def test_replication_factors_are_reported(result: dict[str, Any]) -> None:
    factors = {name: kv["replication"]["k"] for name, kv in systems(result).items()}
    assert factors["dht"] == 20 and factors["k8"] == 8 and factors["kademlia"] == 20
    if HAVE_OPENDHT:
        assert factors["opendht"] == factors["k8"]  # the equal-work comparison
    assert "after 10 of 20" in result["replication"]["put_returns"]
    assert "after 8 of 8" in result["equal_work"]["replication"]["put_returns"]


def test_our_dht_and_baselines_have_one_shape(result: dict[str, Any]) -> None:
    for name, kv in systems(result).items():
        assert_timing(kv["set_ms"], samples=(1 + bench_kv.MAILBOX_SENDERS) * TRIALS)
        assert_timing(kv["get_ms"], samples=TRIALS)
        assert_timing(kv["mailbox_ms"], samples=TRIALS)
        assert 0 <= kv["mailbox_values"] <= bench_kv.MAILBOX_SENDERS, name
    assert result["dht"]["mailbox_values"] == bench_kv.MAILBOX_SENDERS
    assert result["equal_work"]["mailbox_values"] == bench_kv.MAILBOX_SENDERS
    assert result["baselines"]["kademlia"]["mailbox_values"] <= 1  # one value per key


def test_ratios_divide_like_by_like(result: dict[str, Any]) -> None:
    def p50(value: dict[str, Any]) -> float:
        return float(value["p50"])

    ratios = result["ratios"]
    for name, base in result["baselines"].items():
        if base is None:
            continue
        for op in ("set", "get", "mailbox"):
            want = round(p50(result["dht"][f"{op}_ms"]) / p50(base[f"{op}_ms"]), 2)
            assert ratios[f"dht_{op}_vs_{name}"] == want
        cold = round(p50(result["fetch20_cold_ms"]) / p50(base["mailbox_ms"]), 2)
        assert ratios[f"fetch20_cold_vs_{name}_mailbox"] == cold
    assert not any(k.startswith("send_vs") for k in ratios)  # a send is not a set


@needs_opendht
def test_opendht_baseline_ran(result: dict[str, Any]) -> None:
    opendht = result["baselines"]["opendht"]
    assert opendht is not None and opendht["mailbox_values"] >= 1
    k8 = result["equal_work"]
    want = round(k8["set_ms"]["p50"] / opendht["set_ms"]["p50"], 2)
    assert result["ratios"]["k8_set_vs_opendht"] == want


def test_human_summary_shows_the_figures(
    result: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    cli_bench._print_summary(result)
    lines = {line.split("  ")[0].strip(): line for line in capsys.readouterr().out.splitlines()}
    assert f"{result['fetch20_cold_ms']['p50']:.2f} ms" in lines["fetch20 cold"]
    assert f"{result['fetch20_warm_ms']['p50']:.2f} ms" in lines["fetch20 warm"]
    assert f"{result['send_ms']['p50']:.2f} ms" in lines["send"]
    kademlia = result["baselines"]["kademlia"]
    assert f"set {kademlia['set_ms']['p50']:.2f} ms" in lines["kademlia"]
    assert "settle" in lines["preparation"]


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
    assert outcome.exit_code == 2  # a usage error (docs/cli.md)
    assert "--peers" in outcome.output and "1 is not in the range" in outcome.output
    with pytest.raises(LocalError, match="at least 2 peers"):
        bench.run_bench(bench.BenchOptions(peers=1))
    with pytest.raises(LocalError, match="unknown preparation"):
        bench.run_bench(bench.BenchOptions(prepare="warm-ours-only"))


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


def test_docs_tables_are_generated_from_the_saved_results() -> None:
    """docs/benchmarks.md and docs/simulation.md carry no hand-typed figures: every
    generated block is what benchmarks/regen_docs.py makes of benchmarks/results/."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "regen_docs.py"
    spec = importlib.util.spec_from_file_location("regen_docs", path)
    assert spec is not None and spec.loader is not None
    regen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(regen)
    for doc in regen.DOCS:
        text = doc.read_text()
        assert text.count(regen.BEGIN) >= 3, doc.name
        assert regen.regenerate(text) == text, f"{doc.name}: run benchmarks/regen_docs.py"


@pytest.mark.parametrize("kind", bench.STORES)
def test_full_nodes_store_where_the_option_says(kind: str) -> None:
    """--store: memory (no file), a plain SQLite file, or an SQLCipher file whose bytes
    show neither SQLite's header nor what was written."""
    from mesh.identity import Identity

    net = bench.MeshNet(bench.BenchOptions(store=kind), random.Random(1))
    store = net.new_store(Identity.from_seed(bytes(32)))
    try:
        store.set_setting("probe", "bench-store-probe")
        if kind == "memory":
            assert store.path is None
            return
        assert store.path is not None
        store.close()
        raw = Path(store.path).read_bytes()
        assert raw.startswith(b"SQLite format 3\x00") == (kind == "plain")
        assert (b"bench-store-probe" in raw) == (kind == "plain")
    finally:
        store.close()
        if net._store_dir is not None:
            net._store_dir.cleanup()


def test_unknown_store_is_refused() -> None:
    with pytest.raises(ValueError, match="store must be one of"):
        bench.MeshNet(bench.BenchOptions(store="tmpfs"), random.Random(1))
