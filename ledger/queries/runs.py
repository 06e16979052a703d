"""The reads behind the Run page: one run's tiles, its submissions newest first with their divergences and causes,
and a search for run ids.

A run id is matched exactly (the submissions table has an index on it). The
search matches a text anywhere in a run id, ignoring case, ranks exact
matches first, then prefixes, then the rest, and returns a bounded number of runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from ledger import store
from ledger.analysis import MISSING
from ledger.causes import parse_json
from ledger.queries.hub import STRICT_ABORT_SQL

SUBMISSION_LIMIT = 50
DIVERGENCE_LIMIT = 200
SEARCH_LIMIT = 20
MAX_SEARCH_LIMIT = 100
MAX_SEARCH_CHARS = 256
CAUSES_SCHEMA_VERSION = 3
# Newest first; the id breaks ties, so the order is the same on every read.
NEWEST_FIRST = "s.submitted_at DESC, s.submission_id DESC"


class InvalidSearch(ValueError):
    """A run search text or result limit that cannot be searched for."""


@dataclass(frozen=True)
class RunTiles:
    """The numbers of one run over all its submissions."""

    submissions: int
    actions_replayed: int
    actions_total: int
    divergences: int
    cost_saved: Decimal
    submissions_with_divergence: int
    strict_aborts: int
    exception_failures: int
    first_submitted: datetime | None
    last_submitted: datetime | None
    deployments: tuple[str, ...]


@dataclass(frozen=True)
class DivergenceCause:
    """One differing leaf of a divergence: its path ("" for the whole value), cause, and values as cut JSON text."""

    path: str
    cause: str
    expected: str | None
    actual: str | None


@dataclass(frozen=True)
class RunDivergence:
    """One divergence of a submission with its causes.

    `expected` and `actual` are the stored values parsed from JSON (the
    inputs of an input mismatch, the action names of an action mismatch), or
    `analysis.MISSING` when the SDK sent no such value.
    """

    position: int
    type: str
    action: str | None
    action_index: int | None
    expected: Any
    actual: Any
    causes: tuple[DivergenceCause, ...]


@dataclass(frozen=True)
class RunSubmission:
    """One submission of a run, with its divergences in the order the SDK listed them."""

    submission_id: str
    platform_id: str | None
    status: str
    actions_replayed: int
    actions_total: int
    divergences_detected: int
    cost_savings: Decimal
    submitted_at: datetime
    deployment: str
    location: str | None
    flags: tuple[str, ...]
    strict_abort: bool
    divergences: tuple[RunDivergence, ...] = ()

    @property
    def divergences_not_shown(self) -> int:
        """Stored divergences left out because the submission has more than `DIVERGENCE_LIMIT`."""
        return max(0, self.divergences_detected - len(self.divergences))


@dataclass(frozen=True)
class RunDetail:
    """A run as the Run page shows it.

    `submissions` contains the newest `SUBMISSION_LIMIT` submissions, and the
    tiles count all of them. `causes_available` is False for a ledger written by a
    release before causes were stored, until any write upgrades it.
    """

    run_id: str
    tiles: RunTiles
    submissions: tuple[RunSubmission, ...]
    causes_available: bool

    @property
    def found(self) -> bool:
        return self.tiles.submissions > 0


@dataclass(frozen=True)
class RunMatch:
    """A run found by a search: how it matched (exact, prefix, contains), its submissions and the last one's time."""

    run_id: str
    match: str
    submissions: int
    last_submitted: datetime
    deployments: tuple[str, ...]


@dataclass(frozen=True)
class RunSearch:
    """The runs a search found, best first, and whether more matched than were returned."""

    text: str
    matches: tuple[RunMatch, ...]
    more: bool


_TILES_SQL = f"""
SELECT count(*)::BIGINT,
       coalesce(sum(s.actions_replayed), 0)::BIGINT,
       coalesce(sum(s.actions_total), 0)::BIGINT,
       coalesce(sum(s.divergences_detected), 0)::BIGINT,
       coalesce(sum(s.cost_savings), 0)::DECIMAL(38, 6),
       count(*) FILTER (WHERE s.divergences_detected > 0)::BIGINT,
       count(*) FILTER (WHERE {STRICT_ABORT_SQL})::BIGINT,
       count(*) FILTER (WHERE s.status = 'failed' AND NOT {STRICT_ABORT_SQL})::BIGINT,
       min(s.submitted_at),
       max(s.submitted_at),
       coalesce(list(DISTINCT s.deployment ORDER BY s.deployment), [])
FROM submissions AS s
WHERE s.run_id = ?
"""
_SUBMISSIONS_SQL = f"""
SELECT s.submission_id, s.platform_id, s.status, s.actions_replayed, s.actions_total, s.divergences_detected,
       s.cost_savings, s.submitted_at, s.deployment, s.location, coalesce(s.flags, []), {STRICT_ABORT_SQL}
FROM submissions AS s
WHERE s.run_id = ?
ORDER BY {NEWEST_FIRST}
LIMIT ?
"""
_DIVERGENCES_SQL = """
SELECT d.submission_id, d.position, d.type, d.action, d.action_index, d.expected::VARCHAR, d.actual::VARCHAR
FROM divergences AS d
WHERE d.submission_id IN (SELECT unnest(?::VARCHAR[])) AND d.position < ?
ORDER BY d.submission_id, d.position
"""
_CAUSES_SQL = """
SELECT c.submission_id, c.position, c.path, c.cause, c.expected, c.actual
FROM divergence_causes AS c
WHERE c.submission_id IN (SELECT unnest(?::VARCHAR[])) AND c.position < ?
ORDER BY c.submission_id, c.position, c.ordinal
"""


