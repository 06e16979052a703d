"""Reads behind the Deployments page and the regression checks.

They cover per-deployment summaries, deploy markers, the submissions in the
windows around each marker, and version changes in the data.

Window rule, shared by the Trends page and ``replay-ledger check``: a marker
at time t compares the submissions of its deployment in [t - L, t) with those
in [t, t + L). A submission at exactly t therefore counts as after the
deploy. L is the requested window, shortened to the time since the
deployment's previous marker, to the time until its next marker and to the
time from t to ``as_of``. Both windows thus have the same length, and neither
crosses another deploy of the same deployment. In submission-count mode each
side takes up to N submissions, nearest to t first, again without crossing a
neighbouring marker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from ledger import store
from ledger.queries import Filters, where
from ledger.queries.hub import STRICT_ABORT_SQL
from ledger.queries.trends import EPOCH, DAY_US

# Column key -> SQL it sorts by. Nulls sort last in both directions; the deployment name breaks ties.
SORT_COLUMNS: dict[str, str] = {
    "deployment": "deployment",
    "submissions": "submissions",
    "divergence_rate": "with_divergence::DOUBLE / NULLIF(submissions, 0)",
    "savings": "savings",
    "first_submission": "first_submission",
    "last_submission": "last_submission",
    "failed_share": "(aborted + exception_failures)::DOUBLE / NULLIF(submissions, 0)",
}
DIRECTIONS = ("asc", "desc")
DEFAULT_SORT = "submissions"
DEFAULT_DIRECTION = "desc"

# Keys of a submission's `extra` JSON that carry the deployed version, tried in this order.
VERSION_FIELDS = ("agent_version", "app_version", "service_version", "version", "release", "build", "git_sha")
AUTO_FIELD = "auto"
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class InvalidDeploymentRequest(ValueError):
    """A sort column, direction, window or version field outside the allowed values."""


@dataclass(frozen=True)
class DeploymentSummary:
    """One deployment's submissions in the filtered period, and when it last sent anything at all.

    Failed submissions are split as the Replay Hub splits them: `aborted`
    counts strict-mode replays stopped by a divergence, `exception_failures`
    the rest. `last_seen` is the deployment's newest submission in the whole
    ledger, whatever the filters, and `stale` is True when it is older than
    the staleness period before `as_of`.
    """

    deployment: str
    submissions: int
    success: int
    partial: int
    aborted: int
    exception_failures: int
    with_divergence: int
    divergences: int
    actions_replayed: int
    savings: Decimal
    first_submission: datetime | None
    last_submission: datetime | None
    last_seen: datetime | None
    stale: bool

    def share(self, count: int) -> float | None:
        """Return `count` as a share of this deployment's submissions, or None with none."""
        return count / self.submissions if self.submissions else None

    @property
    def divergence_rate(self) -> float | None:
        """Share of submissions with at least one divergence."""
        return self.share(self.with_divergence)


@dataclass(frozen=True)
class Marker:
    """A stored deploy marker."""

    deploy_id: str
    deployment: str
    version: str
    deployed_at: datetime
    note: str
    origin: str


@dataclass(frozen=True)
class MarkerWindow:
    """A marker and the submissions of its deployment in the windows before and after it.

    `before_start`/`after_end` bound the windows [before_start, deployed_at)
    and [deployed_at, after_end). In submission-count mode they are the times
    of the outermost submissions taken, and None when a side took none.
    `before_n`/`after_n` count submissions, `before_k`/`after_k` those with
    at least one divergence.
    """

    marker: Marker
    before_start: datetime | None
    after_end: datetime | None
    before_n: int
    before_k: int
    after_n: int
    after_k: int
    previous_at: datetime | None
    next_at: datetime | None


@dataclass(frozen=True)
class VersionChange:
    """The first submission of a deployment that carries a version not seen in it before."""

    deployment: str
    version: str
    previous_version: str
    first_seen: datetime
    submission_id: str
    field: str


def check_sort(sort: str, direction: str) -> None:
    """Raise InvalidDeploymentRequest unless the sort column and direction are allowed."""
    if sort not in SORT_COLUMNS:
        raise InvalidDeploymentRequest(f"unknown sort column {str(sort)[:40]!r}; use one of {', '.join(SORT_COLUMNS)}")
    if direction not in DIRECTIONS:
        raise InvalidDeploymentRequest(f"unknown sort direction {str(direction)[:40]!r}; use asc or desc")


