"""The reads behind the ingest history: one row per ingest, one ingest's report, its rejected records.

Every ingest (CLI, app upload, receiver, sample data) writes one ``ingest_log``
row with its counts and a JSON report of its files. It also writes one
``rejected`` row per record it did not take, with location, field, value,
reason and the raw record cut to a few thousand characters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from ledger import store

HISTORY_LIMIT_MAX = 1_000
REJECTIONS_LIMIT_MAX = 10_000
REJECTED_COLUMNS = ("location", "field", "value", "reason", "record")
# Rows of the rejected table are only ever appended, so rowid is the order they were read in.
_STORED_ORDER = "ingest_id DESC, rowid"


class InvalidRequest(ValueError):
    """An ingest id, limit or offset outside the allowed range."""


@dataclass(frozen=True)
class IngestEntry:
    """One ingest as the ingest log records it."""

    ingest_id: int
    started_at: datetime
    finished_at: datetime
    origin: str
    sources: tuple[str, ...]
    records_read: int
    ingested: int
    duplicates: int
    rejected: int


@dataclass(frozen=True)
class FileEntry:
    """One source file of an ingest, from the report the ingest stored."""

    name: str
    shape: str
    compressed: bool
    read: int
    rejected: int
    dropped_by_strict: int
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class IngestDetail:
    """An ingest's log row, its files, the notes on skipped sources, and the rest of its stored report."""

    entry: IngestEntry
    files: tuple[FileEntry, ...]
    skipped: tuple[str, ...]
    other: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HistoryPage:
    """The newest ingests first, and how many there are in all."""

    entries: list[IngestEntry]
    total: int


_ENTRY_COLUMNS = (
    "ingest_id, started_at, finished_at, origin, sources, records_read, ingested, duplicates, rejected"
)


def _entry(row: tuple) -> IngestEntry:
    values = list(row)
    values[4] = tuple(values[4] or ())
    return IngestEntry(*values)


def _check_limit(limit: int, offset: int, maximum: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= maximum:
        raise InvalidRequest(f"limit must be a whole number from 1 to {maximum}, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidRequest(f"offset must be a whole number from 0 up, got {offset!r}")


def ingest_history(ledger: Path, limit: int = 50, offset: int = 0) -> HistoryPage:
    """Return ingests newest first, `limit` of them after the first `offset`."""
    _check_limit(limit, offset, HISTORY_LIMIT_MAX)
    with store.reading(ledger) as connection:
        total = connection.execute("SELECT count(*) FROM ingest_log").fetchone()[0]
        rows = connection.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM ingest_log ORDER BY ingest_id DESC LIMIT ? OFFSET ?", [limit, offset]
        ).fetchall()
    return HistoryPage([_entry(row) for row in rows], total)


def ingest_detail(ledger: Path, ingest_id: int) -> IngestDetail | None:
    """Return one ingest with the per-file report it stored; None when no ingest has that id."""
    with store.reading(ledger) as connection:
        row = connection.execute(
            f"SELECT {_ENTRY_COLUMNS}, report FROM ingest_log WHERE ingest_id = ?", [ingest_id]
        ).fetchone()
    if row is None:
        return None
    report = _parse_report(row[-1])
    files = tuple(
        FileEntry(
            name=str(item.get("name", "")),
            shape=str(item.get("shape", "unknown")),
            compressed=bool(item.get("compressed", False)),
            read=int(item.get("read", 0) or 0),
            rejected=int(item.get("rejected", 0) or 0),
            dropped_by_strict=int(item.get("dropped_by_strict", 0) or 0),
            warnings=tuple(str(warning) for warning in item.get("warnings") or ()),
        )
        for item in report.pop("files", None) or ()
        if isinstance(item, dict)
    )
    skipped = tuple(str(note) for note in report.pop("skipped", None) or ())
    return IngestDetail(_entry(row[:-1]), files, skipped, report)


def _parse_report(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {"report": value}


@dataclass(frozen=True)
class RejectionsPage:
    """Rejected records of one ingest (or of all ingests) in the order they were read, and their count."""

    rows: list[tuple[int, str, str | None, str | None, str, str | None]]
    total: int


def rejections(ledger: Path, ingest_id: int | None = None, limit: int = 500, offset: int = 0) -> RejectionsPage:
    """Return rejected records as (ingest_id, location, field, value, reason, record), of one ingest or all.

    Within an ingest the rows come in the order they were read; ingests come
    newest first when `ingest_id` is None.
    """
    _check_limit(limit, offset, REJECTIONS_LIMIT_MAX)
    condition, parameters = ("ingest_id = ?", [ingest_id]) if ingest_id is not None else ("TRUE", [])
    with store.reading(ledger) as connection:
        total = connection.execute(f"SELECT count(*) FROM rejected WHERE {condition}", parameters).fetchone()[0]
        rows = connection.execute(
            f"SELECT ingest_id, {', '.join(REJECTED_COLUMNS)} FROM rejected WHERE {condition} "
            f"ORDER BY {_STORED_ORDER} LIMIT ? OFFSET ?",
            parameters + [limit, offset],
        ).fetchall()
    return RejectionsPage(rows, total)


def rejections_sql(ingest_id: int | None) -> tuple[str, list[Any]]:
    """Return the query behind a download of rejected records, of one ingest or of all, and its parameters."""
    condition, parameters = ("ingest_id = ?", [ingest_id]) if ingest_id is not None else ("TRUE", [])
    sql = f"SELECT ingest_id, {', '.join(REJECTED_COLUMNS)} FROM rejected WHERE {condition} ORDER BY {_STORED_ORDER}"
    return sql, parameters
