"""The Replay Hub as a user sees it: `streamlit run app.py` on 127.0.0.1, driven by headless Chromium.

The server runs on a temporary ledger (the sample data plus cases C08 and C11
under deployments of their own). Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import shutil
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import duckdb
import pytest

from ledger.ingest import ingest_paths
from tests.browser import chromium, streamlit_server

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CASES = Path(__file__).resolve().parent / "data" / "cases"
ARTIFACTS = ROOT / "test-artifacts"
VIEWER_ZONE = "America/New_York"
C08_RUN_ID = "<b>r1</b><script>alert(1)</script>"
C08_ACTION = "[click](javascript:alert(1))"
RENDER_TIMEOUT_MS = 30_000
HEADER_HEIGHT = 38
ROW_HEIGHT = 35


def query(ledger: Path, sql: str, parameters: list | tuple = ()) -> list[tuple]:
    with duckdb.connect(str(ledger), read_only=True) as connection:
        return connection.execute(sql, list(parameters)).fetchall()



def expected_money(amount: Decimal) -> str:
    if amount == 0:
        return "$0.00"
    if amount < Decimal("0.01"):
        return "<$0.01"
    return f"${amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"


@pytest.fixture(scope="module")
def browser_ledger(sample_ledger_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("browser") / "browser.duckdb"
    shutil.copyfile(sample_ledger_template, path)
    ingest_paths(path, [str(CASES / "c08_markup.json")], deployment="case-c08")
    ingest_paths(path, [str(CASES / "c11_strict_abort_run-abc.json")], deployment="case-c11")
    return path


@pytest.fixture(scope="module")
def app_url(browser_ledger: Path, tmp_path_factory: pytest.TempPathFactory):
    """The URL of `streamlit run app.py` serving the browser ledger on a free port of 127.0.0.1."""
    with streamlit_server(browser_ledger, tmp_path_factory.mktemp("server")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport={"width": 1500, "height": 1100}, timezone_id=VIEWER_ZONE)
    dialogs: list[str] = []
    context.on("page", lambda page: page.on("dialog", lambda dialog: (dialogs.append(dialog.message),
                                                                      dialog.dismiss())))
    context.dialogs = dialogs
    yield context
    context.close()


def open_hub(context, url: str):
    page = context.new_page()
    page.goto(url)
    wait_for_table(page)
    return page


def wait_for_table(page) -> None:
    page.wait_for_selector('[data-testid="stDataFrame"] [role="gridcell"]', state="attached",
                           timeout=RENDER_TIMEOUT_MS)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=RENDER_TIMEOUT_MS)


def tile_values(page) -> dict[str, str]:
    tiles = {}
    for metric in page.locator('[data-testid="stMetric"]').all():
        label = metric.locator('[data-testid="stMetricLabel"]').inner_text().strip()
        tiles[label] = metric.locator('[data-testid="stMetricValue"]').inner_text().strip()
    return tiles


def first_row(page, columns: int = 7) -> list[str]:
    cells = page.locator('[data-testid="stDataFrame"] [role="gridcell"]')
    return [cells.nth(index).text_content() for index in range(columns)]


def assert_no_markup_elements(page) -> None:
    """Check that no value of C08 became an element: no script, bold, image or javascript: link."""
    assert page.locator("script", has_text="alert(1)").count() == 0
    assert page.locator("b", has_text="r1").count() == 0
    assert page.locator('img[src="x"]').count() == 0
    assert page.locator('a[href^="javascript:"]').count() == 0
    hrefs = page.eval_on_selector_all("a[href]", "links => links.map(link => link.href)")
    assert all(href.startswith(("http://", "https://")) for href in hrefs), hrefs


def test_browser_hub_tiles_and_first_row(context, app_url: str, browser_ledger: Path):
    page = open_hub(context, app_url)
    count, replayed, divergences, saved = query(browser_ledger, """
        SELECT count(*), sum(actions_replayed), sum(divergences_detected), sum(cost_savings) FROM submissions""")[0]
    newest = query(browser_ledger, """
        SELECT run_id,
               CASE WHEN status = 'failed' AND divergences_detected = 1 AND actions_replayed < actions_total
                    THEN 'aborted' ELSE status END,
               actions_replayed, actions_total, divergences_detected, cost_savings, submitted_at, deployment
        FROM submissions ORDER BY submitted_at DESC, rowid DESC LIMIT 1""")[0]

    assert tile_values(page) == {
        "Submissions": f"{count:,}",
        "Actions Replayed": f"{replayed:,}",
        "Divergences": f"{divergences:,}",
        "Cost Saved": expected_money(saved),
    }
    submitted = newest[6].astimezone(ZoneInfo(VIEWER_ZONE)).strftime("%Y-%m-%d %H:%M:%S")
    assert first_row(page) == [
        "./run?run_id=" + quote(newest[0], safe=""), newest[1], f"{newest[2]:,} / {newest[3]:,}",
        str(newest[4]), expected_money(newest[5]), submitted, newest[7],
    ]
    assert page.get_by_text(f"Times in {VIEWER_ZONE}").count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "replay-hub.png"), full_page=True)
    assert context.dialogs == []


def test_browser_c08_link_opens_run_page_as_text(context, app_url: str, browser_ledger: Path):
    page = open_hub(context, f"{app_url}/?deployment=case-c08&tz=utc")
    assert first_row(page)[:2] == ["./run?run_id=" + quote(C08_RUN_ID, safe=""), "aborted"]
    assert_no_markup_elements(page)

    canvas = page.locator('[data-testid="stDataFrame"] canvas').first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x, y = box["x"] + 40, box["y"] + HEADER_HEIGHT + ROW_HEIGHT / 2
    with context.expect_page(timeout=RENDER_TIMEOUT_MS) as opened:
        page.mouse.move(x - 5, y)
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.up()
    run_page = opened.value
    run_page.wait_for_selector('[data-testid="stText"]', timeout=RENDER_TIMEOUT_MS)
    wait_for_table(run_page)

    assert run_page.url == f"{app_url}/run?run_id=" + quote(C08_RUN_ID, safe="")
    assert run_page.locator('[data-testid="stText"]').all_inner_texts() == [C08_RUN_ID]
    cells = run_page.locator('[data-testid="stDataFrame"] [role="gridcell"]').all_text_contents()
    assert C08_ACTION in cells
    assert any("<img src=x onerror=alert(document.domain)>" in cell for cell in cells)
    assert_no_markup_elements(run_page)
    run_page.screenshot(path=str(ARTIFACTS / "run-c08.png"), full_page=True)
    assert context.dialogs == []


def test_browser_two_tabs_filter_at_once(context, app_url: str, browser_ledger: Path):
    tabs = {"prod-eu": open_hub(context, app_url), "staging": open_hub(context, app_url)}
    for deployment, page in tabs.items():
        page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]').first.click()
        page.keyboard.type(deployment)
        page.keyboard.press("Enter")
    for deployment, page in tabs.items():
        count, saved = query(browser_ledger, "SELECT count(*), sum(cost_savings) FROM submissions "
                                             "WHERE deployment = ?", [deployment])[0]
        page.locator('[data-testid="stMetricValue"]').first.filter(has_text=f"{count:,}").wait_for(
            timeout=RENDER_TIMEOUT_MS)
        wait_for_table(page)
        assert tile_values(page)["Submissions"] == f"{count:,}"
        assert tile_values(page)["Cost Saved"] == expected_money(saved)
        assert page.url.endswith(f"?deployment={deployment}")
