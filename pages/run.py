"""Run: one run's tiles and its submissions newest first, each with its divergences, their causes, and
expected next to actual with the differing parts marked.

The run comes from ``?run_id=`` in the URL. Without one, or for a run id the
ledger does not hold, the page shows a search over run ids. Every value from
data is shown as text: in tables, in code spans inside messages, or
HTML-escaped inside the side-by-side comparison.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ledger import causes, formatting, jsondiff, platform, store
from ledger.analysis import MISSING
from ledger.queries import runs
from ledger.ui import RUN_ID_PARAM, View, cached, code_span, page_view, run_link_column, run_url, status_text

SEARCH_KEY = "run_search"
SEARCH_FOR_KEY = "run_search_for"
DIFF_PANELS = 20
PREVIEW_CHARS = 80
BUSY = "The ledger is busy with another writer, so this run could not be read; reload the page in a moment."


def search_box(view: View, prefill: str = "") -> None:
    """Show a search over run ids and its results as links to their Run pages."""
    if st.session_state.get(SEARCH_FOR_KEY) != prefill:
        st.session_state[SEARCH_FOR_KEY] = prefill
        st.session_state[SEARCH_KEY] = prefill
    text = st.text_input(
        "Search run ids", key=SEARCH_KEY, placeholder="all or part of a run id",
        help="Finds run ids that contain the text, ignoring case: exact matches first, then prefixes.",
    )
    if not text.strip():
        return
    try:
        found = cached(runs.search_runs, view.ledger, text)
    except runs.InvalidSearch as error:
        st.warning(f"The search did not run: {error}.")
        return
    except store.LedgerMissing:
        st.info("The ledger holds no submissions yet, so there are no runs to search.")
        return
    except store.LedgerBusy:
        st.warning("The ledger is busy with another writer; search again in a moment.")
        return
    if not found.matches:
        st.info(f"No run id contains {code_span(found.text)}.")
        return
    st.dataframe(
        pd.DataFrame({
            "Run ID": [run_url(match.run_id) for match in found.matches],
            "Match": [match.match for match in found.matches],
            "Submissions": [match.submissions for match in found.matches],
            "Deployments": [", ".join(match.deployments) for match in found.matches],
        }),
        hide_index=True,
        width="stretch",
        column_config={"Run ID": run_link_column("Run ID", help="Opens the run's page.")},
        key="run_search_results",
    )
    if found.more:
        st.caption(f"Showing the first {len(found.matches)} runs; type more of the run id to narrow the search.")


def platform_link(run_id: str) -> None:
    """Show a button to the run's page on the agent platform when $REPLAY_LEDGER_PLATFORM_URL is set."""
    try:
        template = platform.platform_template()
    except platform.InvalidPlatformUrl as error:
        st.caption(f"No link to the platform: {code_span(error, 300)}")
        return
    if template is not None:
        st.link_button("Open on the platform", platform.run_page_url(template, run_id), icon=":material/open_in_new:")


def tiles(detail: runs.RunDetail, view: View) -> None:
    numbers = detail.tiles
    zone = formatting.zone_name(view.zone)
    columns = st.columns(4)
    deployments = ", ".join(code_span(name, 40) for name in numbers.deployments)
    columns[0].metric(
        "Submissions", formatting.count(numbers.submissions), border=True,
        help=f"First {formatting.timestamp(numbers.first_submitted, view.zone)}, last "
             f"{formatting.timestamp(numbers.last_submitted, view.zone)} ({zone}). Deployments: {deployments}.",
    )
    columns[1].metric(
        "Actions Replayed", formatting.replay_progress(numbers.actions_replayed, numbers.actions_total), border=True,
        help="Actions answered from the recording, of the actions recorded, over all submissions of the run.",
    )
    columns[2].metric(
        "Divergences", formatting.count(numbers.divergences), border=True,
        help=f"{formatting.count(numbers.submissions_with_divergence)} of {formatting.count(numbers.submissions)} "
             "submissions had at least one divergence.",
    )
    columns[3].metric(
        "Cost Saved", formatting.money(numbers.cost_saved), border=True,
        help=f"USD the run's replays did not spend on live calls: exactly {numbers.cost_saved.normalize():f}.",
    )
    failures = []
    if numbers.strict_aborts:
        failures.append(f"{formatting.count(numbers.strict_aborts)} aborted at a divergence (strict mode)")
    if numbers.exception_failures:
        failures.append(f"{formatting.count(numbers.exception_failures)} failed by an exception")
    if failures:
        st.caption("Failed replays: " + "; ".join(failures) + ".")


