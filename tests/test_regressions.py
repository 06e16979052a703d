"""The regression checks end to end: SQL windows on real ledgers, Fisher's exact test, change points, reports.

The validation ledger is synthetic with known truth: deployments whose
divergence rate does not change at their marker, deployments with a planted
rise at their marker, and deployments with a planted rise and no marker.
`tests/test_analysis.py` validates the statistics alone; these tests run them
on what the SQL counts.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pytest

from ledger import regressions, store
from ledger.analysis import find_change_points, split_supported
from ledger.deploy_log import read_deploy_log
from ledger.ingest import ingest_paths
from ledger.queries import Filters, deploys, trends

UTC = timezone.utc
T0 = datetime(2026, 6, 15, tzinfo=UTC)
AS_OF = datetime(2026, 12, 4, tzinfo=UTC)
SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
NULL_DEPLOYMENTS = 300
PLANTED_DEPLOYMENTS = 40
UNMARKED_DEPLOYMENTS = 20


def query(ledger: Path, sql: str, parameters: list | tuple = ()) -> list[tuple]:
    with duckdb.connect(str(ledger), read_only=True) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        return connection.execute(sql, list(parameters)).fetchall()


def line(run_id: str, deployment: str, at: datetime, diverged: bool) -> str:
    return json.dumps({
        "run_id": run_id, "status": "partial" if diverged else "success", "actions_replayed": 4, "actions_total": 4,
        "divergences_detected": int(diverged), "cost_savings": 0.01,
        "submitted_at": at.isoformat().replace("+00:00", "Z"), "deployment": deployment,
    })


def simulate(rng: np.random.Generator, deployment: str, days: int, per_day: float, rate_before: float,
             rate_after: float, switch: datetime) -> list[str]:
    """Draw submissions over `days` days centred on `switch`, with one divergence rate before it and one after."""
    count = int(rng.poisson(per_day * days))
    offsets = rng.uniform(-days / 2, days / 2, size=count)
    lines = []
    for index, offset in enumerate(offsets):
        at = switch + timedelta(days=float(offset))
        rate = rate_before if at < switch else rate_after
        lines.append(line(f"{deployment}-{index}", deployment, at, bool(rng.random() < rate)))
    return lines


@pytest.fixture(scope="module")
def validation_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Null, planted and unmarked deployments, each with its own seed; markers at T0 for the first two kinds."""
    folder = tmp_path_factory.mktemp("validation")
    lines: list[str] = []
    markers = []
    for seed in range(NULL_DEPLOYMENTS):
        rng = np.random.default_rng(seed)
        rate = float(rng.uniform(0.05, 0.5))
        name = f"null-{seed:03d}"
        lines += simulate(rng, name, 14, 14, rate, rate, T0)
        markers.append({"deployment": name, "version": "2", "deployed_at": T0})
    for seed in range(PLANTED_DEPLOYMENTS):
        rng = np.random.default_rng(1000 + seed)
        name = f"planted-{seed:02d}"
        lines += simulate(rng, name, 14, 30, 0.10, 0.30, T0)
        markers.append({"deployment": name, "version": "2", "deployed_at": T0})
    for seed in range(UNMARKED_DEPLOYMENTS):
        rng = np.random.default_rng(2000 + seed)
        lines += simulate(rng, f"unmarked-{seed:02d}", 14, 22, 0.10, 0.40, T0)
    source = folder / "validation.jsonl"
    source.write_text("\n".join(lines) + "\n")
    path = folder / "validation.duckdb"
    ingest_paths(path, [str(source)])
    store.add_deploys(path, markers, origin="file")
    return path


def verdicts(report: regressions.RegressionReport, prefix: str) -> list[str]:
    return [result.verdict.verdict for result in report.results if result.marker.deployment.startswith(prefix)]


# ---------------------------------------------------------------------------
# Validation on synthetic data with known truth


