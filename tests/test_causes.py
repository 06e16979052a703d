"""Divergence causes through real ledgers: computed at ingest, by the receiver, by the migration, and read back.

Expected values come from the classifier applied to the raw input records or
from hand-written SQL on the same ledger file, never from the code under test.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import httpx
import pyarrow as pa
import pytest

from ledger import causes, store
from ledger.store import cause_sql
from ledger.analysis import classify_divergence
from ledger.ingest import ingest_paths
from ledger.queries import Filters
from ledger.queries import causes as cause_queries
from tests.receiver_helpers import receiver
from ledger.receiver import ReceiverConfig

ROOT = Path(__file__).resolve().parent.parent
CASES = Path(__file__).resolve().parent / "data" / "cases"
SAMPLE_REPLAYS = ROOT / "sample_data" / "replays.jsonl"
C10 = CASES / "c10_sdk_post_run-demo-1.json"
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def query(ledger: Path, sql: str, parameters: list | tuple = ()) -> list[tuple]:
    with duckdb.connect(str(ledger), read_only=True) as connection:
        return connection.execute(sql, list(parameters)).fetchall()


def record(run_id: str, divergences: list[dict], *, at: datetime = T0, status: str = "partial", **fields) -> dict:
    value = {
        "run_id": run_id,
        "status": status,
        "actions_replayed": 3,
        "actions_total": 3,
        "divergences_detected": len(divergences),
        "divergences": divergences,
        "cost_savings": 0.25,
        "submitted_at": at.isoformat().replace("+00:00", "Z"),
    }
    value.update(fields)
    return value


def input_mismatch(action: str, expected: dict, actual: dict, index: int = 0) -> dict:
    return {"type": "input_mismatch", "action": action, "index": index,
            "expected_inputs": expected, "actual_inputs": actual}


def seed_divergence(seed: float, index: int = 1) -> dict:
    return input_mismatch("summarize", {"args": ["hello"], "kwargs": {"seed": 0.08145626752228585}},
                          {"args": ["hello"], "kwargs": {"seed": seed}}, index)


def write_lines(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in records))
    return path


def stored_causes(ledger: Path) -> list[tuple]:
    """Every cause row with its run id, in a stable order."""
    return query(ledger, """
        SELECT s.run_id, c.position, c.ordinal, c.path, c.cause, c.expected, c.actual
        FROM divergence_causes AS c JOIN submissions AS s USING (submission_id)
        ORDER BY s.run_id, s.submitted_at, c.position, c.ordinal
    """)


def expected_causes(records: list[dict]) -> list[tuple]:
    """The cause rows the classifier gives for raw records, in the order of `stored_causes`."""
    rows = []
    for item in records:
        for position, divergence in enumerate(item.get("divergences") or []):
            for ordinal, difference in enumerate(classify_divergence(divergence)):
                rows.append((item["run_id"], item.get("submitted_at", ""), position, ordinal, difference.path,
                             difference.cause, causes.value_text(difference.expected),
                             causes.value_text(difference.actual)))
    rows.sort(key=lambda row: (row[0], row[1], row[2], row[3]))
    return [row[:1] + row[2:] for row in rows]


# ---------------------------------------------------------------------------
# Computed at ingest


def test_ingest_c10_timestamp_and_seed(ledger):
    ingest_paths(ledger, [str(C10)])

    rows = query(ledger, """
        SELECT d.position, d.action, c.path, c.cause, c.expected, c.actual
        FROM divergence_causes AS c
        JOIN divergences AS d USING (submission_id, position)
        JOIN submissions AS s USING (submission_id)
        WHERE s.run_id = 'run-demo-1'
        ORDER BY d.position, c.ordinal
    """)

    assert rows == [
        (0, "fetch_data", "kwargs.ts", "timestamp", '"2026-12-04T19:34:47.590247"', '"2026-12-04T19:34:47.595188"'),
        (1, "summarize", "kwargs.seed", "random_number", "0.08145626752228585", "0.09710858188540006"),
    ]


def test_ingest_causes_equal_classifier_sample(ledger):
    raw = [json.loads(line) for line in SAMPLE_REPLAYS.read_text().splitlines()]
    ingest_paths(ledger, [str(SAMPLE_REPLAYS)])

    stored = stored_causes(ledger)
    expected = expected_causes(raw)

    assert len(stored) > 900
    assert sorted(set(stored)) == sorted(set(expected))


def test_ingest_classifies_batches_in_worker_process(ledger, monkeypatch):
    """Many small batches classified in a worker while later ones are staged: every divergence once, none missed."""
    from ledger import ingest

    monkeypatch.setattr(ingest, "LINE_BATCH", 40)
    monkeypatch.setattr(ingest, "BATCH_ROWS", 25)
    monkeypatch.setattr(store, "CLASSIFY_IN_PROCESS_ROWS", 10)
    workers = []
    executor = store.ProcessPoolExecutor

    def counted_executor(*arguments, **options):
        workers.append(executor(*arguments, **options))
        return workers[-1]

    monkeypatch.setattr(store, "ProcessPoolExecutor", counted_executor)
    raw = [json.loads(line) for line in SAMPLE_REPLAYS.read_text().splitlines()]
    ingest_paths(ledger, [str(SAMPLE_REPLAYS)])

    stored = stored_causes(ledger)
    repeated = query(ledger, """
        SELECT count(*) FROM (SELECT submission_id, position, ordinal FROM divergence_causes
                              GROUP BY ALL HAVING count(*) > 1)
    """)
    unclassified = query(ledger, """
        SELECT count(*) FROM divergences AS d
        WHERE NOT EXISTS (SELECT 1 FROM divergence_causes AS c
                          WHERE c.submission_id = d.submission_id AND c.position = d.position)
          AND d.expected IS DISTINCT FROM d.actual
    """)
    assert len(workers) == 1
    assert repeated == [(0,)]
    assert unclassified == [(0,)]
    assert sorted(set(stored)) == sorted(set(expected_causes(raw)))


def _failing_cause_rows(divergences, key):
    raise RuntimeError("classifier broke on purpose")


def test_ingest_worker_error_leaves_ledger_unchanged(ledger, monkeypatch):
    from ledger import ingest

    monkeypatch.setattr(ingest, "LINE_BATCH", 40)
    monkeypatch.setattr(store, "CLASSIFY_IN_PROCESS_ROWS", 1)
    ingest_paths(ledger, [str(C10)])
    monkeypatch.setattr(causes, "cause_rows", _failing_cause_rows)

    with pytest.raises(RuntimeError, match="classifier broke on purpose"):
        ingest_paths(ledger, [str(SAMPLE_REPLAYS)])

    assert query(ledger, "SELECT count(*) FROM submissions") == [(1,)]


def test_classify_rowid_range_only(tmp_path):
    stage = store.Stage(tmp_path)
    try:
        divergence = seed_divergence(0.5310232891183427)
        stage.append_divergences(pa.table({
            "seq": pa.array(range(10), pa.int64()),
            "position": pa.array([0] * 10, pa.int32()),
            "type": ["input_mismatch"] * 10,
            "action": ["summarize"] * 10,
            "action_index": pa.array([1] * 10, pa.int64()),
            "expected": [json.dumps(divergence["expected_inputs"])] * 10,
            "actual": [json.dumps(divergence["actual_inputs"])] * 10,
            "detail": ['{"type":"input_mismatch"}'] * 10,
        }))
        stored = cause_sql.classify_table(stage.connection, "divergences", "divergence_causes", "seq", 2, 5).rows
        seqs = stage.connection.execute("SELECT seq FROM divergence_causes ORDER BY seq").fetchall()
    finally:
        stage.discard()
    assert stored == 4
    assert seqs == [(2,), (3,), (4,), (5,)]


@pytest.mark.parametrize("suffix", ["jsonl", "json"])
def test_ingest_both_paths_store_causes(tmp_path, suffix):
    records = [
        record("both-1", [seed_divergence(0.5310232891183427)]),
        record("both-2", [input_mismatch("fetch", {"kwargs": {"ids": [1, 2, 3], "名前": "a", "n": 2**70}},
                                         {"kwargs": {"ids": [3, 1, 2], "名前": "b", "n": 2**70 + 1}})],
               at=T0 + timedelta(minutes=1)),
        record("both-3", [{"type": "action_mismatch", "expected": "summarize", "actual": "fetch_data", "index": 2}],
               at=T0 + timedelta(minutes=2), status="failed"),
    ]
    path = tmp_path / f"records.{suffix}"
    if suffix == "jsonl":
        write_lines(path, records)
    else:
        path.write_text(json.dumps(records))
    ledger = tmp_path / "ledger.duckdb"

    report = ingest_paths(ledger, [str(path)])

    assert report.ingested == 3
    assert stored_causes(ledger) == [
        ("both-1", 0, 0, "kwargs.seed", "random_number", "0.08145626752228585", "0.5310232891183427"),
        ("both-2", 0, 0, "kwargs.ids", "reordering", "[1,2,3]", "[3,1,2]"),
        ("both-2", 0, 1, 'kwargs["名前"]', "other_value", '"a"', '"b"'),
        ("both-2", 0, 2, "kwargs.n", "other_value", str(2**70), str(2**70 + 1)),
        ("both-3", 0, 0, "", "control_flow", '"summarize"', '"fetch_data"'),
    ]


def test_ingest_null_against_missing_key(ledger, tmp_path):
    item = record("null-1", [input_mismatch("fetch", {"kwargs": {"a": None, "b": 1}}, {"kwargs": {"b": 1, "c": 2}})])

    ingest_paths(ledger, [str(write_lines(tmp_path / "null.jsonl", [item]))])

    assert stored_causes(ledger) == [
        ("null-1", 0, 0, "kwargs.a", "missing_key", "null", None),
        ("null-1", 0, 1, "kwargs.c", "extra_key", None, "2"),
    ]


def test_ingest_equal_inputs_no_cause(ledger, tmp_path):
    item = record("equal-1", [input_mismatch("fetch", {"args": [1]}, {"args": [1.0]})])

    ingest_paths(ledger, [str(write_lines(tmp_path / "equal.jsonl", [item]))])

    assert query(ledger, "SELECT count(*) FROM divergences") == [(1,)]
    assert stored_causes(ledger) == []


def test_ingest_twice_causes_once(ledger):
    ingest_paths(ledger, [str(C10)])
    first = stored_causes(ledger)
    ingest_paths(ledger, [str(C10)])

    assert stored_causes(ledger) == first
    assert query(ledger, "SELECT count(*) FROM divergence_causes") == [(2,)]


def test_ingest_strict_dropped_file_no_causes(ledger, tmp_path):
    good = record("strict-1", [seed_divergence(0.7719203344109871)])
    path = tmp_path / "strict.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "run_id": "", "status": "done"}) + "\n")

    report = ingest_paths(ledger, [str(path)], strict=True)

    assert report.ingested == 0
    assert query(ledger, "SELECT count(*) FROM divergence_causes") == [(0,)]


def test_ingest_without_classification(ledger):
    ingest_paths(ledger, [str(C10)], classify_causes=False)

    assert query(ledger, "SELECT count(*) FROM divergences") == [(2,)]
    assert query(ledger, "SELECT count(*) FROM divergence_causes") == [(0,)]


def test_cause_rows_unparseable_value_logged(caplog):
    batch = pa.table({
        "seq": pa.array([7], pa.int64()),
        "position": pa.array([0], pa.int32()),
        "type": pa.array(["input_mismatch"]),
        "expected": pa.array(['{"a": '], pa.string()),
        "actual": pa.array(['{"a": 1}'], pa.string()),
    })

    with caplog.at_level(logging.WARNING, logger="ledger.causes"):
        rows = causes.cause_rows(batch, "seq").to_pylist()

    assert rows == [{"seq": 7, "position": 0, "ordinal": 0, "path": "", "cause": "other_value",
                     "expected": '{"a": ', "actual": '{"a": 1}'}]
    assert "divergence 0 of 7 could not be classified" in caplog.text


@pytest.mark.parametrize(("expected", "actual", "want"), [
    ({"n": 2**70}, {"n": 2**70 + 1}, [("n", "other_value", str(2**70), str(2**70 + 1))]),
    ({"a": {"n": 2**70}}, {}, [("a", "missing_key", f'{{"n":{2**70}}}', None)]),
    ({"n": -(2**63) - 1}, {"n": -(2**63) - 2}, [("n", "other_value", str(-(2**63) - 1), str(-(2**63) - 2))]),
    ({"n": 2**64 - 1}, {"n": 2**64 - 2}, [("n", "other_value", str(2**64 - 1), str(2**64 - 2))]),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1.0}, []),
])
def test_cause_rows_big_integers_exact(expected, actual, want):
    batch = pa.table({
        "submission_id": ["s"], "position": pa.array([0], pa.int32()), "type": ["input_mismatch"],
        "expected": [json.dumps(expected)], "actual": [json.dumps(actual)],
    })

    rows = causes.cause_rows(batch, "submission_id").to_pylist()

    assert [(row["path"], row["cause"], row["expected"], row["actual"]) for row in rows] == want


def test_cause_rows_rejects_unknown_key():
    with pytest.raises(ValueError, match="unknown key column 'rowid'"):
        causes.cause_rows(pa.table({"rowid": [1]}), "rowid")


def test_cause_rows_long_value_cut():
    long_text = "x" * 500
    batch = pa.table({
        "submission_id": ["s"], "position": pa.array([0], pa.int32()), "type": ["input_mismatch"],
        "expected": [json.dumps({"a": long_text})], "actual": [json.dumps({"a": "y"})],
    })

    row = causes.cause_rows(batch, "submission_id").to_pylist()[0]

    assert len(row["expected"]) == causes.VALUE_CHARS
    assert row["expected"] == ('"' + long_text)[: causes.VALUE_CHARS - 1] + "…"
    assert row["actual"] == '"y"'


def test_cause_labels_cover_causes():
    from ledger.analysis import CAUSES

    assert set(causes.CAUSE_LABELS) == set(CAUSES)
    assert set(causes.CAUSE_ADVICE) == set(CAUSES)
    assert causes.CAUSE_ADVICE["random_number"] == "pin the seed"


# ---------------------------------------------------------------------------
# The inbox: batches queued while the ledger was busy

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


def queue_in_inbox(ledger: Path, path: Path) -> Path:
    """Ingest `path` while another process holds the ledger, so the batch lands in the inbox; return it."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(ledger), "1.5"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready", holder.stderr.read()
        report = ingest_paths(ledger, [str(path)], budget=0.2)
    finally:
        holder.wait(timeout=30)
    assert report.queued_in_inbox is not None
    return Path(report.queued_in_inbox)


