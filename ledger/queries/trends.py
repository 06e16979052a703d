"""Submissions per time bucket and deployment: the series behind the Trends and ROI charts.

Buckets are computed in SQL in one declared IANA time zone (UTC unless the
caller names another), so a day bucket runs from midnight to midnight in that
zone, whatever zone the viewer is in. Hour buckets follow the zone's own hours
(a zone at UTC+05:45 has hours starting at a quarter to), and day, week and
month buckets its wall clock: a day bucket on a daylight-saving change lasts 23
or 25 hours. Weeks start on Monday.

Bucketing runs in two steps, because calling DuckDB's ICU time zone functions
once per row costs about 25 times a plain scan (bench/trends.py). First each
submission gets a bucket unit by integer arithmetic on its epoch microseconds
and the zone's UTC offset, which Python's zoneinfo gives as a few constant
pieces over the data's span. Then ICU turns the few thousand distinct units
into bucket starts and ends.

A chart gets at most `MAX_BUCKETS` buckets for each of at most `MAX_SERIES`
series, whatever the ledger size. A bucket size that would give more buckets
is replaced by the next coarser one, with a note saying so. Deployments past
the largest `MAX_SERIES - 1` are summed into one series named
`OTHER_SERIES`.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pandas as pd

from ledger import store
from ledger.queries import Filters, where

AUTO = "auto"
# Bucket name -> (SQL interval literal, nominal length used to count buckets). Finest first.
BUCKET_SIZES: dict[str, tuple[str, timedelta]] = {
    "hour": ("1 hour", timedelta(hours=1)),
    "day": ("1 day", timedelta(days=1)),
    "week": ("7 days", timedelta(weeks=1)),
    "month": ("1 month", timedelta(days=30.44)),
    "year": ("1 year", timedelta(days=365.25)),
}
# The bucket sizes a user may pick. "year" is only chosen as a fallback for spans of decades.
BUCKETS = (AUTO, "hour", "day", "week", "month")
MAX_BUCKETS = 400
MAX_SERIES = 12
OTHER_SERIES = "other deployments"
DEFAULT_ZONE = "UTC"
# Every zone in Python's zoneinfo database; DuckDB's ICU extension accepts all of them ("localtime" is a file).
ZONES: tuple[str, ...] = ("UTC", *sorted(zoneinfo.available_timezones() - {"UTC", "localtime"}))
_ZONE_SET = frozenset(ZONES)

TREND_COLUMNS = (
    "bucket_start", "bucket_end", "series", "submissions", "with_divergence", "divergences",
    "actions_replayed", "savings", "cumulative_savings",
)


class InvalidTrendRequest(ValueError):
    """A bucket size or time zone outside the allowed sets."""


@dataclass(frozen=True)
class Trend:
    """Bucketed submissions per series (a deployment, or `OTHER_SERIES`) over a filtered view.

    `rows` has the columns of `TREND_COLUMNS`, one row for each bucket and
    series that has submissions, ordered by bucket then series. Times are
    UTC instants; a bucket covers [bucket_start, bucket_end). `savings` and
    `cumulative_savings` are exact `Decimal` US dollars; the cumulative sum
    runs from the first bucket of the view. `folded` lists the deployments
    summed into `OTHER_SERIES`. `note` explains a bucket coarser than the
    one requested, and is None otherwise.
    """

    bucket: str
    requested_bucket: str
    zone: str
    rows: pd.DataFrame
    folded: tuple[str, ...] = ()
    note: str | None = None
    span: tuple[datetime | None, datetime | None] = (None, None)
    series: tuple[str, ...] = field(default=())

    @property
    def width(self) -> timedelta:
        """The nominal length of one bucket."""
        return BUCKET_SIZES[self.bucket][1]


def check_zone(zone: str) -> str:
    """Return `zone` when it is an IANA time zone name both Python and DuckDB know; raise InvalidTrendRequest otherwise."""
    if zone not in _ZONE_SET:
        raise InvalidTrendRequest(
            f"unknown time zone {str(zone)[:60]!r}; use an IANA name such as UTC, Europe/Berlin or America/New_York"
        )
    return zone


def check_bucket(bucket: str, allowed: tuple[str, ...] = BUCKETS) -> str:
    """Return `bucket` when it is one of `allowed`; raise InvalidTrendRequest otherwise."""
    if bucket not in allowed:
        raise InvalidTrendRequest(f"unknown time bucket {str(bucket)[:40]!r}; use one of {', '.join(allowed)}")
    return bucket


def bucket_count(bucket: str, start: datetime, end: datetime) -> int:
    """Return about how many buckets of size `bucket` cover [start, end], counting partial ones."""
    length = max(end - start, timedelta(0))
    return int(length / BUCKET_SIZES[bucket][1]) + 2


def choose_bucket(requested: str, start: datetime | None, end: datetime | None) -> tuple[str, str | None]:
    """Return the bucket to use for a span and a note when it is coarser than `requested`.

    ``auto`` picks the finest bucket that gives at most `MAX_BUCKETS` buckets.
    A named bucket is kept unless it gives more, in which case the finest
    coarser one that fits is used. Raises InvalidTrendRequest for an unknown
    bucket name.
    """
    check_bucket(requested, (AUTO, *BUCKET_SIZES))
    names = list(BUCKET_SIZES)
    if start is None or end is None:
        return ("day" if requested == AUTO else requested), None
    first = 0 if requested == AUTO else names.index(requested)
    for name in names[first:]:
        if bucket_count(name, start, end) <= MAX_BUCKETS:
            chosen = name
            break
    else:
        chosen = names[-1]
    if requested == AUTO or chosen == requested:
        return chosen, None
    count = bucket_count(requested, start, end)
    return chosen, (
        f"{count:,} {requested} buckets would be more than {MAX_BUCKETS} per series, so the chart uses "
        f"{chosen} buckets; narrow the time range to see {requested}s."
    )


HOUR_US = 3_600_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
DAY_US = 86_400_000_000
# 1970-01-01, day 0 of the epoch, was a Thursday: adding 3 days makes weeks start on Monday.
_MONDAY_SHIFT_DAYS = 3


def zone_offsets(zone: str, first: datetime | None, last: datetime | None) -> list[tuple[int | None, int]]:
    """Return the zone's UTC offset over [first, last] as pieces (start in epoch microseconds, offset in microseconds).

    The first piece starts at None (minus infinity). Transitions are found by
    probing once a day and bisecting to the microsecond. Two transitions
    within one day would be missed, and no zone has had such a day since 2000.
    """
    if zone == "UTC" or first is None or last is None:
        return [(None, 0)]
    info = zoneinfo.ZoneInfo(zone)

    def offset(instant: datetime) -> int:
        return instant.astimezone(info).utcoffset() // timedelta(microseconds=1)

    pieces: list[tuple[int | None, int]] = [(None, offset(first))]
    probe = first
    while probe < last:
        following = min(probe + timedelta(days=1), last)
        if offset(following) != pieces[-1][1]:
            low, high = probe, following
            while high - low > timedelta(microseconds=1):
                middle = low + (high - low) / 2
                if offset(middle) == pieces[-1][1]:
                    low = middle
                else:
                    high = middle
            pieces.append((_epoch_us(high), offset(high)))
        probe = following
    return pieces


def _epoch_us(instant: datetime) -> int:
    return (instant - EPOCH) // timedelta(microseconds=1)


def _piecewise_sql(column: str, pieces: list[tuple[int, int]]) -> tuple[str, list[int]]:
    """Return SQL for a value that is constant on each piece of time, with its parameters."""
    if len(pieces) == 1:
        return "?::BIGINT", [pieces[0][1]]
    branches = []
    parameters: list[int] = []
    for (_, value), (next_start, _) in zip(pieces, pieces[1:]):
        branches.append(f"WHEN epoch_us({column}) < ? THEN ?::BIGINT")
        parameters += [next_start, value]
    return f"CASE {' '.join(branches)} ELSE ?::BIGINT END", [*parameters, pieces[-1][1]]


@dataclass(frozen=True)
class Bucketing:
    """SQL that puts times into buckets of one zone, in the two steps the module docstring describes.

    `unit_sql` maps the time column of each row to a BIGINT unit.
    `start_sql` and `end_sql` map the column ``unit`` to the bucket's start
    and end (TIMESTAMPTZ). Each comes with its parameters, in order.
    """

    unit_sql: str
    unit_parameters: list
    start_sql: str
    start_parameters: list
    end_sql: str
    end_parameters: list


def bucketing(bucket: str, zone: str, first: datetime | None, last: datetime | None,
              column: str = "s.submitted_at") -> Bucketing:
    """Return the SQL that buckets `column` by `bucket` in `zone` for times within [first, last].

    Both names must already be checked (`check_bucket`, `check_zone`).
    """
    pieces = zone_offsets(zone, first, last)
    if bucket == "hour":
        # The unit is the bucket start in epoch microseconds: the zone's offset only shifts where hours begin.
        shift_sql, shift_parameters = _piecewise_sql(column, [(start, offset % HOUR_US) for start, offset in pieces])
        unit = f"(epoch_us({column}) + {shift_sql}) // {HOUR_US} * {HOUR_US} - {shift_sql}"
        return Bucketing(unit, [*shift_parameters, *shift_parameters], "make_timestamp(unit)::TIMESTAMPTZ", [],
                         f"make_timestamp(unit + {HOUR_US})::TIMESTAMPTZ", [])
    offset_sql, offset_parameters = _piecewise_sql(column, pieces)
    local_day = f"(epoch_us({column}) + {offset_sql}) // {DAY_US}"
    if bucket == "day":
        return Bucketing(local_day, offset_parameters,
                         f"timezone(?, make_timestamp(unit * {DAY_US}))", [zone],
                         f"timezone(?, make_timestamp((unit + 1) * {DAY_US}))", [zone])
    if bucket == "week":
        unit = f"({local_day} + {_MONDAY_SHIFT_DAYS}) // 7"
        monday = f"(unit * 7 - {_MONDAY_SHIFT_DAYS})"
        return Bucketing(unit, offset_parameters,
                         f"timezone(?, make_timestamp({monday} * {DAY_US}))", [zone],
                         f"timezone(?, make_timestamp(({monday} + 7) * {DAY_US}))", [zone])
    part, interval = ("month", "1 month") if bucket == "month" else ("year", "1 year")
    local_start = f"date_trunc('{part}', make_timestamp(unit * {DAY_US}))"
    return Bucketing(local_day, offset_parameters,
                     f"timezone(?, {local_start})", [zone],
                     f"timezone(?, {local_start} + INTERVAL '{interval}')", [zone])


_SPAN_SQL = """
SELECT min(s.submitted_at), max(s.submitted_at)
FROM submissions AS s
WHERE {where}
"""

# The first step of the trend: sums per deployment and bucket unit. `ledger.queries.trend_windows` feeds
# `_TREND_SQL` another query with the same columns.
PER_UNIT_SQL = """
SELECT s.deployment,
       {unit} AS unit,
       count(*) AS submissions,
       count(*) FILTER (WHERE s.divergences_detected > 0) AS with_divergence,
       sum(s.divergences_detected) AS divergences,
       sum(s.actions_replayed) AS actions_replayed,
       sum(s.cost_savings) AS savings
