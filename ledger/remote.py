"""Pulling submission history from a platform's replay API into the ledger.

A pull pages through ``GET /api/v1/replay/history/?skip=&limit=200`` newest
first and ingests each page as it arrives (ids make that idempotent). It
retries ``429``, ``5xx`` and network errors with exponential backoff, waiting
at least as long as a ``Retry-After`` header requests.

Where it stands is saved in the ledger after every page, per source URL:

- during a pull, the next offset and the total the server reported, so a pull
  that stopped resumes there (shifted by the submissions that arrived on top
  since, which push older pages down);
- after a complete pull, the newest submission time seen, so the next pull
  stops once it reaches what it already has.

NOTE: pages are found by offset, as the platform's API offers. A submission
that a server adds with an older time than the last pull's newest is not
pulled again unless the pull is given ``--since`` or ``--full``.
"""

from __future__ import annotations

import email.utils
import logging
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from ledger import store
from ledger.ingest import ingest_paths
from ledger.models import FieldError, parse_timestamp
from ledger.readers import ENVELOPE_KEYS

log = logging.getLogger(__name__)

HISTORY_PATH = "/api/v1/replay/history/"
PAGE_LIMIT = 200
DEFAULT_RETRIES = 8
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0
RETRY_AFTER_CAP_SECONDS = 300.0
REQUEST_TIMEOUT_SECONDS = 30.0

Progress = Callable[[int, int | None], None]


class PullError(Exception):
    """A pull stopped: the server refused it, sent something that is not a history page, or kept failing."""


@dataclass
class PullReport:
    """The outcome of one pull: pages and submissions fetched, what the ingest made of them, retries."""

    source: str
    pages: int = 0
    fetched: int = 0
    ingested: int = 0
    duplicates: int = 0
    rejected: int = 0
    retries: int = 0
    total: int | None = None
    resumed_at: int | None = None
    queued_in_inbox: int = 0
    rejections: list[str] = field(default_factory=list)


def source_key(url: str) -> str:
    """Return the URL that names a source in saved pull positions: scheme, host and path, no query or credentials."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PullError(f"--url {url!r} is not an http(s) URL; give the platform's base URL, e.g. https://host:8765")
    host = parts.hostname.lower() + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Return the wait a Retry-After header requests (seconds or an HTTP date), capped; None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_CAP_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_SECONDS)


class _Pager:
    """Fetches history pages with retries."""

    def __init__(self, client: httpx.Client, report: PullReport, retries: int, backoff: float,
                 sleep: Callable[[float], None]):
        self.client = client
        self.report = report
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep

    def page(self, skip: int) -> tuple[list[Any], int | None]:
        """Return (items, total or None) of the page at `skip`."""
        response = self._get(skip)
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise PullError(
                f"the page at skip={skip} is not JSON (starts {response.content[:80]!r}); is --url the platform's base URL?"
            ) from None
        if isinstance(data, list):
            return data, None
        if isinstance(data, dict):
            for key in ENVELOPE_KEYS:
                if isinstance(data.get(key), list):
                    total = data.get("total")
                    return data[key], total if isinstance(total, int) and not isinstance(total, bool) else None
        shape = f"keys {sorted(data)[:8]}" if isinstance(data, dict) else type(data).__name__
        raise PullError(f"the page at skip={skip} contains no list of submissions ({shape}); "
                        "is --url the platform's base URL?")

    def _get(self, skip: int) -> httpx.Response:
        params = {"skip": skip, "limit": PAGE_LIMIT}
        for attempt in range(self.retries + 1):
            wait = min(BACKOFF_CAP_SECONDS, self.backoff * 2**attempt) * (0.5 + random.random() / 2)
            try:
                response = self.client.get(HISTORY_PATH, params=params)
            except httpx.TransportError as error:
                reason = f"{type(error).__name__}: {error}"
            else:
                status = response.status_code
                if status == 200:
                    return response
                if status in (401, 403):
                    raise PullError(f"the server rejected the API key (HTTP {status}); check --api-key")
                if status != 429 and status < 500:
                    raise PullError(f"HTTP {status} for the page at skip={skip}: {response.text[:200]}")
                reason = f"HTTP {status}"
                asked = retry_after_seconds(response.headers.get("retry-after"))
                if asked is not None:
                    wait = asked
                    reason += f", Retry-After {response.headers['retry-after']}"
            if attempt == self.retries:
                raise PullError(
                    f"the page at skip={skip} failed {self.retries + 1} times (last: {reason}); "
                    "run the same pull again to resume from there"
                )
            self.report.retries += 1
            log.warning("page at skip=%d failed (%s); retry %d of %d in %.2f s",
                        skip, reason, attempt + 1, self.retries, wait)
            self.sleep(wait)
        raise AssertionError("unreachable")


def _instant(item: Any) -> datetime | None:
    """Return an item's submission time, or None when it has none that parses (the ingest then judges it)."""
    if not isinstance(item, dict):
        return None
    for key in ("submitted_at", "created_at", "timestamp"):
        if item.get(key) is not None:
            try:
                return parse_timestamp(key, item[key])[0]
            except FieldError:
                return None
    return None


