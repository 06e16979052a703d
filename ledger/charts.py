"""Chart builders: plain functions from query results to Vega-Lite charts, with no Streamlit in them.

The trend charts are `LayeredChart` objects, Vega-Lite dictionaries built
directly; the ROI charts and the marker and shift rules are Altair charts.

Time axes show the wall clock of the zone the buckets were computed in, not
the browser's zone. Vega-Lite can format times only in UTC or in the
browser's zone, so every time is sent as that zone's wall-clock time written
as if it were UTC (``2026-03-01T00:00:00Z`` for midnight in the zone) and drawn
on a UTC scale. Points sit at the middle of their bucket and bars span it, so
a deploy marker at a bucket boundary falls between the two buckets' points.
NOTE: in the hour that repeats when daylight-saving time ends, two instants
share one wall-clock time. A marker in that hour can therefore be drawn on the
wrong side of a point from the same hour, while the tooltips still give the
exact times.

Legends sit under the chart with one entry a row, and a chart's two legends
stack. Vega clips a legend that passes the chart's right edge, and legends side
by side or with their entries in one row did not fit a half-width chart.
Week axes tick on the Mondays the buckets start, not on Vega's Sunday weeks.
A bucket of several days that the data covers only in part (the first or last
bucket of a span) is drawn lighter, because its bar sums fewer days than the
others.

Every builder raises `TooManyPoints` for data of more than `MAX_CHART_POINTS`
rows, so a chart never ships a large result to the browser.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import altair as alt
import pandas as pd

from ledger import causes, formatting
from ledger.queries.causes import CauseCount, DeploymentCause
from ledger.queries.deploys import Marker
from ledger.queries.roi import RoiPeriods
from ledger.queries.trends import Trend

MAX_CHART_POINTS = 5000
MAX_MARKER_GROUPS = 100
MARKERS_LISTED = 6
# The height of a chart's plot area in pixels. Axes and legends add to it, because every chart fits only its
# width to the page (`FIT_WIDTH`). Streamlit's theme fits the height too, which takes a tall legend's height
# from the plot.
CHART_HEIGHT = 260
CAUSE_CHART_HEIGHT = 240
FIT_WIDTH = {"type": "fit-x", "contains": "padding"}
# Vega places legends that share an orient side by side. Stacked, two legends need only the width of the wider one.
STACKED_LEGENDS = {"legend": {"layout": {"bottom": {"anchor": "start", "direction": "vertical"}}}}
METRICS = ("share", "per_100_actions")

VERDICT_COLORS = {
    "regression": "#b91c1c",
    "improvement": "#15803d",
    "marker": "#6b7280",
}
SHIFT_COLOR = "#d97706"
# Series colors leave out the reds, greens and ambers that mark verdicts and shifts.
SERIES_COLORS = (
    "#2563eb", "#9333ea", "#0891b2", "#db2777", "#4f46e5", "#0f766e",
    "#7c3aed", "#1e3a8a", "#be185d", "#0e7490", "#6d28d9", "#475569",
)
BUCKET_TITLES = {"hour": "Hour", "day": "Day", "week": "Week (from Monday)", "month": "Month", "year": "Year"}
# The widest legend label in pixels. A longer deployment name ends in an ellipsis, and the tooltips show it whole.
# A half-width Trends chart in a 1000 px window leaves about 180 px beside its y axis for the legends (measured
# on the Savings chart of the sample data in Chromium).
LEGEND_LABEL_LIMIT = 120
# The widest axis label of the cause charts in pixels. The longest of `causes.CAUSE_LABELS` take about 110 px.
CAUSE_LABEL_LIMIT = 200
MAX_WEEK_TICKS = 20
PARTIAL_OPACITY = 0.4
COVERAGE_DOMAIN = ("full", "partial")
MULTI_DAY_BUCKETS = ("week", "month", "year")


class TooManyPoints(ValueError):
    """A chart was given more rows than `MAX_CHART_POINTS`; aggregate in SQL first."""


@dataclass(frozen=True)
class MarkerGroup:
    """Deploy markers close enough in time to be drawn as one rule, earliest first, with their verdicts."""

    markers: tuple[Marker, ...]
    verdicts: tuple[str, ...]

    @property
    def at(self) -> datetime:
        """Where the rule is drawn: the earliest marker's time."""
        return self.markers[0].deployed_at

    @property
    def verdict(self) -> str:
        """The most serious verdict in the group: ``regression``, then ``improvement``, else ``marker``."""
        for verdict in ("regression", "improvement"):
            if verdict in self.verdicts:
                return verdict
        return "marker"


@dataclass(frozen=True)
class ShiftMark:
    """A change point to draw: its time, deployment, rates, p-value and whether a marker explains it."""

    deployment: str
    at: datetime
    before_rate: float
    after_rate: float
    before_n: int
    after_n: int
    p_value: float
    unexplained: bool


def wall_clock(instant: datetime, zone: str) -> str:
    """Return `instant` as the wall-clock time in `zone`, written as a UTC ISO text for a UTC time scale."""
    local = instant.astimezone(formatting.parse_zone(zone))
    return local.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def _check_size(frame: pd.DataFrame, what: str) -> None:
    if len(frame) > MAX_CHART_POINTS:
        raise TooManyPoints(
            f"the {what} chart got {len(frame):,} rows, more than {MAX_CHART_POINTS:,}; aggregate in SQL first"
        )


