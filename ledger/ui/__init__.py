"""Streamlit helpers the app's pages share; core modules never import this package.

To add a page, create its file under pages/; app.py lists it once the file exists.
Start it with `view = page_view()`, which returns the ledger path, the shared
filters and the viewer's time zone. Read data with
`cached(queries.some_query, view.ledger, view.filters)`. Show values from data only
as text: tables through st.dataframe, run links through `run_url` or
`run_link_column`, and data inside Markdown messages through `code_span`.
"""

from ledger.ui.cache import cached, cached_result, refresh
from ledger.ui.filters import View, page_view
from ledger.ui.links import RUN_ID_PARAM, RUN_PAGE_URL_PATH, run_link_column, run_url
from ledger.ui.status import status_column, status_tag, status_text
from ledger.ui.text import code_span

__all__ = [
    "RUN_ID_PARAM",
    "RUN_PAGE_URL_PATH",
    "View",
    "cached",
    "cached_result",
    "code_span",
    "page_view",
    "refresh",
    "run_link_column",
    "run_url",
    "status_column",
    "status_tag",
    "status_text",
]
