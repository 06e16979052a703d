"""The trend, deployment and ROI queries on real DuckDB ledgers, each checked against hand-written SQL.

The hand SQL buckets with DuckDB's ICU ``time_bucket`` (one call per row),
which the queries avoid for speed, so the two agree only if the arithmetic
bucketing is right, across daylight-saving changes and odd UTC offsets.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from ledger import store
from ledger.deploy_log import read_deploy_log
from ledger.ingest import ingest_paths
from ledger.queries import Filters, deploys, roi, trends

UTC = timezone.utc
SPRING = datetime(2026, 3, 1, tzinfo=UTC)
AS_OF = datetime(2026, 12, 4, tzinfo=UTC)


def query(ledger: Path, sql: str, parameters: list | tuple = ()) -> list[tuple]:
    with duckdb.connect(str(ledger), read_only=True) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        return connection.execute(sql, list(parameters)).fetchall()


def record(run_id: str, at: datetime, deployment: str = "prod", *, status: str = "success", replayed: int = 3,
           total: int = 3, divergences: int = 0, savings: float | int = 0.1, **extra) -> dict:
    return {"run_id": run_id, "status": status, "actions_replayed": replayed, "actions_total": total,
            "divergences_detected": divergences, "cost_savings": savings,
            "submitted_at": at.isoformat().replace("+00:00", "Z"), "deployment": deployment, **extra}


def build(ledger: Path, records: list[dict], deploy_rows: list[dict] = ()) -> Path:
    source = ledger.with_suffix(".jsonl")
    source.write_text("".join(json.dumps(item) + "\n" for item in records))
    report = ingest_paths(ledger, [str(source)])
    assert report.rejected == 0, report.to_dict()
    if deploy_rows:
        store.add_deploys(ledger, list(deploy_rows), origin="file")
    return ledger


def trend_counts(result: trends.Trend) -> list[tuple]:
    return sorted((row.bucket_start.to_pydatetime(), row.series, row.submissions) for row in result.rows.itertuples())


# ---------------------------------------------------------------------------
# Bucketing


ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe", "America/Santiago",
         "Pacific/Chatham"]
INTERVALS = {"day": "1 day", "week": "7 days", "month": "1 month"}


BUCKET_CASES = [("day", zone) for zone in ZONES] + [
    (bucket, zone) for bucket in ("week", "month") for zone in ("UTC", "America/Santiago", "Australia/Lord_Howe")]


@pytest.mark.parametrize(("bucket", "zone"), BUCKET_CASES)
def test_trend_buckets_match_icu(sample_ledger_template: Path, bucket: str, zone: str):
    result = trends.trend(sample_ledger_template, Filters(), bucket, zone)
    expected = query(sample_ledger_template, f"""
        SELECT time_bucket(INTERVAL '{INTERVALS[bucket]}', submitted_at, ?) AS b, deployment, count(*)
        FROM submissions GROUP BY ALL ORDER BY 1, 2""", [zone])

    assert result.bucket == bucket
    assert trend_counts(result) == sorted(expected)


@pytest.mark.parametrize("zone", ZONES)
def test_trend_hour_buckets_match_icu(sample_ledger_template: Path, zone: str):
    # 2026-10-20 to 2026-11-05 spans the end of summer time in Europe and in New York.
    filters = Filters(datetime(2026, 10, 20, tzinfo=UTC), datetime(2026, 11, 5, tzinfo=UTC))
    result = trends.trend(sample_ledger_template, filters, "hour", zone)
    expected = query(sample_ledger_template, """
        SELECT time_bucket(INTERVAL '1 hour', submitted_at, ?), deployment, count(*)
        FROM submissions WHERE submitted_at >= ? AND submitted_at < ? GROUP BY ALL""",
                     [zone, filters.start, filters.end])

    assert result.bucket == "hour"
    assert trend_counts(result) == sorted(expected)


def test_trend_day_sums_match_sql(sample_ledger_template: Path):
    result = trends.trend(sample_ledger_template, Filters(), "day", "UTC")
    expected = query(sample_ledger_template, """
        SELECT date_trunc('day', submitted_at), deployment, count(*),
               count(*) FILTER (WHERE divergences_detected > 0), sum(divergences_detected), sum(actions_replayed),
               sum(cost_savings),
               sum(sum(cost_savings)) OVER (PARTITION BY deployment ORDER BY date_trunc('day', submitted_at))
        FROM submissions GROUP BY 1, 2 ORDER BY 1, 2""")
    shown = [
        (row.bucket_start.to_pydatetime(), row.series, row.submissions, row.with_divergence, row.divergences,
         row.actions_replayed, row.savings, row.cumulative_savings)
        for row in result.rows.itertuples()
    ]

    assert shown == expected


def test_trend_dst_day_lasts_25_hours(ledger: Path):
    # Berlin leaves summer time on 2026-10-25 at 01:00 UTC.
    build(ledger, [
        record("a", datetime(2026, 10, 24, 22, 30, tzinfo=UTC)),
        record("b", datetime(2026, 10, 25, 23, 30, tzinfo=UTC)),
    ])

    rows = trends.trend(ledger, Filters(), "day", "Europe/Berlin").rows

    assert [row.bucket_start.to_pydatetime() for row in rows.itertuples()] == [
        datetime(2026, 10, 24, 22, tzinfo=UTC), datetime(2026, 10, 25, 23, tzinfo=UTC)]
    assert [row.bucket_end - row.bucket_start for row in rows.itertuples()] == [timedelta(hours=25), timedelta(hours=24)]


def test_trend_week_starts_monday(ledger: Path):
    build(ledger, [record("a", datetime(2026, 3, 4, 12, tzinfo=UTC))])  # a Wednesday

    row = next(trends.trend(ledger, Filters(), "week", "UTC").rows.itertuples())

    assert row.bucket_start.to_pydatetime() == datetime(2026, 3, 2, tzinfo=UTC)
    assert row.bucket_start.weekday() == 0
    assert row.bucket_end.to_pydatetime() == datetime(2026, 3, 9, tzinfo=UTC)


def test_trend_kathmandu_hours_start_at_quarter(ledger: Path):
    build(ledger, [record("a", datetime(2026, 3, 1, 0, 50, tzinfo=UTC))])

    row = next(trends.trend(ledger, Filters(), "hour", "Asia/Kathmandu").rows.itertuples())

    assert row.bucket_start.to_pydatetime() == datetime(2026, 3, 1, 0, 15, tzinfo=UTC)
    assert row.bucket_end.to_pydatetime() == datetime(2026, 3, 1, 1, 15, tzinfo=UTC)


def test_trend_c09_day_buckets_utc(ledger: Path, cases: Path):
    ingest_paths(ledger, [str(cases / "c09_midnight.jsonl")])

    result = trends.trend(ledger, Filters(), "day", "UTC")

    assert [(row.bucket_start.to_pydatetime(), row.submissions) for row in result.rows.itertuples()] == [
        (datetime(2026, 2, 28, tzinfo=UTC), 1), (datetime(2026, 3, 1, tzinfo=UTC), 1)]


def test_trend_c09_new_york_shares_a_day(ledger: Path, cases: Path):
    # In New York both submissions fall on 2026-02-28, local time.
    ingest_paths(ledger, [str(cases / "c09_midnight.jsonl")])

    result = trends.trend(ledger, Filters(), "day", "America/New_York")

    assert [(row.bucket_start.to_pydatetime(), row.submissions) for row in result.rows.itertuples()] == [
        (datetime(2026, 2, 28, 5, tzinfo=UTC), 2)]


@pytest.mark.parametrize(
    ("span", "expected"),
    [(timedelta(hours=30), "hour"), (timedelta(days=16), "hour"), (timedelta(days=17), "day"),
     (timedelta(days=390), "day"), (timedelta(days=800), "week"), (timedelta(days=365 * 9), "month"),
     (timedelta(days=365 * 60), "year")],
)
def test_choose_bucket_auto(span: timedelta, expected: str):
    assert trends.choose_bucket("auto", SPRING, SPRING + span) == (expected, None)


def test_choose_bucket_coarsens_with_note():
    bucket, note = trends.choose_bucket("hour", SPRING, SPRING + timedelta(days=90))

    assert bucket == "day"
    assert note == ("2,162 hour buckets would be more than 400 per series, so the chart uses day buckets; "
                    "narrow the time range to see hours.")


def test_choose_bucket_keeps_fitting_request():
    assert trends.choose_bucket("week", SPRING, SPRING + timedelta(days=90)) == ("week", None)


def test_trend_decades_stay_under_cap(ledger: Path):
    build(ledger, [record("old", datetime(2001, 1, 2, tzinfo=UTC)), record("new", datetime(2099, 12, 30, tzinfo=UTC))])

    result = trends.trend(ledger, Filters(), "month", "UTC")

    assert result.bucket == "year"
    assert "1,18" in result.note
    assert len(result.rows) == 2


def test_trend_rejects_unknown_zone(sample_ledger_template: Path):
    with pytest.raises(trends.InvalidTrendRequest, match="unknown time zone 'Mars/Olympus'; use an IANA name"):
        trends.trend(sample_ledger_template, Filters(), "day", "Mars/Olympus")


def test_trend_rejects_unknown_bucket(sample_ledger_template: Path):
    with pytest.raises(trends.InvalidTrendRequest, match=r"unknown time bucket 'minute'; use one of auto, hour"):
        trends.trend(sample_ledger_template, Filters(), "minute")


def test_trend_rejects_sql_in_zone(sample_ledger_template: Path):
    with pytest.raises(trends.InvalidTrendRequest):
        trends.trend(sample_ledger_template, Filters(), "day", "UTC'); DROP TABLE submissions; --")


def test_trend_folds_small_deployments(ledger: Path):
    records = [
        record(f"r{index}-{copy}", SPRING + timedelta(hours=index), f"dep-{index:02d}", divergences=copy % 2)
        for index in range(14) for copy in range(20 - index)
    ]
    build(ledger, records)

    result = trends.trend(ledger, Filters(), "day", "UTC")

    assert len(result.series) == trends.MAX_SERIES
    assert result.folded == ("dep-11", "dep-12", "dep-13")
    other = result.rows[result.rows["series"] == trends.OTHER_SERIES]
    expected = query(ledger, "SELECT count(*), count(*) FILTER (WHERE divergences_detected > 0) FROM submissions "
                             "WHERE deployment IN ('dep-11', 'dep-12', 'dep-13')")[0]
    assert (int(other["submissions"].sum()), int(other["with_divergence"].sum())) == expected


def test_trend_c04_savings_exact(ledger: Path, cases: Path):
    ingest_paths(ledger, [str(cases / "c04_money.jsonl")])

    result = trends.trend(ledger, Filters(), "day", "UTC")

    assert sum(result.rows["savings"], Decimal(0)) == Decimal("1.09")
    assert result.rows["cumulative_savings"].iloc[-1] == Decimal("1.09")


def test_trend_empty_view(sample_ledger_template: Path):
    result = trends.trend(sample_ledger_template, Filters(deployments=("no-such",)))

    assert result.rows.empty
    assert result.series == ()


def test_divergence_buckets_match_sql(sample_ledger_template: Path):
    series = trends.divergence_buckets(sample_ledger_template, Filters(), "day", "Europe/Berlin")
    expected = query(sample_ledger_template, """
        SELECT deployment, time_bucket(INTERVAL '1 day', submitted_at, 'Europe/Berlin') AS b, count(*),
               count(*) FILTER (WHERE divergences_detected > 0)
        FROM submissions GROUP BY ALL ORDER BY 1, 2""")

    assert [(name, *bucket) for name, buckets in series.items() for bucket in buckets] == expected


def test_zone_offsets_berlin_autumn():
    pieces = trends.zone_offsets("Europe/Berlin", datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))

    hour = 3_600_000_000
    change = int(datetime(2026, 10, 25, 1, tzinfo=UTC).timestamp()) * 1_000_000
    assert pieces == [(None, 2 * hour), (change, hour)]


# ---------------------------------------------------------------------------
# Deploy markers and their windows


def python_windows(ledger: Path, window: timedelta, as_of: datetime) -> dict[str, tuple]:
    """Count each marker's windows in Python from every submission, following the documented rule."""
    submissions = query(ledger, "SELECT deployment, submitted_at, divergences_detected > 0 FROM submissions")
    markers = query(ledger, "SELECT deploy_id, deployment, deployed_at FROM deploys")
    counts = {}
    for deploy_id, deployment, at in markers:
        others = sorted({m[2] for m in markers if m[1] == deployment and m[2] != at})
        previous = max((t for t in others if t < at), default=None)
        following = min((t for t in others if t > at), default=None)
        length = min(window, at - previous if previous else window, following - at if following else window, as_of - at)
        length = max(length, timedelta(0))
        before = [d for name, t, d in submissions if name == deployment and at - length <= t < at]
        after = [d for name, t, d in submissions if name == deployment and at <= t < at + length]
        counts[deploy_id] = (len(before), sum(before), len(after), sum(after))
    return counts


