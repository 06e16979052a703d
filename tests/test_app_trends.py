"""The Trends page under Streamlit's AppTest on a real ledger; numbers and chart data are checked against hand SQL.

The ledger is the sample data plus case C09 (a deploy at UTC midnight with one
submission either side) under the deployment ``case-c09``. One AppTest
instance serves the tests that only change the URL.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from ledger import store
from ledger.ingest import ingest_paths

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "trends.py")
CASES = Path(__file__).resolve().parent / "data" / "cases"
UTC = timezone.utc
C09_DEPLOY = datetime(2026, 3, 1, tzinfo=UTC)


def query(ledger: Path, sql: str, parameters: list | tuple = ()) -> list[tuple]:
    with duckdb.connect(str(ledger), read_only=True) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        return connection.execute(sql, list(parameters)).fetchall()


@pytest.fixture(scope="module")
def trends_ledger(sample_ledger_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trends") / "trends.duckdb"
    shutil.copyfile(sample_ledger_template, path)
    ingest_paths(path, [str(CASES / "c09_midnight.jsonl")], deployment="case-c09")
    store.add_deploys(path, [{"deployment": "case-c09", "version": "v2.0.0", "deployed_at": C09_DEPLOY,
                              "note": "midnight release"}], origin="file")
    return path


@pytest.fixture(scope="module")
def page(trends_ledger: Path) -> AppTest:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(store.LEDGER_ENV, str(trends_ledger))
        at = AppTest.from_file(PAGE, default_timeout=60)
        at.context["timezone"] = "UTC"
        yield at


def show(at: AppTest, zone: str = "UTC", **params) -> AppTest:
    params.setdefault("range", "all")
    at.context["timezone"] = zone
    at.query_params.clear()
    at.query_params.update(params)
    at.run()
    assert not at.exception, [error.value for error in at.exception]
    return at


def frame_with(at: AppTest, column: str) -> pd.DataFrame:
    return next(frame.value for frame in at.dataframe if column in frame.value.columns)


def charts(at: AppTest) -> list[tuple[dict, dict[str, list[dict]]]]:
    """Return each chart's spec and its datasets as row dicts, in page order."""
    found = []
    for element in at.get("vega_lite_chart"):
        datasets = {
            dataset.name: pa.ipc.open_stream(dataset.data.data).read_all().to_pylist()
            for dataset in element.proto.datasets
        }
        found.append((json.loads(element.proto.spec), datasets))
    return found


def layer_rows(spec: dict, datasets: dict, index: int) -> list[dict]:
    layer = spec["layer"][index]
    name = (layer.get("data") or spec.get("data") or layer["layer"][0]["data"])["name"]
    return datasets[name]


def texts(at: AppTest) -> list[str]:
    return [element.value for element in [*at.markdown, *at.caption, *at.info, *at.warning, *at.error, *at.subheader]]


# ---------------------------------------------------------------------------
# Verdicts and shifts


def test_trends_verdicts_match_sql(page: AppTest, trends_ledger: Path):
    show(page, deployment=["prod-eu", "prod-us", "staging"])
    table = frame_with(page, "Verdict")
    markers = query(trends_ledger, "SELECT deployment, version, deployed_at FROM deploys "
                                   "WHERE deployment <> 'case-c09' ORDER BY deployed_at")

    assert len(table) == len(markers) == 12
    for row, (deployment, version, deployed_at) in zip(table.itertuples(), markers):
        before_n, before_k, after_n, after_k = query(trends_ledger, """
            SELECT count(*) FILTER (WHERE submitted_at < ?),
                   count(*) FILTER (WHERE submitted_at < ? AND divergences_detected > 0),
                   count(*) FILTER (WHERE submitted_at >= ?),
                   count(*) FILTER (WHERE submitted_at >= ? AND divergences_detected > 0)
            FROM submissions WHERE deployment = ? AND submitted_at >= ? AND submitted_at < ?""",
            [deployed_at] * 4 + [deployment, deployed_at - timedelta(days=7), deployed_at + timedelta(days=7)])[0]
        assert (row.Deployment, row.Version) == (deployment, version)
        assert row.Before.endswith(f"({before_k:,} of {before_n:,})")
        assert row.After.endswith(f"({after_k:,} of {after_n:,})")
    verdicts = dict(zip(zip(table["Deployment"], table["Version"]), table["Verdict"]))
    assert verdicts[("prod-eu", "2.3.0")] == "regression"
    assert [key for key, verdict in verdicts.items() if verdict == "regression"] == [("prod-eu", "2.3.0")]


def test_trends_regression_marker_drawn_red(page: AppTest):
    show(page, deployment="prod-eu")
    spec, datasets = charts(page)[0]
    markers = layer_rows(spec, datasets, 1)

    regression = [row for row in markers if row["verdict"] == "regression"]
    assert [(row["Version"], row["x"]) for row in regression] == [("2.3.0", "2026-10-20T14:00:00.000Z")]
    assert {row["Version"] for row in markers} == {"2.2.0", "2.2.1", "2.3.0", "2.3.1"}


