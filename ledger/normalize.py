"""Turning one raw record into a validated, canonical submission or a rejection.

Two paths produce the same result:

- `fast_normalize` handles the common clean shape of a JSON Lines record with
  plain checks and no pydantic, and gives up (returns None) on anything unusual;
- `model_normalize` parses exactly with the standard library and validates
  through the pydantic models in `ledger.models`, which define the rules and
  explain every failure.

A record the fast path gives up on always goes through the model path, so the
model path decides every record the fast path does not accept.

Key rule: field names match case-insensitively and through the aliases in
`FIELD_ALIASES`. A record in which two keys name the same field (a repeated
key, a case variant such as ``Status`` beside ``status``, or two aliases such
as ``created_at`` beside ``submitted_at``) is rejected, naming both keys.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import orjson
from pydantic import ValidationError

from ledger.models import (
    NO_TIMESTAMP_FLAG,
    STATUSES,
    ZONELESS_FLAG,
    FieldError,
    Submission,
    first_field_error,
    parse_count,
    parse_deployment,
    parse_money,
    parse_run_id,
    parse_timestamp,
    shorten,
)

FIELD_ALIASES: dict[str, str] = {
    "run_id": "run_id",
    "runid": "run_id",
    "id": "id",
    "submission_id": "id",
    "status": "status",
    "actions_replayed": "actions_replayed",
    "actions_total": "actions_total",
    "divergences_detected": "divergences_detected",
    "divergence_count": "divergences_detected",
    "divergences_count": "divergences_detected",
    "divergences": "divergences",
    "cost_savings": "cost_savings",
    "cost_saved": "cost_savings",
    "savings_usd": "cost_savings",
    "submitted_at": "submitted_at",
    "created_at": "submitted_at",
    "timestamp": "submitted_at",
    "deployment": "deployment",
}
_DIVERGENCE_FIELDS = ("type", "action", "index", "expected_inputs", "actual_inputs", "expected", "actual")
_BIG_INTEGER = re.compile(rb"(?<![\w.+-])-?\d{16,}(?![\d.eE])")
UNKNOWN_DEPLOYMENT = "unknown"


class RecordRejected(Exception):
    """A record failed validation; names the field, the value and the reason."""

    def __init__(self, field: str, value: Any, reason: str):
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.value = value
        self.reason = reason


@dataclass(slots=True)
class StoredDivergence:
    """One divergence in its stored form.

    `expected_json`/`actual_json` hold the expected and actual inputs (or, for an
    action mismatch, the expected and actual action) whole as JSON text;
    `detail_json` contains the whole divergence object without the two input keys,
    so no key of it is lost.
    """

    position: int
    type: str
    action: str | None
    index: int | None
    expected_json: str | None
    actual_json: str | None
    detail_json: str


@dataclass(slots=True)
class NormalizedSubmission:
    """A validated submission, ready for the stage. Money in micro-dollars, time in UTC microseconds.

    Its id is computed in SQL when the stage is merged: the platform's id when
    it has one, else a hash of its content (see `store.merge_stages`). `anchor`
    is set only when the record had no timestamp, and then replaces the time in
    that hash.
    """

    platform_id: str | None
    run_id: str
    deployment: str
    status: str
    actions_replayed: int
    actions_total: int
    divergences_detected: int
    cost_micros: int
    submitted_at_us: int
    location: str
    anchor: str | None = None
    flags: list[str] = field(default_factory=list)
    extra_json: str | None = None
    divergences: list[StoredDivergence] = field(default_factory=list)

    @property
    def cost_savings(self) -> Decimal:
        return Decimal(self.cost_micros).scaleb(-6)

    @property
    def submitted_at(self) -> datetime:
        return datetime.fromtimestamp(self.submitted_at_us / 1_000_000, tz=timezone.utc)


@dataclass(frozen=True)
class Context:
    """What a record is read with: its location, run id from the file name, deployment, ingest time."""

    location: str
    anchor: str
    run_id_hint: str | None = None
    deployment: str | None = None
    ingest_time_us: int = 0


class _Pairs(dict):
    """A dict that remembers keys it saw more than once while being built."""

    __slots__ = ("repeated",)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.repeated: list[str] = []

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self:
            self.repeated.append(key)
        super().__setitem__(key, value)


def pairs_to_dict(pairs: list[tuple[str, Any]]) -> _Pairs:
    """Build an object from JSON pairs, keeping note of repeated keys (object_pairs_hook)."""
    built = _Pairs()
    for key, value in pairs:
        built[key] = value
    return built


def json_dumps(value: Any, *, sort_keys: bool = False) -> str:
    """Serialise a JSON value compactly; integers beyond 64 bits fall back to the json module."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0).decode()
    except TypeError:
        return json.dumps(value, sort_keys=sort_keys, ensure_ascii=False, separators=(",", ":"), default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _to_doubles(value: Any, path: str) -> Any:
    """Convert Decimals (from an exact parse) to floats and reject non-finite numbers."""
    stack = [(value, None, None, path)]
    root = value
    while stack:
        item, parent, key, where = stack.pop()
        if isinstance(item, Decimal):
            item = float(item)
            if parent is None:
                root = item
            else:
                parent[key] = item
        if isinstance(item, float) and not math.isfinite(item):
            raise RecordRejected(where, item, f"contains {item}, which is not a valid JSON number")
        if isinstance(item, dict):
            stack.extend((child, item, name, f"{where}.{name}") for name, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, item, number, f"{where}[{number}]") for number, child in enumerate(item))
    return root


