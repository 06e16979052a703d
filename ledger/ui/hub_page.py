"""The Replay Hub page: submissions matching the shared filters, four tiles with their change, a sorted table.

pages/replay_hub.py only calls `render()`. Keeping the code in a module means
Python compiles it once per process, while Streamlit's AppTest recompiles a
page script on every rerun.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow as pa
import streamlit as st

from ledger import formatting, store
from ledger.queries import hub
from ledger.ui import (
    View, cached_result, code_span, page_view, refresh, run_link_column, run_url, status_column, status_tag,
)
from ledger.ui.paging import TableControls, TableState

SORT_LABELS = {
    "submitted": "Submitted",
    "run_id": "Run ID",
    "status": "Status",
    "replayed": "Replayed / Total",
    "divergences": "Divergences",
    "saved": "Saved",
    "deployment": "Deployment",
}
TABLE_ROWS_VISIBLE = 20
ROW_HEIGHT = 35
HEADER_HEIGHT = 38
BUSY = "The ledger is busy with another writer, so {part} could not be read; press Refresh in a moment."


def on_refresh(ledger: Path) -> None:
    st.session_state["hub_refresh_note"] = refresh(ledger)


def header(view: View, total: int | None, read_at: datetime | None) -> None:
    title_column, button_column = st.columns([5, 1], vertical_alignment="bottom")
    title_column.title("Replay Hub")
    button_column.button(
        "Refresh", icon=":material/refresh:", key="hub_refresh", on_click=on_refresh, args=(view.ledger,),
        help="Merge records waiting in the ledger's inbox, drop cached results and read the ledger again.",
        width="stretch",
    )
    parts = []
    if total is not None:
        parts.append(f"**{formatting.count(total)}** submission{'s' if total != 1 else ''} match the filters")
    parts.append(view.range_label)
    if read_at is not None:
        parts.append(f"data as of {formatting.timestamp(read_at, view.zone)} {formatting.zone_name(view.zone)}")
    st.caption(" · ".join(parts))
    note = st.session_state.pop("hub_refresh_note", None)
    if note:
        st.warning(note)


def _delta(current, previous, *, money: bool = False) -> tuple[str | None, str]:
    """Return a tile's change against the previous period and whether to color it; no change is not colored."""
    if previous is None:
        return None, "off"
    if current == previous:
        return ("$0.00" if money else "0"), "off"
    if money:
        return formatting.money_delta(current - previous), "normal"
    change = formatting.count_delta(current - previous)
    relative = formatting.percent_change(current, previous)
    return (f"{change} ({relative})" if relative else change), "normal"


def tiles(result: hub.HubTiles) -> None:
    current, previous = result.current, result.previous
    compared = "vs previous period" if previous else None
    columns = st.columns(4)

    change, color = _delta(current.submissions, previous and previous.submissions)
    columns[0].metric(
        "Submissions", formatting.count(current.submissions), change, delta_color=color,
        delta_description=compared, border=True,
        help="Replay results submitted in the period. Filter by status failed to see which stopped at a "
             "divergence (strict mode) and which failed by an exception.",
    )

    change, color = _delta(current.actions_replayed, previous and previous.actions_replayed)
    share = current.actions_replayed / current.actions_total if current.actions_total else None
    columns[1].metric(
        "Actions Replayed", formatting.count(current.actions_replayed), change, delta_color=color,
        delta_description=compared, border=True,
        help=f"Actions replayed from the recording instead of calling the LLM or tool again: "
             f"{formatting.count(current.actions_replayed)} of {formatting.count(current.actions_total)} "
             f"recorded ({formatting.percent(share)}).",
    )

    # More divergences is the bad direction, so a rise shows red.
    change, color = _delta(current.divergences, previous and previous.divergences)
    per_hundred = 100 * current.divergences / current.actions_replayed if current.actions_replayed else None
    columns[2].metric(
        "Divergences", formatting.count(current.divergences), change,
        delta_color="inverse" if color == "normal" else "off", delta_description=compared, border=True,
        help=f"{formatting.percent(current.divergence_rate)} of submissions had at least one divergence; "
             f"{formatting.MISSING if per_hundred is None else f'{per_hundred:.2f}'} divergences per 100 "
             "replayed actions.",
    )

    change, color = _delta(current.cost_saved, previous and previous.cost_saved, money=True)
    columns[3].metric(
        "Cost Saved", formatting.money(current.cost_saved), change, delta_color=color,
        delta_description=compared, border=True,
        help=f"USD the replays did not spend on live LLM and tool calls, exactly "
             f"{current.cost_saved.normalize():f} in the ledger.",
    )
    if previous is None:
        st.caption("Pick a time range other than All time to compare each tile with the period just before it.")


