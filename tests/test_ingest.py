"""Tests for ledger.ingest: the report, strict mode, crash safety, concurrent processes and the inbox."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from ledger import store
from ledger.ingest import EXIT_OK, EXIT_REJECTED, ingest_paths
from tests.records import record, write_lines

ROOT = Path(__file__).resolve().parent.parent


def write_generated(path: Path, count: int, prefix: str) -> Path:
    """Write `count` distinct valid JSON Lines records quickly, every tenth with a divergence."""
    divergence = ('[{"type": "input_mismatch", "action": "fetch", "index": 0, '
                  '"expected_inputs": {"kwargs": {"seed": 1}}, "actual_inputs": {"kwargs": {"seed": 2}}}]')
    start = datetime(2026, 3, 1, tzinfo=timezone.utc)
    with path.open("w") as handle:
        for number in range(count):
            diverged = number % 10 == 0
            submitted = (start + timedelta(seconds=number)).strftime("%Y-%m-%dT%H:%M:%SZ")
            handle.write(
                f'{{"run_id": "{prefix}-{number}", "status": "{"partial" if diverged else "success"}", '
                f'"actions_replayed": 5, "actions_total": 5, "divergences_detected": {1 if diverged else 0}, '
                f'"divergences": {divergence if diverged else "[]"}, "cost_savings": 0.0{number % 10}1, '
                f'"submitted_at": "{submitted}", "deployment": "prod-{number % 3}"}}\n'
            )
    return path


def query(ledger: Path, sql: str) -> list[tuple]:
    with store.reading(ledger) as connection:
        return connection.execute(sql).fetchall()


def replay_ledger_command() -> list[str]:
    script = Path(sys.executable).with_name("replay-ledger")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ledger.cli"]


# --- the report ------------------------------------------------------------------------------


def test_report_counts_per_file(ledger, tmp_path):
    good = write_lines(tmp_path / "good.jsonl", [record(1), record(2), record(2)])
    mixed = write_lines(tmp_path / "mixed.jsonl", [record(3), record(4, status="done"), record(5, actions_total="9")])
    report = ingest_paths(ledger, [str(good), str(mixed)])
    by_name = {Path(item.name).name: item for item in report.files}
    assert (by_name["good.jsonl"].read, by_name["good.jsonl"].ingested, by_name["good.jsonl"].duplicates) == (3, 2, 1)
    assert len(by_name["good.jsonl"].rejected) == 0
    assert (by_name["mixed.jsonl"].read, by_name["mixed.jsonl"].ingested) == (3, 1)
    assert len(by_name["mixed.jsonl"].rejected) == 2
    assert (report.read, report.ingested, report.duplicates, report.rejected) == (6, 3, 1, 2)
    assert report.exit_code == EXIT_REJECTED


def test_report_rejection_fields(ledger, tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [record(1), record(2, actions_total="9")])
    report = ingest_paths(ledger, [str(path)])
    rejection = report.files[0].rejected[0]
    assert rejection.location == f"{path}:2"
    assert rejection.field == "actions_total"
    assert rejection.value == "9"
    assert rejection.reason == "must be a JSON integer, got the string '9'; write it without quotes"
    assert rejection.message() == (
        f"{path}:2: actions_total: must be a JSON integer, got the string '9'; write it without quotes"
    )


def test_rejections_stored_in_table(ledger, tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [record(1, status="done"), record(2, cost_savings=-0.5), record(3)])
    report = ingest_paths(ledger, [str(path)])
    rows = query(ledger, "SELECT ingest_id, location, field, value, reason, record FROM rejected ORDER BY location")
    assert [row[:5] for row in rows] == [
        (report.ingest_id, f"{path}:1", "status", "done", "must be one of success, partial, failed; got 'done'"),
        (report.ingest_id, f"{path}:2", "cost_savings", "-0.5", "must not be negative, got -0.5"),
    ]
    assert json.loads(rows[0][5])["run_id"] == "run-1"


def test_ingest_log_row(ledger, tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [record(1), record(2), record(2), record(3, status="done")])
    report = ingest_paths(ledger, [str(path)], origin="test")
    rows = query(ledger, "SELECT ingest_id, origin, sources, records_read, ingested, duplicates, rejected FROM ingest_log")
    assert rows == [(report.ingest_id, "test", [str(path)], 4, 2, 1, 1)]


def test_report_exit_code_all_ingested(ledger, tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [record(1)])
    assert ingest_paths(ledger, [str(path)]).exit_code == EXIT_OK
    assert ingest_paths(ledger, [str(path)]).exit_code == EXIT_OK


def test_report_to_dict_parses(ledger, tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [record(1), record(2, status="done")])
    data = json.loads(json.dumps(ingest_paths(ledger, [str(path)]).to_dict()))
    assert (data["read"], data["ingested"], data["rejected"]) == (2, 1, 1)
    assert data["files"][0]["rejected"][0]["field"] == "status"


def test_strict_ingests_nothing_from_bad_file(ledger, tmp_path):
    bad = write_lines(tmp_path / "a_bad.jsonl", [record(1), record(2, status="done"), record(3)])
    good = write_lines(tmp_path / "b_good.jsonl", [record(4), record(5)])
    report = ingest_paths(ledger, [str(bad), str(good)], strict=True)
    by_name = {Path(item.name).name: item for item in report.files}
    assert by_name["a_bad.jsonl"].ingested == 0
    assert by_name["a_bad.jsonl"].dropped_by_strict == 2
    assert by_name["b_good.jsonl"].ingested == 2
    assert query(ledger, "SELECT run_id FROM submissions ORDER BY run_id") == [("run-4",), ("run-5",)]
    assert query(ledger, "SELECT location, field FROM rejected") == [(f"{bad}:2", "status")]
    assert report.exit_code == EXIT_REJECTED


def test_strict_document_with_bad_record(ledger, tmp_path):
    page = tmp_path / "page.json"
    page.write_text(json.dumps({"items": [record(1), record(2, run_id="")]}))
    report = ingest_paths(ledger, [str(page)], strict=True)
    assert report.ingested == 0
    assert query(ledger, "SELECT count(*) FROM submissions") == [(0,)]


def test_default_mode_keeps_good_records(ledger, tmp_path):
    bad = write_lines(tmp_path / "a.jsonl", [record(1), record(2, status="done"), record(3)])
    report = ingest_paths(ledger, [str(bad)])
    assert report.ingested == 2
    assert query(ledger, "SELECT run_id FROM submissions ORDER BY run_id") == [("run-1",), ("run-3",)]


def test_zoneless_warning_in_report(ledger, tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [record(1, submitted_at="2026-03-01T10:00:00")])
    report = ingest_paths(ledger, [str(path)])
    assert report.files[0].warnings == [f"{path}:1: submitted_at had no time zone and was taken as UTC"]


def test_failed_merge_removes_stage(ledger, tmp_path, monkeypatch):
    store.create_empty(ledger)
    with duckdb.connect(str(ledger)) as connection:
        connection.execute("INSERT INTO schema_migrations VALUES (?, now(), 'from the future')",
                           [store.SCHEMA_VERSION + 1])
    stages = tmp_path / "stages"
    stages.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(stages))
    with pytest.raises(store.LedgerTooNew):
        ingest_paths(ledger, [str(write_lines(tmp_path / "a.jsonl", [record(1)]))])
    assert list(stages.iterdir()) == []


# --- crash safety -------------------------------------------------------------------------------

CRASH_RECORDS = 300_000


def ledger_state(ledger: Path) -> tuple:
    """Everything an ingest changes: row counts, money, and the whole ingest log."""
    return (
        query(ledger, "SELECT count(*), sum(cost_savings), count(DISTINCT submission_id) FROM submissions"),
        query(ledger, "SELECT count(*) FROM divergences"),
        query(ledger, "SELECT count(*) FROM rejected"),
        query(ledger, "SELECT ingest_id, records_read, ingested, duplicates, rejected FROM ingest_log ORDER BY 1"),
    )


def holds_file(pid: int, path: Path) -> bool:
    """Tell whether process `pid` has `path` open (Linux /proc)."""
    folder = Path(f"/proc/{pid}/fd")
    try:
        for descriptor in folder.iterdir():
            try:
                if os.readlink(descriptor) == str(path):
                    return True
            except OSError:
                continue
    except OSError:
        return False
    return False


def start_ingest(path: Path, ledger: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [*replay_ledger_command(), "ingest", str(path), "--db", str(ledger), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )


def kill_when(process: subprocess.Popen, ready, extra_delay: float, limit: float = 120.0) -> bool:
    """Wait until `ready()` holds, wait `extra_delay` more, then SIGKILL; return whether it was still running."""
    deadline = time.monotonic() + limit
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.002)
    time.sleep(extra_delay)
    alive = process.poll() is None
    if alive:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    return alive


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finding the merge needs Linux /proc")
def processes_reading(path: Path, within: float) -> list[int]:
    """Return the ids of processes whose command line names `path`, waiting up to `within` seconds for none."""
    deadline = time.monotonic() + within
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(path).encode() in command:
                found.append(int(entry.name))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_ingest_killed_leaves_ledger_unchanged(tmp_path):
    ledger = tmp_path / "crash.duckdb"
    ingest_paths(ledger, [str(write_lines(tmp_path / "before.jsonl", [record(1), record(2, status="done")]))])
    big = write_generated(tmp_path / "big.jsonl", CRASH_RECORDS, "crash")
    before = ledger_state(ledger)
    # Stages go to a folder of this test, so the folders a kill leaves behind are removed with it.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    started = time.monotonic()

    outcomes = []
    # While validating: a fixed time after the start, before the ledger is opened.
    for delay in (0.5, 2.0):
        process = start_ingest(big, ledger, env)
        was_alive = kill_when(process, lambda: True, delay)
        outcomes.append(("validating", delay, was_alive))
        assert ledger_state(ledger) == before, f"ledger changed after a kill while validating ({delay} s)"
    # During the merge: once the process has the ledger file open, then a little later.
    for delay in (0.0, 0.3):
        process = start_ingest(big, ledger, env)
        pid = process.pid
        was_alive = kill_when(process, lambda: holds_file(pid, ledger), delay)
        outcomes.append(("merging", delay, was_alive))
        after = ledger_state(ledger)
        if after != before:
            # A kill after the commit leaves the whole ingest in place, never a part of it.
            assert after[0][0][0] == before[0][0][0] + CRASH_RECORDS, outcomes
            assert len(after[3]) == len(before[3]) + 1, outcomes
            break
    assert any(stage == "merging" and alive for stage, _, alive in outcomes), outcomes
    # Cause classification runs in worker processes, which must end with the killed ingest.
    assert processes_reading(big, within=5.0) == []

    result = subprocess.run(
        [*replay_ledger_command(), "ingest", str(big), "--db", str(ledger), "--json"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert query(ledger, "SELECT count(*) FROM submissions WHERE run_id LIKE 'crash-%'") == [(CRASH_RECORDS,)]
    assert query(ledger, "SELECT count(*) FROM divergences") == [(CRASH_RECORDS // 10,)]
    assert time.monotonic() - started < 600


# --- concurrency -------------------------------------------------------------------------------------

_READER = """
import json, sys, time
from pathlib import Path
from ledger.queries import Filters, tiles
ledger, stop = Path(sys.argv[1]), Path(sys.argv[2])
reads, errors, counts = 0, [], []
deadline = time.monotonic() + 300
while not stop.exists() and time.monotonic() < deadline:
    try:
        counts.append(tiles(ledger, Filters()).submissions)
        reads += 1
    except Exception as error:
        errors.append(f"{type(error).__name__}: {error}")
    time.sleep(0.02)
