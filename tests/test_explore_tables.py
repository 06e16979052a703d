"""The Explore page's cells and frames, built from hand-made query results and checked value by value."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from ledger import formatting
from ledger.queries import explore, sandbox
from ledger.ui import explore_tables

BERLIN = formatting.parse_zone("Europe/Berlin")
NOON_UTC = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)


def explore_page(columns: tuple[str, ...], rows: list[tuple], strict_aborts: list[bool]) -> explore.ExplorePage:
    summary = explore.ExploreSummary(submissions=len(rows), actions_replayed=0, divergences=0, cost_saved=Decimal(0))
    return explore.ExplorePage(columns=columns, rows=rows, run_ids=[], strict_aborts=strict_aborts, summary=summary,
                               page=1, page_size=50, sort="submitted", direction="desc")


def query_result(columns: list[str], rows: list[tuple]) -> sandbox.QueryResult:
    return sandbox.QueryResult(columns=columns, types=[], rows=rows, truncated=False, row_cap=1000, seconds=0.0)


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (NOON_UTC, "time", "2026-03-01 13:00:00"),
        (Decimal("0.004"), "money", "$0.004"),
        (0.5, "share", "50.0%"),
        (["replayed", "strict"], "list", "replayed, strict"),
        ('{"model": "m1"}', "json", '1 key: {"model":"m1"}'),
        ({"model": "m1"}, "json", '1 key: {"model":"m1"}'),
        (True, "flag", "yes"),
        (False, "flag", "no"),
        (7, "count", 7),
        ("<b>r1</b>", "text", "<b>r1</b>"),
    ],
)
def test_cell_by_kind(value, kind, expected):
    assert explore_tables.cell(value, kind, BERLIN) == expected


@pytest.mark.parametrize(("kind", "expected"), [("count", None), ("flag", None), ("text", "—"), ("money", "—"),
                                                ("time", "—"), ("json", "—")])
def test_cell_missing_value(kind, expected):
    assert explore_tables.cell(None, kind, BERLIN) == expected


def test_cell_json_cut_at_preview():
    preview = explore_tables.cell({"note": "x" * 200}, "json", BERLIN)

    assert preview.startswith('1 key: {"note":"xxx')
    assert preview.endswith("…")
    assert len(preview) == len("1 key: ") + explore_tables.PREVIEW_CHARS


def test_table_frame_money_padded():
    page = explore_page(("saved",), [(Decimal("0.09"),), (Decimal("0.004"),), (None,), (Decimal("1234.5"),)],
                        [False] * 4)
    frame = explore_tables.table_frame(page, timezone.utc)

    assert list(frame.columns) == ["Saved"]
    assert list(frame["Saved"]) == ["$0.090", "$0.004", "—", "$1,234.500"]


def test_table_frame_links_and_tags():
    page = explore_page(("run_id", "status", "submitted"),
                        [("run 1/a", "failed", NOON_UTC), ("run-2", "failed", NOON_UTC), ("run-3", "success", None)],
                        [True, False, False])
    frame = explore_tables.table_frame(page, BERLIN)

    assert list(frame.columns) == ["Run ID", "Status", "Submitted"]
    assert list(frame["Run ID"]) == ["./run?run_id=run%201%2Fa", "./run?run_id=run-2", "./run?run_id=run-3"]
    assert list(frame["Status"]) == [["aborted"], ["failed"], ["success"]]
    assert list(frame["Submitted"]) == ["2026-03-01 13:00:00", "2026-03-01 13:00:00", "—"]


def test_result_frame_repeated_names():
    frame = explore_tables.result_frame(query_result(["x", "x", "x (2)", "y"], [(1, 2, 3, 4)]), timezone.utc)

    assert list(frame.columns) == ["x", "x (2)", "x (2) (2)", "y"]
    assert frame.iloc[0].tolist() == [1, 2, 3, 4]


def test_result_frame_numbers_kept():
    frame = explore_tables.result_frame(
        query_result(["n", "share", "ok"], [(1, 0.5, True), (None, None, None), (-(2**53) + 1, 1.25, False)]),
        timezone.utc)

    assert frame["n"].tolist()[0] == 1
    assert frame["n"].tolist()[2] == -(2**53) + 1
    assert frame["share"].tolist()[2] == 1.25
    assert frame["ok"].tolist()[0] is True


def test_result_frame_big_integers_as_text():
    frame = explore_tables.result_frame(query_result(["big"], [(2**53,), (1,), (None,)]), timezone.utc)

    assert frame["big"].tolist()[:2] == ["9007199254740992", "1"]
    assert frame["big"].isna().tolist() == [False, False, True]


def test_result_frame_mixed_column_as_text():
    frame = explore_tables.result_frame(query_result(["mixed"], [(1,), ("one",), (True,)]), timezone.utc)

    assert frame["mixed"].tolist() == ["1", "one", "True"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("0.090000"), "0.090000"),
        (Decimal("1E+3"), "1000"),
        (NOON_UTC, "2026-03-01 13:00:00 Europe/Berlin"),
        (datetime(2026, 3, 1, 12, 30), "2026-03-01 12:30:00"),
        (date(2026, 3, 1), "2026-03-01"),
        (b"\x00\xff", "00ff"),
        (memoryview(b"\x01"), "01"),
        ([1, 2], "2 items: [1,2]"),
        ({"a": 1}, '1 key: {"a":1}'),
        ("<b>", "<b>"),
    ],
)
def test_value_text_by_type(value, expected):
    assert explore_tables.value_text(value, BERLIN) == expected