def test_inbox_batch_carries_causes(ledger):
    store.create_empty(ledger)
    queue_in_inbox(ledger, C10)

    assert store.drain_inbox(ledger) == 1
    assert [row[3:5] for row in stored_causes(ledger)] == [("kwargs.ts", "timestamp"), ("kwargs.seed", "random_number")]


def test_inbox_batch_of_older_release_classified(ledger):
    store.create_empty(ledger)
    batch = queue_in_inbox(ledger, C10)
    # A stage written by a release before causes existed has no divergence_causes table.
    with duckdb.connect(str(batch)) as connection:
        connection.execute("DROP TABLE divergence_causes")

    assert store.drain_inbox(ledger) == 1
    assert [row[3:5] for row in stored_causes(ledger)] == [("kwargs.ts", "timestamp"), ("kwargs.seed", "random_number")]


# ---------------------------------------------------------------------------
# The receiver's commit path and its inbox


def test_receiver_post_stores_causes(ledger):
    body = json.loads(C10.read_text())
    config = ReceiverConfig(ledger=ledger, no_auth=True)

    with receiver(config) as url:
        response = httpx.post(f"{url}/api/v1/replay/run-demo-1/results", json=body, timeout=30)

    assert response.status_code == 201, response.text
    assert [row[:5] for row in stored_causes(ledger)] == [
        ("run-demo-1", 0, 0, "kwargs.ts", "timestamp"),
        ("run-demo-1", 1, 0, "kwargs.seed", "random_number"),
    ]


