"""One ingest: read sources, validate each record, stage, merge, and report.

Default: bad records are rejected and stored with their reason, and good ones
are ingested. Strict mode ingests nothing from a file that has any bad record
(its rejections are still stored). The whole ingest is merged in one
transaction, so the ledger either has all of it or none of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from ledger import store
from ledger.models import ZONELESS_FLAG, shorten
from ledger.normalize import (
    Context,
    NormalizedSubmission,
    RecordRejected,
    default_anchor,
    model_normalize,
    normalize_text,
)
from ledger.readers import LineChunk, RawRecord, SourceFile, find_sources, read_records

log = logging.getLogger(__name__)

BATCH_ROWS = 20_000
LINE_BATCH = 100_000
RECORD_KEEP_CHARS = 4_000

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2


@dataclass
class Rejection:
    """A record that was not ingested: where it is, which field, which value and why."""

    location: str
    field: str
    value: str
    reason: str

    def message(self) -> str:
        field_text = f"{self.field}: " if self.field else ""
        return f"{self.location}: {field_text}{self.reason}"


@dataclass
class FileReport:
    """The outcome of one source file: records read, ingested, duplicates, rejected, warnings."""

    name: str
    shape: str = "unknown"
    compressed: bool = False
    read: int = 0
    ingested: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dropped_by_strict: int = 0


@dataclass
class IngestReport:
    """The outcome of one ingest over all its sources."""

    files: list[FileReport] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    ingest_id: int | None = None
    queued_in_inbox: str | None = None
    inbox_batches_merged: int = 0
    seconds: float = 0.0

    @property
    def read(self) -> int:
        return sum(item.read for item in self.files)

    @property
    def ingested(self) -> int:
        return sum(item.ingested for item in self.files)

    @property
    def duplicates(self) -> int:
        return sum(item.duplicates for item in self.files)

    @property
    def rejected(self) -> int:
        return sum(len(item.rejected) for item in self.files)

    @property
    def exit_code(self) -> int:
        """0 when every record was ingested or was a duplicate, 1 when any was rejected."""
        return EXIT_REJECTED if self.rejected else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(read=self.read, ingested=self.ingested, duplicates=self.duplicates, rejected=self.rejected)
        return data


class _Columns:
    """Column lists for one Arrow batch of staged submissions and divergences."""

    def __init__(self) -> None:
        self.submissions: dict[str, list] = {name: [] for name in _SUBMISSION_FIELDS}
        self.divergences: dict[str, list] = {name: [] for name in _DIVERGENCE_FIELDS}
        self.rows = 0

    def add(self, seq: int, file_index: int, item: NormalizedSubmission) -> None:
        columns = self.submissions
        columns["seq"].append(seq)
        columns["file_index"].append(file_index)
        columns["platform_id"].append(item.platform_id)
        columns["run_id"].append(item.run_id)
        columns["deployment"].append(item.deployment)
        columns["status"].append(item.status)
        columns["actions_replayed"].append(item.actions_replayed)
        columns["actions_total"].append(item.actions_total)
        columns["divergences_detected"].append(item.divergences_detected)
        columns["cost_micros"].append(item.cost_micros)
        columns["submitted_at"].append(item.submitted_at_us)
        columns["anchor"].append(item.anchor)
        columns["location"].append(item.location)
        columns["flags"].append(item.flags or None)
        columns["extra"].append(item.extra_json)
        divergences = self.divergences
        for divergence in item.divergences:
            divergences["seq"].append(seq)
            divergences["position"].append(divergence.position)
            divergences["type"].append(divergence.type)
            divergences["action"].append(divergence.action)
            divergences["action_index"].append(divergence.index)
            divergences["expected"].append(divergence.expected_json)
            divergences["actual"].append(divergence.actual_json)
            divergences["detail"].append(divergence.detail_json)
        self.rows += 1

    def tables(self) -> tuple[pa.Table, pa.Table]:
        submissions = pa.table(
            {name: pa.array(values, type=_SUBMISSION_FIELDS[name]) for name, values in self.submissions.items()}
        )
        divergences = pa.table(
            {name: pa.array(values, type=_DIVERGENCE_FIELDS[name]) for name, values in self.divergences.items()}
        )
        return submissions, divergences


_SUBMISSION_FIELDS = {
    "seq": pa.int64(),
    "file_index": pa.int32(),
    "platform_id": pa.string(),
    "run_id": pa.string(),
    "deployment": pa.string(),
    "status": pa.string(),
    "actions_replayed": pa.int64(),
    "actions_total": pa.int64(),
    "divergences_detected": pa.int64(),
    "cost_micros": pa.int64(),
    "submitted_at": pa.timestamp("us", tz="UTC"),
    "anchor": pa.string(),
    "location": pa.string(),
    "flags": pa.list_(pa.string()),
    "extra": pa.string(),
}
_DIVERGENCE_FIELDS = {
    "seq": pa.int64(),
    "position": pa.int32(),
    "type": pa.string(),
    "action": pa.string(),
    "action_index": pa.int64(),
    "expected": pa.string(),
    "actual": pa.string(),
    "detail": pa.string(),
}
_REJECTED_FIELDS = {
    "file_index": pa.int32(),
    "location": pa.string(),
    "field": pa.string(),
    "value": pa.string(),
    "reason": pa.string(),
    "record": pa.string(),
}

Progress = Callable[[int], None]


class _Ingest:
    """The mutable state of one ingest while it stages records."""

    def __init__(
        self, stage: store.Stage, deployment: str | None, strict: bool, progress: Progress | None,
        classify_causes: bool = True,
    ):
        self.stage = stage
        self.classify_causes = classify_causes
        self.deployment = deployment
        self.strict = strict
        self.progress = progress
        self.ingest_time_us = int(time.time() * 1_000_000)
        self.columns = _Columns()
        self.rejected: dict[str, list] = {name: [] for name in _REJECTED_FIELDS}
        self.seq = 0

    def flush(self) -> None:
        if self.columns.rows:
            submissions, divergences = self.columns.tables()
            self.stage.append_submissions(submissions)
            self.stage.append_divergences(divergences)
            self.columns = _Columns()
            if self.classify_causes:
                self.stage.classify_new_divergences()
        if self.rejected["location"]:
            self.stage.append("rejected", pa.table(
                {name: pa.array(values, type=_REJECTED_FIELDS[name]) for name, values in self.rejected.items()}
            ))
            self.rejected = {name: [] for name in _REJECTED_FIELDS}

    def reject(self, file_index: int, report: FileReport, record: RawRecord, error: RecordRejected | str) -> None:
        if isinstance(error, str):
            rejection = Rejection(record.location, "", "", error)
        else:
            shown = "" if error.value is None else shorten(error.value, 200)
            rejection = Rejection(record.location, error.field, shown, error.reason)
        report.rejected.append(rejection)
        raw = record.text.decode("utf-8", "replace") if record.text is not None else None
        if raw is None and record.value is not None:
            raw = _dump_value(record.value)
        self.rejected["file_index"].append(file_index)
        self.rejected["location"].append(rejection.location)
        self.rejected["field"].append(rejection.field or None)
        self.rejected["value"].append(rejection.value or None)
        self.rejected["reason"].append(rejection.reason)
        self.rejected["record"].append(None if raw is None else raw[:RECORD_KEEP_CHARS])

    def stage_file(self, file_index: int, source: SourceFile) -> FileReport:
        report = FileReport(name=source.name)
        lines = _LineBuffer(self, file_index, source, report)
        for item in read_records(source, line_chunks=True):
            if isinstance(item, LineChunk):
                lines.add(item)
                continue
            if item.error is not None:
                self.reject(file_index, report, item, item.error)
                continue
            report.read += 1
            self.validate(file_index, report, item)
        lines.flush()
        report.shape = source.shape
        report.compressed = source.compressed
        report.warnings.extend(source.warnings)
        if self.strict and report.rejected:
            self.stage.drop_file(file_index)
            report.dropped_by_strict = report.read - len(report.rejected)
        return report

    def check_lines(
        self, file_index: int, source: SourceFile, report: FileReport, lines: pa.Table,
        undecodable: list[tuple[int, bytes]],
    ) -> None:
        """Validate a batch of a file's JSON Lines in SQL, then the lines SQL deferred through the Python path."""
        staged, deferred, zoneless = self.stage.check_line_batch(
            lines, file_index, source.name, self.deployment, self.seq
        )
        if lines.num_rows:
            numbers = lines.column("line_no")
            self.seq += numbers[-1].as_py() - numbers[0].as_py() + 1
        if staged and self.classify_causes:
            self.stage.classify_new_divergences()
        report.read += staged + len(deferred) + len(undecodable)
        for line_no in zoneless:
            report.warnings.append(f"{source.name}:{line_no}: {ZONELESS_FLAG}")
        pending = [(line_no, raw.encode("utf-8")) for line_no, raw in deferred] + undecodable
        pending.sort()
        for line_no, text in pending:
            record = RawRecord(location=f"{source.name}:{line_no}", text=text.strip(), line=line_no)
            self.validate(file_index, report, record)
        if self.progress is not None:
            self.progress(self.seq)

    def validate(self, file_index: int, report: FileReport, record: RawRecord) -> None:
        """Validate one record in Python and stage it, or reject it with its reason."""
        context = Context(
            location=record.location,
            anchor=default_anchor(report.name, record.location),
            run_id_hint=record.run_id_hint,
            deployment=self.deployment,
            ingest_time_us=self.ingest_time_us,
        )
        try:
            if record.text is not None:
                item = normalize_text(record.text, context)
            else:
                item = model_normalize(record.value, context)
        except RecordRejected as error:
            self.reject(file_index, report, record, error)
            return
        for flag in item.flags:
            report.warnings.append(f"{item.location}: {flag}")
        self.columns.add(self.seq, file_index, item)
        self.seq += 1
        if self.columns.rows >= BATCH_ROWS:
            self.flush()
        if self.progress is not None and self.seq % 5_000 == 0:
            self.progress(self.seq)


