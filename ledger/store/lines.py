"""The SQL validation path for JSON Lines: one batch of raw lines checked and staged in DuckDB.

A line is accepted here only when every rule of `ledger.models` holds for
certain, in a deliberately narrow form. The JSON must be strict: DuckDB also
accepts trailing commas, NaN and Infinity, so lines that may hold them are
deferred. Field names must be the canonical lower-case ones, keys printable
ASCII, ids printable ASCII, timestamps ISO-8601 in one layout, and
divergences must have only the keys the SDK sends. Every other line is
deferred to the Python path, which decides it and explains a rejection. Both paths store the same values for a
line both accept (tests/test_paths_agree.py and tests/test_normalize.py).

Each line is parsed twice, once for its key list and once into its fields
as JSON texts, and its divergence list three more times (fields, key lists,
element types). DuckDB writes every extracted JSON value in one canonical
form, so the stage contains canonical text and the merge hashes it as it is.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

from ledger.models import ZONELESS_FLAG

FIELD_NAMES = (
    "run_id", "status", "actions_replayed", "actions_total", "divergences_detected", "divergences",
    "cost_savings", "submitted_at", "deployment", "id",
)
# Field names in another spelling than the canonical one: the Python path maps them.
ALIASES = (
    "runid", "submission_id", "divergence_count", "divergences_count", "cost_saved", "savings_usd",
    "created_at", "timestamp",
)
DIVERGENCE_KEYS = ("type", "action", "index", "expected_inputs", "actual_inputs", "expected", "actual")
# 2**62: larger counts and indexes are left to the Python path, which gives the reason.
_COUNT_LIMIT = 4611686018427387904

_PRINTABLE = "[\\x21-\\x7e](?:[\\x20-\\x7e]*[\\x21-\\x7e])?"
_ISO_LAYOUT = (
    "\\d{4}-\\d{2}-\\d{2}T(?:[01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(?:\\.\\d{1,6})?(?:Z|[+-](?:[01]\\d|2[0-3]):[0-5]\\d)?"
)
# NaN, Infinity (any case, signed) or a number with an exponent of three digits or more as a
# value, in canonical JSON text (no whitespace). DuckDB keeps them as written, the Python path rejects them.
_NON_STANDARD_NUMBER = "[:,\\[][-+]?(?:[iInN][nNaA]|[0-9.]+[eE]\\+?[0-9]{3})"
_TRAILING_COMMA = ",\\s*[\\]}]"
_SEPARATOR = "chr(31)"


def _joined_keys(keys: str) -> str:
    """Return SQL that joins a key list into one text in which every key is wrapped in chr(31)."""
    return f"({_SEPARATOR} || array_to_string({keys}, {_SEPARATOR} || {_SEPARATOR}) || {_SEPARATOR})"


def _repeated(names: tuple[str, ...], within: str = ".") -> str:
    """Return a pattern that finds one of `names` twice in a `_joined_keys` text (RE2 has no back references)."""
    return "\\x1f(?:" + "|".join(f"{name}\\x1f{within}*\\x1f{name}" for name in names) + ")\\x1f"


def _sql_list(names: tuple[str, ...]) -> str:
    return ", ".join(f"'{name}'" for name in names)


_FIELDS_STRUCTURE = "{" + ", ".join(f'"{name}": "JSON"' for name in FIELD_NAMES) + "}"
_DIVERGENCE_STRUCTURE = "[{" + ", ".join(f'"{name}": "JSON"' for name in DIVERGENCE_KEYS) + "}]"
_KNOWN_FIELDS_PATCH = "{" + ", ".join(f'"{name}": null' for name in FIELD_NAMES) + "}"
# A key the SQL path leaves to Python: a character outside printable ASCII or upper case, quote or
# backslash (so keys need no escaping and lower case is the identity), an alias, or a repeated field.
_KEY_PROBLEM = (
    "[^\\x1f\\x20\\x21\\x23-\\x40\\x5b\\x5d-\\x7e]"
    "|\\x1f(?:" + "|".join(ALIASES) + ")\\x1f"
    "|" + _repeated(FIELD_NAMES)
)
# The divergences' key lists, each item's keys wrapped in chr(31) and items separated by chr(30).
_ITEM_KEY_TEXT = (
    "(chr(30) || array_to_string(list_transform(item_keys, lambda k: "
    + _joined_keys("k") + "), chr(30)) || chr(30))"
)
_ITEM_KEYS_ALLOWED = "(?:\\x1e(?:\\x1f(?:" + "|".join(DIVERGENCE_KEYS) + ")\\x1f)*)*\\x1e"
_ITEM_KEY_REPEATED = _repeated(DIVERGENCE_KEYS, within="[^\\x1e]")

ACCEPT_SQL = f"""
CREATE OR REPLACE TEMP TABLE line_accepted AS
WITH parsed AS (
    SELECT line_no, raw, TRY(json_keys(raw)) AS keys, TRY(json_transform(raw, '{_FIELDS_STRUCTURE}')) AS f
    FROM line_batch
    WHERE NOT regexp_matches(raw, '{_TRAILING_COMMA}')
), fields AS (
    SELECT line_no, raw, keys, f,
           {_joined_keys("keys")} AS key_text,
           list_filter(keys, lambda k: k NOT IN ({_sql_list(FIELD_NAMES)})) AS extras,
           CASE WHEN json_type(f.divergences) = 'ARRAY' THEN from_json(f.divergences, '{_DIVERGENCE_STRUCTURE}') END
               AS items,
           CASE WHEN json_type(f.divergences) = 'ARRAY' THEN json_keys(f.divergences, '$[*]') END AS item_keys,
           CASE WHEN json_type(f.divergences) = 'ARRAY' THEN json_type(f.divergences, '$[*]') END AS item_types,
           f.run_id ->> '$' AS run_id, f.status ->> '$' AS status,
           TRY_CAST(f.actions_replayed AS UBIGINT) AS replayed,
           TRY_CAST(f.actions_total AS UBIGINT) AS total,
           TRY_CAST(f.divergences_detected AS UBIGINT) AS detected,
           TRY_CAST(f.cost_savings AS DOUBLE) AS savings,
           f.submitted_at ->> '$' AS submitted_text,
           f.deployment ->> '$' AS deployment, f.id ->> '$' AS platform_id
    FROM parsed
    WHERE keys IS NOT NULL AND f IS NOT NULL
), shaped AS (
    SELECT *, {_ITEM_KEY_TEXT} AS item_key_text,
           CASE WHEN len(extras) = 0 THEN NULL
                WHEN len(extras) = 1 THEN '{{"' || extras[1] || '":' || json_extract(raw, '$."' || extras[1] || '"') || '}}'
                ELSE json_merge_patch(raw, '{_KNOWN_FIELDS_PATCH}') END AS extra
    FROM fields
)
SELECT $first_seq + line_no - $first_line AS seq,
       line_no, run_id, status, replayed, total, coalesce(detected, len(items)) AS detected,
       CAST(CAST(savings AS VARCHAR) AS DECIMAL(18, 6)) AS cost_savings,
       CAST(submitted_text AS TIMESTAMPTZ) AS submitted_at,
       NOT regexp_matches(submitted_text, '(?:Z|[+-]\\d\\d:\\d\\d)$') AS zoneless,
       deployment, platform_id,
       extra, items, item_keys