_SUMMARY_SQL = """
WITH counted AS (
    SELECT s.deployment,
           count(*)::BIGINT AS submissions,
           count(*) FILTER (WHERE s.status = 'success')::BIGINT AS success,
           count(*) FILTER (WHERE s.status = 'partial')::BIGINT AS partial,
           count(*) FILTER (WHERE {strict_abort})::BIGINT AS aborted,
           count(*) FILTER (WHERE s.status = 'failed' AND NOT {strict_abort})::BIGINT AS exception_failures,
           count(*) FILTER (WHERE s.divergences_detected > 0)::BIGINT AS with_divergence,
           sum(s.divergences_detected)::BIGINT AS divergences,
           sum(s.actions_replayed)::BIGINT AS actions_replayed,
           sum(s.cost_savings)::DECIMAL(38, 6) AS savings,
           min(s.submitted_at) AS first_submission,
           max(s.submitted_at) AS last_submission
    FROM submissions AS s
    WHERE {where}
    GROUP BY s.deployment
), seen AS (
    SELECT deployment, max(submitted_at) AS last_seen FROM submissions GROUP BY deployment
)
SELECT c.*, seen.last_seen, seen.last_seen < ? AS stale
FROM counted AS c JOIN seen USING (deployment)
ORDER BY {order} {direction} NULLS LAST, deployment ASC
"""


def deployment_summaries(
    ledger: Path,
    filters: Filters,
    as_of: datetime,
    stale_after: timedelta,
    sort: str = DEFAULT_SORT,
    direction: str = DEFAULT_DIRECTION,
) -> list[DeploymentSummary]:
    """Return one summary per deployment with submissions matching `filters`, sorted in SQL.

    The status filter is ignored, because the summary's shares are shares
    of every status. Raises InvalidDeploymentRequest for an unknown sort
    column or direction before any SQL runs.
    """
    check_sort(sort, direction)
    unfiltered = Filters(filters.start, filters.end, filters.deployments)
    condition, parameters = where(unfiltered)
    sql = _SUMMARY_SQL.format(
        strict_abort=STRICT_ABORT_SQL, where=condition, order=SORT_COLUMNS[sort], direction=direction.upper()
    )
    with store.reading(ledger) as connection:
        rows = connection.execute(sql, [*parameters, as_of - stale_after]).fetchall()
    return [DeploymentSummary(*row) for row in rows]


_MARKER_COLUMNS = "deploy_id, deployment, version, deployed_at, note, origin"


def _marker_conditions(deployments: tuple[str, ...], start: datetime | None, end: datetime | None,
                       alias: str = "") -> tuple[str, list[Any]]:
    prefix = f"{alias}." if alias else ""
    conditions = ["TRUE"]
    parameters: list[Any] = []
    if deployments:
        conditions.append(f"{prefix}deployment IN ({', '.join('?' for _ in deployments)})")
        parameters.extend(deployments)
    if start is not None:
        conditions.append(f"{prefix}deployed_at >= ?")
        parameters.append(start)
    if end is not None:
        conditions.append(f"{prefix}deployed_at < ?")
        parameters.append(end)
    return " AND ".join(conditions), parameters


def markers(
    ledger: Path, deployments: tuple[str, ...] = (), start: datetime | None = None, end: datetime | None = None
) -> list[Marker]:
    """Return the deploy markers of some deployments (all when empty) in [start, end), oldest first."""
    with store.reading(ledger) as connection:
        return read_markers(connection, deployments, start, end)


def read_markers(
    connection: duckdb.DuckDBPyConnection, deployments: tuple[str, ...] = (), start: datetime | None = None,
    end: datetime | None = None,
) -> list[Marker]:
    """Read `markers` on an open connection."""
    condition, parameters = _marker_conditions(deployments, start, end)
    rows = connection.execute(
        f"SELECT {_MARKER_COLUMNS} FROM deploys WHERE {condition} ORDER BY deployed_at, deployment, version",
        parameters,
    ).fetchall()
    return [Marker(*row) for row in rows]


