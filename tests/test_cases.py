"""Every input case in tests/data/cases (C01-C07, C10, C11) with the result its README expects."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from typer.testing import CliRunner

from ledger import store
from ledger.cli import app
from ledger.ingest import EXIT_OK, EXIT_REJECTED, ingest_paths
from ledger.queries import Filters, tiles

CASES = Path(__file__).resolve().parent / "data" / "cases"
TEN_UTC = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)


def ingest_case(ledger: Path, *names: str):
    return ingest_paths(ledger, [str(CASES / name) for name in names])


def query(ledger: Path, sql: str, parameters: list | None = None) -> list[tuple]:
    with store.reading(ledger) as connection:
        return connection.execute(sql, parameters or []).fetchall()


def rejections(report) -> list[tuple[str, str, str]]:
    return [(item.location, item.field, item.value) for file in report.files for item in file.rejected]


# --- C01: divergence inputs whose keys change between files ----------------------------------------


def c01_divergences(ledger: Path) -> list[tuple]:
    rows = query(
        ledger,
        "SELECT s.run_id, d.position, d.expected, d.actual FROM divergences AS d "
        "JOIN submissions AS s USING (submission_id) ORDER BY s.run_id, d.position",
    )
    return [(run, position, json.loads(expected), json.loads(actual)) for run, position, expected, actual in rows]


def test_c01_divergences_stored_whole(ledger):
    ingest_case(ledger, "c01_drift_a.jsonl")
    ingest_case(ledger, "c01_drift_b.jsonl")
    stored = c01_divergences(ledger)
    assert [row[0] for row in stored] == ["drift-1", "drift-2", "drift-3"]
    assert stored[1][2] == {"args": [], "kwargs": {"query": "q", "temperature": 0.7}}
    assert stored[1][3] == {"args": [], "kwargs": {"query": "q", "temperature": 0.9}}
    assert stored[2][2] == {"args": ["https://example.com"], "kwargs": {"n": 3}}
    assert stored[0][2] == {"args": [], "kwargs": {"query": "q"}}


def test_c01_order_does_not_change_schema(ledger, tmp_path):
    ingest_case(ledger, "c01_drift_a.jsonl")
    ingest_case(ledger, "c01_drift_b.jsonl")
    reversed_ledger = tmp_path / "reversed.duckdb"
    ingest_case(reversed_ledger, "c01_drift_b.jsonl")
    ingest_case(reversed_ledger, "c01_drift_a.jsonl")
    assert query(ledger, "DESCRIBE divergences") == query(reversed_ledger, "DESCRIBE divergences")
    assert query(ledger, "DESCRIBE submissions") == query(reversed_ledger, "DESCRIBE submissions")
    assert c01_divergences(ledger) == c01_divergences(reversed_ledger)


def test_c01_temperature_drift_by_sql(ledger):
    ingest_case(ledger, "c01_drift_a.jsonl", "c01_drift_b.jsonl")
    rows = query(
        ledger,
        "SELECT s.run_id, d.expected -> '$.kwargs.temperature', d.actual -> '$.kwargs.temperature' "
        "FROM divergences AS d JOIN submissions AS s USING (submission_id) "
        "WHERE (d.expected -> '$.kwargs.temperature') IS NOT NULL",
    )
    assert [(run, json.loads(before), json.loads(after)) for run, before, after in rows] == [("drift-2", 0.7, 0.9)]


# --- C02: one instant written five ways ----------------------------------------------------------------


def test_c02_five_forms_one_instant(ledger):
    report = ingest_case(ledger, "c02_timestamps.jsonl")
    assert (report.read, report.ingested, report.rejected) == (5, 5, 0)
    rows = query(ledger, "SELECT run_id, submitted_at FROM submissions ORDER BY run_id")
    assert rows == [(f"ts-{number}", TEN_UTC) for number in range(5)]
    kinds = {row[1] for row in query(ledger, "DESCRIBE submissions")}
    assert "TIMESTAMP WITH TIME ZONE" in kinds


def test_c02_zoneless_taken_as_utc_and_flagged(ledger):
    report = ingest_case(ledger, "c02_timestamps.jsonl")
    name = str(CASES / "c02_timestamps.jsonl")
    assert report.files[0].warnings == [f"{name}:3: submitted_at had no time zone and was taken as UTC"]
    assert query(ledger, "SELECT run_id FROM submissions WHERE len(flags) > 0") == [("ts-2",)]


# --- C03: non-finite savings ---------------------------------------------------------------------------


def test_c03_non_finite_rejected_with_lines(ledger):
    report = ingest_case(ledger, "c03_nonfinite.jsonl")
    name = str(CASES / "c03_nonfinite.jsonl")
    rejected = report.files[0].rejected
    assert [(item.location, item.field) for item in rejected] == [
        (f"{name}:1", "cost_savings"), (f"{name}:2", "cost_savings"), (f"{name}:3", "cost_savings"),
    ]
    assert [item.reason for item in rejected] == [
        "must be a finite number, got NaN",
        "must be a JSON number of US dollars, got 'Infinity'",
        "must be a finite number, got 1E+999",
    ]
    assert report.exit_code == EXIT_REJECTED


def test_c03_ok_record_exact(ledger):
    ingest_case(ledger, "c03_nonfinite.jsonl")
    assert query(ledger, "SELECT run_id, cost_savings FROM submissions") == [("ok-1", Decimal("0.004"))]
    assert tiles(ledger, Filters()).cost_saved == Decimal("0.004")


def test_c03_tile_not_zero_dollars(ledger):
    ingest_case(ledger, "c03_nonfinite.jsonl")
    result = CliRunner().invoke(app, ["stats", "--db", str(ledger)])
    assert result.exit_code == 0, result.output
    assert "$0.004" in result.stdout
    assert "$0.00 " not in result.stdout + " "
    assert "NaN" not in result.stdout


# --- C04: money that floats would get wrong ----------------------------------------------------------------


def test_c04_exactly_1_09(ledger):
    report = ingest_case(ledger, "c04_money.jsonl")
    assert report.ingested == 11
    assert tiles(ledger, Filters()).cost_saved == Decimal("1.09")
    assert query(ledger, "SELECT sum(cost_savings) FROM submissions") == [(Decimal("1.09"),)]


def test_c04_same_on_reload(ledger):
    ingest_case(ledger, "c04_money.jsonl")
    first = tiles(ledger, Filters()).cost_saved
    ingest_case(ledger, "c04_money.jsonl")
    assert tiles(ledger, Filters()).cost_saved == first == Decimal("1.09")


# --- C05: export pages ------------------------------------------------------------------------------


def test_c05_pages_stored_once(ledger):
    report = ingest_case(ledger, "c05_page1.json", "c05_page2.json", "c05_page3.json")
    # The README names sub-1 to sub-4, but the three files contain only sub-1, sub-2 (twice) and sub-3.
    assert query(ledger, "SELECT submission_id, platform_id, run_id FROM submissions ORDER BY 1") == [
        ("sub-1", "sub-1", "page-1"), ("sub-2", "sub-2", "page-2"), ("sub-3", "sub-3", "page-3"),
    ]
    assert (report.read, report.ingested, report.duplicates, report.rejected) == (4, 3, 1, 0)
    assert report.exit_code == EXIT_OK
    assert [item.shape for item in report.files] == ["envelope", "array", "envelope"]


def test_c05_model_key_kept(ledger):
    ingest_case(ledger, "c05_page1.json", "c05_page2.json", "c05_page3.json")
    rows = query(ledger, "SELECT submission_id, extra ->> '$.model' FROM submissions WHERE extra IS NOT NULL")
    assert rows == [("sub-3", "m-1")]


def test_c05_twice_all_duplicates(ledger):
    ingest_case(ledger, "c05_page1.json", "c05_page2.json", "c05_page3.json")
    again = ingest_case(ledger, "c05_page1.json", "c05_page2.json", "c05_page3.json")
    assert (again.ingested, again.duplicates) == (0, 4)
    assert query(ledger, "SELECT count(*) FROM submissions") == [(3,)]


# --- C06: malformed lines and a byte-order mark ---------------------------------------------------------------


def test_c06_malformed_report(ledger):
    report = ingest_case(ledger, "c06_malformed.jsonl")
    name = str(CASES / "c06_malformed.jsonl")
    assert report.files[0].read == 5
    assert report.files[0].ingested == 2
    rejected = report.files[0].rejected
    assert [item.location for item in rejected] == [f"{name}:2", f"{name}:3", f"{name}:5"]
    assert rejected[0].reason.startswith("invalid JSON at column 192: Extra data")
    assert rejected[1].reason.startswith("invalid JSON at column 192: Expecting property name")
    assert rejected[2].reason == "the record is not valid UTF-8 (byte 0xe9 at column 16); save the file as UTF-8"
    assert query(ledger, "SELECT run_id FROM submissions ORDER BY run_id") == [("bad-ok-1",), ("bad-ok-4",)]


def test_c06_no_empty_run_id(ledger):
    ingest_case(ledger, "c06_malformed.jsonl", "c06_bom.jsonl")
    assert query(ledger, "SELECT count(*) FROM submissions WHERE trim(run_id) = ''") == [(0,)]


def test_c06_bom_file_ingests(ledger):
    report = ingest_case(ledger, "c06_bom.jsonl")
    assert (report.read, report.ingested, report.rejected) == (1, 1, 0)
    assert query(ledger, "SELECT run_id FROM submissions") == [("bom-1",)]


# --- C07: one invalid field a line ---------------------------------------------------------------------------


def test_c07_each_line_rejected_by_field_and_value(ledger):
    report = ingest_case(ledger, "c07_invalid.jsonl")
    name = str(CASES / "c07_invalid.jsonl")
    assert report.ingested == 0
    assert rejections(report) == [
        (f"{name}:1", "actions_replayed", "5"),
        (f"{name}:2", "actions_replayed", "-1"),
        (f"{name}:3", "status", "done"),
        (f"{name}:4", "run_id", ""),
        (f"{name}:5", "cost_savings", "-0.5"),
        (f"{name}:6", "actions_total", "9"),
        (f"{name}:7", "divergences_detected", "2"),
        (f"{name}:8", "status", ""),
    ]


def test_c07_messages(ledger):
    report = ingest_case(ledger, "c07_invalid.jsonl")
    assert [item.reason for item in report.files[0].rejected] == [
        "is 5, more than actions_total 3",
        "must not be negative, got -1",
        "must be one of success, partial, failed; got 'done'",
        "must not be empty; give each replay's run id",
        "must not be negative, got -0.5",
        "must be a JSON integer, got the string '9'; write it without quotes",
        "is 2 but 0 divergences are listed; fix either so they agree",
        "is missing; every replay result needs one of success, partial, failed",
    ]
    assert query(ledger, "SELECT count(*) FROM submissions") == [(0,)]
    assert query(ledger, "SELECT count(*) FROM rejected") == [(8,)]


# --- C10 and C11: real SDK bodies, run id in the file name --------------------------------------------------------


def test_c10_sdk_post(ledger):
    report = ingest_case(ledger, "c10_sdk_post_run-demo-1.json")
    assert report.ingested == 1
    row = query(
        ledger,
        "SELECT run_id, status, actions_replayed, actions_total, divergences_detected, cost_savings FROM submissions",
    )
    assert row == [("run-demo-1", "partial", 3, 3, 2, Decimal("0.09"))]
    divergences = query(ledger, "SELECT type, action, action_index, expected, actual FROM divergences ORDER BY position")
    assert [(kind, action, index) for kind, action, index, _, _ in divergences] == [
        ("input_mismatch", "fetch_data", 0), ("input_mismatch", "summarize", 1),
    ]
    assert json.loads(divergences[0][3])["kwargs"]["ts"] == "2026-12-04T19:34:47.590247"
    assert json.loads(divergences[1][4])["kwargs"]["seed"] == 0.09710858188540006


def test_c11_strict_abort(ledger):
    ingest_case(ledger, "c11_strict_abort_run-abc.json")
    row = query(ledger, "SELECT run_id, status, actions_replayed, actions_total, divergences_detected FROM submissions")
    assert row == [("run-abc", "failed", 4, 12, 1)]
    divergences = query(ledger, "SELECT type, action_index, expected, actual FROM divergences")
    assert [(kind, index, json.loads(expected), json.loads(actual)) for kind, index, expected, actual in divergences] == [
        ("action_mismatch", 3, "summarize", "fetch_data")
    ]


def test_c10_c11_without_timestamp_flagged(ledger):
    report = ingest_case(ledger, "c10_sdk_post_run-demo-1.json", "c11_strict_abort_run-abc.json")
    flags = query(ledger, "SELECT run_id, flags FROM submissions ORDER BY run_id")
    assert flags == [("run-abc", ["record had no timestamp, so the ingest time was used"]),
                     ("run-demo-1", ["record had no timestamp, so the ingest time was used"])]
    again = ingest_case(ledger, "c10_sdk_post_run-demo-1.json", "c11_strict_abort_run-abc.json")
    assert (report.ingested, again.ingested, again.duplicates) == (2, 0, 2)