def table_frame(page: hub.HubPage, view: View) -> pa.Table:
    """Build the table's cells as text, so every value from data is shown literally (an Arrow table converts fastest)."""
    rows = page.rows
    return pa.table({
        "Run ID": [run_url(row.run_id) for row in rows],
        "Status": pa.array([[status_tag(row.status, row.strict_abort)] for row in rows], pa.list_(pa.string())),
        "Replayed / Total": [formatting.replay_progress(row.actions_replayed, row.actions_total) for row in rows],
        "Divergences": pa.array([row.divergences_detected for row in rows], pa.int64()),
        "Saved": [formatting.money(row.cost_savings) for row in rows],
        "Submitted": [formatting.timestamp(row.submitted_at, view.zone) for row in rows],
        "Deployment": [row.deployment for row in rows],
    })


def table(page: hub.HubPage, view: View) -> None:
    frame = table_frame(page, view)
    zone = formatting.zone_name(view.zone)
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        height=HEADER_HEIGHT + ROW_HEIGHT * max(1, min(frame.num_rows, TABLE_ROWS_VISIBLE)),
        row_height=ROW_HEIGHT,
        column_config={
            "Run ID": run_link_column("Run ID", help="Opens the run's page in a new tab.", width="medium"),
            "Status": status_column("Status", width="medium"),
            "Replayed / Total": st.column_config.TextColumn(
                "Replayed / Total", help="Actions replayed of actions recorded."),
            "Divergences": st.column_config.NumberColumn("Divergences", format="%,d"),
            "Saved": st.column_config.TextColumn("Saved", help="USD, rounded to the cent."),
            "Submitted": st.column_config.TextColumn(f"Submitted ({zone})"),
            "Deployment": st.column_config.TextColumn("Deployment"),
        },
        key="hub_table",
    )
    st.caption(
        "Use Sort by above to order all matching submissions; clicking a column header "
        "only reorders the rows on this page."
    )


def render() -> None:
    """Render the Replay Hub for the current view."""
    view = page_view()
    overview = view.overview
    if overview is None or overview.submissions == 0:
        header(view, 0, None)
        st.info(
            f"The ledger {code_span(view.ledger, 400)} holds no submissions yet. Load replay results with "
            "`replay-ledger ingest PATH` (JSON, JSON Lines, export pages, gzip, or a folder of them), "
            "then press Refresh.",
            icon=":material/inbox:",
        )
        st.stop()

    controls = TableControls("hub", SORT_LABELS, hub.DEFAULT_SORT, hub.DEFAULT_DIRECTION,
                             hub.PAGE_SIZES, hub.DEFAULT_PAGE_SIZE)
    requested, notes = controls.state(view.filters)
    try:
        result = cached_result(hub.hub_view, view.ledger, view.filters, requested.sort,
                               requested.direction, requested.page, requested.page_size)
    except store.LedgerBusy:
        header(view, None, None)
        st.warning(BUSY.format(part="the tiles and the table"))
        st.stop()
    page = result.value.page
    header(view, page.total, result.read_at)
    tiles(result.value.tiles)
    for note in notes:
        st.warning(note, icon=":material/info:")
    if page.total == 0:
        st.info(
            "No submissions match these filters. Widen the time range, or clear the deployment and status "
            "filters in the sidebar.",
            icon=":material/filter_alt_off:",
        )
        return
    controls.render(TableState(page.sort, page.direction, page.page_size, page.page), page.total)
    table(page, view)
