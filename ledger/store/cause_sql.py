"""Divergence cause classification in DuckDB SQL, a fast path in front of `ledger.causes.cause_rows`.

SQL classifies only the divergences whose causes it can compute exactly as
the Python classifier (`ledger.analysis.diff_inputs`) does, and marks them as
decided. Every other divergence is left to `cause_rows`, so the stored rows
are the same whichever path classified a divergence.

SQL decides:

- an ``action_mismatch`` whose stored names are absent, null or printable
  ASCII strings (one ``control_flow`` row at the root);
- any other type except ``input_mismatch`` whose values are such strings,
  null, booleans or plain integers (one ``other_value`` row at the root);
- an ``input_mismatch`` when every node that differs in text between the
  two values is "plain". Its object keys are identifiers
  (``[A-Za-z_][A-Za-z0-9_]*``) without duplicates, and its strings are
  printable ASCII with no escape but ``\\"`` and ``\\\\``. Its integers have
  at most 15 digits, and its other numbers are written without an exponent
  with a magnitude from 1e-4 to below 1e16, or are zero. In that range
  DuckDB 2.0.1 writes a double with the same text as orjson. Nodes of equal
  text on both sides are equal values, so they need no check.

Within such a divergence, SQL still defers it in four cases:

- a differing list of equal length contains an object or a list, because
  reordering then needs canonical texts;
- a string contains a date-like or UUID-like token without both sides being
  a whole timestamp or a whole UUID;
- a timestamp falls outside the years 1000-8999 or has second 60;
- two numbers lie too close to the 1e-9 relative float-noise limit to judge
  in double precision.

The node walk is DuckDB's ``json_tree``, joined between the two sides on
the node's full key. DuckDB accepts some texts that orjson rejects (NaN,
Infinity, trailing commas, exponents beyond the double range); such texts
are deferred too, so Python reports them as it always did.

NOTE: on divergences whose values differ from record to record, as real
replays' do, this path took as long as Python alone on 2 cores and 55% more
CPU time (11.4 s against 7.4 s for 400,057 divergences in `bench/causes.py`,
docs/benchmarks.md). DuckDB 2.0.1 runs ``json_tree`` once a distinct text
of a batch, so it only wins on repeated texts. `store.classify_divergences`
therefore uses it only when a caller passes ``sql_fast_path=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from ledger import analysis, causes

# Temporary tables of one batch. Each run of `classify_batch` replaces them.
VERDICTS_TABLE = "cause_sql_verdicts"
ROWS_TABLE = "cause_sql_rows"
DECIDED_TABLE = "cause_sql_decided"

_IDENTIFIER = "^[A-Za-z_][A-Za-z0-9_]*$"
# A JSON string text of printable ASCII whose only escapes are \" and \\: orjson writes it the same.
_PLAIN_STRING = r'^"(?:[ !#-\[\]-~]|\\["\\])*"$'
_PLAIN_INTEGER = "^-?[0-9]{1,15}$"
_PLAIN_DECIMAL = r"^-?[0-9]+\.[0-9]+$"
# Texts that DuckDB's JSON reader accepts but orjson rejects, matched loosely (a match inside a
# string only defers the divergence to Python).
_LENIENT_JSON = r"[\[:,]\s*(?:[-+]?(?:[Nn][Aa]|[Ii])|-?[0-9.]+[eE][+-]?[0-9]{3})|,\s*[\]}]|\\u[dD][89a-fA-F]"
_DATE_LIKE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_UUID_HEX = (
    "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32}"
)
_UUID_LIKE = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_UUID = f"^(?:(?i:urn:uuid:))?(?:\\{{(?:{_UUID_HEX})\\}}|(?:{_UUID_HEX}))$"
# The ISO-8601 layout of `analysis._ISO_TIMESTAMP`, with ASCII digits only. Its fields sit at
# fixed places or are split off with string functions, which is far faster than capture groups.
_TIMESTAMP = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?"
    r"(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?)?$"
)
# Relative differences this close to the 1e-9 float-noise limit are left to the exact Decimal
# comparison in Python. A double differs from the shortest decimal that Python compares by at
# most about 1.1e-16 of its value, so a relative difference computed in doubles is off by
# less than 3e-16, which is 3e-7 of the limit.
_NOISE_LIMIT = 1e-9
_NOISE_MARGIN = 1e-6

_MACROS = f"""
CREATE OR REPLACE TEMP MACRO cause_sql_kind(node_type) AS CASE node_type
    WHEN 'OBJECT' THEN 'object' WHEN 'ARRAY' THEN 'array' WHEN 'VARCHAR' THEN 'string'
    WHEN 'BOOLEAN' THEN 'bool' WHEN 'NULL' THEN 'null' ELSE 'number' END;
