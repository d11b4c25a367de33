"""What a run measured: one `Sent` per attempted message, summed up into a `Report`.

`Report.to_json()` is the object `mesh sim --json` prints; every number in it comes from
the simulated clock and the seeded plan, except `wall_s` and `rss_mb`, so two runs with
the same seed print the same object apart from those two. `plot` draws delivery latency
and delivery over time (matplotlib is imported only there).
"""

from __future__ import annotations

import math
import resource
import sys
from dataclasses import dataclass, field
from typing import Any

from mesh.errors import LocalError


@dataclass
class Sent:
    """One message a simulated sender tried to send."""

    seq: int
    sender: int
    recipient: int
    at: float  # seconds since the start of the run
    acked: bool = False
    error: str = ""
    replicas: int = 0
    message_id: bytes = b""
    delivered_at: float | None = None  # when the recipient stored it (run seconds)

    @property
    def latency(self) -> float | None:
        return None if self.delivered_at is None else self.delivered_at - self.at


@dataclass
class Report:
    peers: int
    seed: int
    sim_s: float
    wall_s: float
    sent: list[Sent]
    skipped: int
    events: dict[str, int]
    network: dict[str, int]
    protocol: dict[str, int] = field(default_factory=dict)
    setup_s: float = 0.0
    real: bool = False
    cpu_s: float = 0.0
    partition: tuple[float, float] | None = None  # (cut at, healed at) in run seconds
    errors: dict[str, int] = field(default_factory=dict)  # failed joins/departures by type
    settings: dict[str, Any] = field(default_factory=dict)  # which settings ran
    delivered_via: dict[str, int] = field(default_factory=dict)  # push / fetch / poll
    cpu_charged: bool = False  # did callbacks' CPU time advance the virtual clock
    network_key: bool = False  # a private mesh: every datagram sealed

    @property
    def acked(self) -> list[Sent]:
        return [s for s in self.sent if s.acked]

    @property
    def lost(self) -> list[Sent]:
        return [s for s in self.sent if s.acked and s.delivered_at is None]

    def latencies_ms(self) -> list[float]:
        return sorted(s.latency * 1000.0 for s in self.sent if s.acked and s.latency is not None)

    def to_json(self) -> dict[str, Any]:
        acked = self.acked
        latencies = self.latencies_ms()
        errors: dict[str, int] = {}
        for s in self.sent:
            if s.error:
                errors[s.error] = errors.get(s.error, 0) + 1
        return {
            "peers": self.peers,
            "seed": self.seed,
            "real": self.real,
            "sim_s": round(self.sim_s, 3),
            "setup_s": round(self.setup_s, 3),
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "sent": len(self.sent),
            "skipped": self.skipped,
            "acked": len(acked),
            "delivered": sum(1 for s in acked if s.delivered_at is not None),
            "delivered_unacked": sum(
                1 for s in self.sent if not s.acked and s.delivered_at is not None
            ),
            "lost": [s.message_id.hex() for s in self.lost],
            "lost_detail": [_describe(s) for s in self.lost],
            "send_errors": dict(sorted(errors.items())),
            "errors": self.errors,
            "settings": self.settings,
            "cpu_charged": self.cpu_charged,
            "network_key": self.network_key,
            "delivered_via": self.delivered_via,
            "latency_ms": {f"p{q}": percentile(latencies, q) for q in (50, 95, 99)},
            "latency_max_ms": round(latencies[-1], 3) if latencies else None,
            "events": self.events,
            "partition": self._partition_json(),
            "network": dict(sorted(self.network.items())),
            "protocol": dict(sorted(self.protocol.items())),
            "rss_mb": peak_rss_mb(),
        }

    def _partition_json(self) -> dict[str, Any] | None:
        """When the cut started and healed, and how long after the heal the messages
        sent during the cut but delivered only after it arrived (the heal time)."""
        if self.partition is None:
            return None
        at, heal_at = self.partition
        waits = sorted(
            s.delivered_at - heal_at
            for s in self.sent
            if at <= s.at < heal_at and s.delivered_at is not None and s.delivered_at >= heal_at
        )
        return {
            "at": at,
            "heal_at": heal_at,
            "delivered_after_heal": len(waits),
            "after_heal_s": {
                "p50": percentile(waits, 50),
                "max": round(waits[-1], 3) if waits else None,
            },
        }


def _describe(s: Sent) -> dict[str, Any]:
    return {
        "id": s.message_id.hex(),
        "seq": s.seq,
        "sender": s.sender,
        "recipient": s.recipient,
        "at": round(s.at, 3),
        "replicas": s.replicas,
    }


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when it is empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return round(sorted_values[rank - 1], 3)


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return round(peak / scale, 1)


def plot(report: Report, path: str, title: str = "") -> None:
    """Two panels: latency of each delivered message by send time; delivery over time."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LocalError("--plot needs matplotlib: pip install 'mesh-messenger[plot]'") from None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    _latency_panel(top, report)
    _delivery_panel(bottom, report)
    fig.suptitle(title or _title(report))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _title(report: Report) -> str:
    j = report.to_json()
    return (
        f"{j['peers']} peers, {j['sim_s']:.0f} s simulated, seed {j['seed']}: "
        f"{j['delivered']}/{j['acked']} acked messages delivered"
    )


def _latency_panel(ax: Any, report: Report) -> None:
    delivered = [s for s in report.sent if s.acked and s.latency is not None]
    ax.scatter([s.at for s in delivered], [max(s.latency or 0.0, 1e-3) for s in delivered], s=8)
    ax.set_yscale("log")
    ax.set_ylabel("delivery latency (s, log)")
    ax.grid(True, alpha=0.3)
    _shade_partition(ax, report)
    for s in report.lost:
        ax.axvline(s.at, color="red", alpha=0.4, linewidth=0.8)


def _shade_partition(ax: Any, report: Report) -> None:
    if report.partition is not None:
        ax.axvspan(*report.partition, color="orange", alpha=0.15, label="partition")


def _delivery_panel(ax: Any, report: Report) -> None:
    def cumulative(times: list[float]) -> tuple[list[float], list[int]]:
        times = sorted(times)
        return [0.0, *times, report.sim_s], [0, *range(1, len(times) + 1), len(times)]

    series = {
        "sent": [s.at for s in report.sent],
        "acked": [s.at for s in report.sent if s.acked],
        "delivered": [s.delivered_at for s in report.sent if s.delivered_at is not None],
    }
    for label, times in series.items():
        xs, ys = cumulative([t for t in times if t is not None])
        ax.step(xs, ys, where="post", label=label)
    _shade_partition(ax, report)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("messages (cumulative)")
    ax.legend(loc="upper left")
    ax.grid(True, alpha=0.3)