def run_detail(ledger: Path, run_id: str, limit: int = SUBMISSION_LIMIT) -> RunDetail:
    """Return one run's tiles and its newest `limit` submissions with their divergences and causes.

    The run id is matched exactly. A run with no submissions gives a detail
    whose `found` is False. Raises ValueError for a `limit` outside 1 to 1,000.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1_000:
        raise ValueError(f"limit must be a whole number from 1 to 1,000, got {limit!r}")
    with store.reading(ledger) as connection:
        row = connection.execute(_TILES_SQL, [run_id]).fetchone()
        tiles = RunTiles(*row[:-1], deployments=tuple(row[-1]))
        causes_available = store.schema_version(connection) >= CAUSES_SCHEMA_VERSION
        if not tiles.submissions:
            return RunDetail(run_id, tiles, (), causes_available)
        submission_rows = connection.execute(_SUBMISSIONS_SQL, [run_id, limit]).fetchall()
        ids = [row[0] for row in submission_rows]
        divergence_rows = connection.execute(_DIVERGENCES_SQL, [ids, DIVERGENCE_LIMIT]).fetchall()
        cause_rows = connection.execute(_CAUSES_SQL, [ids, DIVERGENCE_LIMIT]).fetchall() if causes_available else []

    causes_by_divergence: dict[tuple[str, int], list[DivergenceCause]] = {}
    for submission_id, position, path, cause, expected, actual in cause_rows:
        causes_by_divergence.setdefault((submission_id, position), []).append(
            DivergenceCause(path, cause, expected, actual)
        )
    divergences_by_submission: dict[str, list[RunDivergence]] = {}
    for submission_id, position, kind, action, action_index, expected, actual in divergence_rows:
        divergences_by_submission.setdefault(submission_id, []).append(RunDivergence(
            position=position,
            type=kind,
            action=action,
            action_index=action_index,
            expected=MISSING if expected is None else parse_json(expected),
            actual=MISSING if actual is None else parse_json(actual),
            causes=tuple(causes_by_divergence.get((submission_id, position), ())),
        ))
    submissions = tuple(
        RunSubmission(
            *row[:10], flags=tuple(row[10]), strict_abort=bool(row[11]),
            divergences=tuple(divergences_by_submission.get(row[0], ())),
        )
        for row in submission_rows
    )
    return RunDetail(run_id, tiles, submissions, causes_available)


def check_search(text: str, limit: int) -> str:
    """Return the search text stripped of surrounding spaces; raise InvalidSearch for an empty or too long text or a bad limit."""
    if not isinstance(text, str):
        raise InvalidSearch(f"the search text must be text, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise InvalidSearch("the search text is empty; enter all or part of a run id")
    if len(stripped) > MAX_SEARCH_CHARS:
        raise InvalidSearch(
            f"the search text is {len(stripped):,} characters long; run ids have at most {MAX_SEARCH_CHARS}, "
            "so enter a shorter part of one"
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise InvalidSearch(f"the result limit must be a whole number from 1 to {MAX_SEARCH_LIMIT}, got {limit!r}")
    return stripped


_SEARCH_SQL = """
SELECT s.run_id,
       min(CASE WHEN s.run_id = $text THEN 0 WHEN starts_with(lower(s.run_id), lower($text)) THEN 1 ELSE 2 END)
           AS rank,
       count(*)::BIGINT,
       max(s.submitted_at) AS last_submitted,
       list(DISTINCT s.deployment ORDER BY s.deployment)
FROM submissions AS s
WHERE contains(lower(s.run_id), lower($text))
GROUP BY s.run_id
ORDER BY rank, last_submitted DESC, s.run_id
LIMIT $limit
"""
_MATCH_KINDS = ("exact", "prefix", "contains")


def search_runs(ledger: Path, text: str, limit: int = SEARCH_LIMIT) -> RunSearch:
    """Return up to `limit` runs whose id contains `text` (ignoring case), exact matches first, then prefixes.

    Within a rank the most recently submitted run comes first. Raises
    InvalidSearch for an empty text, a text longer than any run id may be, or
    a limit outside 1 to `MAX_SEARCH_LIMIT`.
    """
    stripped = check_search(text, limit)
    with store.reading(ledger) as connection:
        rows = connection.execute(_SEARCH_SQL, {"text": stripped, "limit": limit + 1}).fetchall()
    matches = tuple(
        RunMatch(run_id, _MATCH_KINDS[rank], count, last, tuple(deployments))
        for run_id, rank, count, last, deployments in rows[:limit]
    )
    return RunSearch(stripped, matches, len(rows) > limit)
