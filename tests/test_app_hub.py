"""The app frame and the Replay Hub page, run with Streamlit's AppTest on real DuckDB ledgers.

Every number on screen is compared with a hand-written SQL query on the same
ledger file. One AppTest instance is reused per module where the test only
changes the URL, because a new instance costs about 150 ms.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from urllib.parse import quote, unquote

import duckdb
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from ledger import store
from ledger.ingest import ingest_paths
from ledger.ui import cache, code_span, run_url, status_column, status_tag, status_text
from ledger.ui.navigation import existing_pages

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
CASES = Path(__file__).resolve().parent / "data" / "cases"
SAMPLE_DATA = ROOT / "sample_data"
C08_RUN_ID = "<b>r1</b><script>alert(1)</script>"
CASE_DEPLOYMENTS = {
    "c03_nonfinite.jsonl": "case-c03",
    "c04_money.jsonl": "case-c04",
    "c08_markup.json": "case-c08",
    "c11_strict_abort_run-abc.json": "case-c11",
}
# Rows no sample file has: nothing recorded (a null share replayed) and a run id with URL syntax.
EDGE_ROWS = [
    {"run_id": "edge-nothing-recorded", "status": "failed", "actions_replayed": 0, "actions_total": 0,
     "divergences_detected": 0, "divergences": [], "cost_savings": 0, "submitted_at": "2026-03-02T00:00:00Z"},
    {"run_id": "edge a&b=c#d?e/f%20", "status": "success", "actions_replayed": 2, "actions_total": 2,
     "divergences_detected": 0, "divergences": [], "cost_savings": 1234.5, "submitted_at": "2026-03-02T01:00:00Z"},
]
SORT_SQL = {
    "run_id": "run_id {d}",
    "status": "status {d}",
    "replayed": "CASE WHEN actions_total = 0 THEN NULL ELSE actions_replayed / actions_total END {d} NULLS LAST, "
                "actions_total {d}",
    "divergences": "divergences_detected {d}",
    "saved": "cost_savings {d}",
    "submitted": "submitted_at {d}",
    "deployment": "deployment {d}",
}


# ---------------------------------------------------------------------------
# Helpers


def query(ledger: Path, sql: str, parameters: list | tuple = ()) -> list[tuple]:
    with duckdb.connect(str(ledger), read_only=True) as connection:
        return connection.execute(sql, list(parameters)).fetchall()


def new_app(ledger: Path | None = None, *, zone: str | None = "UTC", params: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.context["timezone"] = zone
    at.query_params.update(params or {})
    return at


def show(at: AppTest, **params) -> AppTest:
    """Open the app with exactly these URL parameters, resetting filters, sort and paging not named."""
    params.setdefault("range", "all")
    params.setdefault("sort", "submitted")
    at.query_params.clear()
    at.query_params.update(params)
    at.run()
    assert not at.exception, [error.value for error in at.exception]
    return at


def metrics(at: AppTest) -> dict:
    return {metric.label: metric for metric in at.metric}


def hub_table_element(at: AppTest):
    for element in at.dataframe:
        if "Run ID" in element.value.columns and "Replayed / Total" in element.value.columns:
            return element
    return None


def hub_table(at: AppTest) -> pd.DataFrame | None:
    element = hub_table_element(at)
    return None if element is None else element.value


def table_run_ids(at: AppTest) -> list[str]:
    frame = hub_table(at)
    prefix = "./run?run_id="
    assert all(url.startswith(prefix) for url in frame["Run ID"])
    return [unquote(url[len(prefix):]) for url in frame["Run ID"]]


def texts(at: AppTest) -> list[str]:
    elements = [*at.markdown, *at.caption, *at.info, *at.warning, *at.error, *at.title, *at.subheader]
    return [element.value for element in elements]


def expected_money(amount: Decimal) -> str:
    if amount == 0:
        return "$0.00"
    if amount < Decimal("0.01"):
        return "<$0.01"
    return f"${amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"


def expected_count_delta(current: int, previous: int) -> str:
    change = current - previous
    text = f"{change:+,}" if change else "0"
    if previous:
        text += f" ({(current - previous) / previous * 100:+.1f}%)"
    return text


def hand_tiles(ledger: Path, start, end, deployments=(), statuses=()) -> tuple:
    conditions = ["TRUE"]
    parameters: list = []
    if start is not None:
        conditions.append("submitted_at >= ?")
        parameters.append(start)
    if end is not None:
        conditions.append("submitted_at < ?")
        parameters.append(end)
    if deployments:
        conditions.append("list_contains(?, deployment)")
        parameters.append(list(deployments))
    if statuses:
        conditions.append("list_contains(?, status)")
        parameters.append(list(statuses))
    return query(ledger, f"""
        SELECT count(*), coalesce(sum(actions_replayed), 0), coalesce(sum(divergences_detected), 0),
               coalesce(sum(cost_savings), 0)
        FROM submissions WHERE {' AND '.join(conditions)}""", parameters)[0]


# ---------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def hub_ledger(sample_ledger_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample ledger plus cases C03, C04, C08, C11 (each under its own deployment) and two edge rows."""
    folder = tmp_path_factory.mktemp("hub")
    path = folder / "hub.duckdb"
    shutil.copyfile(sample_ledger_template, path)
    for name, deployment in CASE_DEPLOYMENTS.items():
        ingest_paths(path, [str(CASES / name)], deployment=deployment)
    edge = folder / "edge.jsonl"
    edge.write_text("".join(json.dumps(row) + "\n" for row in EDGE_ROWS))
    ingest_paths(path, [str(edge)], deployment="case-edge")
    return path


