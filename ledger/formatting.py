"""Text for numbers, money and times as the app shows them; pure functions, no Streamlit.

Money is formatted from `Decimal` without a detour through float, so the
ledger's exact sums reach the screen unchanged. `money` shows amounts to the
cent with a thousands separator, and an amount that is not zero never reads
``$0.00``: a magnitude under a cent reads ``<$0.01``. `exact_money` shows an
amount as stored, with as many decimals as it needs. Times are shown in a zone
the caller picks, normally the viewer's browser zone or UTC.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

CENT = Decimal("0.01")
MISSING = "—"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
UTC_NAME = "UTC"


class UnknownZone(ValueError):
    """A time zone name is not in the IANA database that Python's zoneinfo reads."""


def to_decimal(amount: Decimal | int | str | float) -> Decimal:
    """Return `amount` as a Decimal; a float goes through its shortest text, so 0.1 becomes Decimal('0.1')."""
    if isinstance(amount, Decimal):
        return amount
    if isinstance(amount, bool):
        raise TypeError("money amounts are numbers, not booleans")
    try:
        return Decimal(repr(amount) if isinstance(amount, float) else amount)
    except InvalidOperation:
        raise ValueError(f"not an amount of money: {str(amount)[:40]!r}") from None


def money(amount: Decimal | int | str | float | None) -> str:
    """Format US dollars to the cent: ``$1,234.56``, ``<$0.01`` under a cent, ``-$5.00`` below zero.

    Cents are rounded half up. None, NaN and infinities have no dollar value and
    are shown as a dash.
    """
    if amount is None:
        return MISSING
    value = to_decimal(amount)
    if not value.is_finite():
        return MISSING
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    if magnitude == 0:
        return "$0.00"
    if magnitude < CENT:
        return f"{sign}<$0.01"
    return f"{sign}${magnitude.quantize(CENT, rounding=ROUND_HALF_UP):,}"


def money_places(amounts: list[Decimal | None]) -> int:
    """Return how many decimals show every amount exactly: at least two (cents), at most the ledger's six."""
    places = [-amount.normalize().as_tuple().exponent for amount in amounts if amount is not None and amount]
    return max([2, *places])


def exact_money(amount: Decimal | None, places: int | None = None) -> str:
    """Format US dollars exactly as stored: ``$0.09``, ``$0.004``, ``$1,234.50``.

    `places` pads to that many decimals, so a column of amounts lines up; it
    never cuts digits, because it is at least `money_places([amount])`.
    """
    if amount is None:
        return MISSING
    decimals = max(places or 0, money_places([amount]))
    return f"${amount.quantize(Decimal(1).scaleb(-decimals)):,f}"


def money_delta(amount: Decimal | int | None) -> str | None:
    """Format a change in dollars with its sign (``+$1.20``, ``-<$0.01``); None when there is nothing to compare."""
    if amount is None:
        return None
    value = to_decimal(amount)
    if value == 0:
        return "$0.00"
    text = money(value)
    return text if value < 0 else "+" + text


def count(number: int | None) -> str:
    """Format a count with thousands separators, or a dash for None."""
    return MISSING if number is None else f"{number:,}"


def plural(number: int, noun: str) -> str:
    """Format a count with its noun, adding an s unless the count is one: ``1 warning``, ``1,200 ingests``."""
    return f"{count(number)} {noun}{'' if number == 1 else 's'}"


def file_size(size: int) -> str:
    """Format a byte count in decimal units: ``12.3 kB`` under a megabyte, ``4.5 MB`` from one up."""
    if size < 1_000_000:
        return f"{size / 1000:,.1f} kB"
    return f"{size / 1_000_000:,.1f} MB"


def count_delta(number: int | None) -> str | None:
    """Format a change in a count with its sign: ``+12``, ``-3``, ``0``."""
    if number is None:
        return None
    return f"{number:+,}" if number else "0"


def percent(ratio: float | None, places: int = 1) -> str:
    """Format a share (0.249) as a percentage (``24.9%``), or a dash for None."""
    return MISSING if ratio is None else f"{ratio * 100:.{places}f}%"


def percent_change(current: int | Decimal, previous: int | Decimal) -> str | None:
    """Format the relative change from `previous` to `current` (``+5.0%``); None when `previous` is zero."""
    if not previous:
        return None
    change = (Decimal(current) - Decimal(previous)) / Decimal(previous) * 100
    return f"{change:+.1f}%"


def replay_progress(replayed: int, total: int) -> str:
    """Format actions replayed of actions recorded: ``4 / 12``."""
    return f"{replayed:,} / {total:,}"


def parse_zone(name: str | None) -> tzinfo:
    """Return the time zone called `name` (an IANA name such as ``Europe/Berlin``, or ``UTC``).

    Raises UnknownZone for a name zoneinfo does not know, with the name in the message.
    """
    if not name or name.upper() == UTC_NAME:
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UnknownZone(f"unknown time zone {name[:60]!r}; expected an IANA name such as Europe/Berlin") from None


def zone_name(zone: tzinfo) -> str:
    """Return the name a user knows a zone by: its IANA key, or ``UTC``."""
    if zone is timezone.utc:
        return UTC_NAME
    return getattr(zone, "key", None) or str(zone)


def utc_offset(zone: tzinfo, at: datetime) -> str:
    """Format the zone's offset from UTC at the instant `at`: ``UTC+01:00``, ``UTC-05:30``, ``UTC``."""
    offset = at.astimezone(zone).utcoffset() or timedelta(0)
    if not offset:
        return UTC_NAME
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes > 0 else "-"
    hours, minutes = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}:{minutes:02d}"


def timestamp(instant: datetime | None, zone: tzinfo) -> str:
    """Format an instant as ``2026-03-01 11:00:00`` in `zone`; a dash for None.

    Raises ValueError for a naive datetime, because its zone would be a guess.
    """
    if instant is None:
        return MISSING
    if instant.tzinfo is None:
        raise ValueError(f"timestamp {instant.isoformat()} has no time zone")
    return instant.astimezone(zone).strftime(TIME_FORMAT)


def preview(value: Any, limit: int = 60) -> str:
    """Return a one-line preview of a value from data: lists and objects lead with their size.

    ``[1, 2, 3]`` becomes ``3 items: [1,2,3]``, a long text is cut at `limit`
    characters with an ellipsis, and None becomes a dash.
    """
    if value is None:
        return MISSING
    if isinstance(value, str):
        text = value
    else:
        text = orjson.dumps(value, default=str).decode()
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    if isinstance(value, (list, tuple)):
        return f"{len(value):,} item{'s' if len(value) != 1 else ''}: {text}"
    if isinstance(value, dict):
        return f"{len(value):,} key{'s' if len(value) != 1 else ''}: {text}"
    return text
