"""The Altair chart builders, called directly on query results; specs are checked through `to_dict()`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import altair as alt
import pandas as pd
import pytest

from ledger import charts, store
from ledger.deploy_log import read_deploy_log
from ledger.ingest import ingest_paths
from ledger.queries import Filters, deploys, roi, trends

UTC = timezone.utc
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def marker(deployment: str, version: str, at: datetime, note: str = "") -> deploys.Marker:
    return deploys.Marker(f"{deployment}-{version}", deployment, version, at, note, "file")


def layer_data(spec: dict) -> list[list[dict]]:
    """Return the data rows of each layer of a layered chart spec, in layer order."""
    datasets = spec["datasets"]
    found = []
    for layer in spec["layer"]:
        layers = layer.get("layer", [layer])
        for inner in layers:
            data = inner.get("data", layer.get("data", spec.get("data")))
            found.append(datasets[data["name"]])
    return found


@pytest.fixture(scope="module")
def sample_trend(sample_ledger_template: Path) -> trends.Trend:
    return trends.trend(sample_ledger_template, Filters(), "day", "UTC")


@pytest.fixture(scope="module")
def c09_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cases = Path(__file__).resolve().parent / "data" / "cases"
    path = tmp_path_factory.mktemp("c09") / "c09.duckdb"
    ingest_paths(path, [str(cases / "c09_midnight.jsonl")])
    store.add_deploys(path, read_deploy_log(cases / "c09_deploys.csv"), origin="file")
    return path


# ---------------------------------------------------------------------------
# Times


@pytest.mark.parametrize(
    ("zone", "expected"),
    [("UTC", "2026-03-01T00:00:00.000Z"), ("Europe/Berlin", "2026-03-01T01:00:00.000Z"),
     ("America/New_York", "2026-02-28T19:00:00.000Z"), ("Asia/Kathmandu", "2026-03-01T05:45:00.000Z")],
)
def test_wall_clock_zones(zone: str, expected: str):
    assert charts.wall_clock(T0, zone) == expected


# ---------------------------------------------------------------------------
# Marker groups


def test_group_markers_close_together():
    markers = [marker("a", "1", T0), marker("b", "2", T0 + timedelta(hours=5)), marker("a", "3", T0 + timedelta(days=3))]

    groups = charts.group_markers(markers, timedelta(days=1))

    assert [[m.version for m in group.markers] for group in groups] == [["1", "2"], ["3"]]
    assert [group.at for group in groups] == [T0, T0 + timedelta(days=3)]


def test_group_markers_span_from_first():
    # Each marker is within a day of the previous one, but the third is two days after the first.
    markers = [marker("a", str(day), T0 + timedelta(days=day)) for day in range(3)]

    groups = charts.group_markers(markers, timedelta(days=1))

    assert [len(group.markers) for group in groups] == [2, 1]


def test_group_markers_most_serious_verdict():
    markers = [marker("a", "1", T0), marker("b", "2", T0), marker("c", "3", T0)]

    groups = charts.group_markers(markers, timedelta(hours=1), {"a-1": "improvement", "b-2": "regression"})
    quiet = charts.group_markers(markers, timedelta(hours=1), {"a-1": "no_change"})

    assert groups[0].verdict == "regression"
    assert quiet[0].verdict == "marker"


def test_marker_gap_wide_span():
    assert charts.marker_gap(T0, T0 + timedelta(days=500), timedelta(days=1)) == timedelta(days=5)
    assert charts.marker_gap(T0, T0 + timedelta(days=10), timedelta(days=1)) == timedelta(days=1)


def test_marker_rules_tooltip_fields():
    markers = [marker("prod-eu", "2.3.0", T0, "adds timing"), marker("prod-us", "2.2.1", T0 + timedelta(hours=2))]
    groups = charts.group_markers(markers, timedelta(days=1), {"prod-eu-2.3.0": "regression"})

    spec = alt.layer(*charts.marker_rules(groups, "UTC")).to_dict()
    (rows,) = {tuple(map(tuple, (sorted(row.items()) for row in data))) for data in layer_data(spec)}

    row = dict(rows[0])
    assert row["x"] == "2026-03-01T00:00:00.000Z"
    assert row["Deploys"] == "2 deploys close together"
    assert row["Deployment"] == "prod-eu | prod-us"
    assert row["Version"] == "2.3.0 | 2.2.1"
    assert row["Deployed at (UTC)"] == "2026-03-01 00:00:00 | 2026-03-01 02:00:00"
    assert row["Note"] == "adds timing | —"
    assert row["Verdict"] == "regression | marker"
    assert row["verdict"] == "regression"


def test_marker_rules_keep_markup_text():
    markers = [marker("<b>x</b>", "<script>alert(1)</script>", T0, "[a](javascript:alert(1))")]

    spec = alt.layer(*charts.marker_rules(charts.group_markers(markers, timedelta(days=1)), "UTC")).to_dict()
    row = layer_data(spec)[0][0]

    assert row["Deployment"] == "<b>x</b>"
    assert row["Version"] == "<script>alert(1)</script>"
    assert row["Note"] == "[a](javascript:alert(1))"


def test_marker_rules_empty():
    assert charts.marker_rules([], "UTC") == []


# ---------------------------------------------------------------------------
# Trend charts


def test_trend_frame_values(sample_trend: trends.Trend):
    frame = charts.trend_frame(sample_trend)
    rows = sample_trend.rows

    assert len(frame) == len(rows)
    first = rows.iloc[0]
    assert frame.loc[0, "share"] == first["with_divergence"] / first["submissions"]
    assert frame.loc[0, "per_100_actions"] == 100 * first["divergences"] / first["actions_replayed"]
    assert frame.loc[0, "x"] == "2026-09-02T12:00:00.000Z"
    assert frame.loc[0, "x_start"] == "2026-09-02T00:00:00.000Z"
    assert frame.loc[0, "x_end"] == "2026-09-03T00:00:00.000Z"
    assert frame.loc[0, "Bucket"] == "2026-09-02 (UTC)"
    assert frame.loc[0, "Divergence rate"] == (
        f"{100 * first['with_divergence'] / first['submissions']:.1f}% "
        f"({first['with_divergence']} of {first['submissions']} submissions)")
    assert frame.loc[0, "Savings"] == f"${first['savings'].quantize(Decimal('0.01'))} (exactly ${first['savings'].normalize():f})"


def test_trend_frame_exact_cents():
    rows = pd.DataFrame([{
        "bucket_start": pd.Timestamp(T0), "bucket_end": pd.Timestamp(T0 + timedelta(days=1)), "series": "a",
        "submissions": 2, "with_divergence": 0, "divergences": 0, "actions_replayed": 0,
        "savings": Decimal("1.090000"), "cumulative_savings": Decimal("0.004"),
    }])
    frame = charts.trend_frame(trends.Trend("day", "day", "UTC", rows, series=("a",)))

    assert frame.loc[0, "Savings"] == "$1.09"
    assert frame.loc[0, "Cumulative savings"] == "<$0.01 (exactly $0.004)"
    assert frame.loc[0, "Per 100 actions"] == "— (0 divergences, no actions)"
    assert pd.isna(frame.loc[0, "per_100_actions"])


@pytest.mark.parametrize(("metric", "field"), [("share", "share"), ("per_100_actions", "per_100_actions")])
def test_divergence_rate_chart_encoding(sample_trend: trends.Trend, metric: str, field: str):
    spec = charts.divergence_rate_chart(sample_trend, metric).to_dict()
    lines = spec["layer"][0]

    assert lines["mark"]["type"] == "line"
    assert lines["encoding"]["y"]["field"] == field
    assert lines["encoding"]["x"]["scale"] == {"type": "utc"}
    assert lines["encoding"]["x"]["axis"]["title"] == "Day (UTC)"
    assert lines["encoding"]["color"]["scale"]["domain"] == ["prod-eu", "prod-us", "staging"]
    assert len(layer_data(spec)[0]) == len(sample_trend.rows)


def test_divergence_rate_chart_rejects_metric(sample_trend: trends.Trend):
    with pytest.raises(ValueError, match="unknown metric 'ratio'"):
        charts.divergence_rate_chart(sample_trend, "ratio")


def test_divergence_rate_chart_layers(sample_trend: trends.Trend):
    groups = charts.group_markers([marker("prod-eu", "2.3.0", datetime(2026, 10, 20, 14, tzinfo=UTC))],
                                  timedelta(days=1), {"prod-eu-2.3.0": "regression"})
    shift = charts.ShiftMark("prod-eu", datetime(2026, 10, 21, tzinfo=UTC), 0.25, 0.64, 784, 779, 1e-50, False)

    spec = charts.divergence_rate_chart(sample_trend, "share", groups, [shift]).to_dict()
    data = layer_data(spec)

    assert len(data) == 4
    assert data[1][0]["x"] == "2026-10-20T14:00:00.000Z"
    assert data[1][0]["verdict"] == "regression"
    assert data[3][0]["x"] == "2026-10-21T00:00:00.000Z"
    assert data[3][0]["Shift"] == "shift explained by a deploy marker"
    assert data[3][0]["Divergence rate"] == "25.0% → 64.0%"
    assert spec["resolve"] == {"scale": {"color": "independent"}}


def test_savings_chart_bars_span_buckets(sample_trend: trends.Trend):
    spec = charts.savings_chart(sample_trend).to_dict()
    bars = spec["layer"][0]
    rows = layer_data(spec)[0]

    assert bars["mark"]["type"] == "bar"
    assert bars["encoding"]["x"]["field"] == "x_start"
    assert bars["encoding"]["x2"]["field"] == "x_end"
    assert (bars["encoding"]["y"]["field"], bars["encoding"]["y2"]["field"]) == ("savings_high", "savings_low")
    assert sum(row["savings"] for row in rows) == pytest.approx(float(sum(sample_trend.rows["savings"])))


def test_stacked_bands_meet(sample_trend: trends.Trend):
    frame = charts.trend_frame(sample_trend)

    for _, bucket in frame.groupby("x_start"):
        ordered = bucket.set_index("series").reindex([name for name in sample_trend.series if name in set(bucket["series"])])
        assert ordered["savings_low"].iloc[0] == 0
        assert list(ordered["savings_low"].iloc[1:]) == pytest.approx(list(ordered["savings_high"].iloc[:-1]))
        assert ordered["savings_high"].iloc[-1] == pytest.approx(bucket["savings"].sum())
        assert ordered["divergences_high"].iloc[-1] == bucket["divergences"].sum()


def test_cumulative_chart_points_at_bucket_end(sample_trend: trends.Trend):
    spec = charts.cumulative_savings_chart(sample_trend).to_dict()
    lines = spec["layer"][0]
    rows = layer_data(spec)[0]
    last = [row for row in rows if row["series"] == "prod-us"][-1]
    expected = sample_trend.rows[sample_trend.rows["series"] == "prod-us"]["cumulative_savings"].iloc[-1]

    assert lines["encoding"]["x"]["field"] == "x_end"
    assert last["cumulative"] == float(expected)
    assert last["x_end"] == "2026-12-01T00:00:00.000Z"


def test_divergence_count_chart_totals(sample_trend: trends.Trend):
    spec = charts.divergence_count_chart(sample_trend).to_dict()
    rows = layer_data(spec)[0]

    assert sum(row["divergences"] for row in rows) == int(sample_trend.rows["divergences"].sum())


def test_chart_rejects_too_many_points():
    rows = pd.DataFrame({
        "bucket_start": [pd.Timestamp(T0 + timedelta(hours=h)) for h in range(charts.MAX_CHART_POINTS + 1)],
        "bucket_end": [pd.Timestamp(T0 + timedelta(hours=h + 1)) for h in range(charts.MAX_CHART_POINTS + 1)],
        "series": "a", "submissions": 1, "with_divergence": 0, "divergences": 0, "actions_replayed": 1,
        "savings": Decimal(0), "cumulative_savings": Decimal(0),
    })
    big = trends.Trend("hour", "hour", "UTC", rows, series=("a",))

    with pytest.raises(charts.TooManyPoints, match="got 5,001 rows, more than 5,000"):
        charts.divergence_rate_chart(big)


def test_charts_stay_small_on_sample(sample_ledger_template: Path):
    result = trends.trend(sample_ledger_template, Filters(), "hour", "UTC")

    spec = charts.divergence_rate_chart(result).to_dict()

    assert result.bucket == "day"
    assert sum(len(rows) for rows in spec["datasets"].values()) <= charts.MAX_CHART_POINTS


# ---------------------------------------------------------------------------
# C09: a deploy at UTC midnight with one submission either side


def test_c09_marker_between_points(c09_ledger: Path):
    result = trends.trend(c09_ledger, Filters(), "day", "UTC")
    groups = charts.group_markers(deploys.markers(c09_ledger), timedelta(days=1))

    spec = charts.divergence_rate_chart(result, "share", groups).to_dict()
    points, rule = layer_data(spec)[0], layer_data(spec)[1]
    xs = sorted(row["x"] for row in points)

    assert xs == ["2026-02-28T12:00:00.000Z", "2026-03-01T12:00:00.000Z"]
    assert xs[0] < rule[0]["x"] < xs[1]
    assert rule[0]["x"] == "2026-03-01T00:00:00.000Z"


def test_c09_bars_meet_at_marker(c09_ledger: Path):
    result = trends.trend(c09_ledger, Filters(), "day", "UTC")

    spec = charts.savings_chart(result, charts.group_markers(deploys.markers(c09_ledger), timedelta(days=1))).to_dict()
    bars, rule = layer_data(spec)[0], layer_data(spec)[1]

    assert [(row["x_start"], row["x_end"]) for row in bars] == [
        ("2026-02-28T00:00:00.000Z", "2026-03-01T00:00:00.000Z"),
        ("2026-03-01T00:00:00.000Z", "2026-03-02T00:00:00.000Z"),
    ]
    assert bars[0]["x_end"] == rule[0]["x"] == bars[1]["x_start"]


def test_c09_tokyo_buckets_declared(c09_ledger: Path):
    # In Tokyo both submissions fall on 2026-03-01, local time, and the marker at 09:00 lies inside that day.
    result = trends.trend(c09_ledger, Filters(), "day", "Asia/Tokyo")
    groups = charts.group_markers(deploys.markers(c09_ledger), timedelta(days=1))

    spec = charts.divergence_rate_chart(result, "share", groups).to_dict()
    points, rule = layer_data(spec)[0], layer_data(spec)[1]

    assert [(row["x"], row["Divergence rate"]) for row in points] == [
        ("2026-03-01T12:00:00.000Z", "0.0% (0 of 2 submissions)")]
    assert rule[0]["x"] == "2026-03-01T09:00:00.000Z"
    assert spec["layer"][0]["encoding"]["x"]["axis"]["title"] == "Day (Asia/Tokyo)"


# ---------------------------------------------------------------------------
# ROI charts


@pytest.fixture(scope="module")
def sample_periods(sample_ledger_template: Path) -> roi.RoiPeriods:
    return roi.savings_by_period(sample_ledger_template, Filters(), "month", "UTC")


@pytest.mark.parametrize("measure", ["gross", "once_per_run"])
def test_roi_period_chart_sums(sample_periods: roi.RoiPeriods, measure: str):
    spec = charts.roi_period_chart(sample_periods, measure).to_dict()
    rows = spec["datasets"][spec["data"]["name"]]

    assert (spec["encoding"]["y"]["field"], spec["encoding"]["y2"]["field"]) == (f"{measure}_high", f"{measure}_low")
    assert sum(row[measure] for row in rows) == pytest.approx(float(sum(sample_periods.rows[measure])))
    assert spec["encoding"]["x"]["axis"]["title"] == "Month (UTC)"


def test_roi_cumulative_chart_last_point(sample_periods: roi.RoiPeriods):
    spec = charts.roi_cumulative_chart(sample_periods, "once_per_run").to_dict()
    rows = spec["datasets"][spec["data"]["name"]]
    last = [row for row in rows if row["series"] == "prod-eu"][-1]
    expected = sample_periods.rows[sample_periods.rows["series"] == "prod-eu"]["cumulative_once_per_run"].iloc[-1]

    assert last["cumulative_once_per_run"] == float(expected)
    assert last["cumulative_once_per_run_text"] == f"${expected.quantize(Decimal('0.01')):,} (exactly ${expected.normalize():f})"


def test_roi_chart_rejects_measure(sample_periods: roi.RoiPeriods):
    with pytest.raises(ValueError, match="unknown measure 'net'"):
        charts.roi_period_chart(sample_periods, "net")


# ---------------------------------------------------------------------------
# Trend chart specs built as dictionaries, against the same charts built with Altair


def inlined(spec: dict) -> dict:
    """Return the spec with each data set name replaced by its rows and without Altair's theme config."""
    datasets = spec.get("datasets", {})

    def resolve(value):
        if isinstance(value, dict):
            if set(value) == {"name"} and value["name"] in datasets:
                return datasets[value["name"]]
            return {key: resolve(item) for key, item in value.items() if key not in ("datasets", "config")}
        if isinstance(value, list):
            return [resolve(item) for item in value]
        return value

    return resolve(spec)


