"""Trends: divergence rate, divergences and savings per time bucket and deployment, with deploy markers.

Below the charts are the verdict on each marker and the shifts no marker explains.

URL parameters, all optional, with defaults left out of the URL:

- ``bucket``: auto, hour, day, week or month
- ``bucket_tz``: the IANA zone the buckets are computed in, default UTC
- ``metric``: ``per100`` for divergences per 100 replayed actions
- ``window``: the regression window, such as ``7d``, ``36h`` or ``200sub``
- ``alpha`` and ``min_effect`` (in percentage points) of the regression check

The shared filters add theirs.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import streamlit as st

from ledger import charts, formatting, regressions, store
from ledger.queries import Filters
from ledger.queries import deploys, trend_view, trends
from ledger.ui import View, cached, cached_result, code_span, page_view, params

GROUP = "trends"
PARAM_BUCKET, PARAM_ZONE, PARAM_METRIC = "bucket", "bucket_tz", "metric"
PARAM_WINDOW, PARAM_ALPHA, PARAM_EFFECT = "window", "alpha", "min_effect"
KEY_BUCKET, KEY_ZONE, KEY_METRIC = "trends_bucket", "trends_zone", "trends_metric"
KEY_WINDOW, KEY_ALPHA, KEY_EFFECT = "trends_window", "trends_alpha", "trends_min_effect"

BUCKET_LABELS = {"auto": "Auto", "hour": "Hour", "day": "Day", "week": "Week", "month": "Month"}
BUCKET_ADJECTIVES = {"hour": "hourly", "day": "daily", "week": "weekly", "month": "monthly", "year": "yearly"}
METRIC_LABELS = {"share": "Share of submissions", "per100": "Per 100 replayed actions"}
ALPHAS = ("0.001", "0.01", "0.05", "0.1")
DEFAULT_WINDOW = "7d"
DEFAULT_ALPHA = f"{regressions.DEFAULT_ALPHA:g}"
DEFAULT_EFFECT = regressions.DEFAULT_MIN_EFFECT * 100
BUSY = "The ledger is busy with another writer, so {part} could not be read; reload the page in a moment."


def _load(raw: dict[str, list[str]]) -> params.ParsedParams:
    parsed = params.ParsedParams()
    state = st.session_state
    state[KEY_BUCKET] = parsed.choice(list(BUCKET_LABELS), "auto", raw.get(PARAM_BUCKET, []),
                                      "time bucket")
    state[KEY_ZONE] = parsed.choice(list(trends.ZONES), trends.DEFAULT_ZONE, raw.get(PARAM_ZONE, []),
                                    "bucket time zone")
    state[KEY_METRIC] = parsed.choice(list(METRIC_LABELS), "share", raw.get(PARAM_METRIC, []),
                                      "metric") == "per100"
    window_text = (raw.get(PARAM_WINDOW) or [DEFAULT_WINDOW])[-1]
    try:
        regressions.parse_window(window_text)
        state[KEY_WINDOW] = window_text
    except regressions.InvalidCheckRequest as error:
        parsed.notes.append(f"The link's window {code_span(window_text)} is invalid ({error}), so 7 days are used.")
        state[KEY_WINDOW] = DEFAULT_WINDOW
    state[KEY_ALPHA] = parsed.choice(list(ALPHAS), DEFAULT_ALPHA, raw.get(PARAM_ALPHA, []),
                                     "significance level")
    effect_text = (raw.get(PARAM_EFFECT) or [f"{DEFAULT_EFFECT:g}"])[-1]
    try:
        effect = float(effect_text)
        if not 0 <= effect <= 100:
            raise ValueError
        state[KEY_EFFECT] = effect
    except ValueError:
        parsed.notes.append(f"The link's minimum effect {code_span(effect_text)} is not a number of percentage "
                            f"points from 0 to 100, so {DEFAULT_EFFECT:g} is used.")
        state[KEY_EFFECT] = DEFAULT_EFFECT
    return parsed


def controls() -> tuple[str, str, str, regressions.Settings, list[str]]:
    """Render the chart and check settings, mirror them in the URL; return bucket, zone, metric, settings, notes."""
    notes, _ = params.sync_group(
        GROUP, (PARAM_BUCKET, PARAM_ZONE, PARAM_METRIC, PARAM_WINDOW, PARAM_ALPHA, PARAM_EFFECT), _load)
    changed = {"on_change": params.clear_notes, "args": (GROUP,)}

    bucket_column, zone_column, metric_column = st.columns([2, 3, 3], vertical_alignment="bottom")
    bucket = bucket_column.selectbox(
        "Time bucket", list(BUCKET_LABELS), format_func=BUCKET_LABELS.__getitem__, key=KEY_BUCKET, **changed,
        help=f"Auto picks the finest bucket that gives at most {trends.MAX_BUCKETS} buckets over the time range.",
    )
    zone = zone_column.selectbox(
        "Buckets in time zone", list(trends.ZONES), key=KEY_ZONE, **changed,
        help="Days, weeks and months start at midnight in this zone, and the charts show its wall clock. "
             "It does not follow the browser's zone.",
    )
    per_100 = metric_column.toggle(
        "Rate per 100 replayed actions", key=KEY_METRIC, **changed,
        help="Off: the share of submissions with at least one divergence. On: divergences per 100 replayed actions.",
    )
    metric = "per100" if per_100 else "share"

    with st.expander("Regression check settings"):
        window_column, alpha_column, effect_column = st.columns(3)
        window_text = window_column.text_input(
            "Window each side", key=KEY_WINDOW, **changed,
            help="A length (90m, 12h, 7d, 2w) or a number of submissions each side (200sub).",
        )
        alpha_text = alpha_column.selectbox(
            "Significance level (alpha)", list(ALPHAS), key=KEY_ALPHA, **changed,
            help="A marker is flagged when Fisher's exact test gives p below this.",
        )
        effect = effect_column.number_input(
            "Minimum effect (percentage points)", min_value=0.0, max_value=100.0, step=1.0, key=KEY_EFFECT, **changed,
        )

    try:
        window = regressions.parse_window(window_text)
    except regressions.InvalidCheckRequest as error:
        notes.append(f"The window {code_span(window_text)} is invalid: {error}. 7 days each side are used.")
        window = regressions.Window()
    settings = regressions.Settings(window=window, alpha=float(alpha_text), min_effect=round(effect / 100, 6))

    params.write_group(GROUP, {
        PARAM_BUCKET: [] if bucket == "auto" else [bucket],
        PARAM_ZONE: [] if zone == trends.DEFAULT_ZONE else [zone],
        PARAM_METRIC: [] if metric == "share" else [metric],
        PARAM_WINDOW: [] if window_text == DEFAULT_WINDOW else [window_text],
        PARAM_ALPHA: [] if alpha_text == DEFAULT_ALPHA else [alpha_text],
        PARAM_EFFECT: [] if effect == DEFAULT_EFFECT else [f"{effect:g}"],
    })
    return bucket, zone, metric, settings, notes


def _now_minute() -> datetime:
    """Return the start of the next minute, so results stay cacheable for a minute."""
    now = datetime.now(timezone.utc)
    return now.replace(second=0, microsecond=0) + timedelta(minutes=1)


def shifts_for(view: View, result: trends.Trend, markers: list[deploys.Marker],
               settings: regressions.Settings) -> list[regressions.Shift]:
    """Find shifts in every deployment's bucketed divergence rate, counting submissions of all statuses."""
    if view.filters.statuses or result.folded:
        unfiltered = Filters(view.filters.start, view.filters.end, view.filters.deployments)
        series = cached(trends.divergence_buckets, view.ledger, unfiltered, result.bucket, result.zone)
    else:
        series = {name: trends.divergence_series(result, name) for name in result.series}
    return regressions.find_shifts(series, markers, result.bucket, result.zone, min_effect=settings.min_effect)