FROM shaped
WHERE coalesce(
    NOT regexp_matches(key_text, '{_KEY_PROBLEM}')
    AND CASE WHEN len(extras) > 1 THEN list_unique(extras) = len(extras) ELSE TRUE END
    AND json_type(f.run_id) = 'VARCHAR' AND regexp_full_match(run_id, '{_PRINTABLE}') AND length(run_id) <= 256
    AND json_type(f.status) = 'VARCHAR' AND status IN ('success', 'partial', 'failed')
    AND json_type(f.actions_replayed) = 'UBIGINT' AND json_type(f.actions_total) = 'UBIGINT'
    AND total < {_COUNT_LIMIT} AND replayed <= total
    AND CASE
        WHEN f.divergences_detected IS NULL THEN json_type(f.divergences) = 'ARRAY'
        ELSE json_type(f.divergences_detected) = 'UBIGINT' AND detected < {_COUNT_LIMIT}
             AND (f.divergences IS NULL OR (json_type(f.divergences) = 'ARRAY' AND detected = len(items)))
        END
    AND json_type(f.cost_savings) IN ('UBIGINT', 'DOUBLE')
    AND isfinite(savings) AND savings BETWEEN 0 AND 999999999.999999
    AND json_type(f.submitted_at) = 'VARCHAR' AND regexp_full_match(submitted_text, '{_ISO_LAYOUT}')
    AND TRY_CAST(submitted_text AS TIMESTAMPTZ) >= TIMESTAMPTZ '2000-01-01 00:00:00+00'
    AND TRY_CAST(submitted_text AS TIMESTAMPTZ) < TIMESTAMPTZ '2100-01-01 00:00:00+00'
    AND (f.deployment IS NULL OR (json_type(f.deployment) = 'VARCHAR'
                                  AND regexp_full_match(deployment, '{_PRINTABLE}') AND length(deployment) <= 128))
    AND (f.id IS NULL OR (json_type(f.id) = 'VARCHAR'
                          AND regexp_full_match(platform_id, '{_PRINTABLE}') AND length(platform_id) <= 256))
    AND (items IS NULL OR (
        NOT regexp_matches(f.divergences, '{_NON_STANDARD_NUMBER}')
        AND regexp_full_match(item_key_text, '{_ITEM_KEYS_ALLOWED}')
        AND NOT regexp_matches(item_key_text, '{_ITEM_KEY_REPEATED}')))
    AND (extra IS NULL OR NOT regexp_matches(extra, '{_NON_STANDARD_NUMBER}'))
    AND coalesce(list_bool_and(list_transform(items, lambda d, i: coalesce(
        item_types[i] = 'OBJECT'
        AND json_type(d.type) = 'VARCHAR' AND regexp_full_match(d.type ->> '$', '{_PRINTABLE}')
        AND (d.index IS NULL OR (json_type(d.index) = 'UBIGINT' AND TRY_CAST(d.index AS UBIGINT) < {_COUNT_LIMIT}))
        AND (d.action IS NULL OR json_type(d.action) = 'VARCHAR'), FALSE))), TRUE),
    FALSE)