def test_marker_windows_match_python(sample_ledger_template: Path):
    windows = deploys.marker_windows(sample_ledger_template, AS_OF)

    shown = {w.marker.deploy_id: (w.before_n, w.before_k, w.after_n, w.after_k) for w in windows}
    assert shown == python_windows(sample_ledger_template, timedelta(days=7), AS_OF)
    assert len(windows) == 12


@pytest.mark.parametrize("window", [timedelta(hours=36), timedelta(days=3), timedelta(days=20)])
def test_marker_windows_lengths_match_python(sample_ledger_template: Path, window: timedelta):
    windows = deploys.marker_windows(sample_ledger_template, AS_OF, window=window)

    shown = {w.marker.deploy_id: (w.before_n, w.before_k, w.after_n, w.after_k) for w in windows}
    assert shown == python_windows(sample_ledger_template, window, AS_OF)


def test_marker_windows_clipped_by_neighbour(ledger: Path):
    start = datetime(2026, 3, 1, tzinfo=UTC)
    build(ledger, [record(f"r{h}", start + timedelta(hours=h)) for h in range(0, 24 * 10, 2)], [
        {"deployment": "prod", "version": "1", "deployed_at": start + timedelta(days=4)},
        {"deployment": "prod", "version": "2", "deployed_at": start + timedelta(days=5)},
    ])

    first, second = deploys.marker_windows(ledger, AS_OF)

    assert first.after_end == start + timedelta(days=5)
    assert first.before_start == start + timedelta(days=3)
    assert (first.before_n, first.after_n) == (12, 12)
    assert second.before_start == start + timedelta(days=4)
    assert second.after_end == start + timedelta(days=6)