def fold_keys(record: dict) -> tuple[dict, dict]:
    """Map a record's keys onto field names; return (fields, unknown fields).

    Raises RecordRejected when two keys name the same field.
    """
    repeated = getattr(record, "repeated", None)
    if repeated:
        raise RecordRejected(repeated[0], None, f"key {repeated[0]!r} appears more than once in the record")
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for key, value in record.items():
        lowered = key.lower() if isinstance(key, str) else key
        name = FIELD_ALIASES.get(lowered)
        claim = name or f"extra:{lowered}"
        if claim in seen:
            raise RecordRejected(
                name or key, value, f"keys {seen[claim]!r} and {key!r} both name the field {name or lowered!r}; keep one"
            )
        seen[claim] = key
        if name:
            fields[name] = value
        else:
            extra[key] = value
    return fields, extra


_INPUT_KEYS = ("expected_inputs", "actual_inputs")


def _store_divergence(position: int, raw: dict) -> StoredDivergence:
    """Split a divergence into its stored columns (the same split the SQL path makes)."""
    kind = raw.get("type")
    if kind == "action_mismatch":
        expected = json_dumps(raw["expected"]) if "expected" in raw else None
        actual = json_dumps(raw["actual"]) if "actual" in raw else None
    else:
        expected_value = raw["expected_inputs"] if "expected_inputs" in raw else raw.get("expected", _ABSENT)
        actual_value = raw["actual_inputs"] if "actual_inputs" in raw else raw.get("actual", _ABSENT)
        expected = None if expected_value is _ABSENT else json_dumps(expected_value)
        actual = None if actual_value is _ABSENT else json_dumps(actual_value)
    detail = {key: value for key, value in raw.items() if key not in _INPUT_KEYS}
    return StoredDivergence(
        position=position,
        type=kind,
        action=raw.get("action"),
        index=raw.get("index"),
        expected_json=expected,
        actual_json=actual,
        detail_json=json_dumps(detail),
    )


_ABSENT = object()


