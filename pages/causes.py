"""Divergence causes: what makes replays diverge, overall and per deployment, and the hotspots to fix first.

A hotspot is one action, input path and cause, ranked by the share of the
filtered replays it affects, with its first and last occurrence, a trend and
links to example runs. Everything follows the shared sidebar filters.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ledger import causes, charts, formatting, store
from ledger.queries import causes as cause_queries
from ledger.ui import View, cached, code_span, page_view, refresh, run_link_column, run_url
from ledger.ui.chart_slot import altair_chart

HEADLINES = 3
HOTSPOT_KEY = "causes_hotspot"
BUSY = "The ledger is busy with another writer, so {part} could not be read; reload the page in a moment."


def upgrade_ledger(ledger) -> None:
    """Upgrade the ledger on a button press, which classifies its stored divergences, then drop cached results."""
    try:
        store.upgrade(ledger)
        st.session_state["causes_upgrade_note"] = None
    except store.LedgerBusy:
        st.session_state["causes_upgrade_note"] = "The ledger is busy with another writer; try again in a moment."
    refresh(ledger)


def path_text(path: str, cause: str) -> str:
    return "(action called)" if cause == "control_flow" else causes.path_label(path)


def hotspot_name(hotspot: cause_queries.Hotspot) -> str:
    """Return a hotspot as plain text: ``summarize → kwargs.seed → random number``."""
    action = hotspot.action if hotspot.action is not None else "(no action)"
    return f"{action} → {path_text(hotspot.path, hotspot.cause)} → {causes.label(hotspot.cause)}"


def headline(hotspot: cause_queries.Hotspot) -> str:
    """Return a hotspot as a Markdown sentence; values from data are code spans."""
    action = code_span(hotspot.action if hotspot.action is not None else "(no action)", 60)
    where = f"{action} → {code_span(path_text(hotspot.path, hotspot.cause), 80)}"
    share = formatting.percent(hotspot.share)
    if hotspot.share_of_action is not None and hotspot.share_of_action > hotspot.share:
        scope = (f"in {formatting.percent(hotspot.share_of_action, 0)} of the replays that diverged at {action} "
                 f"({share} of all replays)")
    else:
        scope = f"in {share} of replays"
    advice = causes.CAUSE_ADVICE[hotspot.cause]
    return f"{where}: **{causes.label(hotspot.cause)}** {scope}. {advice[0].upper()}{advice[1:]}."


def overview_tiles(overview: cause_queries.CauseOverview) -> None:
    columns = st.columns(4)
    columns[0].metric("Submissions", formatting.count(overview.submissions), border=True,
                      help="Replay results that match the filters.")
    share = overview.submissions_with_divergence / overview.submissions if overview.submissions else None
    columns[1].metric(
        "With a divergence", formatting.count(overview.submissions_with_divergence), border=True,
        help=f"{formatting.percent(share)} of the submissions had at least one divergence.",
    )
    columns[2].metric(
        "Divergences", formatting.count(overview.divergences), border=True,
        help=f"{formatting.count(overview.classified_divergences)} have at least one classified difference; "
             f"{formatting.count(overview.unexplained_divergences)} have none, such as inputs that are equal as JSON.",
    )
    leading = overview.causes[0] if overview.causes else None
    columns[3].metric(
        f"Top cause: {causes.label(leading.cause)}" if leading else "Top cause",
        formatting.percent(leading.share) if leading else formatting.MISSING, border=True,
        help="Share of the submissions with at least one difference of the most widespread cause.",
    )


def cause_table(overview: cause_queries.CauseOverview) -> None:
    frame = pd.DataFrame({
        "Cause": [causes.label(row.cause) for row in overview.causes],
        "Share of replays": [100 * (row.share or 0) for row in overview.causes],
        "Replays": [row.submissions for row in overview.causes],
        "Divergences": [row.divergences for row in overview.causes],
        "Differences": [row.differences for row in overview.causes],
        "Suggestion": [causes.CAUSE_ADVICE[row.cause] for row in overview.causes],
    })
    chart, table = st.columns([2, 3])
    with chart:
        altair_chart(charts.cause_share_chart, overview.causes, what="causes")
    table.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        column_config={
            "Share of replays": st.column_config.ProgressColumn(
                "Share of replays", format="%.1f%%", min_value=0, max_value=100,
                help="Submissions with at least one difference of this cause, of all filtered submissions."),
            "Divergences": st.column_config.NumberColumn("Divergences", help="Divergences with this cause."),
            "Differences": st.column_config.NumberColumn("Differences", help="Differing fields with this cause."),
        },
        key="causes_overall",
    )


def deployment_section(rows: list[cause_queries.DeploymentCause], overview: cause_queries.CauseOverview) -> None:
    """Chart and tabulate each deployment's share of replays per cause, causes in the order of the Causes chart."""
    frame = pd.DataFrame({
        "Deployment": [row.deployment for row in rows],
        "Cause": [causes.label(row.cause) for row in rows],
        "Share of replays": [100 * (row.share or 0) for row in rows],
    })
    altair_chart(charts.cause_deployment_chart, rows, overview.causes, what="causes per deployment")
    pivot = frame.pivot_table(index="Cause", columns="Deployment", values="Share of replays", fill_value=0.0)
    order = charts.cause_order(overview.causes, (row.cause for row in rows))
    pivot = pivot.reindex(index=[name for name in order if name in pivot.index], columns=charts.deployment_order(rows))
    st.dataframe(
        pivot.reset_index(),
        hide_index=True,
        width="stretch",
        column_config={name: st.column_config.NumberColumn(name, format="%.1f%%") for name in pivot.columns},
        key="causes_by_deployment",
    )