class _LineBuffer:
    """Raw JSON Lines of one file on their way to the SQL checks, in batches of about `LINE_BATCH` lines.

    Each chunk of the reader becomes one Arrow record batch over the chunk's
    bytes, without a copy, so DuckDB can scan a batch's chunks in parallel.
    """

    def __init__(self, ingest: "_Ingest", file_index: int, source: SourceFile, report: FileReport):
        self.ingest = ingest
        self.file_index = file_index
        self.source = source
        self.report = report
        self.batches: list[pa.RecordBatch] = []
        self.pending = 0
        self.undecodable: list[tuple[int, bytes]] = []

    def add(self, chunk: LineChunk) -> None:
        numbers = pa.array(np.arange(chunk.first_line, chunk.first_line + len(chunk), dtype=np.int64))
        raw = pa.LargeStringArray.from_buffers(len(chunk), pa.py_buffer(chunk.starts), pa.py_buffer(chunk.data))
        try:
            raw.validate(full=True)
        except pa.ArrowInvalid:
            numbers, raw = self._split_undecodable(chunk)
        self.batches.append(pa.RecordBatch.from_arrays([numbers, raw], names=["line_no", "raw"]))
        self.pending += len(chunk)
        if self.pending >= LINE_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.batches and not self.undecodable:
            return
        lines = pa.Table.from_batches(self.batches, schema=_LINE_SCHEMA)
        self.ingest.check_lines(self.file_index, self.source, self.report, lines, self.undecodable)
        self.batches, self.pending, self.undecodable = [], 0, []

    def _split_undecodable(self, chunk: LineChunk) -> tuple[pa.Array, pa.Array]:
        """Keep lines that are not UTF-8 apart for the Python path, which rejects them with their position."""
        numbers, texts = [], []
        for offset, text in enumerate(chunk.lines):
            try:
                text.decode("utf-8")
            except UnicodeDecodeError:
                if text.strip():
                    self.undecodable.append((chunk.first_line + offset, text))
                continue
            numbers.append(chunk.first_line + offset)
            texts.append(text)
        return pa.array(numbers, pa.int64()), pa.array(texts, pa.binary()).cast(pa.large_string())