def _finish(
    context: Context, *, platform_id: str | None, run_id: str, deployment: str | None, status: str,
    replayed: int, total: int, detected: int, micros: int, submitted_us: int | None,
    zoneless: bool, divergences: list | None, extra: dict,
) -> NormalizedSubmission:
    flags = []
    if zoneless:
        flags.append(ZONELESS_FLAG)
    # A record without a timestamp has the same content on every ingest, so its file
    # name replaces the time in its identity: a second file with an identical
    # replay counts as a second submission, the same file ingested twice does not.
    anchor = None
    if submitted_us is None:
        flags.append(NO_TIMESTAMP_FLAG)
        anchor = context.anchor
        submitted_us = context.ingest_time_us
    return NormalizedSubmission(
        platform_id=platform_id,
        run_id=run_id,
        deployment=context.deployment or deployment or UNKNOWN_DEPLOYMENT,
        status=status,
        actions_replayed=replayed,
        actions_total=total,
        divergences_detected=detected,
        cost_micros=micros,
        submitted_at_us=submitted_us,
        location=context.location,
        anchor=anchor,
        flags=flags,
        extra_json=json_dumps(extra) if extra else None,
        divergences=[_store_divergence(position, item) for position, item in enumerate(divergences or [])],
    )


def _micros(instant: datetime) -> int:
    delta = instant - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_FAST_KEYS = {name: name for name in FIELD_ALIASES if name.islower()}
_QUOTED_KEYS: dict[str, bytes] = {}


def fast_normalize(text: bytes, context: Context) -> NormalizedSubmission | None:
    """Validate one clean JSON Lines record quickly, or return None to defer to `model_normalize`."""
    if _BIG_INTEGER.search(text):
        return None
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if type(record) is not dict:
        return None
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in record.items():
        quoted = _QUOTED_KEYS.get(key)
        if quoted is None:
            if not key.islower() or '"' in key or "\\" in key:
                return None
            quoted = _QUOTED_KEYS.setdefault(key, f'"{key}"'.encode()) if len(_QUOTED_KEYS) < 4096 else f'"{key}"'.encode()
        if text.count(quoted) != 1:
            return None
        name = FIELD_ALIASES.get(key)
        if name is None:
            extra[key] = value
        elif name in fields:
            return None
        else:
            fields[name] = value
    run_id = fields.get("run_id", context.run_id_hint)
    status = fields.get("status")
    replayed = fields.get("actions_replayed")
    total = fields.get("actions_total")
    savings = fields.get("cost_savings")
    divergences = fields.get("divergences")
    detected = fields.get("divergences_detected")
    platform_id = fields.get("id")
    deployment = fields.get("deployment")
    if not (
        type(run_id) is str and 0 < len(run_id) <= 256 and run_id == run_id.strip() and run_id.isprintable()
        and status in STATUSES
        and type(replayed) is int and type(total) is int and 0 <= replayed <= total < 2**62
        and type(savings) in (float, int) and 0 <= savings < 1e9 and math.isfinite(savings)
        and (platform_id is None or (type(platform_id) is str and 0 < len(platform_id) <= 256
                                     and platform_id == platform_id.strip() and platform_id.isprintable()))
        and (deployment is None or (type(deployment) is str and 0 < len(deployment) <= 128
                                    and deployment == deployment.strip() and deployment.isprintable()))
    ):
        return None
    if divergences is None:
        if type(detected) is not int or not 0 <= detected < 2**62:
            return None
    else:
        if type(divergences) is not list or (detected is not None and (type(detected) is not int or detected != len(divergences))):
            return None
        for item in divergences:
            if type(item) is not dict or type(item.get("type")) is not str or not item["type"].strip():
                return None
            index = item.get("index")
            action = item.get("action")
            if (index is not None and (type(index) is not int or not 0 <= index < 2**62)) or (
                action is not None and type(action) is not str
            ):
                return None
        detected = len(divergences)
    submitted = fields.get("submitted_at")
    zoneless = False
    if submitted is None:
        submitted_us = None
    elif type(submitted) is str:
        try:
            instant, zoneless = parse_timestamp("submitted_at", submitted)
        except FieldError:
            return None
        submitted_us = _micros(instant)
    else:
        return None
    micros = int(parse_money("cost_savings", savings).scaleb(6))
    return _finish(
        context, platform_id=platform_id, run_id=run_id, deployment=deployment, status=status,
        replayed=replayed, total=total, detected=detected, micros=micros, submitted_us=submitted_us,
        zoneless=zoneless, divergences=divergences, extra=extra,
    )


