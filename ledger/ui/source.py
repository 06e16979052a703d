"""The ledger the app shows: the configured path, filled with the bundled sample data when there is nothing yet."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import duckdb
import streamlit as st

from ledger import store
from ledger.deploy_log import DeployLogError, read_deploy_log
from ledger.queries import hub
from ledger.readers import SourceError
from ledger.sample import sample_folder
from ledger.ui.cache import cached, clear
from ledger.ui.text import code_span

log = logging.getLogger(__name__)

PATH_LIMIT = 400
# One build at a time in this process; two sessions opening a fresh app must not both ingest.
_build_lock = threading.Lock()


class SampleBuildFailed(Exception):
    """The sample ledger could not be written to the configured path."""


def build_sample(ledger: Path) -> bool:
    """Fill a missing or fresh ledger with the bundled sample data and its deploy log; return True if it did.

    Raises SampleBuildFailed with the reason when the ledger cannot be written.
    """
    from ledger.ingest import ingest_paths

    with _build_lock:
        if ledger.exists() and not hub.overview(ledger).is_fresh:
            return False
        try:
            folder = sample_folder()
            log.info("building a sample ledger at %s from %s", ledger, folder)
            ingest_paths(ledger, [str(folder)], origin=hub.DEMO_ORIGIN)
            store.add_deploys(ledger, read_deploy_log(folder / "deploys.csv"), origin="file")
        except (OSError, duckdb.Error, store.LedgerBusy, store.LedgerTooNew, SourceError, DeployLogError) as error:
            log.warning("building the sample ledger at %s failed: %s", ledger, error)
            raise SampleBuildFailed(str(error)) from error
        finally:
            clear()
    return True


def app_ledger() -> tuple[Path, hub.LedgerOverview]:
    """Return the ledger from $REPLAY_LEDGER_DB or ./replay-ledger.duckdb and its overview.

    A missing or fresh ledger is filled with the bundled sample data first.
    Shows an error and stops the run when the ledger cannot be opened or written.
    """
    ledger = store.ledger_path()
    try:
        summary = cached(hub.overview, ledger) if ledger.exists() else None
        if summary is None or summary.is_fresh:
            with st.spinner("Building a sample ledger from the bundled sample data…"):
                build_sample(ledger)
            summary = cached(hub.overview, ledger)
    except SampleBuildFailed as error:
        st.error(
            f"No ledger at {code_span(ledger, PATH_LIMIT)} yet, and the sample data could not be written there: "
            f"{code_span(error, 200)}. Set the environment variable `{store.LEDGER_ENV}` to a writable "
            "file path and restart the app."
        )
        st.stop()
    except store.LedgerBusy:
        st.warning("The ledger is busy with another writer; reload the page in a moment.")
        st.stop()
    except (store.LedgerUnreadable, duckdb.Error) as error:
        reason = error.reason if isinstance(error, store.LedgerUnreadable) else error
        st.error(
            f"The file {code_span(ledger, PATH_LIMIT)} could not be opened as a ledger: {code_span(reason, 200)}. "
            f"Point `{store.LEDGER_ENV}` at a replay-ledger file, or move this file away to start with sample data."
        )
        st.stop()
    return ledger, summary


def sample_banner(ledger: Path, summary: hub.LedgerOverview) -> None:
    """Tell the user when the ledger contains the bundled sample data, and how to load their own."""
    own_ledger = "my-ledger.duckdb"
    if summary.is_sample_only:
        st.info(
            "**Sample data.** This ledger holds only the bundled sample replays (90 days, three deployments). "
            f"To see your own, ingest them into a ledger of your own with `replay-ledger ingest PATH --db {own_ledger}` "
            f"and start the app on it with `{store.LEDGER_ENV}={own_ledger} streamlit run app.py`.",
            icon=":material/science:",
        )
    elif summary.mixes_sample:
        st.caption(
            f"The ledger {code_span(ledger, PATH_LIMIT)} holds the bundled sample data next to your own ingests."
        )