# Markers to judge, with the nearest other deploy instants of the same deployment.
_NEIGHBOURS_SQL = """
WITH instants AS (
    SELECT DISTINCT deployment, deployed_at FROM deploys WHERE {deployment_condition}
), neighbours AS (
    SELECT deployment, deployed_at,
           lag(deployed_at) OVER w AS previous_at,
           lead(deployed_at) OVER w AS next_at
    FROM instants
    WINDOW w AS (PARTITION BY deployment ORDER BY deployed_at)
)
SELECT m.deploy_id, m.deployment, m.version, m.deployed_at, m.note, m.origin, n.previous_at, n.next_at
FROM deploys AS m JOIN neighbours AS n USING (deployment, deployed_at)
WHERE {marker_condition}
"""

# Each marker's windows: its neighbours and the shortened length L (see the module docstring).
_WINDOWS_CTE = """
judged AS ({neighbours}), bounded AS (
    SELECT *,
           greatest(least(
               ?::BIGINT,
               coalesce(epoch_us(deployed_at) - epoch_us(previous_at), ?::BIGINT),
               coalesce(epoch_us(next_at) - epoch_us(deployed_at), ?::BIGINT),
               epoch_us(?::TIMESTAMPTZ) - epoch_us(deployed_at)
           ), 0) AS length_us
    FROM judged
), windows AS (
    SELECT *,
           deployed_at - to_microseconds(length_us) AS before_start,
           deployed_at + to_microseconds(length_us) AS after_end
    FROM bounded
)"""

_WINDOWS_SPAN_SQL = """
WITH {windows}
SELECT min(before_start) FILTER (WHERE length_us > 0), max(after_end) FILTER (WHERE length_us > 0)
FROM windows
"""

# Submissions join the windows on (deployment, UTC day) and are then checked against the exact bounds, so
# each submission meets only the few windows that touch its day instead of every marker of its deployment.
# The constant bounds on submitted_at let DuckDB skip row groups outside every window.
_TIME_WINDOWS_SQL = """
WITH {windows}, window_days AS (
    SELECT deploy_id, deployment, deployed_at, before_start, after_end,
           unnest(range(epoch_us(before_start) // {day_us}, (epoch_us(after_end) - 1) // {day_us} + 1)) AS day
    FROM windows
    WHERE length_us > 0
), counted AS (
    SELECT w.deploy_id,
           count(*) FILTER (WHERE s.submitted_at < w.deployed_at) AS before_n,
           count(*) FILTER (WHERE s.submitted_at < w.deployed_at AND s.divergences_detected > 0) AS before_k,
           count(*) FILTER (WHERE s.submitted_at >= w.deployed_at) AS after_n,
           count(*) FILTER (WHERE s.submitted_at >= w.deployed_at AND s.divergences_detected > 0) AS after_k
    FROM window_days AS w
    JOIN submissions AS s
      ON s.deployment = w.deployment AND epoch_us(s.submitted_at) // {day_us} = w.day
    WHERE s.submitted_at >= w.before_start AND s.submitted_at < w.after_end
      AND s.submitted_at >= ? AND s.submitted_at < ?
    GROUP BY w.deploy_id
)
SELECT w.deploy_id, w.deployment, w.version, w.deployed_at, w.note, w.origin,
       w.before_start, w.after_end,
       coalesce(c.before_n, 0)::BIGINT, coalesce(c.before_k, 0)::BIGINT,
       coalesce(c.after_n, 0)::BIGINT, coalesce(c.after_k, 0)::BIGINT,
       w.previous_at, w.next_at
FROM windows AS w LEFT JOIN counted AS c USING (deploy_id)
ORDER BY w.deployed_at, w.deployment, w.version
"""

_DAY_COUNTS_SQL = """
SELECT s.deployment, epoch_us(s.submitted_at) // {day_us} AS day, count(*)::BIGINT
FROM submissions AS s
WHERE s.deployment IN ({marks}) AND s.submitted_at < ?
GROUP BY ALL
ORDER BY 1, 2
"""