def cause_rows(submission: runs.RunSubmission) -> pd.DataFrame:
    """Return the table rows of a submission: one per differing leaf, or one per divergence without a stored cause."""
    rows = []
    for divergence in submission.divergences:
        base = {
            "#": divergence.position + 1,
            "Index": divergence.action_index,
            "Type": divergence.type,
            "Action": divergence.action or formatting.MISSING,
        }
        if not divergence.causes:
            rows.append({**base, "Cause": formatting.MISSING, "Path": formatting.MISSING,
                         "Expected": _preview(divergence.expected), "Actual": _preview(divergence.actual),
                         "Suggestion": ""})
            continue
        for cause in divergence.causes:
            rows.append({
                **base,
                "Cause": causes.label(cause.cause),
                "Path": _path_text(cause.path, cause.cause),
                "Expected": formatting.MISSING if cause.expected is None else cause.expected,
                "Actual": formatting.MISSING if cause.actual is None else cause.actual,
                "Suggestion": causes.CAUSE_ADVICE.get(cause.cause, ""),
            })
    return pd.DataFrame(rows, columns=["#", "Index", "Type", "Action", "Cause", "Path", "Expected", "Actual",
                                       "Suggestion"])


def _preview(value) -> str:
    return "(absent)" if value is MISSING else formatting.preview(value, PREVIEW_CHARS)


def _path_text(path: str, cause: str) -> str:
    if cause == "control_flow":
        return "(action called)"
    return causes.path_label(path)


def divergence_table(submission: runs.RunSubmission, key: str) -> None:
    st.dataframe(
        cause_rows(submission),
        hide_index=True,
        width="stretch",
        column_config={
            "#": st.column_config.NumberColumn("#", help="The divergence's place in the SDK's list, from 1.", format="%d"),
            "Index": st.column_config.NumberColumn(
                "Index", help="The action's position in the recording, from 0, as the SDK reports it.", format="%d"),
            "Cause": st.column_config.TextColumn("Cause", help="What most likely made this value differ."),
            "Path": st.column_config.TextColumn("Path", help="Where in the inputs the value differs."),
            "Expected": st.column_config.TextColumn("Expected", help="The recorded value, as JSON."),
            "Actual": st.column_config.TextColumn("Actual", help="The value in the replay, as JSON."),
            "Suggestion": st.column_config.TextColumn("Suggestion", width="large"),
        },
        key=key,
    )


def divergence_panels(submission: runs.RunSubmission, expand: bool, key: str) -> None:
    """Show up to `DIFF_PANELS` divergences as expected next to actual, with the differing parts marked."""
    for divergence in submission.divergences[:DIFF_PANELS]:
        label = f"Divergence {divergence.position + 1} · {code_span(divergence.type, 40)}"
        if divergence.action_index is not None:
            label += f" · index {divergence.action_index}"
        if divergence.action is not None:
            label += f" · {code_span(divergence.action, 60)}"
        with st.expander(label, expanded=expand, key=f"{key}_{divergence.position}"):
            for cause in divergence.causes:
                st.markdown(
                    f"{code_span(_path_text(cause.path, cause.cause), 120)}: **{causes.label(cause.cause)}**. "
                    f"{causes.CAUSE_ADVICE.get(cause.cause, '').capitalize()}."
                )
            titles = ("Expected action", "Actual action") if divergence.type == "action_mismatch" else \
                ("Expected inputs", "Actual inputs")
            comparison = jsondiff.compare_divergence(divergence.type, divergence.expected, divergence.actual)
            st.html(jsondiff.to_html(comparison, *titles))
    hidden = len(submission.divergences) - DIFF_PANELS
    if hidden > 0:
        st.caption(f"The table lists all {len(submission.divergences):,} divergences; the first {DIFF_PANELS} "
                   f"are shown side by side above, {hidden:,} more are not.")