def test_receiver_stage_commit_keeps_causes(ledger):
    from ledger.batch_writer import StageColumns
    from ledger.normalize import Context, model_normalize

    body = {**json.loads(C10.read_text()), "run_id": "run-staged"}
    item = model_normalize(body, Context(location="post", anchor="post", run_id_hint=None, deployment="local",
                                         ingest_time_us=int(T0.timestamp() * 1_000_000)))
    columns = StageColumns()
    columns.add(0, 0, item)
    submissions, divergences = columns.tables()
    connection = store.receiver_connection()
    try:
        store.stage_receiver_rows(connection, "submissions", submissions)
        store.stage_receiver_rows(connection, "divergences", divergences)
        staged = connection.execute("SELECT seq, position, path, cause FROM divergence_causes ORDER BY 2").fetchall()
        with store.attached(connection, ledger):
            store.commit_receiver_stage(connection, None)
        store.clear_receiver_stage(connection)
        left = connection.execute("SELECT count(*) FROM memory.main.divergence_causes").fetchall()
    finally:
        connection.close()

    assert staged == [(0, 0, "kwargs.ts", "timestamp"), (0, 1, "kwargs.seed", "random_number")]
    assert left == [(0,)]
    assert [row[:5] for row in stored_causes(ledger)] == [
        ("run-staged", 0, 0, "kwargs.ts", "timestamp"),
        ("run-staged", 1, 0, "kwargs.seed", "random_number"),
    ]


