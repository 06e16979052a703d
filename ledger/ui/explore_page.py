"""The Explore page: matching submissions with chosen columns, sorted, paged and downloadable, and a read-only SQL box.

pages/explore.py only calls `render()`. Keeping the code in a module means
Python compiles it once per process, while Streamlit's AppTest recompiles a
page script on every rerun.

URL parameters of the Submissions tab (all optional): ``run`` (run id contains),
``min_div`` (divergences at least), ``min_saved`` (USD saved at least),
``cause`` (repeated), ``col`` (repeated column keys), and the table's
``sort``, ``order``, ``rows`` and ``page``. ``explore_tab`` names the open tab.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import streamlit as st

from ledger import downloads
from ledger import export, formatting, store
from ledger.queries import explore, sandbox
from ledger.queries.hub import PAGE_SIZES
from ledger.ui import View, cached, cached_result, code_span, page_view, run_link_column, status_column
from ledger.ui import params
from ledger.ui.explore_tables import result_frame, table_frame
from ledger.ui.paging import TableControls, TableState

log = logging.getLogger(__name__)

GROUP = "explore_filters"
PARAM_RUN, PARAM_MIN_DIV, PARAM_MIN_SAVED, PARAM_CAUSE, PARAM_COLUMN = "run", "min_div", "min_saved", "cause", "col"
KEY_RUN, KEY_MIN_DIV, KEY_MIN_SAVED = "explore_run", "explore_min_div", "explore_min_saved"
KEY_CAUSES, KEY_COLUMNS = "explore_causes", "explore_columns"
KEY_EXPORT, KEY_SQL, KEY_SQL_RESULT, KEY_EXAMPLE = "explore_export", "explore_sql", "explore_sql_result", "explore_example"
TAB_TABLE, TAB_SQL = "Submissions", "SQL"

FORMAT_LABELS = {"csv": "CSV", "parquet": "Parquet", "jsonl": "JSON Lines"}
TABLE_ROWS_VISIBLE = 20
ROW_HEIGHT = 35
HEADER_HEIGHT = 38
BUSY = "The ledger is busy with another writer, so {part} could not be read; try again in a moment."


# ---------------------------------------------------------------------------
# Filters of the Submissions tab


def _load_from_url(raw: dict[str, list[str]], columns: list[str]) -> params.ParsedParams:
    parsed = params.ParsedParams()
    state = st.session_state
    state[KEY_RUN] = (raw.get(PARAM_RUN) or [""])[-1][: explore.RUN_ID_CONTAINS_MAX]
    min_div = (raw.get(PARAM_MIN_DIV) or [""])[-1]
    if min_div and not (min_div.isascii() and min_div.isdigit()):
        parsed.notes.append(f"The link's divergences-at-least value {code_span(min_div)} is not a whole number, "
                            "so it is ignored.")
        min_div = ""
    state[KEY_MIN_DIV] = int(min_div) if min_div else None
    state[KEY_MIN_SAVED] = (raw.get(PARAM_MIN_SAVED) or [""])[-1][:40]
    state[KEY_CAUSES] = list(dict.fromkeys(raw.get(PARAM_CAUSE, [])))
    chosen = parsed.subset(raw.get(PARAM_COLUMN, []), columns, "column")
    state[KEY_COLUMNS] = chosen or list(explore.DEFAULT_COLUMNS)
    return parsed


def filter_widgets(view: View, causes: tuple[str, ...] | None) -> tuple[explore.ExploreFilters | None, tuple[str, ...],
                                                                         list[str]]:
    """Render the Explore filters and the column chooser; return (filters or None when invalid, columns, notes)."""
    notes, _ = params.sync_group(GROUP, (PARAM_RUN, PARAM_MIN_DIV, PARAM_MIN_SAVED, PARAM_CAUSE, PARAM_COLUMN),
                                 lambda raw: _load_from_url(raw, list(explore.COLUMNS)))
    run_column, divergence_column, saved_column, cause_column = st.columns(4)
    run_text = run_column.text_input(
        "Run ID contains", key=KEY_RUN, max_chars=explore.RUN_ID_CONTAINS_MAX, placeholder="any run",
        help="Case-insensitive; the text is matched literally, so % and _ are ordinary characters.")
    min_divergences = divergence_column.number_input(
        "Divergences at least", min_value=0, step=1, value=None, key=KEY_MIN_DIV, placeholder="any number")
    saved_text = saved_column.text_input(
        "Saved at least (USD)", key=KEY_MIN_SAVED, placeholder="any amount", max_chars=40,
        help="US dollars, up to six decimals, such as 0.05 or 1,200.")
    requested_causes = st.session_state.get(KEY_CAUSES, [])
    unknown_causes = [cause for cause in requested_causes if causes is None or cause not in causes]
    for cause in unknown_causes:
        notes.append(f"The link's cause {code_span(cause)} is not in this ledger's divergence causes, "
                     "so it is ignored.")
    if causes is None:
        cause_column.caption(
            "Cause filter unavailable: this ledger has no divergence causes table. It is added, and causes are "
            "computed for stored divergences, the next time this release writes to the ledger (any ingest).")
        chosen_causes: list[str] = []
        st.session_state[KEY_CAUSES] = []
    else:
        st.session_state[KEY_CAUSES] = [cause for cause in requested_causes if cause in causes]
        chosen_causes = cause_column.multiselect(
            "Divergence cause", list(causes), key=KEY_CAUSES, format_func=_cause_label, placeholder="any cause",
            help="Submissions with at least one divergence of any chosen cause.")
    chosen_columns = st.multiselect(
        "Columns", list(explore.COLUMNS), key=KEY_COLUMNS, format_func=lambda key: explore.COLUMNS[key].label,
        help="Which columns the table shows. Downloads carry full records unless you choose otherwise.")
    params.write_group(GROUP, {
        PARAM_RUN: [run_text] if run_text else [],
        PARAM_MIN_DIV: [] if min_divergences is None else [str(int(min_divergences))],
        PARAM_MIN_SAVED: [saved_text] if saved_text.strip() else [],
        PARAM_CAUSE: list(chosen_causes),
        PARAM_COLUMN: [] if list(chosen_columns) == list(explore.DEFAULT_COLUMNS) else list(chosen_columns),
    })
    try:
        filters = explore.ExploreFilters(
            base=view.filters,
            run_id_contains=run_text.strip(),
            min_divergences=None if min_divergences is None else int(min_divergences),
            min_savings=explore.parse_savings(saved_text),
            causes=tuple(chosen_causes),
        )
    except explore.InvalidFilter as error:
        st.error(_message(error), icon=":material/error:")
        filters = None
    return filters, tuple(chosen_columns), notes


def _message(error: Exception) -> str:
    """Return an error message that quotes a typed value, as a code span so Markdown in it stays literal."""
    return code_span(error, 300)


def _cause_label(cause: str) -> str:
    try:
        from ledger.causes import CAUSE_LABELS
    except ImportError:
        return cause
    return CAUSE_LABELS.get(cause, cause)


# ---------------------------------------------------------------------------
# The table


def column_config(page: explore.ExplorePage, view: View) -> dict:
    zone = formatting.zone_name(view.zone)
    config: dict = {}
    for key in page.columns:
        column = explore.COLUMNS[key]
        if key == "run_id":
            config[column.label] = run_link_column(column.label, help="Opens the run's page.", width="medium")
        elif key == "status":
            config[column.label] = status_column(column.label, width="medium")
        elif column.kind == "count":
            config[column.label] = st.column_config.NumberColumn(column.label, format="%,d")
        elif column.kind == "time":
            config[column.label] = st.column_config.TextColumn(f"{column.label} ({zone})")
        elif column.kind == "money":
            config[column.label] = st.column_config.TextColumn(
                f"{column.label} (USD)", help="Exactly as stored, to the micro-dollar.", alignment="right")
        else:
            config[column.label] = st.column_config.TextColumn(column.label)
    return config


def summary_line(page: explore.ExplorePage, view: View, read_at: datetime | None) -> None:
    summary = page.summary
    noun = "submission matches" if summary.submissions == 1 else "submissions match"
    parts = [
        f"**{formatting.count(summary.submissions)}** {noun}",
        f"{formatting.count(summary.actions_replayed)} actions replayed",
        f"{formatting.count(summary.divergences)} divergences",
        f"{formatting.exact_money(summary.cost_saved)} saved",
        view.range_label,
    ]
    if read_at is not None:
        parts.append(f"data as of {formatting.timestamp(read_at, view.zone)} {formatting.zone_name(view.zone)}")
    st.caption(" · ".join(parts))


def browse(view: View) -> None:
    try:
        causes = cached(explore.cause_options, view.ledger)
    except store.LedgerMissing:
        st.info(f"The ledger {code_span(view.ledger)} does not exist yet. Ingest files on the Ingest page first.")
        return
    except store.LedgerBusy:
        st.warning(BUSY.format(part="the ledger"))
        return

    filters, columns, notes = filter_widgets(view, causes)
    for note in notes:
        st.warning(note, icon=":material/info:")
    if filters is None:
        return
    if not columns:
        st.info("Choose at least one column to show.", icon=":material/view_column:")
        return

    controls = TableControls("explore", {key: column.label for key, column in explore.COLUMNS.items()},
                             explore.DEFAULT_SORT, explore.DEFAULT_DIRECTION, PAGE_SIZES, explore.DEFAULT_PAGE_SIZE)
    requested, table_notes = controls.state((filters, columns))
    for note in table_notes:
        st.warning(note, icon=":material/info:")
    try:
        result = cached_result(explore.explore_page, view.ledger, filters, columns, requested.sort,
                               requested.direction, requested.page, requested.page_size)
    except store.LedgerBusy:
        st.warning(BUSY.format(part="the table"))
        return
    except explore.CausesUnavailable as error:
        st.warning(code_span(error, 300))
        return

    page = result.value
    summary_line(page, view, result.read_at)
    if page.total == 0:
        st.info("No submissions match these filters. Clear some of them, here or in the sidebar.",
                icon=":material/filter_alt_off:")
        return

    controls.render(TableState(page.sort, page.direction, page.page_size, page.page), page.total)
    frame = table_frame(page, view.zone)
    st.dataframe(
        frame, hide_index=True, width="stretch", row_height=ROW_HEIGHT,
        height=HEADER_HEIGHT + ROW_HEIGHT * max(1, min(len(frame), TABLE_ROWS_VISIBLE)),
        column_config=column_config(page, view), key="explore_table",
    )
    st.caption("Sort by orders every matching submission in the ledger; clicking a column header only "
               "reorders the rows on this page.")
    download_section(view, filters, columns, page.total)


# ---------------------------------------------------------------------------
# Downloads


def prepare_export(view: View, filters: explore.ExploreFilters, columns: tuple[str, ...] | None,
                   file_format: str, gzip: bool) -> None:
    """Write the download to a private temporary file with DuckDB's COPY and remember it in the session."""
    previous = st.session_state.pop(KEY_EXPORT, None)
    # After a failed export the session holds only its error, and no folder.
    if previous and "folder" in previous:
        downloads.remove_export(previous["folder"])
    downloads.remove_old_exports()
    try:
        prepared = downloads.prepare_explore_export(view.ledger, filters, columns, file_format, gzip)
    except (export.ExportError, store.LedgerBusy, explore.InvalidFilter, explore.InvalidColumn) as error:
        st.session_state[KEY_EXPORT] = {"error": str(error)}
        log.warning("explore export failed: %s", error)
        return
    st.session_state[KEY_EXPORT] = {
        "folder": str(prepared.folder), "path": str(prepared.path), "rows": prepared.rows, "size": prepared.size,
        "format": file_format, "gzip": gzip, "file_name": prepared.file_name,
        "seconds": prepared.seconds, "scope": (filters, columns, file_format, gzip),
    }


