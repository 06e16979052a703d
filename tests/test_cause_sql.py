"""The SQL fast path of cause classification against the Python classifier, row for row.

Every test stores divergences in a real DuckDB table shaped like the stage's,
classifies them once with the SQL fast path and once with Python only
(`store.classify_divergences(..., sql_fast_path=False)`), and compares the
stored rows in their stored order. Counts of what SQL decided are asserted too,
so a fast path that quietly defers everything to Python fails here.
"""

from __future__ import annotations

import json
import random
import string
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from ledger import store
from ledger.store import cause_sql
from tests.test_analysis import CAUSE_CASES

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_REPLAYS = ROOT / "sample_data" / "replays.jsonl"
CAUSE_COLUMNS = "seq BIGINT, position INTEGER, ordinal INTEGER, path VARCHAR, cause VARCHAR, expected VARCHAR, actual VARCHAR"


def json_text(value: Any) -> str:
    """Write a value as compact JSON, with Decimal as its exact number text (as the SDK body has it)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(key)}:{json_text(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(json_text(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def stage_table(connection: duckdb.DuckDBPyConnection, divergences: list[tuple[str, str | None, str | None]]) -> None:
    """Create table `divergences` shaped like the stage's, one submission a divergence."""
    columns = ", ".join(f"{name} {kind}" for name, kind in store.STAGE_DIVERGENCE_COLUMNS)
    connection.execute(f"CREATE OR REPLACE TABLE divergences ({columns})")
    rows = [
        (seq, 0, kind, "act", 0, expected, actual, "{}")
        for seq, (kind, expected, actual) in enumerate(divergences)
    ]
    connection.executemany("INSERT INTO divergences VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def classify_both(divergences: list[tuple[str, str | None, str | None]]) -> tuple[list, list, cause_sql.ClassifyCounts]:
    """Return the rows of the fast path, the rows of Python alone, and the fast path's counts."""
    connection = duckdb.connect()
    try:
        stage_table(connection, divergences)
        connection.execute(f"CREATE TABLE fast ({CAUSE_COLUMNS})")
        connection.execute(f"CREATE TABLE python ({CAUSE_COLUMNS})")
        stored = store.classify_divergences(connection, "divergences", "fast", "seq", sql_fast_path=True)
        store.classify_divergences(connection, "divergences", "python", "seq", sql_fast_path=False)
        first, last = connection.execute("SELECT min(rowid), max(rowid) FROM divergences").fetchall()[0]
        connection.execute(f"CREATE TABLE counted ({CAUSE_COLUMNS})")
        counts = cause_sql.classify_table(connection, "divergences", "counted", "seq", first, last)
        fast = connection.execute("SELECT * FROM fast ORDER BY rowid").fetchall()
        python = connection.execute("SELECT * FROM python ORDER BY rowid").fetchall()
        assert stored == len(fast)
        return fast, python, counts
    finally:
        connection.close()


def input_pair(expected: Any, actual: Any) -> tuple[str, str, str]:
    return ("input_mismatch", json_text(expected), json_text(actual))


def test_cause_sql_case_table_agrees():
    divergences = [input_pair(param.values[0], param.values[1]) for param in CAUSE_CASES]

    fast, python, counts = classify_both(divergences)

    assert fast == python
    assert counts.decided_in_sql + counts.deferred == len(divergences)
    assert counts.decided_in_sql >= 30


def sample_divergences() -> list[tuple[str, str | None, str | None]]:
    divergences = []
    for line in SAMPLE_REPLAYS.read_bytes().splitlines():
        for divergence in orjson.loads(line)["divergences"]:
            if divergence["type"] == "action_mismatch":
                expected = json_text(divergence["expected"]) if "expected" in divergence else None
                actual = json_text(divergence["actual"]) if "actual" in divergence else None
            else:
                expected = json_text(divergence["expected_inputs"]) if "expected_inputs" in divergence else None
                actual = json_text(divergence["actual_inputs"]) if "actual_inputs" in divergence else None
            divergences.append((divergence["type"], expected, actual))
    return divergences


def test_cause_sql_sample_data_decided_in_sql():
    # The benchmark (bench/causes.py) repeats these same divergences, so this pins its SQL share too.
    divergences = sample_divergences()

    fast, python, counts = classify_both(divergences)

    assert len(divergences) == 889
    assert fast == python
    assert counts.decided_in_sql == 889
    assert counts.deferred == 0


def test_cause_sql_other_types_and_absent_sides():
    divergences = [
        ("action_mismatch", '"summarize"', '"fetch_data"'),
        ("action_mismatch", None, '"fetch_data"'),
        ("action_mismatch", "null", None),
        ("action_mismatch", '"a\\"b"', '"x' + "y" * 300 + '"'),
        ("action_mismatch", '{"name":"a"}', '"b"'),
        ("action_mismatch", '"café"', '"cafe"'),
        ("timeout", '{"a":1}', None),
        ("timeout", '"x"', "12"),
        ("timeout", None, None),
        ("timeout", "-0", "1.5"),
        ("input_mismatch", None, None),
        ("input_mismatch", '{"a":1}', None),
        ("input_mismatch", None, '{"a":[1,"x",null,true]}'),
        ("input_mismatch", '{"a":1}', '{"a":1}'),
        ("input_mismatch", '{"a":1}', '{"a":1.0}'),
        ("input_mismatch", "null", '{"a":1}'),
        ("input_mismatch", '"' + "x" * 250 + '"', '"' + "y" * 250 + '"'),
    ]

    fast, python, counts = classify_both(divergences)

    assert fast == python
    assert counts.decided_in_sql >= 12


def test_cause_sql_duplicate_keys_deferred():
    divergences = [
        ("input_mismatch", '{"a":1,"a":2,"b":1}', '{"a":2,"b":2}'),
        ("input_mismatch", '{"k":{"a":1,"a":2}}', '{"k":{"a":2}}'),
        ("input_mismatch", '{"k":{"a":1,"a":2}}', '{"k":[1]}'),
    ]

    fast, python, counts = classify_both(divergences)

    assert fast == python
    assert counts.deferred == 3


@pytest.mark.parametrize("count", [2, 3, 4, 5, 6])
def test_cause_sql_duplicate_key_each_place_deferred(count):
    # Objects of up to four keys are checked pairwise and larger ones with list_distinct, so a
    # duplicate is put in every place of objects on both sides of that limit, three levels deep.
    keys = [f"k{index}" for index in range(count)]
    divergences = []
    for first in range(count):
        for second in range(first + 1, count):
            duplicated = list(keys)
            duplicated[second] = duplicated[first]
            members = ",".join(f'"{key}":{index}' for index, key in enumerate(duplicated))
            divergences.append(("input_mismatch", '{"a":{"b":{' + members + '}},"c":1}', '{"a":{"b":{"k0":9}},"c":1}'))
    unique_members = ",".join(f'"{key}":{index}' for index, key in enumerate(keys))
    divergences.append(("input_mismatch", '{"a":{"b":{' + unique_members + '}},"c":1}', '{"a":{"b":{"k0":9}},"c":1}'))

    fast, python, counts = classify_both(divergences)

    assert fast == python
    assert counts.deferred == len(divergences) - 1
    assert counts.decided_in_sql == 1


def test_cause_sql_strings_outside_guards_agree():
    # Timestamps are parsed only when '-' follows the year, and UUIDs only at 32 to 47 characters.
    # Those guards must not change what SQL decides: without them it decided 48 of these 182 too.
    token = "0c4ec8fa-7b46-4c30-9b43-c4b5527bee86"
    texts = [
        "2026-11-19", "2026-11-19T10:00", "2026-11-19 10:00:00", "2026/11/19", "x2026-11-19", "202-11-19",
        token, token.replace("-", ""), "{" + token + "}", "urn:uuid:{" + token.upper() + "}", token[:-1], token + "0",
        "a" * 31, "a" * 48,
    ]
    divergences = [input_pair({"s": first}, {"s": second}) for first in texts for second in texts if first != second]

    fast, python, counts = classify_both(divergences)

    assert fast == python
    assert counts.decided_in_sql == 48


def test_cause_sql_lenient_json_deferred():
    # DuckDB reads these texts and orjson does not, so Python stores its error row for them.
    divergences = [
        ("input_mismatch", '{"a":NaN,"b":1}', '{"a":NaN,"b":2}'),
        ("input_mismatch", '{"a":[1,2,],"b":1}', '{"a":[1,2,],"b":2}'),
        ("input_mismatch", '{"a":1e400,"b":1}', '{"a":1e400,"b":2}'),
        ("input_mismatch", '{"a":-Infinity,"b":"x"}', '{"a":-Infinity,"b":"y"}'),
    ]

    fast, python, counts = classify_both(divergences)

    assert fast == python
    assert counts.deferred == 4


# ---------------------------------------------------------------------------
# Seeded random pairs aimed at the edges of the classifier's rules
# ---------------------------------------------------------------------------

ZONES = ["", "Z", "z", "+01:00", "-05:30", "+0530", "+02", "-00:00", "+24:00", "+01:60", "+23:59"]


def random_timestamp(rng: random.Random) -> str:
    moment = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=rng.randrange(400 * 86400))
    year = rng.choice([moment.year, moment.year, 999, 1000, 8999, 9000, 2024])
    month = rng.choice([moment.month] * 6 + [0, 13, 2])
    day = rng.choice([moment.day] * 6 + [29, 30, 31, 0, 32])
    date = f"{year:04d}-{month:02d}-{day:02d}"
    layout = rng.randrange(6)
    if layout == 0:
        return date
    separator = rng.choice("TT t")
    hour = rng.choice([moment.hour] * 5 + [23, 24])
    minute = rng.choice([moment.minute] * 5 + [59, 60])
    text = f"{date}{separator}{hour:02d}:{minute:02d}"
    if layout >= 2:
        second = rng.choice([moment.second] * 5 + [59, 60])
        text += f":{second:02d}"
    if layout >= 3:
        text += rng.choice(".,") + "".join(rng.choice(string.digits) for _ in range(rng.randint(1, 12)))
    if layout >= 4 or rng.random() < 0.3:
        text += rng.choice(ZONES)
    return text


