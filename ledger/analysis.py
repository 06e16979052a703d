"""Analysis of replay divergences: cause classification and regression detection.

The cause classifier compares the expected and actual inputs of a
divergence leaf by leaf and names a likely cause for every differing leaf
(a timestamp, a UUID, a random number, float noise, and so on).

The regression checks judge whether the share of replay submissions with at
least one divergence changed around a deploy marker, using Fisher's exact
test. They also find shifts in a daily (or other bucketed) series by binary
segmentation, so that the caller can flag shifts that no marker explains.

This module uses only the standard library, numpy and scipy. It opens no
database.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import MAX_EMAX, MIN_EMIN, Decimal, localcontext
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from ledger import fisher

# scipy is imported inside the regression functions, because importing
# scipy.stats took about 0.4 s (scipy 1.17.1, measured on the project's 2-core
# machine) and every ingest imports this module to classify causes.

__all__ = [
    "CAUSES",
    "MISSING",
    "Difference",
    "diff_inputs",
    "classify_divergence",
    "MarkerVerdict",
    "judge_marker",
    "judge_markers",
    "ChangePoint",
    "find_change_points",
    "label_unexplained",
    "split_supported",
]


# ---------------------------------------------------------------------------
# Divergence cause classifier
# ---------------------------------------------------------------------------

CAUSES: tuple[str, ...] = (
    "timestamp",
    "uuid",
    "random_number",
    "float_noise",
    "reordering",
    "formatting",
    "type_change",
    "missing_key",
    "extra_key",
    "other_value",
    "control_flow",
)


class _Missing:
    """Type of the MISSING sentinel, which has exactly one instance."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""Placeholder for the side of a missing or extra key (or list element)."""


class Difference(NamedTuple):
    """One differing leaf between expected and actual inputs.

    ``path`` uses dots for object keys and brackets for list indexes, as in
    ``args[0].items[3].id``, and the root is ``""``. ``cause`` is one of
    ``CAUSES``. ``expected`` and ``actual`` are the differing values at that
    path, or ``MISSING`` on the side that lacks the key or element.

    A named tuple rather than a frozen dataclass because ingest creates one
    per differing leaf, and a tuple is about four times cheaper to create.
    """

    path: str
    cause: str
    expected: Any
    actual: Any


_RELATIVE_NOISE_LIMIT = Decimal("1e-9")
# A float drawn by random() carries 15 to 17 significant digits, and one with fewer
# than 6 is about a one-in-a-billion chance. Shorter values such as a temperature
# changed from 0.7 to 0.9 were written by hand, so they are "other_value".
_RANDOM_MIN_DIGITS = 6
_EPOCH_SECONDS_RANGE = (Decimal("1e9"), Decimal("1e10"))
_EPOCH_MILLISECONDS_RANGE = (Decimal("1e12"), Decimal("1e13"))

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# ISO-8601 extended format only. The basic format ("20261204") is left out on
# purpose because eight-digit ids and counters would match it.
_ISO_TIMESTAMP = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"(?:[Tt ](?P<hour>\d{2}):(?P<minute>\d{2})"
    r"(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d+))?)?"
    r"(?P<zone>[Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)

# A timestamp or a hyphenated UUID inside a longer text, not touching a letter
# or digit on either side. Bare 32-digit hex is left out here because hashes
# embedded in text look the same.
_EMBEDDED_TOKEN = re.compile(
    r"(?<![0-9A-Za-z])("
    r"\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
    r"|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    r")(?![0-9A-Za-z])"
)

# Plain, braced and "urn:uuid:" forms of the hyphenated and the 32-digit UUID text.
_UUID_LENGTHS = frozenset({32, 34, 36, 38, 41, 43, 45, 47})
# Explicit letter ranges instead of re.IGNORECASE, which made this match about five times slower.
_UUID_TEXT = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32}"
)


def diff_inputs(expected: Any, actual: Any) -> list[Difference]:
    """Compare two JSON values and classify every differing leaf.

    Accepts what ``json.loads`` produces (dict with str keys, list, str, int,
    float, bool, None), ``decimal.Decimal`` for numbers, and ``MISSING`` at
    the root. Numbers compare by value, so ``1`` equals ``1.0`` and
    ``Decimal("0.1")`` equals ``0.1``, but ``True`` never equals ``1``.
    Integers compare exactly at any size.

    Returns the differences in document order: depth first, with object
    keys in the order of ``expected`` followed by the extra keys of
    ``actual``. An empty list means the values are equal. Raises TypeError
    for any other value type or a non-str object key, and ValueError for a
    reference cycle, which JSON cannot represent.

    The walk uses an explicit stack, so nesting depth is limited by memory,
    not by the recursion limit.
    """
    differences: list[Difference] = []
    canonical_cache: dict[int, str] = {}
    # An entry with path None marks the end of a container pair, so that
    # active_pairs contains exactly the container pairs on the current path.
    stack: list[tuple[str | None, Any, Any]] = [("", expected, actual)]
    active_pairs: set[tuple[int, int]] = set()

    while stack:
        path, expected_value, actual_value = stack.pop()
        if path is None:
            active_pairs.discard((id(expected_value), id(actual_value)))
            continue

        if expected_value is MISSING or actual_value is MISSING:
            if expected_value is MISSING and actual_value is MISSING:
                continue
            cause = "extra_key" if expected_value is MISSING else "missing_key"
            differences.append(Difference(path, cause, expected_value, actual_value))
            continue

        expected_kind = _json_kind(expected_value, path)
        actual_kind = _json_kind(actual_value, path)
        same_kind = expected_kind == actual_kind

        if same_kind and (expected_kind == "object" or expected_kind == "array"):
            pair = (id(expected_value), id(actual_value))
            if pair in active_pairs:
                raise ValueError(
                    f"reference cycle at path {path!r}: JSON cannot represent "
                    f"it, so pass a tree such as json.loads returns"
                )
            active_pairs.add(pair)
            stack.append((None, expected_value, actual_value))

            if expected_kind == "object":
                children = _object_children(path, expected_value, actual_value)
            else:
                reordered, children = _array_children(
                    path, expected_value, actual_value, canonical_cache
                )
                if reordered:
                    differences.append(
                        Difference(path, "reordering", expected_value, actual_value)
                    )
            stack.extend(reversed(children))
            continue

        if same_kind and _leaves_equal(expected_value, actual_value):
            continue

        cause = _classify_leaf(expected_value, actual_value, expected_kind, actual_kind)
        differences.append(Difference(path, cause, expected_value, actual_value))

    return differences


