"""The DuckDB ledger file: schema, migrations, connections, staged writes, the inbox.

Sharing: DuckDB lets one process hold a file for writing, and read-only opens
from other processes fail while it does. So every process opens the ledger for
one unit of work and closes it. Openers that find it busy retry with backoff;
a writer that stays locked out past its budget moves its staged batch into the
ledger's inbox folder (``<ledger>.inbox/``) with an atomic rename, and the next
writer merges the inbox in the same transaction as its own batch.

Writes are staged: an ingest validates records into a temporary DuckDB file
(`Stage`), then `merge_stages` copies the batch into the ledger in one
transaction with SQL, deduplicating against what is stored. The ledger is
therefore locked only for the merge, and a crash at any point leaves it as it
was before that ingest.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import multiprocessing
import os
import random
import re
import signal
import stat
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from ledger import causes
from ledger.store import lines as line_checks

log = logging.getLogger(__name__)

DEFAULT_LEDGER = "replay-ledger.duckdb"
LEDGER_ENV = "REPLAY_LEDGER_DB"
READ_BUDGET_SECONDS = 20.0
WRITE_BUDGET_SECONDS = 3.0
STAGE_MEMORY_LIMIT = "512MB"
LEDGER_MEMORY_LIMIT = "512MB"

SUBMISSION_COLUMNS = (
    ("submission_id", "VARCHAR NOT NULL"),
    ("platform_id", "VARCHAR"),
    ("content_hash", "VARCHAR NOT NULL"),
    ("run_id", "VARCHAR NOT NULL"),
    ("deployment", "VARCHAR NOT NULL"),
    ("status", "VARCHAR NOT NULL CHECK (status IN ('success', 'partial', 'failed'))"),
    ("actions_replayed", "BIGINT NOT NULL CHECK (actions_replayed >= 0)"),
    ("actions_total", "BIGINT NOT NULL CHECK (actions_total >= actions_replayed)"),
    ("divergences_detected", "BIGINT NOT NULL CHECK (divergences_detected >= 0)"),
    ("cost_savings", "DECIMAL(18, 6) NOT NULL CHECK (cost_savings >= 0)"),
    ("submitted_at", "TIMESTAMPTZ NOT NULL"),
    ("location", "VARCHAR"),
    ("flags", "VARCHAR[]"),
    ("extra", "JSON"),
)
DIVERGENCE_COLUMNS = (
    ("submission_id", "VARCHAR NOT NULL"),
    ("position", "INTEGER NOT NULL"),
    ("type", "VARCHAR NOT NULL"),
    ("action", "VARCHAR"),
    ("action_index", "BIGINT"),
    ("expected", "JSON"),
    ("actual", "JSON"),
    ("detail", "JSON NOT NULL"),
)
# The stage holds records before their ids exist: ids are computed from content at the merge.
STAGE_SUBMISSION_COLUMNS = (
    ("seq", "BIGINT NOT NULL"),
    ("file_index", "INTEGER NOT NULL"),
    ("platform_id", "VARCHAR"),
    ("run_id", "VARCHAR NOT NULL"),
    ("deployment", "VARCHAR NOT NULL"),
    ("status", "VARCHAR NOT NULL"),
    ("actions_replayed", "BIGINT NOT NULL"),
    ("actions_total", "BIGINT NOT NULL"),
    ("divergences_detected", "BIGINT NOT NULL"),
    ("cost_savings", "DECIMAL(18, 6) NOT NULL"),
    ("submitted_at", "TIMESTAMPTZ NOT NULL"),
    ("anchor", "VARCHAR"),
    ("location", "VARCHAR"),
    ("flags", "VARCHAR[]"),
    ("extra", "JSON"),
)
STAGE_DIVERGENCE_COLUMNS = (("seq", "BIGINT NOT NULL"),) + DIVERGENCE_COLUMNS[1:]
# One row per differing leaf of a divergence, as `ledger.causes.cause_rows` computes it.
# `ordinal` orders the differences of one divergence and `path` is "" for the whole value.
# `expected` and `actual` are the values at the path as JSON text cut to
# `causes.VALUE_CHARS` characters, null on the side where the key is missing.
CAUSE_COLUMNS = (
    ("submission_id", "VARCHAR NOT NULL"),
    ("position", "INTEGER NOT NULL"),
    ("ordinal", "INTEGER NOT NULL"),
    ("path", "VARCHAR NOT NULL"),
    ("cause", "VARCHAR NOT NULL"),
    ("expected", "VARCHAR"),
    ("actual", "VARCHAR"),
)
STAGE_CAUSE_COLUMNS = (("seq", "BIGINT NOT NULL"),) + CAUSE_COLUMNS[1:]
CLASSIFY_BATCH_ROWS = 20_000
# Staged batches with at least this many divergences are classified in a worker process.
CLASSIFY_IN_PROCESS_ROWS = 5_000
CLASSIFY_WORKERS = 2
CLASSIFY_NICENESS = 10
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
REJECTED_COLUMNS = (
    ("location", "VARCHAR NOT NULL"),
    ("field", "VARCHAR"),
    ("value", "VARCHAR"),
    ("reason", "VARCHAR NOT NULL"),
    ("record", "VARCHAR"),
)


def _columns(columns: tuple[tuple[str, str], ...]) -> str:
    return ",\n    ".join(f"{name} {kind}" for name, kind in columns)


# Rows of the SDK's action batches (POST /api/v1/ingest): one per recorded action. `received_at` increases strictly within a receiver process, so ordering by
# (received_at, position) gives the order in which the SDK recorded a run's actions.
RECORDED_ACTION_COLUMNS = (
    ("run_id", "VARCHAR NOT NULL"),
    ("entry_id", "VARCHAR"),
    ("batch_id", "VARCHAR NOT NULL"),
    ("position", "INTEGER NOT NULL"),
    ("deployment", "VARCHAR NOT NULL"),
    ("agent_id", "VARCHAR"),
    ("action", "VARCHAR"),
    ("outcome", "VARCHAR"),
    ("recorded_at", "TIMESTAMPTZ"),
    ("cost_usd", "DECIMAL(18, 6)"),
    ("duration_ms", "DOUBLE"),
    ("inputs", "JSON"),
    ("outputs", "JSON"),
    ("detail", "JSON"),
    ("flags", "VARCHAR[]"),
    ("received_at", "TIMESTAMPTZ NOT NULL"),
)
# An Idempotency-Key seen by the receiver, with the response its first post got.
IDEMPOTENCY_COLUMNS = (
    ("submission_id", "VARCHAR NOT NULL"),
    ("deployment", "VARCHAR NOT NULL"),
    ("idempotency_key", "VARCHAR NOT NULL"),
    ("request_hash", "VARCHAR NOT NULL"),
    ("response", "JSON NOT NULL"),
    ("created_at", "TIMESTAMPTZ NOT NULL"),
)

def _insert_arrow(connection: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
    """Append an Arrow table whose columns match `table`'s, in order, on this connection and in its transaction."""
    if rows.num_rows == 0:
        return
    connection.register("arrow_rows", rows)
    try:
        connection.execute(f"INSERT INTO {table} SELECT * FROM arrow_rows").fetchall()
    finally:
        connection.unregister("arrow_rows")


