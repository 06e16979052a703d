"""Money, count, percentage, time and preview formatting, checked against hand-written expectations."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from ledger import formatting


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (Decimal("1234.56"), "$1,234.56"),
        (Decimal("1234567.891"), "$1,234,567.89"),
        (Decimal("0.015"), "$0.02"),
        (Decimal("0.014999"), "$0.01"),
        (Decimal("0.01"), "$0.01"),
        (Decimal("0.995"), "$1.00"),
        (Decimal("1.090000"), "$1.09"),
        (Decimal("100"), "$100.00"),
        (Decimal("1E+2"), "$100.00"),
        (7, "$7.00"),
        ("2.5", "$2.50"),
        (Decimal("-5"), "-$5.00"),
        (Decimal("-1234.5"), "-$1,234.50"),
    ],
)
def test_money_cents(amount, expected):
    assert formatting.money(amount) == expected


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (Decimal("0.004"), "<$0.01"),
        (Decimal("0.000001"), "<$0.01"),
        (Decimal("0.009999"), "<$0.01"),
        (Decimal("-0.004"), "-<$0.01"),
    ],
)
def test_money_under_a_cent(amount, expected):
    assert formatting.money(amount) == expected


@pytest.mark.parametrize("amount", [Decimal("0"), Decimal("0.000000"), Decimal("-0"), 0])
def test_money_zero(amount):
    assert formatting.money(amount) == "$0.00"


def test_money_float_uses_shortest_text():
    assert formatting.money(0.09000000000000001) == "$0.09"
    assert formatting.money(0.004) == "<$0.01"


def test_money_ten_tenths_and_sdk_float_exact():
    total = sum([Decimal("0.1")] * 10, Decimal("0.09000000000000001").quantize(Decimal("0.000001")))
    assert formatting.money(total) == "$1.09"


@pytest.mark.parametrize("amount", [None, Decimal("NaN"), Decimal("Infinity"), float("nan"), float("-inf")])
def test_money_missing_or_nonfinite(amount):
    assert formatting.money(amount) == "—"


def test_money_invalid_text():
    with pytest.raises(ValueError, match="not an amount of money: 'twelve'"):
        formatting.money("twelve")


def test_money_boolean_rejected():
    with pytest.raises(TypeError, match="not booleans"):
        formatting.money(True)


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (Decimal("1.2"), "+$1.20"),
        (Decimal("-46.59"), "-$46.59"),
        (Decimal("0.004"), "+<$0.01"),
        (Decimal("-0.004"), "-<$0.01"),
        (Decimal("0"), "$0.00"),
        (None, None),
    ],
)
def test_money_delta_signs(amount, expected):
    assert formatting.money_delta(amount) == expected


@pytest.mark.parametrize(("number", "expected"), [(0, "0"), (999, "999"), (1234567, "1,234,567"), (None, "—")])
def test_count_separators(number, expected):
    assert formatting.count(number) == expected


@pytest.mark.parametrize(("number", "expected"), [(12, "+12"), (-1488, "-1,488"), (0, "0"), (None, None)])
def test_count_delta_signs(number, expected):
    assert formatting.count_delta(number) == expected


def test_percent_places():
    assert formatting.percent(0.249) == "24.9%"
    assert formatting.percent(0.64236, places=2) == "64.24%"
    assert formatting.percent(None) == "—"


def test_percent_change_previous_zero():
    assert formatting.percent_change(1162, 1255) == "-7.4%"
    assert formatting.percent_change(Decimal("2"), Decimal("1")) == "+100.0%"
    assert formatting.percent_change(5, 0) is None


def test_replay_progress_counts():
    assert formatting.replay_progress(4, 12) == "4 / 12"
    assert formatting.replay_progress(1200, 1500) == "1,200 / 1,500"


@pytest.mark.parametrize(
    ("zone", "instant", "expected"),
    [
        ("UTC", datetime(2026, 3, 1, 10, tzinfo=timezone.utc), "2026-03-01 10:00:00"),
        ("Europe/Berlin", datetime(2026, 3, 1, 10, tzinfo=timezone.utc), "2026-03-01 11:00:00"),
        ("Europe/Berlin", datetime(2026, 7, 1, 10, tzinfo=timezone.utc), "2026-07-01 12:00:00"),
        ("America/New_York", datetime(2026, 3, 1, 3, tzinfo=timezone.utc), "2026-02-28 22:00:00"),
        ("Asia/Kolkata", datetime(2026, 3, 1, 10, tzinfo=timezone.utc), "2026-03-01 15:30:00"),
    ],
)
def test_timestamp_in_zone(zone, instant, expected):
    assert formatting.timestamp(instant, formatting.parse_zone(zone)) == expected


def test_timestamp_naive_rejected():
    with pytest.raises(ValueError, match="2026-03-01T10:00:00 has no time zone"):
        formatting.timestamp(datetime(2026, 3, 1, 10), timezone.utc)


def test_timestamp_missing():
    assert formatting.timestamp(None, timezone.utc) == "—"


def test_parse_zone_unknown():
    with pytest.raises(formatting.UnknownZone, match="'Mars/Olympus'"):
        formatting.parse_zone("Mars/Olympus")


@pytest.mark.parametrize("name", [None, "", "UTC", "utc"])
def test_parse_zone_utc(name):
    assert formatting.parse_zone(name) is timezone.utc


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("UTC", "UTC"),
        ("Asia/Kolkata", "UTC+05:30"),
        ("America/St_Johns", "UTC-03:30"),
        ("Europe/Berlin", "UTC+01:00"),
    ],
)
def test_utc_offset_winter(zone, expected):
    winter = datetime(2026, 1, 15, 12, tzinfo=timezone.utc)
    assert formatting.utc_offset(formatting.parse_zone(zone), winter) == expected


def test_zone_name_keys():
    assert formatting.zone_name(timezone.utc) == "UTC"
    assert formatting.zone_name(formatting.parse_zone("Europe/Berlin")) == "Europe/Berlin"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([1, 2, 3], "3 items: [1,2,3]"),
        (["one"], "1 item: [\"one\"]"),
        ({"args": [], "kwargs": {"ts": 1}}, '2 keys: {"args":[],"kwargs":{"ts":1}}'),
        ({}, "0 keys: {}"),
        ("plain text", "plain text"),
        ("two\nlines", "two lines"),
        (None, "—"),
        (12.5, "12.5"),
    ],
)
def test_preview_nested_values(value, expected):
    assert formatting.preview(value) == expected


def test_preview_cut_at_limit():
    text = formatting.preview("x" * 100, limit=10)
    assert text == "xxxxxxxxx…"
    assert len(text) == 10
    assert formatting.preview(list(range(50)), limit=12) == "50 items: [0,1,2,3,4,…"


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (Decimal("0.09"), "$0.09"),
        (Decimal("0.004"), "$0.004"),
        (Decimal("0.000001"), "$0.000001"),
        (Decimal("1234.5"), "$1,234.50"),
        (Decimal("1234567.891"), "$1,234,567.891"),
        (Decimal("1.090000"), "$1.09"),
        (Decimal("1E+2"), "$100.00"),
        (Decimal("0"), "$0.00"),
    ],
)
def test_exact_money_as_stored(amount, expected):
    assert formatting.exact_money(amount) == expected


def test_exact_money_padded_never_cut():
    assert formatting.exact_money(Decimal("0.5"), 4) == "$0.5000"
    assert formatting.exact_money(Decimal("0.123456"), 2) == "$0.123456"


def test_exact_money_missing():
    assert formatting.exact_money(None) == "—"
    assert formatting.exact_money(None, 4) == "—"


@pytest.mark.parametrize(
    ("amounts", "expected"),
    [
        ([], 2),
        ([None, Decimal("0")], 2),
        ([Decimal("1.5"), Decimal("1E+2")], 2),
        ([Decimal("0.09"), Decimal("0.004"), None], 3),
        ([Decimal("1.090000"), Decimal("0.000001")], 6),
    ],
)
def test_money_places_longest_amount(amounts, expected):
    assert formatting.money_places(amounts) == expected


@pytest.mark.parametrize(
    ("number", "noun", "expected"),
    [
        (1, "warning", "1 warning"),
        (0, "warning", "0 warnings"),
        (2, "ingest", "2 ingests"),
        (1200, "ingest", "1,200 ingests"),
    ],
)
def test_plural_noun(number, noun, expected):
    assert formatting.plural(number, noun) == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, "0.0 kB"),
        (1_500, "1.5 kB"),
        (999_000, "999.0 kB"),
        (1_000_000, "1.0 MB"),
        (12_345_678, "12.3 MB"),
        (2_500_000_000, "2,500.0 MB"),
    ],
)
def test_file_size_units(size, expected):
    assert formatting.file_size(size) == expected
