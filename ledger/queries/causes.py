"""The reads behind the Divergence causes page: causes overall and per deployment, and ranked hotspots.

A hotspot is one action, JSON path and cause, such as ``summarize`` →
``kwargs.seed`` → random number. It is ranked by the share of replays it
affects: the filtered submissions with at least one difference of that kind,
out of all filtered submissions. Every read takes the shared `Filters`, which
select submissions, and counts the causes of those submissions only.

The action of an action mismatch is the action the recording expected when
the SDK sent no ``action`` field, so control-flow hotspots are named after
the action the replay failed to call. Trends are shares per UTC bucket (day,
week or month, the finest that gives at most `TREND_POINTS` buckets).

Ledgers from a release before causes were stored raise `CausesUnavailable`
until any write upgrades them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ledger import store
from ledger.analysis import CAUSES
from ledger.queries import Filters, where
from ledger.queries.runs import CAUSES_SCHEMA_VERSION

HOTSPOT_LIMIT = 50
MAX_HOTSPOT_LIMIT = 500
EXAMPLE_RUNS = 3
EXAMPLE_LIMIT = 20
MAX_EXAMPLE_LIMIT = 200
TREND_POINTS = 60
# Bucket name -> (SQL interval, nominal length), finest first.
TREND_BUCKETS: dict[str, tuple[str, timedelta]] = {
    "day": ("INTERVAL '1 day'", timedelta(days=1)),
    "week": ("INTERVAL '7 days'", timedelta(weeks=1)),
    "month": ("INTERVAL '1 month'", timedelta(days=30.44)),
}
# The action a divergence happened at: its `action` field, else for an action
# mismatch the action the recording expected.
ACTION_SQL = "coalesce(d.action, CASE WHEN d.type = 'action_mismatch' THEN d.expected ->> '$' END)"


class CausesUnavailable(Exception):
    """The ledger was written by a release that did not store divergence causes, and has not been upgraded yet."""


class InvalidHotspot(ValueError):
    """A hotspot request names an unknown cause or a limit outside the allowed range."""


@dataclass(frozen=True)
class CauseCount:
    """How often one cause occurs among the filtered submissions."""

    cause: str
    submissions: int
    divergences: int
    differences: int
    share: float | None


@dataclass(frozen=True)
class CauseOverview:
    """Causes over the filtered submissions, most widespread first.

    `unexplained_divergences` counts divergences with no differing leaf, such
    as an input mismatch whose expected and actual inputs are equal as JSON.
    """

    submissions: int
    submissions_with_divergence: int
    divergences: int
    classified_divergences: int
    causes: tuple[CauseCount, ...]

    @property
    def unexplained_divergences(self) -> int:
        return self.divergences - self.classified_divergences


@dataclass(frozen=True)
class DeploymentCause:
    """How many of one deployment's filtered submissions have a cause."""

    deployment: str
    cause: str
    submissions: int
    deployment_submissions: int

    @property
    def share(self) -> float | None:
        return self.submissions / self.deployment_submissions if self.deployment_submissions else None


@dataclass(frozen=True)
class Hotspot:
    """One action, path and cause, with the replays it affects.

    `share` is `submissions` out of all filtered submissions. `share_of_action`
    is `submissions` out of the filtered submissions with any divergence at
    this action. `trend` is the share per bucket of `HotspotReport.buckets`
    (None for a bucket without submissions), and `trend_change` the share in
    the later half of the buckets minus the earlier half. `example_runs` are
    the most recent runs with this hotspot, newest first, and
    `example_expected`/`example_actual` the values of the newest occurrence.
    """

    action: str | None
    path: str
    cause: str
    submissions: int
    differences: int
    share: float
    action_submissions: int
    first_seen: datetime
    last_seen: datetime
    example_runs: tuple[str, ...]
    example_expected: str | None
    example_actual: str | None
    trend: tuple[float | None, ...] = ()
    trend_change: float | None = None

    @property
    def share_of_action(self) -> float | None:
        return self.submissions / self.action_submissions if self.action_submissions else None


@dataclass(frozen=True)
class HotspotReport:
    """The top hotspots of the filtered submissions, the number of distinct hotspots, and the trend buckets."""

    hotspots: tuple[Hotspot, ...]
    total: int
    submissions: int
    bucket: str
    buckets: tuple[datetime, ...]


