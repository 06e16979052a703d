"""Small builders of replay records and ledger reads shared by the core tests."""

from __future__ import annotations

import json
from pathlib import Path

from ledger import store


def record(number: int, **fields) -> dict:
    """Return a valid record whose run id is ``run-<number>``, with `fields` replacing its defaults."""
    value = {
        "run_id": f"run-{number}",
        "status": "success",
        "actions_replayed": 3,
        "actions_total": 3,
        "divergences_detected": 0,
        "divergences": [],
        "cost_savings": 0.25,
        "submitted_at": "2026-03-01T10:00:00Z",
    }
    value.update(fields)
    return value


def write_lines(path: Path, records: list[dict]) -> Path:
    """Write records as JSON Lines and return the path."""
    path.write_text("".join(json.dumps(item) + "\n" for item in records))
    return path


def query(ledger: Path, sql: str, parameters: list | None = None) -> list[tuple]:
    """Run a read-only query on a ledger and return its rows."""
    with store.reading(ledger) as connection:
        return connection.execute(sql, parameters or []).fetchall()