def _canonical_select(columns: tuple[tuple[str, str], ...]) -> str:
    """Select list that stages Arrow rows as `columns`: JSON in DuckDB's canonical text, money from micro-dollars.

    The SQL path of `ledger.store.lines` writes JSON values as DuckDB does, so
    rows from Python pass through json() to store the same text for the same value.
    """
    parts = []
    for name, kind in columns:
        if name == "cost_savings":
            parts.append("CAST(cost_micros AS DECIMAL(18, 0)) * CAST(0.000001 AS DECIMAL(7, 6))")
        elif kind.startswith("JSON"):
            parts.append(f"json({name})")
        else:
            parts.append(name)
    return ", ".join(parts)


def _start_classifier_worker(parent: int) -> None:
    """Prepare a classifying worker process: a lower priority, and an end when the ingest's process ends.

    A worker would otherwise outlive an ingest killed with SIGKILL, because
    it keeps both ends of the pipe it waits on open. Linux sends it SIGKILL when
    the thread that forked it ends (prctl PR_SET_PDEATHSIG). Elsewhere it
    stays until its next task fails.
    """
    os.nice(CLASSIFY_NICENESS)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def classify_divergences(
    connection: duckdb.DuckDBPyConnection, source: str, target: str, key: str, *, sql_fast_path: bool = False,
) -> int:
    """Classify the divergences of table `source` in batches and append their cause rows to `target`; return how many.

    `source` has the column `key` (``seq`` or ``submission_id``), ``position``,
    ``type``, ``expected`` and ``actual``. With `sql_fast_path`, DuckDB SQL
    classifies the divergences it can decide exactly (`cause_sql`) and
    `causes.cause_rows` the rest, which stores the same rows. Without it,
    batches are ranges of DuckDB's ``rowid`` of `CLASSIFY_BATCH_ROWS` rows,
    read into Arrow and classified in Python by `causes.cause_rows`.
    Everything runs on `connection`, so inside a transaction the rows land in
    that transaction.

    The SQL fast path is off by default: on divergences whose values differ
    from record to record, as real replays' do, it took as long as Python on
    2 cores and 55% more CPU time (`bench/causes.py`, docs/benchmarks.md).
    """
    from ledger.store import cause_sql

    # fetchall, not fetchone: DuckDB refuses connection.sql() while a result is still open.
    # Rows a transaction has not committed yet get rowids from 2**62 up, so the range starts at min(rowid).
    first, last = connection.execute(f"SELECT min(rowid), max(rowid) FROM {source}").fetchall()[0]
    if last is None:
        return 0
    if sql_fast_path:
        # Six Python batches a SQL batch: each SQL batch runs several statements, and 120,000
        # rows (the default) stay within one DuckDB row group and the stage's memory limit.
        batch_rows = 6 * CLASSIFY_BATCH_ROWS
        return cause_sql.classify_table(connection, source, target, key, first, last, batch_rows).rows
    stored = 0
    for low in range(first, last + 1, CLASSIFY_BATCH_ROWS):
        batch = connection.sql(
            f"SELECT {key}, position, type, expected::VARCHAR AS expected, actual::VARCHAR AS actual "
            f"FROM {source} WHERE rowid >= ? AND rowid < ?",
            params=[low, min(low + CLASSIFY_BATCH_ROWS, last + 1)],
        ).to_arrow_table()
        rows = causes.cause_rows(batch, key)
        _insert_arrow(connection, target, rows)
        stored += rows.num_rows
    return stored


def _backfill_causes(connection: duckdb.DuckDBPyConnection) -> None:
    """Migration step: classify every divergence already in the ledger."""
    stored = classify_divergences(connection, "divergences", "divergence_causes", "submission_id")
    log.info("classified the stored divergences into %d cause rows", stored)


# A migration step is SQL text, or a Python callable that gets the connection and runs
# inside the migration's transaction.
MigrationStep = str | Callable[[duckdb.DuckDBPyConnection], None]