@dataclass(frozen=True)
class HotspotExample:
    """One occurrence of a hotspot: the run, submission and divergence, and the differing values as cut JSON text."""

    run_id: str
    submission_id: str
    submitted_at: datetime
    deployment: str
    position: int
    action_index: int | None
    expected: str | None
    actual: str | None


def _require_causes(connection) -> None:
    if store.schema_version(connection) < CAUSES_SCHEMA_VERSION:
        raise CausesUnavailable(
            "this ledger was written by an older release and has no divergence causes yet; "
            "any write upgrades it, for example `replay-ledger ingest` of new results"
        )


def _selected(filters: Filters) -> tuple[str, list[Any]]:
    condition, parameters = where(filters)
    return f"selected AS (SELECT s.* FROM submissions AS s WHERE {condition})", parameters


def cause_overview(ledger: Path, filters: Filters) -> CauseOverview:
    """Return how many filtered submissions, divergences and differences each cause has, most submissions first."""
    selected, parameters = _selected(filters)
    with store.reading(ledger) as connection:
        _require_causes(connection)
        totals = connection.execute(
            f"""
            WITH {selected}
            SELECT (SELECT count(*) FROM selected)::BIGINT,
                   (SELECT count(*) FROM selected WHERE divergences_detected > 0)::BIGINT,
                   (SELECT count(*) FROM divergences AS d JOIN selected USING (submission_id))::BIGINT,
                   (SELECT count(*) FROM (SELECT DISTINCT c.submission_id, c.position
                                          FROM divergence_causes AS c JOIN selected USING (submission_id)))::BIGINT
            """,
            parameters,
        ).fetchone()
        rows = connection.execute(
            f"""
            WITH {selected}
            SELECT c.cause, count(DISTINCT c.submission_id)::BIGINT AS submissions,
                   count(DISTINCT (c.submission_id, c.position))::BIGINT, count(*)::BIGINT AS differences
            FROM divergence_causes AS c JOIN selected USING (submission_id)
            GROUP BY c.cause
            ORDER BY submissions DESC, differences DESC, c.cause
            """,
            parameters,
        ).fetchall()
    submissions = totals[0]
    counts = tuple(
        CauseCount(cause, affected, divergences, differences, affected / submissions if submissions else None)
        for cause, affected, divergences, differences in rows
    )
    return CauseOverview(totals[0], totals[1], totals[2], totals[3], counts)


def causes_by_deployment(ledger: Path, filters: Filters) -> list[DeploymentCause]:
    """Return, for each deployment and cause, the filtered submissions with that cause, by deployment then count."""
    selected, parameters = _selected(filters)
    with store.reading(ledger) as connection:
        _require_causes(connection)
        rows = connection.execute(
            f"""
            WITH {selected},
            per_deployment AS (SELECT deployment, count(*)::BIGINT AS total FROM selected GROUP BY deployment)
            SELECT s.deployment, c.cause, count(DISTINCT c.submission_id)::BIGINT AS affected, p.total
            FROM divergence_causes AS c
            JOIN selected AS s USING (submission_id)
            JOIN per_deployment AS p USING (deployment)
            GROUP BY s.deployment, c.cause, p.total
            ORDER BY s.deployment, affected DESC, c.cause
            """,
            parameters,
        ).fetchall()
    return [DeploymentCause(*row) for row in rows]


def choose_trend_bucket(start: datetime | None, end: datetime | None) -> str:
    """Return the finest bucket of `TREND_BUCKETS` that cuts [start, end] into at most `TREND_POINTS` buckets."""
    if start is None or end is None:
        return "day"
    for name, (_, length) in TREND_BUCKETS.items():
        if (end - start) / length + 1 <= TREND_POINTS:
            return name
    return "month"


def check_limit(limit: int, maximum: int, what: str) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= maximum:
        raise InvalidHotspot(f"the {what} must be a whole number from 1 to {maximum}, got {limit!r}")


