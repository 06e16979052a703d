"""Benchmark the Replay Hub: its queries on a large generated ledger, and its render against a trivial page.

Usage (from the repository root):

    .venv/bin/python bench/app.py --rows 10000000 --ledger /tmp/replay-ledger-bench/hub-10m.duckdb

The ledger is generated in SQL on the first run and reused while it holds the
requested number of rows; keep it outside the repository. It has submissions
only (no divergences), because the Replay Hub reads nothing else.

Timings are medians of warm repetitions (one untimed call first). Each figure
is also printed as a ratio to a baseline measured in the same run, so runs on
a loaded machine stay comparable:

- queries: baseline = opening the ledger read-only and running ``SELECT 1``,
  the fixed cost every query function pays;
- render: baseline = an AppTest rerun of a trivial page with four metrics and
  a 50-row table (Streamlit's own cost).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ledger import queries, store  # noqa: E402
from ledger.queries import hub  # noqa: E402

DEFAULT_LEDGER = Path(tempfile.gettempdir()) / "replay-ledger-bench" / "hub.duckdb"
SPAN_DAYS = 90
QUERY_TARGET_MS = 150.0
RENDER_MARGIN = 1.2
GENERATE_MEMORY_LIMIT = "2GB"

# Generated rows: run ids repeat about every third row, six deployments, the
# sample data's mix of statuses, and savings up to $2 in micro-dollars.
GENERATE_SQL = """
INSERT INTO submissions (submission_id, platform_id, content_hash, run_id, deployment, status, actions_replayed,
                         actions_total, divergences_detected, cost_savings, submitted_at, location, flags, extra,
                         ingest_id, ingested_at)