def test_trends_shift_listed(page: AppTest):
    show(page, deployment="prod-eu")
    shifts = frame_with(page, "Explained by")

    assert list(shifts["Deployment"]) == ["prod-eu"]
    assert list(shifts["From"]) == ["2026-10-21 00:00:00"]
    assert list(shifts["Explained by"]) == ["2.3.0 at 2026-10-20 14:00:00"]
    assert list(shifts["Direction"]) == ["up"]


def test_trends_status_filter_leaves_verdicts(page: AppTest):
    show(page, deployment="prod-eu")
    everything = frame_with(page, "Verdict")
    show(page, deployment="prod-eu", status="success")

    assert frame_with(page, "Verdict").equals(everything)


def test_trends_submission_window(page: AppTest):
    show(page, deployment="prod-eu", window="100sub")
    table = frame_with(page, "Verdict")
    row = table[table["Version"] == "2.3.0"].iloc[0]

    assert (row["Before"], row["After"]) == ("26.0% (26 of 100)", "64.0% (64 of 100)")
    assert row["Verdict"] == "regression"


def test_trends_alpha_param(page: AppTest):
    show(page, deployment="prod-eu", alpha="0.05")
    table = frame_with(page, "Verdict")

    assert list(table[table["Verdict"] == "regression"]["Version"]) == ["2.2.1", "2.3.0"]


# ---------------------------------------------------------------------------
# Charts


def test_trends_rate_points_match_sql(page: AppTest, trends_ledger: Path):
    show(page, deployment="staging")
    spec, datasets = charts(page)[0]
    points = layer_rows(spec, datasets, 0)
    expected = query(trends_ledger, """
        SELECT strftime(date_trunc('day', submitted_at), '%Y-%m-%dT12:00:00.000Z'),
               count(*) FILTER (WHERE divergences_detected > 0) / count(*)
        FROM submissions WHERE deployment = 'staging' GROUP BY 1 ORDER BY 1""")

    assert [(row["x"], row["share"]) for row in points] == [(x, pytest.approx(share)) for x, share in expected]
    assert spec["layer"][0]["encoding"]["x"]["axis"]["title"] == "Day (UTC)"


def test_trends_four_charts_sums(page: AppTest, trends_ledger: Path):
    show(page, deployment=["prod-eu", "prod-us", "staging"])
    found = charts(page)
    divergences, saved = query(trends_ledger, "SELECT sum(divergences_detected), sum(cost_savings) FROM submissions "
                                              "WHERE deployment <> 'case-c09'")[0]

    assert len(found) == 4
    count_spec, count_data = found[1]
    savings_spec, savings_data = found[2]
    assert sum(row["divergences"] for row in layer_rows(count_spec, count_data, 0)) == divergences
    assert sum(row["savings"] for row in layer_rows(savings_spec, savings_data, 0)) == pytest.approx(float(saved))


def color_legends(spec: dict) -> dict[str, tuple[dict, list[str]]]:
    """Return each color legend of a chart by title, with its scale domain."""
    return {layer["encoding"]["color"]["legend"]["title"]: (layer["encoding"]["color"]["legend"],
                                                            layer["encoding"]["color"]["scale"]["domain"])
            for layer in spec["layer"] if "legend" in layer["encoding"].get("color", {})}


def tick_dates(axis: dict) -> list[str]:
    return [f"{value['year']:04d}-{value['month']:02d}-{value['date']:02d}" for value in axis["values"]]


def test_trends_legends_list_every_entry(page: AppTest):
    show(page, deployment=["prod-eu", "prod-us", "staging"])
    found = charts(page)

    assert len(found) == 4
    for spec, _ in found:
        legends = color_legends(spec)
        assert legends["Deployment"][1] == ["prod-eu", "prod-us", "staging"]
        assert legends["Deploy marker"][1] == ["regression", "improvement", "marker"]
        assert {legend["direction"] for legend, _ in legends.values()} == {"vertical"}
        assert min(legend["labelLimit"] for legend, _ in legends.values()) >= 8 * len("improvement")
        assert spec["config"]["legend"]["layout"]["bottom"]["direction"] == "vertical"


def test_trends_week_ticks_on_mondays(page: AppTest, trends_ledger: Path):
    show(page, bucket="week", deployment=["prod-eu", "prod-us", "staging"])
    found = charts(page)
    starts = [row[0] for row in query(trends_ledger, """
        SELECT DISTINCT strftime(date_trunc('week', submitted_at), '%Y-%m-%d') FROM submissions
        WHERE deployment <> 'case-c09' ORDER BY 1""")]
    ends = [row[0] for row in query(trends_ledger, """
        SELECT DISTINCT strftime(date_trunc('week', submitted_at) + INTERVAL 7 DAY, '%Y-%m-%d') FROM submissions
        WHERE deployment <> 'case-c09' ORDER BY 1""")]

    for index in range(3):
        assert tick_dates(found[index][0]["layer"][0]["encoding"]["x"]["axis"]) == starts
    assert tick_dates(found[3][0]["layer"][0]["encoding"]["x"]["axis"]) == ends
    assert {datetime.fromisoformat(day).weekday() for day in starts + ends} == {0}