def _reject_constant(name: str) -> float:
    return float(name)


def parse_exact(text: bytes | str, location: str) -> Any:
    """Parse JSON text exactly (numbers as Decimal, repeated keys noted) or raise RecordRejected."""
    if isinstance(text, bytes):
        if text.startswith(b"\xef\xbb\xbf"):
            text = text[3:]
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            bad = text[error.start : error.start + 1].hex()
            raise RecordRejected(
                "", None, f"the record is not valid UTF-8 (byte 0x{bad} at column {error.start + 1}); save the file as UTF-8"
            ) from None
    try:
        return json.loads(text, object_pairs_hook=pairs_to_dict, parse_float=Decimal, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise RecordRejected(
            "", shorten(text[max(0, error.pos - 20) : error.pos + 20]),
            f"invalid JSON at column {error.colno}: {error.msg}; fix or remove this record",
        ) from None
    except RecursionError:
        raise RecordRejected("", None, "the record is nested too deeply to parse") from None


def model_normalize(value: Any, context: Context) -> NormalizedSubmission:
    """Validate a parsed record through the pydantic models; raise RecordRejected on the first failure."""
    if not isinstance(value, dict):
        raise RecordRejected("", shorten(value), f"expected a JSON object, got {type(value).__name__}")
    fields, extra = fold_keys(value)
    if "run_id" not in fields and context.run_id_hint is not None:
        fields["run_id"] = context.run_id_hint
    for name in ("divergences",):
        if name in fields and fields[name] is not None:
            fields[name] = _to_doubles(fields[name], name)
    extra = _to_doubles(extra, "extra") if extra else extra
    try:
        model = Submission.model_validate(fields)
    except ValidationError as error:
        failure = first_field_error(error)
        raise RecordRejected(failure.field, failure.value, failure.reason) from None
    except FieldError as error:
        raise RecordRejected(error.field, error.value, error.reason) from None
    divergences = fields.get("divergences")
    if divergences is not None:
        divergences = [dict(item) for item in divergences]
    _check_encodable(value)
    submitted_us = _micros(model.submitted_at) if model.submitted_at is not None else None
    return _finish(
        context, platform_id=model.id, run_id=model.run_id, deployment=model.deployment, status=model.status,
        replayed=model.actions_replayed, total=model.actions_total, detected=model.divergence_count,
        micros=int(model.cost_savings.scaleb(6)), submitted_us=submitted_us, zoneless=model.zoneless,
        divergences=divergences, extra=extra,
    )


def _check_encodable(value: Any) -> None:
    """Reject a record whose text contains an unpaired surrogate escape such as \\ud800 (not valid UTF-8)."""
    try:
        json_dumps(value).encode("utf-8")
    except UnicodeEncodeError as error:
        raise RecordRejected(
            "", None, f"contains an unpaired Unicode surrogate ({error.object[error.start:error.end]!a}), "
            "which has no UTF-8 form; fix the escape in the source"
        ) from None


def normalize_text(text: bytes, context: Context) -> NormalizedSubmission:
    """Validate one JSON record given as text: the fast path, else the model path."""
    result = fast_normalize(text, context)
    if result is not None:
        return result
    return model_normalize(parse_exact(text, context.location), context)


def default_anchor(path: str, location: str) -> str:
    """Return the part of a location that identifies a record across folders: file name and position.

    `location` starts with the source's `path`, as in ``dir/page.json#/items/0``,
    which gives ``page.json#/items/0``.
    """
    if location.startswith(path):
        return os.path.basename(path) + location[len(path):]
    return os.path.basename(location)
