"""Files the app prepares for download, in private temporary folders, and their clean-up.

An Explore download is written to disk with DuckDB's COPY before the user
clicks, so the page can check its size against the cap before it offers a
download. Its folder stays until the session prepares another file, or until
`remove_old_exports` finds it older than an hour. Rejected records are
written and read back only when the user clicks, and their folder is removed
at once.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ledger import export
from ledger.queries import explore

log = logging.getLogger(__name__)

MAX_DOWNLOAD_MB_ENV = "REPLAY_LEDGER_MAX_DOWNLOAD_MB"
DEFAULT_MAX_DOWNLOAD_MB = 500
EXPORT_DIR_PREFIX = "replay-ledger-export-"
REJECTED_DIR_PREFIX = "replay-ledger-rejected-"
EXPORT_MAX_AGE_SECONDS = 3600
FORMAT_SUFFIXES = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}
FORMAT_MIME = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet", "jsonl": "application/x-ndjson"}
REJECTIONS_HEADER = ("file", "location", "field", "value", "reason")


@dataclass(frozen=True)
class PreparedExport:
    """An Explore export written to a private temporary folder, which the caller removes when done with it."""

    folder: Path
    path: Path
    rows: int
    size: int
    file_name: str
    seconds: float


def max_download_bytes() -> int:
    """Return the largest file the page serves: $REPLAY_LEDGER_MAX_DOWNLOAD_MB megabytes, 500 by default."""
    raw = os.environ.get(MAX_DOWNLOAD_MB_ENV, "").strip()
    if raw.isascii() and raw.isdigit() and int(raw) >= 1:
        return int(raw) * 1_000_000
    if raw:
        log.warning("%s=%r is not a whole number of megabytes; using %d", MAX_DOWNLOAD_MB_ENV, raw[:20],
                    DEFAULT_MAX_DOWNLOAD_MB)
    return DEFAULT_MAX_DOWNLOAD_MB * 1_000_000


def remove_old_exports(directory: Path | None = None) -> None:
    """Delete export folders of this app older than an hour, left behind by sessions that ended.

    `directory` is where the folders are, by default the system's temporary folder.
    """
    cutoff = time.time() - EXPORT_MAX_AGE_SECONDS
    for folder in Path(directory or tempfile.gettempdir()).glob(EXPORT_DIR_PREFIX + "*"):
        try:
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


def remove_export(folder: str | Path) -> None:
    """Delete a prepared export's folder and the file in it. A folder that is already gone is not an error."""
    shutil.rmtree(folder, ignore_errors=True)


def prepare_explore_export(ledger: Path, filters: explore.ExploreFilters, columns: tuple[str, ...] | None,
                           file_format: str, gzip: bool) -> PreparedExport:
    """Write the Explore download to a new private temporary folder with DuckDB's COPY.

    The file name offered to the user carries the UTC time, such as
    ``replay-ledger-submissions-20260301-110000.csv.gz``. Parquet is never
    gzipped, because it is compressed already. Removes the folder and
    re-raises when `export.export_explored` raises (export.ExportError,
    store.LedgerBusy, explore.InvalidFilter, explore.InvalidColumn).
    """
    folder = Path(tempfile.mkdtemp(prefix=EXPORT_DIR_PREFIX))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    suffix = FORMAT_SUFFIXES[file_format] + (".gz" if gzip and file_format != "parquet" else "")
    path = folder / f"export{suffix}"
    started = time.perf_counter()
    try:
        rows = export.export_explored(ledger, path, file_format, filters, columns=columns, gzip=gzip)
    except BaseException:
        remove_export(folder)
        raise
    return PreparedExport(folder=folder, path=path, rows=rows, size=path.stat().st_size,
                          file_name=f"replay-ledger-submissions-{stamp}{suffix}",
                          seconds=time.perf_counter() - started)


def file_reader(path: str | Path) -> Callable[[], bytes]:
    """Return a callable that reads the prepared file when the user clicks Download, not before."""
    # NOTE: Streamlit 1.67 keeps every download's bytes in memory (MemoryMediaFileStorage) while it is
    # served, so the file passes through memory once; max_download_bytes() bounds that.
    def read() -> bytes:
        return Path(path).read_bytes()
    return read


def rejections_csv(rows: list[tuple]) -> bytes:
    """Return rejected records, given as (file, location, field, value, reason) rows, as UTF-8 CSV with a header."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(REJECTIONS_HEADER)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def rejections_reader(ledger: Path, ingest_id: int | None) -> Callable[[], bytes]:
    """Return a callable that writes the rejected records with DuckDB's COPY when the user clicks, and reads them.

    `ingest_id` None means the rejections of every ingest. The callable removes
    its temporary folder before it returns, and raises export.ExportError when
    the file cannot be written.
    """
    def read() -> bytes:
        folder = Path(tempfile.mkdtemp(prefix=REJECTED_DIR_PREFIX))
        try:
            target = folder / "rejected.csv"
            export.export_rejections(ledger, target, ingest_id)
            return target.read_bytes()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return read