def verdict_table(results: list[regressions.MarkerResult], view: View) -> None:
    zone = formatting.zone_name(view.zone)

    def side(k: int, n: int) -> str:
        return f"{formatting.percent(k / n if n else None)} ({k:,} of {n:,})"

    frame = pd.DataFrame({
        "Deployment": [result.marker.deployment for result in results],
        "Version": [result.marker.version for result in results],
        "Deployed at": [formatting.timestamp(result.marker.deployed_at, view.zone) for result in results],
        "Before": [side(result.window.before_k, result.window.before_n) for result in results],
        "After": [side(result.window.after_k, result.window.after_n) for result in results],
        "Change": ["—" if result.effect is None else f"{result.effect * 100:+.1f} pp" for result in results],
        "p-value": ["—" if result.verdict.p_value is None else f"{result.verdict.p_value:.3g}" for result in results],
        "Verdict": [result.verdict.verdict.replace("_", " ") for result in results],
        "Reason": [result.reason for result in results],
        "Origin": [result.marker.origin for result in results],
    })
    st.dataframe(frame, hide_index=True, width="stretch", key="trends_verdicts", column_config={
        "Deployed at": st.column_config.TextColumn(f"Deployed at ({zone})"),
        "Before": st.column_config.TextColumn("Before", help="Submissions with a divergence in the window before."),
        "After": st.column_config.TextColumn("After", help="Submissions with a divergence in the window after."),
        "Change": st.column_config.TextColumn("Change", help="After rate minus before rate, in percentage points."),
        "Reason": st.column_config.TextColumn("Reason", width="large"),
    })