# Ordered, recorded schema changes. A ledger created by an older release opens in a
# newer one by applying the versions it lacks, each in its own transaction.
MIGRATIONS: list[tuple[int, str, list[MigrationStep]]] = [
    (
        1,
        "submissions, divergences, deploys, ingest log, rejected records",
        [
            f"CREATE TABLE submissions (\n    {_columns(SUBMISSION_COLUMNS)},\n"
            "    ingest_id BIGINT NOT NULL,\n    ingested_at TIMESTAMPTZ NOT NULL\n)",
            f"CREATE TABLE divergences (\n    {_columns(DIVERGENCE_COLUMNS)}\n)",
            """CREATE TABLE deploys (
                deploy_id VARCHAR NOT NULL,
                deployment VARCHAR NOT NULL,
                version VARCHAR NOT NULL,
                deployed_at TIMESTAMPTZ NOT NULL,
                note VARCHAR NOT NULL DEFAULT '',
                origin VARCHAR NOT NULL,
                added_at TIMESTAMPTZ NOT NULL
            )""",
            """CREATE TABLE ingest_log (
                ingest_id BIGINT NOT NULL,
                started_at TIMESTAMPTZ NOT NULL,
                finished_at TIMESTAMPTZ NOT NULL,
                origin VARCHAR NOT NULL,
                sources VARCHAR[] NOT NULL,
                records_read BIGINT NOT NULL,
                ingested BIGINT NOT NULL,
                duplicates BIGINT NOT NULL,
                rejected BIGINT NOT NULL,
                report JSON
            )""",
            f"CREATE TABLE rejected (\n    ingest_id BIGINT NOT NULL,\n    {_columns(REJECTED_COLUMNS)}\n)",
            "CREATE SEQUENCE ingest_ids START 1",
            "CREATE INDEX submissions_run_id ON submissions (run_id)",
        ],
    ),
    (
        2,
        "receiver: api keys, recorded actions, idempotency keys, pull positions",
        [
            """CREATE TABLE api_keys (
                key_id VARCHAR NOT NULL,
                deployment VARCHAR NOT NULL,
                key_hash VARCHAR NOT NULL,
                label VARCHAR NOT NULL DEFAULT '',
                created_at TIMESTAMPTZ NOT NULL,
                revoked_at TIMESTAMPTZ
            )""",
            f"CREATE TABLE recorded_actions (\n    {_columns(RECORDED_ACTION_COLUMNS)}\n)",
            "CREATE INDEX recorded_actions_run_id ON recorded_actions (run_id)",
            f"CREATE TABLE idempotency_keys (\n    {_columns(IDEMPOTENCY_COLUMNS)}\n)",
            "CREATE INDEX idempotency_keys_submission_id ON idempotency_keys (submission_id)",
            """CREATE TABLE pull_positions (
                source VARCHAR NOT NULL,
                state JSON NOT NULL,
                updated_at TIMESTAMPTZ NOT NULL
            )""",
        ],
    ),
    (
        3,
        "divergence causes: one row per differing leaf, backfilled for stored divergences",
        [
            f"CREATE TABLE divergence_causes (\n    {_columns(CAUSE_COLUMNS)}\n)",
            _backfill_causes,
        ],
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


class LedgerBusy(Exception):
    """The ledger stayed locked by another process for longer than the retry budget."""


class LedgerMissing(Exception):
    """The ledger file does not exist, so there is nothing to read."""


class LedgerTooNew(Exception):
    """The ledger was written by a newer release whose schema this one does not know."""


class LedgerUnreadable(OSError):
    """The ledger path exists but cannot be opened as a ledger (another kind of file, a folder, no access).

    The message is ``path: reason; advice`` for the command line; `reason`
    alone is for the app, which gives its own advice.
    """

    def __init__(self, path: Path | str, reason: str, advice: str = "give another file with --db"):
        super().__init__(f"{path}: {reason}; {advice}")
        self.reason = reason


def ledger_path(explicit: str | os.PathLike | None = None) -> Path:
    """Return the ledger path: the explicit one, else $REPLAY_LEDGER_DB, else ./replay-ledger.duckdb."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(LEDGER_ENV) or DEFAULT_LEDGER)


def inbox_path(path: Path) -> Path:
    return path.with_name(path.name + ".inbox")


_QUOTED = re.compile(r'"[^"]*"')
# Phrases of DuckDB's errors for a file another connection has open. Matched without the quoted file
# name, so that a folder whose name contains one of them is not taken for a lock.
_BUSY_PHRASES = ("could not set lock", "conflicting lock", "different configuration", "file handle conflict")


def _is_busy(error: Exception) -> bool:
    """Return whether a DuckDB error means another connection has the file open, so a retry may succeed."""
    # "file handle conflict": another connection of this same process has the file
    # attached (the receiver's writer does so between its commits).
    text = _QUOTED.sub('""', str(error)).lower()
    return any(phrase in text for phrase in _BUSY_PHRASES)


# Every DuckDB database file has these bytes at this offset of its first header block.
_DUCKDB_MAGIC = b"DUCK"
_DUCKDB_MAGIC_OFFSET = 8


def check_ledger_file(path: Path) -> None:
    """Raise LedgerUnreadable when `path` exists and is not empty but is not a DuckDB database file.

    DuckDB opens an existing CSV, Parquet or JSON file as a temporary database
    that views it, so writes to such a "ledger" would succeed and then vanish.
    A path that does not exist, a folder or an empty file is left to DuckDB,
    which creates or rejects it.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise LedgerUnreadable(path, f"cannot be read ({error.strerror})") from error
    if stat.S_ISDIR(mode):
        return
    if not stat.S_ISREG(mode):
        # A FIFO or a device would block or never end when read.
        raise LedgerUnreadable(path, "is not a regular file", "give a ledger file with --db or REPLAY_LEDGER_DB")
    try:
        with path.open("rb") as handle:
            head = handle.read(_DUCKDB_MAGIC_OFFSET + len(_DUCKDB_MAGIC))
    except OSError as error:
        raise LedgerUnreadable(path, f"cannot be read ({error.strerror})") from error
    if head and head[_DUCKDB_MAGIC_OFFSET:] != _DUCKDB_MAGIC:
        raise LedgerUnreadable(
            path, f"is not a DuckDB ledger file (it starts with {_first_bytes(head)})",
            "give a ledger file with --db or REPLAY_LEDGER_DB, and ingest data files with `replay-ledger ingest`",
        )


def _first_bytes(head: bytes) -> str:
    """Return the first bytes of a file as readable text for an error message."""
    text = head[:_DUCKDB_MAGIC_OFFSET].decode("utf-8", "replace")
    return repr("".join(character if character.isprintable() else "?" for character in text))


_BUSY_ERRORS = (duckdb.IOException, duckdb.ConnectionException, duckdb.ResourceInUseException)
T = TypeVar("T")


def _retry_while_busy(attempt: Callable[[], T], busy_message: str, budget: float, *, first_delay: float = 0.005,
                      max_delay: float = 0.25) -> T:
    """Return what `attempt` returns, calling it again with growing, jittered pauses while the file is busy.

    Raises LedgerBusy with `busy_message` once `budget` seconds would pass,
    and any error that does not mean busy at once.
    """
    deadline = time.monotonic() + budget
    delay = first_delay
    while True:
        try:
            return attempt()
        except _BUSY_ERRORS as error:
            if not _is_busy(error):
                raise
            if time.monotonic() + delay > deadline:
                raise LedgerBusy(busy_message) from None
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, max_delay)


def _busy_message(path: Path, budget: float) -> str:
    return f"{path}: the ledger stayed locked by another process for {budget:.1f} s; try again shortly"


def _connect(path: Path, *, read_only: bool, budget: float, memory_limit: str) -> duckdb.DuckDBPyConnection:
    check_ledger_file(path)

    def attempt() -> duckdb.DuckDBPyConnection:
        connection = duckdb.connect(str(path), read_only=read_only, config={"memory_limit": memory_limit})
        # Every session works in UTC, so date functions on TIMESTAMPTZ do not depend on the host's zone.
        connection.execute("SET TimeZone = 'UTC'")
        return connection

    try:
        return _retry_while_busy(attempt, _busy_message(path, budget), budget)
    except duckdb.IOException as error:
        raise LedgerUnreadable(path, f"cannot be opened as a ledger ({error})") from error
    except (duckdb.ConnectionException, duckdb.ResourceInUseException):
        raise
    except duckdb.Error as error:
        # DuckDB raises its base Error for a file whose block checksums do not match.
        if "corrupt" in str(error).lower():
            raise LedgerUnreadable(
                path, f"is damaged ({error})", "restore it from a copy, or give another file with --db"
            ) from error
        raise LedgerUnreadable(path, f"cannot be opened as a ledger ({error})") from error


@contextmanager
def reading(path: Path, *, budget: float = READ_BUDGET_SECONDS) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the ledger read-only for one unit of work and close it afterwards.

    Raises LedgerMissing when the file does not exist, LedgerBusy when a writer
    keeps it locked past `budget` seconds.
    """
    if not path.exists():
        raise LedgerMissing(f"{path}: no ledger here yet; run `replay-ledger ingest` or `replay-ledger demo` first")
    connection = _connect(path, read_only=True, budget=budget, memory_limit=LEDGER_MEMORY_LIMIT)
    try:
        yield connection
    except duckdb.CatalogException:
        # A missing table: name the problem when the file is some other DuckDB database.
        if schema_version(connection) == 0:
            tables = _table_names(connection)
            if tables:
                raise _not_a_ledger(str(path), tables) from None
        raise
    finally:
        connection.close()


@contextmanager
def writing(path: Path, *, budget: float = WRITE_BUDGET_SECONDS) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the ledger for writing, creating and migrating it as needed, and close it afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = _connect(path, read_only=False, budget=budget, memory_limit=LEDGER_MEMORY_LIMIT)
    try:
        migrate(connection, str(path))
        yield connection
    finally:
        connection.close()


SANDBOX_MEMORY_LIMIT = "256MB"
SANDBOX_ALIAS = "ledger"


@contextmanager
def sandbox(path: Path, *, budget: float = READ_BUDGET_SECONDS,
            memory_limit: str = SANDBOX_MEMORY_LIMIT) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the ledger read-only for SQL typed by a user, in a DuckDB instance of its own, and close it afterwards.

    The ledger is attached READ_ONLY to a private in-memory database. Before
    the connection is returned, external access is disabled, so no file other
    than the ledger, no network and no extension install or load. Extension
    autoloading is off, and spilling to disk is off, so a query past
    `memory_limit` fails. Last, the configuration is locked, so no SET or
    PRAGMA can loosen any of it. The private instance also keeps these
    settings away from the app's other connections, because DuckDB refuses to
    open one file in one process with two configurations.

    Raises LedgerMissing when the file does not exist, LedgerBusy when a
    writer keeps it locked past `budget` seconds.
    """
    if not path.exists():
        raise LedgerMissing(f"{path}: no ledger here yet; run `replay-ledger ingest` or `replay-ledger demo` first")
    check_ledger_file(path)
    connection = duckdb.connect(":memory:", config={
        "memory_limit": memory_limit,
        "temp_directory": "",
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
    })
    try:
        _retry_while_busy(
            lambda: connection.execute(f"ATTACH '{_quote(path)}' AS {SANDBOX_ALIAS} (READ_ONLY)"),
            _busy_message(path, budget), budget,
        )
        connection.execute(f"USE {SANDBOX_ALIAS}")
        connection.execute("SET TimeZone = 'UTC'")
        connection.execute("SET enable_external_access = false")
        connection.execute("SET allow_extension_repositories = 'forbidden'")
        connection.execute("SET lock_configuration = true")
        yield connection
    finally:
        connection.close()


def schema_version(connection: duckdb.DuckDBPyConnection) -> int:
    exists = connection.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
    ).fetchone()[0]
    if not exists:
        return 0
    return connection.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]


