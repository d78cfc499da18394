"""The project's error root: every error it raises says whether waiting can cure it, and how a
program that stops on it exits.

- `retriable`: an outage that passes by itself. The step is retried with backoff, and nothing
  is committed meanwhile, so nothing is lost.
- `exit_code`: the code a program exits with when the error stops it. `SetupError`s exit with 2:
  a setting, a grant or a missing artifact to fix, said in one message. Anything else that
  stops a program (a bug) exits with 1, its traceback logged.

Errors of the libraries (aiokafka, PyMySQL, the OS) are sorted into the same terms in one place,
service/failures.py.
"""

from __future__ import annotations

SETUP_EXIT_CODE = 2
BUG_EXIT_CODE = 1


class PredictionError(Exception):
    """Base of every error the project raises."""

    retriable = False
    exit_code = BUG_EXIT_CODE


class SetupError(PredictionError):
    """Something to fix before the program can run: a setting, a grant, an artifact, a table."""

    exit_code = SETUP_EXIT_CODE


class InputError(PredictionError, ValueError):
    """One input record is bad: it is dead-lettered with the reason, never retried."""


class ShutdownRequested(PredictionError):
    """Stop was requested while a step was still failing; the work in hand is left uncommitted."""
