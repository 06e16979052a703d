"""The shared sidebar filters: time range, deployments, status, and the zone times are shown in.

`app.py` renders them once per run with `sidebar_filters` and serves the page
inside `serving(view)`; a page gets the result with `page_view()`. A page
script run on its own (as in a test of that page) renders the filters itself.

URL parameters (all optional; a default is left out of the URL):

- ``range``: ``24h``, ``7d``, ``30d``, ``90d``, ``all`` (default) or ``custom``
- ``from``, ``to``: first and last day of a custom range, ``YYYY-MM-DD``, in the display zone
- ``deployment``: repeated, one deployment each (none means all)
- ``status``: repeated, ``success``, ``partial`` or ``failed`` (none means all)
- ``tz``: ``utc`` shows times in UTC instead of the browser's zone
"""

from __future__ import annotations

import re
import runpy
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from pathlib import Path

import streamlit as st

from ledger import formatting, queries, store
from ledger.models import EARLIEST, LATEST, STATUSES
from ledger.queries import hub
from ledger.ui import params
from ledger.ui.cache import cached
from ledger.ui.text import code_span

GROUP = "filters"
PARAM_RANGE, PARAM_FROM, PARAM_TO = "range", "from", "to"
PARAM_DEPLOYMENT, PARAM_STATUS, PARAM_ZONE = "deployment", "status", "tz"
PARAM_NAMES = (PARAM_RANGE, PARAM_FROM, PARAM_TO, PARAM_DEPLOYMENT, PARAM_STATUS, PARAM_ZONE)

RANGES: dict[str, tuple[str, timedelta | None]] = {
    "24h": ("Last 24 hours", timedelta(hours=24)),
    "7d": ("Last 7 days", timedelta(days=7)),
    "30d": ("Last 30 days", timedelta(days=30)),
    "90d": ("Last 90 days", timedelta(days=90)),
    "all": ("All time", None),
    "custom": ("Custom dates", None),
}
DEFAULT_RANGE = "all"
CUSTOM_RANGE = "custom"
CUSTOM_DEFAULT_DAYS = 30
UTC_PARAM_VALUE = "utc"
# Custom ranges stay within the years a submission may have (ledger.models), so
# day arithmetic never leaves the range datetime supports.
FIRST_DAY = EARLIEST.date()
LAST_DAY = LATEST.date() - timedelta(days=1)
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")

KEY_RANGE = "filters_range"
KEY_DATES = "filters_dates"
KEY_DEPLOYMENTS = "filters_deployments"
KEY_STATUSES = "filters_statuses"
KEY_UTC = "filters_utc"
_clears_notes = {"on_change": params.clear_notes, "args": (GROUP,)}


@dataclass(frozen=True)
class View:
    """The data every page shows: the ledger, the filters, the zone to show times in, and the ledger overview.

    `overview` is None when the ledger does not exist or could not be read.
    """

    ledger: Path
    filters: queries.Filters
    zone: tzinfo
    range_key: str = DEFAULT_RANGE
    overview: hub.LedgerOverview | None = None

    @property
    def range_label(self) -> str:
        """The time range as the sidebar names it, with the dates of a custom range."""
        if self.range_key != CUSTOM_RANGE or self.filters.start is None or self.filters.end is None:
            return RANGES[self.range_key][0]
        first = self.filters.start.astimezone(self.zone).date()
        last = (self.filters.end.astimezone(self.zone) - timedelta(microseconds=1)).date()
        if first == last:
            return first.isoformat()
        return f"{first.isoformat()} to {last.isoformat()}"


_current_view: ContextVar[View | None] = ContextVar("replay_ledger_view", default=None)


@contextmanager
def serving(view: View) -> Iterator[None]:
    """Make `view` the one `page_view()` returns while the page runs inside this block."""
    token = _current_view.set(view)
    try:
        yield
    finally:
        _current_view.reset(token)


def page_view() -> View:
    """Return this run's view; render the sidebar filters first when app.py has not (a page run on its own).

    A browser that opens a page's URL on a server no session has used yet gets
    the page script run on its own (Streamlit finds pages/ before app.py has
    declared its navigation). Then this runs app.py, whose navigation runs the
    page again inside the frame, and stops the outer run.
    """
    view = _current_view.get()
    if view is None and st.context.headers.get("Host"):
        _run_app()
        st.stop()
    if view is None:
        view = sidebar_filters(store.ledger_path())
    return view