def _table_names(connection: duckdb.DuckDBPyConnection) -> list[str]:
    """Return the names of the tables in the connection's current database, sorted."""
    return [row[0] for row in connection.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() ORDER BY table_name"
    ).fetchall()]


def _not_a_ledger(name: str, tables: list[str]) -> LedgerUnreadable:
    listed = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
    return LedgerUnreadable(
        name, f"is a DuckDB database but not a ledger (it has the tables {listed} and no schema_migrations)",
        "give a ledger file, or a new file name, with --db",
    )


def migrate(connection: duckdb.DuckDBPyConnection, name: str = "the ledger file") -> int:
    """Apply the migrations the ledger lacks, each in one transaction; return the schema version.

    Raises LedgerUnreadable for a database that has tables but no schema
    version, because it belongs to something else; `name` names it in the message.
    """
    current = schema_version(connection)
    if current == 0:
        tables = _table_names(connection)
        if tables:
            raise _not_a_ledger(name, tables)
    if current > SCHEMA_VERSION:
        raise LedgerTooNew(
            f"the ledger has schema version {current}, this release knows up to {SCHEMA_VERSION}; upgrade replay-ledger"
        )
    if current == 0:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER NOT NULL, "
            "applied_at TIMESTAMPTZ NOT NULL, description VARCHAR NOT NULL)"
        )
    for version, description, statements in MIGRATIONS:
        if version <= current:
            continue
        connection.execute("BEGIN TRANSACTION")
        try:
            for statement in statements:
                if callable(statement):
                    statement(connection)
                else:
                    connection.execute(statement)
            connection.execute(
                "INSERT INTO schema_migrations VALUES (?, now(), ?)", [version, description]
            )
            connection.execute("COMMIT")
        except Exception:
            connection.execute("ROLLBACK")
            raise
        log.info("ledger migrated to schema version %s: %s", version, description)
    return SCHEMA_VERSION


def data_version(path: Path) -> tuple:
    """Return a cheap token that changes whenever the ledger or its inbox changes (file metadata only)."""
    token = []
    for candidate in (path, path.with_name(path.name + ".wal"), inbox_path(path)):
        try:
            info = candidate.stat()
            token.append((info.st_mtime_ns, info.st_size))
        except FileNotFoundError:
            token.append(None)
    return tuple(token)


# ---------------------------------------------------------------------------
# Staging


@dataclass
class MergeCounts:
    """What one merge stored, per source file index: ingested and duplicate submissions."""

    ingest_id: int
    ingested: dict[int, int]
    duplicates: dict[int, int]
    inbox_batches: int = 0


STAGE_PREFIX = "replay-ledger-stage-"


