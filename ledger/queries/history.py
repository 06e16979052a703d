"""The history reads behind the receiver's API: pages of submissions newest first, one run's, its recorded actions.

Each submission comes back as the document the platform's history endpoint
lists: ``id``, ``run_id``, ``deployment``, ``submitted_at`` and the fields of
the replay result, divergences included, with unknown fields of the source
kept at the top level. `submission_document` builds it, for these reads and
for the receiver's ``201`` response alike, so both show one submission the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from ledger import store

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
# Submissions newest first; the id breaks ties, so every row has one place in the order.
NEWEST_FIRST = "s.submitted_at DESC, s.submission_id DESC"


class InvalidPage(ValueError):
    """A skip or limit outside the allowed range."""


@dataclass(frozen=True)
class StoredDivergenceRow:
    """One divergence as the ledger stores it: type, expected and actual as JSON text, the rest in `detail`."""

    type: str
    expected: str | None
    actual: str | None
    detail: str | None


@dataclass
class HistoryPage:
    """One page of submission documents and how many submissions there are in all."""

    items: list[dict[str, Any]]
    total: int
    skip: int
    limit: int


def timestamp_text(instant: datetime) -> str:
    """Return an instant as ISO-8601 in UTC with microseconds and ``Z``."""
    return instant.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def divergence_document(row: StoredDivergenceRow) -> dict[str, Any]:
    """Rebuild a divergence as the SDK sent it from its stored columns."""
    document = orjson.loads(row.detail) if row.detail else {"type": row.type}
    if row.type == "action_mismatch":
        return document
    # The stored expected/actual came from expected_inputs/actual_inputs unless the
    # divergence only had expected/actual, which then stay in the detail as sent.
    for column, key, plain in ((row.expected, "expected_inputs", "expected"), (row.actual, "actual_inputs", "actual")):
        if column is None or key in document:
            continue
        if plain in document and orjson.dumps(document[plain]) == orjson.dumps(orjson.loads(column)):
            continue
        document[key] = orjson.loads(column)
    return document


def submission_document(
    *,
    submission_id: str,
    run_id: str,
    deployment: str,
    submitted_at: datetime,
    status: str,
    actions_replayed: int,
    actions_total: int,
    divergences_detected: int,
    cost_savings: Decimal,
    extra_json: str | None,
    divergences: list[StoredDivergenceRow],
) -> dict[str, Any]:
    """Return a submission as the history endpoints list it; money is a JSON number of US dollars."""
    document: dict[str, Any] = {
        "id": submission_id,
        "run_id": run_id,
        "deployment": deployment,
        "submitted_at": timestamp_text(submitted_at),
        "status": status,
        "actions_replayed": actions_replayed,
        "actions_total": actions_total,
        "divergences_detected": divergences_detected,
        "divergences": [divergence_document(row) for row in divergences],
        # At most 15 significant digits (below 1e9 with 6 decimals), so the double
        # prints back as exactly this decimal.
        "cost_savings": float(cost_savings),
    }
    if extra_json:
        for key, value in orjson.loads(extra_json).items():
            document.setdefault(key, value)
    return document


_SUBMISSION_SELECT = """
SELECT s.submission_id, s.run_id, s.deployment, s.submitted_at, s.status, s.actions_replayed, s.actions_total,
       s.divergences_detected, s.cost_savings, s.extra