def test_marker_windows_clipped_by_as_of(ledger: Path):
    start = datetime(2026, 3, 1, tzinfo=UTC)
    build(ledger, [record(f"r{h}", start + timedelta(hours=h)) for h in range(0, 24 * 10, 2)],
          [{"deployment": "prod", "version": "1", "deployed_at": start + timedelta(days=4)}])

    (window,) = deploys.marker_windows(ledger, start + timedelta(days=5))

    assert window.after_end == start + timedelta(days=5)
    assert window.before_start == start + timedelta(days=3)
    assert (window.before_n, window.after_n) == (12, 12)


def test_marker_windows_future_deploy_empty(ledger: Path):
    build(ledger, [record("a", SPRING)], [{"deployment": "prod", "version": "1", "deployed_at": SPRING}])

    (window,) = deploys.marker_windows(ledger, SPRING - timedelta(days=1))

    assert (window.before_n, window.after_n) == (0, 0)
    assert window.after_end == SPRING


def test_marker_windows_c09_sides(ledger: Path, cases: Path):
    ingest_paths(ledger, [str(cases / "c09_midnight.jsonl")])
    store.add_deploys(ledger, read_deploy_log(cases / "c09_deploys.csv"), origin="file")

    (window,) = deploys.marker_windows(ledger, AS_OF)
    (counted,) = deploys.marker_windows(ledger, AS_OF, window=None, submissions=5)

    assert window.marker.deployed_at == datetime(2026, 3, 1, tzinfo=UTC)
    assert (window.before_n, window.after_n) == (1, 1)
    assert (counted.before_n, counted.after_n) == (1, 1)
    assert counted.before_start == datetime(2026, 2, 28, 23, 30, tzinfo=UTC)
    assert counted.after_end == datetime(2026, 3, 1, 0, 30, tzinfo=UTC)