CREATE OR REPLACE TEMP MACRO cause_sql_plain_value(node_type, value) AS CASE
    WHEN node_type IN ('OBJECT', 'ARRAY', 'BOOLEAN', 'NULL') THEN TRUE
    WHEN node_type = 'VARCHAR' THEN regexp_matches(value, '{_PLAIN_STRING}')
    WHEN node_type IN ('UBIGINT', 'BIGINT') THEN regexp_matches(value, '{_PLAIN_INTEGER}')
    WHEN node_type <> 'DOUBLE' THEN FALSE
    WHEN NOT regexp_matches(value, '{_PLAIN_DECIMAL}') THEN FALSE
    ELSE CAST(value AS DOUBLE) = 0 OR abs(CAST(value AS DOUBLE)) BETWEEN 1e-4 AND 9999999999999998
    END;
-- Python keeps the last of duplicate keys, and json_tree keeps them all, so such objects are deferred.
-- `keys` is the json_keys list of an object. Up to four keys are compared pairwise, which took
-- about a third of the CPU time of list_distinct on the objects of `bench/causes.py`.
CREATE OR REPLACE TEMP MACRO cause_sql_unique_keys(keys) AS CASE len(keys)
    WHEN 0 THEN TRUE WHEN 1 THEN TRUE
    WHEN 2 THEN keys[1] <> keys[2]
    WHEN 3 THEN keys[1] <> keys[2] AND keys[1] <> keys[3] AND keys[2] <> keys[3]
    WHEN 4 THEN keys[1] <> keys[2] AND keys[1] <> keys[3] AND keys[1] <> keys[4]
                AND keys[2] <> keys[3] AND keys[2] <> keys[4] AND keys[3] <> keys[4]
    ELSE len(keys) = len(list_distinct(keys)) END;
CREATE OR REPLACE TEMP MACRO cause_sql_cut(text) AS CASE
    WHEN length(CAST(text AS VARCHAR)) > {causes.VALUE_CHARS}
    THEN left(CAST(text AS VARCHAR), {causes.VALUE_CHARS - 1}) || '…' ELSE CAST(text AS VARCHAR) END;
CREATE OR REPLACE TEMP MACRO cause_sql_digits(text) AS
    length(trim(replace(ltrim(text, '-'), '.', ''), '0'));
CREATE OR REPLACE TEMP MACRO cause_sql_canonical(element) AS CASE
    WHEN json_type(element) = 'VARCHAR' THEN 's' || element
    WHEN json_type(element) = 'BOOLEAN' THEN 'b' || element
    WHEN json_type(element) = 'NULL' THEN 'z'
    WHEN json_type(element) IN ('OBJECT', 'ARRAY') THEN NULL
    WHEN CAST(element AS DOUBLE) = 0 THEN 'n0'
    ELSE 'n' || CAST(CAST(element AS DOUBLE) AS VARCHAR)
    END;