# Submission-count mode, second step: take the N nearest submissions each side from candidate ranges that
# the day counts showed to hold at least N (or everything up to the neighbouring markers).
_COUNT_WINDOWS_SQL = """
WITH candidates AS (
    SELECT unnest(?::VARCHAR[]) AS deploy_id, unnest(?::VARCHAR[]) AS deployment,
           unnest(?::TIMESTAMPTZ[]) AS deployed_at, unnest(?::TIMESTAMPTZ[]) AS low, unnest(?::TIMESTAMPTZ[]) AS high
), candidate_days AS (
    SELECT *, unnest(range(epoch_us(low) // {day_us}, (epoch_us(high) - 1) // {day_us} + 1)) AS day
    FROM candidates
    WHERE high > low
), sides AS (
    SELECT c.deploy_id, s.submitted_at, s.divergences_detected > 0 AS diverged,
           s.submitted_at >= c.deployed_at AS after,
           row_number() OVER (
               PARTITION BY c.deploy_id, s.submitted_at >= c.deployed_at
               ORDER BY CASE WHEN s.submitted_at >= c.deployed_at THEN epoch_us(s.submitted_at)
                             ELSE -epoch_us(s.submitted_at) END, s.submission_id
           ) AS nearness
    FROM candidate_days AS c
    JOIN submissions AS s
      ON s.deployment = c.deployment AND epoch_us(s.submitted_at) // {day_us} = c.day
    WHERE s.submitted_at >= c.low AND s.submitted_at < c.high
)
SELECT deploy_id,
       min(submitted_at) FILTER (WHERE NOT after),
       max(submitted_at) FILTER (WHERE after),
       count(*) FILTER (WHERE NOT after)::BIGINT,
       count(*) FILTER (WHERE NOT after AND diverged)::BIGINT,
       count(*) FILTER (WHERE after)::BIGINT,
       count(*) FILTER (WHERE after AND diverged)::BIGINT
FROM sides
WHERE nearness <= ?
GROUP BY deploy_id
"""


def _day_start(day: int) -> datetime:
    return EPOCH + timedelta(days=day)


def _candidate_range(
    days: list[tuple[int, int]], deployed_at: datetime, previous_at: datetime | None, next_at: datetime | None,
    as_of: datetime, per_side: int,
) -> tuple[datetime, datetime]:
    """Return [low, high) around `deployed_at`, which contains the `per_side` nearest submissions each side.

    `days` are the deployment's (UTC day, submissions) pairs in order. The day
    of the deploy itself never counts towards `per_side`, because some of
    its submissions lie on the other side, so the range may hold a day more
    than needed, never less. It stops at the neighbouring markers and `as_of`.
    """
    deploy_day = (deployed_at - EPOCH) // timedelta(days=1)
    earlier = [(day, count) for day, count in days if day < deploy_day]
    later = [(day, count) for day, count in days if day > deploy_day]
    low_day = days[0][0] if days else deploy_day
    total = 0
    for day, count in reversed(earlier):
        total += count
        low_day = day
        if total >= per_side:
            break
    high_day = days[-1][0] if days else deploy_day
    total = 0
    for day, count in later:
        total += count
        high_day = day
        if total >= per_side:
            break
    low = _day_start(min(low_day, deploy_day))
    high = _day_start(max(high_day, deploy_day) + 1)
    if previous_at is not None:
        low = max(low, previous_at)
    if next_at is not None:
        high = min(high, next_at)
    return low, min(high, as_of)


def _count_windows(connection, judged: list[tuple], as_of: datetime, per_side: int) -> list["MarkerWindow"]:
    deployments = sorted({row[1] for row in judged})
    counts: dict[str, list[tuple[int, int]]] = {name: [] for name in deployments}
    if deployments:
        sql = _DAY_COUNTS_SQL.format(day_us=DAY_US, marks=", ".join("?" for _ in deployments))
        for deployment, day, count in connection.execute(sql, [*deployments, as_of]).fetchall():
            counts[deployment].append((day, count))
    ranges = [_candidate_range(counts[row[1]], row[3], row[6], row[7], as_of, per_side) for row in judged]
    found: dict[str, tuple] = {}
    if judged:
        rows = connection.execute(_COUNT_WINDOWS_SQL.format(day_us=DAY_US), [
            [row[0] for row in judged], [row[1] for row in judged], [row[3] for row in judged],
            [low for low, _ in ranges], [high for _, high in ranges], per_side,
        ]).fetchall()
        found = {row[0]: row[1:] for row in rows}
    windows = []
    for row in judged:
        before_start, after_end, before_n, before_k, after_n, after_k = found.get(row[0], (None, None, 0, 0, 0, 0))
        windows.append(MarkerWindow(Marker(*row[:6]), before_start, after_end, before_n, before_k, after_n, after_k,
                                    row[6], row[7]))
    return windows


