"""The receiver's batching writer: posts are made durable in a journal, then merged into the ledger in groups.

Two threads own every write the receiver makes:

- the journal thread takes every job queued at that moment and decides
  Idempotency-Key repeats. It appends the new jobs to the journal in the
  ledger's inbox with one fsync, and only then resolves each job's future, so
  a ``201`` is sent once its post is durable;
- the merge thread moves journaled jobs into the ledger: at most
  `merge_seconds` after the oldest arrived, it attaches the ledger, commits
  all of them in one transaction, detaches, and deletes the journal files
  they came from. While the ledger is busy (another process has it open), the
  jobs stay journaled and the merge is tried again.

So the ledger is held only for one short transaction per merge, whatever the
rate of posts, and the app, `replay-ledger ingest` and readers get their turn.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ledger import journal as journals
from ledger import store
from ledger.actions import ActionBatch
from ledger.ingest import _Columns as StageColumns
from ledger.normalize import NormalizedSubmission

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000
PENDING_LIMIT = 200_000
MAX_GROUP = 1_000
MERGE_SECONDS = 0.5
MERGE_RETRY_SECONDS = 0.5
MAINTENANCE_SECONDS = 2.0
INGEST_LOG_WINDOW_SECONDS = 60.0
RECENT_KEYS = 50_000
IDEMPOTENCY_LOOKUP_BUDGET = 3.0

_IDEMPOTENCY_FIELDS = {
    "submission_id": pa.string(),
    "deployment": pa.string(),
    "idempotency_key": pa.string(),
    "request_hash": pa.string(),
    "response": pa.string(),
    "created_at": pa.timestamp("us", tz="UTC"),
}


class WriterOverloaded(Exception):
    """Too many posts wait to be journaled or merged; the client should retry shortly."""


class WriterStopped(Exception):
    """The writer has stopped and takes no more posts."""


class IdempotencyConflict(Exception):
    """An Idempotency-Key was used again with a different request body."""


@dataclass
class SubmissionPost:
    """A validated replay result to store, with the response its poster gets."""

    submission: NormalizedSubmission
    response: bytes
    request_id: str
    idempotency_key: str | None = None
    request_hash: str | None = None


@dataclass
class PostOutcome:
    """The outcome of a post: the response body, and whether it repeats an earlier post's response."""

    response: bytes
    replayed: bool = False


@dataclass
class ActionsOutcome:
    """The outcome of an action batch: the number of its entries journaled."""

    accepted: int


@dataclass
class _Job:
    work: SubmissionPost | ActionBatch | None
    future: Future
    line: bytes = b""
    recovered: bool = False


_SYNC = b"sync"
Rebuild = Callable[[dict[str, Any]], "SubmissionPost | ActionBatch"]