FROM submissions AS s
WHERE {where}
GROUP BY ALL
"""

_TREND_SQL = """
WITH per_unit AS ({per_unit}), per_bucket AS (
    SELECT {start} AS bucket_start, {end} AS bucket_end, deployment,
           sum(submissions) AS submissions, sum(with_divergence) AS with_divergence,
           sum(divergences) AS divergences, sum(actions_replayed) AS actions_replayed, sum(savings) AS savings
    FROM per_unit
    GROUP BY ALL
), ranked AS (
    SELECT deployment,
           row_number() OVER (ORDER BY sum(submissions) DESC, deployment) AS rank,
           count(*) OVER () AS deployments
    FROM per_bucket
    GROUP BY deployment
), folded AS (
    SELECT p.bucket_start, p.bucket_end,
           CASE WHEN r.deployments <= ? OR r.rank < ? THEN p.deployment ELSE ? END AS series,
           sum(p.submissions) AS submissions,
           sum(p.with_divergence) AS with_divergence,
           sum(p.divergences) AS divergences,
           sum(p.actions_replayed) AS actions_replayed,
           sum(p.savings) AS savings
    FROM per_bucket AS p JOIN ranked AS r USING (deployment)
    GROUP BY ALL
)
SELECT bucket_start,
       bucket_end,
       series,
       submissions::BIGINT,
       with_divergence::BIGINT,
       divergences::BIGINT,
       actions_replayed::BIGINT,
       savings::DECIMAL(38, 6),
       (sum(savings) OVER (PARTITION BY series ORDER BY bucket_start))::DECIMAL(38, 6) AS cumulative_savings,
       (SELECT list(deployment ORDER BY rank) FROM ranked WHERE deployments > ? AND rank >= ?) AS folded
