"""Files uploaded in the app, on their way into an ingest.

An upload's bytes go to a temporary file in a private folder, under a name
this module makes up (``0001.upload``), so the file name the browser sent
never reaches the file system. That name is kept only as the display name:
reports, rejection locations and the ingest log show it, and the readers use
it as they use any file name, to spot ``.jsonl`` and a run id such as
``results_run-42.json``. Gzip is found by the content's magic bytes, not by
the name.

Two limits keep one upload from filling the disk: its size as sent
(`max_bytes`) and, for gzip, its size once decompressed (`max_expanded_bytes`).
A file over either is skipped with a note naming it, and the others go on.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import unicodedata
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ledger import ingest, store
from ledger.readers import GZIP_MAGIC, SourceFile

log = logging.getLogger(__name__)

MAX_UPLOAD_MB_ENV = "REPLAY_LEDGER_MAX_UPLOAD_MB"
DEFAULT_MAX_UPLOAD_MB = 200
# The 70 MB JSON Lines export of 200,000 generated submissions compresses about
# 10 times with gzip. 25 times the upload cap is an estimate that leaves room for
# more repetitive files, while a gzip bomb, which expands thousands of times, stops early.
EXPANSION_FACTOR = 25
DISPLAY_NAME_MAX = 200
COPY_CHUNK = 1 << 20
UPLOAD_ORIGIN = "upload"


class UploadRejected(Exception):
    """An uploaded file was not accepted: too large as sent, or once decompressed."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: skipped, {reason}")
        self.name = name
        self.reason = reason