def shift_table(shifts: list[regressions.Shift], view: View) -> None:
    zone = formatting.zone_name(view.zone)
    frame = pd.DataFrame({
        "Deployment": [shift.point.deployment for shift in shifts],
        "From": [formatting.timestamp(shift.point.at, view.zone) for shift in shifts],
        "Before": [f"{formatting.percent(shift.point.before_rate)} ({shift.point.before_k:,} of "
                   f"{shift.point.before_n:,})" for shift in shifts],
        "After": [f"{formatting.percent(shift.point.after_rate)} ({shift.point.after_k:,} of "
                  f"{shift.point.after_n:,})" for shift in shifts],
        "Direction": [shift.point.direction for shift in shifts],
        "p-value": [f"{shift.point.p_value:.3g}" for shift in shifts],
        "Explained by": [
            "— (unexplained)" if shift.unexplained else
            f"{shift.nearest_marker.version} at {formatting.timestamp(shift.nearest_marker.deployed_at, view.zone)}"
            for shift in shifts
        ],
    })
    st.dataframe(frame, hide_index=True, width="stretch", key="trends_shifts", column_config={
        "From": st.column_config.TextColumn(f"From ({zone})", help="Start of the first bucket after the shift."),
        "p-value": st.column_config.TextColumn("p-value", help="Fisher's exact test, Bonferroni-corrected."),
    })


def chart(builder, *args, what: str, **kwargs) -> None:
    """Draw one chart, or show a warning that it is unavailable and let the rest of the page render."""
    try:
        st.vega_lite_chart(builder(*args, **kwargs).streamlit_spec(), width="stretch")
    except charts.TooManyPoints as error:
        st.warning(f"The {what} chart is unavailable: {error}.")


def load_view(view: View, bucket: str, zone: str, settings: regressions.Settings,
              as_of: datetime) -> trend_view.TrendView:
    """Read the view and show its header, or stop the page with a message when there is nothing to chart."""
    window = settings.window
    try:
        view_result = cached_result(trend_view.trend_view, view.ledger, view.filters, bucket, zone, as_of,
                                    window=window.length, submissions=window.submissions)
    except store.LedgerMissing:
        st.info("The ledger holds no submissions yet. Load replay results with `replay-ledger ingest PATH`.")
        st.stop()
    except store.LedgerBusy:
        st.warning(BUSY.format(part="the trends"))
        st.stop()
    result = view_result.value.trend
    st.caption(
        f"{view.range_label} · {BUCKET_LABELS.get(result.bucket, result.bucket.title())} buckets in "
        f"{result.zone} · data as of {formatting.timestamp(view_result.read_at, view.zone)} "
        f"{formatting.zone_name(view.zone)}"
    )
    if result.rows.empty:
        st.info("No submissions match these filters. Widen the time range, or clear the deployment and status "
                "filters in the sidebar.", icon=":material/filter_alt_off:")
        st.stop()
    if result.note:
        st.info(result.note, icon=":material/info:")
    if result.folded:
        st.caption(f"{len(result.folded):,} smaller deployments are summed into {code_span(trends.OTHER_SERIES)}; "
                   "pick deployments in the sidebar to see them apart.")
    return view_result.value


