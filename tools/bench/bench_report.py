"""The benchmark's table, its JSON and its chart."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tools.bench.monitor_costs import MonitorRun, monitor_table
from tools.bench.scenarios import DrainResult, LatencyResult


def table(
    drains: list[DrainResult], latencies: list[LatencyResult], ratios: dict[str, float], monitor: Sequence[MonitorRun] = (),
) -> str:
    lines = [
        "| Run | events/s | CPU s per 10k events | peak RSS MB |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {d.name} | {d.events_per_s:,.0f} | {d.cpu_s_per_10k:.2f} | {d.peak_rss_mb:.0f} |" for d in drains]
    lines += [
        "",
        "| Latency (output − input Kafka timestamp) | rate/s | events | p50 ms | p95 ms | p99 ms | max ms"
        " | visible p50 ms | visible p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.name} | {r.rate_per_s:,.0f} | {r.events:,} | {r.p50_ms:.1f} | {r.p95_ms:.1f} | {r.p99_ms:.1f} | {r.max_ms:.0f}"
        f" | {r.visible_p50_ms:.1f} | {r.visible_p99_ms:.1f} |"
        for r in latencies
    ]
    lines += ["", "Visible: when a read_committed reader had the output, minus the input's Kafka timestamp."]
    if monitor:
        lines += ["", monitor_table(list(monitor))]
    lines += ["", *[f"- {name}: {value:,.1f}" for name, value in ratios.items()]]
    return "\n".join(lines)


def write_json(
    path: Path, drains: list[DrainResult], latencies: list[LatencyResult], ratios: dict[str, float], context: dict[str, Any],
    monitor: Sequence[MonitorRun] = (),
) -> None:
    path.write_text(json.dumps(
        {"context": context, "drains": [d.as_dict() for d in drains], "latency": [r.as_dict() for r in latencies], "ratios": ratios,
         "quality_monitor": [m.as_dict() for m in monitor]},
        indent=2,
    ) + "\n")


def write_chart(path: Path, drains: list[DrainResult], latencies: list[LatencyResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    figure, (rates, spread) = plt.subplots(1, 2, figsize=(13, 5))
    names = [d.name for d in drains]
    rates.barh(names, [d.events_per_s for d in drains], color="#3b7dd8")
    rates.set_xscale("log")
    rates.set_xlabel("events/s (log scale)")
    rates.set_title("Draining a backlog")
    for y, d in enumerate(drains):
        rates.text(d.events_per_s, y, f" {d.events_per_s:,.0f}", va="center")
    for r in latencies:
        values = sorted(r.latencies_ms)
        spread.plot(values, [i / len(values) for i in range(len(values))], label=f"{r.name} (p99 {r.p99_ms:.0f} ms)")
    spread.set_xscale("log")
    spread.set_xlabel("latency, ms (log scale)")
    spread.set_ylabel("share of events")
    spread.set_title("End-to-end latency")
    spread.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