class BatchWriter:
    """The journal and merge threads of one receiver on one ledger."""

    def __init__(
        self,
        ledger: Path,
        *,
        budget: float = store.WRITE_BUDGET_SECONDS,
        queue_limit: int = QUEUE_LIMIT,
        merge_seconds: float = MERGE_SECONDS,
        maintenance_seconds: float = MAINTENANCE_SECONDS,
        on_keys: Callable[[list[tuple]], None] | None = None,
        rebuild: Rebuild | None = None,
    ):
        self.ledger = ledger
        self.budget = budget
        self.queue_limit = queue_limit
        self.merge_seconds = merge_seconds
        self.maintenance_seconds = maintenance_seconds
        self.on_keys = on_keys
        self.rebuild = rebuild
        self.journal = journals.Journal(ledger)
        self._incoming: queue.Queue[_Job | None] = queue.Queue()
        self._journaled: queue.Queue[_Job | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._unmerged = 0
        self._ingest_id: int | None = None
        self._ingest_window_start = 0.0
        self._last_failure = ""
        # Keyed posts this process accepted, so a retry gets the first response from memory
        # even before its first post is merged: submission id -> (request hash, response).
        self._recent: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._recent_lock = threading.Lock()
        self.merges = 0
        self.merged_jobs = 0

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Start both threads; journals left by stopped receivers are merged first."""
        self._threads = [
            threading.Thread(target=self._journal_loop, name="replay-ledger-journal", daemon=True),
            threading.Thread(target=self._merge_loop, args=(self._recover(),), name="replay-ledger-merge", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Journal every job already taken, merge what the ledger lets in, then end both threads."""
        self._stopping = True
        self._incoming.put(None)
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                log.error("the ledger writer's %s thread did not finish within %.0f s", thread.name, timeout)

    @property
    def backlog(self) -> int:
        return self._incoming.qsize() + self._unmerged

    # -- submitting ------------------------------------------------------

    def submit(self, work: SubmissionPost | ActionBatch, line: bytes) -> Future:
        """Queue a post or an action batch with its journal line; the future resolves once it is durable.

        Raises WriterOverloaded when `queue_limit` jobs wait to be journaled (or
        very many to be merged), WriterStopped after `stop`.
        """
        if self._stopping:
            raise WriterStopped("the receiver is shutting down")
        waiting = self._incoming.qsize()
        if waiting >= self.queue_limit or self._unmerged >= PENDING_LIMIT:
            raise WriterOverloaded(f"{waiting + self._unmerged} posts are waiting to be written")
        job = _Job(work, Future(), line)
        self._incoming.put(job)
        return job.future

    def refresh(self) -> Future:
        """Ask for a maintenance round now (reload keys, merge the inbox); the future resolves after it."""
        job = _Job(None, Future())
        self._journaled.put(job)
        return job.future

    def sync(self) -> Future:
        """Ask for everything journaled so far to be merged now; the future resolves after that merge was tried.

        Reads of the ledger made after it see every post acknowledged before it,
        unless the ledger stayed busy past the write budget.
        """
        job = _Job(None, Future(), _SYNC)
        with self.journal.lock:
            self._journaled.put(job)
        return job.future

    # -- the journal thread -----------------------------------------------

    def _journal_loop(self) -> None:
        stop = False
        while not stop:
            job = self._incoming.get()
            jobs = [] if job is None else [job]
            stop = job is None
            while not stop and len(jobs) < MAX_GROUP:
                try:
                    more = self._incoming.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                else:
                    jobs.append(more)
            if jobs:
                self._journal_group(jobs)
        self._journaled.put(None)

    def _journal_group(self, jobs: list[_Job]) -> None:
        fresh: list[_Job] = []
        claims: dict[str, tuple[str, bytes]] = {}
        for job in jobs:
            item = job.work
            if isinstance(item, SubmissionPost) and item.idempotency_key is not None:
                sid = item.submission.platform_id
                earlier = claims.get(sid) or self._remembered(sid)
                if earlier is None:
                    try:
                        earlier = self._stored_key(sid)
                    except store.LedgerBusy:
                        # Accepted on trust: if the ledger has this key already, the merge
                        # leaves this post out, so it still counts once.
                        log.info("ledger busy; Idempotency-Key of %s is checked again when it is merged",
                                 _job_id(job))
                if earlier is not None:
                    if earlier[0] != item.request_hash:
                        job.future.set_exception(IdempotencyConflict(item.idempotency_key))
                    else:
                        job.future.set_result(PostOutcome(earlier[1], replayed=True))
                    continue
                claims[sid] = (item.request_hash, item.response)
            fresh.append(job)
        if not fresh:
            return
        try:
            with self.journal.lock:
                self.journal.append([job.line for job in fresh])
                self._unmerged += len(fresh)
                for job in fresh:
                    self._journaled.put(job)
        except OSError as error:
            log.error("appending %d jobs to the journal in %s failed (%s): %s",
                      len(fresh), self.journal.folder, ", ".join(_job_id(job) for job in fresh[:20]), error)
            for job in fresh:
                job.future.set_exception(error)
            return
        with self._recent_lock:
            for sid, (request_hash, response) in claims.items():
                self._recent[sid] = (request_hash, response)
            while len(self._recent) > RECENT_KEYS:
                self._recent.popitem(last=False)
        for job in fresh:
            item = job.work
            job.future.set_result(
                PostOutcome(item.response) if isinstance(item, SubmissionPost) else ActionsOutcome(len(item.rows))
            )

    def _remembered(self, submission_id: str) -> tuple[str, bytes] | None:
        with self._recent_lock:
            return self._recent.get(submission_id)

    def _stored_key(self, submission_id: str) -> tuple[str, bytes] | None:
        """Return (request hash, response) of a keyed post already in the ledger, or None."""
        found = store.idempotency_keys_of(self.ledger, [submission_id], budget=IDEMPOTENCY_LOOKUP_BUDGET)
        if submission_id not in found:
            return None
        request_hash, response = found[submission_id]
        return request_hash, response.encode()

    # -- the merge thread ------------------------------------------------

    def _merge_loop(self, recovered: tuple[list[_Job], list[Path]]) -> None:
        connection = store.receiver_connection()
        pending, sealed = recovered
        maintenance: list[_Job] = []
        oldest = time.monotonic() if pending else None
        next_maintenance = time.monotonic() + self.maintenance_seconds
        next_try = 0.0
        stopping = False
        stop_deadline = 0.0
        try:
            while True:
                now = time.monotonic()
                wake = next_maintenance if oldest is None else max(next_try, oldest + self.merge_seconds)
                try:
                    job = self._journaled.get(timeout=max(0.0, min(wake, next_maintenance) - now))
                except queue.Empty:
                    job = _Job(None, Future()) if time.monotonic() >= next_maintenance else False
                if job is None:
                    stopping = True
                    stop_deadline = time.monotonic() + self.budget + MERGE_RETRY_SECONDS
                elif job is not False:
                    (maintenance if job.work is None else pending).append(job)
                    if job.work is not None and oldest is None:
                        oldest = time.monotonic()
                now = time.monotonic()
                synced = any(job.line is _SYNC for job in maintenance)
                due = pending and (synced or now >= next_try and (stopping or now - oldest >= self.merge_seconds))
                if not due and not maintenance:
                    if stopping and (not pending or time.monotonic() > stop_deadline):
                        break
                    continue
                with self.journal.lock:
                    closed = self.journal.seal()
                if closed is not None:
                    sealed.append(closed)
                pending.extend(self._drain_journaled(maintenance))
                if self._merge(connection, pending, bool(maintenance)):
                    for path in sealed:
                        path.unlink(missing_ok=True)
                    with self.journal.lock:
                        self._unmerged -= len(pending)
                    pending, sealed, oldest = [], [], None
                elif pending:
                    next_try = time.monotonic() + MERGE_RETRY_SECONDS
                    if stopping and time.monotonic() > stop_deadline:
                        break
                for job in maintenance:
                    job.future.set_result(None)
                maintenance = []
                next_maintenance = time.monotonic() + self.maintenance_seconds
                if stopping and not pending:
                    break
        finally:
            connection.close()
            if pending:
                log.warning("%d journaled jobs are not in %s yet; the next receiver on this ledger merges them",
                            len(pending), self.ledger)

    def _drain_journaled(self, maintenance: list[_Job]) -> list[_Job]:
        drained = []
        while True:
            try:
                job = self._journaled.get_nowait()
            except queue.Empty:
                return drained
            if job is None:
                self._journaled.put(None)
                return drained
            (maintenance if job.work is None else drained).append(job)

    def _merge(self, connection, pending: list[_Job], maintenance: bool) -> bool:
        """Store pending jobs (and run maintenance) in one attach; return False when they stay journaled."""
        if not pending and not store.inbox_batches(self.ledger):
            if maintenance and self.on_keys is not None:
                self._reload_keys(connection)
            return True
        try:
            with store.attached(connection, self.ledger, budget=self.budget):
                self._merge_inbox(connection)
                for start in range(0, len(pending), MAX_GROUP * 10):
                    self._commit(connection, pending[start:start + MAX_GROUP * 10])
                if maintenance and self.on_keys is not None:
                    self.on_keys(store.read_api_keys(connection))
        except store.LedgerBusy:
            log.debug("ledger busy; %d journaled jobs wait for the next merge", len(pending))
            return False
        except Exception as error:
            text = f"{type(error).__name__}: {error}"
            if text != self._last_failure:
                ids = ", ".join(_job_id(job) for job in pending[:20])
                log.exception("merging %d journaled jobs into %s failed (%s); they stay journaled: %s",
                              len(pending), self.ledger, ids, error)
                self._last_failure = text
            return False
        finally:
            store.clear_receiver_stage(connection)
        self.merges += 1
        self.merged_jobs += len(pending)
        self._last_failure = ""
        return True

    def _merge_inbox(self, connection) -> None:
        """Merge queued inbox batches of other writers; one that fails is logged and left for a later writer."""
        try:
            store.merge_inbox_attached(connection, self.ledger)
        except Exception as error:
            log.error("merging the inbox batches of %s failed, they stay queued: %s", self.ledger, error)

    def _reload_keys(self, connection) -> None:
        if not self.ledger.exists():
            return
        try:
            with store.attached(connection, self.ledger, budget=0.5, read_only=True):
                if store.schema_version(connection) >= 2:
                    self.on_keys(store.read_api_keys(connection))
        except store.LedgerBusy:
            log.debug("ledger busy; API keys are reloaded later")

    def _commit(self, connection, jobs: list[_Job]) -> None:
        """Stage jobs and commit them in one transaction, leaving out what the ledger already has."""
        store.clear_receiver_stage(connection)
        keyed = [job.work.submission.platform_id for job in jobs
                 if isinstance(job.work, SubmissionPost) and job.work.idempotency_key is not None]
        present = set(store.find_idempotency_keys(connection, keyed))
        recovered = [job.work.submission.platform_id for job in jobs
                     if job.recovered and isinstance(job.work, SubmissionPost)]
        present |= store.existing_submission_ids(connection, recovered)
        duplicates, keys = self._stage(connection, jobs, present)
        now = time.monotonic()
        if self._ingest_id is not None and now - self._ingest_window_start > INGEST_LOG_WINDOW_SECONDS:
            self._ingest_id = None
        if self._ingest_id is None:
            self._ingest_window_start = now
        result = store.commit_receiver_stage(connection, self._ingest_id, duplicates=duplicates, keys=len(keys))
        self._ingest_id = result.ingest_id

    def _stage(self, connection, jobs: list[_Job], present: set[str]) -> tuple[int, list[dict]]:
        """Stage the rows of jobs not yet stored; return (posts left out as already stored, keys staged)."""
        columns = StageColumns()
        keys: list[dict] = []
        duplicates = 0
        known_entries: dict[str, set[str]] = {}
        action_rows: list[dict] = []
        for job in jobs:
            item = job.work
            if isinstance(item, ActionBatch):
                known = known_entries.get(item.run_id)
                if known is None:
                    known = known_entries[item.run_id] = store.recorded_entry_ids(connection, item.run_id)
                fresh = [row for row in item.rows if row["entry_id"] is None or row["entry_id"] not in known]
                known.update(row["entry_id"] for row in fresh if row["entry_id"] is not None)
                action_rows.extend(fresh)
                continue
            submission_id = item.submission.platform_id
            if submission_id in present:
                duplicates += 1
                continue
            present.add(submission_id)
            if item.idempotency_key is not None:
                keys.append({
                    "submission_id": submission_id, "deployment": item.submission.deployment,
                    "idempotency_key": item.idempotency_key, "request_hash": item.request_hash,
                    "response": item.response.decode(), "created_at": item.submission.submitted_at_us,
                })
            columns.add(columns.rows, 0, item.submission)
        if columns.rows:
            submissions, divergences = columns.tables()
            store.stage_receiver_rows(connection, "submissions", submissions)
            store.stage_receiver_rows(connection, "divergences", divergences)
        if keys:
            store.stage_receiver_rows(connection, "idempotency_keys", pa.table(
                {name: pa.array([row[name] for row in keys], type=kind) for name, kind in _IDEMPOTENCY_FIELDS.items()}
            ))
        if action_rows:
            store.stage_receiver_rows(connection, "recorded_actions", ActionBatch("", None, "").table(action_rows))
        return duplicates, keys

    # -- recovery --------------------------------------------------------

    def _recover(self) -> tuple[list[_Job], list[Path]]:
        """Rebuild the jobs of journals that stopped receivers left, to be merged first."""
        jobs: list[_Job] = []
        files = journals.left_behind(self.ledger)
        if not files or self.rebuild is None:
            return jobs, []
        usable = []
        for path in files:
            try:
                entries = journals.read_lines(path)
                rebuilt = [_Job(self.rebuild(entry), Future(), recovered=True) for entry in entries]
            except Exception as error:
                failed = path.with_name(path.name + ".failed")
                path.rename(failed)
                log.error("journal %s could not be replayed (%s); kept as %s for a look by hand", path.name, error,
                          failed.name)
                continue
            jobs.extend(rebuilt)
            usable.append(path)
        self._unmerged = len(jobs)
        with self._recent_lock:
            for job in jobs:
                if isinstance(job.work, SubmissionPost) and job.work.idempotency_key is not None:
                    self._recent[job.work.submission.platform_id] = (job.work.request_hash, job.work.response)
        log.warning("merging %d jobs from %d journals that a stopped receiver left in %s",
                    len(jobs), len(usable), store.inbox_path(self.ledger))
        return jobs, usable


def _job_id(job: _Job) -> str:
    work = job.work
    if isinstance(work, SubmissionPost):
        return f"submission {work.submission.platform_id} (request {work.request_id})"
    if isinstance(work, ActionBatch):
        return f"action batch {work.batch_id} of run {work.run_id}"
    return "maintenance"