# ---------------------------------------------------------------------------
# The migration that backfills ledgers of schema version 2


def schema_2_ledger(source: Path, target: Path) -> None:
    """Create `target` with migrations 1 and 2 only and copy `source`'s submissions and divergences into it."""
    with duckdb.connect(str(target)) as connection:
        connection.execute(
            "CREATE TABLE schema_migrations (version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL, "
            "description VARCHAR NOT NULL)"
        )
        for version, description, steps in store.MIGRATIONS[:2]:
            for step in steps:
                connection.execute(step)
            connection.execute("INSERT INTO schema_migrations VALUES (?, now(), ?)", [version, description])
        connection.execute(f"ATTACH '{source}' AS source (READ_ONLY)")
        connection.execute("INSERT INTO submissions SELECT * FROM source.submissions")
        connection.execute("INSERT INTO divergences SELECT * FROM source.divergences")
        connection.execute("DETACH source")


def test_migration_backfills_schema_2_ledger(tmp_path, monkeypatch):
    source = tmp_path / "source.duckdb"
    ingest_paths(source, [str(SAMPLE_REPLAYS), str(C10)])
    old = tmp_path / "old.duckdb"
    schema_2_ledger(source, old)
    monkeypatch.setattr(store, "CLASSIFY_BATCH_ROWS", 97)

    with store.writing(old) as connection:
        version = store.schema_version(connection)

    assert version == 3
    assert query(old, "SELECT max(version) FROM schema_migrations") == [(3,)]
    assert stored_causes(old) == stored_causes(source)
    assert len(stored_causes(old)) > 97 * 3


