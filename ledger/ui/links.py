"""Links between the app's pages, built so that any characters in a run id stay data.

A link to a run is always the Run page's own relative address. The run id is
percent-encoded as one query value (`urllib.parse.quote` with no safe
characters), so an id like ``javascript:alert(1)`` or ``a&b=c#d`` can neither
choose the scheme nor add parameters.
"""

from __future__ import annotations

from urllib.parse import quote

import streamlit as st

RUN_PAGE_URL_PATH = "run"
RUN_ID_PARAM = "run_id"
# Streamlit shows the capture group, percent-decoded, as the link text.
_RUN_ID_DISPLAY = RUN_ID_PARAM + r"=([^&#]*)$"


def run_url(run_id: str) -> str:
    """Return the relative URL of the Run page for `run_id`: ``./run?run_id=<percent-encoded id>``."""
    return f"./{RUN_PAGE_URL_PATH}?{RUN_ID_PARAM}={quote(run_id, safe='')}"


def run_link_column(label: str = "Run ID", **options) -> st.column_config.LinkColumn:
    """Return a dataframe column config that shows a `run_url` value as its run id and opens the Run page."""
    return st.column_config.LinkColumn(label, display_text=_RUN_ID_DISPLAY, **options)