@pytest.fixture(scope="module")
def hub_env(hub_ledger: Path):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(store.LEDGER_ENV, str(hub_ledger))
        yield hub_ledger


@pytest.fixture(scope="module")
def hub_app(hub_env: Path) -> AppTest:
    """One app session on the hub ledger, reused by tests that set the whole view through the URL."""
    return new_app()


@pytest.fixture
def own_ledger(sample_ledger_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the sample ledger, made the app's ledger for one test."""
    path = tmp_path / "own.duckdb"
    shutil.copyfile(sample_ledger_template, path)
    monkeypatch.setenv(store.LEDGER_ENV, str(path))
    return path


# ---------------------------------------------------------------------------
# Tiles


TILE_VIEWS = {
    "all_time": ({}, "UTC", None, None, (), ()),
    "november_utc": (
        {"range": "custom", "from": "2026-11-01", "to": "2026-11-30", "tz": "utc"}, "UTC",
        datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 12, 1, tzinfo=timezone.utc), (), (),
    ),
    "november_berlin": (
        {"range": "custom", "from": "2026-11-01", "to": "2026-11-30"}, "Europe/Berlin",
        datetime(2026, 10, 31, 23, tzinfo=timezone.utc), datetime(2026, 11, 30, 23, tzinfo=timezone.utc), (), (),
    ),
    "october_prod_eu_failures": (
        {"range": "custom", "from": "2026-10-01", "to": "2026-10-31", "tz": "utc",
         "deployment": ["prod-eu"], "status": ["partial", "failed"]}, "UTC",
        datetime(2026, 10, 1, tzinfo=timezone.utc), datetime(2026, 11, 1, tzinfo=timezone.utc),
        ("prod-eu",), ("partial", "failed"),
    ),
    "two_deployments": (
        {"deployment": ["staging", "prod-us"]}, "UTC", None, None, ("staging", "prod-us"), (),
    ),
}


@pytest.mark.parametrize("name", list(TILE_VIEWS))
def test_hub_tiles_match_sql(hub_app: AppTest, hub_ledger: Path, name: str):
    params, zone, start, end, deployments, statuses = TILE_VIEWS[name]
    hub_app.context["timezone"] = zone
    show(hub_app, **params)
    on_screen = metrics(hub_app)
    current = hand_tiles(hub_ledger, start, end, deployments, statuses)

    assert on_screen["Submissions"].value == f"{current[0]:,}"
    assert on_screen["Actions Replayed"].value == f"{current[1]:,}"
    assert on_screen["Divergences"].value == f"{current[2]:,}"
    assert on_screen["Cost Saved"].value == expected_money(current[3])
    if start is None:
        assert not on_screen["Submissions"].delta
        assert not on_screen["Cost Saved"].delta
        return
    previous = hand_tiles(hub_ledger, start - (end - start), start, deployments, statuses)
    assert on_screen["Submissions"].delta == expected_count_delta(current[0], previous[0])
    assert on_screen["Actions Replayed"].delta == expected_count_delta(current[1], previous[1])
    assert on_screen["Divergences"].delta == expected_count_delta(current[2], previous[2])
    saved_change = current[3] - previous[3]
    assert on_screen["Cost Saved"].delta == ("+" if saved_change > 0 else "-") + expected_money(abs(saved_change))