-- The comparable instant of a text in the `_TIMESTAMP` layout, whose part after the minutes is
-- `tail`: UTC seconds (wall-clock seconds without a zone), the fraction without trailing zeros
-- and whether a zone was given. NULL for another layout, 'defer' when Python's datetime would
-- reject it or the year is kept out of SQL. Fields sit at fixed places in this layout.
CREATE OR REPLACE TEMP MACRO cause_sql_instant(text, tail, zone) AS CASE
    WHEN NOT regexp_matches(text, '{_TIMESTAMP}') THEN NULL
    WHEN left(text, 4) NOT BETWEEN '1000' AND '8999' OR TRY_CAST(left(text, 10) AS DATE) IS NULL
         OR substr(text, 12, 2) > '23' OR substr(text, 15, 2) > '59'
         OR (substr(text, 17, 1) = ':' AND substr(text, 18, 2) > '59')
         OR (zone NOT IN ('', 'Z', 'z')
             AND (substr(zone, 2, 2) > '23' OR (length(zone) > 3 AND right(zone, 2) > '59'))) THEN 'defer'
    -- Without a zone the wall-clock fields compare as text, so only zoned times need arithmetic.
    WHEN zone = '' THEN left(text, 10) || 'T' || coalesce(nullif(substr(text, 12, 5), ''), '00:00') || ':'
        || CASE WHEN substr(text, 17, 1) = ':' THEN substr(text, 18, 2) ELSE '00' END
        || '|' || rtrim(CASE WHEN left(tail, 1) IN ('.', ',') THEN substr(tail, 2) ELSE '' END, '0') || '|false'
    ELSE CAST(
        (CAST(left(text, 10) AS DATE) - DATE '1970-01-01') * 86400
        + CAST(coalesce(nullif(substr(text, 12, 2), ''), '0') AS INTEGER) * 3600
        + CAST(coalesce(nullif(substr(text, 15, 2), ''), '0') AS INTEGER) * 60
        + CASE WHEN substr(text, 17, 1) = ':' THEN CAST(substr(text, 18, 2) AS INTEGER) ELSE 0 END
        - CASE WHEN zone IN ('Z', 'z') THEN 0
               ELSE (CASE WHEN left(zone, 1) = '-' THEN -1 ELSE 1 END)
                    * (CAST(substr(zone, 2, 2) AS INTEGER) * 3600
                       + CASE WHEN length(zone) > 3 THEN CAST(right(zone, 2) AS INTEGER) * 60 ELSE 0 END) END
        AS VARCHAR)
        || '|' || rtrim(CASE WHEN left(tail, 1) IN ('.', ',') THEN substr(tail, 2, length(tail) - 1 - length(zone))
                             ELSE '' END, '0')
        || '|true'
    END;
CREATE OR REPLACE TEMP MACRO cause_sql_uuid(text) AS CASE WHEN regexp_matches(text, '{_UUID}') THEN
    lower(replace(trim(CASE WHEN lower(left(text, 9)) = 'urn:uuid:' THEN substr(text, 10) ELSE text END, '{{}}'), '-', ''))
    END;
CREATE OR REPLACE TEMP MACRO cause_sql_time_tail(text) AS CASE
    WHEN length(text) = 10 THEN '' WHEN substr(text, 17, 1) = ':' THEN substr(text, 20) ELSE substr(text, 17) END;
-- The cause of two different strings as `analysis._classify_leaf` gives it, or 'defer'.
CREATE OR REPLACE TEMP MACRO cause_sql_string_cause(expected, actual, e_time, a_time, e_uuid, a_uuid) AS CASE
    WHEN e_time = 'defer' OR a_time = 'defer' THEN 'defer'
    WHEN e_time IS NOT NULL AND a_time IS NOT NULL THEN
        CASE WHEN e_time = a_time THEN 'formatting' ELSE 'timestamp' END
    WHEN regexp_matches(expected, '{_DATE_LIKE}') OR regexp_matches(actual, '{_DATE_LIKE}') THEN 'defer'
    WHEN e_uuid IS NOT NULL AND a_uuid IS NOT NULL THEN CASE WHEN e_uuid = a_uuid THEN 'formatting' ELSE 'uuid' END
    WHEN regexp_matches(expected, '{_UUID_LIKE}') OR regexp_matches(actual, '{_UUID_LIKE}') THEN 'defer'
    WHEN lower(regexp_replace(trim(expected), ' +', ' ', 'g'))
         = lower(regexp_replace(trim(actual), ' +', ' ', 'g')) THEN 'formatting'
    ELSE 'other_value' END;
