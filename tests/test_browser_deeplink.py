"""A page URL opened first on a fresh server still gets the app's frame: navigation, layout, filters."""

from __future__ import annotations

import pytest

from tests.test_browser_hub import ARTIFACTS, RENDER_TIMEOUT_MS, app_url, browser, browser_ledger, context  # noqa: F401

pytestmark = pytest.mark.browser


def test_deep_link_first_request_gets_frame(app_url, context):  # noqa: F811
    page = context.new_page()
    page.goto(f"{app_url}/run?run_id=run-abc")
    page.get_by_text("Aborted at action 4 of 12", exact=False).first.wait_for(timeout=RENDER_TIMEOUT_MS)
    navigation = page.locator('[data-testid="stSidebarNav"]')
    assert navigation.get_by_text("Monitor").count() == 1
    assert navigation.get_by_text("Divergence causes").count() == 1
    assert navigation.get_by_text("replay hub", exact=True).count() == 0
    # The page runs once, inside the frame: one title, not a second copy from the run on its own.
    assert page.get_by_role("heading", name="Run", exact=True).count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "deep-link-run.png"))
