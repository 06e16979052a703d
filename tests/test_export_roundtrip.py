"""Exports of the Explore page read back equal the ledger, in every format, with money exact to the micro-dollar.

The ledger is the sample data plus cases C04 (money that floats get wrong) and
C08 (markup in values). Each export is read back with an ordinary reader of
its format (csv, json, pyarrow), not with DuckDB, and compared with rows read
from the ledger file by hand-written SQL.
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from ledger import export
from ledger.ingest import ingest_paths
from ledger.queries import Filters
from ledger.queries.explore import ExploreFilters

CASES = Path(__file__).resolve().parent / "data" / "cases"
C08_RUN_ID = "<b>r1</b><script>alert(1)</script>"
SCALAR_FIELDS = ("submission_id", "platform_id", "run_id", "deployment", "status", "actions_replayed",
                 "actions_total", "divergences_detected", "location")


def query(ledger: Path, sql: str, parameters: list | tuple = ()) -> list[tuple]:
    with duckdb.connect(str(ledger), read_only=True) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        return connection.execute(sql, list(parameters)).fetchall()


def parse_json(text: str | None) -> Any:
    return None if text is None else json.loads(text, parse_float=Decimal)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


@pytest.fixture(scope="module")
def export_ledger(sample_ledger_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "export.duckdb"
    shutil.copyfile(sample_ledger_template, path)
    ingest_paths(path, [str(CASES / "c04_money.jsonl")], deployment="case-c04")
    ingest_paths(path, [str(CASES / "c08_markup.json")], deployment="case-c08")
    return path


def ledger_records(ledger: Path, ids: set[str] | None = None) -> dict[str, dict]:
    """Every submission of the ledger (or those in `ids`) with its divergences, read by hand-written SQL."""
    rows = query(ledger, """
        SELECT submission_id, platform_id, run_id, deployment, status, actions_replayed, actions_total,
               divergences_detected, location, cost_savings, submitted_at, ingested_at, flags, extra::VARCHAR,
               flags::VARCHAR
        FROM submissions""")
    records = {}
    for row in rows:
        if ids is not None and row[0] not in ids:
            continue
        record = dict(zip(SCALAR_FIELDS, row[:9]))
        record.update(cost_savings=row[9], submitted_at=row[10].astimezone(timezone.utc),
                      ingested_at=row[11].astimezone(timezone.utc), flags=row[12], extra=parse_json(row[13]),
                      flags_text=row[14], divergences=[])
        records[row[0]] = record
    for submission_id, kind, action, index, expected, actual, detail in query(ledger, """
            SELECT submission_id, type, action, action_index, expected::VARCHAR, actual::VARCHAR, detail::VARCHAR
            FROM divergences ORDER BY submission_id, position"""):
        if submission_id in records:
            records[submission_id]["divergences"].append({
                "type": kind, "action": action, "index": index, "expected": parse_json(expected),
                "actual": parse_json(actual), "detail": parse_json(detail),
            })
    return records


def read_csv_export(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    records = []
    for row in rows:
        record = {name: row[name] or None for name in SCALAR_FIELDS}
        for name in ("actions_replayed", "actions_total", "divergences_detected"):
            record[name] = int(record[name])
        record.update(
            cost_savings=Decimal(row["cost_savings"]), submitted_at=parse_time(row["submitted_at"]),
            ingested_at=parse_time(row["ingested_at"]), flags_text=row["flags"] or None,
            extra=parse_json(row["extra"] or None), divergences=parse_json(row["divergences"]),
        )
        records.append(record)
    return records


def read_jsonl_export(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line, parse_float=Decimal) for line in handle if line.strip()]
    records = []
    for row in rows:
        record = {name: row[name] for name in SCALAR_FIELDS}
        record.update(cost_savings=row["cost_savings"], submitted_at=parse_time(row["submitted_at"]),
                      ingested_at=parse_time(row["ingested_at"]), flags=row["flags"], extra=row["extra"],
                      divergences=row["divergences"])
        records.append(record)
    return records


def read_parquet_export(path: Path) -> list[dict]:
    records = []
    for row in pq.read_table(path).to_pylist():
        record = {name: row[name] for name in SCALAR_FIELDS}
        record.update(
            cost_savings=row["cost_savings"], submitted_at=row["submitted_at"].astimezone(timezone.utc),
            ingested_at=row["ingested_at"].astimezone(timezone.utc), flags=row["flags"],
            extra=parse_json(row["extra"]),
            divergences=[{**item, "expected": parse_json(item["expected"]), "actual": parse_json(item["actual"]),
                          "detail": parse_json(item["detail"])} for item in row["divergences"]],
        )
        records.append(record)
    return records


READERS = {
    ("csv", False): (".csv", read_csv_export),
    ("csv", True): (".csv.gz", read_csv_export),
    ("jsonl", False): (".jsonl", read_jsonl_export),
    ("jsonl", True): (".jsonl.gz", read_jsonl_export),
    ("parquet", False): (".parquet", read_parquet_export),
}


def comparable(record: dict, file_format: str) -> dict:
    """Keep the fields a format carries: CSV has flags as DuckDB's list text, the others as lists."""
    kept = {key: value for key, value in record.items() if key not in ("flags", "flags_text")}
    kept["flags"] = record["flags_text"] if file_format == "csv" else record["flags"]
    return kept