def _load_state(ledger: Path, source: str) -> dict[str, Any]:
    text = store.load_pull_position(ledger, source)
    return orjson.loads(text) if text else {}


def _save_state(ledger: Path, source: str, state: dict[str, Any]) -> None:
    try:
        store.save_pull_position(ledger, source, orjson.dumps(state).decode())
    except store.LedgerBusy as error:
        log.warning("could not save the pull position (%s); a later save or a re-fetch covers it", error)


def pull(
    ledger: Path,
    url: str,
    api_key: str,
    *,
    since: datetime | None = None,
    full: bool = False,
    retries: int = DEFAULT_RETRIES,
    backoff: float = BACKOFF_BASE_SECONDS,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
    transport: httpx.BaseTransport | None = None,
) -> PullReport:
    """Pull submissions newer than `since` (default: the last complete pull's newest) into the ledger.

    With `full`, pull everything and ignore saved positions. Raises PullError
    when the server rejects the key, returns something other than history
    pages, or fails past `retries`. Every page ingested before stays, and the
    next pull resumes after it.
    """
    source = source_key(url)
    report = PullReport(source=source)
    state = {} if full else _load_state(ledger, source)
    since_text = since.isoformat() if since else None
    lower = since
    if lower is None and not full and state.get("watermark"):
        lower = datetime.fromisoformat(state["watermark"])
    run = state.get("run")
    if run is None or run.get("since") != since_text or full:
        run = {"since": since_text, "next_skip": 0, "total": None, "newest": None}
    else:
        report.resumed_at = run["next_skip"]
        log.info("resuming the pull from %s at skip=%d", source, run["next_skip"])
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
    with httpx.Client(base_url=source, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS, transport=transport) as client, \
            tempfile.TemporaryDirectory(prefix="replay-ledger-pull-") as folder:
        pager = _Pager(client, report, retries, backoff, sleep)
        skip = run["next_skip"]
        items, total = pager.page(skip)
        if report.resumed_at is not None and total is not None and run["total"] is not None and total > run["total"]:
            skip += total - run["total"]
            log.info("%d submissions arrived since the pull stopped; resuming at skip=%d", total - run["total"], skip)
            items, total = pager.page(skip)
        report.total = total
        host = urlsplit(source).netloc.replace(":", "-")
        while True:
            report.pages += 1
            report.fetched += len(items)
            if run["newest"] is None and skip == 0 and items:
                first = _instant(items[0])
                run["newest"] = first.isoformat() if first else None
            wanted = [item for item in items if lower is None or (_instant(item) or lower) >= lower]
            if wanted:
                _ingest_page(ledger, Path(folder) / f"{host}-skip{skip}.json", wanted, report)
            skip += len(items)
            run.update(next_skip=skip, total=total)
            # Newest first, so one item older than the bound means the rest are older too.
            finished = (not items or len(wanted) < len(items)
                        or (total is not None and skip >= total) or (total is None and len(items) < PAGE_LIMIT))
            if finished:
                break
            _save_state(ledger, source, {**state, "run": run})
            if progress is not None:
                progress(report.fetched, total)
            items, total = pager.page(skip)
    if progress is not None:
        progress(report.fetched, total)
    watermark = state.get("watermark")
    if run["newest"] and (watermark is None
                          or datetime.fromisoformat(run["newest"]) > datetime.fromisoformat(watermark)):
        watermark = run["newest"]
    _save_state(ledger, source, {"watermark": watermark, "run": None})
    log.info("pulled %d submissions from %s in %d pages: %d ingested, %d duplicates, %d rejected, %d retries",
             report.fetched, source, report.pages, report.ingested, report.duplicates, report.rejected, report.retries)
    return report


def _ingest_page(ledger: Path, path: Path, items: list[Any], report: PullReport) -> None:
    """Ingest one page's submissions through the ledger's ordinary ingest, as an export page file."""
    path.write_bytes(orjson.dumps({"items": items}))
    try:
        result = ingest_paths(ledger, [str(path)], origin="pull")
    finally:
        path.unlink(missing_ok=True)
    report.ingested += result.ingested
    report.duplicates += result.duplicates
    report.rejected += result.rejected
    if result.queued_in_inbox:
        report.queued_in_inbox += 1
    for item in result.files:
        report.rejections.extend(rejection.message() for rejection in item.rejected[: max(0, 20 - len(report.rejections))])
