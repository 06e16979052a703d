"""The deploy marker form: adds one marker to the ledger from any page that shows it (Deployments, Ingest).

The marker is validated by `ledger.models.DeployMarker`, as for ``replay-ledger
deploys add``, and stored with origin ``app``. The date and time are read in
the viewer's zone (the one the sidebar shows times in) and stored in UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timezone, tzinfo
from pathlib import Path

import streamlit as st
from pydantic import ValidationError

from ledger import formatting, store
from ledger.models import DeployMarker, FieldError
from ledger.ui.cache import clear
from ledger.ui.text import code_span

APP_ORIGIN = "app"


def _first_error(error: ValidationError) -> str:
    detail = error.errors(include_url=False)[0]
    cause = (detail.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return str(cause)
    field = ".".join(str(part) for part in detail["loc"])
    return f"{field}: {detail['msg']}"


def build_marker(deployment: str | None, version: str, day: date | None, clock: time | None, note: str,
                 zone: tzinfo) -> DeployMarker:
    """Return a validated marker from the form's values; raise ValueError with a sentence for the user."""
    if not deployment or not deployment.strip():
        raise ValueError("Pick or type the deployment that was deployed.")
    if day is None or clock is None:
        raise ValueError("Give the date and time of the deploy.")
    when = datetime.combine(day, clock, tzinfo=zone)
    try:
        return DeployMarker(deployment=deployment, version=version, deployed_at=when.astimezone(timezone.utc),
                            note=note)
    except ValidationError as error:
        raise ValueError(f"The marker is invalid: {_first_error(error)}.") from None


def deploy_marker_form(
    ledger: Path, deployments: Sequence[str], zone: tzinfo, key: str = "deploy_form"
) -> DeployMarker | None:
    """Render the form and, on submit, store the marker; return it when it was stored, else None.

    `key` prefixes the widget keys, so two pages (or two forms on one page)
    do not share state. Messages about the result are shown below the form.
    """
    zone_text = formatting.zone_name(zone)
    with st.form(key, clear_on_submit=False, border=True):
        st.markdown("**Add a deploy marker**")
        first, second = st.columns(2)
        deployment = first.selectbox(
            "Deployment", list(deployments), index=None, accept_new_options=True, key=f"{key}_deployment",
            placeholder="Pick or type a deployment",
        )
        version = second.text_input("Version", key=f"{key}_version", placeholder="e.g. 2.3.0")
        day_column, time_column = st.columns(2)
        now = datetime.now(zone)
        day = day_column.date_input("Date", value=now.date(), key=f"{key}_date", format="YYYY-MM-DD")
        clock = time_column.time_input(
            f"Time ({zone_text})", value=now.time().replace(second=0, microsecond=0), step=60, key=f"{key}_time",
        )
        note = st.text_input("Note", key=f"{key}_note", placeholder="Shown in chart tooltips")
        submitted = st.form_submit_button("Add marker", icon=":material/add:")
    if not submitted:
        return None
    try:
        marker = build_marker(deployment, version, day, clock, note, zone)
    except ValueError as error:
        st.error(str(error))
        return None
    try:
        added, _ = store.add_deploys(ledger, [marker.model_dump()], origin=APP_ORIGIN)
    except store.LedgerBusy:
        st.error("The ledger is busy with another writer, so the marker was not stored; submit again in a moment.")
        return None
    clear()
    when = formatting.timestamp(marker.deployed_at, zone)
    if added:
        st.success(f"Deploy marker {code_span(marker.deployment)} {code_span(marker.version)} at {when} "
                   f"{zone_text} added.")
    else:
        st.info(f"Deploy marker {code_span(marker.deployment)} {code_span(marker.version)} at {when} "
                f"{zone_text} was already in the ledger.")
    return marker