def python_nearest(ledger: Path, per_side: int, as_of: datetime) -> dict[str, tuple]:
    submissions = query(ledger, "SELECT deployment, submitted_at, submission_id, divergences_detected > 0 "
                                "FROM submissions ORDER BY submitted_at, submission_id")
    markers = query(ledger, "SELECT deploy_id, deployment, deployed_at FROM deploys")
    counts = {}
    for deploy_id, deployment, at in markers:
        others = sorted({m[2] for m in markers if m[1] == deployment and m[2] != at})
        previous = max((t for t in others if t < at), default=None)
        following = min((t for t in others if t > at), default=None)
        own = [row for row in submissions if row[0] == deployment and row[1] < as_of]
        before = [row for row in own if row[1] < at and (previous is None or row[1] >= previous)]
        after = [row for row in own if row[1] >= at and (following is None or row[1] < following)]
        before = sorted(before, key=lambda row: (-row[1].timestamp(), row[2]))[:per_side]
        after = sorted(after, key=lambda row: (row[1], row[2]))[:per_side]
        counts[deploy_id] = (len(before), sum(row[3] for row in before), len(after), sum(row[3] for row in after))
    return counts


@pytest.mark.parametrize("per_side", [1, 37, 100, 5000])
def test_marker_windows_submissions_match_python(sample_ledger_template: Path, per_side: int):
    windows = deploys.marker_windows(sample_ledger_template, AS_OF, window=None, submissions=per_side)

    shown = {w.marker.deploy_id: (w.before_n, w.before_k, w.after_n, w.after_k) for w in windows}
    assert shown == python_nearest(sample_ledger_template, per_side, AS_OF)