def test_scan_finds_planted_rises(validation_ledger: Path):
    report = regressions.scan(validation_ledger, as_of=AS_OF, shifts=False)
    planted = [r for r in report.results if r.marker.deployment.startswith("planted-")]

    # 0.10 -> 0.30 with about 210 submissions a side is a z of about 5.3, so the power at alpha 0.01 is about
    # 0.99 (normal approximation; Fisher's test is a little more conservative). Expect 39 or 40 of 40.
    assert len(planted) == PLANTED_DEPLOYMENTS
    assert sum(r.verdict.verdict == "regression" for r in planted) >= PLANTED_DEPLOYMENTS - 2
    assert all(r.verdict.verdict in ("regression", "no_change") for r in planted)
    mean_effect = sum(r.effect for r in planted) / len(planted)
    assert mean_effect == pytest.approx(0.20, abs=0.03)


@pytest.mark.parametrize(("alpha", "min_effect"), [(0.05, 0.0), (0.01, 0.05)])
def test_scan_false_positive_rate(validation_ledger: Path, alpha: float, min_effect: float):
    settings = regressions.Settings(alpha=alpha, min_effect=min_effect)

    report = regressions.scan(validation_ledger, as_of=AS_OF, settings=settings, shifts=False)
    null = verdicts(report, "null-")
    flagged = sum(verdict in ("regression", "improvement") for verdict in null)

    # With a true false-positive rate of alpha the count is Binomial(300, alpha); three standard deviations above
    # its mean leave a correct detector failing by chance about once in a thousand runs. Fisher's test is
    # conservative, so the count usually lies well below the mean.
    limit = NULL_DEPLOYMENTS * alpha + 3 * math.sqrt(NULL_DEPLOYMENTS * alpha * (1 - alpha))
    assert len(null) == NULL_DEPLOYMENTS
    assert "not_judged" not in null
    assert flagged <= limit


def test_scan_unmarked_rises_unexplained(validation_ledger: Path):
    report = regressions.scan(validation_ledger, as_of=AS_OF, deployments=tuple(
        f"unmarked-{seed:02d}" for seed in range(UNMARKED_DEPLOYMENTS)))
    near = {shift.point.deployment for shift in report.unexplained_rises if abs(shift.point.at - T0) <= timedelta(days=1)}

    # Seeds 2000-2019 give 19 of 20 within a day of the planted rise; binary segmentation put the other 4 days late.
    assert len(near) >= UNMARKED_DEPLOYMENTS - 2
    assert report.regression_detected


def test_scan_null_shift_rate(validation_ledger: Path):
    report = regressions.scan(validation_ledger, as_of=AS_OF, deployments=tuple(
        f"null-{seed:03d}" for seed in range(NULL_DEPLOYMENTS)))
    with_shift = {shift.point.deployment for shift in report.shifts}

    # find_change_points tests at alpha 0.01 with a Bonferroni factor, so whole series with a shift stay rare.
    assert len(with_shift) <= NULL_DEPLOYMENTS * 0.05


def test_scan_planted_rises_explained(validation_ledger: Path):
    report = regressions.scan(validation_ledger, as_of=AS_OF, deployments=tuple(
        f"planted-{seed:02d}" for seed in range(PLANTED_DEPLOYMENTS)))

    explained = [shift for shift in report.shifts if not shift.unexplained]

    # Seeds 1000-1039: 34 series have their rise found within a day of the marker, 3 have none found (the daily
    # split pays a Bonferroni factor that the marker test does not). In 3 the days just before the marker happen
    # to run high, the data put the rise 2-3 days early and the marker's split lies outside the likelihood
    # confidence set, so those stay unexplained.
    assert len({shift.point.deployment for shift in explained}) >= PLANTED_DEPLOYMENTS - 7
    assert all(abs(shift.point.at - T0) <= timedelta(days=1) for shift in explained)
    assert len(report.shifts) - len(explained) <= 4


def step_series(rates: list[float], per_day: int = 40) -> list[tuple[datetime, int, int]]:
    """One bucket a day with exactly the given share of `per_day` submissions diverged."""
    return [(T0 + timedelta(days=day), per_day, round(per_day * rate)) for day, rate in enumerate(rates)]


def test_split_supported_near_marker():
    buckets = step_series([0.1] * 7 + [0.2] + [0.4] * 7)
    (point,) = find_change_points("prod", buckets)

    assert split_supported(buckets, point, point.at - timedelta(days=1))
    assert split_supported(buckets, point, point.at + timedelta(hours=12))


