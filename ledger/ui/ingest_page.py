"""The Ingest page: uploads into the ledger, deploy markers, and past ingests with their rejected records.

pages/ingest.py only calls `render()`. Keeping the code in a module means
Python compiles it once per process, while Streamlit's AppTest recompiles a
page script on every rerun.

URL parameter: ``ingest_tab`` names the open tab; ``ingest`` picks an ingest in the History tab.
"""

from __future__ import annotations

import logging
import time

import duckdb
import pandas as pd
import streamlit as st

from ledger import downloads, formatting, store, uploads
from ledger.models import FieldError, parse_deployment
from ledger.queries import deploy_markers, deployments, ingests
from ledger.readers import SourceError
from ledger.ui import View, cached, code_span, page_view
from ledger.ui.deploy_form import deploy_marker_form
from ledger.ui.ingest_tables import files_frame, history_frame, ingest_label, report_headline, report_state

log = logging.getLogger(__name__)

TAB_UPLOAD, TAB_DEPLOYS, TAB_HISTORY = "Upload", "Deploy markers", "History"
FROM_RECORDS = "From each record"
KEY_REPORT = "ingest_report"
DEPLOY_FORM_KEY = "ingest_deploy"
PARAM_INGEST = "ingest"
REJECTIONS_SHOWN = 500
HISTORY_PAGE_SIZE = 25
MARKERS_SHOWN = 20
PROGRESS_INTERVAL_SECONDS = 0.25
BUSY = "The ledger is busy with another writer, so {part} could not be read; try again in a moment."


# ---------------------------------------------------------------------------
# Upload


def _deployment_choice(view: View) -> list[str]:
    try:
        return cached(deployments, view.ledger)
    except (store.LedgerMissing, store.LedgerBusy):
        return []


def upload_limit() -> int:
    """Return the size cap of one upload: ours, or Streamlit's own server.maxUploadSize when that is lower.

    Raises ValueError when $REPLAY_LEDGER_MAX_UPLOAD_MB is invalid.
    """
    server_limit = int(st.get_option("server.maxUploadSize")) * 1024 * 1024
    return min(uploads.max_upload_bytes(), server_limit)


def upload_tab(view: View) -> None:
    try:
        limit = upload_limit()
    except ValueError as error:
        st.error(f"Uploads are off until the setting is fixed: {code_span(error, 200)}. Restart the app after "
                 "changing it.", icon=":material/error:")
        return
    with st.form("ingest_upload_form", clear_on_submit=True):
        files = st.file_uploader(
            "Replay results", accept_multiple_files=True, key="ingest_files",
            help=f"JSON (one result, an array or an export page), JSON Lines, or either gzip-compressed, whatever "
                 f"the file is called. Up to {uploads.megabytes(limit)} a file.")
        pick_column, new_column, strict_column = st.columns([2, 2, 1], vertical_alignment="bottom")
        picked = pick_column.selectbox(
            "Deployment", [FROM_RECORDS, *_deployment_choice(view)], key="ingest_deployment",
            help="Store every record under this deployment, over any deployment field in the data. "
                 "With From each record, records without one are stored under 'unknown'.")
        typed = new_column.text_input(
            "…or a new deployment", key="ingest_new_deployment", max_chars=500, placeholder="e.g. team-a-prod",
            help="When filled in, this name is used instead of the list's choice.")
        strict = strict_column.toggle(
            "Strict", key="ingest_strict",
            help="Ingest nothing from a file that has any bad record; its rejections are still listed.")
        submitted = st.form_submit_button("Ingest", type="primary", icon=":material/upload:")
    if submitted:
        deployment = None if picked == FROM_RECORDS else picked
        if typed.strip():
            deployment = typed
        run_ingest(view, files or [], deployment, strict, limit)
    report = st.session_state.get(KEY_REPORT)
    if report:
        show_report(view, report)