def test_hub_tiles_last_24_hours_preset(hub_app: AppTest, hub_ledger: Path):
    for _ in range(3):
        before = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        show(hub_app, range="24h")
        after = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        if before == after:
            break
    end = before + timedelta(minutes=1)
    start = end - timedelta(hours=24)
    current = hand_tiles(hub_ledger, start, end)
    previous = hand_tiles(hub_ledger, start - timedelta(hours=24), start)
    on_screen = metrics(hub_app)

    assert current[0] >= 1  # C11 has no timestamp, so it was stored at its ingest time
    assert on_screen["Submissions"].value == f"{current[0]:,}"
    assert on_screen["Submissions"].delta == expected_count_delta(current[0], previous[0])
    assert on_screen["Cost Saved"].value == expected_money(current[3])


def test_hub_header_counts_and_data_time(hub_app: AppTest, hub_ledger: Path):
    show(hub_app, deployment="prod-us")
    total = query(hub_ledger, "SELECT count(*) FROM submissions WHERE deployment = 'prod-us'")[0][0]
    header = next(text for text in texts(hub_app) if "match the filters" in text)

    assert header.startswith(f"**{total:,}** submissions match the filters · All time · data as of ")
    assert header.endswith(" UTC")


def test_hub_cost_saved_c04_exact(hub_app: AppTest, hub_ledger: Path):
    stored = query(hub_ledger, "SELECT sum(cost_savings) FROM submissions WHERE deployment = 'case-c04'")[0][0]
    assert stored == Decimal("1.09")

    for _ in range(3):
        show(hub_app, deployment="case-c04")
        assert metrics(hub_app)["Cost Saved"].value == "$1.09"
    saved = list(hub_table(hub_app)["Saved"])
    assert sorted(saved) == sorted(["$0.10"] * 10 + ["$0.09"])


def test_hub_cost_saved_c03_under_a_cent(hub_app: AppTest, hub_ledger: Path):
    stored = query(hub_ledger, "SELECT sum(cost_savings), count(*) FROM submissions WHERE deployment = 'case-c03'")
    assert stored == [(Decimal("0.004"), 1)]

    show(hub_app, deployment="case-c03")

    assert metrics(hub_app)["Cost Saved"].value == "<$0.01"
    assert list(hub_table(hub_app)["Saved"]) == ["<$0.01"]


def test_hub_c08_run_id_stays_data(hub_app: AppTest):
    show(hub_app, deployment="case-c08")
    frame = hub_table(hub_app)

    assert list(frame["Run ID"]) == ["./run?run_id=" + quote(C08_RUN_ID, safe="")]
    assert table_run_ids(hub_app) == [C08_RUN_ID]
    assert all("<script>" not in text and "javascript:" not in text for text in texts(hub_app))


def test_hub_c11_strict_abort_told_apart(hub_app: AppTest, hub_ledger: Path):
    show(hub_app, deployment="case-c11")
    frame = hub_table(hub_app)

    assert list(frame["Status"]) == [["aborted"]]
    assert list(frame["Replayed / Total"]) == ["4 / 12"]
    assert table_run_ids(hub_app) == ["run-abc"]


def test_hub_failed_tags_match_sql(hub_app: AppTest, hub_ledger: Path):
    show(hub_app, status="failed", rows="200")
    expected = query(hub_ledger, """
        SELECT run_id, CASE WHEN divergences_detected = 1 AND actions_replayed < actions_total
                            THEN 'aborted' ELSE 'failed' END
        FROM submissions WHERE status = 'failed'
        ORDER BY submitted_at DESC, rowid DESC LIMIT 200""")
    frame = hub_table(hub_app)

    assert list(zip(table_run_ids(hub_app), [tags[0] for tags in frame["Status"]])) == expected
    assert {"aborted", "failed"} == {tag for _, tag in expected}


# ---------------------------------------------------------------------------
# Sorting and paging