print(json.dumps({"reads": reads, "errors": errors[:5], "counts_rise": counts == sorted(counts)}))
"""


@pytest.mark.slow
def test_concurrent_ingests_and_reader(tmp_path):
    ledger = tmp_path / "shared.duckdb"
    store.create_empty(ledger)
    first = write_generated(tmp_path / "first.jsonl", 60_000, "first")
    second = write_generated(tmp_path / "second.jsonl", 60_000, "second")
    stop = tmp_path / "stop"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    reader = subprocess.Popen([sys.executable, "-c", _READER, str(ledger), str(stop)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    writers = [
        subprocess.Popen([*replay_ledger_command(), "ingest", str(path), "--db", str(ledger), "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for path in (first, second)
    ]
    outputs = [writer.communicate(timeout=300) for writer in writers]
    stop.touch()
    reader_out, reader_err = reader.communicate(timeout=120)

    for writer, (out, err) in zip(writers, outputs):
        assert writer.returncode == 0, err
        assert "lock" not in err.lower(), err
    reports = [json.loads(out) for out, _ in outputs]
    assert reader.returncode == 0, reader_err
    reading = json.loads(reader_out)
    assert reading["errors"] == []
    assert reading["reads"] > 0
    assert reading["counts_rise"] is True
    # A writer locked out past its budget leaves its batch in the inbox; the next writer merges it.
    store.drain_inbox(ledger)
    assert sum(report["ingested"] for report in reports) == 120_000
    assert query(ledger, "SELECT count(*) FROM submissions") == [(120_000,)]
    assert store.inbox_batches(ledger) == []


_HOLDER = """
import sys, time
import duckdb
connection = duckdb.connect(sys.argv[1])
connection.execute("BEGIN TRANSACTION")
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("ROLLBACK")
connection.close()
"""


def hold_ledger(ledger: Path, seconds: float) -> subprocess.Popen:
    """Start a process that keeps the ledger open for writing for `seconds`; return once it has it open."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(ledger), str(seconds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "ready", holder.stderr.read()
    return holder