def reformat_timestamp(rng: random.Random, text: str) -> str:
    """Return the same instant written another way when possible, else another timestamp."""
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return random_timestamp(rng)
    if parsed.tzinfo is None:
        return parsed.isoformat(sep=rng.choice("T "), timespec=rng.choice(["seconds", "microseconds", "auto"]))
    offset = timezone(timedelta(minutes=rng.choice([0, 60, -330, 90])))
    return parsed.astimezone(offset).isoformat(timespec=rng.choice(["seconds", "microseconds", "auto"]))


def random_uuid(rng: random.Random) -> str:
    value = uuid.UUID(int=rng.getrandbits(128))
    form = rng.randrange(6)
    text = str(value) if form != 1 else value.hex
    if form == 2:
        text = text.upper()
    if form == 3:
        text = "{" + text + "}"
    if form == 4:
        text = "urn:uuid:" + text
    if form == 5:
        text = "URN:UUID:{" + text.upper() + "}"
    return text


def reformat_uuid(rng: random.Random, text: str) -> str:
    digits = text.replace("urn:uuid:", "").replace("URN:UUID:", "").strip("{}").replace("-", "")
    value = uuid.UUID(hex=digits)
    return rng.choice([str(value).upper(), value.hex, "{" + str(value) + "}", "urn:uuid:" + str(value), random_uuid(rng)])


