"""The Deployments page under Streamlit's AppTest on real ledgers; every number is checked against hand SQL."""

from __future__ import annotations

import shutil
from datetime import date, datetime, time, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from urllib.parse import quote

import duckdb
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from ledger import store
from ledger.ingest import ingest_paths

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "deployments.py")
CASES = Path(__file__).resolve().parent / "data" / "cases"
SAMPLE = ROOT / "sample_data"
MARKUP_DEPLOYMENT = "<script>alert(1)</script>&x=1"
UTC = timezone.utc


def query(ledger: Path, sql: str, parameters: list | tuple = ()) -> list[tuple]:
    with duckdb.connect(str(ledger), read_only=True) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        return connection.execute(sql, list(parameters)).fetchall()


def money(amount: Decimal) -> str:
    if 0 < amount < Decimal("0.01"):
        return "<$0.01"
    return f"${amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%"


@pytest.fixture(scope="module")
def deployments_ledger(sample_ledger_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("deployments") / "deployments.duckdb"
    shutil.copyfile(sample_ledger_template, path)
    ingest_paths(path, [str(CASES / "c11_strict_abort_run-abc.json")], deployment=MARKUP_DEPLOYMENT)
    return path


@pytest.fixture(scope="module")
def page(deployments_ledger: Path) -> AppTest:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(store.LEDGER_ENV, str(deployments_ledger))
        yield AppTest.from_file(PAGE, default_timeout=60)


@pytest.fixture
def own_page(sample_ledger: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """A page on a private copy of the sample ledger, for tests that write."""
    monkeypatch.setenv(store.LEDGER_ENV, str(sample_ledger))
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.context["timezone"] = "UTC"
    return at


def show(at: AppTest, zone: str = "UTC", **params) -> AppTest:
    params.setdefault("range", "all")
    at.context["timezone"] = zone
    at.query_params.clear()
    at.query_params.update(params)
    at.run()
    assert not at.exception, [error.value for error in at.exception]
    return at


def summary(at: AppTest) -> pd.DataFrame:
    return next(frame.value for frame in at.dataframe if "Failed · aborted" in frame.value.columns)


def texts(at: AppTest) -> list[str]:
    return [element.value for element in [*at.markdown, *at.caption, *at.info, *at.warning, *at.error, *at.success]]


def test_deployments_table_matches_sql(page: AppTest, deployments_ledger: Path):
    show(page)
    table = summary(page)
    expected = query(deployments_ledger, """
        SELECT deployment, count(*),
               count(*) FILTER (WHERE status = 'success'), count(*) FILTER (WHERE status = 'partial'),
               count(*) FILTER (WHERE status = 'failed' AND divergences_detected = 1 AND actions_replayed < actions_total),
               count(*) FILTER (WHERE status = 'failed' AND NOT (divergences_detected = 1
                                AND actions_replayed < actions_total)),
               count(*) FILTER (WHERE divergences_detected > 0), sum(cost_savings),
               strftime(min(submitted_at), '%Y-%m-%d %H:%M:%S'), strftime(max(submitted_at), '%Y-%m-%d %H:%M:%S')
        FROM submissions GROUP BY deployment ORDER BY count(*) DESC, deployment""")

    assert len(table) == len(expected) == 4
    for row, (name, n, success, partial, aborted, failed, diverged, saved, first, last) in zip(
            table.to_dict("records"), expected):
        assert row["Deployment"].startswith(f"./trends?deployment={quote(name, safe='')}")
        assert row["Submissions"] == n
        assert row["Success"] == percent(success, n)
        assert row["Partial"] == percent(partial, n)
        assert row["Failed · aborted"] == percent(aborted, n)
        assert row["Failed · exception"] == percent(failed, n)
        assert row["Divergence rate"] == f"{percent(diverged, n)} ({diverged:,})"
        assert row["Savings"] == money(saved)
        assert row["First submission"] == first
        assert row["Last submission"] == last


def test_deployments_markup_name_is_data(page: AppTest):
    show(page)
    links = list(summary(page)["Deployment"])

    assert f"./trends?deployment={quote(MARKUP_DEPLOYMENT, safe='')}" in links
    assert all("<script>" not in link for link in links)


def test_deployments_links_keep_range(page: AppTest):
    show(page, range="custom", **{"from": "2026-10-01", "to": "2026-10-31", "tz": "utc"})

    assert "./trends?deployment=prod-eu&range=custom&from=2026-10-01&to=2026-10-31&tz=utc" in list(
        summary(page)["Deployment"])


@pytest.mark.parametrize(
    ("sort", "order", "sql_order"),
    [("savings", "asc", "sum(cost_savings) ASC"), ("deployment", "desc", "deployment DESC"),
     ("divergence_rate", "desc", "count(*) FILTER (WHERE divergences_detected > 0) / count(*) DESC")],
)
def test_deployments_sort_param(page: AppTest, deployments_ledger: Path, sort: str, order: str, sql_order: str):
    show(page, sort=sort, order=order)
    expected = query(deployments_ledger, f"SELECT deployment FROM submissions GROUP BY deployment "
                                         f"ORDER BY {sql_order}, deployment")

    assert list(summary(page)["Deployment"]) == [
        f"./trends?deployment={quote(name, safe='')}" for (name,) in expected]
    assert page.selectbox(key="deployments_sort").value == sort


def test_deployments_bad_sort_link(page: AppTest):
    show(page, sort="cost; DROP TABLE deploys")

    assert any(text.startswith("The link's sort column `cost; DROP TABLE deploys` is not one of") for text in texts(page))
    assert page.selectbox(key="deployments_sort").value == "submissions"


def test_deployments_stale_warning(page: AppTest, deployments_ledger: Path):
    show(page, stale_days="1")
    now = datetime.now(UTC)
    stale = [name for name, last in query(deployments_ledger, "SELECT deployment, max(submitted_at) FROM submissions "
                                                              "GROUP BY deployment ORDER BY 1") if (now - last).days >= 1]
    warning = next(text for text in texts(page) if "sent nothing for more than 1 day" in text)

    assert stale
    assert warning.startswith(f"{len(stale)} deployment")
    assert all(f"`{name}`" in warning for name in stale if "`" not in name)
    assert all(value.startswith("⚠ ") for value in summary(page)["Last seen"]) == (len(stale) == 4)


def test_deployments_no_stale_warning_long_period(page: AppTest):
    show(page, stale_days="3650")

    assert not [text for text in texts(page) if "sent nothing" in text]


def test_deployments_markers_listed(page: AppTest, deployments_ledger: Path):
    show(page)
    markers = next(frame.value for frame in page.dataframe if "Origin" in frame.value.columns)
    expected = query(deployments_ledger, "SELECT strftime(deployed_at, '%Y-%m-%d %H:%M:%S'), deployment, version, origin "
                                         "FROM deploys ORDER BY deployed_at DESC")

    assert [tuple(row) for row in markers[["Deployed at", "Deployment", "Version", "Origin"]].itertuples(index=False)] \
        == expected


# ---------------------------------------------------------------------------
# The deploy marker form and inferred markers


def submit_form(at: AppTest, deployment: str, version: str, day: date, clock: time, note: str = "") -> AppTest:
    at.selectbox(key="deployments_form_deployment").set_value(deployment)
    at.text_input(key="deployments_form_version").input(version)
    at.date_input(key="deployments_form_date").set_value(day)
    at.time_input(key="deployments_form_time").set_value(clock)
    at.text_input(key="deployments_form_note").input(note)
    next(button for button in at.button if button.label == "Add marker").click()
    at.run()
    assert not at.exception, [error.value for error in at.exception]
    return at


def test_form_adds_marker_in_viewer_zone(own_page: AppTest, sample_ledger: Path):
    show(own_page, "Europe/Berlin")

    submit_form(own_page, "prod-us", "2.4.0", date(2026, 12, 1), time(9, 30), "hotfix")
    stored = query(sample_ledger, "SELECT deployed_at, note, origin FROM deploys WHERE version = '2.4.0'")

    assert stored == [(datetime(2026, 12, 1, 8, 30, tzinfo=UTC), "hotfix", "app")]
    assert "Deploy marker `prod-us` `2.4.0` at 2026-12-01 09:30:00 Europe/Berlin added." in texts(own_page)


def test_form_rejects_empty_version(own_page: AppTest, sample_ledger: Path):
    show(own_page)
    before = query(sample_ledger, "SELECT count(*) FROM deploys")

    submit_form(own_page, "prod-us", "  ", date(2026, 12, 1), time(9, 30))

    assert any(text.startswith("The marker is invalid: version: must be non-empty text") for text in texts(own_page))
    assert query(sample_ledger, "SELECT count(*) FROM deploys") == before


def test_form_repeat_marker_reported(own_page: AppTest, sample_ledger: Path):
    show(own_page)

    submit_form(own_page, "prod-eu", "2.3.0", date(2026, 10, 20), time(14, 0))

    assert "Deploy marker `prod-eu` `2.3.0` at 2026-10-20 14:00:00 UTC was already in the ledger." in texts(own_page)
    assert query(sample_ledger, "SELECT count(*) FROM deploys WHERE version = '2.3.0'") == [(1,)]


def test_inferred_markers_button(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ledger = tmp_path / "unmarked.duckdb"
    ingest_paths(ledger, [str(SAMPLE)], origin="demo")
    monkeypatch.setenv(store.LEDGER_ENV, str(ledger))
    at = show(AppTest.from_file(PAGE, default_timeout=60))

    assert any(text.startswith("9 version changes in the data") for text in texts(at))
    next(button for button in at.button if button.label == "Store 9 inferred markers").click()
    at.run()

    assert query(ledger, "SELECT count(*), min(origin), max(origin) FROM deploys") == [(9, "inferred", "inferred")]
    assert not any(text.startswith("9 version changes in the data") for text in texts(at))