def marker_windows(
    ledger: Path,
    as_of: datetime,
    deployments: tuple[str, ...] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    window: timedelta | None = timedelta(days=7),
    submissions: int | None = None,
) -> list[MarkerWindow]:
    """Count submissions with and without divergences around each marker deployed in [since, until).

    Give either `window` (a length, see the module docstring for how it is
    shortened) or `submissions` (how many each side, at most). Submissions
    at or after `as_of` are left out in both modes. Raises
    InvalidDeploymentRequest for a window that is not positive or for both or
    neither mode given.
    """
    check_window(window, submissions)
    with store.reading(ledger) as connection:
        return read_marker_windows(connection, as_of, deployments, since, until, window, submissions)


def check_window(window: timedelta | None, submissions: int | None) -> None:
    """Raise InvalidDeploymentRequest unless exactly one of a positive length and a count from 1 up is given."""
    if (window is None) == (submissions is None):
        raise InvalidDeploymentRequest("give either a window length or a number of submissions per side, not both")
    if window is not None and window <= timedelta(0):
        raise InvalidDeploymentRequest(f"the window must be longer than zero, got {window}")
    if submissions is not None and (isinstance(submissions, bool) or not isinstance(submissions, int)
                                    or submissions < 1):
        raise InvalidDeploymentRequest(f"the submissions per side must be a whole number from 1 up, got {submissions!r}")


def _neighbours_sql(deployments: tuple[str, ...], since: datetime | None,
                    until: datetime | None) -> tuple[str, list[Any]]:
    deployment_condition, deployment_parameters = _marker_conditions(deployments, None, None)
    marker_condition, marker_parameters = _marker_conditions(deployments, since, until, alias="m")
    neighbours = _NEIGHBOURS_SQL.format(deployment_condition=deployment_condition, marker_condition=marker_condition)
    return neighbours, [*deployment_parameters, *marker_parameters]


def _windows_sql(as_of: datetime, deployments: tuple[str, ...], since: datetime | None, until: datetime | None,
                 window: timedelta) -> tuple[str, list[Any]]:
    """Return the `_WINDOWS_CTE` of the markers deployed in [since, until), and its parameters."""
    neighbours, neighbour_parameters = _neighbours_sql(deployments, since, until)
    length_us = window // timedelta(microseconds=1)
    return _WINDOWS_CTE.format(neighbours=neighbours), [*neighbour_parameters, length_us, length_us, length_us, as_of]


_WINDOW_BOUNDS_SQL = """
WITH {windows}
SELECT deploy_id, deployment, version, deployed_at, note, origin, before_start, after_end, previous_at, next_at,
       length_us > 0 AS counted, epoch_us(before_start), epoch_us(deployed_at), epoch_us(after_end)
FROM windows
ORDER BY deployed_at, deployment, version
"""


@dataclass(frozen=True)
class WindowBounds:
    """A marker's time windows before they are counted: [before_start, deployed_at) and [deployed_at, after_end).

    `counted` is False when the windows are empty (length zero), and the
    ``*_us`` fields are the three instants in epoch microseconds.
    """

    marker: Marker
    before_start: datetime
    after_end: datetime
    previous_at: datetime | None
    next_at: datetime | None
    counted: bool
    before_start_us: int
    deployed_at_us: int
    after_end_us: int

    def counted_window(self, before_n: int, before_k: int, after_n: int, after_k: int) -> MarkerWindow:
        """Return the `MarkerWindow` with these counts."""
        return MarkerWindow(self.marker, self.before_start, self.after_end, before_n, before_k, after_n, after_k,
                            self.previous_at, self.next_at)


def read_window_bounds(
    connection: duckdb.DuckDBPyConnection,
    as_of: datetime,
    deployments: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    window: timedelta,
) -> list[WindowBounds]:
    """Read the time windows of the markers deployed in [since, until), in the order `marker_windows` returns them.

    The windows follow the rule in the module docstring. `window` must
    already be checked (`check_window`).
    """
    windows, parameters = _windows_sql(as_of, deployments, since, until, window)
    rows = connection.execute(_WINDOW_BOUNDS_SQL.format(windows=windows), parameters).fetchall()
    return [WindowBounds(Marker(*row[:6]), *row[6:]) for row in rows]


