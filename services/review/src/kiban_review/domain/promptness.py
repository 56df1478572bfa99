"""Promptness of the committee (RULES.md 17): time from submission to decision.

For each application the time runs from its first submission to its latest decision (a
request to revise counts as a decision; the time an applicant spends revising counts too, as
the applicant waits for data). The median is over applications whose latest decision falls in
the window.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime

SECONDS_PER_DAY = 86_400


def days_between(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds() / SECONDS_PER_DAY, 4)


def median_days(durations: Sequence[float]) -> float | None:
    return round(statistics.median(durations), 4) if durations else None