def test_trends_partial_weeks_marked(page: AppTest, trends_ledger: Path):
    show(page, bucket="week", deployment=["prod-eu", "prod-us", "staging"])
    spec, datasets = charts(page)[2]
    rows = layer_rows(spec, datasets, 0)
    saved = query(trends_ledger, """
        SELECT sum(cost_savings) FROM submissions
        WHERE deployment <> 'case-c09' AND submitted_at >= '2026-11-30'""")[0][0]

    assert sorted({row["x_start"] for row in rows if row["coverage"] == "partial"}) == [
        "2026-08-31T00:00:00.000Z", "2026-11-30T00:00:00.000Z"]
    assert sum(row["savings"] for row in rows if row["x_start"] == "2026-11-30T00:00:00.000Z") == \
        pytest.approx(float(saved))
    assert spec["layer"][0]["encoding"]["opacity"]["field"] == "coverage"
    assert any("week of 2026-11-30 (UTC) has data from 2026-11-30 only (1 of 7 days)" in text
               for text in texts(page))


def test_trends_day_buckets_no_partial_note(page: AppTest):
    show(page, bucket="day", deployment="prod-eu")

    assert not any(text.startswith("The lighter bar") for text in texts(page))


def test_trends_per_100_toggle(page: AppTest):
    show(page, deployment="prod-us", metric="per100")
    spec, _ = charts(page)[0]

    assert spec["layer"][0]["encoding"]["y"]["field"] == "per_100_actions"
    assert page.toggle(key="trends_metric").value is True


def test_trends_week_berlin_buckets(page: AppTest, trends_ledger: Path):
    show(page, bucket="week", bucket_tz="Europe/Berlin", deployment=["prod-eu", "prod-us", "staging"])
    spec, datasets = charts(page)[0]
    expected = query(trends_ledger, """
        SELECT count(*) FROM (SELECT DISTINCT time_bucket(INTERVAL '7 days', submitted_at, 'Europe/Berlin'), deployment
                              FROM submissions WHERE deployment <> 'case-c09')""")[0][0]

    assert len(layer_rows(spec, datasets, 0)) == expected
    assert spec["layer"][0]["encoding"]["x"]["axis"]["title"] == "Week (from Monday) (Europe/Berlin)"
    assert any("Week buckets in Europe/Berlin" in text for text in texts(page))


def test_trends_hour_request_coarsened(page: AppTest):
    show(page, bucket="hour", deployment="prod-eu")

    notes = [text for text in texts(page) if "hour buckets would be more than 400 per series" in text]

    assert len(notes) == 1
    assert notes[0].startswith("2,1")
    assert page.selectbox(key="trends_bucket").value == "hour"


@pytest.mark.parametrize(
    ("params", "note"),
    [({"bucket": "minute"}, "The link's time bucket `minute` is not one of auto, hour, day, week, month"),
     ({"bucket_tz": "Mars/Olympus"}, "The link's bucket time zone `Mars/Olympus` is not one of"),
     ({"window": "7"}, "The link's window `7` is invalid"),
     ({"min_effect": "lots"}, "The link's minimum effect `lots` is not a number of percentage points")],
)
def test_trends_invalid_link_values(page: AppTest, params: dict, note: str):
    show(page, deployment="staging", **params)

    assert any(text.startswith(note) for text in texts(page)), texts(page)


def test_trends_no_matching_data(page: AppTest):
    show(page, range="custom", **{"from": "2020-01-01", "to": "2020-01-31"})

    assert any(text.startswith("No submissions match these filters.") for text in texts(page))
    assert not charts(page)


# ---------------------------------------------------------------------------
# C09 across the viewer's time zones


C09_POINTS = {
    # The two submissions span an hour, so auto picks hour buckets: 23:00-24:00 and 00:00-01:00 UTC.
    "auto": ["2026-02-28T23:30:00.000Z", "2026-03-01T00:30:00.000Z"],
    "day": ["2026-02-28T12:00:00.000Z", "2026-03-01T12:00:00.000Z"],
}


@pytest.mark.parametrize("bucket", list(C09_POINTS))
@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Tokyo", "Asia/Kathmandu"])
def test_trends_c09_any_viewer_zone(page: AppTest, zone: str, bucket: str):
    show(page, zone, deployment="case-c09", bucket=bucket)
    spec, datasets = charts(page)[0]
    points = sorted(row["x"] for row in layer_rows(spec, datasets, 0))
    (rule,) = layer_rows(spec, datasets, 1)
    table = frame_with(page, "Verdict")
    shown_at = datetime(2026, 3, 1, tzinfo=UTC).astimezone(ZoneInfo(zone))

    # Buckets are in the declared zone (UTC), whatever the viewer's zone.
    assert points == C09_POINTS[bucket]
    assert points[0] < rule["x"] < points[1]
    assert rule["Deployed at (UTC)"] == "2026-03-01 00:00:00"
    assert list(table["Before"]) == ["0.0% (0 of 1)"]
    assert list(table["After"]) == ["0.0% (0 of 1)"]
    assert list(table["Deployed at"]) == [shown_at.strftime("%Y-%m-%d %H:%M:%S")]