def run_ingest(view: View, files: list, deployment: str | None, strict: bool, limit: int) -> None:
    if not files:
        st.warning("Choose one or more files first, then press Ingest.", icon=":material/upload_file:")
        return
    chosen = deployment
    if chosen is not None:
        try:
            chosen = parse_deployment("deployment", chosen)
        except FieldError as error:
            st.error(f"The deployment {code_span(chosen)} is invalid: {code_span(error.reason)}. "
                     "Type a shorter name without control characters, or pick one from the list.")
            return
    with st.status(f"Ingesting {len(files)} file{'s' if len(files) != 1 else ''}…", expanded=True) as status:
        counter = st.empty()
        last = [0.0]

        def progress(records: int) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_SECONDS:
                last[0] = now
                counter.text(f"{records:,} records validated")

        try:
            outcome = uploads.ingest_uploads(
                view.ledger, [(item.name, item) for item in files], deployment=chosen, strict=strict,
                progress=progress, max_bytes=limit)
        except store.LedgerTooNew as error:
            status.update(label="Ingest failed", state="error")
            st.error(code_span(error, 300))
            return
        except (SourceError, OSError, duckdb.Error) as error:
            log.warning("upload ingest into %s failed: %s", view.ledger, error)
            status.update(label="Ingest failed", state="error")
            st.error(f"The ingest failed and nothing was stored: {code_span(error, 300)}")
            return
        report = outcome.report
        counter.text(f"{report.read:,} records read")
        state = "error" if not report.files else "complete"
        status.update(label=report_headline(report), state=state, expanded=False)
    st.session_state[KEY_REPORT] = report_state(report, outcome.skipped, chosen, strict)


def show_report(view: View, report: dict) -> None:
    """Render the report of an upload ingest kept in the session: counts, files, warnings and rejected records."""
    st.subheader("Report" if report["ingest_id"] is None else f"Report of ingest #{report['ingest_id']}")
    deployment = "from each record" if report["deployment"] is None else code_span(report["deployment"])
    st.caption(f"Deployment: {deployment}. Strict: {'on' if report['strict'] else 'off'}. "
               f"Took {report['seconds']:.1f} s.")

    if report["queued"]:
        st.warning("The ledger was busy with another writer, so this batch waits in the ledger's inbox. It is "
                   "merged by the next write, or when you press Refresh on the Replay Hub.", icon=":material/inbox:")
    if report["skipped"]:
        st.error("Some files were not ingested:", icon=":material/block:")
        st.dataframe(pd.DataFrame(report["skipped"], columns=["File", "Reason"]), hide_index=True,
                     width="stretch", key="ingest_skipped")
    if not report["files"]:
        return

    read, ingested, duplicates, rejected = report["totals"]
    columns = st.columns(5)
    columns[0].metric("Files", formatting.count(len(report["files"])))
    columns[1].metric("Records read", formatting.count(read))
    columns[2].metric("Ingested", formatting.count(ingested))
    columns[3].metric("Duplicates", formatting.count(duplicates), help="Already in the ledger, or repeated.")
    columns[4].metric("Rejected", formatting.count(rejected))
    st.dataframe(files_frame(report["files"]), hide_index=True, width="stretch", key="ingest_report_files",
                 column_config=_text_columns("File", "Shape"))

    if report["warnings"]:
        with st.expander(formatting.plural(len(report["warnings"]), "warning")):
            st.dataframe(pd.DataFrame(report["warnings"], columns=["File", "Warning"]), hide_index=True,
                         width="stretch", key="ingest_report_warnings")

    if report["rejected_total"]:
        st.markdown(f"**Rejected records** ({formatting.count(report['rejected_total'])})")
        frame = pd.DataFrame([row[1:] for row in report["rejected"]],
                             columns=["Location", "Field", "Value", "Reason"])
        st.dataframe(frame, hide_index=True, width="stretch", key="ingest_report_rejected",
                     column_config=_text_columns("Location", "Field", "Value", "Reason"))
        if report["rejected_total"] > len(report["rejected"]):
            listed = formatting.count(len(report["rejected"]))
            st.caption(f"The first {listed} are shown and in the download; the History tab has all of them once "
                       "the inbox batch is merged." if report["queued"] else
                       f"The first {listed} are shown; the download has all.")
        rejections_download(view, report, "ingest_report_download")