FROM folded
ORDER BY bucket_start, series
"""

@dataclass(frozen=True)
class TrendPlan:
    """The parts of a trend fixed before its scan: requested and chosen bucket, zone, note, data span and bucketing SQL."""

    requested_bucket: str
    bucket: str
    zone: str
    note: str | None
    span: tuple[datetime | None, datetime | None]
    bucketing: Bucketing


def trend(ledger: Path, filters: Filters, bucket: str = AUTO, zone: str = DEFAULT_ZONE) -> Trend:
    """Return the filtered submissions per bucket and series, bucketed in `zone`.

    The span that `bucket` is chosen for runs from `filters.start` (else the
    first matching submission) to `filters.end` (else the last). Raises
    InvalidTrendRequest for an unknown bucket or zone before any SQL runs.
    """
    check_bucket(bucket)
    check_zone(zone)
    with store.reading(ledger) as connection:
        return read_trend(connection, filters, bucket, zone)


def read_trend(connection: duckdb.DuckDBPyConnection, filters: Filters, bucket: str, zone: str) -> Trend:
    """Read `trend` on an open connection; `bucket` and `zone` must already be checked."""
    plan = plan_trend(connection, filters, bucket, zone)
    condition, parameters = where(filters)
    per_unit = PER_UNIT_SQL.format(unit=plan.bucketing.unit_sql, where=condition)
    return read_buckets(connection, plan, per_unit, [*plan.bucketing.unit_parameters, *parameters])


def plan_trend(connection: duckdb.DuckDBPyConnection, filters: Filters, bucket: str, zone: str) -> TrendPlan:
    """Read the span of the filtered submissions and choose the bucket for it.

    `bucket` and `zone` must already be checked.
    """
    condition, parameters = where(filters)
    first, last = connection.execute(_SPAN_SQL.format(where=condition), parameters).fetchone()
    chosen, note = choose_bucket(bucket, filters.start or first, filters.end or last)
    return TrendPlan(bucket, chosen, zone, note, (first, last), bucketing(chosen, zone, first, last))


def read_buckets(connection: duckdb.DuckDBPyConnection, plan: TrendPlan, per_unit_sql: str,
                 per_unit_parameters: list) -> Trend:
    """Turn per-unit sums into the `Trend` of `plan`.

    `per_unit_sql` is a query with the columns of `PER_UNIT_SQL` whose
    ``unit`` is `plan.bucketing`'s unit, and `per_unit_parameters` are its
    parameters.
    """
    steps = plan.bucketing
    sql = _TREND_SQL.format(per_unit=per_unit_sql, start=steps.start_sql, end=steps.end_sql)
    rows = connection.execute(sql, [
        *per_unit_parameters, *steps.start_parameters, *steps.end_parameters,
        MAX_SERIES, MAX_SERIES, OTHER_SERIES, MAX_SERIES, MAX_SERIES,
    ]).fetchall()
    folded = tuple(rows[0][-1] or ()) if rows else ()
    frame = result_frame([row[:-1] for row in rows], TREND_COLUMNS)
    series = tuple(dict.fromkeys(frame["series"]))
    return Trend(plan.bucket, plan.requested_bucket, plan.zone, frame, folded, plan.note, plan.span, series)


def result_frame(rows: list[tuple], columns: tuple[str, ...]) -> pd.DataFrame:
    """Build a frame from fetched rows, keeping money as exact `Decimal` objects and times as UTC instants.

    DuckDB's own ``.df()`` would turn DECIMAL columns into float64, so rows are fetched as Python values.
    """
    frame = pd.DataFrame(rows, columns=list(columns))
    for name in columns:
        if pd.api.types.is_datetime64_any_dtype(frame[name]):
            frame[name] = frame[name].dt.tz_convert("UTC")
    return frame


def divergence_series(trend_result: Trend, deployment: str) -> list[tuple[datetime, int, int]]:
    """Return one series' (bucket start, submissions, submissions with a divergence) buckets, oldest first."""
    rows = trend_result.rows[trend_result.rows["series"] == deployment]
    return [
        (start.to_pydatetime(), int(n), int(k))
        for start, n, k in zip(rows["bucket_start"], rows["submissions"], rows["with_divergence"])
    ]