def classify_divergence(divergence: Mapping[str, Any]) -> list[Difference]:
    """Classify the causes of one divergence record from the replay SDK.

    - ``"input_mismatch"``: diffs ``expected_inputs`` against
      ``actual_inputs``. An absent side counts as ``MISSING``, giving one
      ``missing_key`` or ``extra_key`` at path ``""``. Identical inputs, or
      both sides absent, give ``[]``.
    - ``"action_mismatch"``: one ``control_flow`` difference at ``""`` with
      the record's ``expected`` and ``actual`` action names (None if absent).
    - any other or absent type: one ``other_value`` difference at ``""``
      with ``expected_inputs`` (else ``expected``, else ``MISSING``) and
      ``actual_inputs`` (else ``actual``, else ``MISSING``).

    Raises TypeError if ``divergence`` is not a mapping, and whatever
    ``diff_inputs`` raises for unsupported input values.
    """
    if not isinstance(divergence, Mapping):
        raise TypeError(
            f"divergence must be a dict parsed from the SDK body, "
            f"got {type(divergence).__name__}: {divergence!r}"
        )

    divergence_type = divergence.get("type")

    if divergence_type == "input_mismatch":
        return diff_inputs(
            divergence.get("expected_inputs", MISSING),
            divergence.get("actual_inputs", MISSING),
        )

    if divergence_type == "action_mismatch":
        return [
            Difference(
                path="",
                cause="control_flow",
                expected=divergence.get("expected"),
                actual=divergence.get("actual"),
            )
        ]

    expected = divergence.get("expected_inputs", divergence.get("expected", MISSING))
    actual = divergence.get("actual_inputs", divergence.get("actual", MISSING))
    return [Difference(path="", cause="other_value", expected=expected, actual=actual)]


_EXACT_KINDS = {dict: "object", list: "array", str: "string", int: "number", float: "number"}


def _json_kind(value: Any, path: str) -> str:
    # The exact types json.loads returns are looked up first; subclasses and
    # Decimal take the isinstance checks below.
    kind = _EXACT_KINDS.get(type(value))
    if kind is not None:
        return kind
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    raise TypeError(
        f"unsupported value of type {type(value).__name__} at path {path!r}: "
        f"{value!r}. Pass values as json.loads returns them (dict, list, str, "
        f"int, float, bool, None) or decimal.Decimal for numbers."
    )


def key_path(path: str, key: str) -> str:
    """Return the path of object member ``key`` under ``path``, as ``Difference.path`` writes it.

    A key that is a plain identifier follows a dot (``kwargs.seed``); any
    other key is written in brackets as a JSON string (``kwargs["a.b"]``).
    """
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def index_path(path: str, index: int) -> str:
    """Return the path of list element ``index`` under ``path``: ``args[0]``."""
    return f"{path}[{index}]"


_join_key = key_path
_join_index = index_path


def _trivially_equal(expected: Any, actual: Any) -> bool:
    """Return True for two equal scalars of the same exact type, which need no classification.

    A shortcut of the walk: most leaves of two inputs are equal, and this check
    settles them without building paths. Exact types keep ``True`` apart from
    ``1``; NaN is never trivially equal, so it takes the full comparison.
    """
    kind = type(expected)
    if kind is not type(actual):
        return False
    return expected is None or ((kind is str or kind is int or kind is float) and expected == actual)


def _trivially_equal_lists(expected: Any, actual: Any) -> bool:
    """Return True for two lists whose elements are pairwise `_trivially_equal` (such as unchanged ``args``)."""
    return (
        type(expected) is list
        and type(actual) is list
        and len(expected) == len(actual)
        and all(map(_trivially_equal, expected, actual))
    )


def _object_children(
    path: str, expected: dict, actual: dict
) -> list[tuple[str, Any, Any]]:
    children = []
    for key, value in expected.items():
        if type(key) is not str:
            _check_key(key, path)
        if key not in actual:
            children.append((_join_key(path, key), value, MISSING))
            continue
        actual_value = actual[key]
        if _trivially_equal(value, actual_value) or _trivially_equal_lists(value, actual_value):
            continue
        children.append((_join_key(path, key), value, actual_value))
    for key, value in actual.items():
        if type(key) is not str:
            _check_key(key, path)
        if key not in expected:
            children.append((_join_key(path, key), MISSING, value))
    return children


