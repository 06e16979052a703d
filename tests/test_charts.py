"""The Altair chart builders, called directly on query results; specs are checked through `to_dict()`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import altair as alt
import duckdb
import pandas as pd
import pytest

from ledger import charts, store
from ledger.deploy_log import read_deploy_log
from ledger.ingest import ingest_paths
from ledger.queries import Filters, deploys, roi, trends
from ledger.queries import causes as cause_queries

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


DEPLOYMENT_LEGEND = alt.Legend(title="Deployment", orient="bottom", direction="vertical",
                               labelLimit=charts.LEGEND_LABEL_LIMIT)
FIT_WIDTH = alt.AutoSizeParams(type="fit-x", contains="padding")


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
                        legend=DEPLOYMENT_LEGEND),
        tooltip=[alt.Tooltip(field=name, type="nominal")
                 for name in ("Deployment", "Bucket", "Divergence rate", "Per 100 actions")],
    )
    return alt.LayerChart(layer=[lines, *charts.marker_rules(groups, "UTC"), *charts.shift_rules(shifts, "UTC")],
                          resolve=alt.Resolve(scale=alt.ScaleResolveMap(color="independent")),
                          height=charts.CHART_HEIGHT, autosize=FIT_WIDTH)


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
                        legend=DEPLOYMENT_LEGEND),
        tooltip=[alt.Tooltip(field=name, type="nominal")
                 for name in ("Deployment", "Bucket", "Divergence rate", "Per 100 actions")],
    )
    expected = alt.LayerChart(layer=[lines], resolve=alt.Resolve(scale=alt.ScaleResolveMap(color="independent")),
                              height=charts.CHART_HEIGHT, autosize=FIT_WIDTH).to_dict()

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


# ---------------------------------------------------------------------------
# Legends, week ticks and partial buckets

TREND_BUILDERS = {
    "rate": charts.divergence_rate_chart,
    "count": charts.divergence_count_chart,
    "savings": charts.savings_chart,
    "cumulative": charts.cumulative_savings_chart,
}
# An upper estimate of the width in pixels of one character of a 12 px legend label.
PIXELS_PER_CHARACTER = 8


def color_legends(spec: dict) -> dict[str, tuple[dict, list[str]]]:
    """Return each color legend of a layered spec by title, with its scale domain."""
    found = {}
    for layer in spec["layer"]:
        color = layer["encoding"].get("color", {})
        if "legend" in color:
            found[color["legend"]["title"]] = (color["legend"], color["scale"]["domain"])
    return found


def sample_groups() -> list[charts.MarkerGroup]:
    return charts.group_markers([marker("prod-eu", "2.3.0", datetime(2026, 10, 20, 14, tzinfo=UTC))],
                                timedelta(days=1), {"prod-eu-2.3.0": "regression"})


@pytest.mark.parametrize("name", list(TREND_BUILDERS))
def test_trend_chart_legends_whole(sample_trend: trends.Trend, name: str):
    spec = TREND_BUILDERS[name](sample_trend, marker_groups=sample_groups()).to_dict()
    legends = color_legends(spec)

    assert set(legends) == {"Deployment", "Deploy marker"}
    assert legends["Deployment"][1] == ["prod-eu", "prod-us", "staging"]
    assert legends["Deploy marker"][1] == ["regression", "improvement", "marker"]
    for legend, domain in legends.values():
        assert legend["orient"] == "bottom"
        assert legend["direction"] == "vertical"
        assert "columns" not in legend
        assert legend["labelLimit"] >= PIXELS_PER_CHARACTER * max(len(label) for label in domain)
    assert spec["config"]["legend"]["layout"]["bottom"]["direction"] == "vertical"
    assert spec["autosize"] == {"type": "fit-x", "contains": "padding"}


def test_legend_label_limit_fits_improvement():
    assert charts.LEGEND_LABEL_LIMIT >= PIXELS_PER_CHARACTER * len("improvement")


@pytest.mark.parametrize("measure", ["gross", "once_per_run"])
def test_roi_charts_legend_vertical(sample_periods: roi.RoiPeriods, measure: str):
    for builder in (charts.roi_period_chart, charts.roi_cumulative_chart):
        spec = builder(sample_periods, measure).to_dict()
        legend = spec["encoding"]["color"]["legend"]

        assert legend["direction"] == "vertical"
        assert legend["labelLimit"] == charts.LEGEND_LABEL_LIMIT
        assert spec["encoding"]["color"]["scale"]["range"] == list(charts.SERIES_COLORS[:3])
        assert spec["autosize"] == {"type": "fit-x", "contains": "padding"}


def tick_datetimes(axis: dict) -> list[datetime]:
    assert all(value["utc"] is True for value in axis["values"])
    return [datetime(value["year"], value["month"], value["date"], value["hours"], value["minutes"])
            for value in axis["values"]]


@pytest.fixture(scope="module")
def sample_weeks(sample_ledger_template: Path) -> roi.RoiPeriods:
    return roi.savings_by_period(sample_ledger_template, Filters(), "week", "UTC")


def test_roi_week_ticks_on_bar_starts(sample_weeks: roi.RoiPeriods):
    spec = charts.roi_period_chart(sample_weeks).to_dict()
    ticks = tick_datetimes(spec["encoding"]["x"]["axis"])
    starts = sorted({value.to_pydatetime().replace(tzinfo=None) for value in sample_weeks.rows["period_start"]})

    assert ticks == starts
    assert {tick.weekday() for tick in ticks} == {0}
    assert spec["encoding"]["x"]["axis"]["format"] == "%b %d"


def test_roi_cumulative_week_ticks_on_ends(sample_weeks: roi.RoiPeriods):
    spec = charts.roi_cumulative_chart(sample_weeks).to_dict()
    ticks = tick_datetimes(spec["encoding"]["x"]["axis"])
    ends = sorted({value.to_pydatetime().replace(tzinfo=None) for value in sample_weeks.rows["period_end"]})

    assert ticks == ends
    assert {tick.weekday() for tick in ticks} == {0}


def test_month_axis_keeps_vega_ticks(sample_periods: roi.RoiPeriods):
    axis = charts.roi_period_chart(sample_periods).to_dict()["encoding"]["x"]["axis"]

    assert "values" not in axis


def test_week_ticks_thinned():
    starts = [(T0 + timedelta(weeks=week)).isoformat().replace("+00:00", "Z") for week in range(50)]

    axis = charts._time_axis("week", "UTC", starts)

    assert len(axis["values"]) == 17
    assert axis["values"][0] == {"year": 2026, "month": 3, "date": 1, "hours": 0, "minutes": 0, "utc": True}


def test_trend_week_ticks_berlin(sample_ledger_template: Path):
    result = trends.trend(sample_ledger_template, Filters(), "week", "Europe/Berlin")

    spec = charts.savings_chart(result).to_dict()
    ticks = tick_datetimes(spec["layer"][0]["encoding"]["x"]["axis"])

    # Wall-clock Mondays at midnight in Berlin, on both sides of the change from summer time on 2026-10-25.
    assert {(tick.weekday(), tick.hour) for tick in ticks} == {(0, 0)}
    assert datetime(2026, 10, 26) in ticks


def test_roi_last_week_partial(sample_weeks: roi.RoiPeriods, sample_ledger_template: Path):
    frame = charts.roi_frame(sample_weeks)
    last = frame[frame["x_start"] == "2026-11-30T00:00:00.000Z"]
    middle = frame[frame["x_start"] == "2026-11-23T00:00:00.000Z"]
    rows = sample_weeks.rows
    with duckdb.connect(str(sample_ledger_template), read_only=True) as connection:
        (expected,) = connection.execute(
            "SELECT sum(cost_savings) FROM submissions "
            "WHERE submitted_at >= '2026-11-30' AND submitted_at < '2026-12-07'"
        ).fetchone()

    assert set(last["coverage"]) == {"partial"}
    assert set(last["Data covers"]) == {"2026-11-30 only (1 of 7 days)"}
    assert set(middle["coverage"]) == {"full"}
    assert set(middle["Data covers"]) == {"the whole week"}
    assert sum(rows[rows["period_start"] == rows["period_start"].max()]["gross"]) == expected
    assert last["gross"].sum() == pytest.approx(float(expected))


def test_roi_period_chart_partial_lighter(sample_weeks: roi.RoiPeriods):
    spec = charts.roi_period_chart(sample_weeks).to_dict()

    assert spec["encoding"]["opacity"]["field"] == "coverage"
    assert spec["encoding"]["opacity"]["scale"] == {
        "domain": ["full", "partial"], "range": [1.0, charts.PARTIAL_OPACITY]}
    assert charts.PARTIAL_OPACITY < 1
    assert "Data covers" in [tooltip["field"] for tooltip in spec["encoding"]["tooltip"]]


def test_partial_note_first_and_last_week(sample_weeks: roi.RoiPeriods):
    rows = sample_weeks.rows

    note = charts.partial_note(rows["period_start"], rows["period_end"], sample_weeks.span, "week", "UTC")

    assert note == (
        "The lighter bars hold only part of a week: week of 2026-08-31 (UTC) has data from 2026-09-02 to 2026-09-06 "
        "(5 of 7 days); week of 2026-11-30 (UTC) has data from 2026-11-30 only (1 of 7 days). Their sums cover those "
        "days only and are not scaled to a whole week."
    )


@pytest.mark.parametrize(
    ("start", "end", "span", "zone", "expected"),
    [
        # A whole week inside the span.
        (datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC),
         (datetime(2026, 9, 2, tzinfo=UTC), datetime(2026, 11, 30, 23, tzinfo=UTC)), "UTC", (7, 7, False)),
        # The data ends one microsecond before the week does: still every day.
        (datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC),
         (datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 29, 23, 59, 59, 999999, tzinfo=UTC)), "UTC",
         (7, 7, False)),
        # The data ends on the week's Wednesday.
        (datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 7, tzinfo=UTC),
         (datetime(2026, 9, 2, tzinfo=UTC), datetime(2026, 12, 2, 8, tzinfo=UTC)), "UTC", (3, 7, True)),
        # In New York the last submission, 02:00 UTC on a Tuesday, falls on Monday evening.
        (datetime(2026, 11, 30, 5, tzinfo=UTC), datetime(2026, 12, 7, 5, tzinfo=UTC),
         (datetime(2026, 9, 2, tzinfo=UTC), datetime(2026, 12, 1, 2, tzinfo=UTC)), "America/New_York", (1, 7, True)),
        # A month of 30 days whose data starts on the 2nd.
        (datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC),
         (datetime(2026, 9, 2, 1, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC)), "UTC", (29, 30, True)),
    ],
)
def test_bucket_coverage_days(start, end, span, zone, expected):
    coverage = charts.bucket_coverage(start, end, span, zone)

    assert (coverage.days, coverage.bucket_days, coverage.partial) == expected


def test_bucket_coverage_none_for_days():
    day = charts.bucket_coverage(T0, T0 + timedelta(days=1), (T0, T0 + timedelta(hours=1)), "UTC")
    unknown = charts.bucket_coverage(T0, T0 + timedelta(days=7), (None, None), "UTC")

    assert day is None
    assert unknown is None


def test_trend_week_bars_partial(sample_ledger_template: Path):
    result = trends.trend(sample_ledger_template, Filters(), "week", "UTC")

    spec = charts.divergence_count_chart(result).to_dict()
    rows = layer_data(spec)[0]
    partial = sorted({row["x_start"] for row in rows if row["coverage"] == "partial"})

    assert partial == ["2026-08-31T00:00:00.000Z", "2026-11-30T00:00:00.000Z"]
    assert spec["layer"][0]["encoding"]["opacity"]["field"] == "coverage"
    assert "Data covers" in [tooltip["field"] for tooltip in spec["layer"][0]["encoding"]["tooltip"]]


def test_trend_day_bars_whole(sample_trend: trends.Trend):
    spec = charts.savings_chart(sample_trend).to_dict()

    assert {row["coverage"] for row in layer_data(spec)[0]} == {"full"}
    assert "Data covers" not in [tooltip["field"] for tooltip in spec["layer"][0]["encoding"]["tooltip"]]


# ---------------------------------------------------------------------------
# Cause charts


def cause_rows() -> tuple[list[cause_queries.CauseCount], list[cause_queries.DeploymentCause]]:
    counts = [
        cause_queries.CauseCount("timestamp", 60, 60, 60, 0.6),
        cause_queries.CauseCount("uuid", 30, 30, 30, 0.3),
        cause_queries.CauseCount("control_flow", 10, 10, 10, 0.1),
    ]
    rows = [
        cause_queries.DeploymentCause("alpha", "control_flow", 5, 20),
        cause_queries.DeploymentCause("alpha", "uuid", 2, 20),
        cause_queries.DeploymentCause("beta", "timestamp", 60, 80),
        cause_queries.DeploymentCause("beta", "uuid", 28, 80),
        cause_queries.DeploymentCause("beta", "control_flow", 5, 80),
    ]
    return counts, rows


def test_cause_deployment_chart_palette_and_order():
    counts, rows = cause_rows()

    spec = charts.cause_deployment_chart(rows, counts).to_dict()
    encoding = spec["encoding"]

    assert encoding["y"]["sort"] == ["timestamp", "UUID", "changed control flow"]
    assert encoding["color"]["scale"] == {"domain": ["beta", "alpha"], "range": list(charts.SERIES_COLORS[:2])}
    assert encoding["yOffset"]["sort"] == ["beta", "alpha"]
    assert encoding["y"]["axis"]["labelLimit"] == charts.CAUSE_LABEL_LIMIT


def test_cause_share_chart_order_and_color():
    counts, _ = cause_rows()

    spec = charts.cause_share_chart(counts).to_dict()

    assert spec["encoding"]["y"]["sort"] == ["timestamp", "UUID", "changed control flow"]
    assert spec["mark"]["color"] == charts.SERIES_COLORS[0]
    assert [row["share"] for row in spec["datasets"][spec["data"]["name"]]] == [0.6, 0.3, 0.1]


def test_cause_order_appends_unranked():
    counts, _ = cause_rows()

    assert charts.cause_order(counts, ["reordering", "uuid", "float_noise"]) == [
        "timestamp", "UUID", "changed control flow", "floating-point noise", "reordering"]
