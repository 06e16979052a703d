"""Streamlit entry point: page setup, navigation, the ledger, the shared sidebar filters.

Run with `streamlit run app.py`. The ledger is $REPLAY_LEDGER_DB or
./replay-ledger.duckdb; a missing or fresh one is filled with the bundled
sample data. A page listed in `ledger.ui.navigation.PAGES` appears once its
file exists.
"""

from pathlib import Path

import streamlit as st

from ledger.ui.filters import serving, sidebar_filters
from ledger.ui.navigation import DEFAULT_PAGE, existing_pages
from ledger.ui.source import app_ledger, sample_banner

ROOT = Path(__file__).resolve().parent


def main() -> None:
    st.set_page_config(page_title="replay-ledger", page_icon=":material/replay:", layout="wide")
    sections = {
        section: [
            st.Page(entry.file, title=entry.title, icon=entry.icon, url_path=entry.url_path,
                    default=entry.file == DEFAULT_PAGE)
            for entry in entries
        ]
        for section, entries in existing_pages(ROOT).items()
    }
    page = st.navigation(sections)
    ledger, overview = app_ledger()
    view = sidebar_filters(ledger, overview)
    sample_banner(ledger, overview)
    with serving(view):
        page.run()


main()