def download_section(view: View, filters: explore.ExploreFilters, columns: tuple[str, ...], total: int) -> None:
    st.subheader("Download")
    file_format, gzip, chosen = download_options(columns)
    st.button(
        f"Prepare a file of all {formatting.count(total)} matching submissions", icon=":material/file_export:",
        key="explore_prepare", on_click=prepare_export, args=(view, filters, chosen, file_format, gzip),
        help="Writes every matching submission to a file on the server in one pass, oldest first.")

    prepared = st.session_state.get(KEY_EXPORT)
    if not prepared:
        return
    if "error" in prepared:
        st.error(f"The export failed: {code_span(prepared['error'], 300)}")
        return
    if prepared["scope"] != (filters, chosen, file_format, gzip):
        st.caption("The filters or options changed since the file was prepared; prepare it again to match them.")
        return
    prepared_download(prepared)


def download_options(columns: tuple[str, ...]) -> tuple[str, bool, tuple[str, ...] | None]:
    """Render the format, gzip and contents choices; return (format, gzip, columns or None for full records)."""
    format_column, gzip_column, contents_column = st.columns([3, 1, 3], vertical_alignment="bottom")
    file_format = format_column.segmented_control(
        "Format", list(FORMAT_LABELS), format_func=FORMAT_LABELS.__getitem__, default="csv",
        key="explore_format", required=True)
    gzip = gzip_column.toggle("gzip", key="explore_gzip", disabled=file_format == "parquet",
                              help="Compress CSV and JSON Lines with gzip. Parquet is always compressed.")
    contents = contents_column.segmented_control(
        "Contents", ["full", "columns"], default="full", key="explore_contents", required=True,
        format_func={"full": "Full records", "columns": "Chosen columns"}.__getitem__,
        help="Full records carry every stored field and each submission's divergences; chosen columns are the "
             "table's columns.")
    chosen = columns if contents == "columns" else None
    return file_format, bool(gzip) and file_format != "parquet", chosen