def group_markers(
    markers: Sequence[Marker],
    gap: timedelta,
    verdicts: dict[str, str] | None = None,
) -> list[MarkerGroup]:
    """Group markers, oldest first, so that each group spans at most `gap` from its first marker.

    `verdicts` maps a marker's deploy id to its verdict; markers without one
    count as plain markers.
    """
    verdicts = verdicts or {}
    groups: list[list[Marker]] = []
    for marker in sorted(markers, key=lambda item: (item.deployed_at, item.deployment, item.version)):
        if groups and marker.deployed_at - groups[-1][0].deployed_at <= gap:
            groups[-1].append(marker)
        else:
            groups.append([marker])
    return [
        MarkerGroup(tuple(group), tuple(verdicts.get(marker.deploy_id, "marker") for marker in group))
        for group in groups
    ]


def marker_gap(start: datetime | None, end: datetime | None, bucket_width: timedelta) -> timedelta:
    """Return how close markers must be to share a rule: one bucket, or 1/`MAX_MARKER_GROUPS` of the span if wider."""
    if start is None or end is None:
        return bucket_width
    return max(bucket_width, (end - start) / MAX_MARKER_GROUPS)


def _group_rows(groups: Iterable[MarkerGroup], zone: str) -> pd.DataFrame:
    rows = []
    zone_info = formatting.parse_zone(zone)
    for group in groups:
        listed = group.markers[:MARKERS_LISTED]
        more = len(group.markers) - len(listed)
        suffix = f" (and {more} more)" if more else ""
        count = len(group.markers)
        rows.append({
            "x": wall_clock(group.at, zone),
            "verdict": group.verdict,
            "Deploys": f"{count} deploy" if count == 1 else f"{count} deploys close together",
            "Deployment": " | ".join(marker.deployment for marker in listed) + suffix,
            "Version": " | ".join(marker.version for marker in listed) + suffix,
            f"Deployed at ({formatting.zone_name(zone_info)})": " | ".join(
                formatting.timestamp(marker.deployed_at, zone_info) for marker in listed) + suffix,
            "Note": " | ".join(marker.note or "—" for marker in listed) + suffix,
            "Verdict": " | ".join(verdict.replace("_", " ") for verdict in group.verdicts[:MARKERS_LISTED]) + suffix,
        })
    return pd.DataFrame(rows)


def marker_rules(groups: Sequence[MarkerGroup], zone: str) -> list[alt.Chart]:
    """Return vertical rules for marker groups, colored by their most serious verdict; none for no groups.

    Each rule has a wide transparent twin, so its tooltip shows when the
    pointer is near the line and not only exactly on it. The two charts share
    one data set.
    """
    if not groups:
        return []
    frame, layers = _marker_layers(groups, zone)
    return [_rule_chart(frame, layer) for layer in layers]


def _marker_layers(groups: Sequence[MarkerGroup], zone: str) -> tuple[pd.DataFrame, list[dict]]:
    """Return the rows of `marker_rules` and its two layers as Vega-Lite dictionaries without data."""
    frame = _group_rows(groups, zone)
    _check_size(frame, "deploy marker")
    time_title = next(column for column in frame.columns if column.startswith("Deployed at"))
    tooltip = _tooltip_channels("Deploys", "Deployment", "Version", time_title, "Note", "Verdict")
    color = {
        "field": "verdict",
        "legend": _legend("Deploy marker"),
        "scale": {"domain": list(VERDICT_COLORS), "range": list(VERDICT_COLORS.values())},
        "type": "nominal",
    }
    visible = {"mark": {"type": "rule", "strokeDash": [6, 3], "strokeWidth": 2},
               "encoding": {"color": color, "tooltip": tooltip, "x": _time_channel("x")}}
    hover = {"mark": {"type": "rule", "opacity": 0.001, "strokeWidth": 12},
             "encoding": {"tooltip": tooltip, "x": _time_channel("x")}}
    return frame, [visible, hover]


def shift_rules(shifts: Sequence[ShiftMark], zone: str) -> list[alt.Chart]:
    """Return dotted amber rules for change points, faded when a marker explains them; none for no shifts."""
    if not shifts:
        return []
    frame, layer = _shift_layer(shifts, zone)
    return [_rule_chart(frame, layer)]