def max_upload_bytes() -> int:
    """Return the size cap of one upload: $REPLAY_LEDGER_MAX_UPLOAD_MB megabytes, 200 by default.

    Raises ValueError when the variable is set to anything but a whole number from 1 up.
    """
    raw = os.environ.get(MAX_UPLOAD_MB_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_UPLOAD_MB * 1_000_000
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{MAX_UPLOAD_MB_ENV}={raw[:20]!r} is not a whole number of megabytes from 1 up")
    return int(raw) * 1_000_000


def megabytes(size: int) -> str:
    """Format a byte count in decimal megabytes, as browsers and Streamlit's uploader show sizes: ``12.3 MB``."""
    return f"{size / 1_000_000:,.1f} MB"


def display_name(raw: str | None, position: int) -> str:
    """Return the name an upload is shown by: the browser's file name with control characters removed, cut short.

    An empty name becomes ``upload-<position>``. The result is only ever shown
    or stored as text, never used as a path.
    """
    text = "".join("?" if unicodedata.category(char).startswith("C") else char for char in raw or "").strip()
    if len(text) > DISPLAY_NAME_MAX:
        text = text[: DISPLAY_NAME_MAX - 1] + "…"
    return text or f"upload-{position}"


@dataclass
class SavedUploads:
    """Uploads written to a private temporary folder, ready to ingest, and notes on the ones skipped."""

    folder: Path
    sources: list[SourceFile] = field(default_factory=list)
    skipped: list[UploadRejected] = field(default_factory=list)

    def remove(self) -> None:
        """Delete the temporary folder and every file in it."""
        shutil.rmtree(self.folder, ignore_errors=True)


def save_uploads(
    files: Iterable[tuple[str | None, BinaryIO]],
    *,
    max_bytes: int | None = None,
    max_expanded_bytes: int | None = None,
    directory: Path | None = None,
) -> SavedUploads:
    """Copy uploads, given as (browser file name, readable binary stream), to temporary files.

    Returns the saved sources, named by their display names, and a note for
    every upload skipped because it is over `max_bytes` (default:
    `max_upload_bytes()`) or, for gzip, expands past `max_expanded_bytes`
    (default: `EXPANSION_FACTOR` times `max_bytes`). The caller removes the
    folder with `SavedUploads.remove` once the ingest is done.
    """
    limit = max_upload_bytes() if max_bytes is None else max_bytes
    expanded_limit = EXPANSION_FACTOR * limit if max_expanded_bytes is None else max_expanded_bytes
    saved = SavedUploads(Path(tempfile.mkdtemp(prefix="replay-ledger-upload-", dir=directory)))
    seen: dict[str, int] = {}
    try:
        for position, (raw_name, stream) in enumerate(files, start=1):
            name = display_name(raw_name, position)
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                name = f"{name} ({seen[name]})"
            target = saved.folder / f"{position:04d}.upload"
            try:
                compressed = _copy_capped(stream, target, name, limit, expanded_limit)
            except UploadRejected as error:
                target.unlink(missing_ok=True)
                saved.skipped.append(error)
                log.info("upload skipped: %s", error)
                continue
            saved.sources.append(SourceFile(name=name, path=target, compressed=compressed))
    except BaseException:
        saved.remove()
        raise
    return saved


def _copy_capped(stream: BinaryIO, target: Path, name: str, limit: int, expanded_limit: int) -> bool:
    """Copy `stream` to `target`, raising UploadRejected past either cap; return whether it is gzip."""
    written = 0
    checker: _GzipSize | None = None
    with target.open("wb") as handle:
        while chunk := stream.read(COPY_CHUNK):
            if checker is None and written == 0:
                checker = _GzipSize(expanded_limit) if chunk[:2] == GZIP_MAGIC else None
            written += len(chunk)
            if written > limit:
                raise UploadRejected(
                    name, f"the file is larger than the upload limit of {megabytes(limit)}; "
                    "split it, or ingest it with `replay-ledger ingest PATH`"
                )
            if checker is not None and not checker.feed(chunk):
                raise UploadRejected(
                    name, f"the gzip data expands to more than {megabytes(expanded_limit)}; "
                    "split it, or ingest it with `replay-ledger ingest PATH`"
                )
            handle.write(chunk)
    return checker is not None


class _GzipSize:
    """Count the bytes gzip data expands to, across members, without keeping them.

    Corrupt data stops the count and is left for the readers, which report it
    with the file's name when the ingest reads it.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.expanded = 0
        self.decompressor = zlib.decompressobj(wbits=31)
        self.broken = False

    def feed(self, data: bytes) -> bool:
        """Decompress `data` and return False once the total is past the limit."""
        while data and not self.broken:
            try:
                # Bounded output per call, so a small bomb never expands in memory at once.
                output = self.decompressor.decompress(data, COPY_CHUNK)
            except zlib.error:
                self.broken = True
                break
            self.expanded += len(output)
            if self.expanded > self.limit:
                return False
            if self.decompressor.eof:
                # Another member may follow, as `cat a.gz b.gz` makes.
                data = self.decompressor.unused_data
                self.decompressor = zlib.decompressobj(wbits=31)
            else:
                data = self.decompressor.unconsumed_tail
        return True


@dataclass
class UploadOutcome:
    """An upload batch's ingest report, and the uploads skipped before it (also noted in `report.skipped`)."""

    report: ingest.IngestReport
    skipped: list[UploadRejected]


def ingest_uploads(
    ledger: Path,
    files: Iterable[tuple[str | None, BinaryIO]],
    *,
    deployment: str | None = None,
    strict: bool = False,
    progress: ingest.Progress | None = None,
    max_bytes: int | None = None,
    max_expanded_bytes: int | None = None,
) -> UploadOutcome:
    """Save uploads to temporary files and ingest them in one batch under origin ``upload``.

    When every upload was skipped, nothing is ingested and the report has no
    files. The temporary files are removed whatever happens. Raises what
    `ingest.ingest_sources` raises.
    """
    saved = save_uploads(files, max_bytes=max_bytes, max_expanded_bytes=max_expanded_bytes)
    notes = [str(error) for error in saved.skipped]
    try:
        if not saved.sources:
            return UploadOutcome(ingest.IngestReport(skipped=notes), saved.skipped)
        report = ingest.ingest_sources(
            ledger, saved.sources, skipped=notes, deployment=deployment, strict=strict,
            origin=UPLOAD_ORIGIN, progress=progress, budget=store.WRITE_BUDGET_SECONDS,
        )
        return UploadOutcome(report, saved.skipped)
    finally:
        saved.remove()
