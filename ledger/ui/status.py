"""The status badge: one fixed set of tags and colors for replay outcomes, used by every table.

A failed replay is tagged by how it failed: a strict-mode replay that stopped
at its first divergence (`ledger.queries.hub.STRICT_ABORT_SQL`) apart from one
that failed by an exception. Only these four tags ever get a color.
"""

from __future__ import annotations

import streamlit as st

from ledger import formatting

# Tag -> (label, color): success green, partial amber, failed red.
STATUS_TAGS: dict[str, tuple[str, str]] = {
    "success": ("success", "#15803d"),
    "partial": ("partial", "#b45309"),
    "failed": ("failed · exception", "#b91c1c"),
    "aborted": ("failed · aborted by divergence", "#b91c1c"),
}
STATUS_HELP = (
    "success: replayed with no divergence. partial: replayed to the end with divergences. "
    "failed · aborted by divergence: a strict-mode replay that stopped at its first divergence, "
    "after the actions in Replayed / Total. failed · exception: the replay raised an error."
)


def status_tag(status: str, strict_abort: bool = False) -> str:
    """Return the tag of a submission's outcome: success, partial, failed or aborted."""
    if status == "failed" and strict_abort:
        return "aborted"
    return status


def status_column(label: str = "Status", **options) -> st.column_config.MultiselectColumn:
    """Return a dataframe column config that shows one-element lists of tags as colored badges."""
    return st.column_config.MultiselectColumn(
        label,
        options=list(STATUS_TAGS),
        color=[color for _, color in STATUS_TAGS.values()],
        format_func=lambda tag: STATUS_TAGS[tag][0] if tag in STATUS_TAGS else tag,
        help=options.pop("help", STATUS_HELP),
        **options,
    )


def status_text(status: str, *, strict_abort: bool = False, replayed: int = 0, total: int = 0) -> str:
    """Return a submission's outcome as a sentence, e.g. ``failed: aborted at action 4 of 12 by a divergence``."""
    if status != "failed":
        return status
    if strict_abort:
        return (f"failed: aborted at action {formatting.count(replayed)} of {formatting.count(total)} "
                "by a divergence")
    return "failed: exception"