def _check_key(key: Any, path: str) -> None:
    if not isinstance(key, str):
        raise TypeError(
            f"object key {key!r} at path {path!r} is {type(key).__name__}, "
            f"but JSON object keys are strings. Convert the value with "
            f"json.loads(json.dumps(value)) first."
        )


def _array_children(
    path: str, expected: list, actual: list, canonical_cache: dict[int, str]
) -> tuple[bool, list[tuple[str, Any, Any]]]:
    """Return (is_reordering, element pairs still to compare) for two lists."""
    if len(expected) != len(actual):
        common = min(len(expected), len(actual))
        children = [
            (_join_index(path, i), expected[i], actual[i]) for i in range(common)
        ]
        for i in range(common, len(expected)):
            children.append((_join_index(path, i), expected[i], MISSING))
        for i in range(common, len(actual)):
            children.append((_join_index(path, i), MISSING, actual[i]))
        return False, children

    if all(map(_trivially_equal, expected, actual)):
        return False, []
    expected_texts = [_canonical_text(item, canonical_cache) for item in expected]
    actual_texts = [_canonical_text(item, canonical_cache) for item in actual]
    if expected_texts == actual_texts:
        return False, []
    if Counter(expected_texts) == Counter(actual_texts):
        return True, []

    children = [
        (_join_index(path, i), expected[i], actual[i])
        for i in range(len(expected))
        if expected_texts[i] != actual_texts[i]
    ]
    return False, children


def _canonical_text(root: Any, cache: dict[int, str]) -> str:
    """Return a text that is equal for two values exactly when they are equal.

    Object keys are sorted and numbers are written from ``_number_key``.
    Container texts are cached by ``id`` for the duration of one
    ``diff_inputs`` call, so nested lists are not serialised again at
    every level. The traversal is iterative for deep nesting.
    """
    if not isinstance(root, (dict, list)):
        return _leaf_text(root)
    if id(root) in cache:
        return cache[id(root)]

    in_progress: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        node_id = id(node)
        if node_id in cache:
            continue

        if not children_done:
            in_progress.add(node_id)
            stack.append((node, True))
            items = node.values() if isinstance(node, dict) else node
            for child in items:
                if not isinstance(child, (dict, list)) or id(child) in cache:
                    continue
                if id(child) in in_progress:
                    raise ValueError(
                        "reference cycle inside a list element: JSON cannot "
                        "represent it, so pass a tree such as json.loads returns"
                    )
                stack.append((child, False))
            continue

        if isinstance(node, dict):
            for key in node:
                _check_key(key, "")
            members = sorted(
                (json.dumps(key), _cached_text(value, cache))
                for key, value in node.items()
            )
            text = "{" + ",".join(f"{key}:{value}" for key, value in members) + "}"
        else:
            text = "[" + ",".join(_cached_text(item, cache) for item in node) + "]"
        cache[node_id] = text
        in_progress.discard(node_id)

    return cache[id(root)]


def _cached_text(value: Any, cache: dict[int, str]) -> str:
    if isinstance(value, (dict, list)):
        return cache[id(value)]
    return _leaf_text(value)


def _leaf_text(value: Any) -> str:
    kind = _json_kind(value, "")
    if kind == "null":
        return "null"
    if kind == "bool":
        return "true" if value else "false"
    if kind == "string":
        return json.dumps(value)

    key = _number_key(value)
    if key[0] == "nan":
        return "NaN"
    if key[0] == "inf":
        return "-Infinity" if key[1] else "Infinity"
    if key[0] == "zero":
        return "0"
    sign, digits, exponent = key
    return f"{'-' if sign else ''}{''.join(map(str, digits))}e{exponent}"


def _to_decimal(value: int | float | Decimal) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        # repr gives the shortest text that round-trips, which is the JSON
        # number the float was parsed from ("0.1", not 0.1000000000000000055...).
        return Decimal(repr(value))
    return Decimal(value)


def _number_key(value: int | float | Decimal) -> tuple:
    """Return an exact, representation-independent key for a JSON number."""
    number = _to_decimal(value)
    if number.is_nan():
        return ("nan",)
    if number.is_infinite():
        return ("inf", number.is_signed())

    sign, digits, exponent = number.as_tuple()
    last_nonzero = len(digits)
    while last_nonzero > 0 and digits[last_nonzero - 1] == 0:
        last_nonzero -= 1
    if last_nonzero == 0:
        return ("zero",)
    return (sign, digits[:last_nonzero], exponent + len(digits) - last_nonzero)


def _leaves_equal(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, (int, float, Decimal)):
        return _number_key(expected) == _number_key(actual)
    return expected == actual