def prepared_download(prepared: dict) -> None:
    """Offer the prepared file, unless it is larger than the app serves."""
    size, limit = prepared["size"], downloads.max_download_bytes()
    described = (f"{formatting.count(prepared['rows'])} rows, {formatting.file_size(size)}, "
                 f"written in {prepared['seconds']:.1f} s")
    if size > limit:
        st.warning(
            f"The file has {described}: more than this app serves ({formatting.file_size(limit)}), because a "
            "download passes through the app's memory. Choose Parquet or gzip, narrow the filters, or write it on "
            "the command line with `replay-ledger export`.", icon=":material/warning:")
        return
    st.download_button(
        f"Download {FORMAT_LABELS[prepared['format']]}{' (gzip)' if prepared['gzip'] else ''}",
        data=downloads.file_reader(prepared["path"]), file_name=prepared["file_name"],
        mime=downloads.FORMAT_MIME[prepared["format"]],
        icon=":material/download:", key="explore_download", type="primary", on_click="ignore")
    st.caption(f"Prepared: {described}. Times are UTC, money is exact to the micro-dollar.")


# ---------------------------------------------------------------------------
# The SQL box


def _use_example() -> None:
    title = st.session_state.get(KEY_EXAMPLE)
    if title in sandbox.EXAMPLES:
        st.session_state[KEY_SQL] = sandbox.EXAMPLES[title]


