"""Savings of replay per period and deployment, counted gross and once per run, and their projection.

Two definitions, both shown on the ROI page:

- gross savings: the sum of ``cost_savings`` over every submission. A run
  replayed ten times counts ten times.
- savings once per run: each run counts once, with the largest
  ``cost_savings`` among its submissions in the view (its fullest replay),
  in the period and deployment of its first submission in the view. So the
  same run can count once in September's view and once in October's, but
  only once in a view that spans both.

The projection multiplies the savings per day of the trailing 28 days by 30,
90 and 365. The trailing window ends at the last submission matching the
filters (never after the filter's end) and ignores the filter's start, so a
"last 7 days" view still projects from 28 days of data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import duckdb
import pandas as pd

from ledger import store
from ledger.queries import Filters, where
from ledger.queries.trends import (
    MAX_SERIES, OTHER_SERIES, bucketing, check_bucket, check_zone, choose_bucket, result_frame,
)

PERIODS = ("week", "month")
TRAILING_DAYS = 28
PROJECTION_DAYS = (30, 90, 365)
MICRO = Decimal("0.000001")
ROI_COLUMNS = (
    "period_start", "period_end", "series", "submissions", "runs", "gross", "once_per_run",
    "cumulative_gross", "cumulative_once_per_run",
)


@dataclass(frozen=True)
class RoiPeriods:
    """Savings per period and series; `rows` has the columns of `ROI_COLUMNS`, money as exact Decimal.

    `runs` counts the runs whose first submission in the view falls in the
    period. Cumulative sums run from the first period of the view. `note`
    explains a period coarser than the one requested. `span` is the time of
    the first and the last matching submission, which tell how much of the
    first and last period the data covers.
    """

    period: str
    requested_period: str
    zone: str
    rows: pd.DataFrame
    note: str | None = None
    span: tuple[datetime | None, datetime | None] = (None, None)

    def totals(self) -> "RoiTotals":
        """Return the sums over every period and series."""
        rows = self.rows
        return RoiTotals(
            submissions=int(rows["submissions"].sum()),
            runs=int(rows["runs"].sum()),
            gross=sum(rows["gross"], Decimal(0)),
            once_per_run=sum(rows["once_per_run"], Decimal(0)),
        )


@dataclass(frozen=True)
class Projection:
    """Savings of the trailing window and what they come to over 30, 90 and 365 days.

    `window_start`/`window_end` bound the trailing window: (start, end] over
    the full 28 days, with `end` the last matching submission, or [start, end]
    with `start` the first submission when the data starts later. `days` is
    the window's length in days. The projections are None when the
    window has no length (no submissions, or only one instant).
    """

    window_start: datetime | None
    window_end: datetime | None
    days: Decimal
    gross: Decimal
    once_per_run: Decimal
    gross_projection: dict[int, Decimal | None]
    once_per_run_projection: dict[int, Decimal | None]

    @property
    def shortened(self) -> bool:
        """True when the data covers fewer than the full trailing days."""
        return self.days < TRAILING_DAYS


@dataclass(frozen=True)
class RoiTotals:
    """Savings over the whole view, both ways, and the number of submissions and runs behind them."""

    submissions: int
    runs: int
    gross: Decimal
    once_per_run: Decimal


# NOTE: a run whose first two submissions share one microsecond in different deployments is attributed to
# either deployment. arg_min over (submitted_at, submission_id) would decide, but its larger state doubled the
# time of the ROI query at 10 million submissions under the ledger's 512 MB memory limit (bench/trends.py).
_RUNS_CTE = """
filtered AS (
    SELECT s.run_id, s.deployment, s.submitted_at, s.submission_id, s.cost_savings
    FROM submissions AS s
    WHERE {where}
), runs AS (
    SELECT run_id,
           arg_min(deployment, submitted_at) AS deployment,
           min(submitted_at) AS first_at,
           max(cost_savings) AS run_savings
    FROM filtered
    GROUP BY run_id
)"""

_PERIODS_SQL = """
WITH {runs_cte}, gross_units AS (
    SELECT deployment, {gross_unit} AS unit, count(*) AS submissions, sum(cost_savings) AS gross
    FROM filtered
    GROUP BY ALL
), once_units AS (
    SELECT deployment, {once_unit} AS unit, count(*) AS runs, sum(run_savings) AS once_per_run
    FROM runs
    GROUP BY ALL
), joined AS (
    SELECT {start} AS period_start, {end} AS period_end, deployment,
           sum(coalesce(g.submissions, 0)) AS submissions, sum(coalesce(o.runs, 0)) AS runs,
           sum(coalesce(g.gross, 0)) AS gross, sum(coalesce(o.once_per_run, 0)) AS once_per_run
    FROM gross_units AS g FULL OUTER JOIN once_units AS o USING (deployment, unit)
    GROUP BY ALL
), ranked AS (
    SELECT deployment,
           row_number() OVER (ORDER BY sum(gross) DESC, deployment) AS rank,
           count(*) OVER () AS deployments
    FROM joined
    GROUP BY deployment
), folded AS (
    SELECT j.period_start, j.period_end,
           CASE WHEN r.deployments <= ? OR r.rank < ? THEN j.deployment ELSE ? END AS series,
           sum(j.submissions) AS submissions, sum(j.runs) AS runs,
           sum(j.gross) AS gross, sum(j.once_per_run) AS once_per_run
    FROM joined AS j JOIN ranked AS r USING (deployment)
    GROUP BY ALL
)
SELECT period_start,
       period_end,
       series,
       submissions::BIGINT, runs::BIGINT,
       gross::DECIMAL(38, 6), once_per_run::DECIMAL(38, 6),
       (sum(gross) OVER (PARTITION BY series ORDER BY period_start))::DECIMAL(38, 6),
       (sum(once_per_run) OVER (PARTITION BY series ORDER BY period_start))::DECIMAL(38, 6)