def _classify_leaf(
    expected: Any, actual: Any, expected_kind: str, actual_kind: str
) -> str:
    both_strings = expected_kind == actual_kind == "string"
    both_numbers = expected_kind == actual_kind == "number"

    if both_strings:
        expected_time = _parse_timestamp(expected)
        actual_time = _parse_timestamp(actual)
        if expected_time is not None and actual_time is not None:
            # The same instant written two ways changed only in format.
            return "formatting" if expected_time == actual_time else "timestamp"

    if both_numbers:
        expected_seconds = _epoch_seconds(expected)
        actual_seconds = _epoch_seconds(actual)
        if expected_seconds is not None and actual_seconds is not None:
            # Seconds against milliseconds of the same instant changed only in unit.
            return "formatting" if expected_seconds == actual_seconds else "timestamp"

    if both_strings:
        expected_uuid = _parse_uuid(expected)
        actual_uuid = _parse_uuid(actual)
        if expected_uuid is not None and actual_uuid is not None:
            return "formatting" if expected_uuid == actual_uuid else "uuid"
        embedded = _embedded_token_cause(expected, actual)
        if embedded is not None:
            return embedded

    if both_numbers and _is_float_pair(expected, actual):
        if _is_float_noise(expected, actual):
            return "float_noise"
        if (
            _is_unit_interval(expected)
            and _is_unit_interval(actual)
            and max(_significant_digits(expected), _significant_digits(actual)) >= _RANDOM_MIN_DIGITS
        ):
            return "random_number"

    if both_strings and _normalize_text(expected) == _normalize_text(actual):
        return "formatting"

    if expected_kind != actual_kind:
        return "type_change"
    return "other_value"


def _parse_timestamp(text: str) -> tuple[datetime, Decimal, bool] | None:
    """Parse an ISO-8601 date or datetime into a comparable instant.

    Returns a tuple of the datetime to whole seconds (converted to UTC when
    the text has a zone), the exact fraction of a second, and whether a zone
    was given. Returns None if ``text`` is not a valid timestamp.
    """
    if text[4:5] != "-":
        return None
    match = _ISO_TIMESTAMP.fullmatch(text)
    if match is None:
        return None

    fields = match.groupdict()
    second = int(fields["second"] or 0)
    fraction = Decimal(f"0.{fields['fraction']}") if fields["fraction"] else Decimal(0)
    if second == 60:
        # Leap second: datetime cannot hold it, so carry it in the fraction.
        second = 59
        fraction += 1

    zone = _parse_zone(fields["zone"])
    if fields["zone"] and zone is None:
        return None

    try:
        moment = datetime(
            int(fields["year"]),
            int(fields["month"]),
            int(fields["day"]),
            int(fields["hour"] or 0),
            int(fields["minute"] or 0),
            second,
            tzinfo=zone,
        )
    except ValueError:
        return None

    if zone is not None:
        moment = moment.astimezone(timezone.utc)
    return moment, fraction, zone is not None


def _parse_zone(text: str | None) -> timezone | None:
    if not text:
        return None
    if text in ("Z", "z"):
        return timezone.utc
    digits = text[1:].replace(":", "")
    hours = int(digits[:2])
    minutes = int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        return None
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if text[0] == "-" else offset)


def _parse_uuid(text: str) -> str | None:
    """Return a UUID string as its 32 lower-case hex digits, or None if it is not one."""
    if len(text) not in _UUID_LENGTHS:
        return None
    candidate = text
    if candidate[:9].lower() == "urn:uuid:":
        candidate = candidate[9:]
    if candidate.startswith("{") and candidate.endswith("}"):
        candidate = candidate[1:-1]
    if not _UUID_TEXT.fullmatch(candidate):
        return None
    return candidate.replace("-", "").lower()


def _epoch_seconds(value: int | float | Decimal) -> Decimal | None:
    """Return a number in the epoch seconds or milliseconds range as seconds, else None."""
    number = _to_decimal(value)
    if not number.is_finite():
        return None
    low, high = _EPOCH_SECONDS_RANGE
    if low <= number < high:
        return number
    low, high = _EPOCH_MILLISECONDS_RANGE
    if low <= number < high:
        return number.scaleb(-3)
    return None


def _embedded_token_cause(expected: str, actual: str) -> str | None:
    """Classify two texts that differ only inside embedded timestamps or UUIDs.

    ``"Today is 2026-12-04"`` against ``"Today is 2026-12-05"`` is a timestamp,
    and ``"/items/<uuid>"`` against the same path with another UUID is a uuid.
    The text around the tokens must be identical. Returns the cause of the first
    token that changed other than in format. It is "formatting" when every
    changed token is the same value written differently. Returns None when the
    texts differ elsewhere or a changed token is not a valid timestamp or UUID.
    """
    expected_parts = _EMBEDDED_TOKEN.split(expected)
    actual_parts = _EMBEDDED_TOKEN.split(actual)
    if len(expected_parts) == 1 or len(expected_parts) != len(actual_parts):
        return None
    if expected_parts[0::2] != actual_parts[0::2]:
        return None

    causes = [
        _token_cause(expected_token, actual_token)
        for expected_token, actual_token in zip(expected_parts[1::2], actual_parts[1::2])
        if expected_token != actual_token
    ]
    if not causes or "other_value" in causes:
        return None
    changed = [cause for cause in causes if cause != "formatting"]
    return changed[0] if changed else "formatting"


def _token_cause(expected: str, actual: str) -> str:
    expected_time = _parse_timestamp(expected)
    actual_time = _parse_timestamp(actual)
    if expected_time is not None and actual_time is not None:
        return "formatting" if expected_time == actual_time else "timestamp"
    expected_uuid = _parse_uuid(expected)
    actual_uuid = _parse_uuid(actual)
    if expected_uuid is not None and actual_uuid is not None:
        return "formatting" if expected_uuid == actual_uuid else "uuid"
    return "other_value"


def _is_float_pair(expected: Any, actual: Any) -> bool:
    """Return True if at least one number is float-typed and both are finite.

    One float-typed side is enough because serialisers such as JavaScript's
    JSON.stringify write 3.0 as 3, turning one side of a float into an int.
    """
    float_typed = isinstance(expected, (float, Decimal)) or isinstance(
        actual, (float, Decimal)
    )
    return (
        float_typed
        and _to_decimal(expected).is_finite()
        and _to_decimal(actual).is_finite()
    )


