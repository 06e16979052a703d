"""Divergence causes in their stored form: one row per differing leaf of a stored divergence.

Ingest, the receiver and the migration that backfills older ledgers all call
`cause_rows`, so a divergence gets the same causes whichever way it reached
the ledger. Causes are computed from the divergence as stored: its type and
its expected and actual values (the inputs of an input mismatch, the action
names of an action mismatch). This module opens no database; callers pass
Arrow tables read from a stage or the ledger and store the table it returns.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import orjson
import pyarrow as pa

from ledger.analysis import MISSING, Difference, classify_divergence

log = logging.getLogger(__name__)

VALUE_CHARS = 200
"""Stored values are JSON text cut to this many characters (the whole value stays in `divergences`)."""

CAUSE_LABELS: dict[str, str] = {
    "timestamp": "timestamp",
    "uuid": "UUID",
    "random_number": "random number",
    "float_noise": "floating-point noise",
    "reordering": "reordering",
    "formatting": "formatting",
    "type_change": "type change",
    "missing_key": "missing key",
    "extra_key": "extra key",
    "other_value": "other value",
    "control_flow": "changed control flow",
}
CAUSE_ADVICE: dict[str, str] = {
    "timestamp": "freeze the clock in replays, or pass the time in as an input",
    "uuid": "seed the ID generator, or record generated IDs and reuse them",
    "random_number": "pin the seed",
    "float_noise": "round the value, or compare it with a tolerance",
    "reordering": "sort the list before it is passed on",
    "formatting": "normalize whitespace and case before the call",
    "type_change": "keep the value's type stable (for example, always a number)",
    "missing_key": "the replay no longer passes this argument: check the code change that dropped it",
    "extra_key": "the replay passes a new argument: re-record the run or ignore this key",
    "other_value": "a real change in the input: compare the code or data behind it",
    "control_flow": "the agent called another action: re-record the run or make the branch deterministic",
}
ROOT_PATH_LABEL = "(whole value)"

CAUSE_FIELDS = {
    "position": pa.int32(),
    "ordinal": pa.int32(),
    "path": pa.string(),
    "cause": pa.string(),
    "expected": pa.string(),
    "actual": pa.string(),
}
KEY_TYPES = {"seq": pa.int64(), "submission_id": pa.string()}
INPUT_COLUMNS = ("position", "type", "expected", "actual")
_LONG_DIGITS = re.compile(r"[0-9]{19}")
# orjson 3 reads an integer beyond 64 bits as a float; every such float is at least this large.
_INEXACT_FLOAT = float(2**63)


def parse_json(text: str, *, exact: bool = False) -> Any:
    """Parse stored JSON text; with `exact`, integers beyond 64 bits stay exact integers.

    The fast parse (orjson) reads such integers as floats, which would make
    2**70 equal 2**70 + 1. The exact parse uses the json module and is about
    five times slower.
    """
    if exact:
        return json.loads(text)
    return orjson.loads(text)


def value_text(value: Any, limit: int = VALUE_CHARS) -> str | None:
    """Return a value as compact JSON text cut to `limit` characters with an ellipsis, or None for MISSING."""
    if value is MISSING:
        return None
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def classify_stored(divergence_type: str, expected: str | None, actual: str | None) -> list[Difference]:
    """Classify one stored divergence from its type and its expected and actual JSON texts (None when absent).

    An action mismatch compares the stored action names. Any other type
    compares the stored values as its inputs, so an absent side is a missing
    or extra value at the root. Integers beyond 64 bits compare exactly.
    Raises what `parse_json` and `analysis.classify_divergence` raise.
    """
    differences = _classify_parsed(divergence_type, expected, actual, exact=False)
    if _may_be_inexact(expected, actual, differences):
        differences = _classify_parsed(divergence_type, expected, actual, exact=True)
    return differences


def _classify_parsed(divergence_type: str, expected: str | None, actual: str | None, *, exact: bool) -> list[Difference]:
    names = ("expected", "actual") if divergence_type == "action_mismatch" else ("expected_inputs", "actual_inputs")
    divergence: dict[str, Any] = {"type": divergence_type}
    if expected is not None:
        divergence[names[0]] = parse_json(expected, exact=exact)
    if actual is not None:
        divergence[names[1]] = parse_json(actual, exact=exact)
    return classify_divergence(divergence)


def _may_be_inexact(expected: str | None, actual: str | None, differences: list[Difference]) -> bool:
    """Return True when the fast parse may have rounded an integer beyond 64 bits that matters to the result.

    Checking the few differences is cheaper than searching every text for long
    digit runs. Different texts without a difference could be two big
    integers rounded to one float, a differing float of 2**63 or more could be
    a rounded integer, and a differing object or list may contain one.
    """
    if not differences:
        return expected != actual
    for difference in differences:
        for value in (difference.expected, difference.actual):
            if isinstance(value, float) and abs(value) >= _INEXACT_FLOAT:
                return True
            if isinstance(value, (dict, list)):
                return any(text is not None and _LONG_DIGITS.search(text) for text in (expected, actual))
    return False


def cause_rows(divergences: pa.Table, key: str) -> pa.Table:
    """Classify stored divergences and return their cause rows, one per differing leaf.

    `divergences` has the column `key` (``seq`` in a stage, ``submission_id``
    in the ledger) and ``position``, ``type``, ``expected`` and ``actual``
    (JSON text or null). The result has `key`, then the columns of
    `CAUSE_FIELDS`. Those are the divergence's position, the difference's
    order within it from 0, its path (``""`` for the whole value) and its
    cause from `analysis.CAUSES`. Last come the expected and actual values at
    the path as JSON text cut to `VALUE_CHARS`, null on the side where the
    key is missing.

    A divergence whose values cannot be parsed or classified gets one
    ``other_value`` row at the root, and a warning is logged with its key
    and position, so one bad value never stops an ingest.
    """
    if key not in KEY_TYPES:
        raise ValueError(f"unknown key column {key!r}; use one of {', '.join(KEY_TYPES)}")
    keys = divergences.column(key).to_pylist()
    positions, types, expected_texts, actual_texts = (
        divergences.column(name).to_pylist() for name in INPUT_COLUMNS
    )
    columns: dict[str, list] = {key: [], **{name: [] for name in CAUSE_FIELDS}}
    for row_key, position, divergence_type, expected, actual in zip(
        keys, positions, types, expected_texts, actual_texts
    ):
        if divergence_type == "input_mismatch" and expected == actual:
            continue
        try:
            found = [
                (difference.path, difference.cause, value_text(difference.expected), value_text(difference.actual))
                for difference in classify_stored(divergence_type, expected, actual)
            ]
        except (ValueError, TypeError, RecursionError) as error:
            log.warning("divergence %s of %s could not be classified: %s", position, row_key, error)
            found = [("", "other_value", _cut(expected), _cut(actual))]
        for ordinal, (path, cause, expected_value, actual_value) in enumerate(found):
            columns[key].append(row_key)
            columns["position"].append(position)
            columns["ordinal"].append(ordinal)
            columns["path"].append(path)
            columns["cause"].append(cause)
            columns["expected"].append(expected_value)
            columns["actual"].append(actual_value)
    types_by_name = {key: KEY_TYPES[key], **CAUSE_FIELDS}
    return pa.table({name: pa.array(values, type=types_by_name[name]) for name, values in columns.items()})


def _cut(text: str | None, limit: int = VALUE_CHARS) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def label(cause: str) -> str:
    """Return a cause as users read it: ``random_number`` becomes ``random number``."""
    return CAUSE_LABELS.get(cause, cause)


def path_label(path: str) -> str:
    """Return a path as users read it; the root path ``""`` becomes ``(whole value)``."""
    return path or ROOT_PATH_LABEL