def altair_rate_chart(trend: trends.Trend, groups: list[charts.MarkerGroup],
                      shifts: list[charts.ShiftMark]) -> alt.LayerChart:
    """Build the divergence rate chart with Altair's API, as the page drew it through st.altair_chart."""
    frame = charts.trend_frame(trend)
    lines = alt.Chart(frame[["x", "series", "share", "Deployment", "Bucket", "Divergence rate", "Per 100 actions"]])
    lines = lines.mark_line(point=True).encode(
        x=alt.X(field="x", type="temporal", scale=alt.Scale(type="utc"),
                axis=alt.Axis(title="Day (UTC)", labelOverlap=True)),
        y=alt.Y(field="share", type="quantitative", title="Submissions with a divergence", axis=alt.Axis(format=".0%")),
        color=alt.Color(field="series", type="nominal",
                        scale=alt.Scale(domain=list(trend.series), range=list(charts.SERIES_COLORS[:len(trend.series)])),
                        legend=alt.Legend(title="Deployment", orient="bottom")),
        tooltip=[alt.Tooltip(field=name, type="nominal")
                 for name in ("Deployment", "Bucket", "Divergence rate", "Per 100 actions")],
    )
    return alt.LayerChart(layer=[lines, *charts.marker_rules(groups, "UTC"), *charts.shift_rules(shifts, "UTC")],
                          resolve=alt.Resolve(scale=alt.ScaleResolveMap(color="independent")),
                          height=charts.CHART_HEIGHT)