def test_split_not_supported_far_marker():
    buckets = step_series([0.1] * 10 + [0.4] * 5)
    (point,) = find_change_points("prod", buckets)

    assert point.at == T0 + timedelta(days=10)
    assert not split_supported(buckets, point, T0 + timedelta(days=3))


def test_find_shifts_far_marker_unexplained():
    buckets = step_series([0.1] * 10 + [0.4] * 5)
    far = deploys.Marker("id", "prod", "2", T0 + timedelta(days=3), "", "cli")

    (shift,) = regressions.find_shifts({"prod": buckets}, [far], "day", "UTC")

    assert shift.unexplained
    assert shift.nearest_marker == far


def test_split_supported_rejects_foreign_point():
    buckets = step_series([0.1] * 10 + [0.4] * 5)
    (point,) = find_change_points("prod", buckets)

    with pytest.raises(ValueError, match="is not a bucket start of this series"):
        split_supported(buckets[:5], point, T0)


# ---------------------------------------------------------------------------
# The planted regression in sample_data/


def test_scan_finds_sample_regression(sample_ledger_template: Path):
    report = regressions.scan(sample_ledger_template, as_of=AS_OF)
    (finding,) = report.regressions
    deployed_at = datetime(2026, 10, 20, 14, tzinfo=UTC)
    expected = query(sample_ledger_template, """
        SELECT count(*) FILTER (WHERE submitted_at < ?), count(*) FILTER (WHERE submitted_at < ? AND divergences_detected > 0),
               count(*) FILTER (WHERE submitted_at >= ?), count(*) FILTER (WHERE submitted_at >= ? AND divergences_detected > 0)
        FROM submissions WHERE deployment = 'prod-eu' AND submitted_at >= ? AND submitted_at < ?""",
                     [deployed_at] * 4 + [deployed_at - timedelta(days=7), deployed_at + timedelta(days=7)])[0]

    assert (finding.marker.deployment, finding.marker.version, finding.marker.deployed_at) == (
        "prod-eu", "2.3.0", deployed_at)
    assert (finding.window.before_n, finding.window.before_k, finding.window.after_n, finding.window.after_k) == expected
    assert finding.verdict.p_value < 1e-6
    assert not report.unexplained_rises
    assert report.regression_detected


def test_scan_sample_shift_explained(sample_ledger_template: Path):
    report = regressions.scan(sample_ledger_template, as_of=AS_OF)
    (shift,) = report.shifts

    assert shift.point.deployment == "prod-eu"
    assert shift.point.direction == "up"
    assert shift.point.at == datetime(2026, 10, 21, tzinfo=UTC)
    assert not shift.unexplained
    assert shift.nearest_marker.version == "2.3.0"


def test_scan_sample_other_deployments_quiet(sample_ledger_template: Path):
    report = regressions.scan(sample_ledger_template, as_of=AS_OF, deployments=("prod-us", "staging"))

    assert not report.regression_detected
    assert {result.verdict.verdict for result in report.results} <= {"no_change", "not_judged"}


def test_scan_sample_inferred_markers(tmp_path: Path):
    path = tmp_path / "inferred.duckdb"
    ingest_paths(path, [str(SAMPLE)], origin="demo")
    changes = deploys.version_changes(path)
    store.add_deploys(path, regressions.inferred_markers(regressions.unmarked_changes(changes, [])), origin="inferred")

    report = regressions.scan(path, as_of=AS_OF)
    (finding,) = report.regressions
    first_seen = query(path, "SELECT min(submitted_at) FROM submissions WHERE deployment = 'prod-eu' "
                             "AND extra ->> '$.agent_version' = '2.3.0'")[0][0]

    assert (finding.marker.deployment, finding.marker.version, finding.marker.origin) == ("prod-eu", "2.3.0", "inferred")
    assert finding.marker.deployed_at == first_seen
    assert finding.marker.note.startswith("inferred: agent_version changed from 2.2.1 to 2.3.0 in submission ")
    assert not report.unexplained_rises


# ---------------------------------------------------------------------------
# C09: a deploy at UTC midnight with one submission either side


