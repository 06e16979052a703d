"""Benchmark: validated ingest of a JSON Lines file against DuckDB's own JSON reader.

Generates N submissions shaped like the sample data (default 1,000,000) into a
JSON Lines file, then in one run measures, each in a fresh process:

- `replay-ledger ingest FILE` (full validation, staging, merge into a new ledger);
- DuckDB's `read_ndjson` with an explicit column list into typed submission and
  divergence tables: the rate the physical machine allows, with no validation;
- the same ingest with divergence cause classification switched off, to show
  what classifying causes adds (target: at most 25% more time).

With ``--floors`` it also measures two floors: the least an ingest built
like this one can cost with none of its rules, hashes or deduplication.
The parse floor reads the file as the ledger does, has DuckDB parse every
line for its key list and its fields (the two parses the SQL rules start
from) and writes the fields typed to a file table, as staging does. The copy
floor copies DuckDB's typed tables from its ledger into a new file, as the
merge copies the stage into the ledger. Their sum bounds the rate of an
ingest that validates, stages and merges.

Prints submissions per second, peak memory (max RSS) of each, and the ratios.
With ``--repeats N`` the two ingests run N times each, alternating, and the
medians are compared, which evens out load from other processes.

    python bench/ingest.py [--rows 1000000] [--workdir /tmp/replay-ledger-bench] [--repeats 1] [--floors]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent

BASELINE_SQL = """
CREATE TABLE submissions AS
SELECT run_id, deployment, status, actions_replayed, actions_total, divergences_detected,
       CAST(cost_savings AS DECIMAL(18, 6)) AS cost_savings, submitted_at
FROM raw;
CREATE TABLE divergences AS
SELECT run_id, d.type AS type, d.action AS action, d.index AS action_index,
       d.expected_inputs AS expected, d.actual_inputs AS actual
