"""The trend and the deploy-marker time windows of one view, counted in a single scan of the submissions.

Counting the windows in a query of their own reads every submission a second
time and joins it to the windows of its day. At 10 million submissions that
took longer than the trend itself (bench/trends.py). Here the trend's scan
also groups the submissions by their place among the window bounds. The
bounds of every window (start, deploy, end) are sorted, and each submission
gets its *piece*: the number of bounds at or before its time, found by a
binary search written as nested ``CASE``. A window [a, b) then contains exactly
the submissions whose piece lies in [pieces of a, pieces of b), so the counts
are exact. The sums per deployment, bucket unit and piece go into a temporary
table, from which the trend and the window counts are read.

The windows count every status, as `ledger.queries.deploys.marker_windows`
does. When the view filters by status, or the windows reach outside the
view's time range, the scan covers the union and flags the submissions that
belong to the view.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import duckdb

from ledger.queries import Filters, where
from ledger.queries.deploys import MarkerWindow, WindowBounds, read_window_bounds
from ledger.queries.trends import Trend, plan_trend, read_buckets

# Past this many distinct bounds the CASE tree's SQL gets long, so `read_trend_and_windows` leaves the windows to
# their own query. A marker has three bounds, so this covers about 340 markers in one view.
MAX_BOUNDS = 1024

_PIECES_TABLE = "trend_pieces"

# count_if counts what count(*) FILTER counts, with about 13% less CPU time in this scan (DuckDB 2.0.1,
# bench/trends.py on 10 million submissions).
_PIECES_SQL = """
CREATE OR REPLACE TEMP TABLE {table} AS
SELECT s.deployment,
       {unit} AS unit,
       {piece} AS piece,
       {in_view} AS in_view,
       count(*) AS submissions,
       count_if(s.divergences_detected > 0) AS with_divergence,
       sum(s.divergences_detected) AS divergences,
       sum(s.actions_replayed) AS actions_replayed,
       sum(s.cost_savings) AS savings
FROM submissions AS s
WHERE {scanned}
GROUP BY ALL
"""

_PER_UNIT_SQL = """
SELECT deployment, unit, sum(submissions) AS submissions, sum(with_divergence) AS with_divergence,
       sum(divergences) AS divergences, sum(actions_replayed) AS actions_replayed, sum(savings) AS savings
FROM {table}
WHERE in_view
GROUP BY ALL
"""

# Each window side sums the pieces of its deployment from its first bound's piece up to, not including, its
# last bound's piece.
_WINDOW_COUNTS_SQL = """
WITH sides AS (
    SELECT unnest(?::BIGINT[]) AS position, unnest(?::VARCHAR[]) AS deployment,
           unnest(?::BIGINT[]) AS start_piece, unnest(?::BIGINT[]) AS deploy_piece, unnest(?::BIGINT[]) AS end_piece
)
SELECT w.position,
       coalesce(sum(p.submissions) FILTER (WHERE p.piece < w.deploy_piece), 0)::BIGINT,
       coalesce(sum(p.with_divergence) FILTER (WHERE p.piece < w.deploy_piece), 0)::BIGINT,
       coalesce(sum(p.submissions) FILTER (WHERE p.piece >= w.deploy_piece), 0)::BIGINT,
       coalesce(sum(p.with_divergence) FILTER (WHERE p.piece >= w.deploy_piece), 0)::BIGINT
FROM sides AS w
JOIN {table} AS p ON p.deployment = w.deployment AND p.piece >= w.start_piece AND p.piece < w.end_piece
GROUP BY w.position
"""


def piece_sql(column: str, bounds: list[int]) -> tuple[str, list[int]]:
    """Return SQL for how many of the sorted `bounds` (epoch microseconds) are at or before `column`, and its parameters.

    The SQL is a binary search of nested ``CASE`` expressions, so each row
    makes about log2(len(bounds)) comparisons.
    """
    parameters: list[int] = []

    def search(low: int, high: int) -> str:
        # Rows that reach this node are at or after bounds[low - 1] and before bounds[high].
        if low == high:
            return str(low)
        middle = (low + high) // 2
        parameters.append(bounds[middle])
        return f"CASE WHEN epoch_us({column}) < ? THEN {search(low, middle)} ELSE {search(middle + 1, high)} END"

    return search(0, len(bounds)), parameters


def _scan_range(filters: Filters, counted: list[WindowBounds]) -> tuple[datetime | None, datetime | None]:
    """Return [start, end) of the submissions to scan: the view's time range widened to every counted window."""
    start, end = filters.start, filters.end
    if start is not None:
        start = min(start, min(bounds.before_start for bounds in counted))
    if end is not None:
        end = max(end, max(bounds.after_end for bounds in counted))
    return start, end