def random_string(rng: random.Random) -> str:
    kind = rng.randrange(10)
    if kind == 0:
        return random_timestamp(rng)
    if kind == 1:
        return random_uuid(rng)
    if kind == 2:
        return rng.choice(["Hello  World", " hello\tworld\n", "STRASSE", "straße", "café", "na\u00efve", "a\u0000b"])
    if kind == 3:
        return f"as of {random_timestamp(rng)} (UTC)"
    if kind == 4:
        return f"/v1/items/{random_uuid(rng)}/parts"
    if kind == 5:
        return rng.choice(['say "hi"', "back\\slash", "tab\there", "new\nline", "emoji \U0001F600", "x/y"])
    if kind == 6:
        return "".join(rng.choice(string.ascii_letters + " ") for _ in range(rng.randint(0, 12)))
    if kind == 7:
        return rng.choice(["2026-12-04", "build 2026-13-45 ok", "v2026-12-04x", "12345678-1234-1234-1234-123456789abc"])
    if kind == 8:
        return "w" * rng.choice([5, 199, 200, 250])
    return rng.choice(["TCK-1", "doc-2", "E501", "", " ", "A"])


def mutate_string(rng: random.Random, text: str) -> str:
    choice = rng.randrange(7)
    if choice == 0:
        return reformat_timestamp(rng, text) if text[4:5] == "-" else random_timestamp(rng)
    if choice == 1:
        try:
            return reformat_uuid(rng, text)
        except ValueError:
            return random_uuid(rng)
    if choice == 2:
        return rng.choice(
            [text.upper(), text.lower(), "  " + text + " ", text.replace(" ", "  "), text.replace(" ", ""), text + " x"]
        )
    if choice == 3:
        return text.replace("2026", "2027", 1) if "2026" in text else text + "x"
    return random_string(rng)


