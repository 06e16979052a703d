"""Explore: every submission matching the filters, with chosen columns, sorted and paged on the server, downloadable; and a read-only SQL box.

URL parameters of the Submissions tab (all optional): ``run`` (run id contains),
``min_div`` (divergences at least), ``min_saved`` (USD saved at least),
``cause`` (repeated), ``col`` (repeated column keys), and the table's
``sort``, ``order``, ``rows`` and ``page``. ``explore_tab`` names the open tab.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import streamlit as st

from ledger import export, formatting, store
from ledger.queries import explore, sandbox
from ledger.queries.hub import PAGE_SIZES
from ledger.ui import View, cached, cached_result, code_span, page_view, run_link_column, run_url, status_column, status_tag
from ledger.ui import params
from ledger.ui.paging import TableControls, TableState

log = logging.getLogger(__name__)

GROUP = "explore_filters"
PARAM_RUN, PARAM_MIN_DIV, PARAM_MIN_SAVED, PARAM_CAUSE, PARAM_COLUMN = "run", "min_div", "min_saved", "cause", "col"
KEY_RUN, KEY_MIN_DIV, KEY_MIN_SAVED = "explore_run", "explore_min_div", "explore_min_saved"
KEY_CAUSES, KEY_COLUMNS = "explore_causes", "explore_columns"
KEY_EXPORT, KEY_SQL, KEY_SQL_RESULT, KEY_EXAMPLE = "explore_export", "explore_sql", "explore_sql_result", "explore_example"
TAB_TABLE, TAB_SQL = "Submissions", "SQL"

MAX_DOWNLOAD_MB_ENV = "REPLAY_LEDGER_MAX_DOWNLOAD_MB"
DEFAULT_MAX_DOWNLOAD_MB = 500
EXPORT_DIR_PREFIX = "replay-ledger-export-"
EXPORT_MAX_AGE_SECONDS = 3600
FORMAT_LABELS = {"csv": "CSV", "parquet": "Parquet", "jsonl": "JSON Lines"}
FORMAT_SUFFIXES = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}
FORMAT_MIME = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet", "jsonl": "application/x-ndjson"}
TABLE_ROWS_VISIBLE = 20
ROW_HEIGHT = 35
HEADER_HEIGHT = 38
PREVIEW_CHARS = 80
# Integers past 2**53 lose digits as JavaScript numbers, so the SQL box shows them as text.
SAFE_INTEGER = 2**53
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


def money_places(amounts: list[Decimal | None]) -> int:
    """Return how many decimals show every amount exactly: at least two (cents), at most the ledger's six."""
    places = [-amount.normalize().as_tuple().exponent for amount in amounts if amount is not None and amount]
    return max([2, *places])


def exact_money(amount: Decimal | None, places: int | None = None) -> str:
    """Format US dollars exactly as stored: ``$0.09``, ``$0.004``, ``$1,234.50``.

    `places` pads to that many decimals, so a column of amounts lines up; it
    never cuts digits, because it is at least `money_places([amount])`.
    """
    if amount is None:
        return formatting.MISSING
    decimals = max(places or 0, money_places([amount]))
    return f"${amount.quantize(Decimal(1).scaleb(-decimals)):,f}"


def cell(value: Any, kind: str, zone) -> Any:
    """Return a value of an Explore column as the table shows it; text from data stays text."""
    if value is None:
        return None if kind in ("count", "flag") else formatting.MISSING
    if kind == "time":
        return formatting.timestamp(value, zone)
    if kind == "money":
        return exact_money(value)
    if kind == "share":
        return formatting.percent(value)
    if kind == "list":
        return ", ".join(str(item) for item in value)
    if kind == "json":
        return formatting.preview(orjson.loads(value) if isinstance(value, str) else value, PREVIEW_CHARS)
    if kind == "flag":
        return "yes" if value else "no"
    return value


def table_frame(page: explore.ExplorePage, view: View) -> pd.DataFrame:
    columns: dict[str, list] = {}
    for index, key in enumerate(page.columns):
        column = explore.COLUMNS[key]
        values = [row[index] for row in page.rows]
        if key == "run_id":
            columns[column.label] = [run_url(run_id) for run_id in values]
        elif key == "status":
            columns[column.label] = [[status_tag(status, aborted)] for status, aborted in zip(values, page.strict_aborts)]
        elif column.kind == "money":
            places = money_places(values)
            columns[column.label] = [exact_money(value, places) for value in values]
        else:
            columns[column.label] = [cell(value, column.kind, view.zone) for value in values]
    return pd.DataFrame(columns)


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
            config[column.label] = st.column_config.NumberColumn(column.label, format="%d")
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
        f"{exact_money(summary.cost_saved)} saved",
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
    frame = table_frame(page, view)
    st.dataframe(
        frame, hide_index=True, width="stretch", row_height=ROW_HEIGHT,
        height=HEADER_HEIGHT + ROW_HEIGHT * max(1, min(len(frame), TABLE_ROWS_VISIBLE)),
        column_config=column_config(page, view), key="explore_table",
    )
    st.caption("Sort by orders every matching submission in the ledger; clicking a column header only "
               "reorders the rows on this page.")
    downloads(view, filters, columns, page.total)


# ---------------------------------------------------------------------------
# Downloads


def max_download_bytes() -> int:
    """Return the largest file the page serves: $REPLAY_LEDGER_MAX_DOWNLOAD_MB megabytes, 500 by default."""
    raw = os.environ.get(MAX_DOWNLOAD_MB_ENV, "").strip()
    if raw.isascii() and raw.isdigit() and int(raw) >= 1:
        return int(raw) * 1_000_000
    if raw:
        log.warning("%s=%r is not a whole number of megabytes; using %d", MAX_DOWNLOAD_MB_ENV, raw[:20],
                    DEFAULT_MAX_DOWNLOAD_MB)
    return DEFAULT_MAX_DOWNLOAD_MB * 1_000_000