-- Two differing lists of equal length whose elements are the same multiset in another order are
-- a reordering, NULL means their elements are compared one by one. Elements that are objects or
-- lists need canonical texts, so Python judges them ('defer').
CREATE OR REPLACE TEMP MACRO cause_sql_array_cause(expected, actual) AS CASE
    WHEN json_array_length(expected) <> json_array_length(actual) THEN NULL
    -- The outer lambda splits each list into elements once, and the inner one reads them.
    ELSE list_transform(
        [{{'e': json_extract(expected, '$[*]'), 'a': json_extract(actual, '$[*]')}}],
        lambda elements: list_transform(
            [{{'e': list_transform(elements.e, lambda x: cause_sql_canonical(x)),
              'a': list_transform(elements.a, lambda x: cause_sql_canonical(x)),
              'plain': list_bool_and(list_transform(elements.e || elements.a,
                                                    lambda x: cause_sql_plain_value(json_type(x), x)))}}],
            lambda keys: CASE
                WHEN NOT list_bool_and(list_transform(keys.e || keys.a, lambda k: k IS NOT NULL)) OR NOT keys.plain
                    THEN 'defer'
                WHEN keys.e <> keys.a AND list_sort(keys.e) = list_sort(keys.a) THEN 'reordering'
                END)[1])[1]
    END;
CREATE OR REPLACE TEMP MACRO cause_sql_epoch_unit(number) AS CASE
    WHEN number >= 1e9 AND number < 1e10 THEN 's' WHEN number >= 1e12 AND number < 1e13 THEN 'ms' END;
-- The cause of two plain numbers as `analysis._classify_leaf` gives it, NULL when they are
-- equal (1 against 1.0), or 'defer'. Integers have at most 15 digits, so doubles hold them exactly.
CREATE OR REPLACE TEMP MACRO cause_sql_number_cause(e_type, e_text, a_type, a_text, e, a) AS CASE
    WHEN e = a THEN NULL
    WHEN cause_sql_epoch_unit(e) IS NOT NULL AND cause_sql_epoch_unit(a) IS NOT NULL THEN CASE
        WHEN cause_sql_epoch_unit(e) = cause_sql_epoch_unit(a) THEN 'timestamp'
        WHEN e_type = 'DOUBLE' OR a_type = 'DOUBLE' THEN 'defer'
        WHEN CAST(least(e, a) AS BIGINT) * 1000 = CAST(greatest(e, a) AS BIGINT) THEN 'formatting'
        ELSE 'timestamp' END
    WHEN e_type <> 'DOUBLE' AND a_type <> 'DOUBLE' THEN 'other_value'
    WHEN abs(e - a) < greatest(abs(e), abs(a)) * {_NOISE_LIMIT * (1 - _NOISE_MARGIN)!r} THEN 'float_noise'
    WHEN abs(e - a) <= greatest(abs(e), abs(a)) * {_NOISE_LIMIT * (1 + _NOISE_MARGIN)!r} THEN 'defer'
    WHEN e >= 0 AND e < 1 AND a >= 0 AND a < 1
         AND greatest(CASE WHEN e_type = 'DOUBLE' THEN cause_sql_digits(e_text) ELSE 0 END,
                      CASE WHEN a_type = 'DOUBLE' THEN cause_sql_digits(a_text) ELSE 0 END) >= {analysis._RANDOM_MIN_DIGITS}
        THEN 'random_number'
    ELSE 'other_value' END;