def read_marker_windows(
    connection: duckdb.DuckDBPyConnection,
    as_of: datetime,
    deployments: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    window: timedelta | None,
    submissions: int | None,
) -> list[MarkerWindow]:
    """Read `marker_windows` on an open connection; the mode must already be checked (`check_window`)."""
    neighbours, neighbour_parameters = _neighbours_sql(deployments, since, until)
    if window is not None:
        windows, window_parameters = _windows_sql(as_of, deployments, since, until, window)
        low, high = connection.execute(_WINDOWS_SPAN_SQL.format(windows=windows), window_parameters).fetchone()
        sql = _TIME_WINDOWS_SQL.format(windows=windows, day_us=DAY_US)
        rows = connection.execute(sql, [*window_parameters, low or as_of, high or as_of]).fetchall()
        return [MarkerWindow(Marker(*row[:6]), *row[6:]) for row in rows]
    judged = connection.execute(
        f"{neighbours} ORDER BY m.deployed_at, m.deployment, m.version", neighbour_parameters
    ).fetchall()
    return _count_windows(connection, judged, as_of, submissions)


def check_version_field(field: str) -> str:
    """Return `field` when it is ``auto`` or a plain JSON key name; raise InvalidDeploymentRequest otherwise."""
    if field == AUTO_FIELD or _FIELD_NAME.fullmatch(field or ""):
        return field
    raise InvalidDeploymentRequest(
        f"version field {str(field)[:40]!r} is not a plain key name (letters, digits and _, at most 64); "
        f"use a top-level key of the records, such as agent_version"
    )


_VERSION_CHANGES_SQL = """
WITH versioned AS (
    SELECT s.deployment, s.submitted_at, s.submission_id, {field} AS field, {version} AS version
    FROM submissions AS s
    WHERE s.extra IS NOT NULL AND {deployment_condition}
), first_seen AS (
    SELECT deployment, version,
           arg_min(field, (submitted_at, submission_id)) AS field,
           arg_min(submission_id, (submitted_at, submission_id)) AS submission_id,
           min(submitted_at) AS first_seen
    FROM versioned
    WHERE version IS NOT NULL AND trim(version) <> ''
    GROUP BY deployment, version
), ordered AS (
    SELECT *, lag(version) OVER (PARTITION BY deployment ORDER BY first_seen, submission_id) AS previous_version
    FROM first_seen
)
SELECT deployment, version, previous_version, first_seen, submission_id, field
FROM ordered
WHERE previous_version IS NOT NULL
ORDER BY first_seen, deployment
"""


def version_changes(ledger: Path, field: str = AUTO_FIELD, deployments: tuple[str, ...] = ()) -> list[VersionChange]:
    """Return, per deployment, the first submission of each version after the first version seen, oldest first.

    The version is read from the submission's `extra` JSON: the key `field`,
    or with ``auto`` the first of `VERSION_FIELDS` present. A version's
    marker time is its first submission, so every submission of it counts as
    after its deploy. A return to an older version (a rollback) gives no
    change, because that version was seen before. Raises
    InvalidDeploymentRequest for a field that is not a plain key name.
    """
    check_version_field(field)
    fields = list(VERSION_FIELDS) if field == AUTO_FIELD else [field]
    paths = [f"$.{name}" for name in fields]
    # The first field present wins: CASE names it, coalesce reads its value.
    field_sql = "CASE " + " ".join("WHEN json_extract_string(s.extra, ?) IS NOT NULL THEN ?" for _ in fields) + " END"
    version_sql = "coalesce(" + ", ".join("json_extract_string(s.extra, ?)" for _ in fields) + ")"
    condition, parameters = _marker_conditions(deployments, None, None, alias="s")
    sql = _VERSION_CHANGES_SQL.format(field=field_sql, version=version_sql, deployment_condition=condition)
    field_parameters = [value for pair in zip(paths, fields) for value in pair]
    with store.reading(ledger) as connection:
        rows = connection.execute(sql, [*field_parameters, *paths, *parameters]).fetchall()
    return [VersionChange(*row) for row in rows]