def test_marker_windows_filters_markers(sample_ledger_template: Path):
    windows = deploys.marker_windows(sample_ledger_template, AS_OF, ("prod-eu",), datetime(2026, 10, 1, tzinfo=UTC),
                                     datetime(2026, 11, 1, tzinfo=UTC))

    assert [(w.marker.deployment, w.marker.version) for w in windows] == [("prod-eu", "2.2.1"), ("prod-eu", "2.3.0")]


@pytest.mark.parametrize(
    ("options", "message"),
    [({"window": None}, "give either a window length or a number of submissions"),
     ({"window": timedelta(days=1), "submissions": 5}, "give either"),
     ({"window": timedelta(0)}, "the window must be longer than zero"),
     ({"window": None, "submissions": 0}, "the submissions per side must be a whole number from 1 up, got 0")],
)
def test_marker_windows_rejects_bad_mode(sample_ledger_template: Path, options: dict, message: str):
    with pytest.raises(deploys.InvalidDeploymentRequest, match=message):
        deploys.marker_windows(sample_ledger_template, AS_OF, **options)


def test_markers_in_range(sample_ledger_template: Path):
    found = deploys.markers(sample_ledger_template, ("prod-us",), datetime(2026, 9, 1, tzinfo=UTC))
    expected = query(sample_ledger_template, "SELECT version FROM deploys WHERE deployment = 'prod-us' AND "
                                             "deployed_at >= '2026-09-01' ORDER BY deployed_at")

    assert [marker.version for marker in found] == [row[0] for row in expected]


# ---------------------------------------------------------------------------
# Deployment summaries