def hotspot_table(report: cause_queries.HotspotReport, view: View) -> None:
    hotspots = report.hotspots
    zone = formatting.zone_name(view.zone)
    frame = pd.DataFrame({
        "Action": [spot.action if spot.action is not None else formatting.MISSING for spot in hotspots],
        "Path": [path_text(spot.path, spot.cause) for spot in hotspots],
        "Cause": [causes.label(spot.cause) for spot in hotspots],
        "Share of replays": [100 * spot.share for spot in hotspots],
        "Of the action's": [None if spot.share_of_action is None else 100 * spot.share_of_action
                            for spot in hotspots],
        "Replays": [spot.submissions for spot in hotspots],
        # The line chart cell cannot draw gaps, so buckets without submissions are left out.
        "Trend": [[100 * value for value in spot.trend if value is not None] for spot in hotspots],
        "Change": [None if spot.trend_change is None else 100 * spot.trend_change for spot in hotspots],
        "First seen": [formatting.timestamp(spot.first_seen, view.zone) for spot in hotspots],
        "Last seen": [formatting.timestamp(spot.last_seen, view.zone) for spot in hotspots],
        "Example run": [run_url(spot.example_runs[0]) if spot.example_runs else None for spot in hotspots],
        "Suggestion": [causes.CAUSE_ADVICE[spot.cause] for spot in hotspots],
    })
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        column_config={
            "Share of replays": st.column_config.ProgressColumn(
                "Share of replays", format="%.1f%%", min_value=0, max_value=100,
                help="Filtered submissions with this difference, of all filtered submissions; the ranking."),
            "Of the action's": st.column_config.NumberColumn(
                "Of the action's", format="%.0f%%",
                help="Submissions with this difference, of the submissions with any divergence at this action."),
            "Trend": st.column_config.LineChartColumn(
                f"Trend (per {report.bucket})", y_min=0,
                help=f"Share of replays per {report.bucket} (UTC buckets), oldest to newest; "
                     f"a {report.bucket} without submissions is left out."),
            "Change": st.column_config.NumberColumn(
                "Change", format="%+.1f pp",
                help="Share in the later half of the period minus the earlier half, in percentage points."),
            "First seen": st.column_config.TextColumn(f"First seen ({zone})"),
            "Last seen": st.column_config.TextColumn(f"Last seen ({zone})"),
            "Example run": run_link_column("Example run", help="The newest run with this difference."),
            "Suggestion": st.column_config.TextColumn("Suggestion", width="large"),
        },
        key="causes_hotspots",
    )
    if report.total > len(hotspots):
        st.caption(f"The top {len(hotspots):,} of {report.total:,} hotspots are shown.")


