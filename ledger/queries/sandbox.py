"""Read-only SQL typed by an analyst, run against the ledger inside a sandbox.

Three layers keep the query in its box:

1. Before anything runs, DuckDB's parser splits the text into statements.
   Exactly one statement is accepted, and only a query (SELECT, WITH, FROM,
   VALUES, DESCRIBE, SHOW, SUMMARIZE, PIVOT) or an EXPLAIN of one. COPY,
   ATTACH, INSTALL, LOAD, SET, PRAGMA, CALL, writes and the rest are rejected
   with `QueryRejected`, naming the statement type.
2. The query runs on `store.sandbox`, a private DuckDB instance with the ledger
   attached read-only, external access disabled and the configuration
   locked. A file-reading function such as ``read_csv('/etc/passwd')`` that
   passes step 1 fails there, and `run_query` reports it as `QueryRejected`.
3. A timer interrupts the query after `timeout` seconds (`QueryTimedOut`), and
   at most `row_cap` rows are fetched from DuckDB's streaming result.

The query can still read every table of the ledger, including the receiver's
``api_keys``, which stores SHA-256 digests of keys and never the keys. It can
also read the ledger's own file and write-ahead log through functions such as
``read_blob``, because DuckDB lets an instance read the files it has attached
even with external access disabled.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from ledger import store

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_ROW_CAP = 1_000
MAX_SQL_CHARS = 20_000
ALLOWED_STATEMENTS = ("SELECT", "EXPLAIN")
# DuckDB parses PIVOT into one statement of type MULTI. The type alone does not
# say what the parts are, so step 1 accepts MULTI only for text that starts with
# PIVOT or UNPIVOT, and the sandbox still rejects any part that is not a read.
_PIVOT_WORDS = ("pivot", "unpivot")

EXAMPLES: dict[str, str] = {
    "Savings and divergence rate by deployment": """\
SELECT deployment,
       count(*) AS submissions,
       sum(cost_savings) AS usd_saved,
       round(100.0 * count(*) FILTER (WHERE divergences_detected > 0) / count(*), 1) AS pct_with_divergence
FROM submissions
GROUP BY deployment
ORDER BY usd_saved DESC""",
    "Submissions per day, last 30 days": """\
SELECT date_trunc('day', submitted_at) AS day_utc,
       count(*) AS submissions,
       sum(divergences_detected) AS divergences
FROM submissions
WHERE submitted_at >= now() - INTERVAL 30 DAY
GROUP BY day_utc
ORDER BY day_utc""",
    "Most frequent diverging actions": """\
SELECT d.action, d.type, count(*) AS divergences, count(DISTINCT s.run_id) AS runs
FROM divergences AS d
JOIN submissions AS s USING (submission_id)
GROUP BY d.action, d.type
ORDER BY divergences DESC
LIMIT 20""",
    "Runs aborted by a divergence (strict mode)": """\
SELECT run_id, deployment, actions_replayed, actions_total, submitted_at
FROM submissions
WHERE status = 'failed' AND divergences_detected = 1 AND actions_replayed < actions_total
ORDER BY submitted_at DESC
LIMIT 100""",
    "Rejected records by reason": """\
SELECT reason, count(*) AS records
FROM rejected
GROUP BY reason
ORDER BY records DESC""",
    "Tables and columns of the ledger": """\
SELECT table_name, column_name, data_type
FROM information_schema.columns
WHERE table_schema = 'main'
ORDER BY table_name, ordinal_position""",
}


class SandboxError(Exception):
    """A query typed into the SQL box did not produce a result."""


class QueryRejected(SandboxError):
    """The query is not a single read, or it tried to reach files, the network or settings."""


class QueryTimedOut(SandboxError):
    """The query ran past the statement timeout and was interrupted."""


class QueryFailed(SandboxError):
    """DuckDB raised an error for the query: a syntax error, an unknown column, memory, and so on."""


@dataclass(frozen=True)
class QueryResult:
    """The first rows of a query's result, its column names and types, and whether rows were cut off."""

    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool
    row_cap: int
    seconds: float