FROM folded
ORDER BY period_start, series
"""


def savings_by_period(ledger: Path, filters: Filters, period: str = "week", zone: str = "UTC") -> RoiPeriods:
    """Return gross and once-per-run savings per period (week or month, in `zone`) and deployment.

    Deployments past the largest `MAX_SERIES - 1` by gross savings are summed
    into `OTHER_SERIES`. Raises InvalidTrendRequest for an unknown period or
    zone before any SQL runs.
    """
    check_bucket(period, PERIODS)
    check_zone(zone)
    with store.reading(ledger) as connection:
        return _read_periods(connection, filters, period, zone)


def _read_periods(connection: duckdb.DuckDBPyConnection, filters: Filters, period: str, zone: str) -> RoiPeriods:
    condition, parameters = where(filters)
    first, last = connection.execute(
        f"SELECT min(submitted_at), max(submitted_at) FROM submissions AS s WHERE {condition}", parameters
    ).fetchone()
    chosen, note = choose_bucket(period, filters.start or first, filters.end or last)
    gross_plan = bucketing(chosen, zone, first, last, column="submitted_at")
    once_plan = bucketing(chosen, zone, first, last, column="first_at")
    sql = _PERIODS_SQL.format(
        runs_cte=_RUNS_CTE.format(where=condition), gross_unit=gross_plan.unit_sql,
        once_unit=once_plan.unit_sql, start=gross_plan.start_sql, end=gross_plan.end_sql,
    )
    rows = connection.execute(sql, [
        *parameters, *gross_plan.unit_parameters, *once_plan.unit_parameters, *gross_plan.start_parameters,
        *gross_plan.end_parameters, MAX_SERIES, MAX_SERIES, OTHER_SERIES,
    ]).fetchall()
    return RoiPeriods(chosen, period, zone, result_frame(rows, ROI_COLUMNS), note, (first, last))


_TOTALS_SQL = """
WITH {runs_cte}
SELECT (SELECT coalesce(sum(cost_savings), 0) FROM filtered)::DECIMAL(38, 6),
       (SELECT coalesce(sum(run_savings), 0) FROM runs)::DECIMAL(38, 6)