def hotspot_detail(report: cause_queries.HotspotReport, view: View) -> None:
    """Show the newest occurrences of one hotspot, picked in a select box, with links to their runs."""
    hotspots = report.hotspots
    index = st.selectbox(
        "Examples of", range(len(hotspots)), format_func=lambda position: hotspot_name(hotspots[position]),
        key=HOTSPOT_KEY, help="The newest occurrences of this hotspot among the filtered submissions.",
    )
    if index is None or index >= len(hotspots):
        return
    spot = hotspots[index]
    try:
        examples = cached(cause_queries.hotspot_examples, view.ledger, view.filters, spot.action, spot.path,
                          spot.cause)
    except store.LedgerBusy:
        st.warning(BUSY.format(part="the examples"))
        return
    st.markdown(headline(spot))
    zone = formatting.zone_name(view.zone)
    st.dataframe(
        pd.DataFrame({
            "Run": [run_url(example.run_id) for example in examples],
            "Submitted": [formatting.timestamp(example.submitted_at, view.zone) for example in examples],
            "Deployment": [example.deployment for example in examples],
            "Divergence": [example.position + 1 for example in examples],
            "Index": [example.action_index for example in examples],
            "Expected": [formatting.MISSING if example.expected is None else example.expected for example in examples],
            "Actual": [formatting.MISSING if example.actual is None else example.actual for example in examples],
        }),
        hide_index=True,
        width="stretch",
        column_config={
            "Run": run_link_column("Run", help="Opens the run's page with this divergence side by side."),
            "Submitted": st.column_config.TextColumn(f"Submitted ({zone})"),
            "Divergence": st.column_config.NumberColumn("Divergence", help="Its place in the SDK's list, from 1."),
            "Index": st.column_config.NumberColumn("Index", help="The action's position in the recording, from 0."),
        },
        key="causes_examples",
    )


def main() -> None:
    view = page_view()
    st.title("Divergence causes")
    note = st.session_state.pop("causes_upgrade_note", None)
    if note:
        st.warning(note)
    try:
        overview = cached(cause_queries.cause_overview, view.ledger, view.filters)
    except store.LedgerMissing:
        st.info("The ledger holds no submissions yet. Load replay results with `replay-ledger ingest PATH`.")
        st.stop()
    except store.LedgerBusy:
        st.warning(BUSY.format(part="the causes"))
        st.stop()
    except cause_queries.CausesUnavailable:
        st.info("This ledger was written by an older release and has no divergence causes yet. Upgrading it "
                "classifies every stored divergence once.")
        st.button("Upgrade the ledger", key="causes_upgrade", on_click=upgrade_ledger, args=(view.ledger,))
        st.stop()

    plural = "submission matches" if overview.submissions == 1 else "submissions match"
    st.caption(f"**{formatting.count(overview.submissions)}** {plural} the filters · {view.range_label}")
    if overview.submissions == 0:
        st.info("No submissions match these filters. Widen the time range, or clear the deployment and status "
                "filters in the sidebar.", icon=":material/filter_alt_off:")
        st.stop()
    overview_tiles(overview)
    if not overview.causes:
        st.info("No divergence among these submissions has a classified difference.")
        st.stop()

    try:
        report = cached(cause_queries.hotspots, view.ledger, view.filters)
    except store.LedgerBusy:
        report = None
        st.warning(BUSY.format(part="the hotspots"))
    if report is not None and report.hotspots:
        for spot in report.hotspots[:HEADLINES]:
            st.markdown("- " + headline(spot))

    st.subheader("Causes")
    cause_table(overview)

    st.subheader("By deployment")
    try:
        deployment_section(cached(cause_queries.causes_by_deployment, view.ledger, view.filters), overview)
    except store.LedgerBusy:
        st.warning(BUSY.format(part="the causes per deployment"))

    if report is None:
        return
    st.subheader("Hotspots")
    st.caption("Action, input path and cause, ranked by the share of the filtered replays they affect.")
    hotspot_table(report, view)
    hotspot_detail(report, view)


main()