def test_migration_backfill_failure_rolls_back(tmp_path, monkeypatch):
    source = tmp_path / "source.duckdb"
    ingest_paths(source, [str(SAMPLE_REPLAYS)])
    old = tmp_path / "old.duckdb"
    schema_2_ledger(source, old)
    monkeypatch.setattr(store, "CLASSIFY_BATCH_ROWS", 100)
    calls = []
    real_cause_rows = causes.cause_rows

    def failing_second_batch(batch, key):
        calls.append(batch.num_rows)
        if len(calls) == 2:
            raise RuntimeError("disk full while classifying")
        return real_cause_rows(batch, key)

    monkeypatch.setattr(causes, "cause_rows", failing_second_batch)

    with pytest.raises(RuntimeError, match="disk full"):
        with store.writing(old):
            pass

    assert query(old, "SELECT max(version) FROM schema_migrations") == [(2,)]
    assert query(old, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'divergence_causes'") == [(0,)]


def test_migration_empty_ledger_no_causes(ledger):
    store.create_empty(ledger)

    assert query(ledger, "SELECT count(*) FROM divergence_causes") == [(0,)]
    assert query(ledger, "SELECT max(version) FROM schema_migrations") == [(store.SCHEMA_VERSION,)]


def test_upgrade_missing_ledger(tmp_path):
    with pytest.raises(store.LedgerMissing, match="no ledger here yet"):
        store.upgrade(tmp_path / "absent.duckdb")


def test_queries_schema_2_unavailable(tmp_path):
    source = tmp_path / "source.duckdb"
    ingest_paths(source, [str(C10)])
    old = tmp_path / "old.duckdb"
    schema_2_ledger(source, old)

    with pytest.raises(cause_queries.CausesUnavailable, match="any write upgrades it"):
        cause_queries.cause_overview(old, Filters())
    assert store.upgrade(old) == 3
    assert cause_queries.cause_overview(old, Filters()).causes[0].differences == 1


# ---------------------------------------------------------------------------
# Cause queries against hand-written SQL


@pytest.fixture(scope="module")
def cause_ledger(tmp_path_factory) -> Path:
    """The sample replays plus C10 (deployment case-demo) and a run whose seed changes in every replay."""
    folder = tmp_path_factory.mktemp("causes")
    ledger = folder / "causes.duckdb"
    ingest_paths(ledger, [str(SAMPLE_REPLAYS)])
    seeds = [record(f"seed-{number}", [seed_divergence(0.1 + number / 97 + 1e-9 * number)],
                    at=datetime(2026, 10, 1, tzinfo=timezone.utc) + timedelta(days=number), deployment="seeded")
             for number in range(12)]
    seeds.append(record("seed-clean", [], at=datetime(2026, 10, 20, tzinfo=timezone.utc), deployment="seeded",
                        status="success", divergences_detected=0))
    ingest_paths(ledger, [str(write_lines(folder / "seeds.jsonl", seeds))])
    ingest_paths(ledger, [str(C10)], deployment="case-demo")
    return ledger


HAND_HOTSPOTS = """
WITH s AS (SELECT * FROM submissions WHERE {where}),
o AS (
    SELECT coalesce(d.action, CASE WHEN d.type = 'action_mismatch' THEN json_extract_string(d.expected, '$') END)
               AS action, c.path, c.cause, c.submission_id, s.submitted_at
    FROM divergence_causes c JOIN divergences d ON d.submission_id = c.submission_id AND d.position = c.position
    JOIN s ON s.submission_id = c.submission_id
)
SELECT action, path, cause, count(DISTINCT submission_id), min(submitted_at), max(submitted_at)
FROM o GROUP BY ALL ORDER BY 4 DESC, count(*) DESC, action NULLS LAST, path, cause
"""


def test_overview_matches_sql(cause_ledger):
    overview = cause_queries.cause_overview(cause_ledger, Filters())
    total = query(cause_ledger, "SELECT count(*) FROM submissions")[0][0]
    with_divergence = query(cause_ledger, "SELECT count(*) FROM submissions WHERE divergences_detected > 0")[0][0]
    by_cause = query(cause_ledger, """
        SELECT cause, count(DISTINCT submission_id), count(DISTINCT (submission_id, position)), count(*)
        FROM divergence_causes GROUP BY cause ORDER BY 2 DESC, 4 DESC, cause
    """)

    assert overview.submissions == total
    assert overview.submissions_with_divergence == with_divergence
    assert overview.divergences == query(cause_ledger, "SELECT count(*) FROM divergences")[0][0]
    assert [(row.cause, row.submissions, row.divergences, row.differences) for row in overview.causes] == by_cause
    assert overview.causes[0].share == by_cause[0][1] / total


def test_overview_deployment_filter(cause_ledger):
    overview = cause_queries.cause_overview(cause_ledger, Filters(deployments=("seeded",)))

    assert overview.submissions == 13
    assert overview.submissions_with_divergence == 12
    assert [(row.cause, row.submissions, row.share) for row in overview.causes] == [("random_number", 12, 12 / 13)]


def test_hotspots_match_sql(cause_ledger):
    report = cause_queries.hotspots(cause_ledger, Filters(), limit=25)
    hand = query(cause_ledger, HAND_HOTSPOTS.format(where="TRUE"))
    total = query(cause_ledger, "SELECT count(*) FROM submissions")[0][0]

    assert report.total == len(hand)
    assert report.submissions == total
    assert [(spot.action, spot.path, spot.cause, spot.submissions, spot.first_seen, spot.last_seen)
            for spot in report.hotspots] == hand[:25]
    assert [spot.share for spot in report.hotspots] == [row[3] / total for row in hand[:25]]


def test_hotspot_seed_share_of_action(cause_ledger):
    filters = Filters(deployments=("seeded",))

    report = cause_queries.hotspots(cause_ledger, filters)

    assert len(report.hotspots) == 1
    spot = report.hotspots[0]
    assert (spot.action, spot.path, spot.cause) == ("summarize", "kwargs.seed", "random_number")
    assert spot.submissions == 12
    assert spot.share == 12 / 13
    assert spot.share_of_action == 1.0
    assert spot.example_runs == ("seed-11", "seed-10", "seed-9")
    assert spot.first_seen == datetime(2026, 10, 1, tzinfo=timezone.utc)
    assert spot.last_seen == datetime(2026, 10, 12, tzinfo=timezone.utc)
    assert report.bucket == "day"
    assert len(report.buckets) == 20
    assert spot.trend[:12] == (1.0,) * 12
    assert spot.trend[12:19] == (None,) * 7
    assert spot.trend[19] == 0.0


def test_hotspot_trend_change_rising(tmp_path):
    ledger = tmp_path / "rising.duckdb"
    items = []
    for day in range(10):
        at = datetime(2026, 5, 1, tzinfo=timezone.utc) + timedelta(days=day)
        # Days 0-4: 1 of 4 replays diverge on the seed; days 5-9: 3 of 4.
        for number in range(4):
            diverged = number < (1 if day < 5 else 3)
            divergences = [seed_divergence(0.3 + day / 50 + number / 500 + 1e-9)] if diverged else []
            items.append(record(f"r-{day}-{number}", divergences, at=at + timedelta(hours=number),
                                status="partial" if diverged else "success"))
    ingest_paths(ledger, [str(write_lines(tmp_path / "rising.jsonl", items))])

    spot = cause_queries.hotspots(ledger, Filters()).hotspots[0]

    assert spot.trend == (0.25,) * 5 + (0.75,) * 5
    assert spot.trend_change == pytest.approx(0.5)


def test_causes_by_deployment_match_sql(cause_ledger):
    rows = cause_queries.causes_by_deployment(cause_ledger, Filters())
    hand = query(cause_ledger, """
        SELECT s.deployment, c.cause, count(DISTINCT c.submission_id),
               (SELECT count(*) FROM submissions t WHERE t.deployment = s.deployment)
        FROM divergence_causes c JOIN submissions s USING (submission_id)
        GROUP BY ALL ORDER BY 1, 3 DESC, 2
    """)

    assert [(row.deployment, row.cause, row.submissions, row.deployment_submissions) for row in rows] == hand
    assert ("case-demo", "timestamp", 1, 1) in hand


def test_hotspot_examples_newest_first(cause_ledger):
    filters = Filters(deployments=("case-demo", "seeded"))

    examples = cause_queries.hotspot_examples(cause_ledger, filters, "summarize", "kwargs.seed", "random_number",
                                              limit=3)

    assert [example.run_id for example in examples] == ["run-demo-1", "seed-11", "seed-10"]
    assert examples[0].expected == "0.08145626752228585"
    assert examples[0].actual == "0.09710858188540006"


def test_hotspot_examples_control_flow_no_action(tmp_path):
    ledger = tmp_path / "flow.duckdb"
    ingest_paths(ledger, [str(CASES / "c11_strict_abort_run-abc.json")])

    report = cause_queries.hotspots(ledger, Filters())
    examples = cause_queries.hotspot_examples(ledger, Filters(), "summarize", "", "control_flow")

    assert [(spot.action, spot.path, spot.cause) for spot in report.hotspots] == [("summarize", "", "control_flow")]
    assert [(example.run_id, example.action_index) for example in examples] == [("run-abc", 3)]


@pytest.mark.parametrize(("cause", "limit", "message"), [
    ("seed", 5, "unknown cause 'seed'"),
    ("random_number", 0, "the example limit must be a whole number from 1 to 200, got 0"),
    ("random_number", True, "got True"),
])
def test_hotspot_examples_rejects_bad_request(cause_ledger, cause, limit, message):
    with pytest.raises(cause_queries.InvalidHotspot, match=message):
        cause_queries.hotspot_examples(cause_ledger, Filters(), "summarize", "kwargs.seed", cause, limit=limit)


def test_hotspots_rejects_bad_limit(cause_ledger):
    with pytest.raises(cause_queries.InvalidHotspot, match="the hotspot limit must be a whole number from 1 to 500"):
        cause_queries.hotspots(cause_ledger, Filters(), limit=501)


@pytest.mark.parametrize(("days", "bucket"), [(1, "day"), (59, "day"), (60, "week"), (400, "week"), (500, "month")])
def test_choose_trend_bucket(days, bucket):
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)

    assert cause_queries.choose_trend_bucket(start, start + timedelta(days=days)) == bucket
