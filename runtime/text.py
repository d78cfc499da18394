"""Text for a person's terminal: nothing in it may move the cursor, ring or recolour."""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` with every non-printable character escaped (`\\x1b`, `\\n`, `\\u200b`).

    Event ids, dead-letter reasons and values come from producers we do not control; printed
    raw, an escape sequence rewrites the screen and a newline forges an extra line.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)