@pytest.fixture(scope="module")
def c09_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cases = Path(__file__).resolve().parent / "data" / "cases"
    path = tmp_path_factory.mktemp("c09") / "c09.duckdb"
    ingest_paths(path, [str(cases / "c09_midnight.jsonl")])
    store.add_deploys(path, read_deploy_log(cases / "c09_deploys.csv"), origin="file")
    return path


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Tokyo", "Asia/Kathmandu", "Pacific/Kiritimati"])
def test_c09_sides_in_every_zone(c09_ledger: Path, zone: str):
    report = regressions.scan(c09_ledger, as_of=AS_OF, settings=regressions.Settings(min_submissions=1))
    (result,) = report.results
    buckets = trends.divergence_buckets(c09_ledger, Filters(), "day", zone)["prod-us"]
    expected_days = sorted({at.astimezone(ZoneInfo(zone)).date() for at in (
        datetime(2026, 2, 28, 23, 30, tzinfo=UTC), datetime(2026, 3, 1, 0, 30, tzinfo=UTC))})

    # The windows compare instants, so no zone moves a submission across the deploy.
    assert (result.window.before_n, result.window.after_n) == (1, 1)
    assert result.verdict.verdict == "no_change"
    # Day buckets follow the declared zone's calendar.
    assert [start.astimezone(ZoneInfo(zone)).date() for start, _, _ in buckets] == expected_days
    assert sum(n for _, n, _ in buckets) == 2


def test_c09_not_judged_reason(c09_ledger: Path):
    report = regressions.scan(c09_ledger, as_of=AS_OF)
    (result,) = report.results

    assert result.verdict.verdict == "not_judged"
    assert result.reason == "too few submissions before (1) and after (1) the deploy, need 20 on each side"


# ---------------------------------------------------------------------------
# Windows, durations and settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [("7d", regressions.Window(timedelta(days=7))), ("36h", regressions.Window(timedelta(hours=36))),
     ("2w", regressions.Window(timedelta(weeks=2))), ("90m", regressions.Window(timedelta(minutes=90))),
     (" 14D ", regressions.Window(timedelta(days=14))), ("200sub", regressions.Window(None, 200)),
     ("50 submissions", regressions.Window(None, 50))],
)
def test_parse_window_valid(text: str, expected: regressions.Window):
    assert regressions.parse_window(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("7", "window '7' has no unit; write 7d for days or 7sub for submissions each side"),
     ("0d", "window '0d' is not a duration or a submission count; use e.g. 7d, 36h or 200sub"),
     ("0sub", "window '0sub' takes no submissions; use at least 1sub"),
     ("7 parsecs", "window '7 parsecs' is not a duration or a submission count"),
     ("-3d", "is not a duration or a submission count"), ("", "is not a duration")],
)
def test_parse_window_invalid(text: str, message: str):
    with pytest.raises(regressions.InvalidCheckRequest, match=message):
        regressions.parse_window(text)


@pytest.mark.parametrize(
    ("length", "text"),
    [(timedelta(days=7), "7 days"), (timedelta(days=1, hours=6), "1 day 6 h"), (timedelta(minutes=45), "45 min"),
     (timedelta(hours=2, minutes=30), "2 h 30 min"), (timedelta(seconds=20), "less than a minute")],
)
def test_describe_duration(length: timedelta, text: str):
    assert regressions.describe_duration(length) == text


@pytest.mark.parametrize(
    ("settings", "message"),
    [(regressions.Settings(alpha=0), "alpha must be between 0 and 1"),
     (regressions.Settings(alpha=1.2), "alpha must be between 0 and 1"),
     (regressions.Settings(min_effect=5), "0.05 means 5 percentage points"),
     (regressions.Settings(min_submissions=0), "the minimum submissions a side must be at least 1")],
)
def test_settings_reject_out_of_range(settings: regressions.Settings, message: str):
    with pytest.raises(regressions.InvalidCheckRequest, match=message):
        settings.check()