SELECT 'bench-' || lpad(i::VARCHAR, 10, '0') AS submission_id,
       NULL AS platform_id,
       md5(i::VARCHAR) AS content_hash,
       'run-' || lpad(to_hex(i // 3), 12, '0') AS run_id,
       ['prod-eu', 'prod-us', 'staging', 'prod-ap', 'canary', 'dev'][1 + (hash(i) % 6)::INTEGER] AS deployment,
       CASE WHEN hash(i * 7) % 100 < 70 THEN 'success'
            WHEN hash(i * 7) % 100 < 90 THEN 'partial' ELSE 'failed' END AS status,
       total - (CASE WHEN hash(i * 7) % 100 >= 90 THEN (hash(i * 11) % total)::BIGINT ELSE 0 END) AS actions_replayed,
       total AS actions_total,
       CASE WHEN hash(i * 7) % 100 < 70 THEN 0
            WHEN hash(i * 7) % 100 < 90 THEN 1 + (hash(i * 13) % 4)::BIGINT
            ELSE (hash(i * 17) % 2)::BIGINT END AS divergences_detected,
       ((hash(i * 19) % 2000000)::DECIMAL(18, 0) / 1000000)::DECIMAL(18, 6) AS cost_savings,
       ?::TIMESTAMPTZ - to_seconds(i * ? // ?) AS submitted_at,
       NULL AS location, NULL AS flags, NULL AS extra,
       1 AS ingest_id, now() AS ingested_at
FROM (SELECT range AS i, 3 + (hash(range * 5) % 18)::BIGINT AS total FROM range(?))
"""


def build_ledger(path: Path, rows: int) -> None:
    """Create the benchmark ledger with `rows` generated submissions, unless it already contains exactly that many."""
    if path.exists():
        with store.reading(path) as connection:
            present = connection.execute("SELECT count(*) FROM submissions").fetchone()[0]
        if present == rows:
            print(f"reusing {path} ({rows:,} submissions, {path.stat().st_size / 2**20:,.0f} MiB)")
            return
        path.unlink()
    started = time.perf_counter()
    newest = datetime.now(timezone.utc).replace(microsecond=0)
    with store.writing(path, budget=60) as connection:
        # Building the run id index once after the load is far cheaper than updating it row by row.
        connection.execute(f"SET memory_limit = '{GENERATE_MEMORY_LIMIT}'")
        connection.execute("DROP INDEX IF EXISTS submissions_run_id")
        connection.execute(GENERATE_SQL, [newest, SPAN_DAYS * 86400, rows, rows])
        connection.execute("CREATE INDEX submissions_run_id ON submissions (run_id)")
        connection.execute(
            "INSERT INTO ingest_log VALUES (1, now(), now(), 'bench', ['generated'], ?, ?, 0, 0, NULL)", [rows, rows]
        )
        connection.execute("CHECKPOINT")
    print(f"generated {rows:,} submissions into {path} in {time.perf_counter() - started:.1f} s "
          f"({path.stat().st_size / 2**20:,.0f} MiB)")


def median_ms(call: Callable[[], object], repeat: int) -> float:
    return timed(call, repeat)[0]


def timed(call: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Return the median wall time and the median CPU time of this process (all threads) of `call`, in ms.

    CPU time depends far less on other processes than wall time does, so it
    shows the work done when the machine is shared.
    """
    call()
    wall, cpu = [], []
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        call()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def open_only(path: Path) -> None:
    with store.reading(path) as connection:
        connection.execute("SELECT 1").fetchone()


def view_reads(path: Path, filters: queries.Filters, sort: str, direction: str, page: int, size: int):
    """Run the reads of one Replay Hub view: the tiles with deltas and one sorted page with its count."""
    return lambda: hub.hub_view(path, filters, sort, direction, page, size)


def measure_queries(path: Path, repeat: int) -> float:
    """Print the query timings; return the median of the newest-page view in ms."""
    end = (datetime.now(timezone.utc) + timedelta(minutes=1)).replace(second=0, microsecond=0)
    last_30_days = queries.Filters(end - timedelta(days=30), end)
    everything = queries.Filters()
    total = hub.submissions_page(path, everything, page_size=50).total
    deep_page = 1_000_000 // 50 + 1
    middle_page = total // 50 // 2

    baseline, baseline_cpu = timed(lambda: open_only(path), repeat)
    print(f"\nqueries, medians of {repeat} warm runs (baseline: open read-only + SELECT 1 = {baseline:.1f} ms, "
          f"{baseline_cpu:.1f} ms CPU)")
    print(f"{'read':62} {'ms':>8} {'x baseline':>11} {'CPU ms':>8}")
    rows = [
        ("tiles with deltas, last 30 days", lambda: hub.hub_tiles(path, last_30_days)),
        ("tiles, all time", lambda: hub.hub_tiles(path, everything)),
        ("page 1 newest first + count", lambda: hub.submissions_page(path, everything)),
        ("page 1 by Saved + count", lambda: hub.submissions_page(path, everything, "saved")),
        (f"page {deep_page:,} newest first (1M rows deep) + count",
         lambda: hub.submissions_page(path, everything, page=deep_page)),
        (f"page {middle_page:,} by Saved (middle, worst case) + count",
         lambda: hub.submissions_page(path, everything, "saved", page=middle_page)),
        ("page 1 by Status + count (per-value counts)", lambda: hub.submissions_page(path, everything, "status")),
        (f"page {middle_page:,} by Status (middle) + count",
         lambda: hub.submissions_page(path, everything, "status", page=middle_page)),
        ("page 1 by Replayed / Total + count", lambda: hub.submissions_page(path, everything, "replayed")),
        ("overview and deployments (read again after the ledger changes)", lambda: hub.overview(path)),
    ]
    for label, call in rows:
        value, cpu = timed(call, repeat)
        print(f"{label:62} {value:8.1f} {value / baseline:11.2f} {cpu:8.1f}")

    print(f"\none Replay Hub view = hub_view: tiles with deltas + one sorted page, one open "
          f"(target {QUERY_TARGET_MS:.0f} ms median)")
    views = [
        ("newest page, last 30 days", view_reads(path, last_30_days, "submitted", "desc", 1, 50)),
        ("page 1M rows deep, all time", view_reads(path, everything, "submitted", "desc", deep_page, 50)),
        ("sort by Saved, last 30 days", view_reads(path, last_30_days, "saved", "desc", 1, 50)),
    ]
    newest_view = 0.0
    for label, call in views:
        value, cpu = timed(call, repeat)
        newest_view = newest_view or value
        verdict = "ok" if value <= QUERY_TARGET_MS else "OVER TARGET"
        print(f"{label:62} {value:8.1f} {value / baseline:11.2f} {cpu:8.1f}  {verdict}")
    return newest_view


TRIVIAL_PAGE = '''
import pandas as pd
import streamlit as st

frame = pd.DataFrame({name: [f"{name}-{row}" for row in range(50)] for name in
                      ("Run ID", "Status", "Replayed / Total", "Divergences", "Saved", "Submitted", "Deployment")})
for column in st.columns(4):
    column.metric("Metric", "1,234", "+5 (+0.4%)", border=True)
st.dataframe(frame, hide_index=True)
'''


def measure_render(path: Path, repeat: int, queries_ms: float) -> None:
    from streamlit.testing.v1 import AppTest

    os.environ[store.LEDGER_ENV] = str(path)
    with tempfile.TemporaryDirectory() as folder:
        trivial_path = Path(folder) / "trivial.py"
        trivial_path.write_text(TRIVIAL_PAGE)
        trivial = AppTest.from_file(str(trivial_path), default_timeout=120).run()
        baseline = median_ms(trivial.run, repeat)

    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.context["timezone"] = "UTC"
    app.query_params["range"] = "30d"
    app.run()
    if app.exception:
        raise SystemExit(f"the app failed: {app.exception[0].value}")
    cached_render = median_ms(app.run, repeat)

    # Each run shows a page not shown before, so the view's query runs and the
    # ledger overview stays cached, as when a user pages or changes a filter.
    pages = iter(range(2, 10 * repeat + 2))

    def next_page() -> None:
        app.number_input(key="hub_page").set_value(next(pages))
        app.run()

    uncached_view = median_ms(next_page, repeat)
    print(f"\nrender, AppTest reruns, medians of {repeat} (baseline: trivial page with 4 metrics "
          f"and a 50-row table = {baseline:.1f} ms)")
    print(f"{'render':58} {'ms':>8} {'x baseline':>11}")
    print(f"{'app.py on Replay Hub, view cached':58} {cached_render:8.1f} {cached_render / baseline:11.2f}")
    print(f"{'app.py on Replay Hub, next page (view read from the ledger)':58} {uncached_view:8.1f} "
          f"{uncached_view / baseline:11.2f}")
    budget = (baseline + queries_ms) * RENDER_MARGIN
    verdict = "ok" if uncached_view <= budget else "OVER TARGET"
    print(f"target: next-page render <= (trivial + queries of one view) x {RENDER_MARGIN} = "
          f"({baseline:.1f} + {queries_ms:.1f}) x {RENDER_MARGIN} = {budget:.1f} ms: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="Submissions in the generated ledger.")
    parser.add_argument("--ledger", type=Path, default=DEFAULT_LEDGER,
                        help=f"Ledger file to generate or reuse (default {DEFAULT_LEDGER}); keep it outside the repo.")
    parser.add_argument("--repeat", type=int, default=15, help="Timed repetitions per figure.")
    parser.add_argument("--skip-render", action="store_true", help="Measure the queries only.")
    arguments = parser.parse_args()
    if arguments.rows < 1000:
        parser.error("--rows must be at least 1000")

    print(f"load average before: {' '.join(f'{value:.2f}' for value in os.getloadavg())}, {os.cpu_count()} cores")
    build_ledger(arguments.ledger, arguments.rows)
    view_ms = measure_queries(arguments.ledger, arguments.repeat)
    if not arguments.skip_render:
        measure_render(arguments.ledger, arguments.repeat, view_ms)
    print(f"\nload average after: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()