_LINE_SCHEMA = pa.schema([("line_no", pa.int64()), ("raw", pa.large_string())])


def _dump_value(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:
        return shorten(value, RECORD_KEEP_CHARS)


def ingest_paths(
    ledger: Path,
    paths: Iterable[str],
    *,
    deployment: str | None = None,
    strict: bool = False,
    origin: str = "cli",
    progress: Progress | None = None,
    budget: float = store.WRITE_BUDGET_SECONDS,
    classify_causes: bool = True,
) -> IngestReport:
    """Ingest files, folders or ``-`` (standard input) into the ledger and return the report.

    Raises readers.SourceError when a path does not exist or cannot be opened;
    nothing is written then. When the ledger stays busy past `budget`, the batch
    is queued durably in the ledger's inbox and `IngestReport.queued_in_inbox` names it.
    Divergence causes are classified and stored with the divergences. With
    `classify_causes` False this ingest's divergences get no cause rows, so
    only a benchmark of the classification's cost should pass it.
    """
    sources, skipped = find_sources(list(paths))
    return ingest_sources(
        ledger, sources, skipped=skipped, deployment=deployment, strict=strict, origin=origin,
        progress=progress, budget=budget, classify_causes=classify_causes,
    )


def ingest_sources(
    ledger: Path,
    sources: list[SourceFile],
    *,
    skipped: list[str] | None = None,
    deployment: str | None = None,
    strict: bool = False,
    origin: str = "cli",
    progress: Progress | None = None,
    budget: float = store.WRITE_BUDGET_SECONDS,
    classify_causes: bool = True,
) -> IngestReport:
    """Ingest already resolved sources; see `ingest_paths`."""
    started = time.perf_counter()
    started_at = datetime.now(timezone.utc)
    report = IngestReport(skipped=list(skipped or []))
    stage = store.Stage()
    try:
        state = _Ingest(stage, deployment, strict, progress, classify_causes)
        for file_index, source in enumerate(sources):
            report.files.append(state.stage_file(file_index, source))
        state.flush()
        if classify_causes:
            stage.finish_classifying()
        summary = _summary_json(report)
        stage.describe(origin, [source.name for source in sources], started_at, summary)
        stage_file = stage.seal()
    except BaseException:
        stage.discard()
        raise
    try:
        counts = store.merge_stages(ledger, stage_file, budget=budget)
    except store.LedgerBusy:
        report.queued_in_inbox = str(store.move_to_inbox(stage_file, ledger))
        for item in report.files:
            item.ingested = item.read - len(item.rejected) - item.dropped_by_strict
        report.seconds = time.perf_counter() - started
        return report
    except BaseException:
        # The merge rolled back (an unreadable or too new ledger, an interrupt), so the
        # ledger needs nothing from the stage. A re-run reads the sources again.
        _remove_stage(stage_file)
        raise
    _remove_stage(stage_file)
    report.ingest_id = counts.ingest_id
    report.inbox_batches_merged = counts.inbox_batches
    for file_index, item in enumerate(report.files):
        item.ingested = counts.ingested.get(file_index, 0)
        item.duplicates = counts.duplicates.get(file_index, 0)
    report.seconds = time.perf_counter() - started
    log.info(
        "ingest %s: %d read, %d ingested, %d duplicates, %d rejected in %.2f s",
        report.ingest_id, report.read, report.ingested, report.duplicates, report.rejected, report.seconds,
    )
    return report


def _remove_stage(stage_file: Path) -> None:
    for child in stage_file.parent.iterdir():
        child.unlink(missing_ok=True)
    stage_file.parent.rmdir()


def _summary_json(report: IngestReport) -> str:
    """Return the per-file report stored in the ingest log (rejections are in their own table)."""
    files = [
        {"name": item.name, "shape": item.shape, "compressed": item.compressed, "read": item.read,
         "rejected": len(item.rejected), "warnings": item.warnings[:50], "dropped_by_strict": item.dropped_by_strict}
        for item in report.files
    ]
    return orjson.dumps({"files": files, "skipped": report.skipped}).decode()