@pytest.mark.parametrize("direction", ["desc", "asc"])
@pytest.mark.parametrize("column", list(SORT_SQL))
def test_hub_sort_matches_sql_across_pages(hub_app: AppTest, hub_ledger: Path, column: str, direction: str):
    total = query(hub_ledger, "SELECT count(*) FROM submissions")[0][0]
    last_page = -(-total // 25)
    order = SORT_SQL[column].format(d=direction.upper())
    ties = f"rowid {direction.upper()}" if column == "submitted" else "submitted_at DESC, rowid DESC"
    for page in (1, 2, last_page // 2, last_page):
        show(hub_app, sort=column, order=direction, rows="25", page=str(page))
        expected = query(
            hub_ledger,
            f"SELECT run_id FROM submissions ORDER BY {order} NULLS LAST, {ties} LIMIT 25 OFFSET ?",
            [(page - 1) * 25],
        )
        assert table_run_ids(hub_app) == [row[0] for row in expected], f"page {page}"
    if column == "replayed":
        assert table_run_ids(hub_app)[-1] == "edge-nothing-recorded"


@pytest.mark.parametrize("column", ["status", "deployment", "divergences"])
def test_hub_sort_page_spanning_two_values(hub_app: AppTest, hub_ledger: Path, column: str):
    name = {"status": "status", "deployment": "deployment", "divergences": "divergences_detected"}[column]
    first_group = query(hub_ledger, f"SELECT count(*) FROM submissions GROUP BY {name} ORDER BY {name} DESC "
                                    "LIMIT 1")[0][0]
    page = first_group // 25 + 1
    assert first_group % 25, "the page must hold rows of two values"
    show(hub_app, sort=column, rows="25", page=str(page))
    expected = query(hub_ledger, f"SELECT run_id, {name} FROM submissions "
                                 f"ORDER BY {name} DESC, submitted_at DESC, rowid DESC LIMIT 25 OFFSET ?",
                     [(page - 1) * 25])

    assert len({value for _, value in expected}) == 2
    assert table_run_ids(hub_app) == [run_id for run_id, _ in expected]


def test_hub_sort_by_saved_shows_largest_first(hub_app: AppTest, hub_ledger: Path):
    show(hub_app, sort="saved", rows="25")
    top = query(hub_ledger, "SELECT max(cost_savings) FROM submissions")[0][0]

    assert hub_table(hub_app)["Saved"].iloc[0] == expected_money(top)
    assert table_run_ids(hub_app)[0] == "edge a&b=c#d?e/f%20"


@pytest.mark.parametrize("size", [25, 50, 100, 200])
def test_hub_page_sizes(hub_app: AppTest, hub_ledger: Path, size: int):
    total = query(hub_ledger, "SELECT count(*) FROM submissions")[0][0]
    show(hub_app, rows=str(size))

    assert len(hub_table(hub_app)) == size
    assert f"Rows 1–{size} of {total:,}, page 1 of {-(-total // size):,}" in texts(hub_app)


def test_hub_page_past_end_serves_last(hub_app: AppTest, hub_ledger: Path):
    total = query(hub_ledger, "SELECT count(*) FROM submissions")[0][0]
    show(hub_app, rows="100", page="9999")
    last_page = -(-total // 100)

    assert hub_app.number_input(key="hub_page").value == last_page
    assert len(hub_table(hub_app)) == total - (last_page - 1) * 100
    assert hub_app.query_params["page"] == str(last_page)


def test_hub_filter_change_returns_to_page_one(hub_app: AppTest):
    show(hub_app, page="3")
    assert hub_app.number_input(key="hub_page").value == 3

    hub_app.multiselect(key="filters_deployments").set_value(["prod-eu"]).run()

    assert hub_app.number_input(key="hub_page").value == 1
    assert "page" not in hub_app.query_params


def test_hub_widgets_change_sort_and_page(hub_app: AppTest, hub_ledger: Path):
    show(hub_app)
    hub_app.selectbox(key="hub_sort").set_value("divergences")
    hub_app.selectbox(key="hub_direction").set_value("asc")
    hub_app.selectbox(key="hub_page_size").set_value(25).run()
    hub_app.number_input(key="hub_page").set_value(2).run()
    expected = query(hub_ledger, "SELECT run_id FROM submissions "
                                 "ORDER BY divergences_detected ASC, submitted_at DESC, rowid DESC LIMIT 25 OFFSET 25")

    assert table_run_ids(hub_app) == [row[0] for row in expected]
    assert hub_app.query_params == {"sort": "divergences", "order": "asc", "rows": "25", "page": "2"}


# ---------------------------------------------------------------------------
# Filters and the URL


def test_filters_url_round_trip(hub_env: Path, hub_ledger: Path):
    at = new_app().run()
    at.selectbox(key="filters_range").set_value("custom").run()
    at.date_input(key="filters_dates").set_value((date(2026, 10, 1), date(2026, 11, 15)))
    at.multiselect(key="filters_deployments").set_value(["prod-eu", "staging"])
    at.multiselect(key="filters_statuses").set_value(["partial"])
    at.toggle(key="filters_utc").set_value(True)
    at.selectbox(key="hub_sort").set_value("saved")
    at.selectbox(key="hub_direction").set_value("asc")
    at.selectbox(key="hub_page_size").set_value(25).run()
    at.number_input(key="hub_page").set_value(2).run()
    assert not at.exception

    link = dict(at.query_params)
    assert link == {
        "range": "custom", "from": "2026-10-01", "to": "2026-11-15",
        "deployment": ["prod-eu", "staging"], "status": "partial", "tz": "utc",
        "sort": "saved", "order": "asc", "rows": "25", "page": "2",
    }
    opened = new_app(params=link).run()
    assert opened.date_input(key="filters_dates").value == (date(2026, 10, 1), date(2026, 11, 15))
    assert opened.multiselect(key="filters_deployments").value == ["prod-eu", "staging"]
    assert opened.multiselect(key="filters_statuses").value == ["partial"]
    assert opened.toggle(key="filters_utc").value is True
    assert opened.number_input(key="hub_page").value == 2
    pd.testing.assert_frame_equal(hub_table(opened), hub_table(at))
    expected = query(hub_ledger, """
        SELECT run_id FROM submissions
        WHERE submitted_at >= '2026-10-01 00:00:00+00' AND submitted_at < '2026-11-16 00:00:00+00'
          AND deployment IN ('prod-eu', 'staging') AND status = 'partial'
        ORDER BY cost_savings ASC, submitted_at DESC, rowid DESC LIMIT 25 OFFSET 25""")
    assert table_run_ids(opened) == [row[0] for row in expected]


def test_filters_dates_without_range_mean_custom(hub_app: AppTest, hub_ledger: Path):
    hub_app.query_params.clear()
    hub_app.query_params.update({"from": "2026-11-01", "to": "2026-11-30", "tz": "utc", "sort": "submitted"})
    hub_app.run()
    count = hand_tiles(hub_ledger, datetime(2026, 11, 1, tzinfo=timezone.utc),
                       datetime(2026, 12, 1, tzinfo=timezone.utc))[0]

    assert hub_app.selectbox(key="filters_range").value == "custom"
    assert metrics(hub_app)["Submissions"].value == f"{count:,}"


INVALID_PARAMS = {
    "unknown_range": ({"range": "fortnight"}, "The link's time range `fortnight` is not one of 24h, 7d, 30d, 90d, "
                                              "all, custom, so the default `all` is shown."),
    "bad_custom_date": ({"range": "custom", "from": "2026-13-01", "to": "2026-11-30"},
                        "The link's custom range from `2026-13-01` to `2026-11-30` is not two dates"),
    "reversed_custom_dates": ({"range": "custom", "from": "2026-11-30", "to": "2026-11-01"},
                              "The link's custom range from `2026-11-30` to `2026-11-01` is not two dates"),
    "custom_date_too_early": ({"range": "custom", "from": "0001-01-01", "to": "2026-11-30"},
                              "The link's custom range from `0001-01-01` to `2026-11-30` is not two dates"),
    "custom_date_too_late": ({"range": "custom", "from": "2026-11-01", "to": "9999-12-31"},
                             "The link's custom range from `2026-11-01` to `9999-12-31` is not two dates"),
    "custom_date_week_form": ({"range": "custom", "from": "2026-W44-1", "to": "2026-11-30"},
                              "The link's custom range from `2026-W44-1` to `2026-11-30` is not two dates"),
    "unknown_deployment": ({"deployment": "nope"}, "The link's deployment `nope` is unknown here and is ignored."),
    "markup_deployment": ({"deployment": "<script>alert(1)</script>"},
                          "The link's deployment `<script>alert(1)</script>` is unknown here and is ignored."),
    "unknown_status": ({"status": "done"}, "The link's status `done` is unknown here and is ignored."),
    "unknown_zone_setting": ({"tz": "mars"}, "The link's time zone setting `mars` is not one of utc"),
    "sql_in_sort": ({"sort": "cost_savings; DROP TABLE submissions"},
                    "The link's sort column `cost_savings; DROP TABLE submissions` is not one of"),
    "unknown_order": ({"order": "sideways"}, "The link's sort order `sideways` is not one of desc, asc"),
    "odd_page_size": ({"rows": "7"}, "The link's rows per page `7` is not one of 25, 50, 100, 200"),
    "negative_page": ({"page": "-1"}, "The link's page `-1` is not a page number, so page 1 is shown."),
    "page_word": ({"page": "two"}, "The link's page `two` is not a page number, so page 1 is shown."),
}


@pytest.mark.parametrize("case", list(INVALID_PARAMS))
def test_filters_invalid_param_falls_back(hub_app: AppTest, hub_ledger: Path, case: str):
    params, message = INVALID_PARAMS[case]
    show(hub_app, **params)
    total = query(hub_ledger, "SELECT count(*) FROM submissions")[0][0]

    assert any(text.startswith(message) for text in texts(hub_app)), texts(hub_app)
    assert metrics(hub_app)["Submissions"].value == f"{total:,}"
    assert hub_app.selectbox(key="filters_range").value == "all"
    assert hub_app.multiselect(key="filters_deployments").value == []
    assert hub_app.selectbox(key="hub_sort").value == "submitted"
    assert hub_app.number_input(key="hub_page").value == 1
    for name, value in params.items():
        if name != "range":
            assert hub_app.query_params.get(name) != value


def test_filters_note_clears_after_change(hub_app: AppTest):
    show(hub_app, status="done")
    assert any("status `done`" in text for text in texts(hub_app))

    hub_app.multiselect(key="filters_statuses").set_value(["success"]).run()

    assert not any("status `done`" in text for text in texts(hub_app))


def test_filters_deployment_options_match_sql(hub_app: AppTest, hub_ledger: Path):
    show(hub_app)
    expected = [row[0] for row in query(hub_ledger, "SELECT DISTINCT deployment FROM submissions ORDER BY 1")]

    assert hub_app.multiselect(key="filters_deployments").options == expected


def test_filters_no_match_state(hub_app: AppTest):
    show(hub_app, deployment="case-c04", status="failed")

    assert metrics(hub_app)["Submissions"].value == "0"
    assert metrics(hub_app)["Cost Saved"].value == "$0.00"
    assert hub_table(hub_app) is None
    assert any(text.startswith("No submissions match these filters.") for text in texts(hub_app))


def test_hub_sessions_keep_own_filters(hub_env: Path, hub_ledger: Path):
    first = new_app(params={"deployment": "prod-eu"})
    second = new_app(params={"deployment": "prod-us"})
    for _ in range(2):
        first.run()
        second.run()
        for at, deployment in ((first, "prod-eu"), (second, "prod-us")):
            count, _, _, saved = hand_tiles(hub_ledger, None, None, (deployment,))
            assert metrics(at)["Submissions"].value == f"{count:,}"
            assert metrics(at)["Cost Saved"].value == expected_money(saved)


# ---------------------------------------------------------------------------
# Time zones


@pytest.mark.parametrize(
    ("zone", "utc_toggle", "shown", "label"),
    [
        ("America/New_York", False, "2026-03-01 05:00:00", "America/New_York"),
        ("Asia/Kolkata", False, "2026-03-01 15:30:00", "Asia/Kolkata"),
        ("Asia/Kolkata", True, "2026-03-01 10:00:00", "UTC"),
        ("Europe/Berlin", False, "2026-03-01 11:00:00", "Europe/Berlin"),
    ],
)
def test_hub_submitted_in_viewer_zone(hub_app: AppTest, zone: str, utc_toggle: bool, shown: str, label: str):
    hub_app.context["timezone"] = zone
    params = {"deployment": "case-c04"} | ({"tz": "utc"} if utc_toggle else {})
    show(hub_app, **params)
    columns = json.loads(hub_table_element(hub_app).proto.columns)
    frame = hub_table(hub_app)

    assert set(frame["Submitted"]) == {shown}
    assert columns["Submitted"]["label"] == f"Submitted ({label})"
    hub_app.context["timezone"] = "UTC"


@pytest.mark.parametrize(
    ("zone", "note"),
    [
        (None, "The browser did not report its time zone, so times are shown in UTC."),
        ("Mars/Olympus", "The browser's time zone `Mars/Olympus` is unknown here, so times are shown in UTC."),
    ],
)
def test_hub_zone_missing_falls_back_to_utc(hub_app: AppTest, zone: str | None, note: str):
    hub_app.context["timezone"] = zone
    show(hub_app, deployment="case-c04")

    assert set(hub_table(hub_app)["Submitted"]) == {"2026-03-01 10:00:00"}
    assert note in texts(hub_app)
    hub_app.context["timezone"] = "UTC"


# ---------------------------------------------------------------------------
# The Run page


def test_run_page_shows_run_id_literally(hub_env: Path):
    at = new_app().run()
    at.switch_page("pages/run.py")
    at.query_params["run_id"] = C08_RUN_ID
    at.run()

    assert not at.exception
    assert C08_RUN_ID in [element.value for element in at.text]
    assert all("<script>" not in text for text in texts(at))


# ---------------------------------------------------------------------------
# The app frame: ledger setup, sample data, empty states, freshness


def test_app_builds_sample_when_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ledger = tmp_path / "new" / "ledger.duckdb"
    monkeypatch.setenv(store.LEDGER_ENV, str(ledger))
    at = new_app().run()

    assert not at.exception
    assert ledger.exists()
    count, demo_ingests, deploys = query(ledger, """
        SELECT (SELECT count(*) FROM submissions),
               (SELECT count(*) FROM ingest_log WHERE origin = 'demo'),
               (SELECT count(*) FROM deploys)""")[0]
    assert (demo_ingests, deploys) == (1, 12)
    assert metrics(at)["Submissions"].value == f"{count:,}"
    assert any(text.startswith("**Sample data.**") for text in texts(at))

    at.run()
    assert query(ledger, "SELECT count(*) FROM ingest_log")[0][0] == 1


def test_app_fills_fresh_ledger_with_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ledger = tmp_path / "fresh.duckdb"
    store.create_empty(ledger)
    monkeypatch.setenv(store.LEDGER_ENV, str(ledger))
    at = new_app().run()
    count = query(ledger, "SELECT count(*) FROM submissions")[0][0]

    assert count > 0
    assert metrics(at)["Submissions"].value == f"{count:,}"
    assert any(text.startswith("**Sample data.**") for text in texts(at))


def test_app_no_submissions_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ledger = tmp_path / "rejected-only.duckdb"
    report = ingest_paths(ledger, [str(SAMPLE_DATA / "bad" / "bad_records.jsonl")])
    assert report.ingested == 0
    monkeypatch.setenv(store.LEDGER_ENV, str(ledger))
    at = new_app().run()

    assert not at.exception
    assert query(ledger, "SELECT count(*) FROM submissions")[0][0] == 0
    assert not at.metric
    assert hub_table(at) is None
    assert any("holds no submissions yet" in text for text in texts(at))
    assert not any("Sample data" in text for text in texts(at))


def test_app_sample_unwritable_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(store.LEDGER_ENV, str(blocker / "ledger.duckdb"))
    at = new_app().run()

    assert not at.exception
    message = at.error[0].value
    assert message.startswith(f"No ledger at `{blocker / 'ledger.duckdb'}` yet, and the sample data could not be")
    assert f"`{store.LEDGER_ENV}`" in message


def test_app_corrupt_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ledger = tmp_path / "corrupt.duckdb"
    ledger.write_bytes(b"this is not a database file" * 100)
    monkeypatch.setenv(store.LEDGER_ENV, str(ledger))
    at = new_app().run()

    assert not at.exception
    assert at.error[0].value == (
        f"The file `{ledger}` could not be opened as a ledger: `is not a DuckDB ledger file (it starts with "
        f"'this is ')`. Point `{store.LEDGER_ENV}` at a replay-ledger file, or move this file away to start with "
        "sample data."
    )


def test_app_mixed_sample_note(own_ledger: Path):
    ingest_paths(own_ledger, [str(CASES / "c04_money.jsonl")])
    at = new_app().run()

    assert f"The ledger `{own_ledger}` holds the bundled sample data next to your own ingests." in texts(at)
    assert not any(text.startswith("**Sample data.**") for text in texts(at))


def test_hub_new_data_shows_without_refresh(own_ledger: Path):
    at = new_app().run()
    before = query(own_ledger, "SELECT count(*) FROM submissions")[0][0]
    assert metrics(at)["Submissions"].value == f"{before:,}"

    ingest_paths(own_ledger, [str(CASES / "c10_sdk_post_run-demo-1.json")])
    at.run()

    assert metrics(at)["Submissions"].value == f"{before + 1:,}"


def test_hub_refresh_merges_inbox(own_ledger: Path):
    at = new_app().run()
    before = query(own_ledger, "SELECT count(*) FROM submissions")[0][0]
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); sys.stdin.read()",
         str(own_ledger)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        report = ingest_paths(own_ledger, [str(CASES / "c10_sdk_post_run-demo-1.json")], budget=0.3)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert report.queued_in_inbox
    at.run()
    assert metrics(at)["Submissions"].value == f"{before:,}"

    at.button(key="hub_refresh").click().run()

    assert metrics(at)["Submissions"].value == f"{before + 1:,}"
    assert query(own_ledger, "SELECT count(*) FROM submissions")[0][0] == before + 1
    assert store.inbox_batches(own_ledger) == []


# ---------------------------------------------------------------------------
# Shared UI helpers


def test_navigation_lists_existing_pages(tmp_path: Path):
    (tmp_path / "pages").mkdir()
    for name in ("replay_hub.py", "run.py", "explore.py"):
        (tmp_path / "pages" / name).write_text("")

    sections = existing_pages(tmp_path)

    assert {section: [entry.title for entry in entries] for section, entries in sections.items()} == {
        "Monitor": ["Replay Hub"], "Investigate": ["Run"], "Data": ["Explore"],
    }


def test_navigation_registers_run_page(hub_app: AppTest):
    show(hub_app)
    registered = {info["page_name"]: info["url_pathname"] for info in hub_app._registered_pages.values()}

    assert registered["Run"] == "run"
    assert registered["Replay Hub"] == ""


@pytest.mark.parametrize(
    ("run_id", "expected"),
    [
        ("run-abc", "./run?run_id=run-abc"),
        ("a&b=c#d", "./run?run_id=a%26b%3Dc%23d"),
        ("javascript:alert(1)", "./run?run_id=javascript%3Aalert%281%29"),
        ("../../etc/passwd", "./run?run_id=..%2F..%2Fetc%2Fpasswd"),
        ("two words+plus", "./run?run_id=two%20words%2Bplus"),
        (C08_RUN_ID, "./run?run_id=%3Cb%3Er1%3C%2Fb%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E"),
    ],
)
def test_run_url_encodes_every_character(run_id: str, expected: str):
    assert run_url(run_id) == expected
    assert unquote(expected.split("=", 1)[1]) == run_id


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("prod-eu", "`prod-eu`"),
        ("[click](javascript:alert(1))", "`[click](javascript:alert(1))`"),
        ("a `tick` b", "``a `tick` b``"),
        ("`edge`", "`` `edge` ``"),
        ("$5 and $6", "`$5 and $6`"),
        ("two\nlines", "`two lines`"),
        ("", "(empty)"),
    ],
)
def test_code_span_literal(value: str, expected: str):
    assert code_span(value) == expected