FROM submissions AS s
"""


def _documents(connection, rows: list[tuple]) -> list[dict[str, Any]]:
    """Build documents for submission rows, fetching their divergences in one query."""
    if not rows:
        return []
    ids = [row[0] for row in rows]
    marks = ", ".join("?" for _ in ids)
    divergences: dict[str, list[StoredDivergenceRow]] = {}
    for submission_id, kind, expected, actual, detail in connection.execute(
        f"SELECT submission_id, type, expected, actual, detail FROM divergences "
        f"WHERE submission_id IN ({marks}) ORDER BY submission_id, position",
        ids,
    ).fetchall():
        divergences.setdefault(submission_id, []).append(StoredDivergenceRow(kind, expected, actual, detail))
    return [
        submission_document(
            submission_id=row[0], run_id=row[1], deployment=row[2], submitted_at=row[3], status=row[4],
            actions_replayed=row[5], actions_total=row[6], divergences_detected=row[7], cost_savings=row[8],
            extra_json=row[9], divergences=divergences.get(row[0], []),
        )
        for row in rows
    ]


def check_page(skip: int, limit: int) -> None:
    """Raise InvalidPage unless 0 <= skip and 1 <= limit <= MAX_LIMIT."""
    if skip < 0:
        raise InvalidPage(f"skip must be 0 or more, got {skip}")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidPage(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")


def history_page(ledger: Path, skip: int = 0, limit: int = DEFAULT_LIMIT) -> HistoryPage:
    """Return submissions newest first, `limit` of them after the first `skip`; an absent ledger has none."""
    check_page(skip, limit)
    if not ledger.exists():
        return HistoryPage([], 0, skip, limit)
    with store.reading(ledger) as connection:
        total = connection.execute("SELECT count(*) FROM submissions").fetchone()[0]
        rows = connection.execute(
            f"{_SUBMISSION_SELECT} ORDER BY {NEWEST_FIRST} LIMIT ? OFFSET ?", [limit, skip]
        ).fetchall()
        items = _documents(connection, rows)
    return HistoryPage(items, total, skip, limit)


def run_history(ledger: Path, run_id: str, skip: int = 0, limit: int = DEFAULT_LIMIT) -> HistoryPage:
    """Return one run's submissions newest first, paged like `history_page`."""
    check_page(skip, limit)
    if not ledger.exists():
        return HistoryPage([], 0, skip, limit)
    with store.reading(ledger) as connection:
        total = connection.execute("SELECT count(*) FROM submissions WHERE run_id = ?", [run_id]).fetchone()[0]
        rows = connection.execute(
            f"{_SUBMISSION_SELECT} WHERE s.run_id = ? ORDER BY {NEWEST_FIRST} LIMIT ? OFFSET ?", [run_id, limit, skip]
        ).fetchall()
        items = _documents(connection, rows)
    return HistoryPage(items, total, skip, limit)


def run_actions(ledger: Path, run_id: str) -> list[dict[str, Any]]:
    """Return a run's recorded actions in recorded order, each with the replay index a divergence refers to.

    The SDK replays a run's recorded actions in order and skips the ones its
    own replays logged (outcome ``replayed``), so ``replay_index`` counts only
    the others from 0; it is None for replayed entries. An older ledger
    without recorded actions returns an empty list.
    """
    if not ledger.exists():
        return []
    with store.reading(ledger) as connection:
        if store.schema_version(connection) < 2:
            return []
        rows = connection.execute(
            """
            SELECT entry_id, action, outcome, recorded_at, cost_usd, duration_ms, inputs, outputs, detail, deployment,
                   agent_id, received_at,
                   CASE WHEN outcome IS DISTINCT FROM 'replayed' THEN
                        row_number() OVER (PARTITION BY outcome IS DISTINCT FROM 'replayed'
                                           ORDER BY received_at, position) - 1 END AS replay_index
            FROM recorded_actions
            WHERE run_id = ?
            ORDER BY received_at, position
            """,
            [run_id],
        ).fetchall()
    names = ("entry_id", "action", "outcome", "recorded_at", "cost_usd", "duration_ms", "inputs", "outputs", "detail",
             "deployment", "agent_id", "received_at", "replay_index")
    actions = []
    for row in rows:
        item = dict(zip(names, row))
        for key in ("inputs", "outputs", "detail"):
            item[key] = None if item[key] is None else orjson.loads(item[key])
        actions.append(item)
    return actions