"""

# Node pairs of the two values whose JSON text differs, or that only one side has.
# Nodes of equal text on both sides are equal values, so they are left out. The inputs are
# materialized so that the lenient-JSON regex runs once a divergence, not once a walk.
_PAIRS_SQL = f"""
WITH inputs AS MATERIALIZED (
    SELECT d.rowid AS rid, d.expected, d.actual
    FROM {{source}} AS d
    WHERE d.rowid >= $low AND d.rowid < $high AND d.type = 'input_mismatch'
      AND d.expected IS DISTINCT FROM d.actual
      AND coalesce(json_valid(d.expected), TRUE) AND coalesce(json_valid(d.actual), TRUE)
      AND NOT coalesce(regexp_matches(d.expected, '{_LENIENT_JSON}'), FALSE)
      AND NOT coalesce(regexp_matches(d.actual, '{_LENIENT_JSON}'), FALSE)
), en AS (
    SELECT i.rid, t.id, t.fullkey, t.path, t.key, t.type, t.value FROM inputs AS i, json_tree(i.expected) AS t
), an AS (
    SELECT i.rid, t.id, t.fullkey, t.path, t.key, t.type, t.value FROM inputs AS i, json_tree(i.actual) AS t
)
SELECT coalesce(en.rid, an.rid) AS rid, coalesce(en.fullkey, an.fullkey) AS fullkey,
       CASE WHEN coalesce(en.id, an.id) > 0 THEN coalesce(en.path, an.path) END AS parent,
       coalesce(en.key, an.key) AS key,
       en.id AS e_id, an.id AS a_id, en.type AS e_type, an.type AS a_type, en.value AS e_value, an.value AS a_value,
       CASE WHEN en.type = 'OBJECT' THEN json_keys(en.value) END AS e_keys,
       CASE WHEN an.type = 'OBJECT' THEN json_keys(an.value) END AS a_keys