def _is_float_noise(expected: Any, actual: Any) -> bool:
    with localcontext() as context:
        # 50 digits are enough for a relative comparison at 1e-9, and the
        # widest exponent range avoids overflow on extreme exponents.
        context.prec = 50
        context.Emax = MAX_EMAX
        context.Emin = MIN_EMIN
        expected_number = _to_decimal(expected)
        actual_number = _to_decimal(actual)
        scale = max(abs(expected_number), abs(actual_number))
        return abs(expected_number - actual_number) < scale * _RELATIVE_NOISE_LIMIT


def _is_unit_interval(value: Any) -> bool:
    return Decimal(0) <= _to_decimal(value) < Decimal(1)


def _significant_digits(value: Any) -> int:
    key = _number_key(value)
    return len(key[1]) if len(key) == 3 else 0


def _normalize_text(text: str) -> str:
    return " ".join(text.split()).casefold()


# ---------------------------------------------------------------------------
# Regression detection around deploys
# ---------------------------------------------------------------------------

_VERDICTS = ("regression", "improvement", "no_change", "not_judged")


@dataclass(frozen=True)
class MarkerVerdict:
    """Comparison of divergence rates before and after one deploy marker.

    ``*_n`` count submissions on each side and ``*_k`` those with at least
    one divergence. A rate is ``k / n``, or None when ``n`` is 0.
    ``p_value`` is the two-sided Fisher's exact p-value. It is computed
    whenever both sides have at least one submission, also for
    ``not_judged``, and is None otherwise. ``verdict`` is one of
    ``"regression"``, ``"improvement"``, ``"no_change"`` or ``"not_judged"``,
    and ``reason`` is a sentence that explains it.
    """

    deployment: str
    version: str
    deployed_at: datetime
    before_n: int
    before_k: int
    after_n: int
    after_k: int
    before_rate: float | None
    after_rate: float | None
    p_value: float | None
    verdict: str
    reason: str


@dataclass(frozen=True)
class ChangePoint:
    """A shift in the divergence rate found in a bucketed series.

    ``at`` is the start of the first bucket after the shift. The before
    counts run from the previous change point (or the first bucket) up to
    ``at``, and the after counts from ``at`` up to the next change point (or
    through the last bucket). ``p_value`` is Fisher's exact two-sided
    p-value multiplied by the number of candidate splits in that window
    (Bonferroni), capped at 1.
    ``direction`` is ``"up"`` when the rate rose and ``"down"`` when it fell.
    """

    deployment: str
    at: datetime
    before_n: int
    before_k: int
    after_n: int
    after_k: int
    before_rate: float
    after_rate: float
    p_value: float
    direction: str


def judge_marker(
    deployment: str,
    version: str,
    deployed_at: datetime,
    before_n: int,
    before_k: int,
    after_n: int,
    after_k: int,
    *,
    alpha: float = 0.05,
    min_effect: float = 0.05,
    min_submissions: int = 20,
) -> MarkerVerdict:
    """Judge whether the divergence rate changed across one deploy.

    Runs a two-sided Fisher's exact test on the 2x2 table of submissions
    with and without divergences before and after ``deployed_at``. The
    verdict is ``"not_judged"`` when either side has fewer than
    ``min_submissions`` submissions. Otherwise it is ``"regression"`` when
    p < ``alpha`` and the rate rose by at least ``min_effect`` (an absolute
    difference of proportions, e.g. 0.05 = 5 percentage points),
    ``"improvement"`` when p < ``alpha`` and the rate fell by at least
    ``min_effect``, and ``"no_change"`` in every other case.

    Raises ValueError for a negative count, k > n, alpha outside (0, 1),
    min_effect outside [0, 1] or min_submissions < 1, and TypeError for a
    non-integer count or a ``deployed_at`` that is not a datetime.
    """
    (verdict,) = judge_markers(
        [(deployment, version, deployed_at, before_n, before_k, after_n, after_k)],
        alpha=alpha, min_effect=min_effect, min_submissions=min_submissions,
    )
    return verdict


def judge_markers(
    markers: Sequence[tuple[str, str, datetime, int, int, int, int]],
    *,
    alpha: float = 0.05,
    min_effect: float = 0.05,
    min_submissions: int = 20,
) -> list[MarkerVerdict]:
    """Judge many deploys at once, as `judge_marker` judges one; each tuple contains its arguments in order.

    All Fisher's exact tests run together (`ledger.fisher.p_values`), which
    is many times faster than one call each and gives the same p-values.
    Raises what `judge_marker` raises, for the first invalid tuple.
    """
    for _, _, deployed_at, before_n, before_k, after_n, after_k in markers:
        if not isinstance(deployed_at, datetime):
            raise TypeError(
                f"deployed_at must be a datetime, got "
                f"{type(deployed_at).__name__}: {deployed_at!r}"
            )
        _check_side("before", before_n, before_k)
        _check_side("after", after_n, after_k)
    _check_test_settings(alpha, min_effect, min_submissions)
    tested = [marker for marker in markers if marker[3] and marker[5]]
    found = iter(fisher.p_values([
        (before_k, before_n - before_k, after_k, after_n - after_k)
        for _, _, _, before_n, before_k, after_n, after_k in tested
    ]))
    return [
        _marker_verdict(*marker, next(found) if marker[3] and marker[5] else None,
                        alpha=alpha, min_effect=min_effect, min_submissions=min_submissions)
        for marker in markers
    ]