def _shift_layer(shifts: Sequence[ShiftMark], zone: str) -> tuple[pd.DataFrame, dict]:
    """Return the rows of `shift_rules` and its layer as a Vega-Lite dictionary without data."""
    zone_info = formatting.parse_zone(zone)
    frame = pd.DataFrame([
        {
            "x": wall_clock(shift.at, zone),
            "unexplained": "yes" if shift.unexplained else "no",
            "Shift": "unexplained shift" if shift.unexplained else "shift explained by a deploy marker",
            "Deployment": shift.deployment,
            f"From ({formatting.zone_name(zone_info)})": formatting.timestamp(shift.at, zone_info),
            "Divergence rate": f"{formatting.percent(shift.before_rate)} → {formatting.percent(shift.after_rate)}",
            "Submissions": f"{shift.before_n:,} before, {shift.after_n:,} after",
            "p-value": f"{shift.p_value:.3g}",
        }
        for shift in shifts
    ])
    _check_size(frame, "shift")
    titles = [column for column in frame.columns if column not in ("x", "unexplained")]
    return frame, {
        "mark": {"type": "rule", "strokeDash": [2, 2], "strokeWidth": 2},
        "encoding": {
            "color": {"value": SHIFT_COLOR},
            "opacity": {"field": "unexplained", "legend": None, "scale": {"domain": ["yes", "no"], "range": [1.0, 0.5]},
                        "type": "nominal"},
            "tooltip": _tooltip_channels(*titles),
            "x": _time_channel("x"),
        },
    }


def _rule_chart(frame: pd.DataFrame, layer: dict) -> alt.Chart:
    """Return an Altair rule chart of `frame` with the mark properties and encoding of a Vega-Lite rule `layer`."""
    properties = {key: value for key, value in layer["mark"].items() if key != "type"}
    return alt.Chart(frame).mark_rule(**properties).encode(**layer["encoding"])


def period_text(start: datetime, end: datetime, bucket: str, zone: str) -> str:
    """Return a bucket as text in its zone: ``2026-03-01``, ``2026-03-01 14:00``, ``week of 2026-02-23``."""
    zone_info = formatting.parse_zone(zone)
    local = start.astimezone(zone_info)
    name = formatting.zone_name(zone_info)
    if bucket == "hour":
        text = f"{local:%Y-%m-%d %H:%M}–{end.astimezone(zone_info):%H:%M}"
    elif bucket == "day":
        text = f"{local:%Y-%m-%d}"
    elif bucket == "week":
        text = f"week of {local:%Y-%m-%d}"
    elif bucket == "month":
        text = f"{local:%Y-%m}"
    else:
        text = f"{local:%Y}"
    return f"{text} ({name})"


@dataclass(frozen=True)
class BucketCoverage:
    """The days of one bucket that lie between the first and the last submission of the data, as dates in its zone."""

    first_day: date
    last_day: date
    bucket_days: int

    @property
    def days(self) -> int:
        """The number of covered days, `first_day` and `last_day` included."""
        return (self.last_day - self.first_day).days + 1

    @property
    def partial(self) -> bool:
        return self.days < self.bucket_days

    def text(self) -> str:
        """Return the covered days as text: ``2026-11-30 only (1 of 7 days)`` or ``all 7 days``."""
        if not self.partial:
            return f"all {self.bucket_days} days"
        if self.days == 1:
            return f"{self.first_day:%Y-%m-%d} only (1 of {self.bucket_days} days)"
        return f"{self.first_day:%Y-%m-%d} to {self.last_day:%Y-%m-%d} ({self.days} of {self.bucket_days} days)"


def bucket_coverage(start: datetime, end: datetime, span: tuple[datetime | None, datetime | None],
                    zone: str) -> BucketCoverage | None:
    """Return the days of the bucket [start, end) in `zone` from the first to the last submission of `span`.

    Returns None when `span` is unknown, and for buckets of less than two
    days, which the data covers whole or not at all when counted in days.
    """
    first, last = span
    if first is None or last is None:
        return None
    zone_info = formatting.parse_zone(zone)
    bucket_days = (end.astimezone(zone_info).date() - start.astimezone(zone_info).date()).days
    if bucket_days < 2:
        return None
    first_day = max(start, first).astimezone(zone_info).date()
    last_day = min(end - timedelta(microseconds=1), last).astimezone(zone_info).date()
    return BucketCoverage(first_day, last_day, bucket_days)


def partial_buckets(starts: Sequence[datetime], ends: Sequence[datetime],
                    span: tuple[datetime | None, datetime | None], zone: str) -> dict[datetime, BucketCoverage]:
    """Return the coverage of the buckets the data covers only in part, by bucket start.

    Only the first and the last bucket can be partial, because every other
    bucket lies between the first and the last submission.
    """
    bounds = dict(zip(starts, ends))
    found = {}
    for start in sorted({min(bounds), max(bounds)} if bounds else ()):
        coverage = bucket_coverage(start, bounds[start], span, zone)
        if coverage is not None and coverage.partial:
            found[start] = coverage
    return found


def partial_note(starts: Sequence[datetime], ends: Sequence[datetime], span: tuple[datetime | None, datetime | None],
                 bucket: str, zone: str) -> str | None:
    """Return a sentence naming the lighter, partly covered bars and their days, or None when every bar is whole."""
    partial = partial_buckets(starts, ends, span, zone)
    if not partial:
        return None
    bounds = dict(zip(starts, ends))
    parts = [f"{period_text(start, bounds[start], bucket, zone)} has data from {coverage.text()}"
             for start, coverage in partial.items()]
    subject, sums = ("bar holds", "Its sums cover") if len(parts) == 1 else ("bars hold", "Their sums cover")
    return (f"The lighter {subject} only part of a {bucket}: {'; '.join(parts)}. "
            f"{sums} those days only and are not scaled to a whole {bucket}.")