FROM en FULL JOIN an ON en.rid = an.rid AND en.fullkey = an.fullkey
WHERE en.value IS DISTINCT FROM an.value
"""

# Every pair with its verdict: a cause, NULL for no difference at this node, or 'defer'.
_VERDICTS_SQL = f"""
CREATE OR REPLACE TEMP TABLE {VERDICTS_TABLE} AS
WITH pairs AS ({_PAIRS_SQL}
), judged AS (
    SELECT p.* EXCLUDE (e_keys, a_keys),
           (p.e_type IS NULL OR cause_sql_plain_value(p.e_type, p.e_value))
           AND (p.a_type IS NULL OR cause_sql_plain_value(p.a_type, p.a_value))
           AND (p.parent IS NULL OR ends_with(p.fullkey, ']') OR regexp_matches(p.key, '{_IDENTIFIER}'))
           AND (p.e_keys IS NULL OR cause_sql_unique_keys(p.e_keys))
           AND (p.a_keys IS NULL OR cause_sql_unique_keys(p.a_keys)) AS plain,
           cause_sql_kind(p.e_type) AS e_kind, cause_sql_kind(p.a_type) AS a_kind,
           CASE WHEN p.e_type <> 'VARCHAR' OR p.a_type <> 'VARCHAR' THEN NULL
                WHEN contains(p.e_value, '\\') THEN p.e_value ->> '$'
                ELSE substr(p.e_value, 2, length(p.e_value) - 2) END AS e_text,
           CASE WHEN p.e_type <> 'VARCHAR' OR p.a_type <> 'VARCHAR' THEN NULL
                WHEN contains(p.a_value, '\\') THEN p.a_value ->> '$'
                ELSE substr(p.a_value, 2, length(p.a_value) - 2) END AS a_text
    FROM pairs AS p
), tails AS (
    -- Only strings with '-' after a 4-character year can match `_TIMESTAMP`, and only texts of
    -- 32 to 47 characters can match `_UUID`, so other strings skip that parsing.
    SELECT *,
           CASE WHEN substr(e_text, 5, 1) = '-' THEN cause_sql_time_tail(e_text) END AS e_tail,
           CASE WHEN e_text IS NOT NULL AND substr(a_text, 5, 1) = '-' THEN cause_sql_time_tail(a_text) END AS a_tail
    FROM judged
), zones AS (
    -- cause_sql_instant reads the zone about ten times, so it is computed once here.
    SELECT *, ltrim(e_tail, '.,0123456789') AS e_zone, ltrim(a_tail, '.,0123456789') AS a_zone
    FROM tails
), strings AS (
    SELECT *,
           CASE WHEN e_tail IS NOT NULL THEN cause_sql_instant(e_text, e_tail, e_zone) END AS e_time,
           CASE WHEN a_tail IS NOT NULL THEN cause_sql_instant(a_text, a_tail, a_zone) END AS a_time,
           CASE WHEN length(e_text) BETWEEN 32 AND 47 THEN cause_sql_uuid(e_text) END AS e_uuid,
           CASE WHEN e_text IS NOT NULL AND length(a_text) BETWEEN 32 AND 47 THEN cause_sql_uuid(a_text) END AS a_uuid
    FROM zones
), leaves AS (
    SELECT rid, fullkey, parent, e_id, a_id, e_type, a_type, e_value, a_value, CASE
        WHEN NOT plain THEN 'defer'
        WHEN e_type IS NULL THEN 'extra_key'
        WHEN a_type IS NULL THEN 'missing_key'
        WHEN e_kind <> a_kind THEN 'type_change'
        WHEN e_kind = 'object' THEN NULL
        WHEN e_kind = 'array' THEN cause_sql_array_cause(e_value, a_value)
        WHEN e_kind = 'string' THEN cause_sql_string_cause(e_text, a_text, e_time, a_time, e_uuid, a_uuid)
        WHEN e_kind = 'number' THEN cause_sql_number_cause(
            e_type, e_value, a_type, a_value, CAST(e_value AS DOUBLE), CAST(a_value AS DOUBLE))
        ELSE 'other_value' END AS verdict
    FROM strings
)
SELECT rid, fullkey, parent, e_id, a_id, e_type, a_type, e_value, a_value, verdict FROM leaves
"""

# The rows of the divergences SQL decides. A node with a verdict is a difference when its
# parent is compared member by member: present on both sides with the same kind and not a
# reordering. Differences are ordered as `diff_inputs` finds them: by their node's place in
# the expected value, and a node only the actual value has right after the last node of its
# parent in the expected value, the deeper parent's first.
_ROWS_SQL = f"""
CREATE OR REPLACE TEMP TABLE {ROWS_TABLE} AS
WITH deferred AS (
    SELECT DISTINCT rid FROM {VERDICTS_TABLE} WHERE verdict = 'defer'
), placed AS (
    SELECT c.*, parent_pair.e_value AS parent_e_value, parent_pair.e_id AS parent_e_id,
           parent_pair.fullkey AS parent_fullkey
    FROM {VERDICTS_TABLE} AS c
    LEFT JOIN (
        -- Only objects and lists have children, so the lookup table holds only pairs with one on a side.
        SELECT * FROM {VERDICTS_TABLE} WHERE e_type IN ('OBJECT', 'ARRAY') OR a_type IN ('OBJECT', 'ARRAY')
    ) AS parent_pair ON parent_pair.rid = c.rid AND parent_pair.fullkey = c.parent
    WHERE c.verdict IS NOT NULL
      AND c.rid NOT IN (SELECT rid FROM deferred)
      AND (c.parent IS NULL OR (parent_pair.e_type = parent_pair.a_type
                                AND parent_pair.verdict IS DISTINCT FROM 'reordering'))
), extra_anchors AS (
    SELECT placed.rid, placed.fullkey, any_value(placed.parent_e_id) + max(t.id) AS anchor
    FROM placed, json_tree(placed.parent_e_value) AS t
    WHERE placed.e_id IS NULL AND placed.parent IS NOT NULL
    GROUP BY placed.rid, placed.fullkey
)
SELECT p.rid,
       regexp_replace(regexp_replace(p.fullkey, '\\."([A-Za-z0-9_]*)"', '.\\1', 'g'), '^\\$\\.?', '') AS path,
       p.verdict AS cause,
       cause_sql_cut(p.e_value) AS expected, cause_sql_cut(p.a_value) AS actual,
       coalesce(p.e_id, x.anchor, 0) AS order_anchor,
       CASE WHEN p.e_id IS NULL THEN 1 ELSE 0 END AS order_side,
       CASE WHEN p.e_id IS NULL THEN -length(p.parent_fullkey) ELSE 0 END AS order_depth,
       coalesce(p.a_id, 0) AS order_actual