_HOTSPOTS_SQL = """
WITH {selected},
occurrences AS (
    SELECT {action} AS action, c.path, c.cause, c.submission_id, s.run_id, s.submitted_at,
           c.expected, c.actual
    FROM divergence_causes AS c
    JOIN divergences AS d USING (submission_id, position)
    JOIN selected AS s USING (submission_id)
),
per_run AS (
    SELECT action, path, cause, run_id,
           count(DISTINCT submission_id) AS submissions, count(*) AS differences,
           min(submitted_at) AS first_seen, max(submitted_at) AS last_seen,
           arg_max(expected, submitted_at) AS last_expected, arg_max(actual, submitted_at) AS last_actual
    FROM occurrences
    GROUP BY action, path, cause, run_id
),
hotspots AS (
    SELECT action, path, cause,
           sum(submissions)::BIGINT AS submissions, sum(differences)::BIGINT AS differences,
           min(first_seen) AS first_seen, max(last_seen) AS last_seen,
           max_by(run_id, last_seen, {examples}) AS example_runs,
           arg_max(last_expected, last_seen) AS example_expected, arg_max(last_actual, last_seen) AS example_actual
    FROM per_run
    GROUP BY action, path, cause
),
action_submissions AS (
    SELECT {action} AS action, count(DISTINCT d.submission_id)::BIGINT AS submissions
    FROM divergences AS d JOIN selected USING (submission_id)
    GROUP BY 1
)
SELECT h.action, h.path, h.cause, h.submissions, h.differences, a.submissions, h.first_seen, h.last_seen,
       h.example_runs, h.example_expected, h.example_actual, count(*) OVER ()
FROM hotspots AS h
LEFT JOIN action_submissions AS a ON a.action IS NOT DISTINCT FROM h.action
ORDER BY h.submissions DESC, h.differences DESC, h.action NULLS LAST, h.path, h.cause
LIMIT ?
"""
_TREND_SQL = """
WITH {selected},
buckets AS (
    SELECT time_bucket({interval}, s.submitted_at) AS bucket, count(*)::BIGINT AS submissions
    FROM selected AS s GROUP BY 1
),
occurrences AS (
    SELECT DISTINCT {action} AS action, c.path, c.cause, c.submission_id,
           time_bucket({interval}, s.submitted_at) AS bucket
    FROM divergence_causes AS c
    JOIN divergences AS d USING (submission_id, position)
    JOIN selected AS s USING (submission_id)
)
SELECT 'total', NULL, NULL, bucket, submissions FROM buckets
UNION ALL
SELECT 'hotspot', o.action, o.path || chr(31) || o.cause, o.bucket, count(*)::BIGINT
FROM occurrences AS o
JOIN (SELECT unnest(?::VARCHAR[]) AS action_key, unnest(?::VARCHAR[]) AS detail_key) AS top
  ON o.path || chr(31) || o.cause = top.detail_key AND coalesce(o.action, chr(30)) = top.action_key
GROUP BY o.action, o.path, o.cause, o.bucket
"""