def _remove_abandoned_stages(folder: Path) -> None:
    """Remove stage folders left by processes that died (killed mid-ingest); their names carry the pid."""
    for stage in folder.glob(f"{STAGE_PREFIX}*"):
        pid_text = stage.name[len(STAGE_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or process_alive(int(pid_text)):
            continue
        try:
            for child in stage.iterdir():
                child.unlink(missing_ok=True)
            stage.rmdir()
        except OSError:
            continue


def process_alive(pid: int) -> bool:
    """Return whether a process with this pid exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Stage:
    """A temporary DuckDB file that collects one ingest's validated records before the merge."""

    def __init__(self, directory: Path | None = None):
        _remove_abandoned_stages(Path(directory or tempfile.gettempdir()))
        folder = tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-", dir=directory)
        self.path = Path(folder) / "stage.duckdb"
        self.connection = duckdb.connect(str(self.path), config={"memory_limit": STAGE_MEMORY_LIMIT})
        self._classifier: ProcessPoolExecutor | None = None
        self._classifying: list[Future] = []
        self._classified_below = 0
        self._classified_rows = 0
        # Zone-less timestamps are cast in the session's zone, and the documented rule is UTC.
        self.connection.execute("SET TimeZone = 'UTC'")
        # Nothing reads the stage in insertion order (the merge orders by seq), so DuckDB may
        # write in parallel without keeping the order of rows within one statement.
        self.connection.execute("SET preserve_insertion_order = false")
        self.connection.execute(f"CREATE TABLE submissions ({_columns(STAGE_SUBMISSION_COLUMNS)})")
        self.connection.execute(f"CREATE TABLE divergences ({_columns(STAGE_DIVERGENCE_COLUMNS)})")
        self.connection.execute(f"CREATE TABLE divergence_causes ({_columns(STAGE_CAUSE_COLUMNS)})")
        self.connection.execute(f"CREATE TABLE rejected (file_index INTEGER NOT NULL, {_columns(REJECTED_COLUMNS)})")
        self.connection.execute(
            "CREATE TABLE batch (origin VARCHAR, sources VARCHAR[], started_at TIMESTAMPTZ, report JSON)"
        )
        self.connection.execute("CREATE TABLE dropped_files (file_index INTEGER NOT NULL)")
        self.connection.execute(f"CREATE TABLE {STAGE_FORMAT_TABLE} (written_by VARCHAR)")

    def append(self, table: str, batch: pa.Table) -> None:
        """Append an Arrow table whose columns match the staged table's, in order."""
        self.connection.register("arrow_batch", batch)
        try:
            self.connection.execute(f"INSERT INTO {table} SELECT * FROM arrow_batch")
        finally:
            self.connection.unregister("arrow_batch")

    def append_submissions(self, batch: pa.Table) -> None:
        """Append submissions whose money column is ``cost_micros`` (int64) instead of ``cost_savings``."""
        self._append_canonical("submissions", STAGE_SUBMISSION_COLUMNS, batch)

    def append_divergences(self, batch: pa.Table) -> None:
        """Append divergences whose JSON columns contain any valid JSON text; they are stored in canonical text."""
        self._append_canonical("divergences", STAGE_DIVERGENCE_COLUMNS, batch)

    def _append_canonical(self, table: str, columns: tuple[tuple[str, str], ...], batch: pa.Table) -> None:
        self.connection.register("arrow_batch", batch)
        try:
            self.connection.execute(f"INSERT INTO {table} SELECT {_canonical_select(columns)} FROM arrow_batch")
        finally:
            self.connection.unregister("arrow_batch")

    def check_line_batch(
        self, lines: pa.Table, file_index: int, name: str, deployment: str | None, first_seq: int
    ) -> tuple[int, list[tuple[int, str]], list[int]]:
        """Validate a batch of a file's raw JSON Lines in SQL and stage the clean ones; see `lines.check_batch`."""
        return line_checks.check_batch(self.connection, lines, file_index, name, deployment, first_seq)

    def classify_new_divergences(self) -> None:
        """Classify the divergences staged since the last call, in a worker process for a large batch.

        Batches of `CLASSIFY_IN_PROCESS_ROWS` or more go to the workers. A
        worker runs `causes.cause_rows` while this process validates and
        stages the next batch, so the two share the cores without sharing the
        interpreter lock. Finished batches are stored at the next call.
        Smaller batches, until a worker exists, are classified here at once.
        Call `finish_classifying` before `seal`.
        """
        self._store_classified(wait=False)
        top = self.connection.execute("SELECT max(rowid) FROM divergences").fetchall()[0][0]
        if top is None or top < self._classified_below:
            return
        low, self._classified_below = self._classified_below, top + 1
        batch = self.connection.sql(
            "SELECT seq, position, type, expected::VARCHAR AS expected, actual::VARCHAR AS actual "
            "FROM divergences WHERE rowid BETWEEN ? AND ?",
            params=[low, top],
        ).to_arrow_table()
        if self._classifier is None and batch.num_rows < CLASSIFY_IN_PROCESS_ROWS:
            rows = causes.cause_rows(batch, "seq")
            _insert_arrow(self.connection, "divergence_causes", rows)
            self._classified_rows += rows.num_rows
            return
        if self._classifier is None:
            # fork, not spawn: the worker needs no fresh interpreter, and spawn would import
            # the main module of the app or command again. The workers run at a lower
            # priority, so they take the cores the staging leaves idle.
            self._classifier = ProcessPoolExecutor(
                max_workers=CLASSIFY_WORKERS, mp_context=multiprocessing.get_context("fork"),
                initializer=_start_classifier_worker, initargs=(os.getpid(),),
            )
        self._classifying.append(self._classifier.submit(causes.cause_rows, batch, "seq"))

    def _store_classified(self, *, wait: bool) -> None:
        """Store the cause rows of the worker's finished batches, in order; with `wait`, of every batch."""
        while self._classifying and (wait or self._classifying[0].done()):
            rows = self._classifying.pop(0).result()
            _insert_arrow(self.connection, "divergence_causes", rows)
            self._classified_rows += rows.num_rows

    def finish_classifying(self) -> int:
        """Classify what is left, store every batch's cause rows and return how many this stage has.

        Raises the worker's error, if any (a worker killed by the system raises BrokenProcessPool).
        """
        try:
            self.classify_new_divergences()
            self._store_classified(wait=True)
            return self._classified_rows
        finally:
            self._stop_classifier()

    def _stop_classifier(self) -> None:
        if self._classifier is not None:
            self._classifier.shutdown(wait=True, cancel_futures=True)
        self._classifier = None
        self._classifying = []

    def drop_file(self, file_index: int) -> None:
        """Keep a file's records out of the merge (strict mode); its rejections stay."""
        self.connection.execute("INSERT INTO dropped_files VALUES (?)", [file_index])

    def describe(self, origin: str, sources: list[str], started_at: datetime, report_json: str) -> None:
        self.connection.execute("DELETE FROM batch")
        self.connection.execute("INSERT INTO batch VALUES (?, ?, ?, ?)", [origin, sources, started_at, report_json])

    def seal(self) -> Path:
        """Flush the stage to disk durably and close it; return its file."""
        self.connection.execute("CHECKPOINT")
        self.connection.close()
        fsync_path(self.path)
        return self.path

    def discard(self) -> None:
        self._stop_classifier()
        try:
            self.connection.close()
        except duckdb.Error:
            pass
        _remove_tree(self.path.parent)


def fsync_path(path: Path) -> None:
    """Flush a file or a folder (its entries, after a create or rename) to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_tree(folder: Path) -> None:
    for child in folder.iterdir():
        child.unlink(missing_ok=True)
    folder.rmdir()


def move_to_inbox(stage_file: Path, ledger: Path) -> Path:
    """Move a sealed stage into the ledger's inbox with an atomic rename, durably."""
    inbox = inbox_path(ledger)
    inbox.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.duckdb"
    temporary = inbox / f".{name}.part"
    # The stage may sit on another file system, so copy, fsync, then rename inside the inbox.
    with stage_file.open("rb") as source, temporary.open("wb") as target:
        while chunk := source.read(1 << 20):
            target.write(chunk)
        target.flush()
        os.fsync(target.fileno())
    final = inbox / name
    os.replace(temporary, final)
    fsync_path(inbox)
    _remove_tree(stage_file.parent)
    log.warning("ledger %s busy, batch queued in its inbox as %s", ledger, final.name)
    return final


def inbox_batches(ledger: Path) -> list[Path]:
    inbox = inbox_path(ledger)
    if not inbox.is_dir():
        return []
    return sorted(path for path in inbox.glob("*.duckdb") if not path.name.startswith("."))


# Identity of a staged record. A submission's id is the platform's id when it has one,
# else "sha256:" and the first 32 hex digits of a hash of its content: run, status,
# counts, savings, time (or, for a record without a timestamp, its file name) and
# every divergence as canonical JSON. Two rows with the same content hash are one
# submission unless both carry different platform ids.
_INCOMING_SQL = """
CREATE OR REPLACE TEMP TABLE incoming AS
WITH divergence_texts AS (
    SELECT seq,
           string_agg(concat_ws(chr(31), coalesce({json}(expected)::VARCHAR, '-'),
                                coalesce({json}(actual)::VARCHAR, '-'), {json}(detail)::VARCHAR),
                      chr(30) ORDER BY position) AS text
    FROM {stage}.divergences
    GROUP BY seq
), hashed AS (
    SELECT s.seq, s.file_index, s.platform_id,
           left(sha256(concat_ws(chr(31), s.run_id, s.status, s.actions_replayed, s.actions_total,
                                 s.divergences_detected, s.cost_savings,
                                 CASE WHEN s.anchor IS NULL THEN epoch_us(s.submitted_at)::VARCHAR
                                      ELSE 'file:' || s.anchor END,
                                 coalesce(t.text, ''))), 32) AS content_hash
    FROM {stage}.submissions AS s
    LEFT JOIN divergence_texts AS t USING (seq)
    WHERE s.file_index NOT IN (SELECT file_index FROM {stage}.dropped_files)
)
SELECT h.*,
       coalesce(h.platform_id, 'sha256:' || h.content_hash) AS submission_id,
       row_number() OVER (PARTITION BY coalesce(h.platform_id, 'sha256:' || h.content_hash) ORDER BY h.seq) AS nth_id,
       row_number() OVER (PARTITION BY h.content_hash ORDER BY h.platform_id IS NULL, h.seq) AS nth_content,
       count(h.platform_id) OVER (PARTITION BY h.content_hash) AS platform_ids
FROM hashed AS h;
"""
_FLAG_DUPLICATES_SQL = """
CREATE OR REPLACE TEMP TABLE incoming_flagged AS
SELECT i.*,
       (i.nth_id > 1
        OR (i.nth_content > 1 AND (i.platform_id IS NULL OR i.platform_ids <= 1))
        OR i.submission_id IN (SELECT submission_id FROM submissions)
        OR EXISTS (SELECT 1 FROM submissions AS l WHERE l.content_hash = i.content_hash
                   AND (l.platform_id IS NULL OR i.platform_id IS NULL))) AS duplicate
FROM incoming AS i;
"""
_MERGE_SQL = _INCOMING_SQL + _FLAG_DUPLICATES_SQL
# A stage written by this release stores every JSON value in DuckDB's canonical text (marked by
# this table). Older inbox batches may not, so the merge rewrites their values with json().
STAGE_FORMAT_TABLE = "canonical_json"


def _incoming_sql(stage: str, canonical: bool) -> str:
    return _MERGE_SQL.format(stage=stage, json="" if canonical else "json")


def _kept_rows(stage: str, identities: str) -> str:
    """Return a subquery of the staged submissions of `stage` joined to the kept rows of `identities` by seq."""
    return (
        f"(SELECT s.*, k.submission_id, k.content_hash FROM {stage}.submissions AS s "
        f"JOIN {identities} AS k USING (seq))"
    )


def _merge_one(connection: duckdb.DuckDBPyConnection, stage_file: Path, ingest_id: int) -> tuple[dict, dict]:
    alias = "stage_" + hashlib.sha1(str(stage_file).encode()).hexdigest()[:10]
    connection.execute(f"ATTACH '{_quote(stage_file)}' AS {alias} (READ_ONLY)")
    try:
        canonical = connection.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?", [alias, STAGE_FORMAT_TABLE]
        ).fetchall()[0][0] > 0
        connection.execute(_incoming_sql(alias, canonical))
        kept = _kept_rows(alias, "(SELECT seq, submission_id, content_hash FROM incoming_flagged WHERE NOT duplicate)")
        _insert_submissions(connection, kept, f"{alias}.divergences", ingest_id, canonical=canonical)
        _merge_causes(connection, alias)
        rejected_names = ", ".join(name for name, _ in REJECTED_COLUMNS)
        connection.execute(
            f"INSERT INTO rejected SELECT ?, {rejected_names} FROM {alias}.rejected", [ingest_id]
        )
        rows = connection.execute(
            "SELECT file_index, count(*) FILTER (WHERE NOT duplicate), count(*) FILTER (WHERE duplicate) "
            "FROM incoming_flagged GROUP BY file_index"
        ).fetchall()
        batch = connection.execute(f"SELECT origin, sources, started_at, report FROM {alias}.batch").fetchone()
        counts = connection.execute(
            f"SELECT (SELECT count(*) FROM {alias}.submissions) + (SELECT count(*) FROM {alias}.rejected), "
            f"(SELECT count(*) FROM {alias}.rejected)"
        ).fetchone()
        ingested = {file_index: kept for file_index, kept, _ in rows}
        duplicates = {file_index: dup for file_index, _, dup in rows}
        if batch is not None:
            origin, sources, started_at, report = batch
            connection.execute(
                "INSERT INTO ingest_log VALUES (?, ?, now(), ?, ?, ?, ?, ?, ?, ?)",
                [ingest_id, started_at, origin, sources, counts[0], sum(ingested.values()),
                 sum(duplicates.values()), counts[1], report],
            )
        return ingested, duplicates
    finally:
        connection.execute("DROP TABLE IF EXISTS incoming")
        connection.execute("DROP TABLE IF EXISTS incoming_flagged")
        connection.execute(f"DETACH {alias}")


def _insert_submissions(
    connection: duckdb.DuckDBPyConnection, kept: str, divergences: str, ingest_id: int, *, canonical: bool
) -> None:
    """Insert the submissions of `kept` under `ingest_id`, and their divergences from the staged `divergences`.

    `kept` is a table or subquery with the stage's columns plus `submission_id`
    and `content_hash`; divergences join it on `seq`. With `canonical` False
    the JSON values are rewritten in canonical text on the way.
    """
    names = ", ".join(name for name, _ in SUBMISSION_COLUMNS)
    connection.execute(
        f"INSERT INTO submissions ({names}, ingest_id, ingested_at) SELECT {names}, ?, now() FROM {kept} ORDER BY seq",
        [ingest_id],
    )
    # json() rewrites JSON text in one canonical form, so a value stores the same text
    # whichever path validated it.
    divergence_names = ", ".join(
        f"json(d.{name})" if kind.startswith("JSON") and not canonical else f"d.{name}"
        for name, kind in DIVERGENCE_COLUMNS[1:]
    )
    connection.execute(
        f"INSERT INTO divergences SELECT kept.submission_id, {divergence_names} FROM {divergences} AS d "
        f"JOIN {kept} AS kept USING (seq) ORDER BY kept.seq, d.position"
    )


def _merge_causes(connection: duckdb.DuckDBPyConnection, alias: str) -> None:
    """Copy the staged cause rows of the kept submissions, mapping seq to submission id.

    An inbox batch written before stages held causes has no such table; its
    kept divergences are classified here instead, inside the merge's transaction.
    """
    kept = "(SELECT seq, submission_id FROM incoming_flagged WHERE NOT duplicate) AS kept"
    present = connection.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = 'divergence_causes'", [alias]
    ).fetchall()[0][0]
    if present:
        names = ", ".join(f"c.{name}" for name, _ in CAUSE_COLUMNS[1:])
        connection.execute(
            f"INSERT INTO divergence_causes SELECT kept.submission_id, {names} FROM {alias}.divergence_causes AS c "
            f"JOIN {kept} USING (seq) ORDER BY kept.seq, c.position, c.ordinal"
        )
        return
    connection.execute(
        f"CREATE OR REPLACE TEMP TABLE kept_divergences AS SELECT kept.submission_id, d.position, d.type, "
        f"d.expected, d.actual FROM {alias}.divergences AS d JOIN {kept} USING (seq) ORDER BY kept.seq, d.position"
    )
    try:
        classify_divergences(connection, "kept_divergences", "divergence_causes", "submission_id")
    finally:
        connection.execute("DROP TABLE IF EXISTS kept_divergences")


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