def _text_columns(*labels: str) -> dict:
    return {label: st.column_config.TextColumn(label) for label in labels}


def rejections_download(view: View, report: dict, key: str) -> None:
    """Offer the report's rejections as CSV: from the ledger when merged, else from the session."""
    if report["ingest_id"] is not None:
        data = downloads.rejections_reader(view.ledger, report["ingest_id"])
    else:
        data = downloads.rejections_csv(report["rejected"])
    st.download_button("Download rejected records (CSV)", data=data, mime="text/csv", key=key,
                       file_name=f"rejected-{report['ingest_id'] or 'queued'}.csv", icon=":material/download:",
                       on_click="ignore")


# ---------------------------------------------------------------------------
# Deploy markers


def deploys_tab(view: View) -> None:
    st.caption("A deploy marker is the line the Trends and Deployments pages compare divergence rates around.")
    deploy_marker_form(view.ledger, _deployment_choice(view), view.zone, key=DEPLOY_FORM_KEY)
    recent_markers(view)


def recent_markers(view: View) -> None:
    try:
        markers = cached(deploy_markers, view.ledger)
    except store.LedgerMissing:
        return
    except store.LedgerBusy:
        st.warning(BUSY.format(part="the deploy markers"))
        return
    if not markers:
        st.caption("No deploy markers yet.")
        return
    latest = markers[-MARKERS_SHOWN:][::-1]
    st.markdown(f"**Latest deploy markers** ({formatting.count(len(markers))} in all)")
    zone = formatting.zone_name(view.zone)
    st.dataframe(pd.DataFrame({
        f"Deployed ({zone})": [formatting.timestamp(m["deployed_at"], view.zone) for m in latest],
        "Deployment": [m["deployment"] for m in latest],
        "Version": [m["version"] for m in latest],
        "Note": [m["note"] for m in latest],
        "Added by": [m["origin"] for m in latest],
    }), hide_index=True, width="stretch", key="ingest_markers",
        column_config=_text_columns("Deployment", "Version", "Note", "Added by"))


# ---------------------------------------------------------------------------
# History


