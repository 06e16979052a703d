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

import hashlib
import logging
import os
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

log = logging.getLogger(__name__)

DEFAULT_LEDGER = "replay-ledger.duckdb"
LEDGER_ENV = "REPLAY_LEDGER_DB"
READ_BUDGET_SECONDS = 20.0
WRITE_BUDGET_SECONDS = 3.0
STAGE_MEMORY_LIMIT = "256MB"
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
    ("extra", "JSON"),
)
REJECTED_COLUMNS = (
    ("location", "VARCHAR NOT NULL"),
    ("field", "VARCHAR"),
    ("value", "VARCHAR"),
    ("reason", "VARCHAR NOT NULL"),
    ("record", "VARCHAR"),
)


def _columns(columns: tuple[tuple[str, str], ...]) -> str:
    return ",\n    ".join(f"{name} {kind}" for name, kind in columns)


# Ordered, recorded schema changes. A ledger created by an older release opens in a
# newer one by applying the versions it lacks, each in its own transaction.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
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
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


class LedgerBusy(Exception):
    """The ledger stayed locked by another process for longer than the retry budget."""


class LedgerMissing(Exception):
    """The ledger file does not exist, so there is nothing to read."""


class LedgerTooNew(Exception):
    """The ledger was written by a newer release whose schema this one does not know."""


def ledger_path(explicit: str | os.PathLike | None = None) -> Path:
    """Return the ledger path: the explicit one, else $REPLAY_LEDGER_DB, else ./replay-ledger.duckdb."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(LEDGER_ENV) or DEFAULT_LEDGER)


def inbox_path(path: Path) -> Path:
    return path.with_name(path.name + ".inbox")


def _is_busy(error: Exception) -> bool:
    text = str(error)
    return "lock" in text.lower() or "different configuration" in text


def _connect(path: Path, *, read_only: bool, budget: float, memory_limit: str) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + budget
    delay = 0.005
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config={"memory_limit": memory_limit})
        except (duckdb.IOException, duckdb.ConnectionException) as error:
            if not _is_busy(error):
                raise
            if time.monotonic() + delay > deadline:
                raise LedgerBusy(
                    f"{path}: the ledger stayed locked by another process for {budget:.1f} s; try again shortly"
                ) from None
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.25)


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
    finally:
        connection.close()


@contextmanager
def writing(path: Path, *, budget: float = WRITE_BUDGET_SECONDS) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the ledger for writing, creating and migrating it as needed, and close it afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = _connect(path, read_only=False, budget=budget, memory_limit=LEDGER_MEMORY_LIMIT)
    try:
        migrate(connection)
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


def migrate(connection: duckdb.DuckDBPyConnection) -> int:
    """Apply the migrations the ledger lacks, each in one transaction; return the schema version."""
    current = schema_version(connection)
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


class Stage:
    """A temporary DuckDB file that collects one ingest's validated records before the merge."""

    def __init__(self, directory: Path | None = None):
        self.path = Path(tempfile.mkdtemp(prefix="replay-ledger-stage-", dir=directory)) / "stage.duckdb"
        self.connection = duckdb.connect(str(self.path), config={"memory_limit": STAGE_MEMORY_LIMIT})
        self.connection.execute(
            f"CREATE TABLE submissions (seq BIGINT NOT NULL, file_index INTEGER NOT NULL, "
            f"{_columns(SUBMISSION_COLUMNS)})"
        )
        self.connection.execute(f"CREATE TABLE divergences ({_columns(DIVERGENCE_COLUMNS)})")
        self.connection.execute(f"CREATE TABLE rejected (file_index INTEGER NOT NULL, {_columns(REJECTED_COLUMNS)})")
        self.connection.execute(
            "CREATE TABLE batch (origin VARCHAR, sources VARCHAR[], started_at TIMESTAMPTZ, report JSON)"
        )
        self.connection.execute("CREATE TABLE dropped_files (file_index INTEGER NOT NULL)")

    def append(self, table: str, batch: pa.Table) -> None:
        """Append an Arrow table whose columns match the staged table's, in order."""
        self.connection.register("arrow_batch", batch)
        try:
            self.connection.execute(f"INSERT INTO {table} SELECT * FROM arrow_batch")
        finally:
            self.connection.unregister("arrow_batch")

    def append_submissions(self, batch: pa.Table) -> None:
        """Append submissions whose money column is ``cost_micros`` (int64) instead of ``cost_savings``."""
        names = [name for name, _ in SUBMISSION_COLUMNS]
        select = ", ".join(
            "CAST(cost_micros AS DECIMAL(18, 0)) * CAST(0.000001 AS DECIMAL(7, 6))" if name == "cost_savings" else name
            for name in names
        )
        self.connection.register("arrow_batch", batch)
        try:
            self.connection.execute(f"INSERT INTO submissions SELECT seq, file_index, {select} FROM arrow_batch")
        finally:
            self.connection.unregister("arrow_batch")

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
        _fsync(self.path)
        return self.path

    def discard(self) -> None:
        try:
            self.connection.close()
        except duckdb.Error:
            pass
        _remove_tree(self.path.parent)