FROM (SELECT run_id, unnest(divergences) AS d FROM raw);
"""

COLUMNS = {
    "run_id": "VARCHAR",
    "status": "VARCHAR",
    "actions_replayed": "BIGINT",
    "actions_total": "BIGINT",
    "divergences_detected": "BIGINT",
    "divergences": "STRUCT(type VARCHAR, action VARCHAR, \"index\" BIGINT, expected_inputs JSON, actual_inputs JSON, expected VARCHAR, actual VARCHAR)[]",
    "cost_savings": "DOUBLE",
    "submitted_at": "TIMESTAMPTZ",
    "deployment": "VARCHAR",
    "agent_version": "VARCHAR",
}


def generate(path: Path, rows: int, seed: int = 11) -> None:
    """Write `rows` JSON Lines submissions built from the sample data's records, with fresh run ids and times.

    The timestamps, UUIDs and random numbers inside each record's divergences
    get fresh values too, as every real replay has, so records do not repeat
    the same divergence texts. Values equal within one record stay equal.
    """
    templates = [orjson.loads(line) for line in (ROOT / "sample_data" / "replays.jsonl").read_bytes().splitlines()]
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with path.open("wb") as handle:
        for number in range(rows):
            record = dict(rng.choice(templates))
            record["run_id"] = f"run-{number:012x}"
            record["submitted_at"] = (start + timedelta(seconds=number * 7)).isoformat().replace("+00:00", "Z")
            if record.get("divergences"):
                fresh: dict = {}
                record["divergences"] = [_renewed(item, rng, fresh) for item in record["divergences"]]
            handle.write(orjson.dumps(record) + b"\n")


_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_YEAR_SECONDS = 365 * 86_400


def _renewed(value, rng: random.Random, fresh: dict):
    """Return `value` with each timestamp, UUID and float in [0, 1) replaced by a fresh one (the same for equal ones)."""
    if isinstance(value, dict):
        return {key: _renewed(item, rng, fresh) for key, item in value.items()}
    if isinstance(value, list):
        return [_renewed(item, rng, fresh) for item in value]
    if isinstance(value, float) and 0 <= value < 1:
        return fresh.setdefault(("float", value), rng.random())
    if isinstance(value, str) and _UUID.fullmatch(value):
        return fresh.setdefault(("uuid", value), str(uuid.UUID(int=rng.getrandbits(128), version=4)))
    if isinstance(value, str) and _TIMESTAMP.fullmatch(value):
        moment = datetime(2026, 1, 1) + timedelta(seconds=rng.randrange(_YEAR_SECONDS), microseconds=rng.randrange(10**6))
        return fresh.setdefault(("time", value), moment.isoformat(timespec="microseconds"))
    return value


def run_ledger(data: Path, ledger: Path, classify_causes: bool = True) -> dict:
    import duckdb

    from ledger import store
    from ledger.ingest import ingest_paths

    # Time the wait for classification at the end of this very ingest, which other processes'
    # load affects the same way as the rest of the ingest. Batches are classified in worker
    # processes while the next ones are staged, so the rest of their cost shows only in the totals.
    classifying = {"seconds": 0.0, "cpu_seconds": 0.0}
    classify = store.Stage.finish_classifying

    def timed_classify(stage: store.Stage) -> int:
        started_wall, started_cpu = time.perf_counter(), time.process_time()
        try:
            return classify(stage)
        finally:
            classifying["seconds"] += time.perf_counter() - started_wall
            classifying["cpu_seconds"] += time.process_time() - started_cpu

    store.Stage.finish_classifying = timed_classify
    started = time.perf_counter()
    report = ingest_paths(ledger, [str(data)], classify_causes=classify_causes)
    seconds = time.perf_counter() - started
    with duckdb.connect(str(ledger), read_only=True) as connection:
        divergences, cause_rows = connection.execute(
            "SELECT (SELECT count(*) FROM divergences), (SELECT count(*) FROM divergence_causes)"
        ).fetchone()
    return {"seconds": seconds, "ingested": report.ingested, "rejected": report.rejected,
            "divergences": divergences, "cause_rows": cause_rows, "classify_seconds": classifying["seconds"],
            "classify_cpu_seconds": classifying["cpu_seconds"]}


def run_ledger_without_causes(data: Path, ledger: Path) -> dict:
    return run_ledger(data, ledger, classify_causes=False)


SIDES = {"ledger": run_ledger, "ledger-without-causes": run_ledger_without_causes}


def run_duckdb(data: Path, ledger: Path) -> dict:
    import duckdb

    started = time.perf_counter()
    connection = duckdb.connect(str(ledger))
    columns = ", ".join(f"'{name}': '{kind}'" for name, kind in COLUMNS.items())
    connection.execute(
        f"CREATE TEMP VIEW raw AS SELECT * FROM read_ndjson('{data}', columns = {{{columns}}})"
    )
    connection.execute(BASELINE_SQL)
    count = connection.execute("SELECT count(*) FROM submissions").fetchone()[0]
    connection.close()
    return {"seconds": time.perf_counter() - started, "ingested": count, "rejected": 0}


def run_parse_floor(data: Path, ledger: Path) -> dict:
    """Parse every line for its keys and fields in DuckDB, in the ingest's batches, and write the fields typed."""
    import duckdb
    import numpy as np
    import pyarrow as pa

    from ledger import readers
    from ledger.ingest import LINE_BATCH
    from ledger.store import lines

    started = time.perf_counter()
    connection = duckdb.connect(str(ledger))
    connection.execute("SET preserve_insertion_order = false")
    connection.execute(
        "CREATE TABLE parsed (line_no BIGINT, keys VARCHAR[], run_id VARCHAR, status VARCHAR, actions_replayed UBIGINT, "
        "actions_total UBIGINT, divergences_detected UBIGINT, divergences JSON, cost_savings DOUBLE, "
        "submitted_at TIMESTAMPTZ, deployment VARCHAR)"
    )
    source = readers.find_sources([str(data)])[0][0]
    batches, pending = [], 0

    def flush() -> None:
        connection.register("line_batch", pa.Table.from_batches(batches))
        connection.execute(
            "INSERT INTO parsed SELECT line_no, keys, f.run_id ->> '$', f.status ->> '$', f.actions_replayed, "
            "f.actions_total, f.divergences_detected, f.divergences, f.cost_savings, f.submitted_at ->> '$', "
            f"f.deployment ->> '$' FROM (SELECT line_no, json_keys(raw) AS keys, "
            f"json_transform(raw, '{lines._FIELDS_STRUCTURE}') AS f FROM line_batch)"
        )
        connection.unregister("line_batch")

    for chunk in readers.read_records(source, line_chunks=True):
        numbers = pa.array(np.arange(chunk.first_line, chunk.first_line + len(chunk), dtype=np.int64))
        raw = pa.LargeStringArray.from_buffers(len(chunk), pa.py_buffer(chunk.starts), pa.py_buffer(chunk.data))
        batches.append(pa.RecordBatch.from_arrays([numbers, raw], names=["line_no", "raw"]))
        pending += len(chunk)
        if pending >= LINE_BATCH:
            flush()
            batches, pending = [], 0
    if batches:
        flush()
    count = connection.execute("SELECT count(*) FROM parsed WHERE keys IS NOT NULL").fetchone()[0]
    connection.close()
    return {"seconds": time.perf_counter() - started, "ingested": count, "rejected": 0}


