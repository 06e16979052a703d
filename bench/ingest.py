"""Benchmark: validated ingest of a JSON Lines file against DuckDB's own JSON reader.

Generates N submissions shaped like the sample data (default 1,000,000) into a
JSON Lines file, then in one run measures, each in a fresh process:

- `replay-ledger ingest FILE` (full validation, staging, merge into a new ledger);
- DuckDB's `read_ndjson` with an explicit column list into typed submission and
  divergence tables: the rate the physical machine allows, with no validation.

Prints submissions per second, peak memory (max RSS) of each, and the ratio.

    python bench/ingest.py [--rows 1000000] [--workdir /tmp/replay-ledger-bench]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
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
    """Write `rows` JSON Lines submissions built from the sample data's records, with fresh run ids and times."""
    templates = [orjson.loads(line) for line in (ROOT / "sample_data" / "replays.jsonl").read_bytes().splitlines()]
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with path.open("wb") as handle:
        for number in range(rows):
            record = dict(rng.choice(templates))
            record["run_id"] = f"run-{number:012x}"
            record["submitted_at"] = (start + timedelta(seconds=number * 7)).isoformat().replace("+00:00", "Z")
            handle.write(orjson.dumps(record) + b"\n")


def run_ledger(data: Path, ledger: Path) -> dict:
    from ledger.ingest import ingest_paths

    started = time.perf_counter()
    report = ingest_paths(ledger, [str(data)])
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "ingested": report.ingested, "rejected": report.rejected}


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
    parser.add_argument("--side", choices=("ledger", "duckdb"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ledger", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()

    if arguments.side:
        result = (run_ledger if arguments.side == "ledger" else run_duckdb)(arguments.data, arguments.ledger)
        result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    arguments.workdir.mkdir(parents=True, exist_ok=True)
    data = arguments.workdir / f"submissions-{arguments.rows}.jsonl"
    if not data.exists():
        print(f"generating {arguments.rows:,} submissions into {data} …", flush=True)
        generate(data, arguments.rows)
    size_mb = data.stat().st_size / 1e6
    baseline = measure("duckdb", data, arguments.workdir / "baseline.duckdb")
    ours = measure("ledger", data, arguments.workdir / "ledger.duckdb")
    for name, figures in (("duckdb read_ndjson", baseline), ("replay-ledger ingest", ours)):
        rate = figures["ingested"] / figures["seconds"]
        print(f"{name:22} {figures['ingested']:>10,} rows  {figures['seconds']:7.2f} s  "
              f"{rate:>10,.0f} rows/s  peak {figures['max_rss_mb']:7.0f} MB")
    ratio = (ours["ingested"] / ours["seconds"]) / (baseline["ingested"] / baseline["seconds"])
    print(f"file {size_mb:,.0f} MB; replay-ledger rate / DuckDB rate = {ratio:.2f} (target >= 0.33)")


if __name__ == "__main__":
    main()