def exported(ledger: Path, folder: Path, file_format: str, gzip_on: bool, filters: ExploreFilters,
             columns: tuple[str, ...] | None = None) -> tuple[int, list[dict], Path]:
    suffix, reader = READERS[(file_format, gzip_on)]
    path = folder / f"export{suffix}"
    written = export.export_explored(ledger, path, file_format, filters, columns=columns, gzip=gzip_on)
    return written, reader(path), path


@pytest.mark.parametrize("file_format,gzip_on", list(READERS))
def test_export_roundtrip_equals_ledger(export_ledger: Path, tmp_path: Path, file_format: str, gzip_on: bool):
    written, records, path = exported(export_ledger, tmp_path, file_format, gzip_on, ExploreFilters())
    expected = ledger_records(export_ledger)

    assert written == len(expected)
    assert len(records) == len(expected)
    assert {record["submission_id"] for record in records} == set(expected)
    for record in records:
        assert comparable(record, file_format) == comparable(expected[record["submission_id"]], file_format)
    if gzip_on:
        assert path.read_bytes()[:2] == b"\x1f\x8b"


@pytest.mark.parametrize("file_format,gzip_on", list(READERS))
def test_export_roundtrip_money_exact(export_ledger: Path, tmp_path: Path, file_format: str, gzip_on: bool):
    _, records, _ = exported(export_ledger, tmp_path, file_format, gzip_on, ExploreFilters())
    ledger_sum = query(export_ledger, "SELECT sum(cost_savings) FROM submissions")[0][0]
    case_c04 = [record["cost_savings"] for record in records if record["deployment"] == "case-c04"]

    assert sum(record["cost_savings"] for record in records) == ledger_sum
    assert all(isinstance(record["cost_savings"], Decimal) for record in records)
    assert sum(case_c04) == Decimal("1.09")
    assert Decimal("0.09") in case_c04


@pytest.mark.parametrize("file_format,gzip_on", list(READERS))
def test_export_roundtrip_markup_literal(export_ledger: Path, tmp_path: Path, file_format: str, gzip_on: bool):
    _, records, _ = exported(export_ledger, tmp_path, file_format, gzip_on,
                             ExploreFilters(base=Filters(deployments=("case-c08",))))
    expected = ledger_records(export_ledger, {row[0] for row in query(
        export_ledger, "SELECT submission_id FROM submissions WHERE deployment = 'case-c08'")})

    assert [record["run_id"] for record in records] == [C08_RUN_ID]
    assert records[0]["divergences"] == expected[records[0]["submission_id"]]["divergences"]


def test_export_oldest_first(export_ledger: Path, tmp_path: Path):
    _, records, _ = exported(export_ledger, tmp_path, "parquet", False, ExploreFilters())
    keys = [(record["submitted_at"], record["submission_id"]) for record in records]

    assert keys == sorted(keys)


