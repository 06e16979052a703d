"""Deployments: one row per deployment with its outcomes, divergence rate, savings and freshness; deploy markers.

URL parameters, all optional, with defaults left out of the URL:

- ``sort``: a key of `deploys.SORT_COLUMNS`
- ``order``: ``asc`` or ``desc``
- ``stale_days``: warn when a deployment has sent nothing for longer

The shared filters add theirs.
Each row links to the Trends page filtered to that deployment.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pandas as pd
import streamlit as st

from ledger import formatting, regressions, store
from ledger import queries
from ledger.queries import deploys
from ledger.ui import View, cached, cached_result, code_span, page_view, params
from ledger.ui.cache import clear
from ledger.ui.deploy_form import deploy_marker_form
from ledger.ui.filters import KEY_UTC, PARAM_FROM, PARAM_RANGE, PARAM_TO, PARAM_ZONE, UTC_PARAM_VALUE

GROUP = "deployments"
PARAM_SORT, PARAM_ORDER, PARAM_STALE = "sort", "order", "stale_days"
KEY_SORT, KEY_ORDER, KEY_STALE = "deployments_sort", "deployments_order", "deployments_stale_days"
SORT_LABELS = {
    "submissions": "Submissions",
    "deployment": "Deployment",
    "divergence_rate": "Divergence rate",
    "savings": "Savings",
    "failed_share": "Failed share",
    "first_submission": "First submission",
    "last_submission": "Last submission",
}
ORDER_LABELS = {"desc": "Descending", "asc": "Ascending"}
DEFAULT_STALE_DAYS = 7
TRENDS_PATH = "trends"
BUSY = "The ledger is busy with another writer, so {part} could not be read; reload the page in a moment."


def _load(raw: dict[str, list[str]]) -> params.ParsedParams:
    parsed = params.ParsedParams()
    state = st.session_state
    state[KEY_SORT] = parsed.choice(list(SORT_LABELS), deploys.DEFAULT_SORT, raw.get(PARAM_SORT, []),
                                    "sort column")
    state[KEY_ORDER] = parsed.choice(list(ORDER_LABELS), deploys.DEFAULT_DIRECTION,
                                     raw.get(PARAM_ORDER, []), "sort order")
    stale_text = (raw.get(PARAM_STALE) or [str(DEFAULT_STALE_DAYS)])[-1]
    if stale_text.isascii() and stale_text.isdigit() and 1 <= int(stale_text) <= 3650:
        state[KEY_STALE] = int(stale_text)
    else:
        parsed.notes.append(f"The link's staleness period {code_span(stale_text)} is not a whole number of days "
                            f"from 1 to 3650, so {DEFAULT_STALE_DAYS} days are used.")
        state[KEY_STALE] = DEFAULT_STALE_DAYS
    return parsed


def controls() -> tuple[str, str, int, list[str]]:
    """Render sort and staleness controls, mirror them in the URL; return sort, order, stale days and notes."""
    notes, _ = params.sync_group(GROUP, (PARAM_SORT, PARAM_ORDER, PARAM_STALE), _load)
    changed = {"on_change": params.clear_notes, "args": (GROUP,)}
    sort_column, order_column, stale_column = st.columns([3, 2, 3], vertical_alignment="bottom")
    sort = sort_column.selectbox("Sort by", list(SORT_LABELS), format_func=SORT_LABELS.__getitem__, key=KEY_SORT,
                                 **changed)
    order = order_column.selectbox("Order", list(ORDER_LABELS), format_func=ORDER_LABELS.__getitem__,
                                   key=KEY_ORDER, **changed)
    stale_days = stale_column.number_input(
        "Warn after days without submissions", min_value=1, max_value=3650, step=1, key=KEY_STALE, **changed,
        help="A deployment whose newest submission is older than this gets a warning: its CI replay gate may "
             "have stopped reporting.",
    )
    params.write_group(GROUP, {
        PARAM_SORT: [] if sort == deploys.DEFAULT_SORT else [sort],
        PARAM_ORDER: [] if order == deploys.DEFAULT_DIRECTION else [order],
        PARAM_STALE: [] if stale_days == DEFAULT_STALE_DAYS else [str(stale_days)],
    })
    return sort, order, int(stale_days), notes


def trends_url(deployment: str, view: View, utc: bool) -> str:
    """Return the Trends page's relative URL filtered to `deployment`, keeping the view's time range and zone.

    The deployment comes first and percent-encoded as one value, so the link
    text pattern can show it and no character of it can add parameters.
    """
    parts = [f"deployment={quote(deployment, safe='')}"]
    if view.range_key != "all":
        parts.append(f"{PARAM_RANGE}={quote(view.range_key, safe='')}")
    if view.range_key == "custom" and view.filters.start is not None and view.filters.end is not None:
        first = view.filters.start.astimezone(view.zone).date()
        last = (view.filters.end.astimezone(view.zone) - timedelta(microseconds=1)).date()
        parts += [f"{PARAM_FROM}={first.isoformat()}", f"{PARAM_TO}={last.isoformat()}"]
    if utc:
        parts.append(f"{PARAM_ZONE}={UTC_PARAM_VALUE}")
    return f"./{TRENDS_PATH}?" + "&".join(parts)


def _age(since: datetime | None, now: datetime) -> str:
    if since is None:
        return "never"
    return regressions.describe_duration(now - since) + " ago"


def summary_table(rows: list[deploys.DeploymentSummary], view: View, now: datetime) -> None:
    zone = formatting.zone_name(view.zone)
    frame = pd.DataFrame({
        "Deployment": [trends_url(row.deployment, view, bool(st.session_state.get(KEY_UTC))) for row in rows],
        "Submissions": [row.submissions for row in rows],
        "Success": [formatting.percent(row.share(row.success)) for row in rows],
        "Partial": [formatting.percent(row.share(row.partial)) for row in rows],
        "Failed · aborted": [formatting.percent(row.share(row.aborted)) for row in rows],
        "Failed · exception": [formatting.percent(row.share(row.exception_failures)) for row in rows],
        "Divergence rate": [f"{formatting.percent(row.divergence_rate)} ({row.with_divergence:,})" for row in rows],
        "Savings": [formatting.money(row.savings) for row in rows],
        "First submission": [formatting.timestamp(row.first_submission, view.zone) for row in rows],
        "Last submission": [formatting.timestamp(row.last_submission, view.zone) for row in rows],
        "Last seen": [("⚠ " if row.stale else "") + _age(row.last_seen, now) for row in rows],
    })
    st.dataframe(frame, hide_index=True, width="stretch", key="deployments_table", column_config={
        "Deployment": st.column_config.LinkColumn(
            "Deployment", display_text=r"\?deployment=([^&#]*)", help="Opens the Trends page for this deployment."),
        "Submissions": st.column_config.NumberColumn("Submissions", format="%,d"),
        "Success": st.column_config.TextColumn("Success", help="Share of submissions replayed with no divergence."),
        "Partial": st.column_config.TextColumn("Partial", help="Share replayed to the end with divergences."),
        "Failed · aborted": st.column_config.TextColumn(
            "Failed · aborted", help="Share of strict-mode replays stopped at their first divergence."),
        "Failed · exception": st.column_config.TextColumn(
            "Failed · exception", help="Share of replays that failed by an exception."),
        "Divergence rate": st.column_config.TextColumn(
            "Divergence rate", help="Share of submissions with at least one divergence (how many)."),
        "Savings": st.column_config.TextColumn("Savings", help="Gross USD saved, to the cent."),
        "First submission": st.column_config.TextColumn(f"First submission ({zone})"),
        "Last submission": st.column_config.TextColumn(f"Last submission ({zone})"),
        "Last seen": st.column_config.TextColumn(
            "Last seen", help="Time since the deployment's newest submission in the whole ledger, whatever the "
                              "filters; ⚠ marks a deployment past the staleness period."),
    })


def stale_warning(rows: list[deploys.DeploymentSummary], stale_days: int, now: datetime, view: View) -> None:
    stale = [row for row in rows if row.stale]
    if not stale:
        return
    listed = ", ".join(
        f"{code_span(row.deployment)} (last {formatting.timestamp(row.last_seen, view.zone)}, {_age(row.last_seen, now)})"
        for row in stale[:10]
    )
    more = f" and {len(stale) - 10} more" if len(stale) > 10 else ""
    st.warning(
        f"{len(stale)} deployment{'s have' if len(stale) != 1 else ' has'} sent nothing for more than "
        f"{stale_days} day{'s' if stale_days != 1 else ''}: {listed}{more}. A CI replay gate that stopped "
        "reporting shows up here.",
        icon=":material/schedule:",
    )


def markers_section(view: View, deployments: list[str]) -> None:
    st.subheader("Deploy markers")
    st.caption(
        "Markers split a deployment's history for the regression check on the Trends page. Add them here, "
        "with `replay-ledger deploys add` or `deploys import`, or store the version changes found in the data."
    )
    deploy_marker_form(view.ledger, deployments, view.zone, key="deployments_form")
    try:
        stored = cached(deploys.markers, view.ledger, view.filters.deployments)
        changes = cached(deploys.version_changes, view.ledger, deploys.AUTO_FIELD, view.filters.deployments)
    except store.LedgerBusy:
        st.warning(BUSY.format(part="the deploy markers"))
        return
    unmarked = regressions.unmarked_changes(changes, stored)
    if unmarked:
        st.info(
            f"{len(unmarked)} version change{'s' if len(unmarked) != 1 else ''} in the data "
            f"({', '.join(deploys.VERSION_FIELDS[:3])}, …) {'have' if len(unmarked) != 1 else 'has'} no deploy "
            "marker yet: "
            + ", ".join(f"{code_span(change.deployment)} {code_span(change.version)}" for change in unmarked[:8])
            + (" and more" if len(unmarked) > 8 else "") + ".",
            icon=":material/auto_awesome:",
        )
        if st.button(f"Store {len(unmarked)} inferred marker{'s' if len(unmarked) != 1 else ''}",
                     key="deployments_infer", icon=":material/add_task:"):
            try:
                added, _ = store.add_deploys(view.ledger, regressions.inferred_markers(unmarked),
                                             origin=regressions.INFERRED_ORIGIN)
            except store.LedgerBusy:
                st.error("The ledger is busy with another writer, so the markers were not stored; try again.")
            else:
                clear()
                st.success(f"{added} inferred deploy marker{'s' if added != 1 else ''} stored.")
                st.rerun()
    if not stored:
        st.caption("No deploy markers yet.")
        return
    zone = formatting.zone_name(view.zone)
    newest_first = sorted(stored, key=lambda marker: marker.deployed_at, reverse=True)
    st.dataframe(pd.DataFrame({
        "Deployed at": [formatting.timestamp(marker.deployed_at, view.zone) for marker in newest_first],
        "Deployment": [marker.deployment for marker in newest_first],
        "Version": [marker.version for marker in newest_first],
        "Origin": [marker.origin for marker in newest_first],
        "Note": [marker.note for marker in newest_first],
    }), hide_index=True, width="stretch", key="deployments_markers", column_config={
        "Deployed at": st.column_config.TextColumn(f"Deployed at ({zone})"),
        "Origin": st.column_config.TextColumn(
            "Origin", help="cli, file or app: added by a person; inferred: from a version change in the data."),
    })


def main() -> None:
    view = page_view()
    st.title("Deployments")
    sort, order, stale_days, notes = controls()
    for note in notes:
        st.warning(note, icon=":material/info:")
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=1)
    try:
        result = cached_result(deploys.deployment_summaries, view.ledger, view.filters, now,
                               timedelta(days=stale_days), sort, order)
    except store.LedgerMissing:
        st.info("The ledger holds no submissions yet. Load replay results with `replay-ledger ingest PATH`.")
        st.stop()
    except store.LedgerBusy:
        st.warning(BUSY.format(part="the deployments"))
        st.stop()
    rows: list[deploys.DeploymentSummary] = result.value
    st.caption(
        f"{formatting.count(len(rows))} deployment{'s' if len(rows) != 1 else ''} · {view.range_label} · "
        f"data as of {formatting.timestamp(result.read_at, view.zone)} {formatting.zone_name(view.zone)} · "
        "shares count every status, whatever the status filter"
    )
    if rows:
        stale_warning(rows, stale_days, now, view)
        summary_table(rows, view, now)
    else:
        st.info("No submissions match these filters. Widen the time range, or clear the deployment filter in "
                "the sidebar.", icon=":material/filter_alt_off:")
    try:
        known = cached(queries.deployments, view.ledger)
    except store.LedgerBusy:
        known = [row.deployment for row in rows]
    markers_section(view, known)


main()
