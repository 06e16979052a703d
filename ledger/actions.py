"""Recorded action batches: what the SDK's background sync posts to ``/api/v1/ingest``.

A batch is ``{"run_id", "agent_id"?, "entries": [...]}``, each entry one line of
the SDK's local ledger: ``id``, ``timestamp``, ``action``, ``cost_usd``,
``duration_ms``, ``outcome``, ``tags`` and ``payload`` (``inputs``, ``outputs``).
A bad envelope rejects the batch; a bad entry is rejected alone, with its
field and reason, and the others are stored. Keys without a column of their
own are kept whole in ``detail``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pyarrow as pa

from ledger.models import ZONELESS_FLAG, FieldError, parse_money, parse_run_id, parse_timestamp, shorten
from ledger.normalize import RecordRejected, json_dumps

MAX_ENTRIES = 1_000
TEXT_MAX_LENGTH = 512
_COLUMN_KEYS = ("id", "action", "outcome", "timestamp", "cost_usd", "duration_ms", "payload")

ACTION_FIELDS = {
    "run_id": pa.string(),
    "entry_id": pa.string(),
    "batch_id": pa.string(),
    "position": pa.int32(),
    "deployment": pa.string(),
    "agent_id": pa.string(),
    "action": pa.string(),
    "outcome": pa.string(),
    "recorded_at": pa.timestamp("us", tz="UTC"),
    "cost_usd": pa.decimal128(18, 6),
    "duration_ms": pa.float64(),
    "inputs": pa.string(),
    "outputs": pa.string(),
    "detail": pa.string(),
    "flags": pa.list_(pa.string()),
    "received_at": pa.timestamp("us", tz="UTC"),
}


@dataclass
class EntryRejected:
    """An entry of a batch that was not stored: its field path and the reason."""

    field: str
    message: str


@dataclass
class ActionBatch:
    """A validated batch: its run, the rows to store (one per good entry) and the rejected entries."""

    run_id: str
    agent_id: str | None
    batch_id: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[EntryRejected] = field(default_factory=list)

    def table(self, rows: list[dict[str, Any]] | None = None) -> pa.Table:
        """Return `rows` (default: all) as an Arrow table in the stored column order."""
        chosen = self.rows if rows is None else rows
        return pa.table({name: pa.array([row[name] for row in chosen], type=kind) for name, kind in ACTION_FIELDS.items()})


def _text(where: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FieldError(where, value, f"must be text, got {shorten(value)!r}")
    if len(value) > TEXT_MAX_LENGTH:
        raise FieldError(where, value, f"is {len(value)} characters long, at most {TEXT_MAX_LENGTH} are allowed")
    return value


def _duration(where: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise FieldError(where, value, f"must be a number of milliseconds, got {shorten(value)!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise FieldError(where, value, f"must be a finite, non-negative number of milliseconds, got {shorten(value)}")
    return number


def _entry_row(entry: Any, where: str, batch: ActionBatch, common: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise FieldError(where, entry, f"must be an object, got {shorten(entry)!r}")
    entry_run = entry.get("run_id")
    if entry_run is not None and parse_run_id(f"{where}.run_id", entry_run) != batch.run_id:
        raise FieldError(
            f"{where}.run_id", entry_run, f"is {shorten(entry_run)!r} but the batch is for run {batch.run_id!r}"
        )
    payload = entry.get("payload")
    if payload is not None and not isinstance(payload, dict):
        raise FieldError(f"{where}.payload", payload, f"must be an object, got {shorten(payload)!r}")
    payload = payload or {}
    flags = []
    recorded_at = None
    if entry.get("timestamp") is not None:
        recorded_at, zoneless = parse_timestamp(f"{where}.timestamp", entry["timestamp"])
        if zoneless:
            flags.append(ZONELESS_FLAG.replace("submitted_at", "timestamp"))
    cost = None if entry.get("cost_usd") is None else parse_money(f"{where}.cost_usd", entry["cost_usd"])
    entry_id = entry.get("id")
    detail = {key: value for key, value in entry.items() if key not in _COLUMN_KEYS}
    rest = {key: value for key, value in payload.items() if key not in ("inputs", "outputs")}
    if rest:
        detail["payload"] = rest
    return {
        **common,
        "entry_id": None if entry_id is None else parse_run_id(f"{where}.id", entry_id),
        "action": _text(f"{where}.action", entry.get("action")),
        "outcome": _text(f"{where}.outcome", entry.get("outcome")),
        "recorded_at": recorded_at,
        "cost_usd": cost,
        "duration_ms": _duration(f"{where}.duration_ms", entry.get("duration_ms")),
        "inputs": json_dumps(payload["inputs"]) if "inputs" in payload else None,
        "outputs": json_dumps(payload["outputs"]) if "outputs" in payload else None,
        "detail": json_dumps(detail) if detail else None,
        "flags": flags or None,
    }


def parse_action_batch(
    body: Any, *, deployment: str, batch_id: str, received_at_us: int, max_entries: int = MAX_ENTRIES
) -> ActionBatch:
    """Validate a parsed batch body into rows; raise RecordRejected when the envelope itself is invalid."""
    if not isinstance(body, dict):
        raise RecordRejected("", shorten(body), f"expected a JSON object with run_id and entries, got {type(body).__name__}")
    try:
        run_id = parse_run_id("run_id", body.get("run_id"))
        agent_id = _text("agent_id", body.get("agent_id"))
    except FieldError as error:
        raise RecordRejected(error.field, error.value, error.reason) from None
    entries = body.get("entries")
    if not isinstance(entries, list):
        raise RecordRejected("entries", shorten(entries), "must be a list of recorded actions")
    if len(entries) > max_entries:
        raise RecordRejected(
            "entries", len(entries), f"has {len(entries)} entries, at most {max_entries} are allowed; send smaller batches"
        )
    batch = ActionBatch(run_id=run_id, agent_id=agent_id, batch_id=batch_id)
    for position, entry in enumerate(entries):
        common = {
            "run_id": run_id, "batch_id": batch_id, "position": position, "deployment": deployment,
            "agent_id": agent_id, "received_at": received_at_us,
        }
        try:
            batch.rows.append(_entry_row(entry, f"entries[{position}]", batch, common))
        except FieldError as error:
            batch.rejected.append(EntryRejected(error.field, error.reason))
    return batch