"""


def projection(ledger: Path, filters: Filters) -> Projection:
    """Return the trailing 28-day savings of the filtered deployments and statuses, projected forward.

    The window is (end - 28 days, end] with `end` the last submission before
    `filters.end`; the filter's start is ignored (see the module docstring).
    When the data starts less than 28 days before `end`, the window starts
    at the first submission, inclusive, and the rate is over that shorter span.
    """
    with store.reading(ledger) as connection:
        return _read_projection(connection, filters)


def _read_projection(connection: duckdb.DuckDBPyConnection, filters: Filters) -> Projection:
    unbounded = Filters(None, filters.end, filters.deployments, filters.statuses)
    condition, parameters = where(unbounded)
    first, last = connection.execute(
        f"SELECT min(submitted_at), max(submitted_at) FROM submissions AS s WHERE {condition}", parameters
    ).fetchone()
    if last is None:
        return Projection(None, None, Decimal(0), Decimal(0), Decimal(0),
                          dict.fromkeys(PROJECTION_DAYS), dict.fromkeys(PROJECTION_DAYS))
    trailing_start = last - timedelta(days=TRAILING_DAYS)
    if first > trailing_start:
        # Less than 28 days of data: the window is [first, last], both included.
        start, window_start = first, first
    else:
        # The full window (last - 28 days, last]: `where` includes its start, so start one microsecond later.
        start, window_start = trailing_start + timedelta(microseconds=1), trailing_start
    window = Filters(start, last + timedelta(microseconds=1), filters.deployments, filters.statuses)
    window_condition, window_parameters = where(window)
    gross, once = connection.execute(
        _TOTALS_SQL.format(runs_cte=_RUNS_CTE.format(where=window_condition)), window_parameters
    ).fetchone()
    days = Decimal((last - window_start) // timedelta(microseconds=1)) / Decimal(86_400_000_000)
    return Projection(
        window_start=window_start,
        window_end=last,
        days=days,
        gross=gross,
        once_per_run=once,
        gross_projection=_project(gross, days),
        once_per_run_projection=_project(once, days),
    )


@dataclass(frozen=True)
class RoiView:
    """Everything the ROI page reads: the periods, the view's totals and the projection."""

    periods: RoiPeriods
    totals: RoiTotals
    projection: Projection


def roi_view(ledger: Path, filters: Filters, period: str = "week", zone: str = "UTC") -> RoiView:
    """Return the periods, totals and projection of a view, read in one open of the ledger.

    The totals are the sums of the periods: each run counts once per run in
    exactly one period, the one of its first submission in the view. Raises
    InvalidTrendRequest for an unknown period or zone before any SQL runs.
    """
    check_bucket(period, PERIODS)
    check_zone(zone)
    with store.reading(ledger) as connection:
        periods = _read_periods(connection, filters, period, zone)
        forward = _read_projection(connection, filters)
    return RoiView(periods, periods.totals(), forward)


def _project(amount: Decimal, days: Decimal) -> dict[int, Decimal | None]:
    """Scale `amount` earned over `days` to each projection horizon, rounded to micro-dollars."""
    if days <= 0:
        return dict.fromkeys(PROJECTION_DAYS)
    return {
        horizon: (amount * horizon / days).quantize(MICRO, rounding=ROUND_HALF_EVEN) for horizon in PROJECTION_DAYS
    }


CSV_COLUMNS = {
    "period_start": "period_start",
    "period_end": "period_end",
    "series": "deployment",
    "submissions": "submissions",
    "runs": "runs_first_seen",
    "gross": "gross_usd",
    "once_per_run": "once_per_run_usd",
    "cumulative_gross": "cumulative_gross_usd",
    "cumulative_once_per_run": "cumulative_once_per_run_usd",
}


def periods_csv(periods: RoiPeriods) -> str:
    """Return the periods as CSV text: one row per period and series, times in ISO-8601 UTC, money as exact decimals."""
    frame = periods.rows.rename(columns=CSV_COLUMNS)[list(CSV_COLUMNS.values())].copy()
    for name in ("period_start", "period_end"):
        frame[name] = [value.strftime("%Y-%m-%dT%H:%M:%SZ") for value in frame[name]]
    for name in ("gross_usd", "once_per_run_usd", "cumulative_gross_usd", "cumulative_once_per_run_usd"):
        frame[name] = [f"{value:f}" for value in frame[name]]
    return frame.to_csv(index=False, lineterminator="\n")