def check_statement(sql: str) -> None:
    """Raise QueryRejected unless `sql` parses into exactly one read-only statement.

    Raises QueryFailed when the text does not parse. Parsing uses DuckDB's
    parser on a throwaway in-memory connection, so nothing of the query runs here.
    """
    if len(sql) > MAX_SQL_CHARS:
        raise QueryRejected(f"the query is {len(sql):,} characters long; the SQL box takes up to {MAX_SQL_CHARS:,}")
    parser = duckdb.connect(":memory:")
    try:
        statements = parser.extract_statements(sql)
    except duckdb.Error as error:
        raise QueryFailed(_first_line(error)) from None
    finally:
        parser.close()
    if not statements:
        raise QueryRejected("the SQL box is empty; type a SELECT query or pick an example")
    if len(statements) > 1:
        raise QueryRejected(
            f"the text contains {len(statements)} statements; the SQL box runs one query at a time, "
            "so remove the others or the semicolons between them"
        )
    kind = statements[0].type.name
    if kind in ALLOWED_STATEMENTS:
        return
    if kind == "MULTI" and sql.lstrip().lower().startswith(_PIVOT_WORDS):
        return
    raise QueryRejected(
        f"{_statement_word(kind)} statements are not allowed: the SQL box only reads the ledger, "
        "so it runs SELECT queries (also WITH, FROM, DESCRIBE, SHOW, SUMMARIZE) and EXPLAIN"
    )


def _statement_word(kind: str) -> str:
    words = {"LOAD": "INSTALL and LOAD", "VACUUM": "VACUUM and ANALYZE", "SET": "SET, RESET and USE"}
    return words.get(kind, kind.replace("_", " "))


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _explain(error: duckdb.Error, timeout: float, memory_limit: str) -> SandboxError:
    """Translate a DuckDB error raised inside the sandbox into what the analyst should do next."""
    text = _first_line(error)
    if isinstance(error, duckdb.InterruptException):
        return QueryTimedOut(
            f"the query ran longer than {timeout:g} s and was stopped; add a LIMIT, a WHERE on "
            "submitted_at, or aggregate with GROUP BY"
        )
    if isinstance(error, duckdb.PermissionException) or "disabled by configuration" in text:
        return QueryRejected(
            "the SQL box cannot read or write files, reach the network or load extensions; "
            f"query the ledger's tables instead (DuckDB said: {text})"
        )
    if "read-only mode" in text:
        return QueryRejected(f"the SQL box opens the ledger read-only, so nothing can be written ({text})")
    if "configuration has been locked" in text:
        return QueryRejected(f"settings cannot be changed in the SQL box ({text})")
    if isinstance(error, duckdb.OutOfMemoryException):
        return QueryFailed(
            f"the query needed more than the SQL box's {memory_limit} of memory; aggregate, filter or add a LIMIT"
        )
    return QueryFailed(text)


def run_query(
    ledger: Path,
    sql: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    row_cap: int = DEFAULT_ROW_CAP,
    memory_limit: str = store.SANDBOX_MEMORY_LIMIT,
) -> QueryResult:
    """Run one read-only query on the ledger and return its first `row_cap` rows.

    Raises QueryRejected for anything but a single read (see the module
    docstring), QueryTimedOut when it runs past `timeout` seconds, QueryFailed
    for any other DuckDB error, and store.LedgerMissing or store.LedgerBusy
    when the ledger cannot be opened.
    """
    if row_cap < 1:
        raise ValueError(f"row_cap must be 1 or more, got {row_cap}")
    check_statement(sql)
    started = time.perf_counter()
    with store.sandbox(ledger, memory_limit=memory_limit) as connection:
        timer = threading.Timer(timeout, connection.interrupt)
        timer.daemon = True
        timer.start()
        try:
            result = connection.execute(sql)
            description = result.description or []
            rows = result.fetchmany(row_cap + 1)
        except duckdb.Error as error:
            explained = _explain(error, timeout, memory_limit)
            log.info("sandbox query stopped: %s", explained)
            raise explained from None
        finally:
            timer.cancel()
    truncated = len(rows) > row_cap
    return QueryResult(
        columns=[column[0] for column in description],
        types=[str(column[1]) for column in description],
        rows=rows[:row_cap],
        truncated=truncated,
        row_cap=row_cap,
        seconds=time.perf_counter() - started,
    )
