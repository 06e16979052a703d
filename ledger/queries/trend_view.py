"""Everything one Trends page view reads, in one open of the ledger.

Opening a ledger of hundreds of megabytes costs tens of milliseconds, so the
page reads the trend, its deploy markers and their windows together instead
of through four calls of `ledger.queries.trends` and `ledger.queries.deploys`.
With time windows, one scan of the submissions yields both the trend and the
window counts (`ledger.queries.trend_windows`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from ledger import store
from ledger.queries import Filters
from ledger.queries.deploys import Marker, MarkerWindow, check_window, read_marker_windows, read_markers
from ledger.queries.trend_windows import read_trend_and_windows
from ledger.queries.trends import Trend, check_bucket, check_zone, read_trend


@dataclass(frozen=True)
class TrendView:
    """The trend of a view, the markers to draw on it, every marker of its deployments, and the judged windows.

    `shown_markers` fall within the view's time range (or the data's span
    when the range is unbounded). `windows` are those of the markers deployed
    within the view's time range, counted over every status.
    """

    trend: Trend
    shown_markers: list[Marker]
    all_markers: list[Marker]
    windows: list[MarkerWindow]


def trend_view(
    ledger: Path,
    filters: Filters,
    bucket: str,
    zone: str,
    as_of: datetime,
    window: timedelta | None = timedelta(days=7),
    submissions: int | None = None,
) -> TrendView:
    """Return a `TrendView` read in one unit of work.

    Raises InvalidTrendRequest for an unknown bucket or zone and
    InvalidDeploymentRequest for an invalid window, before any SQL runs.
    """
    check_bucket(bucket)
    check_zone(zone)
    check_window(window, submissions)
    with store.reading(ledger) as connection:
        together = None
        if window is not None:
            together = read_trend_and_windows(connection, filters, bucket, zone, as_of, window)
        if together is None:
            result = read_trend(connection, filters, bucket, zone)
            windows = read_marker_windows(connection, as_of, filters.deployments, filters.start, filters.end,
                                          window, submissions)
        else:
            result, windows = together
        first, last = result.span
        start = filters.start or first
        end = filters.end or (last + timedelta(microseconds=1) if last else None)
        every = read_markers(connection, filters.deployments)
        shown = [marker for marker in every if start <= marker.deployed_at < end] if start and end else []
    return TrendView(result, shown, every, windows)
