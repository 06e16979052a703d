"""ROI: what replay saved per week or month and deployment, gross and once per run, with a projection and a CSV.

URL parameters, all optional, with defaults left out of the URL:

- ``period``: ``week`` or ``month``
- ``bucket_tz``: the IANA zone the periods are computed in, default UTC
- ``measure``: ``once_per_run`` to chart savings once per run

The shared filters add theirs.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ledger import charts, formatting, store
from ledger.queries import roi, trends
from ledger.ui import View, cached_result, page_view, params
from ledger.ui.chart_slot import altair_chart

GROUP = "roi"
PARAM_PERIOD, PARAM_ZONE, PARAM_MEASURE = "period", "bucket_tz", "measure"
KEY_PERIOD, KEY_ZONE, KEY_MEASURE = "roi_period", "roi_zone", "roi_measure"
PERIOD_LABELS = {"week": "Week", "month": "Month"}
BUSY = "The ledger is busy with another writer, so {part} could not be read; reload the page in a moment."
DEFINITIONS = (
    "**Gross savings** add up `cost_savings` of every submission: a run replayed ten times counts ten times. "
    "**Savings once per run** count each run once, at the largest `cost_savings` among its submissions in "
    "the view (its fullest replay), in the period and deployment of its first submission in the view. "
    "**Projection**: the savings of the trailing 28 days, per day, times 30, 90 and 365 days. The 28 days end "
    "at the last submission that matches the filters and may start before the time range does."
)


def _load(raw: dict[str, list[str]]) -> params.ParsedParams:
    parsed = params.ParsedParams()
    state = st.session_state
    state[KEY_PERIOD] = parsed.choice(list(PERIOD_LABELS), "week", raw.get(PARAM_PERIOD, []), "period")
    state[KEY_ZONE] = parsed.choice(list(trends.ZONES), trends.DEFAULT_ZONE, raw.get(PARAM_ZONE, []),
                                    "period time zone")
    state[KEY_MEASURE] = parsed.choice(list(charts.ROI_MEASURES), "gross",
                                       raw.get(PARAM_MEASURE, []), "measure")
    return parsed


def controls() -> tuple[str, str, str, list[str]]:
    """Render period, zone and measure, mirror them in the URL; return them and notes on the URL."""
    notes, _ = params.sync_group(GROUP, (PARAM_PERIOD, PARAM_ZONE, PARAM_MEASURE), _load)
    changed = {"on_change": params.clear_notes, "args": (GROUP,)}
    period_column, zone_column, measure_column = st.columns([2, 3, 3], vertical_alignment="bottom")
    period = period_column.selectbox("Period", list(PERIOD_LABELS), format_func=PERIOD_LABELS.__getitem__,
                                     key=KEY_PERIOD, **changed)
    zone = zone_column.selectbox("Periods in time zone", list(trends.ZONES), key=KEY_ZONE, **changed,
                                 help="Weeks (from Monday) and months start at midnight in this zone.")
    measure = measure_column.selectbox("Charted savings", list(charts.ROI_MEASURES),
                                       format_func=charts.ROI_MEASURES.__getitem__, key=KEY_MEASURE, **changed)
    params.write_group(GROUP, {
        PARAM_PERIOD: [] if period == "week" else [period],
        PARAM_ZONE: [] if zone == trends.DEFAULT_ZONE else [zone],
        PARAM_MEASURE: [] if measure == "gross" else [measure],
    })
    return period, zone, measure, notes


def totals_tiles(totals: roi.RoiTotals) -> None:
    columns = st.columns(4)
    columns[0].metric("Gross savings", formatting.money(totals.gross), border=True,
                      help=f"Exactly ${totals.gross.normalize():f}, over {totals.submissions:,} submissions.")
    columns[1].metric("Savings once per run", formatting.money(totals.once_per_run), border=True,
                      help=f"Exactly ${totals.once_per_run.normalize():f}, over {totals.runs:,} runs.")
    columns[2].metric("Runs", formatting.count(totals.runs), border=True,
                      help="Distinct run ids among the submissions in view.")
    replays = totals.submissions / totals.runs if totals.runs else None
    columns[3].metric("Submissions per run", "—" if replays is None else f"{replays:.2f}", border=True,
                      help="How often a run was replayed on average; gross savings exceed savings once per run "
                           "when runs are replayed more than once.")


def projection_section(projection: roi.Projection, view: View) -> None:
    st.subheader("Projection")
    if projection.window_end is None or projection.gross_projection[roi.PROJECTION_DAYS[0]] is None:
        st.info("There is not enough data for a projection: it needs submissions at two different times.")
        return
    start = formatting.timestamp(projection.window_start, view.zone)
    end = formatting.timestamp(projection.window_end, view.zone)
    days = f"{projection.days:.2f}".rstrip("0").rstrip(".")
    st.dataframe(pd.DataFrame({
        "Horizon": [f"next {horizon} days" for horizon in roi.PROJECTION_DAYS],
        "Gross savings": [formatting.money(projection.gross_projection[horizon]) for horizon in roi.PROJECTION_DAYS],
        "Savings once per run": [formatting.money(projection.once_per_run_projection[horizon])
                                 for horizon in roi.PROJECTION_DAYS],
    }), hide_index=True, key="roi_projection")
    shortened = (f" The data starts later, so the rate is over {days} days instead of {roi.TRAILING_DAYS}."
                 if projection.shortened else "")
    st.caption(
        f"Method: savings from {start} to {end} {formatting.zone_name(view.zone)} ({days} days: gross "
        f"{formatting.money(projection.gross)}, once per run {formatting.money(projection.once_per_run)}), "
        f"divided by {days} days and multiplied by each horizon. It assumes replay keeps its trailing "
        f"rate; it is not a forecast of growth.{shortened}"
    )


def period_table(periods: roi.RoiPeriods) -> None:
    rows = periods.rows
    st.dataframe(pd.DataFrame({
        "Period": [charts.period_text(start, end, periods.period, periods.zone)
                   for start, end in zip(rows["period_start"], rows["period_end"])],
        "Deployment": rows["series"],
        "Submissions": rows["submissions"],
        "Runs first seen": rows["runs"],
        "Gross savings": [formatting.money(value) for value in rows["gross"]],
        "Once per run": [formatting.money(value) for value in rows["once_per_run"]],
        "Cumulative gross": [formatting.money(value) for value in rows["cumulative_gross"]],
        "Cumulative once per run": [formatting.money(value) for value in rows["cumulative_once_per_run"]],
    }), hide_index=True, width="stretch", key="roi_periods")


def periods_section(periods: roi.RoiPeriods, measure: str) -> None:
    if periods.note:
        st.info(periods.note, icon=":material/info:")
    label = charts.ROI_MEASURES[measure].lower()
    st.subheader(f"{charts.ROI_MEASURES[measure]} per {periods.period}")
    altair_chart(charts.roi_period_chart, periods, measure, what=f"{label} per {periods.period}")
    note = charts.partial_note(periods.rows["period_start"], periods.rows["period_end"], periods.span,
                               periods.period, periods.zone)
    if note:
        st.caption(note)
    st.subheader(f"Cumulative {label}")
    altair_chart(charts.roi_cumulative_chart, periods, measure, what=f"cumulative {label}")

    st.subheader(f"Per {periods.period} and deployment")
    period_table(periods)
    st.download_button(
        "Download CSV", roi.periods_csv(periods), file_name=f"replay-savings-per-{periods.period}.csv",
        mime="text/csv", icon=":material/download:", key="roi_download",
        help="One row per period and deployment. Times are in UTC, money in exact decimal USD.",
    )


def main() -> None:
    view = page_view()
    st.title("ROI")
    period, zone, measure, notes = controls()
    for note in notes:
        st.warning(note, icon=":material/info:")

    try:
        view_result = cached_result(roi.roi_view, view.ledger, view.filters, period, zone)
    except store.LedgerMissing:
        st.info("The ledger holds no submissions yet. Load replay results with `replay-ledger ingest PATH`.")
        st.stop()
    except store.LedgerBusy:
        st.warning(BUSY.format(part="the savings"))
        st.stop()
    loaded: roi.RoiView = view_result.value
    periods, totals = loaded.periods, loaded.totals
    # Spans of decades fall back to years, which the period picker does not offer.
    period_label = PERIOD_LABELS.get(periods.period, periods.period.capitalize())
    st.caption(f"{view.range_label} · {period_label}s in {periods.zone} · data as of "
               f"{formatting.timestamp(view_result.read_at, view.zone)} {formatting.zone_name(view.zone)}")
    st.markdown(DEFINITIONS)
    if not totals.submissions:
        st.info("No submissions match these filters. Widen the time range, or clear the deployment and status "
                "filters in the sidebar.", icon=":material/filter_alt_off:")
        st.stop()

    totals_tiles(totals)
    projection_section(loaded.projection, view)
    periods_section(periods, measure)


main()