def test_code_span_cut_at_limit():
    assert code_span("x" * 100, limit=5) == "`xxxx…`"


@pytest.mark.parametrize(
    ("status", "strict_abort", "tag", "sentence"),
    [
        ("success", False, "success", "success"),
        ("partial", False, "partial", "partial"),
        ("failed", False, "failed", "failed: exception"),
        ("failed", True, "aborted", "failed: aborted at action 4 of 12 by a divergence"),
    ],
)
def test_status_tag_and_sentence(status: str, strict_abort: bool, tag: str, sentence: str):
    assert status_tag(status, strict_abort) == tag
    assert status_text(status, strict_abort=strict_abort, replayed=4, total=12) == sentence


def test_status_column_colors_fixed_set():
    config = status_column()
    options = config["type_config"]["options"]

    assert [option["value"] for option in options] == ["success", "partial", "failed", "aborted"]
    assert [option["color"] for option in options] == ["#15803d", "#b45309", "#b91c1c", "#b91c1c"]


def test_cached_rejects_non_queries(tmp_path: Path):
    with pytest.raises(cache.NotAQuery, match="shutil.rmtree is not a public function of ledger.queries"):
        cache.cached(shutil.rmtree, tmp_path)
    with pytest.raises(cache.NotAQuery):
        cache.cached(lambda ledger: ledger, tmp_path)


def test_cached_rejects_unhashable_argument(tmp_path: Path):
    from ledger.queries import hub

    with pytest.raises(TypeError, match="argument #1 of a cached query is a list"):
        cache.cached(hub.hub_view, tmp_path, ["not", "plain"])