def random_number(rng: random.Random) -> Any:
    kind = rng.randrange(12)
    if kind == 0:
        return rng.random()
    if kind == 1:
        return rng.randint(-1000, 1000)
    if kind == 2:
        return rng.choice([2**70, 2**53 + 1, 2**63, -(2**63), 2**64 - 1, 10**15, 10**15 - 1])
    if kind == 3:
        return rng.choice([1764877287, 1764877287000, 1764877287.5902, 1e9, 1e10, 1e12 - 1, 1e13])
    if kind == 4:
        return round(rng.random(), rng.randint(1, 8))
    if kind == 5:
        return rng.random() * 10 ** rng.randint(-8, 20)
    if kind == 6:
        return rng.choice([0, 0.0, -0.0, 1, 1.0, 100.0, 1e16, 1e-5, 0.0001, 123456789012345.6])
    if kind == 7:
        return Decimal(rng.choice(["1e2", "0.10", "1.000", "3.14159265358979323846", "1E-7", "-0"]))
    return rng.uniform(-1e6, 1e6)


def mutate_number(rng: random.Random, value: Any) -> Any:
    number = float(value) if not isinstance(value, Decimal) else float(value)
    choice = rng.randrange(8)
    if choice == 0:
        # Relative differences around the 1e-9 float-noise limit, including just inside and outside.
        factor = rng.choice([0.5, 0.999999, 0.9999999999, 1.0, 1.0000000001, 1.000001, 2.0]) * 1e-9
        return number * (1 + factor) if number else factor
    if choice == 1:
        return int(number) if number == int(number) and abs(number) < 1e300 else number
    if choice == 2:
        return value + 1 if isinstance(value, int) else number * 1000
    if choice == 3:
        return float(f"{number:.17g}") + (0.0 if rng.random() < 0.5 else number * 2e-16)
    if choice == 4:
        return rng.random()
    if choice == 5:
        return str(value)
    return random_number(rng)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind <= 1:
        return random_string(rng)
    if kind <= 3:
        return random_number(rng)
    if kind == 4:
        return rng.choice([True, False, None])
    if kind == 5:
        return rng.choice(["x", 1, None])
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == 7:
        return [rng.choice(["a", "b", "c", 1, 2, 2.0, True]) for _ in range(rng.randint(1, 5))]
    return random_object(rng, depth + 1)


KEYS = ["a", "b", "seed", "ts", "request_id", "_x", "x1", "A", "a.b", "1a", "名前", "with space", "true", ""]


