"""The Run and Divergence causes pages as a user sees them: `streamlit run app.py` on 127.0.0.1, headless Chromium.

C08 puts HTML, a script and a javascript: link into a run id, an action name
and a divergence value. Every one must show as literal text: no element is
created from data, no dialog opens, and no link leaves http(s) or the app.
Screenshots land in test-artifacts/.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from ledger import platform
from ledger.ingest import ingest_paths
from tests.browser import chromium, streamlit_server

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CASES = Path(__file__).resolve().parent / "data" / "cases"
ARTIFACTS = ROOT / "test-artifacts"
C08_RUN_ID = "<b>r1</b><script>alert(1)</script>"
C08_ACTION = "[click](javascript:alert(1))"
C08_VALUE = "<img src=x onerror=alert(document.domain)>"
RENDER_TIMEOUT_MS = 30_000

# Elements of the app's main area, ignoring the sidebar; the checks look for any element data could have made.
NO_DATA_ELEMENTS_JS = """
() => {
    const main = document.querySelector('[data-testid="stMain"]') || document.body;
    return {
        bold: Array.from(main.querySelectorAll('b')).filter(e => e.textContent === 'r1').length,
        scripts: Array.from(main.querySelectorAll('script')).length,
        images: Array.from(main.querySelectorAll('img')).filter(e => e.getAttribute('src') === 'x').length,
        onerror: Array.from(main.querySelectorAll('[onerror]')).length,
        hrefs: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
    };
}
"""



@pytest.fixture(scope="module")
def browser_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("browser_run") / "run.duckdb"
    ingest_paths(path, [str(CASES / "c08_markup.json")], deployment="case-c08")
    ingest_paths(path, [str(CASES / "c10_sdk_post_run-demo-1.json"), str(CASES / "c11_strict_abort_run-abc.json")],
                 deployment="case-sdk")
    return path


@pytest.fixture(scope="module")
def app_url(browser_ledger: Path, tmp_path_factory: pytest.TempPathFactory):
    """The URL of `streamlit run app.py` on the browser ledger, with a platform link configured."""
    with streamlit_server(browser_ledger, tmp_path_factory.mktemp("server"), {platform.PLATFORM_URL_ENV: "https://sentinel.example.com/runs/{run_id}"}) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def served(browser, app_url: str) -> str:
    """The app URL after one session has opened the app's root.

    NOTE: until some session has run app.py, Streamlit serves a deep link such
    as /run by running pages/run.py on its own, without app.py's navigation
    and page setup, so the tests open the root once first.
    """
    context = browser.new_context()
    page = context.new_page()
    page.goto(app_url)
    page.get_by_role("heading", name="Replay Hub").wait_for(timeout=RENDER_TIMEOUT_MS)
    context.close()
    return app_url


@pytest.fixture
def page(browser, served: str):
    context = browser.new_context(viewport={"width": 1500, "height": 1400}, timezone_id="UTC")
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()


def open_run(page, app_url: str, run_id: str) -> None:
    page.goto(f"{app_url}/run?run_id={quote(run_id, safe='')}")
    page.get_by_text("Cost Saved").first.wait_for(timeout=RENDER_TIMEOUT_MS)
    page.locator('[data-testid="stHtml"]').first.wait_for(timeout=RENDER_TIMEOUT_MS)
    page.wait_for_timeout(500)


def check_links(hrefs: list[str], app_url: str) -> None:
    for href in hrefs:
        scheme = urlsplit(href).scheme.lower()
        assert scheme in ("", "http", "https"), href
        assert not href.lower().lstrip().startswith("javascript:"), href


def test_browser_run_c08_literal_text(page, app_url: str):
    open_run(page, app_url, C08_RUN_ID)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "run_c08.png"), full_page=True)

    main = page.locator('[data-testid="stMain"]')
    text = main.inner_text()
    found = page.evaluate(NO_DATA_ELEMENTS_JS)

    assert C08_RUN_ID in text
    assert C08_ACTION in text
    assert C08_VALUE in text
    assert found["bold"] == 0
    assert found["scripts"] == 0
    assert found["images"] == 0
    assert found["onerror"] == 0
    check_links(found["hrefs"], app_url)
    assert page.dialogs == []


def test_browser_run_c08_diff_marks_value(page, app_url: str):
    open_run(page, app_url, C08_RUN_ID)

    actual_side = page.locator('[data-testid="stHtml"] pre').nth(1)
    marked = actual_side.locator("span").all_inner_texts()

    assert C08_VALUE in actual_side.inner_text()
    assert marked == [C08_VALUE]


def test_browser_run_platform_link_encoded(page, app_url: str):
    open_run(page, app_url, C08_RUN_ID)

    href = page.get_by_role("link", name="Open on the platform").get_attribute("href")

    assert href == "https://sentinel.example.com/runs/" + quote(C08_RUN_ID, safe="")


def test_browser_run_c11_abort_and_c10_causes(page, app_url: str):
    open_run(page, app_url, "run-abc")
    abort_text = page.locator('[data-testid="stMain"]').inner_text()
    open_run(page, app_url, "run-demo-1")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "run_c10.png"), full_page=True)
    demo_text = page.locator('[data-testid="stMain"]').inner_text()

    assert "Aborted at action 4 of 12" in abort_text
    assert "kwargs.ts: timestamp." in demo_text.replace("\n", " ").replace(" :", ":")
    assert "kwargs.seed: random number. Pin the seed." in demo_text.replace("\n", " ").replace(" :", ":")


def test_browser_causes_c08_literal_text(page, app_url: str):
    page.goto(f"{app_url}/causes?deployment=case-c08")
    page.get_by_text("Hotspots").first.wait_for(timeout=RENDER_TIMEOUT_MS)
    page.wait_for_timeout(1500)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "causes_c08.png"), full_page=True)

    found = page.evaluate(NO_DATA_ELEMENTS_JS)
    text = page.locator('[data-testid="stMain"]').inner_text()

    assert C08_ACTION in text
    assert found["images"] == 0
    assert found["scripts"] == 0
    check_links(found["hrefs"], app_url)
    assert page.dialogs == []
