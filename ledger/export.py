"""Streaming filtered submissions out of the ledger as CSV, Parquet or JSON Lines.

DuckDB's COPY writes the file in a stream, so an export of ten million rows
never sits in memory; `stream_batches` serves callers that need the rows
themselves (the app's downloads) as Arrow record batches of bounded size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from ledger import store
from ledger.queries import Filters, export_sql

FORMATS = {"csv": "(FORMAT csv, HEADER true)", "parquet": "(FORMAT parquet)", "jsonl": "(FORMAT json)"}


class ExportError(Exception):
    """An export could not be written (unknown format, unwritable destination)."""


def export_file(ledger: Path, destination: Path, file_format: str, filters: Filters) -> int:
    """Write the filtered submissions to `destination`; return the number of rows written."""
    if file_format not in FORMATS:
        raise ExportError(f"unknown format {file_format!r}; use one of {', '.join(FORMATS)}")
    sql, parameters = export_sql(filters, nested=file_format != "csv")
    target = str(destination).replace("'", "''")
    with store.reading(ledger) as connection:
        try:
            row = connection.execute(f"COPY ({sql}) TO '{target}' {FORMATS[file_format]}", parameters).fetchone()
        except Exception as error:  # DuckDB raises IOException and others for the target file
            raise ExportError(f"{destination}: the export failed: {error}") from None
    return int(row[0]) if row else 0


def stream_batches(ledger: Path, filters: Filters, *, nested: bool, rows_per_batch: int = 50_000) -> Iterator[pa.RecordBatch]:
    """Yield the filtered submissions as Arrow record batches, holding the ledger open while iterating."""
    sql, parameters = export_sql(filters, nested=nested)
    with store.reading(ledger) as connection:
        reader = connection.execute(sql, parameters).fetch_record_batch(rows_per_batch)
        yield from reader