def run_copy_floor(data: Path, ledger: Path) -> dict:
    """Copy DuckDB's typed tables from the baseline's ledger (next to `ledger`) into a new file."""
    import duckdb

    baseline = ledger.parent / "baseline.duckdb"
    started = time.perf_counter()
    connection = duckdb.connect(str(ledger))
    connection.execute(f"ATTACH '{baseline}' AS typed (READ_ONLY)")
    connection.execute("CREATE TABLE submissions AS SELECT * FROM typed.submissions")
    connection.execute("CREATE TABLE divergences AS SELECT * FROM typed.divergences")
    count = connection.execute("SELECT count(*) FROM submissions").fetchone()[0]
    connection.execute("DETACH typed")
    connection.close()
    return {"seconds": time.perf_counter() - started, "ingested": count, "rejected": 0}


FLOORS = {"parse-floor": run_parse_floor, "copy-floor": run_copy_floor}


def measure(kind: str, data: Path, ledger: Path) -> dict:
    """Run one side in a fresh process and return its figures with its peak memory."""
    ledger.unlink(missing_ok=True)
    for leftover in ledger.parent.glob(ledger.name + "*"):
        leftover.unlink()
    output = subprocess.run(
        [sys.executable, __file__, "--side", kind, "--data", str(data), "--ledger", str(ledger)],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="submissions to generate")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/replay-ledger-bench"), help="folder for the data and ledgers")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each ingest (with and without cause classification), alternating; medians are compared")
    parser.add_argument("--floors", action="store_true",
                        help="also measure the parse and copy floors of an ingest built like this one")
    parser.add_argument("--side", choices=("ledger", "ledger-without-causes", "duckdb", *FLOORS), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ledger", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()

    if arguments.side:
        result = {**SIDES, **FLOORS}.get(arguments.side, run_duckdb)(arguments.data, arguments.ledger)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        # Worker processes (cause classification) have ended by now, so their time is counted too.
        workers = resource.getrusage(resource.RUSAGE_CHILDREN)
        result["max_rss_mb"] = usage.ru_maxrss / 1024
        result["workers_max_rss_mb"] = workers.ru_maxrss / 1024
        result["cpu_seconds"] = usage.ru_utime + usage.ru_stime + workers.ru_utime + workers.ru_stime
        print(json.dumps(result))
        return

    arguments.workdir.mkdir(parents=True, exist_ok=True)
    data = arguments.workdir / f"submissions-{arguments.rows}.jsonl"
    if not data.exists():
        print(f"generating {arguments.rows:,} submissions into {data} …", flush=True)
        generate(data, arguments.rows)
    size_mb = data.stat().st_size / 1e6
    baseline = measure("duckdb", data, arguments.workdir / "baseline.duckdb")
    with_causes, without_causes = [], []
    for _ in range(max(1, arguments.repeats)):
        with_causes.append(measure("ledger", data, arguments.workdir / "ledger.duckdb"))
        without_causes.append(measure("ledger-without-causes", data, arguments.workdir / "ledger-plain.duckdb"))
    ours = _median_run(with_causes)
    plain = _median_run(without_causes)
    for name, figures in (("duckdb read_ndjson", baseline), ("replay-ledger ingest", ours),
                          ("  without causes", plain)):
        rate = figures["ingested"] / figures["seconds"]
        workers = figures.get("workers_max_rss_mb", 0)
        print(f"{name:22} {figures['ingested']:>10,} rows  {figures['seconds']:7.2f} s  "
              f"{rate:>10,.0f} rows/s  peak {figures['max_rss_mb']:7.0f} MB"
              + (f" (a classifying worker: {workers:.0f} MB)" if workers else ""))
    ratio = (ours["ingested"] / ours["seconds"]) / (baseline["ingested"] / baseline["seconds"])
    print(f"file {size_mb:,.0f} MB; replay-ledger rate / DuckDB rate = {ratio:.2f} (target >= 0.33)")
    cpu_ratio = baseline["cpu_seconds"] / plain["cpu_seconds"]
    print(f"CPU time: DuckDB {baseline['cpu_seconds']:.2f} s, replay-ledger without causes {plain['cpu_seconds']:.2f} s "
          f"(DuckDB's CPU time / ours = {cpu_ratio:.2f}; it depends less on other processes' load than wall time)")
    overhead = ours["seconds"] / plain["seconds"] - 1
    cpu_with = statistics.median(run["cpu_seconds"] for run in with_causes)
    cpu_without = statistics.median(run["cpu_seconds"] for run in without_causes)
    runs = ", ".join(f"{run['seconds']:.2f}" for run in with_causes)
    plain_runs = ", ".join(f"{run['seconds']:.2f}" for run in without_causes)
    print(f"{ours['divergences']:,} divergences gave {ours['cause_rows']:,} cause rows; classifying them added "
          f"{overhead:+.0%} to ingest time (target <= +25%; runs with {runs} s, without {plain_runs} s)")
    print(f"CPU time of the whole process, median: {cpu_with:.2f} s with causes, {cpu_without:.2f} s without "
          f"({cpu_with / cpu_without - 1:+.0%}); CPU time depends less on other processes' load than wall time")
    shares = sorted(run["classify_seconds"] / (run["seconds"] - run["classify_seconds"]) for run in with_causes)
    step = ", ".join(f"{run['classify_seconds']:.2f} s of {run['seconds']:.2f} s" for run in with_causes)
    print(f"the wait for classification at the end of each ingest with causes: {step}; median "
          f"{shares[(len(shares) - 1) // 2]:+.0%} over the rest of that ingest")
    if arguments.floors:
        _print_floors(data, arguments.workdir, baseline, arguments.repeats)


def _print_floors(data: Path, workdir: Path, baseline: dict, repeats: int) -> None:
    """Measure and print the parse and copy floors against DuckDB's reader, medians of `repeats` runs each."""
    parse = _median_run([measure("parse-floor", data, workdir / "floor-parse.duckdb") for _ in range(max(1, repeats))])
    copy = _median_run([measure("copy-floor", data, workdir / "floor-copy.duckdb") for _ in range(max(1, repeats))])
    for name, figures in (("parse floor", parse), ("copy floor", copy)):
        print(f"{name:22} {figures['ingested']:>10,} rows  {figures['seconds']:7.2f} s  "
              f"CPU {figures['cpu_seconds']:6.2f} s  peak {figures['max_rss_mb']:7.0f} MB")
    floor = parse["seconds"] + copy["seconds"]
    ratio = baseline["seconds"] / floor
    print(f"parse floor + copy floor = {floor:.2f} s: with no rule, hash or deduplication checked, an ingest "
          f"that parses, stages and merges like this one reaches at most {ratio:.2f} of DuckDB's rate "
          f"(CPU {parse['cpu_seconds'] + copy['cpu_seconds']:.2f} s against DuckDB's {baseline['cpu_seconds']:.2f} s)")


def _median_run(runs: list[dict]) -> dict:
    """Return the run with the median time (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda run: run["seconds"])
    return ordered[(len(ordered) - 1) // 2]


if __name__ == "__main__":
    main()