def test_deployment_summaries_match_sql(sample_ledger_template: Path):
    rows = deploys.deployment_summaries(sample_ledger_template, Filters(), AS_OF, timedelta(days=7))
    expected = query(sample_ledger_template, """
        SELECT deployment, count(*),
               count(*) FILTER (WHERE status = 'success'), count(*) FILTER (WHERE status = 'partial'),
               count(*) FILTER (WHERE status = 'failed' AND divergences_detected = 1
                                AND actions_replayed < actions_total),
               count(*) FILTER (WHERE status = 'failed' AND NOT (divergences_detected = 1
                                AND actions_replayed < actions_total)),
               count(*) FILTER (WHERE divergences_detected > 0), sum(cost_savings), min(submitted_at),
               max(submitted_at)
        FROM submissions GROUP BY deployment ORDER BY count(*) DESC""")

    shown = [(r.deployment, r.submissions, r.success, r.partial, r.aborted, r.exception_failures, r.with_divergence,
              r.savings, r.first_submission, r.last_submission) for r in rows]
    assert shown == expected
    assert [row.stale for row in rows] == [False, False, False]


def test_deployment_summaries_staleness(sample_ledger_template: Path):
    # The sample's deployments last sent between 2026-11-30 19:42 and 23:50 UTC.
    rows = deploys.deployment_summaries(sample_ledger_template, Filters(), AS_OF, timedelta(days=3, hours=2))
    cutoff = AS_OF - timedelta(days=3, hours=2)
    expected = dict(query(sample_ledger_template, "SELECT deployment, max(submitted_at) < ? FROM submissions "
                                                  "GROUP BY deployment", [cutoff]))

    assert {row.deployment: row.stale for row in rows} == expected
    assert set(expected.values()) == {True, False}


def test_deployment_summaries_stale_ignores_time_filter(sample_ledger_template: Path):
    september = Filters(datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC))

    rows = deploys.deployment_summaries(sample_ledger_template, september, AS_OF, timedelta(days=7))

    assert all(row.last_submission < datetime(2026, 10, 1, tzinfo=UTC) for row in rows)
    assert all(row.last_seen > datetime(2026, 11, 29, tzinfo=UTC) for row in rows)
    assert not any(row.stale for row in rows)


def test_deployment_summaries_ignore_status_filter(sample_ledger_template: Path):
    everything = deploys.deployment_summaries(sample_ledger_template, Filters(), AS_OF, timedelta(days=7))
    failed_only = deploys.deployment_summaries(sample_ledger_template, Filters(statuses=("failed",)), AS_OF,
                                               timedelta(days=7))

    assert failed_only == everything


@pytest.mark.parametrize(
    ("sort", "direction", "sql_order"),
    [("deployment", "asc", "deployment ASC"), ("savings", "desc", "sum(cost_savings) DESC"),
     ("divergence_rate", "asc", "count(*) FILTER (WHERE divergences_detected > 0) / count(*) ASC"),
     ("last_submission", "desc", "max(submitted_at) DESC")],
)
def test_deployment_summaries_sorted(sample_ledger_template: Path, sort: str, direction: str, sql_order: str):
    rows = deploys.deployment_summaries(sample_ledger_template, Filters(), AS_OF, timedelta(days=7), sort, direction)
    expected = query(sample_ledger_template, f"SELECT deployment FROM submissions GROUP BY deployment "
                                             f"ORDER BY {sql_order}, deployment")

    assert [row.deployment for row in rows] == [row[0] for row in expected]


@pytest.mark.parametrize(("sort", "direction"), [("cost; DROP TABLE deploys", "asc"), ("savings", "sideways")])
def test_deployment_summaries_reject_bad_sort(sample_ledger_template: Path, sort: str, direction: str):
    with pytest.raises(deploys.InvalidDeploymentRequest, match="unknown sort"):
        deploys.deployment_summaries(sample_ledger_template, Filters(), AS_OF, timedelta(days=7), sort, direction)


# ---------------------------------------------------------------------------
# Version changes