FROM placed AS p LEFT JOIN extra_anchors AS x USING (rid, fullkey)
"""

# A stored name or value that orjson would write back unchanged: null, a boolean, a plain
# string or a plain integer. Python reads an absent name of an action mismatch as null.
_PLAIN_SCALAR = (
    "({column} IS NULL OR {column} IN ('null', 'true', 'false') OR regexp_matches({column}, '"
    + _PLAIN_STRING
    + "') OR (regexp_matches({column}, '"
    + _PLAIN_INTEGER
    + "') AND NOT starts_with({column}, '-0')))"
)

_DECIDED_SQL = f"""
CREATE OR REPLACE TEMP TABLE {DECIDED_TABLE} AS
WITH source_rows AS (
    SELECT rowid AS rid, type, CAST(expected AS VARCHAR) AS e, CAST(actual AS VARCHAR) AS a
    FROM {{source}}
    WHERE rowid >= $low AND rowid < $high
)
-- The insert reads the texts only of the other types, because input rows come from the verdicts.
SELECT rid, type, CASE WHEN type <> 'input_mismatch' THEN e END AS e, CASE WHEN type <> 'input_mismatch' THEN a END AS a
FROM source_rows
WHERE (type = 'input_mismatch' AND (e = a OR (e IS NULL AND a IS NULL)))
   OR (type = 'input_mismatch' AND rid IN (SELECT rid FROM {VERDICTS_TABLE})
       AND rid NOT IN (SELECT rid FROM {VERDICTS_TABLE} WHERE verdict = 'defer'))
   OR (type <> 'input_mismatch' AND {_PLAIN_SCALAR.replace('{column}', 'e')} AND {_PLAIN_SCALAR.replace('{column}', 'a')})