def hotspots(ledger: Path, filters: Filters, limit: int = HOTSPOT_LIMIT) -> HotspotReport:
    """Return the `limit` hotspots that affect the largest share of the filtered submissions, with their trends.

    Ties rank by the number of differences, then by action, path and cause.
    Raises InvalidHotspot for a limit outside 1 to `MAX_HOTSPOT_LIMIT`.
    """
    check_limit(limit, MAX_HOTSPOT_LIMIT, "hotspot limit")
    selected, parameters = _selected(filters)
    with store.reading(ledger) as connection:
        _require_causes(connection)
        submissions, first, last = connection.execute(
            f"WITH {selected} SELECT count(*)::BIGINT, min(submitted_at), max(submitted_at) FROM selected",
            parameters,
        ).fetchone()
        rows = connection.execute(
            _HOTSPOTS_SQL.format(selected=selected, action=ACTION_SQL, examples=EXAMPLE_RUNS),
            parameters + [limit],
        ).fetchall()
        bucket = choose_trend_bucket(filters.start or first, filters.end or last)
        trend_rows = []
        if rows:
            action_keys = [_action_key(row[0]) for row in rows]
            detail_keys = [f"{row[1]}\x1f{row[2]}" for row in rows]
            trend_rows = connection.execute(
                _TREND_SQL.format(selected=selected, action=ACTION_SQL, interval=TREND_BUCKETS[bucket][0]),
                parameters + [action_keys, detail_keys],
            ).fetchall()

    totals = {row[3]: row[4] for row in trend_rows if row[0] == "total"}
    buckets = _bucket_range(sorted(totals), bucket)
    counts: dict[tuple[str, str], dict[datetime, int]] = {}
    for kind, action, detail, start, count in trend_rows:
        if kind == "hotspot":
            counts.setdefault((_action_key(action), detail), {})[start] = count
    report = []
    for row in rows:
        action, path, cause, affected, differences, action_total, first_seen, last_seen, examples = row[:9]
        per_bucket = counts.get((_action_key(action), f"{path}\x1f{cause}"), {})
        report.append(Hotspot(
            action=action, path=path, cause=cause, submissions=affected, differences=differences,
            share=affected / submissions, action_submissions=action_total or 0,
            first_seen=first_seen, last_seen=last_seen, example_runs=tuple(examples),
            example_expected=row[9], example_actual=row[10],
            trend=tuple(per_bucket.get(start, 0) / totals[start] if totals.get(start) else None for start in buckets),
            trend_change=_trend_change(buckets, per_bucket, totals),
        ))
    total = rows[0][11] if rows else 0
    return HotspotReport(tuple(report), total, submissions, bucket, tuple(buckets))


def _action_key(action: str | None) -> str:
    # chr(30) cannot occur unescaped in an action name from the SDK's JSON, so it marks "no action".
    return "\x1e" if action is None else action


def _bucket_range(starts: list[datetime], bucket: str) -> list[datetime]:
    """Return every bucket start from the first to the last of `starts`, including empty buckets."""
    if not starts:
        return []
    if bucket == "month":
        result, current = [], starts[0]
        while current <= starts[-1]:
            result.append(current)
            year, month = divmod(current.month, 12)
            current = current.replace(year=current.year + year, month=month + 1)
        return result
    step = TREND_BUCKETS[bucket][1]
    count = int((starts[-1] - starts[0]) / step) + 1
    return [starts[0] + step * index for index in range(count)]


def _trend_change(buckets: list[datetime], counts: dict[datetime, int], totals: dict[datetime, int]) -> float | None:
    """Return the share over the later half of the buckets minus the share over the earlier half, or None."""
    if len(buckets) < 2:
        return None
    middle = len(buckets) // 2
    halves = (buckets[:middle], buckets[middle:])
    shares = []
    for half in halves:
        total = sum(totals.get(start, 0) for start in half)
        if not total:
            return None
        shares.append(sum(counts.get(start, 0) for start in half) / total)
    return shares[1] - shares[0]


def hotspot_examples(
    ledger: Path, filters: Filters, action: str | None, path: str, cause: str, limit: int = EXAMPLE_LIMIT
) -> list[HotspotExample]:
    """Return the newest occurrences of one hotspot among the filtered submissions.

    `action` None matches divergences without an action. Raises InvalidHotspot
    for a cause outside `analysis.CAUSES` or a limit outside 1 to `MAX_EXAMPLE_LIMIT`.
    """
    if cause not in CAUSES:
        raise InvalidHotspot(f"unknown cause {str(cause)[:40]!r}; use one of {', '.join(CAUSES)}")
    check_limit(limit, MAX_EXAMPLE_LIMIT, "example limit")
    selected, parameters = _selected(filters)
    with store.reading(ledger) as connection:
        _require_causes(connection)
        rows = connection.execute(
            f"""
            WITH {selected}
            SELECT s.run_id, s.submission_id, s.submitted_at, s.deployment, c.position, d.action_index,
                   c.expected, c.actual
            FROM divergence_causes AS c
            JOIN divergences AS d USING (submission_id, position)
            JOIN selected AS s USING (submission_id)
            WHERE {ACTION_SQL} IS NOT DISTINCT FROM ? AND c.path = ? AND c.cause = ?
            ORDER BY s.submitted_at DESC, s.submission_id DESC, c.position, c.ordinal
            LIMIT ?
            """,
            parameters + [action, path, cause, limit],
        ).fetchall()
    return [HotspotExample(*row) for row in rows]
