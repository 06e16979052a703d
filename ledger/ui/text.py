"""Values from data inside Streamlit messages.

Streamlit renders the text of `st.info`, `st.warning`, `st.caption` and
`st.markdown` as Markdown, where a run id such as ``[x](javascript:…)`` would
become a link and ``$…$`` a formula. A value from data or from the URL goes
into such a message only through `code_span`, which CommonMark renders
literally, so nothing in it is parsed.
"""

from __future__ import annotations

import re

VALUE_LIMIT = 80
_BACKTICKS = re.compile(r"`+")


def code_span(value: object, limit: int = VALUE_LIMIT) -> str:
    """Return `value` as a Markdown code span that shows it literally, cut to `limit` characters.

    The fence is one backtick longer than the longest run of backticks inside
    the value, and line breaks become spaces, because a code span cannot hold them.
    """
    text = " ".join(str(value).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    if not text:
        return "(empty)"
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * (longest + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"