def _fsync(path: Path) -> None:
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
    _fsync(inbox)
    _remove_tree(stage_file.parent)
    log.warning("ledger %s busy, batch queued in its inbox as %s", ledger, final.name)
    return final


def inbox_batches(ledger: Path) -> list[Path]:
    inbox = inbox_path(ledger)
    if not inbox.is_dir():
        return []
    return sorted(path for path in inbox.glob("*.duckdb") if not path.name.startswith("."))


_MERGE_SQL = """
CREATE OR REPLACE TEMP TABLE incoming AS
SELECT s.*,
       row_number() OVER (PARTITION BY s.submission_id ORDER BY s.seq) AS nth_id,
       row_number() OVER (PARTITION BY s.content_hash ORDER BY s.platform_id IS NULL, s.seq) AS nth_content,
       count(s.platform_id) OVER (PARTITION BY s.content_hash) AS platform_ids
FROM {stage}.submissions AS s
WHERE s.file_index NOT IN (SELECT file_index FROM {stage}.dropped_files);

CREATE OR REPLACE TEMP TABLE incoming_flagged AS
SELECT i.*,
       (i.nth_id > 1
        OR (i.nth_content > 1 AND (i.platform_id IS NULL OR i.platform_ids <= 1))
        OR EXISTS (SELECT 1 FROM submissions AS l WHERE l.submission_id = i.submission_id)
        OR EXISTS (SELECT 1 FROM submissions AS l WHERE l.content_hash = i.content_hash
                   AND (l.platform_id IS NULL OR i.platform_id IS NULL))) AS duplicate
FROM incoming AS i;
"""


def _merge_one(connection: duckdb.DuckDBPyConnection, stage_file: Path, ingest_id: int) -> tuple[dict, dict]:
    alias = "stage_" + hashlib.sha1(str(stage_file).encode()).hexdigest()[:10]
    connection.execute(f"ATTACH '{_quote(stage_file)}' AS {alias} (READ_ONLY)")
    try:
        connection.execute(_MERGE_SQL.format(stage=alias))
        names = ", ".join(name for name, _ in SUBMISSION_COLUMNS)
        connection.execute(
            f"INSERT INTO submissions ({names}, ingest_id, ingested_at) "
            f"SELECT {names}, ?, now() FROM incoming_flagged WHERE NOT duplicate ORDER BY seq",
            [ingest_id],
        )
        divergence_names = ", ".join(name for name, _ in DIVERGENCE_COLUMNS)
        connection.execute(
            f"INSERT INTO divergences SELECT {', '.join('d.' + n for n, _ in DIVERGENCE_COLUMNS)} "
            f"FROM {alias}.divergences AS d "
            "JOIN (SELECT DISTINCT submission_id FROM incoming_flagged WHERE NOT duplicate) AS kept "
            "USING (submission_id) ORDER BY d.submission_id, d.position"
        )
        del divergence_names
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