def merge_stages(ledger: Path, stage_file: Path | None, *, budget: float = WRITE_BUDGET_SECONDS) -> MergeCounts | None:
    """Merge a sealed stage and every inbox batch into the ledger in one transaction.

    Returns the counts of `stage_file` (None when only the inbox was drained and it
    was empty). Raises LedgerBusy when the ledger stays locked past `budget`; the
    caller then moves the stage to the inbox with `move_to_inbox`.
    """
    with writing(ledger, budget=budget) as connection:
        queued = inbox_batches(ledger)
        if stage_file is None and not queued:
            return None
        connection.execute("BEGIN TRANSACTION")
        try:
            for batch_file in queued:
                queued_id = connection.execute("SELECT nextval('ingest_ids')").fetchone()[0]
                _merge_one(connection, batch_file, queued_id)
            result = None
            if stage_file is not None:
                ingest_id = connection.execute("SELECT nextval('ingest_ids')").fetchone()[0]
                ingested, duplicates = _merge_one(connection, stage_file, ingest_id)
                result = MergeCounts(ingest_id, ingested, duplicates, len(queued))
            connection.execute("COMMIT")
        except Exception:
            connection.execute("ROLLBACK")
            raise
    # The batches are in the ledger now. A crash before these removals only means the
    # next writer merges them again, and deduplication makes that a no-op.
    for batch_file in queued:
        batch_file.unlink(missing_ok=True)
    if queued:
        log.info("merged %d inbox batches into %s", len(queued), ledger)
    return result or MergeCounts(0, {}, {}, len(queued))