def _marker_verdict(
    deployment: str,
    version: str,
    deployed_at: datetime,
    before_n: int,
    before_k: int,
    after_n: int,
    after_k: int,
    p_value: float | None,
    *,
    alpha: float,
    min_effect: float,
    min_submissions: int,
) -> MarkerVerdict:
    before_rate = before_k / before_n if before_n else None
    after_rate = after_k / after_n if after_n else None
    verdict, reason = _decide_marker(
        before_n,
        before_k,
        after_n,
        after_k,
        p_value,
        alpha=alpha,
        min_effect=min_effect,
        min_submissions=min_submissions,
    )
    return MarkerVerdict(
        deployment=deployment,
        version=version,
        deployed_at=deployed_at,
        before_n=before_n,
        before_k=before_k,
        after_n=after_n,
        after_k=after_k,
        before_rate=before_rate,
        after_rate=after_rate,
        p_value=p_value,
        verdict=verdict,
        reason=reason,
    )


def _decide_marker(
    before_n: int,
    before_k: int,
    after_n: int,
    after_k: int,
    p_value: float | None,
    *,
    alpha: float,
    min_effect: float,
    min_submissions: int,
) -> tuple[str, str]:
    """Return (verdict, reason) for judge_marker."""
    before_short = before_n < min_submissions
    after_short = after_n < min_submissions
    if before_short and after_short:
        return "not_judged", (
            f"too few submissions before ({before_n}) and after ({after_n}) "
            f"the deploy, need {min_submissions} on each side"
        )
    if before_short:
        return "not_judged", (
            f"too few submissions before the deploy ({before_n}, "
            f"need {min_submissions})"
        )
    if after_short:
        return "not_judged", (
            f"too few submissions after the deploy ({after_n}, "
            f"need {min_submissions})"
        )

    assert p_value is not None  # both sides have >= min_submissions >= 1
    # Exact fractions, so that 0.30 - 0.25 counts as an effect of 0.05.
    effect = Fraction(after_k, after_n) - Fraction(before_k, before_n)
    required = Fraction(repr(float(min_effect)))
    rates = (
        f"from {_percent(before_k, before_n)} to {_percent(after_k, after_n)}"
    )

    if p_value >= alpha:
        return "no_change", (
            f"no significant change in divergence rate ({rates}, "
            f"p={p_value:.3g}, need p < {alpha:g})"
        )
    if effect >= required:
        return "regression", (
            f"divergence rate rose {rates} (p={p_value:.3g} < {alpha:g})"
        )
    if -effect >= required:
        return "improvement", (
            f"divergence rate fell {rates} (p={p_value:.3g} < {alpha:g})"
        )
    return "no_change", (
        f"divergence rate changed {rates} (p={p_value:.3g}) but by less than "
        f"the minimum effect of {float(min_effect) * 100:g} percentage points"
    )


def find_change_points(
    deployment: str,
    buckets: Sequence[tuple[datetime, int, int]],
    *,
    alpha: float = 0.01,
    min_effect: float = 0.05,
    min_submissions: int = 30,
) -> list[ChangePoint]:
    """Find shifts in the divergence rate of a bucketed series.

    ``buckets`` contains ``(bucket_start, n, k)`` tuples in strictly increasing
    time order: n submissions, k of them with at least one divergence.

    Binary segmentation: within a segment, every split that leaves at least
    ``min_submissions`` submissions on each side is a candidate. The split
    with the largest binomial likelihood-ratio statistic is kept when its
    Fisher's exact p-value times the number of candidates (Bonferroni) is
    below ``alpha`` and the two rates differ by at least ``min_effect``.
    Both halves are then searched again. When the best split fails, the
    segment is not split further.

    A refinement pass follows: each change point moves to the best split
    between its neighbours, or is dropped if that split no longer passes.
    This fixes the first split of a staircase (0.1, then 0.3, then 0.5),
    which binary segmentation tends to place inside the middle step.

    Returns the change points sorted by ``at``. Raises ValueError for
    unsorted buckets, invalid counts or invalid settings, and TypeError for
    a bucket start that is not a datetime or a count that is not an integer.

    NOTE: a short pulse (the rate rises and then falls back) can go
    undetected, because every single split of the whole series puts the
    pulse together with normal buckets on one side, which dilutes it.
    """
    _check_test_settings(alpha, min_effect, min_submissions)
    starts, n_counts, k_counts = _unpack_buckets(buckets)
    settings = _SplitSettings(
        alpha=alpha,
        min_effect=Fraction(repr(float(min_effect))),
        min_submissions=min_submissions,
    )

    splits = _segment(n_counts, k_counts, settings)
    tests = _refine(n_counts, k_counts, splits, settings)

    return [
        ChangePoint(
            deployment=deployment,
            at=starts[test.split],
            before_n=test.before_n,
            before_k=test.before_k,
            after_n=test.after_n,
            after_k=test.after_k,
            before_rate=test.before_k / test.before_n,
            after_rate=test.after_k / test.after_n,
            p_value=test.p_value,
            direction=_direction(test),
        )
        for test in tests
    ]


