"""Tests for ledger.store through real ledger files: schema, migrations, idempotency, money, time, deployments."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from ledger import store
from ledger.ingest import ingest_paths
from ledger.queries import Filters, tiles
from tests.records import query, record, write_lines

CASES = Path(__file__).resolve().parent / "data" / "cases"
TEN_UTC = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)


def count(ledger: Path, table: str = "submissions") -> int:
    return query(ledger, f"SELECT count(*) FROM {table}")[0][0]


# --- schema and migrations ----------------------------------------------------------------


def describe(ledger: Path, table: str) -> dict[str, str]:
    return {row[0]: row[1] for row in query(ledger, f"DESCRIBE {table}")}


def test_schema_submissions_types(ledger):
    store.create_empty(ledger)
    columns = describe(ledger, "submissions")
    assert columns["cost_savings"] == "DECIMAL(18,6)"
    assert columns["submitted_at"] == "TIMESTAMP WITH TIME ZONE"
    assert columns["extra"] == "JSON"
    assert columns["actions_replayed"] == "BIGINT"
    assert columns["run_id"] == "VARCHAR"
    assert columns["flags"] == "VARCHAR[]"


def test_schema_divergences_types(ledger):
    store.create_empty(ledger)
    columns = describe(ledger, "divergences")
    assert columns["expected"] == "JSON"
    assert columns["actual"] == "JSON"
    assert columns["submission_id"] == "VARCHAR"


def test_schema_every_table_present(ledger):
    store.create_empty(ledger)
    tables = {row[0] for row in query(ledger, "SELECT table_name FROM information_schema.tables")}
    assert {"submissions", "divergences", "deploys", "ingest_log", "rejected", "schema_migrations"} <= tables
    assert describe(ledger, "deploys")["deployed_at"] == "TIMESTAMP WITH TIME ZONE"
    assert describe(ledger, "rejected")["reason"] == "VARCHAR"


def test_schema_migrations_records_version(ledger):
    store.create_empty(ledger)
    versions = [row[0] for row in query(ledger, "SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [version for version, _, _ in store.MIGRATIONS]
    assert versions[-1] == store.SCHEMA_VERSION


def test_migrate_twice_no_op(ledger):
    store.create_empty(ledger)
    before = query(ledger, "SELECT version, applied_at FROM schema_migrations ORDER BY version")
    store.create_empty(ledger)
    with store.writing(ledger) as connection:
        assert store.migrate(connection) == store.SCHEMA_VERSION
    assert query(ledger, "SELECT version, applied_at FROM schema_migrations ORDER BY version") == before


def test_migrate_keeps_data(ledger, tmp_path):
    ingest_paths(ledger, [str(write_lines(tmp_path / "a.jsonl", [record(1), record(2)]))])
    store.create_empty(ledger)
    assert count(ledger) == 2


def test_ledger_too_new_rejected(ledger):
    store.create_empty(ledger)
    newer = store.SCHEMA_VERSION + 1
    connection = duckdb.connect(str(ledger))
    connection.execute("INSERT INTO schema_migrations VALUES (?, now(), 'from the future')", [newer])
    connection.close()
    with pytest.raises(store.LedgerTooNew) as caught:
        with store.writing(ledger):
            pass
    assert str(caught.value) == (
        f"the ledger has schema version {newer}, this release knows up to {store.SCHEMA_VERSION}; "
        "upgrade replay-ledger"
    )


def test_reading_missing_ledger(tmp_path):
    with pytest.raises(store.LedgerMissing):
        with store.reading(tmp_path / "none.duckdb"):
            pass
    assert not (tmp_path / "none.duckdb").exists()


# --- idempotency ----------------------------------------------------------------------------


CSV_TEXT = "run_id,status\nrun-1,success\n"


def csv_posing_as_ledger(tmp_path: Path) -> Path:
    """Return a CSV file, which DuckDB would open as a temporary database that views it."""
    path = tmp_path / "notes.csv"
    path.write_text(CSV_TEXT)
    return path


def test_writing_data_file_rejected(tmp_path):
    path = csv_posing_as_ledger(tmp_path)
    with pytest.raises(store.LedgerUnreadable) as raised:
        with store.writing(path):
            pass
    assert str(raised.value).startswith(f"{path}: is not a DuckDB ledger file (it starts with 'run_id,s'); ")
    assert path.read_text() == CSV_TEXT


@pytest.mark.parametrize("opener", ["reading", "sandbox"])
def test_reading_data_file_rejected(tmp_path, opener):
    path = csv_posing_as_ledger(tmp_path)
    with pytest.raises(store.LedgerUnreadable):
        with getattr(store, opener)(path):
            pass
    assert path.read_text() == CSV_TEXT


def test_receiver_attach_data_file_rejected(tmp_path):
    path = csv_posing_as_ledger(tmp_path)
    connection = store.receiver_connection()
    try:
        with pytest.raises(store.LedgerUnreadable):
            with store.attached(connection, path):
                pass
    finally:
        connection.close()
    assert path.read_text() == CSV_TEXT


def test_ledger_check_passes_new_empty_and_real(tmp_path, ledger):
    (tmp_path / "empty.duckdb").touch()
    store.check_ledger_file(tmp_path / "absent.duckdb")
    store.check_ledger_file(tmp_path / "empty.duckdb")
    store.check_ledger_file(ledger)
    assert not (tmp_path / "absent.duckdb").exists()


def test_invalid_file_in_lock_folder_not_busy(tmp_path):
    # DuckDB's message quotes the path, and a folder name with "lock" in it once made it look busy.
    path = tmp_path / "blocks" / "empty.duckdb"
    path.parent.mkdir()
    path.touch()
    started = time.monotonic()
    with pytest.raises(store.LedgerUnreadable) as raised:
        with store.writing(path, budget=5.0):
            pass
    assert time.monotonic() - started < 4.0
    assert str(raised.value).startswith(f"{path}: cannot be opened as a ledger (")
    assert not store.inbox_path(path).exists()


def test_fifo_as_ledger_rejected(tmp_path):
    path = tmp_path / "ledger.duckdb"
    os.mkfifo(path)
    with pytest.raises(store.LedgerUnreadable) as raised:
        store.check_ledger_file(path)
    assert str(raised.value) == f"{path}: is not a regular file; give a ledger file with --db or REPLAY_LEDGER_DB"


def other_database(tmp_path: Path) -> Path:
    """Return a DuckDB file of some other tool: one table, no schema version."""
    path = tmp_path / "other.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE TABLE foo (a INTEGER)")
    return path


def test_other_database_not_migrated(tmp_path):
    path = other_database(tmp_path)
    with pytest.raises(store.LedgerUnreadable) as raised:
        with store.writing(path):
            pass
    assert str(raised.value) == (
        f"{path}: is a DuckDB database but not a ledger (it has the tables foo and no schema_migrations); "
        "give a ledger file, or a new file name, with --db"
    )
    assert query(path, "SELECT table_name FROM information_schema.tables") == [("foo",)]


def test_other_database_read_rejected(tmp_path):
    path = other_database(tmp_path)
    with pytest.raises(store.LedgerUnreadable) as raised:
        tiles(path, Filters())
    assert str(raised.value).startswith(f"{path}: is a DuckDB database but not a ledger (it has the tables foo ")


def test_same_file_twice_stored_once(ledger, tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [record(1), record(2), record(3)])
    first = ingest_paths(ledger, [str(path)])
    second = ingest_paths(ledger, [str(path)])
    assert (first.ingested, first.duplicates) == (3, 0)
    assert (second.read, second.ingested, second.duplicates) == (3, 0, 3)
    assert second.exit_code == 0
    assert count(ledger) == 3


def test_same_document_twice_stored_once(ledger, tmp_path):
    path = tmp_path / "page.json"
    path.write_text(json.dumps({"items": [record(1, divergences_detected=1, status="partial",
                                                  divergences=[{"type": "action_mismatch", "expected": "a",
                                                                "actual": "b", "index": 0}])]}))
    ingest_paths(ledger, [str(path)])
    second = ingest_paths(ledger, [str(path)])
    assert (second.ingested, second.duplicates) == (0, 1)
    assert (count(ledger), count(ledger, "divergences")) == (1, 1)


def test_file_and_export_same_submission_once(ledger, tmp_path):
    plain = write_lines(tmp_path / "replays.jsonl", [record(1)])
    export = tmp_path / "export.json"
    export.write_text(json.dumps({"items": [record(1, id="sub-1")]}))
    first = ingest_paths(ledger, [str(plain)])
    second = ingest_paths(ledger, [str(export)])
    assert first.ingested == 1
    assert (second.ingested, second.duplicates) == (0, 1)
    assert count(ledger) == 1


def test_export_then_file_same_submission_once(ledger, tmp_path):
    export = tmp_path / "export.json"
    export.write_text(json.dumps({"items": [record(1, id="sub-1")]}))
    plain = write_lines(tmp_path / "replays.jsonl", [record(1)])
    ingest_paths(ledger, [str(export)])
    second = ingest_paths(ledger, [str(plain)])
    assert (second.ingested, second.duplicates) == (0, 1)
    assert query(ledger, "SELECT submission_id, platform_id FROM submissions") == [("sub-1", "sub-1")]


def test_file_and_export_in_one_ingest_keeps_platform_id(ledger, tmp_path):
    plain = write_lines(tmp_path / "a_replays.jsonl", [record(1)])
    export = tmp_path / "b_export.json"
    export.write_text(json.dumps([record(1, id="sub-1")]))
    report = ingest_paths(ledger, [str(plain), str(export)])
    assert (report.ingested, report.duplicates) == (1, 1)
    assert query(ledger, "SELECT platform_id FROM submissions") == [("sub-1",)]


def test_platform_ids_differ_two_rows(ledger, tmp_path):
    export = tmp_path / "export.json"
    export.write_text(json.dumps([record(1, id="sub-1"), record(1, id="sub-2")]))
    report = ingest_paths(ledger, [str(export)])
    assert report.ingested == 2
    assert query(ledger, "SELECT platform_id FROM submissions ORDER BY 1") == [("sub-1",), ("sub-2",)]


def test_identical_replays_different_times_two_rows(ledger, tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [record(1), record(1, submitted_at="2026-03-01T10:00:01Z")])
    report = ingest_paths(ledger, [str(path)])
    assert (report.ingested, report.duplicates) == (2, 0)
    assert count(ledger) == 2


def test_identical_lines_same_time_one_row(ledger, tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [record(1), record(1)])
    report = ingest_paths(ledger, [str(path)])
    assert (report.ingested, report.duplicates) == (1, 1)


def test_sdk_bodies_without_time_by_file_name(ledger, tmp_path):
    body = {"status": "success", "actions_replayed": 2, "actions_total": 2, "divergences_detected": 0,
            "divergences": [], "cost_savings": 0.5}
    for name in ("20260301_run-a.json", "20260302_run-a.json"):
        (tmp_path / name).write_text(json.dumps(body))
    report = ingest_paths(ledger, [str(tmp_path)])
    assert (report.ingested, report.duplicates) == (2, 0)
    assert query(ledger, "SELECT run_id, count(*) FROM submissions GROUP BY run_id") == [("run-a", 2)]
    again = ingest_paths(ledger, [str(tmp_path)])
    assert (again.ingested, again.duplicates) == (0, 2)


def test_arrays_without_time_in_two_files_two_rows(ledger, tmp_path):
    body = {"run_id": "run-a", "status": "success", "actions_replayed": 2, "actions_total": 2, "cost_savings": 0.5}
    (tmp_path / "monday.json").write_text(json.dumps([body]))
    (tmp_path / "tuesday.json").write_text(json.dumps([body]))
    report = ingest_paths(ledger, [str(tmp_path)])
    assert (report.ingested, report.duplicates) == (2, 0)
    again = ingest_paths(ledger, [str(tmp_path)])
    assert (again.ingested, again.duplicates) == (0, 2)


def test_repeated_platform_id_divergences_once(ledger, tmp_path):
    divergence = {"type": "action_mismatch", "expected": "summarize", "actual": "fetch", "index": 1}
    item = record(1, id="sub-9", status="failed", divergences=[divergence], divergences_detected=1)
    (tmp_path / "page1.json").write_text(json.dumps({"items": [item]}))
    (tmp_path / "page2.json").write_text(json.dumps([item]))
    report = ingest_paths(ledger, [str(tmp_path)])
    assert (report.ingested, report.duplicates) == (1, 1)
    assert query(ledger, "SELECT submission_id, position FROM divergences") == [("sub-9", 0)]


# --- divergences stored whole (C01) ----------------------------------------------------------


def test_divergence_inputs_stored_whole(ledger):
    ingest_paths(ledger, [str(CASES / "c01_drift_a.jsonl")])
    ingest_paths(ledger, [str(CASES / "c01_drift_b.jsonl")])
    rows = query(
        ledger,
        "SELECT s.run_id, d.type, d.action, d.action_index, d.expected, d.actual "
        "FROM divergences AS d JOIN submissions AS s USING (submission_id) ORDER BY s.run_id",
    )
    source = [json.loads(line) for name in ("c01_drift_a.jsonl", "c01_drift_b.jsonl")
              for line in (CASES / name).read_text().splitlines()]
    expected = [
        (item["run_id"], "input_mismatch", item["divergences"][0]["action"], 0,
         item["divergences"][0]["expected_inputs"], item["divergences"][0]["actual_inputs"])
        for item in source
    ]
    assert [(run, kind, action, index, json.loads(left), json.loads(right))
            for run, kind, action, index, left, right in rows] == expected


def test_divergence_drift_temperature_by_sql(ledger):
    ingest_paths(ledger, [str(CASES / "c01_drift_a.jsonl")])
    ingest_paths(ledger, [str(CASES / "c01_drift_b.jsonl")])
    rows = query(
        ledger,
        "SELECT CAST(d.expected ->> '$.kwargs.temperature' AS DOUBLE), "
        "CAST(d.actual ->> '$.kwargs.temperature' AS DOUBLE) "
        "FROM divergences AS d JOIN submissions AS s USING (submission_id) WHERE s.run_id = 'drift-2'",
    )
    assert rows == [(0.7, 0.9)]
    missing = query(
        ledger,
        "SELECT d.expected ->> '$.kwargs.temperature' FROM divergences AS d "
        "JOIN submissions AS s USING (submission_id) WHERE s.run_id = 'drift-1'",
    )
    assert missing == [(None,)]


# --- money, counts, time -----------------------------------------------------------------------


def test_tiles_money_exact_decimal(ledger):
    ingest_paths(ledger, [str(CASES / "c04_money.jsonl")])
    result = tiles(ledger, Filters())
    assert isinstance(result.cost_saved, Decimal)
    assert result.cost_saved == Decimal("1.09")
    assert isinstance(result.submissions, int)
    assert isinstance(result.actions_replayed, int)
    assert (result.submissions, result.actions_replayed, result.actions_total) == (11, 33, 33)


def test_money_sum_by_hand_sql(ledger):
    ingest_paths(ledger, [str(CASES / "c04_money.jsonl")])
    total, kind = query(ledger, "SELECT sum(cost_savings), typeof(sum(cost_savings)) FROM submissions")[0]
    assert total == Decimal("1.09")
    assert kind.startswith("DECIMAL")
    amounts = query(ledger, "SELECT cost_savings FROM submissions WHERE run_id = 'money-sdk'")
    assert amounts == [(Decimal("0.090000"),)]


def test_integer_sums_are_int(ledger):
    ingest_paths(ledger, [str(CASES / "c04_money.jsonl")])
    replayed, divergences = query(
        ledger, "SELECT sum(actions_replayed)::BIGINT, sum(divergences_detected)::BIGINT FROM submissions"
    )[0]
    result = tiles(ledger, Filters())
    assert result.actions_replayed == replayed
    assert type(result.actions_replayed) is int
    assert type(result.divergences) is int
    assert result.divergences == divergences == 0


def test_timestamps_one_instant(ledger):
    report = ingest_paths(ledger, [str(CASES / "c02_timestamps.jsonl")])
    assert report.ingested == 5
    rows = query(ledger, "SELECT run_id, submitted_at FROM submissions ORDER BY run_id")
    assert [run for run, _ in rows] == ["ts-0", "ts-1", "ts-2", "ts-3", "ts-4"]
    assert {instant for _, instant in rows} == {TEN_UTC}
    assert describe(ledger, "submissions")["submitted_at"] == "TIMESTAMP WITH TIME ZONE"
    assert query(ledger, "SELECT count(DISTINCT epoch_us(submitted_at)) FROM submissions") == [(1,)]


def test_timestamps_zoneless_flagged(ledger):
    ingest_paths(ledger, [str(CASES / "c02_timestamps.jsonl")])
    flagged = query(ledger, "SELECT run_id, flags FROM submissions WHERE len(flags) > 0")
    assert flagged == [("ts-2", ["submitted_at had no time zone and was taken as UTC"])]


# --- deployment ------------------------------------------------------------------------------------


def test_deployment_option_over_field(ledger, tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [record(1, deployment="prod-eu"), record(2)])
    ingest_paths(ledger, [str(path)], deployment="prod-us")
    assert query(ledger, "SELECT DISTINCT deployment FROM submissions") == [("prod-us",)]


def test_deployment_field_else_unknown(ledger, tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [record(1, deployment="prod-eu"), record(2)])
    document = tmp_path / "b.json"
    document.write_text(json.dumps([record(3, deployment="staging"), record(4)]))
    ingest_paths(ledger, [str(path), str(document)])
    rows = query(ledger, "SELECT run_id, deployment FROM submissions ORDER BY run_id")
    assert rows == [("run-1", "prod-eu"), ("run-2", "unknown"), ("run-3", "staging"), ("run-4", "unknown")]


# --- deploy markers -------------------------------------------------------------------------------------


def test_add_deploys_repeated_adds_nothing(ledger):
    marker = {"deployment": "prod", "version": "v1", "deployed_at": TEN_UTC, "note": "first"}
    assert store.add_deploys(ledger, [marker], origin="cli") == (1, 0)
    assert store.add_deploys(ledger, [marker, marker], origin="cli") == (0, 2)
    assert query(ledger, "SELECT deployment, version, deployed_at, note FROM deploys") == [
        ("prod", "v1", TEN_UTC, "first")
    ]
