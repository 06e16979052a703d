"""Streaming filtered submissions out of the ledger as CSV, Parquet or JSON Lines.

DuckDB's COPY writes the file in a stream, so an export of ten million rows
never sits in memory; `stream_batches` serves callers that need the rows
themselves (the app's downloads) as Arrow record batches of bounded size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from ledger import store
from ledger.queries import Filters, explore, export_sql, ingests

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
        reader = connection.sql(sql, params=parameters).to_arrow_reader(rows_per_batch)
        yield from reader


# Explore page downloads: the COPY options of each format, plain or compressed.
# Parquet is always compressed (zstd); CSV and JSON Lines are gzip when asked.
EXPLORE_FORMATS = {
    "csv": ("(FORMAT csv, HEADER true)", "(FORMAT csv, HEADER true, COMPRESSION gzip)"),
    "parquet": ("(FORMAT parquet, COMPRESSION zstd)", "(FORMAT parquet, COMPRESSION zstd)"),
    "jsonl": ("(FORMAT json)", "(FORMAT json, COMPRESSION gzip)"),
}


def export_explored(
    ledger: Path,
    destination: Path,
    file_format: str,
    filters: explore.ExploreFilters,
    *,
    columns: tuple[str, ...] | None = None,
    gzip: bool = False,
) -> int:
    """Write every submission matching the Explore page's filters to `destination`; return the rows written.

    DuckDB's COPY streams the rows into the file, so memory stays flat however
    many match. Without `columns` each row is the full record with its
    divergences, as `export_file` writes it; with `columns` only those columns
    of the Explore table. Raises ExportError for an unknown format or a failed
    write, and explore.InvalidColumn or explore.CausesUnavailable for bad filters.
    """
    if file_format not in EXPLORE_FORMATS:
        raise ExportError(f"unknown format {file_format!r}; use one of {', '.join(EXPLORE_FORMATS)}")
    causes_table = explore.has_causes_table(ledger)
    sql, parameters = explore.export_sql(
        filters, nested=file_format != "csv", causes_table=causes_table, columns=columns)
    options = EXPLORE_FORMATS[file_format][1 if gzip else 0]
    target = str(destination).replace("'", "''")
    with store.reading(ledger) as connection:
        try:
            row = connection.execute(f"COPY ({sql}) TO '{target}' {options}", parameters).fetchone()
        except duckdb.Error as error:
            raise ExportError(f"{destination}: the export failed: {error}") from None
    return int(row[0]) if row else 0


def export_rejections(ledger: Path, destination: Path, ingest_id: int | None) -> int:
    """Write the rejected records of one ingest (or of all, with None) to `destination` as CSV; return the rows.

    Raises ExportError when the file cannot be written.
    """
    sql, parameters = ingests.rejections_sql(ingest_id)
    target = str(destination).replace("'", "''")
    with store.reading(ledger) as connection:
        try:
            row = connection.execute(f"COPY ({sql}) TO '{target}' {FORMATS['csv']}", parameters).fetchone()
        except duckdb.Error as error:
            raise ExportError(f"{destination}: the export failed: {error}") from None
    return int(row[0]) if row else 0