def test_export_filtered_matches_hand_sql(export_ledger: Path, tmp_path: Path):
    filters = ExploreFilters(
        base=Filters(deployments=("prod-eu", "prod-us"), statuses=("partial", "failed")),
        run_id_contains="A", min_divergences=1, min_savings=Decimal("0.1"),
    )
    _, records, _ = exported(export_ledger, tmp_path, "jsonl", False, filters)
    expected = {row[0] for row in query(export_ledger, """
        SELECT submission_id FROM submissions
        WHERE deployment IN ('prod-eu', 'prod-us') AND status IN ('partial', 'failed')
          AND lower(run_id) LIKE '%a%' AND divergences_detected >= 1 AND cost_savings >= 0.1""")}

    assert expected
    assert {record["submission_id"] for record in records} == expected


def test_export_cause_filter_matches_hand_sql(export_ledger: Path, tmp_path: Path):
    _, records, _ = exported(export_ledger, tmp_path, "csv", False, ExploreFilters(causes=("random_number",)))
    expected = {row[0] for row in query(export_ledger, """
        SELECT DISTINCT submission_id FROM divergence_causes WHERE cause = 'random_number'""")}

    assert expected
    assert {record["submission_id"] for record in records} == expected


def test_export_chosen_columns(export_ledger: Path, tmp_path: Path):
    path = tmp_path / "columns.csv"
    written = export.export_explored(export_ledger, path, "csv", ExploreFilters(base=Filters(deployments=("case-c04",))),
                                     columns=("run_id", "saved", "divergences"))
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    expected = query(export_ledger, """
        SELECT run_id, cost_savings::VARCHAR, divergences_detected::VARCHAR FROM submissions
        WHERE deployment = 'case-c04' ORDER BY submitted_at, submission_id""")

    assert rows[0] == ["run_id", "saved", "divergences"]
    assert [tuple(row) for row in rows[1:]] == expected
    assert written == len(expected)


def test_export_unknown_format(export_ledger: Path, tmp_path: Path):
    with pytest.raises(export.ExportError) as raised:
        export.export_explored(export_ledger, tmp_path / "x.xlsx", "xlsx", ExploreFilters())

    assert str(raised.value) == "unknown format 'xlsx'; use one of csv, parquet, jsonl"


def test_export_unwritable_destination(export_ledger: Path, tmp_path: Path):
    target = tmp_path / "missing-folder" / "x.csv"

    with pytest.raises(export.ExportError) as raised:
        export.export_explored(export_ledger, target, "csv", ExploreFilters())

    assert str(raised.value).startswith(f"{target}: the export failed: ")


def test_export_rejections_roundtrip(export_ledger: Path, tmp_path: Path):
    ingest_id = query(export_ledger, "SELECT max(ingest_id) FROM rejected")[0][0]
    one, every = tmp_path / "one.csv", tmp_path / "all.csv"
    written_one = export.export_rejections(export_ledger, one, ingest_id)
    written_all = export.export_rejections(export_ledger, every, None)
    with one.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    expected = query(export_ledger, "SELECT location, field, value, reason, record FROM rejected "
                                    "WHERE ingest_id = ? ORDER BY rowid", [ingest_id])

    assert written_one == len(expected) > 0
    assert [(row["location"], row["field"] or None, row["value"] or None, row["reason"], row["record"] or None)
            for row in rows] == expected
    assert written_all == query(export_ledger, "SELECT count(*) FROM rejected")[0][0]


def test_stream_batches_yields_every_row(sample_ledger):
    from ledger.export import stream_batches
    from ledger.queries import Filters

    batches = list(stream_batches(sample_ledger, Filters(), nested=True, rows_per_batch=1000))
    with duckdb.connect(str(sample_ledger), read_only=True) as connection:
        expected = connection.execute("SELECT count(*), sum(cost_savings) FROM submissions").fetchone()
    assert len(batches) >= 3
    assert sum(batch.num_rows for batch in batches) == expected[0]
    total = sum(sum(value.as_py() for value in batch.column("cost_savings")) for batch in batches)
    assert total == expected[1]