"""


@dataclass
class ClassifyCounts:
    """Counts of a classification: divergences decided in SQL, divergences left to Python, cause rows stored."""

    decided_in_sql: int = 0
    deferred: int = 0
    rows: int = 0

    def add(self, other: ClassifyCounts) -> None:
        """Add the counts of another batch to these."""
        self.decided_in_sql += other.decided_in_sql
        self.deferred += other.deferred
        self.rows += other.rows


def classify_table(
    connection: duckdb.DuckDBPyConnection, source: str, target: str, key: str, first: int, last: int,
    batch_rows: int = 120_000,
) -> ClassifyCounts:
    """Classify the divergences of `source` with ``rowid`` from `first` to `last` in batches; append the rows to `target`.

    Runs `classify_batch` on ``rowid`` ranges of `batch_rows` and then drops
    its temporary tables. Everything runs on `connection`, so inside a
    transaction the rows land in that transaction. After an error the
    temporary tables stay until the connection closes or the next call
    replaces them, because an aborted transaction cannot drop them.
    """
    create_macros(connection)
    counts = ClassifyCounts()
    for low in range(first, last + 1, batch_rows):
        counts.add(classify_batch(connection, source, target, key, low, min(low + batch_rows, last + 1)))
    drop_tables(connection)
    return counts


def create_macros(connection: duckdb.DuckDBPyConnection) -> None:
    """Create the temporary SQL macros of the fast path on `connection` (replacing older ones)."""
    connection.execute(_MACROS)


def classify_batch(
    connection: duckdb.DuckDBPyConnection, source: str, target: str, key: str, low: int, high: int
) -> ClassifyCounts:
    """Classify the divergences of `source` with ``rowid`` in [`low`, `high`) and append their cause rows to `target`.

    SQL decides what it can (see the module docstring) and `causes.cause_rows`
    classifies the rest. The rows are appended in ``rowid`` order and, within
    a divergence, in `ordinal` order, as the Python path alone appends them.
    Call `create_macros` on `connection` first. `source`, `target` and `key`
    are trusted identifiers, as in `store.classify_divergences`.
    """
    parameters = {"low": low, "high": high}
    connection.execute(_VERDICTS_SQL.replace("{source}", source), parameters)
    connection.execute(_ROWS_SQL)
    connection.execute(_DECIDED_SQL.replace("{source}", source), parameters)
    decided = connection.execute(f"SELECT count(*) FROM {DECIDED_TABLE}").fetchall()[0][0]

    deferred = connection.sql(
        f"SELECT rowid AS rid, {key}, position, type, CAST(expected AS VARCHAR) AS expected, "
        f"CAST(actual AS VARCHAR) AS actual FROM {source} "
        f"WHERE rowid >= $low AND rowid < $high AND rowid NOT IN (SELECT rid FROM {DECIDED_TABLE}) ORDER BY rowid",
        params=parameters,
    ).to_arrow_table()
    python_rows = causes.cause_rows(deferred.drop_columns(["rid"]), key)
    python_rows = python_rows.append_column("rid", pa.array(_source_rowids(deferred, python_rows, key), pa.int64()))
    python_rows = python_rows.append_column("sequence", pa.array(range(python_rows.num_rows), pa.int64()))

    columns = ", ".join(name for name in (key, *causes.CAUSE_FIELDS))
    connection.register("cause_sql_python_rows", python_rows)
    try:
        stored = connection.execute(
            f"""
            INSERT INTO {target}
            SELECT {columns} FROM (
                SELECT s.{key}, s.position,
                       CAST(row_number() OVER (PARTITION BY r.rid ORDER BY r.order_anchor, r.order_side,
                                                                        r.order_depth, r.order_actual) - 1
                            AS INTEGER) AS ordinal,
                       r.path, r.cause, r.expected, r.actual, r.rid, 0 AS sequence
                FROM {ROWS_TABLE} AS r JOIN {source} AS s ON s.rowid = r.rid AND s.rowid >= $low AND s.rowid < $high
                UNION ALL
                SELECT s.{key}, s.position, 0, '',
                       CASE WHEN d.type = 'action_mismatch' THEN 'control_flow' ELSE 'other_value' END,
                       cause_sql_cut(CASE WHEN d.type = 'action_mismatch' THEN coalesce(d.e, 'null') ELSE d.e END),
                       cause_sql_cut(CASE WHEN d.type = 'action_mismatch' THEN coalesce(d.a, 'null') ELSE d.a END),
                       d.rid, 0
                FROM {DECIDED_TABLE} AS d JOIN {source} AS s ON s.rowid = d.rid AND s.rowid >= $low AND s.rowid < $high
                WHERE d.type <> 'input_mismatch'
                UNION ALL
                SELECT {columns}, rid, sequence FROM cause_sql_python_rows
            )
            ORDER BY rid, ordinal, sequence
            """,
            parameters,
        ).fetchall()[0][0]
    finally:
        connection.unregister("cause_sql_python_rows")
    return ClassifyCounts(decided_in_sql=decided, deferred=deferred.num_rows, rows=stored)


def drop_tables(connection: duckdb.DuckDBPyConnection) -> None:
    """Drop the temporary tables of the last batch."""
    for table in (VERDICTS_TABLE, ROWS_TABLE, DECIDED_TABLE):
        connection.execute(f"DROP TABLE IF EXISTS {table}")


def _source_rowids(deferred: pa.Table, rows: pa.Table, key: str) -> list[int]:
    """Return the source rowid of each cause row, which `cause_rows` emits in the order of its input."""
    inputs = list(zip(deferred.column(key).to_pylist(), deferred.column("position").to_pylist()))
    rowids = deferred.column("rid").to_pylist()
    found = []
    index = 0
    for row in zip(rows.column(key).to_pylist(), rows.column("position").to_pylist()):
        while inputs[index] != row:
            index += 1
        found.append(rowids[index])
    return found