def test_version_changes_sample(sample_ledger_template: Path):
    changes = deploys.version_changes(sample_ledger_template)
    expected = query(sample_ledger_template, """
        WITH v AS (SELECT deployment, extra ->> '$.agent_version' AS version, min(submitted_at) AS first_seen
                   FROM submissions WHERE extra ->> '$.agent_version' IS NOT NULL GROUP BY ALL)
        SELECT deployment, version, first_seen FROM v
        WHERE first_seen > (SELECT min(first_seen) FROM v AS w WHERE w.deployment = v.deployment)
        ORDER BY first_seen""")

    assert [(c.deployment, c.version, c.first_seen) for c in changes] == expected
    assert len(changes) == 9
    assert {c.field for c in changes} == {"agent_version"}


def test_version_changes_rollback_not_repeated(ledger: Path):
    build(ledger, [
        record("a", SPRING, agent_version="1.0"),
        record("b", SPRING + timedelta(hours=1), agent_version="1.1"),
        record("c", SPRING + timedelta(hours=2), agent_version="1.0"),
        record("d", SPRING + timedelta(hours=3), release="r7"),
    ])

    changes = deploys.version_changes(ledger)

    assert [(c.version, c.previous_version, c.first_seen, c.field) for c in changes] == [
        ("1.1", "1.0", SPRING + timedelta(hours=1), "agent_version"),
        ("r7", "1.1", SPRING + timedelta(hours=3), "release"),
    ]


def test_version_changes_named_field(ledger: Path):
    build(ledger, [record("a", SPRING, build="41", agent_version="x"),
                   record("b", SPRING + timedelta(hours=1), build="42", agent_version="x")])

    changes = deploys.version_changes(ledger, "build")

    assert [(c.version, c.previous_version, c.field) for c in changes] == [("42", "41", "build")]


def test_version_changes_reject_path_field(sample_ledger_template: Path):
    with pytest.raises(deploys.InvalidDeploymentRequest, match=r"version field '\$\.a' is not a plain key name"):
        deploys.version_changes(sample_ledger_template, "$.a")


# ---------------------------------------------------------------------------
# ROI


def test_savings_by_period_match_sql(sample_ledger_template: Path):
    periods = roi.savings_by_period(sample_ledger_template, Filters(), "week", "Europe/Berlin")
    gross = query(sample_ledger_template, """
        SELECT time_bucket(INTERVAL '7 days', submitted_at, 'Europe/Berlin'), deployment, count(*), sum(cost_savings)
        FROM submissions GROUP BY ALL""")
    once = query(sample_ledger_template, """
        WITH runs AS (SELECT run_id, arg_min(deployment, (submitted_at, submission_id)) AS deployment,
                             min(submitted_at) AS first_at, max(cost_savings) AS saved
                      FROM submissions GROUP BY run_id)
        SELECT time_bucket(INTERVAL '7 days', first_at, 'Europe/Berlin'), deployment, count(*), sum(saved)
        FROM runs GROUP BY ALL""")

    rows = periods.rows
    shown_gross = sorted((r.period_start.to_pydatetime(), r.series, r.submissions, r.gross) for r in rows.itertuples())
    shown_once = sorted((r.period_start.to_pydatetime(), r.series, r.runs, r.once_per_run) for r in rows.itertuples())
    assert shown_gross == sorted(gross)
    assert shown_once == sorted(once)


def test_savings_once_per_run_counts_replays_once(ledger: Path):
    monday = datetime(2026, 3, 2, tzinfo=UTC)
    build(ledger, [
        record("same", monday, savings=0.5),
        record("same", monday + timedelta(days=1), savings=0.75, replayed=3),
        record("same", monday + timedelta(days=9), savings=0.25, replayed=1),
        record("other", monday + timedelta(days=9), savings=1),
    ])

    totals = roi.roi_view(ledger, Filters(), "week", "UTC").totals
    periods = roi.savings_by_period(ledger, Filters(), "week", "UTC").rows

    assert totals.gross == Decimal("2.5")
    assert totals.once_per_run == Decimal("1.75")
    assert (totals.submissions, totals.runs) == (4, 2)
    assert list(periods["gross"]) == [Decimal("1.25"), Decimal("1.25")]
    assert list(periods["once_per_run"]) == [Decimal("0.75"), Decimal("1")]
    assert list(periods["cumulative_once_per_run"]) == [Decimal("0.75"), Decimal("1.75")]