def drain_inbox(ledger: Path, *, budget: float = WRITE_BUDGET_SECONDS) -> int:
    """Merge the ledger's inbox, if it holds anything; return how many batches were merged."""
    if not inbox_batches(ledger):
        return 0
    result = merge_stages(ledger, None, budget=budget)
    return 0 if result is None else result.inbox_batches


# ---------------------------------------------------------------------------
# Deploy markers


def deploy_id(deployment: str, version: str, deployed_at: datetime) -> str:
    key = f"{deployment}\x00{version}\x00{deployed_at.astimezone(timezone.utc).isoformat()}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def add_deploys(ledger: Path, markers: list[dict[str, Any]], origin: str) -> tuple[int, int]:
    """Store deploy markers (dicts with deployment, version, deployed_at, note); return (added, already present)."""
    rows = [
        (deploy_id(m["deployment"], m["version"], m["deployed_at"]), m["deployment"], m["version"],
         m["deployed_at"], m.get("note") or "", origin)
        for m in markers
    ]
    with writing(ledger) as connection:
        connection.execute("BEGIN TRANSACTION")
        before = connection.execute("SELECT count(*) FROM deploys").fetchone()[0]
        connection.execute(
            "CREATE OR REPLACE TEMP TABLE new_deploys (deploy_id VARCHAR, deployment VARCHAR, version VARCHAR, "
            "deployed_at TIMESTAMPTZ, note VARCHAR, origin VARCHAR)"
        )
        if rows:
            connection.executemany("INSERT INTO new_deploys VALUES (?, ?, ?, ?, ?, ?)", rows)
        connection.execute(
            "INSERT INTO deploys SELECT DISTINCT ON (deploy_id) deploy_id, deployment, version, deployed_at, note, "
            "origin, now() FROM new_deploys WHERE deploy_id NOT IN (SELECT deploy_id FROM deploys)"
        )
        after = connection.execute("SELECT count(*) FROM deploys").fetchone()[0]
        connection.execute("COMMIT")
        connection.execute("DROP TABLE new_deploys")
    return after - before, len(rows) - (after - before)


def create_empty(ledger: Path) -> None:
    """Create the ledger file with the current schema, if it does not exist yet."""
    with writing(ledger):
        pass


def upgrade(ledger: Path, *, budget: float = WRITE_BUDGET_SECONDS) -> int:
    """Apply the migrations an existing ledger lacks and return its schema version.

    Raises LedgerMissing when there is no ledger at `ledger`, LedgerBusy when
    another writer keeps it locked past `budget` seconds.
    """
    if not ledger.exists():
        raise LedgerMissing(f"{ledger}: no ledger here yet; run `replay-ledger ingest` or `replay-ledger demo` first")
    with writing(ledger, budget=budget) as connection:
        return schema_version(connection)


# ---------------------------------------------------------------------------
# Receiver: API keys, the batching writer's unit of work, recorded actions, pull positions


def add_api_key(ledger: Path, key_id: str, deployment: str, key_hash: str, label: str) -> None:
    """Store a new API key's digest; the key itself is never stored."""
    with writing(ledger) as connection:
        connection.execute(
            "INSERT INTO api_keys VALUES (?, ?, ?, ?, now(), NULL)", [key_id, deployment, key_hash, label]
        )


