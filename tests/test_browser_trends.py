"""The Trends page as a user sees it: `streamlit run app.py` on 127.0.0.1, driven by headless Chromium.

The ledger contains the sample data and case C09 (a deploy at UTC midnight
with one submission either side) under a deployment whose name, version and
note are markup. The tests hover the deploy marker and read its tooltip, and
check that every legend entry is drawn whole inside its chart.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import pytest

from ledger import store
from ledger.ingest import ingest_paths
from tests.test_browser_hub import ARTIFACTS, RENDER_TIMEOUT_MS, app_url, browser, context  # noqa: F401

pytestmark = pytest.mark.browser

CASES = Path(__file__).resolve().parent / "data" / "cases"
DEPLOYMENT = "<img src=x onerror=alert(1)>"
VERSION = "<b>v2</b>"
NOTE = "<script>alert(2)</script>"


SAMPLE_DEPLOYMENTS = ("prod-eu", "prod-us", "staging")
LEGEND_LABELS = [*SAMPLE_DEPLOYMENTS, "regression", "improvement", "marker"]


@pytest.fixture(scope="module")
def browser_ledger(sample_ledger_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("browser-trends") / "trends.duckdb"
    shutil.copyfile(sample_ledger_template, path)
    ingest_paths(path, [str(CASES / "c09_midnight.jsonl")], deployment=DEPLOYMENT)
    store.add_deploys(path, [{"deployment": DEPLOYMENT, "version": VERSION, "note": NOTE,
                              "deployed_at": datetime(2026, 3, 1, tzinfo=timezone.utc)}], origin="file")
    return path


def test_trends_marker_tooltip_literal(app_url, context):  # noqa: F811
    page = context.new_page()
    page.goto(f"{app_url}/trends?deployment={quote(DEPLOYMENT, safe='')}&tz=utc")
    page.get_by_text("Divergence rate", exact=True).first.wait_for(timeout=RENDER_TIMEOUT_MS)
    chart = page.locator('[data-testid="stVegaLiteChart"]').first
    chart.wait_for(timeout=RENDER_TIMEOUT_MS)
    page.wait_for_timeout(1500)
    box = chart.bounding_box()

    # The two hour buckets' points sit at 23:30 and 00:30 UTC, so the rule at midnight is near the middle.
    tooltip = page.locator("#vg-tooltip-element")
    text = ""
    for step in range(120):
        page.mouse.move(box["x"] + box["width"] * (0.3 + step * 0.004), box["y"] + box["height"] * 0.3)
        page.wait_for_timeout(40)
        if tooltip.count() and tooltip.is_visible() and "Deploys" in tooltip.inner_text():
            text = tooltip.inner_text()
            break
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "trends-marker-tooltip.png"))

    assert DEPLOYMENT in text
    assert VERSION in text
    assert NOTE in text
    assert "2026-03-01 00:00:00" in text
    assert tooltip.locator("img, b, script").count() == 0
    assert context.dialogs == []


def test_trends_c09_table_viewer_zone(app_url, context):  # noqa: F811
    page = context.new_page()
    page.goto(f"{app_url}/trends?deployment={quote(DEPLOYMENT, safe='')}")
    header = page.get_by_text("Deployed at (America/New_York)").first
    # The data grid draws on a canvas and keeps its cells in a hidden table for accessibility.
    header.wait_for(state="attached", timeout=RENDER_TIMEOUT_MS)

    # For a viewer in New York the deploy at UTC midnight shows as 19:00 the evening before; buckets stay in UTC.
    assert page.get_by_text("2026-02-28 19:00:00", exact=True).count() == 1
    assert page.get_by_text("Hour buckets in UTC", exact=False).count() == 1
    assert context.dialogs == []


@pytest.mark.parametrize("width", [1000, 1400])
def test_trends_legends_whole_in_charts(app_url, browser, width: int):  # noqa: F811
    context = browser.new_context(viewport={"width": width, "height": 3200}, timezone_id="UTC")
    page = context.new_page()
    page.goto(f"{app_url}/trends?" + "&".join(f"deployment={name}" for name in SAMPLE_DEPLOYMENTS))
    charts = page.locator('[data-testid="stVegaLiteChart"]')
    charts.nth(3).locator(".role-legend-label text").last.wait_for(timeout=RENDER_TIMEOUT_MS)
    found = page.evaluate("""() => Array.from(document.querySelectorAll('[data-testid="stVegaLiteChart"]'))
        .map(chart => ({
        right: chart.getBoundingClientRect().right,
        labels: Array.from(chart.querySelectorAll('.role-legend-label text')).map(text => ({
            text: text.textContent, right: text.getBoundingClientRect().right})),
    }))""")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"trends-legends-{width}.png"))
    context.close()

    assert len(found) == 4
    for chart in found:
        # Vega shortens a label past its limit with an ellipsis and clips what passes the chart's edge.
        assert [label["text"] for label in chart["labels"]] == LEGEND_LABELS
        overflowing = [label["text"] for label in chart["labels"] if label["right"] > chart["right"]]
        assert overflowing == []
