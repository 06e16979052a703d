"""Drawing one chart of a page, with a warning in its place when the chart would carry too many points."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from ledger import charts


def altair_chart(builder: Callable[..., Any], *args: Any, what: str) -> None:
    """Draw the Altair chart `builder(*args)` returns, or warn that the `what` chart is unavailable.

    The rest of the page still renders when a chart raises `charts.TooManyPoints`.
    """
    try:
        st.altair_chart(builder(*args), width="stretch")
    except charts.TooManyPoints as error:
        st.warning(f"The {what} chart is unavailable: {error}.")