def _view_flag(filters: Filters, scanned: Filters) -> tuple[str, list[Any]]:
    """Return SQL that is true for the scanned submissions that belong to the view, and its parameters."""
    if filters == scanned:
        return "TRUE", []
    condition, parameters = where(Filters(filters.start, filters.end, (), filters.statuses))
    return f"({condition})", parameters


def read_trend_and_windows(
    connection: duckdb.DuckDBPyConnection,
    filters: Filters,
    bucket: str,
    zone: str,
    as_of: datetime,
    window: timedelta,
) -> tuple[Trend, list[MarkerWindow]] | None:
    """Read the view's trend and the time windows of its markers in one scan; None when that scan does not apply.

    The trend equals `ledger.queries.trends.read_trend` and the windows equal
    `ledger.queries.deploys.read_marker_windows` in time-window mode. Returns
    None when no window has a length (there is nothing to count) or the
    windows have more than `MAX_BOUNDS` bounds. `bucket`, `zone` and
    `window` must already be checked.
    """
    every = read_window_bounds(connection, as_of, filters.deployments, filters.start, filters.end, window)
    counted = [bounds for bounds in every if bounds.counted]
    instants = sorted({instant for bounds in counted
                       for instant in (bounds.before_start_us, bounds.deployed_at_us, bounds.after_end_us)})
    if not instants or len(instants) > MAX_BOUNDS:
        return None

    plan = plan_trend(connection, filters, bucket, zone)
    start, end = _scan_range(filters, counted)
    scanned = Filters(start, end, filters.deployments)
    scanned_condition, scanned_parameters = where(scanned)
    in_view, in_view_parameters = _view_flag(filters, scanned)
    piece, piece_parameters = piece_sql("s.submitted_at", instants)
    steps = plan.bucketing
    connection.execute(
        _PIECES_SQL.format(table=_PIECES_TABLE, unit=steps.unit_sql, piece=piece, in_view=in_view,
                           scanned=scanned_condition),
        [*steps.unit_parameters, *piece_parameters, *in_view_parameters, *scanned_parameters],
    )
    try:
        trend = read_buckets(connection, plan, _PER_UNIT_SQL.format(table=_PIECES_TABLE), [])
        windows = _count_windows(connection, every, counted, instants)
    finally:
        connection.execute(f"DROP TABLE IF EXISTS {_PIECES_TABLE}")
    return trend, windows


def _count_windows(connection: duckdb.DuckDBPyConnection, every: list[WindowBounds], counted: list[WindowBounds],
                   instants: list[int]) -> list[MarkerWindow]:
    # A bound's piece is its 1-based position among the sorted instants: the submissions at or after it and
    # before the next bound have that piece.
    piece_of = {instant: index + 1 for index, instant in enumerate(instants)}
    positions = [index for index, bounds in enumerate(every) if bounds.counted]
    rows = connection.execute(_WINDOW_COUNTS_SQL.format(table=_PIECES_TABLE), [
        positions,
        [bounds.marker.deployment for bounds in counted],
        [piece_of[bounds.before_start_us] for bounds in counted],
        [piece_of[bounds.deployed_at_us] for bounds in counted],
        [piece_of[bounds.after_end_us] for bounds in counted],
    ]).fetchall()
    counts = {row[0]: row[1:] for row in rows}
    return [bounds.counted_window(*counts.get(index, (0, 0, 0, 0))) for index, bounds in enumerate(every)]