def run_sql(ledger: Path) -> None:
    sql = st.session_state.get(KEY_SQL, "")
    try:
        result = sandbox.run_query(ledger, sql)
    except sandbox.SandboxError as error:
        st.session_state[KEY_SQL_RESULT] = {"sql": sql, "error": str(error), "kind": type(error).__name__}
        return
    except store.LedgerBusy:
        st.session_state[KEY_SQL_RESULT] = {"sql": sql, "error": BUSY.format(part="the ledger"), "kind": "busy"}
        return
    except store.LedgerMissing as error:
        st.session_state[KEY_SQL_RESULT] = {"sql": sql, "error": str(error), "kind": "missing"}
        return
    st.session_state[KEY_SQL_RESULT] = {"sql": sql, "result": result}


def sql_box(view: View) -> None:
    st.caption(
        f"Read-only SQL over the ledger's tables (submissions, divergences, divergence_causes, deploys, ingest_log, "
        f"rejected). One query at a time; it cannot write, read other files or reach the network, stops after "
        f"{sandbox.DEFAULT_TIMEOUT_SECONDS:g} s, and shows at most {formatting.count(sandbox.DEFAULT_ROW_CAP)} rows. "
        f"Date functions work in UTC; times in the result are shown in {formatting.zone_name(view.zone)}.")
    st.selectbox("Example queries", list(sandbox.EXAMPLES), index=None, key=KEY_EXAMPLE, on_change=_use_example,
                 placeholder="Pick an example to load it into the box")
    with st.form("explore_sql_form", border=False):
        st.text_area("SQL", key=KEY_SQL, height=200, placeholder="SELECT deployment, count(*) FROM submissions "
                                                                  "GROUP BY deployment")
        st.form_submit_button("Run query", type="primary", icon=":material/play_arrow:",
                              on_click=run_sql, args=(view.ledger,))
    outcome = st.session_state.get(KEY_SQL_RESULT)
    if not outcome:
        return
    if "error" in outcome:
        headline = {"QueryRejected": "Not allowed", "QueryTimedOut": "Stopped", "QueryFailed": "The query failed"}
        st.error(f"{headline.get(outcome['kind'], 'The query could not run')}: {code_span(outcome['error'], 400)}",
                 icon=":material/block:")
        return
    result: sandbox.QueryResult = outcome["result"]
    row_count = len(result.rows)
    if result.truncated:
        st.warning(f"Showing the first {formatting.count(row_count)} rows; the query returned more. Add a LIMIT or "
                   "aggregate to see the rest.", icon=":material/content_cut:")
    st.caption(f"{formatting.plural(row_count, 'row')} in {result.seconds * 1000:,.0f} ms")
    if result.columns:
        st.dataframe(result_frame(result, view.zone), hide_index=True, width="stretch", key="explore_sql_table")


# ---------------------------------------------------------------------------


def render() -> None:
    """Render the Explore page for the current view: the Submissions tab or the SQL tab, whichever is open."""
    view = page_view()
    st.title("Explore")
    table_tab, sql_tab = st.tabs([TAB_TABLE, TAB_SQL], key="explore_tab", bind="query-params")
    if table_tab.open:
        with table_tab:
            browse(view)
    if sql_tab.open:
        with sql_tab:
            sql_box(view)