def charts_section(result: trends.Trend, metric: str, groups: list[charts.MarkerGroup],
                   shifts: list[regressions.Shift]) -> None:
    try:
        frame = charts.trend_frame(result)
    except charts.TooManyPoints as error:
        st.warning(f"The charts are unavailable: {error}.")
        return
    st.subheader("Divergence rate")
    chart(charts.divergence_rate_chart, result, "share" if metric == "share" else "per_100_actions", groups,
          charts.shift_marks(shifts), frame=frame, what="divergence rate")
    st.caption(
        "Dashed rules are deploy markers (red: regression, green: improvement, grey: no change or not judged). "
        "Dotted amber rules are shifts in the rate. Hover a rule or a point for exact values."
    )

    left, right = st.columns(2)
    with left:
        st.subheader("Divergences")
        chart(charts.divergence_count_chart, result, groups, frame=frame, what="divergence count")
    with right:
        st.subheader("Savings")
        chart(charts.savings_chart, result, groups, frame=frame, what="savings")
    note = charts.partial_note(result.rows["bucket_start"], result.rows["bucket_end"], result.span, result.bucket,
                               result.zone)
    if note:
        st.caption(note)

    st.subheader("Cumulative savings")
    chart(charts.cumulative_savings_chart, result, groups, frame=frame, what="cumulative savings")


def verdicts_section(results: list[regressions.MarkerResult], settings: regressions.Settings, view: View) -> None:
    st.subheader("Deploy markers")
    st.caption(
        f"Each marker in the time range compares the submissions before and after it, {settings.window.describe()}, "
        f"with Fisher's exact test at alpha {settings.alpha:g}, a minimum effect of {settings.min_effect * 100:g} "
        f"percentage points and at least {settings.min_submissions} submissions a side. A window stops at the "
        "deployment's previous and next deploys and at the present. Every status counts, whatever the status filter."
    )
    if results:
        verdict_table(results, view)
    else:
        st.info("No deploy markers fall in this time range. Add one on the Deployments page or with "
                "`replay-ledger deploys add`.", icon=":material/flag:")


def shifts_section(shifts: list[regressions.Shift], result: trends.Trend, view: View) -> None:
    st.subheader("Shifts")
    st.caption(
        f"Change points in each deployment's {BUCKET_ADJECTIVES[result.bucket]} divergence rate, found by binary "
        f"segmentation with Fisher's exact test and a Bonferroni correction at alpha {regressions.SHIFT_ALPHA:g}. "
        f"A deploy marker of the deployment explains a shift when it lies within one {result.bucket} of it, or when "
        "a split at the marker fits the data about as well. Other shifts are unexplained."
    )
    if not shifts:
        st.info("No shifts found in the divergence rate.", icon=":material/check:")
        return
    unexplained = [shift for shift in shifts if shift.unexplained]
    if unexplained:
        count = len(unexplained)
        st.warning(f"{count} shift{'s' if count != 1 else ''} with no deploy marker to explain "
                   f"{'them' if count != 1 else 'it'}.", icon=":material/warning:")
    shift_table(shifts, view)


def main() -> None:
    view = page_view()
    st.title("Trends")
    bucket, zone, metric, settings, notes = controls()
    for note in notes:
        st.warning(note, icon=":material/info:")
    as_of = _now_minute()
    loaded = load_view(view, bucket, zone, settings, as_of)
    result = loaded.trend

    results = regressions.judge_windows(loaded.windows, settings, as_of)
    try:
        shifts = shifts_for(view, result, loaded.all_markers, settings)
    except store.LedgerBusy:
        st.warning(BUSY.format(part="the shifts"))
        shifts = []
    first, last = result.span
    start = view.filters.start or first
    end = view.filters.end or last
    verdicts = {item.marker.deploy_id: item.verdict.verdict for item in results}
    groups = charts.group_markers(loaded.shown_markers, charts.marker_gap(start, end, result.width), verdicts)

    charts_section(result, metric, groups, shifts)
    verdicts_section(results, settings, view)
    shifts_section(shifts, result, view)


main()
