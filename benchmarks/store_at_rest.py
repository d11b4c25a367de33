"""The cost of the encrypted store: KDF, unlock of a 10,000-message home, `mesh up`
start on it, wipe, and Node.send with a plain vs an encrypted on-disk store (A/B).

    unshare -n sh -c 'ip link set lo up; exec python benchmarks/store_at_rest.py \\
        --save benchmarks/results/store-at-rest.json'

Loopback only. The A/B runs interleave plain and encrypted rounds (the machine is shared
and noisy) and quote the median of the rounds' p50s. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mesh import crypto, vault
from mesh.home import init_home, open_home
from mesh.identity import Identity
from mesh.node import Node
from mesh.store import Store

PASSPHRASE = "benchmark passphrase"
REPO = Path(__file__).resolve().parent.parent
MESH = [sys.executable, "-m", "cli.main"]


def kdf_seconds(runs: int) -> float:
    salt = bytes(crypto.PWHASH_SALT_SIZE)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        crypto.passphrase_key(PASSPHRASE, salt, crypto.STORE_OPSLIMIT, crypto.STORE_MEMLIMIT)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def build_home(home: Path, messages: int) -> None:
    """A passphrase home with `messages` messages (1 KiB bodies), two contacts, peers."""
    init_home(home, "bench", PASSPHRASE)
    peer = Identity.generate().id
    with open_home(home) as store:
        store.add_contact("friend", peer)
        for n in range(0, messages, 1000):  # batches: one fsync per 1000 messages
            rows = [
                (os.urandom(16), "in", peer, "text", os.urandom(512).hex().encode(), *times)
                for times in ((n + i, 9e12, "received", n + i, True) for i in range(1000))
            ][: messages - n]
            store.add_messages(rows)
    vault.lock(home)


def unlock_seconds(home: Path, runs: int) -> float:
    times = []
    for _ in range(runs):
        vault.lock(home)
        started = time.perf_counter()
        with open_home(home, PASSPHRASE) as store:
            assert len(store.list_messages(limit=50)) == 50
        times.append(time.perf_counter() - started)
    vault.lock(home)
    return statistics.median(times)


def up_seconds(home: Path, runs: int) -> float:
    """From spawning `mesh up` to its "listening on" line (Python start included)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["MESH_PASSPHRASE"] = PASSPHRASE
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.Popen(
            [*MESH, "--home", str(home), "up", "--no-mdns", "--host", "127.0.0.1"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        times.append(time.perf_counter() - started)
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()
        assert line.startswith("listening on"), line
    return statistics.median(times)


def wipe_seconds(template: Path, scratch: Path, runs: int) -> float:
    times = []
    for n in range(runs):
        home = scratch / f"wipe{n}"
        shutil.copytree(template, home)
        os.sync()
        times.append(vault.wipe(home))
        assert list(home.iterdir()) == []
    return statistics.median(times)


async def send_p50(root: Path, encrypted: bool, sends: int) -> float:
    """Node.send p50 (ms) from one full Node to another, three more as replicas."""
    nodes: list[Node] = []
    for n in range(5):
        home = root / f"{'enc' if encrypted else 'plain'}{n}"
        home.mkdir()
        store = vault.open_store(home) if encrypted else Store(home / "mesh.db")
        seeds = [nodes[0].address] if nodes else []
        nodes.append(await Node.start(host="127.0.0.1", bootstrap=seeds, store=store))
    try:
        sender, recipient = nodes[1], nodes[2]
        times = []
        for n in range(sends):
            started = time.perf_counter()
            await sender.send(recipient.id, f"message {n}")
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)
    finally:
        for node in nodes:
            await node.stop()


def ab(scratch: Path, rounds: int, sends: int) -> dict[str, Any]:
    results: dict[str, list[float]] = {"plain": [], "encrypted": []}
    for n in range(rounds):
        order = [False, True] if n % 2 == 0 else [True, False]
        for encrypted in order:
            root = scratch / f"ab{n}{int(encrypted)}"
            root.mkdir()
            p50 = asyncio.run(send_p50(root, encrypted, sends))
            results["encrypted" if encrypted else "plain"].append(p50)
    plain = statistics.median(results["plain"])
    enc = statistics.median(results["encrypted"])
    return {
        "rounds": results,
        "plain_p50_ms": plain,
        "encrypted_p50_ms": enc,
        "ratio": enc / plain,
    }


def cli_send_p50(src: Path, root: Path, sends: int) -> float:
    """`mesh send` p50 (ms, the whole process) through two running daemons, with the
    code at `src` (this tree, or a checkout of the previous release: plaintext store)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(MESH_PASSPHRASE=PASSPHRASE, PYTHONPATH=str(src))
    homes = [root / "ann", root / "ben"]

    def run(home: Path, *args: str) -> str:
        done = subprocess.run(
            [*MESH, "--home", str(home), *args],
            env=env,
            cwd=src,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    ids = [run(home, "init", "--passphrase").splitlines()[0] for home in homes]
    run(homes[0], "contacts", "add", "ben", ids[1])
    ups: list[subprocess.Popen[str]] = []
    try:
        address = ""
        for home, host in zip(homes, ("127.0.0.1", "127.0.0.2"), strict=True):
            peers = ["--peer", address] if address else []
            proc = subprocess.Popen(
                [*MESH, "--home", str(home), "up", "--no-mdns", "--host", host, *peers],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
                cwd=src,
            )
            ups.append(proc)
            assert proc.stdout is not None
            address = proc.stdout.readline().strip().removeprefix("listening on ")
        times = []
        for n in range(sends):
            started = time.perf_counter()
            run(homes[0], "send", "ben", f"message {n}")
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)
    finally:
        for proc in ups:
            proc.terminate()
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()


def cli_ab(base: Path, scratch: Path, rounds: int, sends: int) -> dict[str, Any]:
    results: dict[str, list[float]] = {"previous": [], "encrypted": []}
    for n in range(rounds):
        order = [base, REPO] if n % 2 == 0 else [REPO, base]
        for src in order:
            root = scratch / f"cli{n}{int(src == REPO)}"
            root.mkdir()
            kind = "encrypted" if src == REPO else "previous"
            results[kind].append(cli_send_p50(src, root, sends))
    previous = statistics.median(results["previous"])
    enc = statistics.median(results["encrypted"])
    return {
        "rounds": results,
        "previous_p50_ms": previous,
        "encrypted_p50_ms": enc,
        "ratio": enc / previous,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=6, help="A/B rounds (interleaved)")
    parser.add_argument("--sends", type=int, default=100, help="sends per A/B round")
    parser.add_argument("--save", type=Path)
    parser.add_argument(
        "--previous", type=Path, help="a checkout of the previous release: CLI send A/B"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mesh-rest-") as tmp:
        scratch = Path(tmp)
        home = scratch / "home"
        build_home(home, args.messages)
        result = {
            "kdf": {"opslimit": crypto.STORE_OPSLIMIT, "memlimit": crypto.STORE_MEMLIMIT},
            "kdf_s": kdf_seconds(args.runs),
            "messages": args.messages,
            "db_bytes": sum(p.stat().st_size for p in home.iterdir()),
            "unlock_s": unlock_seconds(home, args.runs),
            "mesh_up_listening_s": up_seconds(home, args.runs),
            "wipe_s": wipe_seconds(home, scratch, args.runs),
            "send_ab": ab(scratch, args.rounds, args.sends),
            "runs": args.runs,
        }
        if args.previous:
            result["cli_send_ab"] = cli_ab(args.previous, scratch, args.rounds, 10)
    text = json.dumps(result, indent=2)
    print(text)
    if args.save:
        args.save.write_text(text + "\n")


if __name__ == "__main__":
    main()