def history_tab(view: View) -> None:
    try:
        first_page = cached(ingests.ingest_history, view.ledger, 1, 0)
    except store.LedgerMissing:
        st.info("No ingests yet.")
        return
    except store.LedgerBusy:
        st.warning(BUSY.format(part="the ingest history"))
        return
    total = first_page.total
    if not total:
        st.info("No ingests yet.")
        return
    pages = max(1, -(-total // HISTORY_PAGE_SIZE))
    page_column, caption_column = st.columns([1, 4], vertical_alignment="bottom")
    page = page_column.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, step=1,
                                    key="ingest_history_page")
    history = cached(ingests.ingest_history, view.ledger, HISTORY_PAGE_SIZE, (int(page) - 1) * HISTORY_PAGE_SIZE)
    caption_column.caption(f"{formatting.plural(total, 'ingest')}, newest first.")
    st.dataframe(history_frame(history.entries, view.zone), hide_index=True, width="stretch", key="ingest_history",
                 column_config=_text_columns("Origin", "Sources"))
    all_rejected = cached(ingests.rejections, view.ledger, None, 1, 0).total
    if all_rejected:
        st.download_button(
            f"Download all {formatting.count(all_rejected)} rejected records (CSV)",
            data=downloads.rejections_reader(view.ledger, None), file_name="rejected-all.csv", mime="text/csv",
            key="ingest_all_rejected_download", icon=":material/download:", on_click="ignore")
    ingest_details(view, [entry.ingest_id for entry in history.entries], {e.ingest_id: e for e in history.entries})


def ingest_details(view: View, ids: list[int], entries: dict[int, ingests.IngestEntry]) -> None:
    picked = pick_ingest(view, ids, entries)
    if picked is None:
        return
    detail = cached(ingests.ingest_detail, view.ledger, picked)
    if detail is None:
        st.warning(f"No ingest #{picked} is in this ledger.")
        return

    entry = detail.entry
    columns = st.columns(4)
    columns[0].metric("Records read", formatting.count(entry.records_read))
    columns[1].metric("Ingested", formatting.count(entry.ingested))
    columns[2].metric("Duplicates", formatting.count(entry.duplicates))
    columns[3].metric("Rejected", formatting.count(entry.rejected))

    detail_files(detail)
    if detail.skipped:
        st.dataframe(pd.DataFrame({"Skipped": list(detail.skipped)}), hide_index=True, width="stretch",
                     key="ingest_detail_skipped")
    if entry.rejected:
        detail_rejections(view, picked)


def pick_ingest(view: View, ids: list[int], entries: dict[int, ingests.IngestEntry]) -> int | None:
    """Render the ingest picker, preset from ``?ingest=`` in the URL, and mirror the choice into the URL."""
    requested = st.query_params.get(PARAM_INGEST, "")
    from_url = int(requested) if requested.isascii() and requested.isdigit() else None
    if from_url is not None and from_url not in ids:
        ids = [from_url, *ids]
    if "ingest_pick" in st.session_state and st.session_state["ingest_pick"] not in ids:
        del st.session_state["ingest_pick"]
    if from_url is not None and "ingest_pick" not in st.session_state:
        st.session_state["ingest_pick"] = from_url

    picked = st.selectbox(
        "Show the report of ingest", ids, index=None, key="ingest_pick", placeholder="Pick an ingest",
        format_func=lambda ingest_id: ingest_label(ingest_id, entries.get(ingest_id), view.zone))
    if picked is None:
        if PARAM_INGEST in st.query_params:
            del st.query_params[PARAM_INGEST]
        return None
    st.query_params[PARAM_INGEST] = str(picked)
    return int(picked)


def detail_files(detail: ingests.IngestDetail) -> None:
    if not detail.files:
        if detail.entry.origin == "receiver":
            st.caption("Posts taken by the receiver, counted together; they have no per-file report.")
        return
    files = [
        {"name": item.name, "shape": item.shape, "compressed": item.compressed, "read": item.read,
         "rejected": item.rejected, "dropped": item.dropped_by_strict}
        for item in detail.files
    ]
    st.dataframe(files_frame(files).drop(columns=["Ingested", "Duplicates"]), hide_index=True, width="stretch",
                 key="ingest_detail_files", column_config=_text_columns("File", "Shape"))
    warnings = [(item.name, warning) for item in detail.files for warning in item.warnings]
    if warnings:
        with st.expander(formatting.plural(len(warnings), "warning")):
            st.dataframe(pd.DataFrame(warnings, columns=["File", "Warning"]), hide_index=True, width="stretch",
                         key="ingest_detail_warnings")


def detail_rejections(view: View, ingest_id: int) -> None:
    rejected = cached(ingests.rejections, view.ledger, ingest_id, REJECTIONS_SHOWN, 0)
    st.markdown(f"**Rejected records** ({formatting.count(rejected.total)})")
    frame = pd.DataFrame([row[1:] for row in rejected.rows], columns=["Location", "Field", "Value", "Reason", "Record"])
    st.dataframe(frame, hide_index=True, width="stretch", key="ingest_detail_rejected",
                 column_config=_text_columns("Location", "Field", "Value", "Reason", "Record"))
    if rejected.total > len(rejected.rows):
        st.caption(f"The first {formatting.count(len(rejected.rows))} are shown; the download has all.")
    st.download_button(
        "Download these rejected records (CSV)", data=downloads.rejections_reader(view.ledger, ingest_id),
        file_name=f"rejected-{ingest_id}.csv", mime="text/csv", key="ingest_detail_download",
        icon=":material/download:", on_click="ignore")


# ---------------------------------------------------------------------------


def render() -> None:
    """Render the Ingest page for the current view: the Upload, Deploy markers or History tab, whichever is open."""
    view = page_view()
    st.title("Ingest")
    upload, deploys, history = st.tabs([TAB_UPLOAD, TAB_DEPLOYS, TAB_HISTORY], key="ingest_tab",
                                       bind="query-params")
    if upload.open:
        with upload:
            upload_tab(view)
    if deploys.open:
        with deploys:
            deploys_tab(view)
    if history.open:
        with history:
            history_tab(view)