def _run_app() -> None:
    runpy.run_path(str(Path(__file__).resolve().parents[2] / "app.py"), run_name="__main__")


def browser_zone() -> tuple[tzinfo, str | None]:
    """Return the viewer's time zone from the browser, or UTC with a note when it is missing or unknown."""
    name = st.context.timezone
    if not name:
        return timezone.utc, "The browser did not report its time zone, so times are shown in UTC."
    try:
        return formatting.parse_zone(name), None
    except formatting.UnknownZone:
        return timezone.utc, f"The browser's time zone {code_span(name)} is unknown here, so times are shown in UTC."


def _parse_day(value: str) -> date | None:
    """Return the day written as YYYY-MM-DD within the years the ledger accepts, else None."""
    if not _DAY.fullmatch(value):
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return None
    return day if FIRST_DAY <= day <= LAST_DAY else None


def _load_from_url(raw: dict[str, list[str]], deployments: list[str], zone: tzinfo) -> params.ParsedParams:
    """Parse the filter parameters of the URL into the sidebar widgets' state."""
    parsed = params.ParsedParams()
    has_dates = bool(raw.get(PARAM_FROM) or raw.get(PARAM_TO))
    default_range = CUSTOM_RANGE if has_dates and not raw.get(PARAM_RANGE) else DEFAULT_RANGE
    range_key = parsed.choice(list(RANGES), default_range, raw.get(PARAM_RANGE, []), "time range")
    dates = None
    if range_key == CUSTOM_RANGE:
        first_text = (raw.get(PARAM_FROM) or [""])[-1]
        last_text = (raw.get(PARAM_TO) or [first_text])[-1]
        first, last = _parse_day(first_text), _parse_day(last_text)
        if first is None or last is None or first > last:
            parsed.notes.append(
                f"The link's custom range from {code_span(first_text)} to {code_span(last_text)} is not two "
                f"dates in YYYY-MM-DD form from {FIRST_DAY} to {LAST_DAY} with the first not after the last, "
                f"so {RANGES[DEFAULT_RANGE][0]} is shown."
            )
            range_key = DEFAULT_RANGE
        else:
            dates = (first, last)
    st.session_state[KEY_RANGE] = range_key
    st.session_state[KEY_DATES] = dates or _default_dates(zone)
    st.session_state[KEY_DEPLOYMENTS] = parsed.subset(raw.get(PARAM_DEPLOYMENT, []), deployments, "deployment")
    st.session_state[KEY_STATUSES] = parsed.subset(raw.get(PARAM_STATUS, []), STATUSES, "status")
    zone_value = parsed.choice([UTC_PARAM_VALUE], "", raw.get(PARAM_ZONE, []), "time zone setting")
    st.session_state[KEY_UTC] = zone_value == UTC_PARAM_VALUE
    return parsed


def _default_dates(zone: tzinfo) -> tuple[date, date]:
    today = datetime.now(zone).date()
    return today - timedelta(days=CUSTOM_DEFAULT_DAYS - 1), today


def _next_minute(now: datetime) -> datetime:
    """Return the start of the minute after `now`, so a preset's bounds stay equal (and cacheable) for a minute."""
    return now.replace(second=0, microsecond=0) + timedelta(minutes=1)


def time_bounds(range_key: str, dates: tuple[date, date] | None, zone: tzinfo,
                now: datetime | None = None) -> tuple[datetime | None, datetime | None]:
    """Return the half-open UTC bounds of a time range.

    A preset ends at the start of the next minute. A custom range runs from the
    first day's midnight to the midnight after the last day, both in `zone`.
    """
    now = now or datetime.now(timezone.utc)
    length = RANGES[range_key][1]
    if length is not None:
        end = _next_minute(now.astimezone(timezone.utc))
        return end - length, end
    if range_key == CUSTOM_RANGE and dates is not None:
        first, last = dates
        start = datetime.combine(first, time(), tzinfo=zone)
        end = datetime.combine(last + timedelta(days=1), time(), tzinfo=zone)
        return start.astimezone(timezone.utc), end.astimezone(timezone.utc)
    return None, None


def _read_overview(ledger: Path) -> tuple[hub.LedgerOverview | None, str | None]:
    try:
        return cached(hub.overview, ledger), None
    except store.LedgerMissing:
        return None, None
    except store.LedgerBusy:
        return None, "The ledger is busy, so the list of deployments could not be read; try again shortly."