def _coverage_columns(frame: pd.DataFrame, starts: list[datetime], ends: list[datetime],
                      span: tuple[datetime | None, datetime | None], bucket: str, zone: str) -> None:
    """Add ``coverage`` (``full`` or ``partial``) and the tooltip text ``Data covers`` to a frame of buckets."""
    partial = partial_buckets(starts, ends, span, zone)
    frame["coverage"] = ["partial" if start in partial else "full" for start in starts]
    frame["Data covers"] = [partial[start].text() if start in partial else f"the whole {bucket}" for start in starts]


def trend_frame(trend: Trend) -> pd.DataFrame:
    """Return the long-format frame the trend charts draw: one row per bucket and series, with tooltip texts.

    Columns: ``x`` (bucket middle), ``x_start`` and ``x_end`` (wall-clock
    texts, see the module docstring), ``series``, ``share`` (0-1),
    ``per_100_actions``, ``divergences``, ``savings`` and ``cumulative``
    (numbers to draw), the stacked bands of `_stack`, ``coverage`` of
    `_coverage_columns`, and the text columns used as tooltips.
    """
    rows = trend.rows
    _check_size(rows, "trend")
    frame = pd.DataFrame({"series": rows["series"].astype(str)})
    starts = [value.to_pydatetime() for value in rows["bucket_start"]]
    ends = [value.to_pydatetime() for value in rows["bucket_end"]]
    frame["x"] = [wall_clock(start + (end - start) / 2, trend.zone) for start, end in zip(starts, ends)]
    frame["x_start"] = [wall_clock(start, trend.zone) for start in starts]
    frame["x_end"] = [wall_clock(end, trend.zone) for end in ends]
    submissions = rows["submissions"].astype(int).tolist()
    diverged = rows["with_divergence"].astype(int).tolist()
    divergences = rows["divergences"].astype(int).tolist()
    replayed = rows["actions_replayed"].astype(int).tolist()
    savings = list(rows["savings"])
    cumulative = list(rows["cumulative_savings"])
    frame["share"] = [k / n if n else None for k, n in zip(diverged, submissions)]
    frame["per_100_actions"] = [100 * d / a if a else None for d, a in zip(divergences, replayed)]
    frame["divergences"] = divergences
    frame["savings"] = [float(value) for value in savings]
    frame["cumulative"] = [float(value) for value in cumulative]
    frame["Deployment"] = frame["series"]
    frame["Bucket"] = [period_text(start, end, trend.bucket, trend.zone) for start, end in zip(starts, ends)]
    frame["Divergence rate"] = [
        f"{formatting.percent(k / n if n else None)} ({k:,} of {n:,} submissions)" for k, n in zip(diverged, submissions)
    ]
    frame["Per 100 actions"] = [
        f"{100 * d / a:.2f} ({d:,} divergences in {a:,} replayed actions)" if a else f"— ({d:,} divergences, no actions)"
        for d, a in zip(divergences, replayed)
    ]
    frame["Divergences"] = [f"{d:,}" for d in divergences]
    frame["Savings"] = [_exact_money(value) for value in savings]
    frame["Cumulative savings"] = [_exact_money(value) for value in cumulative]
    _coverage_columns(frame, starts, ends, trend.span, trend.bucket, trend.zone)
    _stack(frame, "divergences", trend.series)
    _stack(frame, "savings", trend.series)
    return frame


def _columns(frame: pd.DataFrame, *names: str) -> pd.DataFrame:
    """Return only the columns one chart draws or shows, so its spec carries no other data."""
    return frame[list(names)]


def _stack(frame: pd.DataFrame, value: str, order: Sequence[str]) -> None:
    """Add ``{value}_low`` and ``{value}_high``: each series' band in a bar stacked in `order` per bucket.

    Vega-Lite does not stack bars that span a time range (``x`` and ``x2``),
    so the bands are computed here and drawn with ``y`` and ``y2``.
    """
    rank = {name: index for index, name in enumerate(order)}
    ordered = frame.assign(_rank=frame["series"].map(rank)).sort_values(["x_start", "_rank"], kind="stable")
    high = ordered.groupby("x_start", sort=False)[value].cumsum()
    frame[f"{value}_high"] = high.reindex(frame.index)
    frame[f"{value}_low"] = frame[f"{value}_high"] - frame[value]


def _exact_money(amount: Decimal) -> str:
    """Return dollars to the cent, with the exact ledger value beside them when it has more decimals."""
    shown = formatting.money(amount)
    if amount == amount.quantize(formatting.CENT):
        return shown
    return f"{shown} (exactly ${amount.normalize():f})"


