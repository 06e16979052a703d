"""Page state mirrored in the URL's query parameters, so a copied link opens the same view.

Each page keeps a group of widget values in `st.session_state` and mirrors
them into `st.query_params`. The URL is read into the widgets on the first run
of a session, and again whenever it carries values of the group that differ
from what the page last wrote (an in-app link with parameters). A URL with
none of the group's parameters leaves the widgets alone, because Streamlit
drops query parameters when the user switches pages. Invalid values fall back
to the default and add a note that the page shows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from ledger.ui.text import code_span


@dataclass
class ParsedParams:
    """Values read from the URL for a group of widgets, and notes on values that were invalid."""

    values: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def choice(self, allowed: Sequence[str], default: str, raw: list[str], description: str) -> str:
        """Take the last value of `raw` when it is in `allowed`, else `default` with a note naming `description`."""
        if not raw:
            return default
        value = raw[-1]
        if value in allowed:
            return value
        self.notes.append(
            f"The link's {description} {code_span(value)} is not one of {', '.join(allowed)}, "
            f"so the default {code_span(default)} is shown."
        )
        return default

    def subset(self, raw: list[str], allowed: Sequence[str], description: str) -> list[str]:
        """Keep the values of `raw` that are in `allowed`, in order and once each, with a note per other value."""
        kept: list[str] = []
        for value in raw:
            if value in allowed:
                if value not in kept:
                    kept.append(value)
            else:
                self.notes.append(f"The link's {description} {code_span(value)} is unknown here and is ignored.")
        return kept


def read_group(names: Sequence[str]) -> dict[str, list[str]]:
    """Return the group's parameters present in the URL, each as its list of values."""
    return {name: st.query_params.get_all(name) for name in names if name in st.query_params}


def sync_group(
    group: str,
    names: Sequence[str],
    load: Callable[[dict[str, list[str]]], ParsedParams],
) -> tuple[list[str], bool]:
    """Load the group's widget state from the URL when it should (see the module docstring).

    `load` parses the raw values and writes them into `st.session_state`.
    Returns the notes on invalid values, which stay until a widget of the
    group changes (`clear_notes`), and whether this run loaded the URL.
    """
    written_key = f"{group}_written"
    notes_key = f"{group}_notes"
    raw = read_group(names)
    first_run = written_key not in st.session_state
    loaded = first_run or bool(raw and raw != st.session_state[written_key])
    if loaded:
        st.session_state[notes_key] = load(raw).notes
    return list(st.session_state.get(notes_key, [])), loaded


def clear_notes(group: str) -> None:
    """Drop the group's notes about the URL; the `on_change` of each widget in the group calls this."""
    st.session_state[f"{group}_notes"] = []


def write_group(group: str, values: dict[str, list[str]]) -> None:
    """Mirror the group's values into the URL: set the non-empty ones, remove the rest.

    Values equal to the default should be passed as an empty list, so that a
    plain link stays plain.
    """
    written_key = f"{group}_written"
    present = {name: value for name, value in values.items() if value}
    for name, value in values.items():
        current = st.query_params.get_all(name) if name in st.query_params else []
        if value == current:
            continue
        if value:
            st.query_params[name] = value if len(value) > 1 else value[0]
        else:
            del st.query_params[name]
    st.session_state[written_key] = present