def random_object(rng: random.Random, depth: int = 0) -> dict:
    return {rng.choice(KEYS): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def mutate(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """Return a copy of `value` with one to a few random changes, aimed at the classifier's rules."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        changed = dict(value)
        key = rng.choice(list(changed))
        action = rng.randrange(6)
        if action == 0:
            del changed[key]
        elif action == 1:
            changed[rng.choice(KEYS)] = random_value(rng, depth + 1)
        elif action == 2:
            changed[key] = None if key in changed else changed.get(key)
        else:
            changed[key] = mutate(rng, changed[key], depth + 1)
        if rng.random() < 0.2:
            changed = dict(reversed(list(changed.items())))
        return changed
    if isinstance(value, list) and value and rng.random() < 0.8:
        changed = list(value)
        action = rng.randrange(5)
        if action == 0:
            rng.shuffle(changed)
        elif action == 1:
            changed.append(random_value(rng, depth + 1))
        elif action == 2:
            changed.pop()
        else:
            index = rng.randrange(len(changed))
            changed[index] = mutate(rng, changed[index], depth + 1)
        return changed
    if isinstance(value, str):
        return mutate_string(rng, value)
    if isinstance(value, bool) or value is None:
        return rng.choice([True, False, None, 0, 1, "true"])
    if isinstance(value, (int, float, Decimal)):
        return mutate_number(rng, value)
    return random_value(rng, depth)


def random_pairs(seed: int, count: int) -> list[tuple[str, str | None, str | None]]:
    rng = random.Random(seed)
    divergences = []
    for _ in range(count):
        expected = {"args": [random_value(rng, 2) for _ in range(rng.randint(0, 2))], "kwargs": random_object(rng)}
        if rng.random() < 0.2:
            expected = random_value(rng)
        actual = mutate(rng, expected)
        for _ in range(rng.choice([0, 0, 1, 2])):
            actual = mutate(rng, actual)
        kind, expected_text, actual_text = input_pair(expected, actual)
        if rng.random() < 0.03:
            expected_text = None
        if rng.random() < 0.03:
            actual_text = None
        divergences.append((kind, expected_text, actual_text))
    return divergences


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cause_sql_random_pairs_agree(seed):
    divergences = random_pairs(seed, 1500)

    fast, python, counts = classify_both(divergences)

    assert len(python) > 1500
    assert fast == python
    assert counts.decided_in_sql + counts.deferred == len(divergences)
    assert counts.decided_in_sql > 300


def test_cause_sql_timestamps_and_numbers_agree():
    rng = random.Random(7)
    divergences = []
    for _ in range(1500):
        text = random_timestamp(rng)
        divergences.append(input_pair({"ts": text, "n": 1}, {"ts": mutate_string(rng, text), "n": 1}))
        number = random_number(rng)
        divergences.append(input_pair({"v": number}, {"v": mutate_number(rng, number)}))
        token = random_uuid(rng)
        divergences.append(input_pair({"id": token}, {"id": reformat_uuid(rng, token)}))

    fast, python, counts = classify_both(divergences)

    assert fast == python
    assert counts.decided_in_sql > 2000


def test_cause_sql_whitespace_and_case_variants():
    texts = ["a b", "ab", "A  B", " a b ", "AB", "a\tb", "a  b", "Straße", "STRASSE", "x y z", "xy z"]
    divergences = [input_pair({"s": first}, {"s": second}) for first in texts for second in texts if first != second]

    fast, python, counts = classify_both(divergences)

    assert fast == python
    assert counts.decided_in_sql >= 50


def test_cause_sql_float_noise_boundary_agrees():
    rng = random.Random(9)
    divergences = []
    for _ in range(3000):
        number = rng.uniform(-1, 1) * 10 ** rng.randint(-3, 15)
        relative = rng.uniform(0.99, 1.01) if rng.random() < 0.7 else rng.uniform(0.999999, 1.000001)
        other = number * (1 + relative * 1e-9)
        if rng.random() < 0.3:
            other = float(f"{other:.{rng.randint(10, 17)}g}")
        divergences.append(input_pair({"v": number}, {"v": other}))

    fast, python, counts = classify_both(divergences)

    assert fast == python
    assert counts.decided_in_sql > 2000
    assert counts.deferred > 0


def test_cause_sql_canonical_texts_agree():
    # The stage stores every JSON value as DuckDB's json() writes it.
    connection = duckdb.connect()
    divergences = []
    for kind, expected, actual in random_pairs(4, 800):
        canonical = [
            None if text is None else connection.execute("SELECT CAST(json(?) AS VARCHAR)", [text]).fetchall()[0][0]
            for text in (expected, actual)
        ]
        divergences.append((kind, *canonical))
    connection.close()

    fast, python, counts = classify_both(divergences)

    assert fast == python
    assert counts.decided_in_sql > 200


def test_cause_sql_submission_key_in_transaction():
    # The merge and the migration classify rows their transaction has not committed, keyed by submission id.
    divergences = sample_divergences()[:300] + random_pairs(5, 300)
    columns = ", ".join(f"{name} {kind}" for name, kind in store.DIVERGENCE_COLUMNS)
    cause_columns = ", ".join(f"{name} {kind}" for name, kind in store.CAUSE_COLUMNS)
    connection = duckdb.connect()
    try:
        connection.execute(f"CREATE TABLE divergences ({columns})")
        connection.execute(f"CREATE TABLE fast ({cause_columns})")
        connection.execute(f"CREATE TABLE python ({cause_columns})")
        connection.execute("BEGIN TRANSACTION")
        connection.executemany(
            "INSERT INTO divergences VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(f"sub-{number:04d}", number % 3, kind, None, None, expected, actual, "{}")
             for number, (kind, expected, actual) in enumerate(divergences)],
        )
        stored = store.classify_divergences(connection, "divergences", "fast", "submission_id", sql_fast_path=True)
        store.classify_divergences(connection, "divergences", "python", "submission_id", sql_fast_path=False)
        fast = connection.execute("SELECT * FROM fast ORDER BY rowid").fetchall()
        python = connection.execute("SELECT * FROM python ORDER BY rowid").fetchall()
        connection.execute("COMMIT")
    finally:
        connection.close()

    assert stored == len(fast)
    assert len(fast) > 600
    assert fast == python
