"""The app's pages by section, and which of them exist, so a page joins the navigation once its file is created."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ledger.ui.links import RUN_PAGE_URL_PATH


@dataclass(frozen=True)
class PageEntry:
    """A page of the app: its script relative to app.py, title, Material icon and URL path."""

    file: str
    title: str
    icon: str
    url_path: str


PAGES: dict[str, list[PageEntry]] = {
    "Monitor": [
        PageEntry("pages/replay_hub.py", "Replay Hub", ":material/dashboard:", "hub"),
        PageEntry("pages/trends.py", "Trends", ":material/show_chart:", "trends"),
        PageEntry("pages/deployments.py", "Deployments", ":material/rocket_launch:", "deployments"),
        PageEntry("pages/roi.py", "ROI", ":material/savings:", "roi"),
    ],
    "Investigate": [
        PageEntry("pages/run.py", "Run", ":material/search:", RUN_PAGE_URL_PATH),
        PageEntry("pages/causes.py", "Divergence causes", ":material/troubleshoot:", "causes"),
    ],
    "Data": [
        PageEntry("pages/ingest.py", "Ingest", ":material/upload_file:", "ingest"),
        PageEntry("pages/explore.py", "Explore", ":material/table_view:", "explore"),
    ],
}
DEFAULT_PAGE = "pages/replay_hub.py"


def existing_pages(root: Path) -> dict[str, list[PageEntry]]:
    """Return the sections with only the pages whose files exist under `root`; empty sections are left out."""
    sections = {
        section: [entry for entry in entries if (root / entry.file).is_file()]
        for section, entries in PAGES.items()
    }
    return {section: entries for section, entries in sections.items() if entries}