def read_api_keys(connection: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Return (key_id, deployment, key_hash, label, created_at, revoked_at) of every key, oldest first."""
    return connection.execute(
        "SELECT key_id, deployment, key_hash, label, created_at, revoked_at FROM api_keys ORDER BY created_at, key_id"
    ).fetchall()


def api_keys(ledger: Path, *, budget: float = READ_BUDGET_SECONDS) -> list[tuple]:
    """Return every stored key as `read_api_keys` does; none for a missing or older ledger."""
    if not ledger.exists():
        return []
    with reading(ledger, budget=budget) as connection:
        if schema_version(connection) < 2:
            return []
        return read_api_keys(connection)


def revoke_api_key(ledger: Path, key_id: str) -> bool:
    """Mark a key revoked; return False when no active key has that id."""
    with writing(ledger) as connection:
        revoked = connection.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE key_id = ? AND revoked_at IS NULL RETURNING key_id", [key_id]
        ).fetchall()
    return bool(revoked)


RECEIVER_STAGE_TABLES = (
    "submissions", "divergences", "divergence_causes", "dropped_files", "recorded_actions", "idempotency_keys",
)
RECEIVER_ATTACH_MAX_DELAY = 0.05


def receiver_connection() -> duckdb.DuckDBPyConnection:
    """Open the receiver writer's private in-memory database, holding the stage tables of one commit.

    The stage tables have the layout of `Stage`, so the same SQL computes ids and
    content hashes for posts as for files. The ledger itself is attached to this
    connection only for each unit of work (`attached`), which costs about a tenth
    of opening it anew.
    """
    connection = duckdb.connect(":memory:", config={"memory_limit": STAGE_MEMORY_LIMIT})
    connection.execute("SET TimeZone = 'UTC'")
    connection.execute(f"CREATE TABLE submissions ({_columns(STAGE_SUBMISSION_COLUMNS)})")
    connection.execute(f"CREATE TABLE divergences ({_columns(STAGE_DIVERGENCE_COLUMNS)})")
    connection.execute(f"CREATE TABLE divergence_causes ({_columns(STAGE_CAUSE_COLUMNS)})")
    connection.execute("CREATE TABLE dropped_files (file_index INTEGER NOT NULL)")
    connection.execute(f"CREATE TABLE recorded_actions ({_columns(RECORDED_ACTION_COLUMNS)})")
    connection.execute(f"CREATE TABLE idempotency_keys ({_columns(IDEMPOTENCY_COLUMNS)})")
    return connection


def stage_receiver_rows(connection: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
    """Append an Arrow table, whose columns match the stage table's in order, to a receiver stage table.

    For ``submissions`` the money column is ``cost_micros`` (int64), as for `Stage.append_submissions`.
    Staged ``divergences`` are classified at once, and their cause rows go into ``divergence_causes``.
    """
    if table not in RECEIVER_STAGE_TABLES:
        raise ValueError(f"unknown receiver stage table {table!r}")
    select = "*"
    if table == "submissions":
        select = _canonical_select(STAGE_SUBMISSION_COLUMNS)
    elif table == "divergences":
        select = _canonical_select(STAGE_DIVERGENCE_COLUMNS)
    # A cursor of its own: DuckDB refuses register() on a connection with an unfinished result.
    with connection.cursor() as cursor:
        cursor.register("receiver_rows", rows)
        cursor.execute(f"INSERT INTO memory.main.{table} SELECT {select} FROM receiver_rows").fetchall()
        cursor.unregister("receiver_rows")
        if table == "divergences":
            cursor.register("receiver_causes", causes.cause_rows(rows, "seq"))
            cursor.execute("INSERT INTO memory.main.divergence_causes SELECT * FROM receiver_causes").fetchall()
            cursor.unregister("receiver_causes")


def clear_receiver_stage(connection: duckdb.DuckDBPyConnection) -> None:
    for table in RECEIVER_STAGE_TABLES:
        connection.execute(f"DELETE FROM memory.main.{table}").fetchall()


@contextmanager
def attached(
    connection: duckdb.DuckDBPyConnection, ledger: Path, *, budget: float = WRITE_BUDGET_SECONDS, read_only: bool = False
) -> Iterator[None]:
    """Attach the ledger to a `receiver_connection` as its default catalog, then detach it.

    Read-write attaches migrate the ledger first. Raises LedgerBusy when another
    process (or another connection of this one) keeps the file past `budget` seconds.
    """
    ledger.parent.mkdir(parents=True, exist_ok=True)
    check_ledger_file(ledger)
    mode = " (READ_ONLY)" if read_only else ""
    _retry_while_busy(
        lambda: connection.execute(f"ATTACH '{_quote(ledger)}' AS ledger{mode}"),
        f"{ledger}: the ledger stayed locked for {budget:.1f} s", budget,
        first_delay=0.002, max_delay=RECEIVER_ATTACH_MAX_DELAY,
    )
    try:
        connection.execute("USE ledger")
        if not read_only:
            migrate(connection, str(ledger))
        yield
    finally:
        connection.execute("USE memory")
        connection.execute("DETACH ledger")


def find_idempotency_keys(connection: duckdb.DuckDBPyConnection, submission_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Return {submission id: (request hash, stored response JSON)} for ids already claimed by an Idempotency-Key."""
    if not submission_ids:
        return {}
    marks = ", ".join("?" for _ in submission_ids)
    rows = connection.execute(
        f"SELECT submission_id, request_hash, response FROM idempotency_keys WHERE submission_id IN ({marks})",
        submission_ids,
    ).fetchall()
    return {submission_id: (request_hash, response) for submission_id, request_hash, response in rows}


def idempotency_keys_of(ledger: Path, submission_ids: list[str], *, budget: float = READ_BUDGET_SECONDS) -> dict[str, tuple[str, str]]:
    """Return `find_idempotency_keys` of a ledger opened read-only for it; none for a missing or older ledger."""
    if not ledger.exists():
        return {}
    with reading(ledger, budget=budget) as connection:
        if schema_version(connection) < 2:
            return {}
        return find_idempotency_keys(connection, submission_ids)


def existing_submission_ids(connection: duckdb.DuckDBPyConnection, submission_ids: list[str]) -> set[str]:
    """Return which of the ids the ledger already stores (a scan; meant for the few ids of a recovered journal)."""
    if not submission_ids:
        return set()
    rows = connection.execute(
        "SELECT submission_id FROM submissions WHERE submission_id IN (SELECT unnest(?))", [submission_ids]
    ).fetchall()
    return {row[0] for row in rows}


def recorded_entry_ids(connection: duckdb.DuckDBPyConnection, run_id: str) -> set[str]:
    """Return the SDK entry ids already stored for a run's recorded actions."""
    rows = connection.execute(
        "SELECT entry_id FROM recorded_actions WHERE run_id = ? AND entry_id IS NOT NULL", [run_id]
    ).fetchall()
    return {row[0] for row in rows}


@dataclass
class ReceiverCommit:
    """The counts of one receiver commit, and the ingest log row they were added to."""

    ingest_id: int
    submissions: int
    recorded_actions: int


def commit_receiver_stage(
    connection: duckdb.DuckDBPyConnection, ingest_id: int | None, *, duplicates: int = 0, keys: int = 0
) -> ReceiverCommit:
    """Move the staged posts and recorded actions into the attached ledger in one transaction.

    Staged rows must already be free of duplicates (the writer checks
    Idempotency-Keys and entry ids first), so no scan of the whole ledger runs
    here. With `ingest_id` None a new ingest log row is started; otherwise that
    row's counts grow. `duplicates` counts posts left out as already stored;
    `keys` counts the staged Idempotency-Keys.
    """
    connection.execute("BEGIN TRANSACTION")
    try:
        connection.execute(_INCOMING_SQL.format(stage="memory.main", json=""))
        posts = connection.execute("SELECT count(*) FROM incoming").fetchone()[0]
        actions = connection.execute("SELECT count(*) FROM memory.main.recorded_actions").fetchone()[0]
        if ingest_id is None:
            ingest_id = connection.execute("SELECT nextval('ingest_ids')").fetchone()[0]
            connection.execute(
                "INSERT INTO ingest_log VALUES (?, now(), now(), 'receiver', ['receiver'], 0, 0, 0, 0, "
                "'{\"recorded_actions\": 0}')",
                [ingest_id],
            )
        if posts:
            _insert_incoming(connection, ingest_id)
        if actions:
            connection.execute("INSERT INTO recorded_actions SELECT * FROM memory.main.recorded_actions")
        if keys:
            connection.execute("INSERT INTO idempotency_keys SELECT * FROM memory.main.idempotency_keys")
        connection.execute(
            "UPDATE ingest_log SET finished_at = now(), records_read = records_read + ?, ingested = ingested + ?, "
            "duplicates = duplicates + ?, report = json_object('recorded_actions', "
            "CAST(report ->> '$.recorded_actions' AS BIGINT) + ?) WHERE ingest_id = ?",
            [posts + duplicates, posts, duplicates, actions, ingest_id],
        )
        connection.execute("COMMIT")
    except Exception:
        connection.execute("ROLLBACK")
        raise
    finally:
        connection.execute("DROP TABLE IF EXISTS incoming")
    return ReceiverCommit(ingest_id, posts, actions)


def _insert_incoming(connection: duckdb.DuckDBPyConnection, ingest_id: int) -> None:
    """Insert the submissions of the `incoming` table, with their divergences and causes, under `ingest_id`."""
    _insert_submissions(
        connection, _kept_rows("memory.main", "incoming"), "memory.main.divergences", ingest_id, canonical=True
    )
    cause_names = ", ".join(f"c.{name}" for name, _ in CAUSE_COLUMNS[1:])
    connection.execute(
        f"INSERT INTO divergence_causes SELECT i.submission_id, {cause_names} FROM memory.main.divergence_causes "
        "AS c JOIN incoming AS i USING (seq) ORDER BY i.seq, c.position, c.ordinal"
    )


def merge_inbox_attached(connection: duckdb.DuckDBPyConnection, ledger: Path) -> int:
    """Merge every inbox batch into the ledger attached by `attached`, in one transaction; return how many."""
    queued = inbox_batches(ledger)
    if not queued:
        return 0
    connection.execute("BEGIN TRANSACTION")
    try:
        for batch_file in queued:
            _merge_one(connection, batch_file, connection.execute("SELECT nextval('ingest_ids')").fetchone()[0])
        connection.execute("COMMIT")
    except Exception:
        connection.execute("ROLLBACK")
        raise
    for batch_file in queued:
        batch_file.unlink(missing_ok=True)
    log.info("merged %d inbox batches into %s", len(queued), ledger)
    return len(queued)


def load_pull_position(ledger: Path, source: str) -> str | None:
    """Return the JSON state a pull from `source` saved, or None."""
    if not ledger.exists():
        return None
    with reading(ledger) as connection:
        if schema_version(connection) < 2:
            return None
        row = connection.execute("SELECT state FROM pull_positions WHERE source = ?", [source]).fetchone()
    return None if row is None else row[0]


def save_pull_position(ledger: Path, source: str, state_json: str, *, budget: float = WRITE_BUDGET_SECONDS) -> None:
    """Replace the JSON state of pulls from `source`."""
    with writing(ledger, budget=budget) as connection:
        connection.execute("BEGIN TRANSACTION")
        connection.execute("DELETE FROM pull_positions WHERE source = ?", [source])
        connection.execute("INSERT INTO pull_positions VALUES (?, ?, now())", [source, state_json])
        connection.execute("COMMIT")
