"""The one exception the harness raises.

Tests that need a broker or a database cannot run without one, so every failure to obtain
either (missing tool, failed download, process that dies or never gets ready) is reported as
a single exception type carrying a message that says what went wrong and, where there is one,
the tail of the process's own output: that tail is usually the only useful clue.
"""

from __future__ import annotations

__all__ = ["HarnessError"]


class HarnessError(RuntimeError):
    """A piece of test infrastructure could not be provided."""