def label_unexplained(
    change_points: Iterable[ChangePoint],
    marker_times: Mapping[str, Iterable[datetime]] | Iterable[datetime],
    tolerance: timedelta,
) -> list[tuple[ChangePoint, bool]]:
    """Pair each change point with True if no deploy marker explains it.

    ``marker_times`` is either a mapping from deployment name to that
    deployment's deploy times, or a plain iterable of deploy times that
    applies to every change point (for a caller that already filtered by
    deployment). A change point is explained when some marker of its
    deployment lies within ``tolerance`` of ``at``, in either direction.

    Raises TypeError if naive and timezone-aware datetimes are mixed.
    """
    if tolerance < timedelta(0):
        raise ValueError(
            f"tolerance must not be negative, got {tolerance!r}; "
            f"pass a timedelta such as timedelta(days=1)"
        )

    if isinstance(marker_times, Mapping):
        times_by_deployment = {
            name: list(times) for name, times in marker_times.items()
        }
        shared_times = None
    else:
        times_by_deployment = {}
        shared_times = list(marker_times)

    labelled = []
    for point in change_points:
        if shared_times is None:
            times = times_by_deployment.get(point.deployment, [])
        else:
            times = shared_times
        try:
            explained = any(abs(point.at - time) <= tolerance for time in times)
        except TypeError as error:
            raise TypeError(
                f"cannot compare change point time {point.at!r} with the "
                f"marker times of deployment {point.deployment!r} ({error}); "
                f"use timezone-aware datetimes on both sides"
            ) from error
        labelled.append((point, not explained))
    return labelled


# The 0.95 quantile of the chi-squared distribution with one degree of freedom.
_LOCATION_CHI2_95 = 3.841458820694124


def split_supported(
    buckets: Sequence[tuple[datetime, int, int]], point: ChangePoint, at: datetime
) -> bool:
    """Return True when moving `point` to the bucket boundary at or just around `at` fits the data about as well.

    ``buckets`` is the series `find_change_points` got. The segment around
    the change point is the one its before and after counts cover. A split at
    the start of the bucket that contains `at`, or of the next bucket, is
    supported when twice the drop in binomial log-likelihood from the best
    split is at most 3.84: the split then lies in the approximate 95%
    likelihood confidence set of the change point's location. A deploy
    marker whose split is supported explains the shift even when the best
    split lies a few buckets away, as it does with noisy daily counts.

    Raises ValueError when `point` is not a change point of ``buckets``.
    """
    starts, n_counts, k_counts = _unpack_buckets(buckets)
    if point.at not in starts:
        raise ValueError(f"change point at {point.at.isoformat()} is not a bucket start of this series")
    split = starts.index(point.at)
    low = split
    while low > 0 and int(n_counts[low:split].sum()) < point.before_n:
        low -= 1
    high = split
    while high < len(starts) and int(n_counts[split:high].sum()) < point.after_n:
        high += 1

    def log_likelihood(index: int) -> float:
        before = _binomial_log_likelihood(n_counts[low:index].sum(keepdims=True), k_counts[low:index].sum(keepdims=True))
        after = _binomial_log_likelihood(n_counts[index:high].sum(keepdims=True), k_counts[index:high].sum(keepdims=True))
        return float(before[0] + after[0])

    best = log_likelihood(split)
    containing = max((index for index, start in enumerate(starts) if start <= at), default=0)
    for candidate in (containing, containing + 1):
        if low < candidate < high and 2 * (best - log_likelihood(candidate)) <= _LOCATION_CHI2_95:
            return True
    return False


@dataclass(frozen=True)
class _SplitSettings:
    alpha: float
    min_effect: Fraction
    min_submissions: int


@dataclass(frozen=True)
class _SplitTest:
    """A split at bucket index ``split`` that passed the significance test."""

    split: int
    before_n: int
    before_k: int
    after_n: int
    after_k: int
    p_value: float


def _segment(
    n_counts: np.ndarray, k_counts: np.ndarray, settings: _SplitSettings
) -> list[int]:
    """Return the sorted split indexes found by binary segmentation."""
    splits = []
    segments = [(0, len(n_counts))]
    while segments:
        low, high = segments.pop()
        test = _test_window(n_counts, k_counts, low, high, settings)
        if test is None:
            continue
        splits.append(test.split)
        segments.append((low, test.split))
        segments.append((test.split, high))
    return sorted(splits)


def _refine(
    n_counts: np.ndarray,
    k_counts: np.ndarray,
    splits: list[int],
    settings: _SplitSettings,
) -> list[_SplitTest]:
    """Move each split to the best one between its neighbours until stable.

    A split whose window no longer gives a passing test is dropped. Returns
    the tests of the last round, in which nothing moved, so each test used
    the final neighbours. The loop ends because a split moves only to a
    strictly better likelihood (raising the total log-likelihood of the
    segmentation) and the number of splits never grows.
    """
    splits = list(splits)
    while True:
        changed = False
        tests = []
        index = 0
        while index < len(splits):
            low = splits[index - 1] if index > 0 else 0
            high = splits[index + 1] if index + 1 < len(splits) else len(n_counts)
            test = _test_window(
                n_counts, k_counts, low, high, settings, current=splits[index]
            )
            if test is None:
                del splits[index]
                changed = True
                continue
            if test.split != splits[index]:
                splits[index] = test.split
                changed = True
            tests.append(test)
            index += 1
        if not changed:
            return tests