def test_savings_totals_c04_exact(ledger: Path, cases: Path):
    ingest_paths(ledger, [str(cases / "c04_money.jsonl")])

    totals = roi.roi_view(ledger, Filters()).totals

    assert totals.gross == Decimal("1.09")


def test_projection_match_sql(sample_ledger_template: Path):
    result = roi.projection(sample_ledger_template, Filters(deployments=("prod-eu",)))
    last = query(sample_ledger_template, "SELECT max(submitted_at) FROM submissions WHERE deployment = 'prod-eu'")[0][0]
    gross, once = query(sample_ledger_template, """
        WITH w AS (SELECT * FROM submissions WHERE deployment = 'prod-eu' AND submitted_at > ? AND submitted_at <= ?)
        SELECT sum(cost_savings), (SELECT sum(m) FROM (SELECT max(cost_savings) AS m FROM w GROUP BY run_id))
        FROM w""", [last - timedelta(days=28), last])[0]

    assert result.window_end == last
    assert result.days == 28
    assert (result.gross, result.once_per_run) == (gross, once)
    assert result.gross_projection[30] == (gross * 30 / 28).quantize(Decimal("0.000001"))
    assert result.gross_projection[365] == (gross * 365 / 28).quantize(Decimal("0.000001"))
    assert result.once_per_run_projection[90] == (once * 90 / 28).quantize(Decimal("0.000001"))


def test_roi_view_totals_match_sql(sample_ledger_template: Path):
    october = Filters(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC), ("prod-eu", "staging"))
    expected = query(sample_ledger_template, """
        WITH s AS (SELECT * FROM submissions WHERE submitted_at >= ? AND submitted_at < ?
                   AND deployment IN ('prod-eu', 'staging')),
             runs AS (SELECT run_id, max(cost_savings) AS saved FROM s GROUP BY run_id)
        SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM runs), (SELECT sum(cost_savings) FROM s),
               (SELECT sum(saved) FROM runs)""", [october.start, october.end])[0]

    view = roi.roi_view(sample_ledger_template, october, "month", "UTC")

    assert (view.totals.submissions, view.totals.runs, view.totals.gross, view.totals.once_per_run) == expected
    assert view.projection == roi.projection(sample_ledger_template, october)


def test_projection_ignores_range_start(sample_ledger_template: Path):
    last_week = Filters(datetime(2026, 11, 24, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))

    assert roi.projection(sample_ledger_template, last_week) == roi.projection(sample_ledger_template, Filters())


def test_projection_short_data(ledger: Path):
    build(ledger, [record("a", SPRING, savings=1), record("b", SPRING + timedelta(days=7), savings=2)])

    result = roi.projection(ledger, Filters())

    assert result.days == 7
    assert result.shortened
    assert result.gross == Decimal(3)
    assert result.gross_projection[30] == (Decimal(3) * 30 / 7).quantize(Decimal("0.000001"))


def test_projection_empty(ledger: Path):
    build(ledger, [record("a", SPRING)])

    result = roi.projection(ledger, Filters(deployments=("none",)))

    assert result.window_end is None
    assert result.gross_projection == {30: None, 90: None, 365: None}


def test_periods_csv_exact(ledger: Path, cases: Path):
    ingest_paths(ledger, [str(cases / "c04_money.jsonl")], deployment="case-c04")

    text = roi.periods_csv(roi.savings_by_period(ledger, Filters(), "month", "UTC"))

    assert text.splitlines() == [
        "period_start,period_end,deployment,submissions,runs_first_seen,gross_usd,once_per_run_usd,"
        "cumulative_gross_usd,cumulative_once_per_run_usd",
        "2026-03-01T00:00:00Z,2026-04-01T00:00:00Z,case-c04,11,11,1.090000,1.090000,1.090000,1.090000",
    ]