"""

STAGE_SUBMISSIONS_SQL = f"""
INSERT INTO submissions
SELECT seq, $file_index, platform_id, run_id, coalesce($deployment, deployment, 'unknown'), status,
       replayed, total, detected, cost_savings, submitted_at, NULL, $name || ':' || line_no,
       CASE WHEN zoneless THEN ['{ZONELESS_FLAG}'] END, extra
FROM line_accepted
"""


def _value_of(key: str) -> str:
    """Return SQL for the JSON text of divergence member `key`; a JSON null reads back as SQL NULL, so it becomes 'null'."""
    return f"coalesce(d.{key}, 'null')"


_DETAIL_MEMBER = (
    "CASE k " + " ".join(f"WHEN '{name}' THEN {_value_of(name)}" for name in ("type", "action", "index", "expected", "actual"))
    + " END"
)

# JSON null members read back from json_transform as SQL NULL, so presence comes from the key list.
STAGE_DIVERGENCES_SQL = f"""
INSERT INTO divergences
SELECT seq, position, d.type ->> '$', d.action ->> '$', TRY_CAST(d.index AS BIGINT),
       CASE WHEN d.type ->> '$' = 'action_mismatch' THEN
                CASE WHEN list_contains(keys, 'expected') THEN {_value_of("expected")} END
            WHEN list_contains(keys, 'expected_inputs') THEN {_value_of("expected_inputs")}
            WHEN list_contains(keys, 'expected') THEN {_value_of("expected")} END,
       CASE WHEN d.type ->> '$' = 'action_mismatch' THEN
                CASE WHEN list_contains(keys, 'actual') THEN {_value_of("actual")} END
            WHEN list_contains(keys, 'actual_inputs') THEN {_value_of("actual_inputs")}
            WHEN list_contains(keys, 'actual') THEN {_value_of("actual")} END,
       '{{' || array_to_string(list_transform(
           list_filter(keys, lambda k: k NOT IN ('expected_inputs', 'actual_inputs')),
           lambda k: '"' || k || '":' || {_DETAIL_MEMBER}), ',') || '}}'
FROM (SELECT seq, unnest(items) AS d, unnest(item_keys) AS keys, unnest(range(len(items))) AS position
      FROM line_accepted)
"""

def check_batch(
    connection: duckdb.DuckDBPyConnection, lines: pa.Table, file_index: int, name: str,
    deployment: str | None, first_seq: int,
) -> tuple[int, list[tuple[int, str]], list[int]]:
    """Validate one batch of raw lines (columns line_no int64, raw string) in SQL and stage the clean ones.

    Returns (records staged, deferred lines as (line_no, raw), line numbers of
    zone-less timestamps). A staged record's seq is `first_seq` plus its line's
    distance from the batch's first line, so seqs follow line order and the
    batch uses the seqs up to `first_seq` plus its span of lines. Deferred lines
    are every non-blank line the SQL rules cannot accept for certain; the
    caller validates them in Python.
    """
    if lines.num_rows == 0:
        return 0, [], []
    first_line = lines.column("line_no")[0].as_py()
    connection.register("line_batch", lines)
    try:
        connection.execute(ACCEPT_SQL, {"first_seq": first_seq, "first_line": first_line})
        connection.execute(STAGE_SUBMISSIONS_SQL, {"file_index": file_index, "deployment": deployment, "name": name})
        connection.execute(STAGE_DIVERGENCES_SQL)
        accepted = connection.sql("SELECT line_no, zoneless FROM line_accepted").fetchnumpy()
    finally:
        connection.execute("DROP TABLE IF EXISTS line_accepted")
        connection.unregister("line_batch")
    numbers = np.sort(accepted["line_no"])
    zoneless = np.sort(accepted["line_no"][accepted["zoneless"]]).tolist()
    return len(numbers), _deferred_lines(lines, numbers), zoneless


def _deferred_lines(lines: pa.Table, accepted: np.ndarray) -> list[tuple[int, str]]:
    """Return the non-blank lines of `lines` whose numbers are not in `accepted`, as (line_no, raw)."""
    numbers = lines.column("line_no").to_numpy()
    left = np.flatnonzero(~np.isin(numbers, accepted, assume_unique=True))
    if not len(left):
        return []
    raw = lines.column("raw").take(pa.array(left)).to_pylist()
    return [(int(numbers[index]), text) for index, text in zip(left, raw) if text.strip(" \t\r\n")]
