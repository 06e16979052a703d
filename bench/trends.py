"""Benchmark the Trends, Deployments and ROI reads and the regression scan on a large generated ledger.

Usage (from the repository root):

    .venv/bin/python bench/trends.py --rows 10000000 --ledger /tmp/replay-ledger-bench/trends-10m.duckdb

The submissions come from the Replay Hub benchmark's SQL generator in
`bench/app.py`: six deployments over 90 days ending now, 70% of them success.
This script adds one deploy marker every ten days per deployment. The ledger is
generated on the first run and reused while it holds the requested number of
rows; keep it outside the repository.

Timings are medians of warm repetitions (one untimed call first), printed
with their ratio to a baseline measured in the same run: one full scan that
counts the submissions with a divergence (``count(*) FILTER (...)``), the
least work any trend query over every row must do.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.app import build_ledger, timed  # noqa: E402
from ledger import charts, regressions, store  # noqa: E402
from ledger.queries import Filters, deploys, roi, trends  # noqa: E402
from ledger.queries.trend_view import trend_view  # noqa: E402

DEFAULT_LEDGER = Path("/tmp/replay-ledger-bench/trends-10m.duckdb")
VIEW_TARGET_MS = 300.0
MARKER_SPACING_DAYS = 10
SPAN_DAYS = 90


def add_markers(path: Path) -> int:
    """Add a deploy marker every ten days to each generated deployment, once; return how many the ledger has."""
    with store.reading(path) as connection:
        names = [row[0] for row in connection.execute("SELECT DISTINCT deployment FROM submissions").fetchall()]
        first, last = connection.execute("SELECT min(submitted_at), max(submitted_at) FROM submissions").fetchone()
    markers = []
    for offset, name in enumerate(sorted(names)):
        at = first + timedelta(days=3, hours=7 * offset)
        version = 1
        while at < last:
            markers.append({"deployment": name, "version": f"1.{version}.0", "deployed_at": at, "note": "bench"})
            at += timedelta(days=MARKER_SPACING_DAYS)
            version += 1
    store.add_deploys(path, markers, origin="file")
    with store.reading(path) as connection:
        return connection.execute("SELECT count(*) FROM deploys").fetchone()[0]


def median_ms(call: Callable[[], object], repeat: int) -> float:
    call()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def full_scan(path: Path) -> None:
    with store.reading(path) as connection:
        connection.execute("SELECT count(*) FILTER (WHERE divergences_detected > 0) FROM submissions").fetchone()


def trends_view(path: Path, filters: Filters, bucket: str, zone: str, as_of: datetime) -> None:
    """Compute what the Trends page shows for one view, with nothing cached, and build its four chart specs."""
    settings = regressions.Settings()
    view = trend_view(path, filters, bucket, zone, as_of)
    result = view.trend
    results = regressions.judge_windows(view.windows, settings, as_of)
    series = {name: trends.divergence_series(result, name) for name in result.series}
    shifts = regressions.find_shifts(series, view.all_markers, result.bucket, result.zone)
    first, last = result.span
    verdicts = {item.marker.deploy_id: item.verdict.verdict for item in results}
    groups = charts.group_markers(view.shown_markers, charts.marker_gap(filters.start or first, filters.end or last,
                                                                        result.width), verdicts)
    frame = charts.trend_frame(result)
    for chart in (
        charts.divergence_rate_chart(result, "share", groups, charts.shift_marks(shifts), frame=frame),
        charts.divergence_count_chart(result, groups, frame=frame),
        charts.savings_chart(result, groups, frame=frame),
        charts.cumulative_savings_chart(result, groups, frame=frame),
    ):
        chart.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="Submissions in the generated ledger.")
    parser.add_argument("--ledger", type=Path, default=DEFAULT_LEDGER,
                        help=f"Ledger file to generate or reuse (default {DEFAULT_LEDGER}); keep it outside the repo.")
    parser.add_argument("--repeat", type=int, default=9, help="Timed repetitions per figure.")
    arguments = parser.parse_args()
    if arguments.rows < 1000:
        parser.error("--rows must be at least 1000")
    path = arguments.ledger
    repeat = arguments.repeat

    print(f"load average before: {' '.join(f'{value:.2f}' for value in os.getloadavg())}, {os.cpu_count()} cores")
    build_ledger(path, arguments.rows)
    marker_count = add_markers(path)
    as_of = datetime.now(timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=1)
    last_30_days = Filters(as_of - timedelta(days=30), as_of)
    everything = Filters()
    one_deployment = Filters(deployments=("prod-eu",))
    print(f"{marker_count} deploy markers")

    baseline = median_ms(lambda: full_scan(path), repeat)
    print(f"\nmedians of {repeat} warm runs (baseline: one full scan counting submissions with a divergence "
          f"= {baseline:.1f} ms)")
    print(f"{'read':62} {'ms':>8} {'x baseline':>11}")
    rows = [
        ("trend, all time, auto (day) buckets, UTC", lambda: trends.trend(path, everything)),
        ("trend, all time, week buckets, Europe/Berlin", lambda: trends.trend(path, everything, "week", "Europe/Berlin")),
        ("trend, last 30 days, day buckets, America/New_York",
         lambda: trends.trend(path, last_30_days, "day", "America/New_York")),
        ("trend, one deployment, hour buckets (coarsened to day)", lambda: trends.trend(path, one_deployment, "hour")),
        ("marker windows, 7 days each side, every marker", lambda: deploys.marker_windows(path, as_of)),
        ("marker windows, 200 submissions each side, every marker",
         lambda: deploys.marker_windows(path, as_of, window=None, submissions=200)),
        ("divergence buckets per deployment, day, UTC (check)", lambda: trends.divergence_buckets(path, everything)),
        ("regression scan = replay-ledger check (windows + shifts)", lambda: regressions.scan(path, as_of=as_of)),
        ("deployment summaries", lambda: deploys.deployment_summaries(path, everything, as_of, timedelta(days=7))),
        ("version changes (auto field)", lambda: deploys.version_changes(path)),
        ("ROI: savings per week, gross and once per run", lambda: roi.savings_by_period(path, everything, "week")),
        ("ROI: 28-day projection", lambda: roi.projection(path, everything)),
        ("ROI page = roi_view: periods, totals and projection, one open", lambda: roi.roi_view(path, everything)),
        ("ROI page, last 30 days", lambda: roi.roi_view(path, last_30_days)),
    ]
    for label, call in rows:
        value = median_ms(call, repeat)
        print(f"{label:62} {value:8.1f} {value / baseline:11.2f}")

    print(f"\none Trends view = trend_view (one open: trend, markers, marker windows) + verdicts + shifts + four "
          f"chart specs, nothing cached (target {VIEW_TARGET_MS:.0f} ms median; CPU time counts every thread)")
    views = [
        ("all time, auto buckets, UTC", everything, "auto", "UTC"),
        ("last 30 days, auto buckets, Europe/Berlin", last_30_days, "auto", "Europe/Berlin"),
        ("one deployment, all time, day buckets", one_deployment, "day", "UTC"),
    ]
    for label, filters, bucket, zone in views:
        value, cpu = timed(lambda: trends_view(path, filters, bucket, zone, as_of), repeat)
        verdict = "ok" if value <= VIEW_TARGET_MS else "OVER TARGET"
        print(f"{label:62} {value:8.1f} {value / baseline:11.2f}  {verdict} (CPU time {cpu:.1f} ms)")
    print(f"\nload average after: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()