def _remove_old_exports() -> None:
    """Delete export folders of this app older than an hour, left behind by sessions that ended."""
    cutoff = time.time() - EXPORT_MAX_AGE_SECONDS
    for folder in Path(tempfile.gettempdir()).glob(EXPORT_DIR_PREFIX + "*"):
        try:
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


def prepare_export(view: View, filters: explore.ExploreFilters, columns: tuple[str, ...] | None,
                   file_format: str, gzip: bool) -> None:
    """Write the download to a private temporary file with DuckDB's COPY and remember it in the session."""
    previous = st.session_state.pop(KEY_EXPORT, None)
    if previous:
        shutil.rmtree(previous["folder"], ignore_errors=True)
    _remove_old_exports()
    folder = Path(tempfile.mkdtemp(prefix=EXPORT_DIR_PREFIX))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    suffix = FORMAT_SUFFIXES[file_format] + (".gz" if gzip and file_format != "parquet" else "")
    path = folder / f"export{suffix}"
    started = time.perf_counter()
    try:
        rows = export.export_explored(view.ledger, path, file_format, filters, columns=columns, gzip=gzip)
    except (export.ExportError, store.LedgerBusy, explore.InvalidFilter, explore.InvalidColumn) as error:
        shutil.rmtree(folder, ignore_errors=True)
        st.session_state[KEY_EXPORT] = {"error": str(error)}
        log.warning("explore export failed: %s", error)
        return
    st.session_state[KEY_EXPORT] = {
        "folder": str(folder), "path": str(path), "rows": rows, "size": path.stat().st_size,
        "format": file_format, "gzip": gzip, "file_name": f"replay-ledger-submissions-{stamp}{suffix}",
        "seconds": time.perf_counter() - started, "scope": (filters, columns, file_format, gzip),
    }


def _file_reader(path: str):
    """Return a callable that reads the prepared file when the user clicks Download, not before."""
    # NOTE: Streamlit 1.67 keeps every download's bytes in memory (MemoryMediaFileStorage) while it is
    # served, so the file passes through memory once; max_download_bytes() bounds that.
    def read() -> bytes:
        return Path(path).read_bytes()
    return read


def downloads(view: View, filters: explore.ExploreFilters, columns: tuple[str, ...], total: int) -> None:
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
    size, limit = prepared["size"], max_download_bytes()
    described = (f"{formatting.count(prepared['rows'])} rows, {_size_text(size)}, "
                 f"written in {prepared['seconds']:.1f} s")
    if size > limit:
        st.warning(
            f"The file has {described}: more than this app serves ({_size_text(limit)}), because a download "
            "passes through the app's memory. Choose Parquet or gzip, narrow the filters, or write it on the "
            "command line with `replay-ledger export`.", icon=":material/warning:")
        return
    st.download_button(
        f"Download {FORMAT_LABELS[prepared['format']]}{' (gzip)' if prepared['gzip'] else ''}",
        data=_file_reader(prepared["path"]), file_name=prepared["file_name"], mime=FORMAT_MIME[prepared["format"]],
        icon=":material/download:", key="explore_download", type="primary", on_click="ignore")
    st.caption(f"Prepared: {described}. Times are UTC, money is exact to the micro-dollar.")


def _size_text(size: int) -> str:
    if size < 1_000_000:
        return f"{size / 1000:,.1f} kB"
    return f"{size / 1_000_000:,.1f} MB"


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


def result_frame(result: sandbox.QueryResult, zone) -> pd.DataFrame:
    """Build a frame in which each column contains one kind of value: numbers, booleans or text."""
    names: list[str] = []
    for name in result.columns:
        unique, number = name, 2
        while unique in names:
            unique, number = f"{name} ({number})", number + 1
        names.append(unique)
    data = {}
    for index, name in enumerate(names):
        values = [row[index] for row in result.rows]
        data[name] = _column_values(values, zone)
    return pd.DataFrame(data, columns=names)


def _column_values(values: list[Any], zone) -> list[Any]:
    present = [value for value in values if value is not None]
    if all(isinstance(value, bool) for value in present):
        return values
    if all(isinstance(value, int) and not isinstance(value, bool) and abs(value) < SAFE_INTEGER
           for value in present):
        return values
    if all(isinstance(value, float) for value in present):
        return values
    return [None if value is None else _text(value, zone) for value in values]


def _text(value: Any, zone) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.isoformat(sep=" ")
        return f"{formatting.timestamp(value, zone)} {formatting.zone_name(zone)}"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return formatting.preview(bytes(value).hex(), PREVIEW_CHARS)
    if isinstance(value, (list, tuple, dict)):
        return formatting.preview(value, PREVIEW_CHARS * 2)
    return str(value)


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
    shown = len(result.rows)
    if result.truncated:
        st.warning(f"Showing the first {formatting.count(shown)} rows; the query returned more. Add a LIMIT or "
                   "aggregate to see the rest.", icon=":material/content_cut:")
    st.caption(f"{formatting.count(shown)} row{'s' if shown != 1 else ''} in {result.seconds * 1000:,.0f} ms")
    if result.columns:
        st.dataframe(result_frame(result, view.zone), hide_index=True, width="stretch", key="explore_sql_table")


# ---------------------------------------------------------------------------


def main() -> None:
    view = page_view()
    st.title("Explore")
    table_tab, sql_tab = st.tabs([TAB_TABLE, TAB_SQL], key="explore_tab", bind="query-params")
    if table_tab.open:
        with table_tab:
            browse(view)
    if sql_tab.open:
        with sql_tab:
            sql_box(view)


main()