def _test_window(
    n_counts: np.ndarray,
    k_counts: np.ndarray,
    low: int,
    high: int,
    settings: _SplitSettings,
    current: int | None = None,
) -> _SplitTest | None:
    """Test the best split of buckets [low, high), or None if it fails.

    A split at index s puts buckets [low, s) before and [s, high) after.
    Only splits with at least ``min_submissions`` on both sides are
    candidates, and their count is the Bonferroni factor. ``current`` is
    kept unless another candidate has a strictly larger likelihood.
    """
    window_n = n_counts[low:high]
    window_k = k_counts[low:high]
    scores = _split_scores(window_n, window_k, settings.min_submissions)
    candidate_count = int(np.isfinite(scores).sum())
    if candidate_count == 0:
        return None

    offset = int(np.argmax(scores))
    if current is not None and scores[current - low - 1] >= scores[offset]:
        offset = current - low - 1
    split = low + offset + 1

    before_n = int(n_counts[low:split].sum())
    before_k = int(k_counts[low:split].sum())
    after_n = int(n_counts[split:high].sum())
    after_k = int(k_counts[split:high].sum())

    effect = Fraction(after_k, after_n) - Fraction(before_k, before_n)
    if abs(effect) < settings.min_effect:
        return None
    raw_p_value = _fisher_p_value(before_n, before_k, after_n, after_k)
    p_value = min(1.0, raw_p_value * candidate_count)
    if p_value >= settings.alpha:
        return None

    return _SplitTest(split, before_n, before_k, after_n, after_k, p_value)


def _split_scores(
    n_counts: np.ndarray, k_counts: np.ndarray, min_submissions: int
) -> np.ndarray:
    """Score every split of a window by its two-segment log-likelihood.

    Entry i scores the split before bucket i + 1, and non-candidates score
    -inf. The log-likelihood of the unsplit window is the same for every
    split, so the highest score is also the largest likelihood-ratio
    statistic.
    """
    if len(n_counts) < 2:
        return np.full(0, -np.inf)

    n_before = np.cumsum(n_counts)[:-1]
    k_before = np.cumsum(k_counts)[:-1]
    n_after = int(n_counts.sum()) - n_before
    k_after = int(k_counts.sum()) - k_before

    candidates = (n_before >= min_submissions) & (n_after >= min_submissions)
    scores = _binomial_log_likelihood(n_before, k_before) + _binomial_log_likelihood(
        n_after, k_after
    )
    return np.where(candidates, scores, -np.inf)


def _direction(test: _SplitTest) -> str:
    rose = test.after_k * test.before_n > test.before_k * test.after_n
    return "up" if rose else "down"


def _binomial_log_likelihood(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Maximised binomial log-likelihood, without the binomial coefficient."""
    n = n.astype(float)
    k = k.astype(float)
    safe_n = np.where(n > 0, n, 1.0)
    from scipy.special import xlogy

    return xlogy(k, k / safe_n) + xlogy(n - k, (n - k) / safe_n)


def _unpack_buckets(
    buckets: Sequence[tuple[datetime, int, int]],
) -> tuple[list[datetime], np.ndarray, np.ndarray]:
    starts: list[datetime] = []
    n_counts: list[int] = []
    k_counts: list[int] = []
    for index, bucket in enumerate(buckets):
        try:
            start, n, k = bucket
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"bucket {index} must be a (bucket_start, n, k) tuple, "
                f"got {bucket!r}"
            ) from error
        if not isinstance(start, datetime):
            raise TypeError(
                f"bucket {index} start must be a datetime, got "
                f"{type(start).__name__}: {start!r}"
            )
        _check_side(f"bucket {index} ({start.isoformat()})", n, k)
        if starts and not start > starts[-1]:
            raise ValueError(
                f"bucket {index} starts at {start.isoformat()}, not after the "
                f"previous bucket at {starts[-1].isoformat()}; sort buckets "
                f"by start time and merge duplicates"
            )
        starts.append(start)
        n_counts.append(n)
        k_counts.append(k)
    return starts, np.array(n_counts, dtype=np.int64), np.array(k_counts, dtype=np.int64)


def _check_side(label: str, n: Any, k: Any) -> None:
    for name, value in (("n", n), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(
                f"{label}: {name} must be an integer count, got "
                f"{type(value).__name__}: {value!r}"
            )
    if n < 0 or k < 0:
        raise ValueError(
            f"{label}: counts must not be negative, got n={n}, k={k}"
        )
    if k > n:
        raise ValueError(
            f"{label}: submissions with divergences (k={k}) exceed "
            f"submissions (n={n}); k must be at most n"
        )


def _check_test_settings(
    alpha: float, min_effect: float, min_submissions: int
) -> None:
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if not (isinstance(min_effect, (int, float)) and 0 <= min_effect <= 1):
        raise ValueError(
            f"min_effect must be a difference of rates in [0, 1], "
            f"got {min_effect!r}"
        )
    if (
        isinstance(min_submissions, bool)
        or not isinstance(min_submissions, int)
        or min_submissions < 1
    ):
        raise ValueError(
            f"min_submissions must be an integer >= 1, got {min_submissions!r}"
        )


def _fisher_p_value(before_n: int, before_k: int, after_n: int, after_k: int) -> float:
    table = [[before_k, before_n - before_k], [after_k, after_n - after_k]]
    from scipy.stats import fisher_exact

    return float(fisher_exact(table, alternative="two-sided").pvalue)


def _percent(k: int, n: int) -> str:
    return f"{100 * k / n:.1f}%"
