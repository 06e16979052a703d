"""The trend and marker windows from one scan (`ledger.queries.trend_windows`) against the separate exact queries."""

from __future__ import annotations

import bisect
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from ledger import store
from ledger.ingest import ingest_paths
from ledger.queries import Filters, deploys, trend_windows, trends
from ledger.queries.trend_view import trend_view

UTC = timezone.utc
START = datetime(2026, 3, 2, 0, 17, 3, 250_001, tzinfo=UTC)
AS_OF = START + timedelta(days=40, hours=5, microseconds=7)
WEEK = timedelta(days=7)
ONE_US = timedelta(microseconds=1)

# Markers at odd instants: two 30 minutes apart (several bounds in one hour), one clipped by as_of and one
# deployed after it (an empty window).
MARKERS = [
    ("prod", "1", START + timedelta(days=9, hours=3, minutes=12, microseconds=11)),
    ("prod", "2", START + timedelta(days=12, hours=1, minutes=5, seconds=9)),
    ("prod", "3", START + timedelta(days=12, hours=1, minutes=35)),
    ("prod", "4", AS_OF - timedelta(days=2, microseconds=3)),
    ("prod", "5", AS_OF + timedelta(hours=1)),
    ("canary", "1", START + timedelta(days=20, minutes=59, seconds=59, microseconds=999_999)),
    ("canary", "2", START + timedelta(days=31, hours=12)),
]


def submission(number: int, at: datetime, deployment: str) -> dict:
    status = ("success", "partial", "failed")[number % 3]
    return {"run_id": f"r{number}", "status": status, "actions_replayed": 4, "actions_total": 5,
            "divergences_detected": 0 if status == "success" else 1 + number % 2, "cost_savings": 0.25,
            "submitted_at": at.isoformat().replace("+00:00", "Z"), "deployment": deployment}


def ingest(ledger: Path, records: list[dict], name: str) -> None:
    source = ledger.parent / f"{name}.jsonl"
    source.write_text("".join(json.dumps(item) + "\n" for item in records))
    report = ingest_paths(ledger, [str(source)])
    assert report.rejected == 0, report.to_dict()


