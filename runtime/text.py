"""Text for a person's terminal: nothing in it may move the cursor, ring or recolour."""

from __future__ import annotations

import traceback
from types import TracebackType


def printable(text: str) -> str:
    """`text` with every non-printable character escaped (`\\x1b`, `\\n`, `\\u200b`).

    Event ids, dead-letter reasons and values come from producers we do not control; printed
    raw, an escape sequence rewrites the screen and a newline forges an extra line.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)


def printable_lines(text: str) -> str:
    """`text` with each line made printable, its line breaks kept."""
    # Split on "\n" alone: the other breaks str.splitlines knows (\r, \x85, \u2028) are not the
    # text's own structure, so they are escaped rather than kept.
    return "\n".join(printable(line) for line in text.split("\n"))


def printable_traceback(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> str:
    """The traceback in its usual lines, with no line that an exception's own text can forge.

    Making each line printable is not enough: an exception's message (`str(exc)`, which can
    quote an event) is printed as it is, so its own newline would start a line that reads like a
    log record. Messages and notes are escaped whole first; the rest is the traceback's structure
    and source lines, escaped line by line so it keeps its shape.
    """
    trace = traceback.TracebackException(exc_type, exc, tb)
    _escape_messages(trace)
    return printable_lines("".join(trace.format()).removesuffix("\n"))


def _escape_messages(trace: traceback.TracebackException) -> None:
    """Escape the message and notes of every exception in the chain (causes, contexts, groups)."""
    pending, seen = [trace], set()
    while pending:
        exc = pending.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        # `_str` is where TracebackException keeps str(exc) for format(); the tests of the console
        # formatter fail if a Python release moves it.
        exc._str = printable(exc._str)  # type: ignore[attr-defined]
        if isinstance(exc.__notes__, list):
            exc.__notes__ = [printable(str(note)) for note in exc.__notes__]
        pending.extend(linked for linked in (exc.__cause__, exc.__context__, *(exc.exceptions or ())) if linked is not None)
