"""Benchmark: divergence cause classification with the SQL fast path against Python alone.

Generates N submissions with `bench/ingest.py`'s generator (default 1,000,000,
about 400,000 divergences) or reuses a JSON Lines file. It loads their
divergences into a DuckDB file as a table shaped like the stage's. Then it
times `store.classify_divergences` on it with the SQL fast path and with
Python only, alternating, `--repeats` times each, under the stage's memory
limit.

Prints the median seconds and divergences per second of each, their ratio,
how many divergences SQL decided and how many it left to Python, whether both
stored the same rows, how many distinct input texts the divergences have, and
the load average before and after.

    python bench/causes.py [--rows 1000000] [--data FILE.jsonl] [--workdir /tmp/replay-ledger-bench-causes] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from bench.ingest import generate  # noqa: E402
from ledger import store  # noqa: E402
from ledger.store import cause_sql  # noqa: E402

# The stage's divergence rows, split the way the stage's SQL path splits them.
LOAD_SQL = """
CREATE OR REPLACE TABLE divergences AS
WITH submissions AS (
    SELECT row_number() OVER () AS seq, divergences
    FROM read_ndjson('{data}', columns = {{'divergences': 'JSON[]'}})
), listed AS (
    SELECT seq, unnest(divergences) AS d, unnest(range(len(divergences))) AS position FROM submissions
)
SELECT seq, CAST(position AS INTEGER) AS position, d ->> 'type' AS type, d ->> 'action' AS action,
       CAST(d ->> 'index' AS BIGINT) AS action_index,
       CASE WHEN d ->> 'type' = 'action_mismatch' THEN d -> '$.expected'
            ELSE coalesce(d -> '$.expected_inputs', d -> '$.expected') END AS expected,
       CASE WHEN d ->> 'type' = 'action_mismatch' THEN d -> '$.actual'
            ELSE coalesce(d -> '$.actual_inputs', d -> '$.actual') END AS actual,
       json_merge_patch(d, '{{"expected_inputs": null, "actual_inputs": null}}') AS detail
FROM listed
ORDER BY seq, position
"""


def load(data: Path, database: Path) -> int:
    """Load the divergences of `data` into table `divergences` of a new `database`; return how many."""
    database.unlink(missing_ok=True)
    with duckdb.connect(str(database)) as connection:
        connection.execute(LOAD_SQL.format(data=str(data).replace("'", "''")))
        stage_columns = [name for name, _ in store.STAGE_DIVERGENCE_COLUMNS]
        loaded_columns = [row[0] for row in connection.execute("DESCRIBE divergences").fetchall()]
        if loaded_columns != stage_columns:
            raise SystemExit(f"loaded columns {loaded_columns} differ from the stage's {stage_columns}")
        return connection.execute("SELECT count(*) FROM divergences").fetchall()[0][0]


def classify(connection: duckdb.DuckDBPyConnection, target: str, sql_fast_path: bool) -> dict:
    """Classify every divergence into a new `target` table in one transaction; return seconds and rows."""
    columns = ", ".join(f"{name} {kind}" for name, kind in store.STAGE_CAUSE_COLUMNS)
    connection.execute(f"CREATE OR REPLACE TABLE {target} ({columns})")
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    connection.execute("BEGIN TRANSACTION")
    rows = store.classify_divergences(connection, "divergences", target, "seq", sql_fast_path=sql_fast_path)
    connection.execute("COMMIT")
    return {"seconds": time.perf_counter() - started_wall, "cpu_seconds": time.process_time() - started_cpu,
            "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="submissions to generate (default 1,000,000)")
    parser.add_argument("--data", type=Path, help="an existing JSON Lines file to use instead of generating one")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/replay-ledger-bench-causes"),
                        help="folder for the generated file and the DuckDB file")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating (default 3)")
    arguments = parser.parse_args()

    arguments.workdir.mkdir(parents=True, exist_ok=True)
    data = arguments.data
    if data is None:
        data = arguments.workdir / f"submissions-{arguments.rows}.jsonl"
        if not data.exists():
            generate(data, arguments.rows)
    database = arguments.workdir / "divergences.duckdb"
    divergences = load(data, database)
    load_before = os.getloadavg()

    runs: dict[str, list[dict]] = {"sql": [], "python": []}
    with duckdb.connect(str(database), config={"memory_limit": store.STAGE_MEMORY_LIMIT}) as connection:
        for _ in range(arguments.repeats):
            runs["sql"].append(classify(connection, "causes_sql", sql_fast_path=True))
            runs["python"].append(classify(connection, "causes_python", sql_fast_path=False))
        first, last = connection.execute("SELECT min(rowid), max(rowid) FROM divergences").fetchall()[0]
        connection.execute("CREATE OR REPLACE TEMP TABLE causes_counted AS SELECT * FROM causes_sql LIMIT 0")
        counts = cause_sql.classify_table(connection, "divergences", "causes_counted", "seq", first, last)
        distinct_inputs = connection.execute(
            "SELECT count(DISTINCT expected), count(DISTINCT actual) FROM divergences WHERE type = 'input_mismatch'"
        ).fetchall()[0]
        differing = connection.execute(
            "SELECT count(*) FROM ((SELECT * FROM causes_sql EXCEPT ALL SELECT * FROM causes_python) "
            "UNION ALL (SELECT * FROM causes_python EXCEPT ALL SELECT * FROM causes_sql))"
        ).fetchall()[0][0]
    load_after = os.getloadavg()

    print(f"divergences: {divergences:,} from {data}")
    medians = {}
    for side, side_runs in runs.items():
        seconds = statistics.median(run["seconds"] for run in side_runs)
        cpu_seconds = statistics.median(run["cpu_seconds"] for run in side_runs)
        medians[side] = seconds
        every = ", ".join(f"{run['seconds']:.2f}" for run in side_runs)
        print(f"{side:>6}: median {seconds:.2f} s ({every}), {divergences / seconds:,.0f} divergences/s, "
              f"CPU {cpu_seconds:.2f} s, {side_runs[0]['rows']:,} cause rows")
    print(f"ratio: Python alone takes {medians['python'] / medians['sql']:.1f}x the time of the SQL fast path")
    print(f"decided in SQL: {counts.decided_in_sql:,} ({counts.decided_in_sql / max(divergences, 1):.1%}), "
          f"left to Python: {counts.deferred:,}")
    print(f"rows that differ between the two: {differing}")
    # DuckDB walks each distinct text once, so repeated texts make the SQL path cheaper than on unique inputs.
    print(f"distinct input_mismatch texts: {distinct_inputs[0]:,} expected, {distinct_inputs[1]:,} actual")
    print("load average before: {:.2f} {:.2f} {:.2f}, after: {:.2f} {:.2f} {:.2f}".format(*load_before, *load_after))


if __name__ == "__main__":
    main()