def test_window_note_neighbour(sample_ledger_template: Path):
    report = regressions.scan(sample_ledger_template, as_of=AS_OF, deployments=("prod-eu",),
                              settings=regressions.Settings(window=regressions.Window(timedelta(days=30))), shifts=False)
    notes = {result.marker.version: result.window_note for result in report.results}

    assert notes["2.3.0"] == ("the windows are shortened to 14 days 4 h each side by the previous deploy at "
                              "2026-10-06 09:15 UTC")
    assert notes["2.3.1"] == ("the windows are shortened to 20 days 21 h each side by the previous deploy at "
                              "2026-10-20 14:00 UTC")
    assert notes["2.2.1"] == ("the windows are shortened to 14 days 4 h each side by the next deploy at "
                              "2026-10-20 14:00 UTC")


def test_window_note_as_of(sample_ledger_template: Path):
    as_of = datetime(2026, 10, 22, 14, tzinfo=UTC)

    report = regressions.scan(sample_ledger_template, as_of=as_of, deployments=("prod-eu",),
                              since=datetime(2026, 10, 20, tzinfo=UTC), until=datetime(2026, 10, 21, tzinfo=UTC))
    (result,) = report.results

    assert result.window_note == ("the windows are shortened to 2 days each side, the time from the deploy to "
                                  "2026-10-22 14:00 UTC")
    assert result.reason.endswith(result.window_note)


def test_window_note_future(sample_ledger_template: Path):
    report = regressions.scan(sample_ledger_template, as_of=datetime(2026, 10, 1, tzinfo=UTC), deployments=("prod-eu",),
                              since=datetime(2026, 10, 20, tzinfo=UTC), shifts=False)

    assert report.results[0].window_note == ("nothing after the deploy is counted yet, because it is not before "
                                             "2026-10-01 00:00 UTC")


# ---------------------------------------------------------------------------
# Reports and inference


def test_report_json_form(sample_ledger_template: Path):
    report = regressions.scan(sample_ledger_template, as_of=AS_OF)

    document = regressions.report_json(report, sample_ledger_template)
    (finding,) = document["findings"]

    assert list(document) == ["format", "version", "ledger", "as_of", "settings", "regression_detected", "findings",
                              "markers", "shifts"]
    assert (document["format"], document["version"]) == ("replay-ledger check", 1)
    assert document["as_of"] == "2026-12-04T00:00:00.000000Z"
    assert document["settings"]["window"] == {"kind": "time", "seconds": 604800.0}
    assert list(finding) == ["kind", "deployment", "version", "deployed_at", "note", "origin", "verdict", "reason",
                             "before", "after", "effect", "p_value"]
    assert finding["kind"] == "regression"
    assert finding["before"] == {"start": "2026-10-13T14:00:00.000000Z", "end": "2026-10-20T14:00:00.000000Z",
                                 "submissions": 115, "with_divergence": 27, "rate": 27 / 115}
    assert len(document["markers"]) == 12
    assert document["shifts"][0]["unexplained"] is False
    assert json.loads(json.dumps(document)) == document


def test_finding_lines_sample(sample_ledger_template: Path):
    report = regressions.scan(sample_ledger_template, as_of=AS_OF)

    assert regressions.finding_lines(report) == [
        "regression: prod-eu 2.3.0 deployed 2026-10-20 14:00 UTC: 23.5% (27 of 115) → 60.6% (80 of 132) of "
        "submissions diverged (p=4.56e-09, 7 days each side)"
    ]


def test_unmarked_changes_by_version():
    change = deploys.VersionChange("prod", "2.0", "1.0", T0, "sub-1", "agent_version")
    other = deploys.VersionChange("prod", "3.0", "2.0", T0 + timedelta(days=1), "sub-2", "agent_version")
    marked = deploys.Marker("id", "prod", "2.0", T0 - timedelta(hours=3), "", "cli")

    assert regressions.unmarked_changes([change, other], [marked]) == [other]


def test_inferred_markers_fields():
    change = deploys.VersionChange("prod", "2.0", "1.0", T0, "sub-1", "release")

    assert regressions.inferred_markers([change]) == [{
        "deployment": "prod", "version": "2.0", "deployed_at": T0,
        "note": "inferred: release changed from 1.0 to 2.0 in submission sub-1",
    }]
