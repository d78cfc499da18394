"""The producer's progress on a terminal, purchases included when it simulates them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING

from runtime.progress import progress_on

if TYPE_CHECKING:
    from terminal.event_producer import ProducerReport

ReportProgress = Callable[["ProducerReport"], None]


@contextlib.contextmanager
def traffic_progress_on(stream: IO[str], total: int, description: str, outcomes: bool) -> Iterator[ReportProgress | None]:
    """A callback taking the report so far, drawing a bar on `stream` when it is a terminal (events sent,
    and with `outcomes` purchases sent and still to come); None otherwise, for the periodic log line."""
    if not outcomes:
        with progress_on(stream, total, description) as events_only:
            yield None if events_only is None else (lambda report: events_only(report.sent))
        return
    if not stream.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[purchases]}"))
    with Progress(*columns, console=Console(file=stream)) as bar:
        task = bar.add_task(description, total=total, purchases="")
        yield lambda report: bar.update(task, completed=report.sent, purchases=report.purchases_progress())
