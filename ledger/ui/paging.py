"""Sort and paging controls of a server-side table, mirrored in the URL.

The page reads the state with `TableControls.state()`, runs its query with
it, then renders the widgets with `TableControls.render(total)` now that the
number of pages is known. URL parameters: ``sort``, ``order`` (``asc`` or
``desc``), ``rows`` (page size) and ``page``; defaults are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import streamlit as st

from ledger.ui import params
from ledger.ui.text import code_span

PARAM_SORT, PARAM_ORDER, PARAM_ROWS, PARAM_PAGE = "sort", "order", "rows", "page"
DIRECTION_LABELS = {"desc": "Descending", "asc": "Ascending"}


@dataclass(frozen=True)
class TableState:
    """The sort column, direction, page size and 1-based page a table is shown with."""

    sort: str
    direction: str
    page_size: int
    page: int


class TableControls:
    """Sort and paging widgets for one table, keyed by `prefix` in session state."""

    def __init__(self, prefix: str, columns: dict[str, str], default_sort: str, default_direction: str,
                 page_sizes: Sequence[int], default_page_size: int):
        self.prefix = prefix
        self.columns = columns
        self.default = TableState(default_sort, default_direction, default_page_size, 1)
        self.page_sizes = list(page_sizes)
        self.keys = {name: f"{prefix}_{name}" for name in ("sort", "direction", "page_size", "page", "scope")}

    def _load(self, raw: dict[str, list[str]]) -> params.ParsedParams:
        parsed = params.ParsedParams()
        state = st.session_state
        state[self.keys["sort"]] = parsed.choice(
            list(self.columns), self.default.sort, raw.get(PARAM_SORT, []), "sort column")
        state[self.keys["direction"]] = parsed.choice(
            list(DIRECTION_LABELS), self.default.direction, raw.get(PARAM_ORDER, []), "sort order")
        sizes = [str(size) for size in self.page_sizes]
        state[self.keys["page_size"]] = int(parsed.choice(
            sizes, str(self.default.page_size), raw.get(PARAM_ROWS, []), "rows per page"))
        page_text = (raw.get(PARAM_PAGE) or ["1"])[-1]
        if page_text.isascii() and page_text.isdigit() and int(page_text) >= 1:
            state[self.keys["page"]] = int(page_text)
        else:
            parsed.notes.append(f"The link's page {code_span(page_text)} is not a page number, so page 1 is shown.")
            state[self.keys["page"]] = 1
        return parsed

    def state(self, scope: object) -> tuple[TableState, list[str]]:
        """Return the state to query with, and notes on invalid URL values.

        `scope` is anything that selects the table's rows (the filters): when it
        or the ordering changes, the table goes back to page 1, unless the page
        came from the URL in this run.
        """
        notes, loaded = params.sync_group(
            self.prefix, (PARAM_SORT, PARAM_ORDER, PARAM_ROWS, PARAM_PAGE), self._load)
        state = st.session_state
        for name, value in (("sort", self.default.sort), ("direction", self.default.direction),
                            ("page_size", self.default.page_size), ("page", 1)):
            state.setdefault(self.keys[name], value)
        ordering = (state[self.keys["sort"]], state[self.keys["direction"]], state[self.keys["page_size"]])
        previous = state.get(self.keys["scope"])
        if previous is not None and previous != (scope, ordering) and not loaded:
            state[self.keys["page"]] = 1
        state[self.keys["scope"]] = (scope, ordering)
        return TableState(*ordering, int(state[self.keys["page"]])), notes

    def render(self, served: TableState, total: int) -> None:
        """Render the controls for a table of `total` rows showing the page `served`, and mirror them in the URL."""
        state = st.session_state
        pages = max(1, -(-total // served.page_size))
        # The query may have served the last page in place of one past the end.
        state[self.keys["page"]] = min(max(served.page, 1), pages)
        sort_column, order_column, size_column, page_column, position_column = st.columns(
            [3, 2, 2, 2, 3], vertical_alignment="bottom")
        clears_notes = {"on_change": params.clear_notes, "args": (self.prefix,)}
        sort = sort_column.selectbox(
            "Sort by", list(self.columns), format_func=self.columns.__getitem__, key=self.keys["sort"], **clears_notes,
            help="Sorts every matching submission in the ledger, not only the rows on this page.",
        )
        direction = order_column.selectbox(
            "Order", list(DIRECTION_LABELS), format_func=DIRECTION_LABELS.__getitem__, key=self.keys["direction"],
            **clears_notes)
        page_size = size_column.selectbox("Rows per page", self.page_sizes, key=self.keys["page_size"],
                                          **clears_notes)
        page = page_column.number_input("Page", min_value=1, max_value=pages, step=1, key=self.keys["page"],
                                        **clears_notes)
        first = (served.page - 1) * served.page_size + 1
        last = min(served.page * served.page_size, total)
        position_column.caption(
            f"Rows {first:,}–{last:,} of {total:,}, page {served.page:,} of {pages:,}" if total else "No rows")
        params.write_group(self.prefix, {
            PARAM_SORT: [] if sort == self.default.sort else [sort],
            PARAM_ORDER: [] if direction == self.default.direction else [direction],
            PARAM_ROWS: [] if page_size == self.default.page_size else [str(page_size)],
            PARAM_PAGE: [] if page == 1 else [str(page)],
        })