@pytest.fixture(scope="module")
def bounded_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger with submissions exactly at every window bound and deploy instant, and a microsecond either side."""
    ledger = tmp_path_factory.mktemp("trend-windows") / "ledger.duckdb"
    spread = [submission(number, START + number * timedelta(minutes=37, microseconds=3),
                         ("prod", "canary")[number % 2]) for number in range(1, 1600)]
    ingest(ledger, spread, "spread")
    store.add_deploys(ledger, [{"deployment": deployment, "version": version, "deployed_at": at}
                               for deployment, version, at in MARKERS], origin="file")
    instants = set()
    for window in deploys.marker_windows(ledger, AS_OF, window=WEEK):
        for instant in (window.before_start, window.marker.deployed_at, window.after_end):
            instants.update((window.marker.deployment, instant + offset) for offset in (-ONE_US, timedelta(0), ONE_US))
    at_bounds = [submission(10_000 + number, at, deployment)
                 for number, (deployment, at) in enumerate(sorted(instants))]
    ingest(ledger, at_bounds, "bounds")
    return ledger


VIEWS = [
    pytest.param(Filters(), "auto", "UTC", id="all-time"),
    pytest.param(Filters(START + timedelta(days=11), START + timedelta(days=25)), "day", "Europe/Berlin",
                 id="range-narrower-than-windows"),
    pytest.param(Filters(START + timedelta(days=8, minutes=3), None, statuses=("partial", "failed")), "hour",
                 "Asia/Kathmandu", id="statuses-open-end"),
    pytest.param(Filters(None, AS_OF - timedelta(days=10), ("canary",)), "week", "America/New_York",
                 id="one-deployment-open-start"),
]


@pytest.mark.parametrize(("filters", "bucket", "zone"), VIEWS)
def test_one_scan_windows_match_exact_query(bounded_ledger: Path, filters: Filters, bucket: str, zone: str):
    with store.reading(bounded_ledger) as connection:
        together = trend_windows.read_trend_and_windows(connection, filters, bucket, zone, AS_OF, WEEK)
        expected_windows = deploys.read_marker_windows(connection, AS_OF, filters.deployments, filters.start,
                                                       filters.end, WEEK, None)
        expected_trend = trends.read_trend(connection, filters, bucket, zone)

    assert together is not None
    trend, windows = together
    assert windows == expected_windows
    assert any(window.before_n and window.after_n for window in windows)
    assert trend.rows.equals(expected_trend.rows)
    assert (trend.bucket, trend.requested_bucket, trend.zone) == (
        expected_trend.bucket, expected_trend.requested_bucket, expected_trend.zone)
    assert (trend.span, trend.series, trend.folded, trend.note) == (
        expected_trend.span, expected_trend.series, expected_trend.folded, expected_trend.note)


def test_one_scan_counts_bound_submissions(bounded_ledger: Path):
    # The submission at a deploy instant counts after it; the one a microsecond earlier counts before it.
    with store.reading(bounded_ledger) as connection:
        _, windows = trend_windows.read_trend_and_windows(connection, Filters(), "day", "UTC", AS_OF, WEEK)
        second = next(window for window in windows if window.marker.version == "2" and
                      window.marker.deployment == "prod")
        sides = connection.execute(
            "SELECT count(*) FILTER (WHERE submitted_at < ?), count(*) FILTER (WHERE submitted_at >= ?) "
            "FROM submissions WHERE deployment = 'prod' AND submitted_at >= ? AND submitted_at < ?",
            [second.marker.deployed_at, second.marker.deployed_at, second.before_start, second.after_end],
        ).fetchone()

    assert (second.before_n, second.after_n) == sides


def test_trend_view_matches_separate_reads(bounded_ledger: Path):
    filters = Filters(START + timedelta(days=11), START + timedelta(days=25))

    view = trend_view(bounded_ledger, filters, "auto", "UTC", AS_OF)

    assert view.windows == deploys.marker_windows(bounded_ledger, AS_OF, (), filters.start, filters.end)
    assert view.trend.rows.equals(trends.trend(bounded_ledger, filters, "auto", "UTC").rows)
    assert view.shown_markers == deploys.markers(bounded_ledger, (), filters.start, filters.end)
    assert view.all_markers == deploys.markers(bounded_ledger)


def test_trend_view_falls_back_past_max_bounds(bounded_ledger: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(trend_windows, "MAX_BOUNDS", 3)
    with store.reading(bounded_ledger) as connection:
        assert trend_windows.read_trend_and_windows(connection, Filters(), "day", "UTC", AS_OF, WEEK) is None

    view = trend_view(bounded_ledger, Filters(), "day", "UTC", AS_OF)

    assert view.windows == deploys.marker_windows(bounded_ledger, AS_OF)


def test_trend_view_without_markers(tmp_path: Path):
    ledger = tmp_path / "ledger.duckdb"
    ingest(ledger, [submission(number, START + timedelta(hours=number), "prod") for number in range(1, 50)], "plain")
    with store.reading(ledger) as connection:
        assert trend_windows.read_trend_and_windows(connection, Filters(), "day", "UTC", AS_OF, WEEK) is None

    view = trend_view(ledger, Filters(), "day", "UTC", AS_OF)

    assert view.windows == []
    assert int(view.trend.rows["submissions"].sum()) == 49


@pytest.mark.parametrize("count", [1, 2, 3, 7, 64])
def test_piece_sql_counts_bounds_at_or_before(count: int):
    bounds = [1_000 * index + index % 3 for index in range(1, count + 1)]
    probes = sorted({value + offset for value in bounds for offset in (-1, 0, 1)} | {0, 10**9})
    sql, parameters = trend_windows.piece_sql("t", bounds)

    with duckdb.connect() as connection:
        rows = connection.execute(
            f"SELECT epoch_us(t), {sql} FROM (SELECT make_timestamp(unnest(?::BIGINT[])) AS t) ORDER BY 1",
            [*parameters, probes],
        ).fetchall()

    assert [piece for _, piece in rows] == [bisect.bisect_right(bounds, value) for value, _ in rows]