def test_busy_ledger_queues_batch_in_inbox(tmp_path):
    ledger = tmp_path / "busy.duckdb"
    ingest_paths(ledger, [str(write_lines(tmp_path / "base.jsonl", [record(1)]))])
    queued_file = write_lines(tmp_path / "queued.jsonl", [record(2), record(3), record(4, status="done")])
    holder = hold_ledger(ledger, 2.0)
    try:
        report = ingest_paths(ledger, [str(queued_file)], budget=0.2)
    finally:
        holder.wait(timeout=30)
    assert report.queued_in_inbox is not None
    assert Path(report.queued_in_inbox).parent == store.inbox_path(ledger)
    assert report.ingest_id is None
    assert store.inbox_batches(ledger) == [Path(report.queued_in_inbox)]
    assert query(ledger, "SELECT count(*) FROM submissions") == [(1,)]
    assert report.files[0].rejected[0].field == "status"

    later = ingest_paths(ledger, [str(write_lines(tmp_path / "later.jsonl", [record(5), record(2)]))])
    assert later.inbox_batches_merged == 1
    assert store.inbox_batches(ledger) == []
    assert list(store.inbox_path(ledger).iterdir()) == []
    assert (later.ingested, later.duplicates) == (1, 1)
    assert query(ledger, "SELECT run_id FROM submissions ORDER BY run_id") == [
        ("run-1",), ("run-2",), ("run-3",), ("run-5",)
    ]
    assert query(ledger, "SELECT count(*) FROM rejected WHERE field = 'status'") == [(1,)]
    log = query(ledger, "SELECT ingested FROM ingest_log ORDER BY ingest_id")
    assert log == [(1,), (2,), (1,)]


def test_drain_inbox_without_new_batch(tmp_path):
    ledger = tmp_path / "busy.duckdb"
    store.create_empty(ledger)
    holder = hold_ledger(ledger, 1.5)
    try:
        report = ingest_paths(ledger, [str(write_lines(tmp_path / "q.jsonl", [record(1), record(2)]))], budget=0.2)
    finally:
        holder.wait(timeout=30)
    assert report.queued_in_inbox is not None
    assert store.drain_inbox(ledger) == 1
    assert store.drain_inbox(ledger) == 0
    assert query(ledger, "SELECT count(*) FROM submissions") == [(2,)]