_DIVERGENCE_BUCKETS_SQL = """
WITH per_unit AS (
    SELECT s.deployment,
           {unit} AS unit,
           count(*) AS submissions,
           count(*) FILTER (WHERE s.divergences_detected > 0) AS with_divergence
    FROM submissions AS s
    WHERE {where}
    GROUP BY ALL
)
SELECT deployment, {start} AS bucket_start, sum(submissions)::BIGINT, sum(with_divergence)::BIGINT
FROM per_unit
GROUP BY ALL
ORDER BY deployment, bucket_start
"""


def divergence_buckets(
    ledger: Path, filters: Filters, bucket: str = "day", zone: str = DEFAULT_ZONE
) -> dict[str, list[tuple[datetime, int, int]]]:
    """Return each deployment's (bucket start, submissions, submissions with a divergence), oldest bucket first.

    Unlike `trend` this folds no deployment and never coarsens the bucket,
    because its result feeds change-point detection, not a chart. Buckets
    without submissions are left out. Raises InvalidTrendRequest for an
    unknown bucket or zone.
    """
    check_bucket(bucket, tuple(BUCKET_SIZES))
    check_zone(zone)
    condition, parameters = where(filters)
    with store.reading(ledger) as connection:
        first, last = connection.execute(_SPAN_SQL.format(where=condition), parameters).fetchone()
        plan = bucketing(bucket, zone, first, last)
        sql = _DIVERGENCE_BUCKETS_SQL.format(unit=plan.unit_sql, where=condition, start=plan.start_sql)
        rows = connection.execute(sql, [*plan.unit_parameters, *parameters, *plan.start_parameters]).fetchall()
    series: dict[str, list[tuple[datetime, int, int]]] = {}
    for deployment, start, n, k in rows:
        series.setdefault(deployment, []).append((start, n, k))
    return series
