"""Posts that a stopped receiver journaled reach the ledger through any other writer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb

from ledger import journal, store
from tests.receiver_helpers import sdk_body


def _dead_pid() -> int:
    """Return the pid of a process that has already exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _leave_journal(ledger: Path, run_ids: list[str]) -> Path:
    """Write a journal as a receiver with a dead pid would have left it in the ledger's inbox."""
    store.create_empty(ledger)
    inbox = store.inbox_path(ledger)
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / f"receiver-{_dead_pid()}-1-000001.journal"
    lines = [
        journal.result_line(run_id=run_id, body=json.dumps(sdk_body()).encode(), deployment="ci",
                            idempotency_key=None, request_id=f"request-{number}",
                            received_at_us=1_772_359_200_000_000 + number, submission_id=f"sub-{run_id}")
        for number, run_id in enumerate(run_ids)
    ]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def test_journal_left_merged_by_ingest(tmp_path):
    ledger = tmp_path / "ledger.duckdb"
    left = _leave_journal(ledger, ["run-a", "run-b"])
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({**sdk_body(), "run_id": "run-file", "submitted_at": "2026-03-01T10:00:00Z"}) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "ingest", str(data), "--db", str(ledger)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not left.exists()
    with duckdb.connect(str(ledger), read_only=True) as connection:
        rows = connection.execute(
            "SELECT run_id, deployment, platform_id FROM submissions ORDER BY run_id"
        ).fetchall()
    assert rows == [("run-a", "ci", "sub-run-a"), ("run-b", "ci", "sub-run-b"), ("run-file", "unknown", None)]


def test_journal_left_merged_once(tmp_path):
    from ledger.receiver import merge_left_journals

    ledger = tmp_path / "ledger.duckdb"
    _leave_journal(ledger, ["run-a"])
    assert merge_left_journals(ledger) == 1
    assert merge_left_journals(ledger) == 0
    with duckdb.connect(str(ledger), read_only=True) as connection:
        assert connection.execute("SELECT count(*) FROM submissions").fetchone()[0] == 1
