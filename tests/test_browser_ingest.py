"""The Ingest and Explore pages as a user sees them: `streamlit run app.py` on 127.0.0.1, driven by headless Chromium.

The user uploads files (one named with markup), reads the report, downloads
the rejected records, then downloads a filtered export from Explore; both
downloads are compared with the ledger by hand-written SQL. Screenshots land
in test-artifacts/.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from tests.browser import CHROMIUM, streamlit_server

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CASES = Path(__file__).resolve().parent / "data" / "cases"
ARTIFACTS = ROOT / "test-artifacts"
RENDER_TIMEOUT_MS = 60_000
MARKUP_NAME = "<img src=x onerror=alert(1)>bad.jsonl"


def query(ledger: Path, sql: str, parameters: list | tuple = ()) -> list[tuple]:
    with duckdb.connect(str(ledger), read_only=True) as connection:
        return connection.execute(sql, list(parameters)).fetchall()



@pytest.fixture(scope="module")
def browser_ledger(sample_ledger_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("browser_ingest") / "ledger.duckdb"
    shutil.copyfile(sample_ledger_template, path)
    return path


@pytest.fixture(scope="module")
def app_url(browser_ledger: Path, tmp_path_factory: pytest.TempPathFactory):
    """The URL of `streamlit run app.py` on the browser ledger, on a free port of 127.0.0.1."""
    # The server's uploads and prepared exports go to a temporary folder of the test's own.
    server_temp = tmp_path_factory.mktemp("ingest_server_tmp")
    with streamlit_server(browser_ledger, tmp_path_factory.mktemp("ingest_server"), {"TMPDIR": str(server_temp)}) as url:
        yield url


@pytest.fixture(scope="module")
def page(app_url: str):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing; install Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        context = browser.new_context(viewport={"width": 1500, "height": 1300}, timezone_id="UTC",
                                      accept_downloads=True)
        dialogs: list[str] = []
        tab = context.new_page()
        tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        tab.dialogs = dialogs
        yield tab
        context.close()
        browser.close()


def open_from_navigation(page, app_url: str, title: str) -> None:
    """Open the app at its root, as a user does, and go to a page through the sidebar navigation."""
    page.goto(app_url)
    link = page.get_by_test_id("stSidebarNav").get_by_role("link", name=title)
    link.wait_for(timeout=RENDER_TIMEOUT_MS)
    wait_until_idle(page)
    link.click()
    wait_until_idle(page)


def wait_until_idle(page) -> None:
    """Wait until the app has finished its script run, so a click is not lost in a rerun."""
    page.wait_for_timeout(300)
    page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=RENDER_TIMEOUT_MS)


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_browser_upload_report_and_downloads(page, app_url: str, browser_ledger: Path):
    open_from_navigation(page, app_url, "Ingest")
    page.get_by_text("Replay results").first.wait_for(timeout=RENDER_TIMEOUT_MS)
    before = query(browser_ledger, "SELECT max(ingest_id) FROM ingest_log")[0][0]

    page.locator("input[type=file]").set_input_files([
        {"name": MARKUP_NAME, "mimeType": "application/octet-stream",
         "buffer": (CASES / "c06_malformed.jsonl").read_bytes()},
        {"name": "c10_sdk_post_run-demo-1.json", "mimeType": "application/json",
         "buffer": (CASES / "c10_sdk_post_run-demo-1.json").read_bytes()},
    ])
    # The uploader shortens long names in the middle, as in "c10_sd...demo-1.json".
    page.get_by_text("demo-1.json").first.wait_for(timeout=RENDER_TIMEOUT_MS)
    wait_until_idle(page)
    page.get_by_role("button", name="Ingest", exact=True).click()
    heading = page.get_by_text(re.compile(r"^Report of ingest #\d+$"))
    heading.wait_for(timeout=RENDER_TIMEOUT_MS)
    page.get_by_role("button", name="Download rejected records (CSV)").wait_for(timeout=RENDER_TIMEOUT_MS)
    page.wait_for_timeout(1000)  # the tables draw on a canvas after their frame appears
    screenshot(page, "ingest-report.png")

    ingest_id, sources, read, ingested, rejected = query(
        browser_ledger, "SELECT ingest_id, sources, records_read, ingested, rejected FROM ingest_log "
                        "ORDER BY ingest_id DESC LIMIT 1")[0]
    assert ingest_id == before + 1
    assert heading.inner_text() == f"Report of ingest #{ingest_id}"
    assert sources == [MARKUP_NAME, "c10_sdk_post_run-demo-1.json"]
    assert (read, ingested, rejected) == (6, 3, 3)
    metrics = dict(zip(page.get_by_test_id("stMetricLabel").all_inner_texts(),
                       page.get_by_test_id("stMetricValue").all_inner_texts()))
    assert metrics["Records read"] == "6"
    assert metrics["Ingested"] == "3"
    assert metrics["Rejected"] == "3"
    assert page.locator("img[src=x]").count() == 0
    assert page.dialogs == []

    with page.expect_download(timeout=RENDER_TIMEOUT_MS) as waiting:
        page.get_by_role("button", name="Download rejected records (CSV)").click()
    download = waiting.value
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    expected = query(browser_ledger, "SELECT location, reason FROM rejected WHERE ingest_id = ? ORDER BY rowid",
                     [ingest_id])
    assert download.suggested_filename == f"rejected-{ingest_id}.csv"
    assert [(row["location"], row["reason"]) for row in rows] == expected
    assert [row["location"] for row in rows] == [f"{MARKUP_NAME}:{line}" for line in (2, 3, 5)]


def test_browser_explore_export_download(page, app_url: str, browser_ledger: Path):
    open_from_navigation(page, app_url, "Explore")
    minimum = page.get_by_label("Divergences at least")
    minimum.wait_for(timeout=RENDER_TIMEOUT_MS)
    wait_until_idle(page)
    minimum.fill("2")
    minimum.press("Enter")
    wait_until_idle(page)
    count, saved = query(browser_ledger, "SELECT count(*), sum(cost_savings) FROM submissions "
                                         "WHERE divergences_detected >= 2")[0]
    prepare = page.get_by_role("button", name=f"Prepare a file of all {count:,} matching submissions")
    prepare.wait_for(timeout=RENDER_TIMEOUT_MS)
    wait_until_idle(page)
    prepare.click()
    download_button = page.get_by_role("button", name="Download CSV")
    download_button.wait_for(timeout=RENDER_TIMEOUT_MS)
    screenshot(page, "explore-download.png")

    with page.expect_download(timeout=RENDER_TIMEOUT_MS) as waiting:
        download_button.click()
    download = waiting.value
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))

    assert download.suggested_filename.startswith("replay-ledger-submissions-")
    assert download.suggested_filename.endswith(".csv")
    assert len(rows) == count
    assert sum(Decimal(row["cost_savings"]) for row in rows) == saved
    assert {row["submission_id"] for row in rows} == {row[0] for row in query(
        browser_ledger, "SELECT submission_id FROM submissions WHERE divergences_detected >= 2")}
    assert page.dialogs == []


def test_browser_sql_box_refuses_copy(page, app_url: str, tmp_path: Path):
    target = tmp_path / "stolen.csv"
    open_from_navigation(page, app_url, "Explore")
    page.get_by_role("tab", name="SQL").click()
    box = page.get_by_role("textbox", name="SQL")
    box.wait_for(timeout=RENDER_TIMEOUT_MS)
    wait_until_idle(page)
    box.fill(f"COPY submissions TO '{target}'")
    page.get_by_role("button", name="Run query").click()
    alert = page.get_by_text("Not allowed:")
    alert.wait_for(timeout=RENDER_TIMEOUT_MS)
    screenshot(page, "explore-sql-refused.png")

    assert "COPY statements are not allowed" in alert.inner_text()
    assert not target.exists()