def _picked_dates(value: object, zone: tzinfo) -> tuple[tuple[date, date], str | None]:
    """Return the custom range picked so far; a range with only its first day picked covers that day."""
    if isinstance(value, (tuple, list)):
        picked = [day for day in value if isinstance(day, date)]
    elif isinstance(value, date):
        picked = [value]
    else:
        picked = []
    if len(picked) >= 2:
        return (picked[0], picked[1]), None
    if len(picked) == 1:
        return (picked[0], picked[0]), "Pick the last day of the range; until then it covers one day."
    return _default_dates(zone), "Pick the first and last day of the range."


def sidebar_filters(ledger: Path, overview: hub.LedgerOverview | None = None) -> View:
    """Render the shared filters in the sidebar, mirror them into the URL and return the view they select.

    `overview` saves a read when the caller has it; otherwise it is read here.
    """
    busy_note = None
    if overview is None:
        overview, busy_note = _read_overview(ledger)
    deployments = list(overview.deployments) if overview else []
    browser, zone_note = browser_zone()
    notes, _ = params.sync_group(
        GROUP, PARAM_NAMES,
        lambda raw: _load_from_url(raw, deployments, timezone.utc if _wants_utc(raw) else browser),
    )
    # Deployments chosen earlier in the session may have left the ledger; keep only known ones.
    if KEY_DEPLOYMENTS in st.session_state:
        st.session_state[KEY_DEPLOYMENTS] = [d for d in st.session_state[KEY_DEPLOYMENTS] if d in deployments]

    sidebar = st.sidebar
    sidebar.header("Filters")
    range_key = sidebar.selectbox(
        "Time range", list(RANGES), format_func=lambda key: RANGES[key][0], key=KEY_RANGE, **_clears_notes,
        help="Presets end now. Tiles compare with the period of equal length just before.",
    )
    utc = bool(st.session_state.get(KEY_UTC, False))
    zone = timezone.utc if utc else browser
    dates = None
    if range_key == CUSTOM_RANGE:
        if KEY_DATES not in st.session_state:
            st.session_state[KEY_DATES] = _default_dates(zone)
        # The tuple value puts the widget in range mode; session state keeps what the user picked.
        picked = sidebar.date_input(
            "Dates", value=tuple(st.session_state[KEY_DATES]), key=KEY_DATES, format="YYYY-MM-DD", **_clears_notes,
            help=f"First and last day, both included, in {formatting.zone_name(zone)}.",
        )
        dates, date_note = _picked_dates(picked, zone)
        if date_note:
            sidebar.caption(date_note)
    chosen_deployments = sidebar.multiselect(
        "Deployments", deployments, key=KEY_DEPLOYMENTS, placeholder="All deployments", **_clears_notes,
    )
    chosen_statuses = sidebar.multiselect(
        "Status", list(STATUSES), key=KEY_STATUSES, placeholder="All statuses", **_clears_notes,
    )
    utc = sidebar.toggle("Show times in UTC", key=KEY_UTC, **_clears_notes)
    zone = timezone.utc if utc else browser
    now = datetime.now(timezone.utc)
    offset = formatting.utc_offset(zone, now)
    name = formatting.zone_name(zone)
    sidebar.caption(f"Times in {name}." if name == offset else f"Times in {name} ({offset}).")
    for note in [busy_note, None if utc else zone_note, *notes]:
        if note:
            sidebar.warning(note, icon=":material/info:")

    start, end = time_bounds(range_key, dates, zone, now)
    filters = queries.Filters(start, end, tuple(chosen_deployments), tuple(chosen_statuses))
    params.write_group(GROUP, {
        PARAM_RANGE: [] if range_key == DEFAULT_RANGE else [range_key],
        PARAM_FROM: [dates[0].isoformat()] if dates else [],
        PARAM_TO: [dates[1].isoformat()] if dates else [],
        PARAM_DEPLOYMENT: list(chosen_deployments),
        PARAM_STATUS: list(chosen_statuses),
        PARAM_ZONE: [UTC_PARAM_VALUE] if utc else [],
    })
    return View(ledger=ledger, filters=filters, zone=zone, range_key=range_key, overview=overview)


def _wants_utc(raw: dict[str, list[str]]) -> bool:
    return (raw.get(PARAM_ZONE) or [""])[-1] == UTC_PARAM_VALUE