def _time_axis(bucket: str, zone: str, boundaries: Iterable[str] = (), title: str | None = None) -> dict:
    """Return a time axis titled with the bucket and zone, whose week ticks sit on `boundaries` (wall-clock texts).

    Vega's own week ticks fall on Sundays, in the middle of Monday-based
    buckets, so a week axis gets explicit ticks on the bucket boundaries the
    chart's marks start or end at, every n-th one when there are more than
    `MAX_WEEK_TICKS`.
    """
    axis: dict = {"labelOverlap": True, "title": title or f"{BUCKET_TITLES[bucket]} ({zone})"}
    if bucket == "week":
        ticks = sorted(set(boundaries))
        step = -(-len(ticks) // MAX_WEEK_TICKS)
        axis["values"] = [_tick_datetime(text) for text in ticks[::max(step, 1)]]
        axis["format"] = "%b %d"
    return axis


def _trend_axis(trend: Trend, frame: pd.DataFrame, boundary: str = "x_start") -> dict:
    """Return the time axis of a trend chart, ticking weeks on the `boundary` column of `frame`."""
    return _time_axis(trend.bucket, trend.zone, frame[boundary] if trend.bucket == "week" else ())


def _bar_tooltips(bucket: str, *fields: str) -> list[dict]:
    """Return tooltip channels of bars, with the covered days added for buckets that can be partial."""
    extra = ("Data covers",) if bucket in MULTI_DAY_BUCKETS else ()
    return _tooltip_channels(*fields, *extra)


def _tick_datetime(wall_clock_text: str) -> dict:
    """Return a wall-clock text of `wall_clock` as a Vega-Lite DateTime in UTC, the form a time axis takes ticks in.

    Vega-Lite turns a plain number or text tick into ``datetime(value)``,
    which Vega reads as a year, so such ticks are never drawn.
    """
    moment = datetime.fromisoformat(wall_clock_text.replace("Z", "+00:00"))
    return {"year": moment.year, "month": moment.month, "date": moment.day, "hours": moment.hour,
            "minutes": moment.minute, "utc": True}


# The trend charts are Vega-Lite dictionaries built directly. As Altair charts, the four charts of an all-time
# view took about 110 ms to build and turn into dictionaries, mostly in Altair's data conversion and its
# validation against the Vega-Lite JSON schema. Built directly they take about 8 ms (bench/trends.py on
# 10 million submissions, 2 cores). The ROI charts still use the Altair wrappers below.
def _time_channel(field: str, axis: dict | None = None) -> dict:
    channel = {"field": field, "scale": {"type": "utc"}, "type": "temporal"}
    if axis is not None:
        channel["axis"] = axis
    return channel


def _tooltip_channels(*fields: str) -> list[dict]:
    return [{"field": field, "type": "nominal"} for field in fields]


def _quantity_channel(field: str, title: str, number_format: str | None = None, whole: bool = False) -> dict:
    """Return a quantitative y channel; `whole` keeps ticks on whole numbers, as for counts."""
    axis: dict = {}
    if number_format is not None:
        axis["format"] = number_format
    if whole:
        axis["tickMinStep"] = 1
    return {"axis": axis, "field": field, "title": title, "type": "quantitative"}


def _legend(title: str) -> dict:
    """Return a legend under the chart with one entry a row, so its width does not grow with its entries."""
    return {"direction": "vertical", "labelLimit": LEGEND_LABEL_LIMIT, "orient": "bottom", "title": title}


def series_palette(count: int) -> list[str]:
    """Return the colors of `count` series in order, repeating `SERIES_COLORS` past its end."""
    return [SERIES_COLORS[index % len(SERIES_COLORS)] for index in range(count)]


def _series_color_channel(series: Sequence[str], field: str = "series") -> dict:
    domain = list(series)
    return {"field": field, "legend": _legend("Deployment"),
            "scale": {"domain": domain, "range": series_palette(len(domain))}, "type": "nominal"}


def _coverage_channel() -> dict:
    """Return an opacity channel that draws buckets the data covers only in part lighter, without a legend."""
    return {"field": "coverage", "legend": None,
            "scale": {"domain": list(COVERAGE_DOMAIN), "range": [1.0, PARTIAL_OPACITY]}, "type": "nominal"}


# Altair channels for the ROI charts, built from typed keyword arguments: Altair parses shorthand strings such
# as "x:T" against its JSON schema, which took about 40 ms per chart layer (bench/trends.py, 2 cores).
def _time(field: str, axis: dict | alt.Axis | None = None) -> alt.X:
    return alt.X(field=field, type="temporal", scale=alt.Scale(type="utc"), axis=axis or alt.Undefined)


def _tooltips(*fields: str) -> list[alt.Tooltip]:
    return [alt.Tooltip(**channel) for channel in _tooltip_channels(*fields)]


def _quantity(field: str, title: str, number_format: str | None = None, whole: bool = False) -> alt.Y:
    return alt.Y(**_quantity_channel(field, title, number_format, whole))


def _series_color(series: Sequence[str]) -> alt.Color:
    return alt.Color(**_series_color_channel(series))


@dataclass(frozen=True)
class LayeredChart:
    """A layered Vega-Lite chart as plain data: the spec, whose layers name their data sets, and those data sets.

    `to_dict` returns the spec with the rows inlined under ``datasets``, in
    the layout of Altair's ``to_dict()`` but without Altair's theme config,
    which Streamlit leaves out too; its only config is `STACKED_LEGENDS`.
    `streamlit_spec` returns it with the
    frames in place of rows, for ``st.vega_lite_chart``, which converts
    frames to Arrow itself.
    """

    spec: dict[str, Any]
    datasets: dict[str, pd.DataFrame]

    def to_dict(self) -> dict[str, Any]:
        """Return the Vega-Lite spec with every data set as a list of rows, missing numbers as None."""
        return {**self.streamlit_spec(), "datasets": {name: _rows(frame) for name, frame in self.datasets.items()}}

    def streamlit_spec(self) -> dict[str, Any]:
        """Return the Vega-Lite spec with every data set as its frame."""
        return {**copy.deepcopy(self.spec), "$schema": alt.SCHEMA_URL, "datasets": dict(self.datasets)}


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Return the frame's rows as dictionaries of plain Python values, with None for NaN, as Altair inlines data."""
    # Column lists and zip, because pandas' to_dict("records") boxes every Arrow-backed string one by one.
    names = list(frame.columns)
    columns = []
    for name in names:
        values = frame[name].tolist()
        if frame[name].dtype.kind == "f":
            values = [None if value != value else value for value in values]
        columns.append(values)
    return [dict(zip(names, row)) for row in zip(*columns)]


def _layered(name: str, main: pd.DataFrame, layer: dict, marker_groups: Sequence[MarkerGroup], zone: str,
             shifts: Sequence[ShiftMark] = ()) -> LayeredChart:
    """Return the chart of one `layer` over `main`, with rules for the markers and shifts drawn on top.

    Series and verdicts get independent color scales.
    """
    layers = [{"data": {"name": name}, **layer}]
    datasets = {name: main}
    if marker_groups:
        frame, rules = _marker_layers(marker_groups, zone)
        layers += [{"data": {"name": "markers"}, **rule} for rule in rules]
        datasets["markers"] = frame
    if shifts:
        frame, rule = _shift_layer(shifts, zone)
        layers.append({"data": {"name": "shifts"}, **rule})
        datasets["shifts"] = frame
    spec = {"layer": layers, "height": CHART_HEIGHT, "autosize": dict(FIT_WIDTH),
            "config": copy.deepcopy(STACKED_LEGENDS), "resolve": {"scale": {"color": "independent"}}}
    if len(layers) == 1:
        # One layer: its data moves to the top level, as Altair writes a layer chart whose layers share data.
        spec["data"] = layers[0].pop("data")
    return LayeredChart(spec, datasets)


def divergence_rate_chart(
    trend: Trend,
    metric: str = "share",
    marker_groups: Sequence[MarkerGroup] = (),
    shifts: Sequence[ShiftMark] = (),
    frame: pd.DataFrame | None = None,
) -> LayeredChart:
    """Return the divergence rate per bucket, one line per series, with deploy markers and shifts.

    `metric` ``share`` draws the share of submissions with at least one
    divergence; ``per_100_actions`` draws divergences per 100 replayed
    actions. Raises ValueError for another metric. `frame` is `trend_frame(trend)`
    when the caller has it already, as every trend chart builder takes it.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    frame = trend_frame(trend) if frame is None else frame
    if metric == "share":
        y = _quantity_channel(metric, "Submissions with a divergence", ".0%")
    else:
        y = _quantity_channel(metric, "Divergences per 100 replayed actions")
    lines = {
        "mark": {"type": "line", "point": True},
        "encoding": {
            "color": _series_color_channel(trend.series),
            "tooltip": _tooltip_channels("Deployment", "Bucket", "Divergence rate", "Per 100 actions"),
            "x": _time_channel("x", _trend_axis(trend, frame)),
            "y": y,
        },
    }
    data = _columns(frame, "x", "series", metric, "Deployment", "Bucket", "Divergence rate", "Per 100 actions")
    return _layered("trend", data, lines, marker_groups, trend.zone, shifts)


def divergence_count_chart(
    trend: Trend, marker_groups: Sequence[MarkerGroup] = (), frame: pd.DataFrame | None = None
) -> LayeredChart:
    """Return divergences per bucket as bars stacked by series, with deploy markers."""
    frame = trend_frame(trend) if frame is None else frame
    bars = {
        "mark": {"type": "bar"},
        "encoding": {
            "color": _series_color_channel(trend.series),
            "opacity": _coverage_channel(),
            "tooltip": _bar_tooltips(trend.bucket, "Deployment", "Bucket", "Divergences", "Divergence rate"),
            "x": _time_channel("x_start", _trend_axis(trend, frame)),
            "x2": {"field": "x_end"},
            "y": _quantity_channel("divergences_high", "Divergences", ",d", whole=True),
            "y2": {"field": "divergences_low"},
        },
    }
    data = _columns(frame, "x_start", "x_end", "series", "divergences", "divergences_low", "divergences_high",
                    "coverage", "Deployment", "Bucket", "Divergences", "Divergence rate", "Data covers")
    return _layered("trend", data, bars, marker_groups, trend.zone)


def savings_chart(
    trend: Trend, marker_groups: Sequence[MarkerGroup] = (), frame: pd.DataFrame | None = None
) -> LayeredChart:
    """Return savings per bucket as bars stacked by series, with deploy markers."""
    frame = trend_frame(trend) if frame is None else frame
    bars = {
        "mark": {"type": "bar"},
        "encoding": {
            "color": _series_color_channel(trend.series),
            "opacity": _coverage_channel(),
            "tooltip": _bar_tooltips(trend.bucket, "Deployment", "Bucket", "Savings"),
            "x": _time_channel("x_start", _trend_axis(trend, frame)),
            "x2": {"field": "x_end"},
            "y": _quantity_channel("savings_high", "Savings (USD)", "$,.2f"),
            "y2": {"field": "savings_low"},
        },
    }
    data = _columns(frame, "x_start", "x_end", "series", "savings", "savings_low", "savings_high", "coverage",
                    "Deployment", "Bucket", "Savings", "Data covers")
    return _layered("trend", data, bars, marker_groups, trend.zone)


def cumulative_savings_chart(
    trend: Trend, marker_groups: Sequence[MarkerGroup] = (), frame: pd.DataFrame | None = None
) -> LayeredChart:
    """Return cumulative savings per series, each point at the end of its bucket, with deploy markers."""
    frame = trend_frame(trend) if frame is None else frame
    lines = {
        "mark": {"type": "line", "point": True},
        "encoding": {
            "color": _series_color_channel(trend.series),
            "tooltip": _tooltip_channels("Deployment", "Bucket", "Cumulative savings", "Savings"),
            "x": _time_channel("x_end", _trend_axis(trend, frame, "x_end")),
            "y": _quantity_channel("cumulative", "Cumulative savings (USD)", "$,.2f"),
        },
    }
    data = _columns(frame, "x_end", "series", "cumulative", "Deployment", "Bucket", "Cumulative savings", "Savings")
    return _layered("trend", data, lines, marker_groups, trend.zone)


ROI_MEASURES = {"gross": "Gross savings", "once_per_run": "Savings once per run"}


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def roi_frame(periods: RoiPeriods) -> pd.DataFrame:
    """Return the long-format frame of the ROI charts: one row per period and series, with tooltip texts.

    ``coverage`` and ``Data covers`` mark the periods the data covers only
    in part, as `_coverage_columns` does.
    """
    rows = periods.rows
    _check_size(rows, "ROI")
    starts = [value.to_pydatetime() for value in rows["period_start"]]
    ends = [value.to_pydatetime() for value in rows["period_end"]]
    frame = pd.DataFrame({"series": rows["series"].astype(str)})
    frame["x_start"] = [wall_clock(start, periods.zone) for start in starts]
    frame["x_end"] = [wall_clock(end, periods.zone) for end in ends]
    for name in ("gross", "once_per_run", "cumulative_gross", "cumulative_once_per_run"):
        frame[name] = [float(value) for value in rows[name]]
        frame[f"{name}_text"] = [_exact_money(value) for value in rows[name]]
    frame["Deployment"] = frame["series"]
    frame["Period"] = [period_text(start, end, periods.period, periods.zone) for start, end in zip(starts, ends)]
    frame["Submissions"] = [f"{value:,}" for value in rows["submissions"]]
    frame["Runs first seen"] = [f"{value:,}" for value in rows["runs"]]
    _coverage_columns(frame, starts, ends, periods.span, periods.period, periods.zone)
    series = list(dict.fromkeys(frame["series"]))
    _stack(frame, "gross", series)
    _stack(frame, "once_per_run", series)
    return frame


def roi_period_chart(periods: RoiPeriods, measure: str = "gross") -> alt.Chart:
    """Return savings per period as bars stacked by deployment; `measure` is ``gross`` or ``once_per_run``.

    A period the data covers only in part keeps its exact sum and is drawn lighter.
    """
    if measure not in ROI_MEASURES:
        raise ValueError(f"unknown measure {measure!r}; use one of {', '.join(ROI_MEASURES)}")
    frame = roi_frame(periods)
    series = list(dict.fromkeys(frame["series"]))
    return alt.Chart(_columns(
        frame, "x_start", "x_end", "series", measure, f"{measure}_low", f"{measure}_high", "coverage", "Deployment",
        "Period", "gross_text", "once_per_run_text", "Submissions", "Runs first seen", "Data covers",
    )).mark_bar().encode(
        x=_time("x_start", _time_axis(periods.period, periods.zone, frame["x_start"])),
        x2=alt.X2(field="x_end"),
        y=_quantity(f"{measure}_high", f"{ROI_MEASURES[measure]} (USD)", "$,.2f"),
        y2=alt.Y2(field=f"{measure}_low"),
        color=_series_color(series),
        opacity=alt.Opacity(**_coverage_channel()),
        tooltip=[
            *_tooltips("Deployment", "Period"),
            alt.Tooltip(field="gross_text", type="nominal", title="Gross savings"),
            alt.Tooltip(field="once_per_run_text", type="nominal", title="Savings once per run"),
            *_tooltips("Submissions", "Runs first seen", "Data covers"),
        ],
    ).properties(height=CHART_HEIGHT, autosize=alt.AutoSizeParams(**FIT_WIDTH))


def roi_cumulative_chart(periods: RoiPeriods, measure: str = "gross") -> alt.Chart:
    """Return cumulative savings per deployment, each point at the end of its period."""
    if measure not in ROI_MEASURES:
        raise ValueError(f"unknown measure {measure!r}; use one of {', '.join(ROI_MEASURES)}")
    frame = roi_frame(periods)
    series = list(dict.fromkeys(frame["series"]))
    title = f"End of {_lower_first(BUCKET_TITLES[periods.period])} ({periods.zone})"
    return alt.Chart(_columns(
        frame, "x_end", "series", f"cumulative_{measure}", "Deployment", "Period", "cumulative_gross_text",
        "cumulative_once_per_run_text",
    )).mark_line(point=True).encode(
        x=_time("x_end", _time_axis(periods.period, periods.zone, frame["x_end"], title)),
        y=_quantity(f"cumulative_{measure}", f"Cumulative {ROI_MEASURES[measure].lower()} (USD)", "$,.2f"),
        color=_series_color(series),
        tooltip=[
            *_tooltips("Deployment", "Period"),
            alt.Tooltip(field="cumulative_gross_text", type="nominal", title="Cumulative gross"),
            alt.Tooltip(field="cumulative_once_per_run_text", type="nominal", title="Cumulative once per run"),
        ],
    ).properties(height=CHART_HEIGHT, autosize=alt.AutoSizeParams(**FIT_WIDTH))


def _cause_channel(order: Sequence[str]) -> alt.Y:
    return alt.Y(field="Cause", type="nominal", sort=list(order), title=None,
                 axis=alt.Axis(labelLimit=CAUSE_LABEL_LIMIT))


def _share_channel(title: str) -> alt.X:
    return alt.X(field="share", type="quantitative", title=title, axis=alt.Axis(format=".0%"))


def cause_order(counts: Sequence[CauseCount], names: Iterable[str] = ()) -> list[str]:
    """Return cause labels in the order of `counts` (most widespread first), then any other of `names` by label."""
    ranked = [causes.label(row.cause) for row in counts]
    others = sorted({causes.label(name) for name in names} - set(ranked))
    return ranked + others


def deployment_order(rows: Sequence[DeploymentCause]) -> list[str]:
    """Return the deployments of `rows`, most filtered submissions first, then by name.

    The Trends page orders and colors its series by the same rule.
    NOTE: `rows` lack deployments without any cause, so a deployment after
    one of those takes a different color here than on the Trends page.
    """
    sizes = {row.deployment: row.deployment_submissions for row in rows}
    return sorted(sizes, key=lambda name: (-sizes[name], name))


def cause_share_chart(counts: Sequence[CauseCount]) -> alt.Chart:
    """Return the share of the filtered replays with each cause as horizontal bars, in the order of `counts`."""
    frame = pd.DataFrame({
        "Cause": [causes.label(row.cause) for row in counts],
        "share": [row.share or 0.0 for row in counts],
        "Share of replays": [formatting.percent(row.share) for row in counts],
        "Replays": [f"{row.submissions:,}" for row in counts],
    })
    _check_size(frame, "cause")
    return alt.Chart(frame).mark_bar(color=SERIES_COLORS[0]).encode(
        x=_share_channel("% of replays"),
        y=_cause_channel(cause_order(counts)),
        tooltip=_tooltips("Cause", "Share of replays", "Replays"),
    ).properties(height=CAUSE_CHART_HEIGHT, autosize=alt.AutoSizeParams(**FIT_WIDTH))


def cause_deployment_chart(rows: Sequence[DeploymentCause], counts: Sequence[CauseCount]) -> alt.Chart:
    """Return each deployment's share of its replays with each cause, as grouped horizontal bars.

    Causes follow `counts`, the ranking of `cause_share_chart`, and
    deployments take `SERIES_COLORS` in the order of `deployment_order`.
    """
    frame = pd.DataFrame({
        "Deployment": [row.deployment for row in rows],
        "Cause": [causes.label(row.cause) for row in rows],
        "share": [row.share or 0.0 for row in rows],
        "Share of replays": [f"{formatting.percent(row.share)} ({row.submissions:,} of {row.deployment_submissions:,})"
                             for row in rows],
    })
    _check_size(frame, "cause per deployment")
    deployments = deployment_order(rows)
    return alt.Chart(frame).mark_bar().encode(
        x=_share_channel("% of the deployment's replays"),
        y=_cause_channel(cause_order(counts, (row.cause for row in rows))),
        yOffset=alt.YOffset(field="Deployment", type="nominal", sort=deployments),
        color=alt.Color(**_series_color_channel(deployments, field="Deployment")),
        tooltip=_tooltips("Deployment", "Cause", "Share of replays"),
    ).properties(height=CHART_HEIGHT, autosize=alt.AutoSizeParams(**FIT_WIDTH))


def shift_marks(shifts: Iterable) -> list[ShiftMark]:
    """Return `ShiftMark`s for `ledger.regressions.Shift` results."""
    return [
        ShiftMark(
            shift.point.deployment, shift.point.at, shift.point.before_rate, shift.point.after_rate,
            shift.point.before_n, shift.point.after_n, shift.point.p_value, shift.unexplained,
        )
        for shift in shifts
    ]