def test_rate_chart_spec_equals_altair(sample_trend: trends.Trend):
    groups = charts.group_markers([marker("prod-eu", "2.3.0", datetime(2026, 10, 20, 14, tzinfo=UTC), "a <b>")],
                                  timedelta(days=1), {"prod-eu-2.3.0": "regression"})
    shifts = [charts.ShiftMark("prod-us", datetime(2026, 10, 21, tzinfo=UTC), 0.25, 0.64, 784, 779, 1e-50, True)]

    spec = charts.divergence_rate_chart(sample_trend, "share", groups, shifts).to_dict()

    assert inlined(spec) == inlined(altair_rate_chart(sample_trend, groups, shifts).to_dict())
    assert [layer["data"]["name"] for layer in spec["layer"]] == ["trend", "markers", "markers", "shifts"]


def test_one_layer_chart_spec_equals_altair():
    rows = pd.DataFrame([{
        "bucket_start": pd.Timestamp(T0), "bucket_end": pd.Timestamp(T0 + timedelta(days=1)), "series": "a",
        "submissions": 2, "with_divergence": 1, "divergences": 1, "actions_replayed": 0,
        "savings": Decimal("1.090000"), "cumulative_savings": Decimal("0.004"),
    }])
    trend = trends.Trend("day", "day", "UTC", rows, series=("a",))
    frame = charts.trend_frame(trend)
    lines = alt.Chart(frame[["x", "series", "per_100_actions", "Deployment", "Bucket", "Divergence rate",
                             "Per 100 actions"]]).mark_line(point=True).encode(
        x=alt.X(field="x", type="temporal", scale=alt.Scale(type="utc"),
                axis=alt.Axis(title="Day (UTC)", labelOverlap=True)),
        y=alt.Y(field="per_100_actions", type="quantitative", title="Divergences per 100 replayed actions",
                axis=alt.Axis()),
        color=alt.Color(field="series", type="nominal", scale=alt.Scale(domain=["a"], range=["#2563eb"]),
                        legend=alt.Legend(title="Deployment", orient="bottom")),
        tooltip=[alt.Tooltip(field=name, type="nominal")
                 for name in ("Deployment", "Bucket", "Divergence rate", "Per 100 actions")],
    )
    expected = alt.LayerChart(layer=[lines], resolve=alt.Resolve(scale=alt.ScaleResolveMap(color="independent")),
                              height=charts.CHART_HEIGHT).to_dict()

    spec = charts.divergence_rate_chart(trend, "per_100_actions", frame=frame).to_dict()

    assert inlined(spec) == inlined(expected)
    assert spec["datasets"]["trend"][0]["per_100_actions"] is None


def test_streamlit_spec_carries_frames(sample_trend: trends.Trend):
    chart = charts.savings_chart(sample_trend)

    spec = chart.streamlit_spec()
    spec["layer"][0]["encoding"]["y"]["title"] = "changed"

    assert isinstance(spec["datasets"]["trend"], pd.DataFrame)
    assert len(spec["datasets"]["trend"]) == len(sample_trend.rows)
    assert chart.to_dict()["layer"][0]["encoding"]["y"]["title"] == "Savings (USD)"
