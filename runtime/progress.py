"""Progress of a long run on a terminal (the producer's sends, training's reads): a bar that redraws in place instead of log lines."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import IO

ProgressCallback = Callable[[int], None]


@contextlib.contextmanager
def progress_on(stream: IO[str], total: int, description: str) -> Iterator[ProgressCallback | None]:
    """A callback taking the number sent so far, drawing a bar on `stream` when it is a terminal;
    None otherwise, so that a log file or a pipe gets the plain periodic log line instead."""
    if not stream.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(file=stream)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda sent: bar.update(task, completed=sent)
