"""The harness's table, one column per guarantee, and its JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tools.chaos.scenario import ScenarioResult

# (row label, how to read it from a result)
ROWS: tuple[tuple[str, Callable[[ScenarioResult], str]], ...] = (
    ("events sent (invalid)", lambda r: f"{r.verdict.planned:,} ({r.verdict.planned_invalid:,})"),
    ("records in the input topic", lambda r: f"{r.verdict.input_records:,}"),
    ("predictions read", lambda r: f"{r.verdict.predictions:,}"),
    ("missing predictions", lambda r: f"{r.verdict.missing:,}"),
    ("duplicate predictions (events)", lambda r: f"{r.verdict.duplicate_predictions:,} ({r.verdict.duplicated_events:,})"),
    ("wrong probabilities (max |Δ|)", lambda r: f"{r.verdict.wrong_probabilities:,} ({r.verdict.max_probability_error:.1e})"),
    ("unexpected predictions", lambda r: f"{r.verdict.unexpected_predictions:,}"),
    ("dead letters read", lambda r: f"{r.verdict.dead_letters:,}"),
    ("invalid not dead-lettered", lambda r: f"{r.verdict.dead_letters_missing:,}"),
    ("duplicate dead letters", lambda r: f"{r.verdict.duplicate_dead_letters:,}"),
    ("dead letters of the wrong kind", lambda r: f"{r.verdict.dead_letters_wrong_kind:,}"),
    ("unexpected dead letters", lambda r: f"{r.verdict.unexpected_dead_letters:,}"),
    ("faults injected", lambda r: f"{len(r.faults)}"),
    ("instances that exited by themselves", lambda r: f"{len(r.crashes)}"),
    ("caught up", lambda r: "yes" if r.caught_up else "NO"),
    ("load + faults / catch-up / total (s)",
     lambda r: f"{r.seconds.get('load_and_faults', 0):.0f} / {r.seconds.get('catch_up', 0):.0f} / {r.seconds.get('total', 0):.0f}"),
    ("verdict", lambda r: "PASS" if r.verdict.passed else "FAIL"),
)


def print_table(results: list[ScenarioResult], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="chaos: predictions under faults")
    table.add_column("")
    for result in results:
        table.add_column(result.guarantee, justify="right")
    for label, read in ROWS:
        table.add_row(label, *(read(result) for result in results))
    console.print(table)
    console.print(_by_fault_table(results))
    for result in results:
        for failure in result.verdict.failures:
            console.print(f"{result.guarantee} FAILED: {failure}")
        for problem, ids in result.verdict.examples.items():
            console.print(f"{result.guarantee} {problem}, e.g. {', '.join(ids)}")


def _by_fault_table(results: list[ScenarioResult]) -> Table:
    """Duplicated / missing records by the fault they were sent nearest to: where the trouble comes from."""
    table = Table(title="duplicated / missing records, by the fault they were sent nearest to")
    table.add_column("fault")
    for result in results:
        table.add_column(result.guarantee, justify="right")
    per_mode = [result.trouble_by_fault() for result in results]
    # Every mode of one run follows the same timeline, so the faults line up by position.
    for index, fault in enumerate(per_mode[0][0]):
        cells = (f"{faults[index]['duplicated_near']:,} / {faults[index]['missing_near']:,}" for faults, _ in per_mode)
        table.add_row(f"{fault['kind']} ({fault['detail']})", *cells)
    table.add_row("near no fault", *(f"{elsewhere['duplicated']:,} / {elsewhere['missing']:,}" for _, elsewhere in per_mode))
    return table


def write_json(path: Path, results: list[ScenarioResult], context: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "context": context,
        "passed": all(r.verdict.passed for r in results),
        "modes": {r.guarantee: r.as_dict() for r in results},
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