def outcome(submission: runs.RunSubmission) -> None:
    """Tell a strict-mode abort, with where it stopped, apart from a failure by an exception."""
    if submission.status != "failed":
        return
    replayed = formatting.count(submission.actions_replayed)
    total = formatting.count(submission.actions_total)
    if submission.strict_abort:
        stopped = submission.divergences[0] if submission.divergences else None
        where = ""
        if stopped is not None and stopped.type == "action_mismatch":
            where = (f" The recording expected {code_span(_name(stopped.expected), 60)} but the replay called "
                     f"{code_span(_name(stopped.actual), 60)}.")
        elif stopped is not None:
            where = f" It stopped at divergence 1, of type {code_span(stopped.type, 40)}."
        st.error(f"Aborted at action {replayed} of {total}: strict mode stopped the replay at its first "
                 f"divergence.{where}", icon=":material/block:")
    else:
        st.error(f"Failed by an exception after {replayed} of {total} actions were replayed.",
                 icon=":material/error:")


def _name(value) -> str:
    if value is MISSING or value is None:
        return "(none)"
    return value if isinstance(value, str) else formatting.preview(value, 60)


def submission_block(index: int, submission: runs.RunSubmission, view: View) -> None:
    zone = formatting.zone_name(view.zone)
    with st.container(border=True, key=f"run_submission_{index}"):
        sentence = status_text(submission.status, strict_abort=submission.strict_abort,
                               replayed=submission.actions_replayed, total=submission.actions_total)
        st.markdown(f"**{formatting.timestamp(submission.submitted_at, view.zone)}** {zone} · {sentence}")
        details = [
            f"deployment {code_span(submission.deployment, 60)}",
            f"replayed {formatting.replay_progress(submission.actions_replayed, submission.actions_total)}",
            f"{formatting.count(submission.divergences_detected)} divergence"
            f"{'s' if submission.divergences_detected != 1 else ''}",
            f"saved {formatting.money(submission.cost_savings)}",
            f"submission {code_span(submission.submission_id, 60)}",
        ]
        st.caption(" · ".join(details))
        outcome(submission)
        if not submission.divergences:
            return
        divergence_table(submission, key=f"run_divergences_{index}")
        if submission.divergences_not_shown:
            st.caption(f"{submission.divergences_not_shown:,} more divergences of this submission are stored "
                       "but not shown here.")
        divergence_panels(submission, expand=index == 0 and len(submission.divergences) <= 3,
                          key=f"run_diff_{index}")


def main() -> None:
    view = page_view()
    st.title("Run")
    run_id = st.query_params.get(RUN_ID_PARAM, "")
    if not run_id:
        st.info("Open a run from a table on another page, or search for one here.", icon=":material/search:")
        search_box(view)
        st.stop()
    st.text(run_id)
    try:
        detail = cached(runs.run_detail, view.ledger, run_id)
    except store.LedgerMissing:
        detail = None
    except store.LedgerBusy:
        st.warning(BUSY)
        st.stop()
    if detail is None or not detail.found:
        st.warning(f"No submissions of run {code_span(run_id)} are in the ledger. Check the id, or search "
                   "for part of it.", icon=":material/search_off:")
        search_box(view, prefill=run_id)
        st.stop()

    platform_link(run_id)
    tiles(detail, view)
    if not detail.causes_available:
        st.info("This ledger was written by an older release, so divergences have no causes yet. Any write "
                "upgrades it, for example `replay-ledger ingest` of new results.")
    listed = len(detail.submissions)
    if listed < detail.tiles.submissions:
        st.caption(f"Showing the newest {listed:,} of {detail.tiles.submissions:,} submissions.")
    for index, submission in enumerate(detail.submissions):
        submission_block(index, submission, view)


main()
