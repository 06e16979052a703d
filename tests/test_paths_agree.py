"""The SQL validation path (JSON Lines) and the Python path (documents) must store the same rows.

The same records are ingested once as JSON Lines, where clean lines are
validated in SQL, and once as a JSON array, where every record goes through
the pydantic models; every stored column, ids included, must be equal.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from ledger.ingest import ingest_paths
from tests.conftest import SAMPLE_DATA

TRICKY_RECORDS = [
    {"run_id": "uni-1", "status": "partial", "actions_replayed": 2, "actions_total": 2, "divergences_detected": 1,
     "divergences": [{"type": "input_mismatch", "action": "greet", "index": 0,
                      "expected_inputs": {"args": ["héllo wörld ✓"], "kwargs": {"x": 1e-7, "y": 2.5e20}},
                      "actual_inputs": {"args": ["héllo wörld ✗"], "kwargs": {"x": 1e-7, "y": 2.5e20}}}],
     "cost_savings": 0.09000000000000001, "submitted_at": "2026-03-01T10:00:00.123456Z"},
    {"run_id": "zone-1", "status": "success", "actions_replayed": 1, "actions_total": 1, "divergences": [],
     "cost_savings": 3, "submitted_at": "2026-03-01T10:00:00", "deployment": "prod-eu", "model": {"name": "m"}},
    {"run_id": "offset-1", "status": "failed", "actions_replayed": 1, "actions_total": 4, "divergences_detected": 1,
     "divergences": [{"type": "action_mismatch", "expected": "summarize", "actual": "fetch", "index": 0}],
     "cost_savings": 0.0000005, "submitted_at": "2026-03-01T12:00:00+02:00", "id": "sub-9"},
    {"run_id": "count-only", "status": "partial", "actions_replayed": 3, "actions_total": 3,
     "divergences_detected": 2, "cost_savings": 1.1234565, "submitted_at": "2026-03-02T00:00:00Z"},
    {"run_id": "odd-kind", "status": "partial", "actions_replayed": 3, "actions_total": 3,
     "divergences": [{"type": "output_mismatch", "action": None, "expected": [1, 2], "actual": [2, 1], "note": "x"},
                     {"type": "input_mismatch", "action": "a", "index": None, "expected_inputs": None,
                      "actual_inputs": {"deep": [[[{"k": [True, False, None]}]]]}}],
     "cost_savings": 0.25, "submitted_at": "2026-03-02T01:00:00Z", "tags": ["a", "b"], "agent_version": "1.2"},
    {"run_id": "big-int", "status": "partial", "actions_replayed": 1, "actions_total": 1,
     "divergences": [{"type": "input_mismatch", "action": "a", "index": 0,
                      "expected_inputs": {"n": 12345678901234567890123}, "actual_inputs": {"n": 2}}],
     "cost_savings": 0.5, "submitted_at": "2026-03-02T02:00:00Z"},
]

COLUMNS = (
    "submission_id, platform_id, content_hash, run_id, deployment, status, actions_replayed, actions_total, "
    "divergences_detected, cost_savings, submitted_at, flags, extra::VARCHAR"
)


def _records() -> list[dict]:
    sample = [json.loads(line) for line in (SAMPLE_DATA / "replays.jsonl").read_text().splitlines()[:400]]
    return sample + TRICKY_RECORDS


def _rows(ledger: Path) -> tuple[list, list]:
    with duckdb.connect(str(ledger), read_only=True) as connection:
        submissions = connection.execute(f"SELECT {COLUMNS} FROM submissions ORDER BY submission_id").fetchall()
        divergences = connection.execute(
            "SELECT submission_id, position, type, action, action_index, expected::VARCHAR, actual::VARCHAR, "
            "detail::VARCHAR FROM divergences ORDER BY submission_id, position"
        ).fetchall()
    return submissions, divergences


@pytest.fixture(scope="module")
def both_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple, tuple]:
    folder = tmp_path_factory.mktemp("paths")
    records = _records()
    lines_file = folder / "records.jsonl"
    lines_file.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
    array_file = folder / "records.json"
    array_file.write_text(json.dumps(records, ensure_ascii=False))
    sql_ledger, python_ledger = folder / "sql.duckdb", folder / "python.duckdb"
    sql_report = ingest_paths(sql_ledger, [str(lines_file)])
    python_report = ingest_paths(python_ledger, [str(array_file)])
    assert sql_report.rejected == 0, [item.message() for item in sql_report.files[0].rejected]
    assert python_report.rejected == 0
    return _rows(sql_ledger), _rows(python_ledger)


def test_paths_store_same_submissions(both_paths):
    (sql_submissions, _), (python_submissions, _) = both_paths
    assert len(sql_submissions) == len(_records())
    assert sql_submissions == python_submissions


def test_paths_store_same_divergences(both_paths):
    (_, sql_divergences), (_, python_divergences) = both_paths
    assert len(sql_divergences) > 100
    assert sql_divergences == python_divergences


def test_paths_round_money_the_same_way(both_paths):
    (sql_submissions, _), _ = both_paths
    by_run = {row[3]: row[9] for row in sql_submissions}
    assert str(by_run["uni-1"]) == "0.090000"
    assert str(by_run["offset-1"]) == "0.000001"
    assert str(by_run["count-only"]) == "1.123457"


def test_paths_jsonl_file_and_array_are_duplicates(tmp_path: Path):
    records = _records()[:50]
    lines_file = tmp_path / "a.jsonl"
    lines_file.write_text("".join(json.dumps(record) + "\n" for record in records))
    array_file = tmp_path / "b.json"
    array_file.write_text(json.dumps({"items": records}))
    ledger = tmp_path / "ledger.duckdb"
    first = ingest_paths(ledger, [str(lines_file)])
    second = ingest_paths(ledger, [str(array_file)])
    assert first.ingested == 50
    assert second.ingested == 0
    assert second.duplicates == 50
