"""Pulling history from the receiver itself on 127.0.0.1, including a server that fails some requests."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ledger import store
from ledger.ingest import ingest_paths
from ledger.receiver import ReceiverConfig, create_app
from ledger.remote import PullError, pull, retry_after_seconds, source_key
from tests.receiver_helpers import ROOT, add_key, running

SUBMISSIONS = 2_400
START = datetime(2026, 3, 1, tzinfo=timezone.utc)


def records(first: int, count: int) -> list[dict]:
    """Submissions with platform ids, one minute apart, a third with a divergence."""
    generator = random.Random(first)
    made = []
    for number in range(first, first + count):
        item = {
            "id": f"sub-{number:05d}",
            "run_id": f"run-{number % 300}",
            "deployment": ("prod-eu", "ci", "staging")[number % 3],
            "status": "success",
            "actions_replayed": 3,
            "actions_total": 4,
            "divergences": [],
            "cost_savings": round(generator.random(), 6),
            "submitted_at": (START + timedelta(minutes=number)).isoformat(),
        }
        if number % 3 == 0:
            item["status"] = "partial"
            item["divergences"] = [{"type": "input_mismatch", "action": "summarize", "index": 1,
                                    "expected_inputs": {"kwargs": {"seed": generator.random()}},
                                    "actual_inputs": {"kwargs": {"seed": generator.random()}}}]
        made.append(item)
    return made


def add_records(ledger: Path, folder: Path, first: int, count: int) -> None:
    path = folder / f"records-{first}.jsonl"
    path.write_text("\n".join(json.dumps(item) for item in records(first, count)) + "\n")
    report = ingest_paths(ledger, [str(path)], origin="test")
    assert report.ingested == count


@pytest.fixture(scope="module")
def source_template(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("pull-source")
    ledger = folder / "source.duckdb"
    store.create_empty(ledger)
    key = add_key(ledger, "reader")
    add_records(ledger, folder, 0, SUBMISSIONS)
    return ledger, key


@pytest.fixture
def source(source_template, tmp_path) -> tuple[Path, str]:
    ledger = tmp_path / "source.duckdb"
    shutil.copyfile(source_template[0], ledger)
    return ledger, source_template[1]


class Flaky:
    """ASGI wrapper that responds to chosen history requests with an error instead of the page."""

    def __init__(self, app, plan):
        self.app = app
        self.plan = plan
        self.seen: list[tuple[float, int, int | None]] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/api/v1/replay/history"):
            query = dict(part.split("=", 1) for part in scope["query_string"].decode().split("&") if "=" in part)
            skip = int(query.get("skip", 0))
            failure = self.plan(len(self.seen), skip)
            self.seen.append((time.monotonic(), skip, failure[0] if failure else None))
            if failure:
                status, headers = failure
                body = b'{"errors": [{"field": "", "message": "try later"}]}'
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-type", b"application/json"), *headers]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def rows(ledger: Path, sql: str) -> list[tuple]:
    with store.reading(ledger) as connection:
        return connection.execute(sql).fetchall()


def test_pull_through_failures_copies_all(source, tmp_path):
    ledger, key = source
    target = tmp_path / "target.duckdb"

    def plan(number: int, skip: int):
        if number == 1:
            return 429, [(b"retry-after", b"1")]
        if number in (3, 6, 7):
            return (500, 502, 503)[number % 3], []
        return None

    config = ReceiverConfig(ledger=ledger)
    flaky = Flaky(create_app(config), plan)
    with running(flaky, config) as url:
        report = pull(target, url, key, backoff=0.01)
    assert report.fetched == SUBMISSIONS
    assert report.ingested == SUBMISSIONS
    assert report.retries == 4
    assert report.pages == SUBMISSIONS // 200
    after_429 = flaky.seen[2][0] - flaky.seen[1][0]
    assert after_429 >= 1.0
    source_rows = rows(ledger, "SELECT submission_id, run_id, deployment, status, cost_savings, submitted_at "
                               "FROM submissions ORDER BY 1")
    target_rows = rows(target, "SELECT platform_id, run_id, deployment, status, cost_savings, submitted_at "
                               "FROM submissions ORDER BY 1")
    assert target_rows == source_rows
    assert rows(target, "SELECT count(*), sum(cost_savings) FROM submissions") == rows(
        ledger, "SELECT count(*), sum(cost_savings) FROM submissions")
    assert rows(target, "SELECT count(*) FROM divergences") == [(SUBMISSIONS // 3,)]
    assert rows(target, "SELECT expected, actual FROM divergences ORDER BY submission_id LIMIT 3") == rows(
        ledger, "SELECT expected, actual FROM divergences ORDER BY submission_id LIMIT 3")


def test_pull_twice_adds_nothing(source, tmp_path):
    ledger, key = source
    target = tmp_path / "target.duckdb"
    config = ReceiverConfig(ledger=ledger)
    with running(create_app(config), config) as url:
        first = pull(target, url, key)
        second = pull(target, url, key)
        third = pull(target, url, key, full=True)
    assert first.ingested == SUBMISSIONS
    assert second.pages == 1
    assert second.ingested == 0
    assert third.fetched == SUBMISSIONS
    assert third.ingested == 0
    assert third.duplicates == SUBMISSIONS
    assert rows(target, "SELECT count(*) FROM submissions") == [(SUBMISSIONS,)]


def test_pull_resumes_where_it_stopped(source, tmp_path):
    ledger, key = source
    target = tmp_path / "target.duckdb"
    broken = {"on": True}

    def plan(number: int, skip: int):
        return (503, []) if broken["on"] and skip >= 1_000 else None

    config = ReceiverConfig(ledger=ledger)
    flaky = Flaky(create_app(config), plan)
    with running(flaky, config) as url:
        with pytest.raises(PullError) as caught:
            pull(target, url, key, retries=2, backoff=0.01)
        assert "the page at skip=1000 failed 3 times (last: HTTP 503)" in str(caught.value)
        assert "run the same pull again to resume" in str(caught.value)
        assert rows(target, "SELECT count(*) FROM submissions") == [(1_000,)]
        add_records(ledger, tmp_path, SUBMISSIONS, 50)
        broken["on"] = False
        flaky.seen.clear()
        resumed = pull(target, url, key, backoff=0.01)
        assert resumed.resumed_at == 1_000
        assert flaky.seen[0][1] == 1_000
        assert flaky.seen[1][1] == 1_050
        assert resumed.ingested == SUBMISSIONS - 1_000
        assert rows(target, "SELECT count(*) FROM submissions") == [(SUBMISSIONS,)]
        flaky.seen.clear()
        newer = pull(target, url, key)
    assert newer.ingested == 50
    assert newer.pages == 1
    assert rows(target, "SELECT count(*) FROM submissions") == [(SUBMISSIONS + 50,)]


def test_pull_since_stops_early(source, tmp_path):
    ledger, key = source
    target = tmp_path / "target.duckdb"
    since = START + timedelta(minutes=SUBMISSIONS - 250)
    config = ReceiverConfig(ledger=ledger)
    with running(create_app(config), config) as url:
        report = pull(target, url, key, since=since)
    assert report.pages == 2
    assert report.ingested == 250
    assert rows(target, "SELECT min(submitted_at) FROM submissions") == [(since,)]


def test_pull_refused_key(source, tmp_path):
    ledger, _ = source
    config = ReceiverConfig(ledger=ledger)
    with running(create_app(config), config) as url:
        with pytest.raises(PullError) as caught:
            pull(tmp_path / "target.duckdb", url, "rlk_000000000000_" + "A" * 43)
    assert str(caught.value) == "the server rejected the API key (HTTP 401); check --api-key"


def test_pull_not_a_history_page(tmp_path):
    async def other(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        await send({"type": "http.response.body", "body": b"<html>welcome</html>"})

    config = ReceiverConfig(ledger=tmp_path / "unused.duckdb")
    with running(other, config) as url:
        with pytest.raises(PullError) as caught:
            pull(tmp_path / "target.duckdb", url, "key")
    assert "is not JSON (starts b'<html>welcome</html>')" in str(caught.value)


def test_pull_cli_prints_summary(source, tmp_path):
    ledger, key = source
    target = tmp_path / "target.duckdb"
    config = ReceiverConfig(ledger=ledger)
    with running(create_app(config), config) as url:
        result = subprocess.run(
            [sys.executable, "-m", "ledger.cli", "pull", "--url", url, "--db", str(target),
             "--since", (START + timedelta(minutes=SUBMISSIONS - 10)).isoformat()],
            capture_output=True, text=True, cwd=ROOT, timeout=120, env={"REPLAY_LEDGER_API_KEY": key, "PATH": ""},
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "200 submissions fetched in 1 pages: 10 ingested, 0 duplicates, 0 rejected, 0 retries"
    )


@pytest.mark.parametrize(("header", "expected"), [
    ("3", 3.0), ("0", 0.0), ("100000", 300.0), ("soon", None), (None, None),
])
def test_retry_after_seconds(header, expected):
    assert retry_after_seconds(header) == expected


def test_retry_after_http_date():
    now = 1_800_000_000.0
    header = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 7))
    assert retry_after_seconds(header, now=now) == 7.0


@pytest.mark.parametrize(("url", "expected"), [
    ("http://127.0.0.1:8765/", "http://127.0.0.1:8765"),
    ("HTTPS://Example.COM/platform/?x=1", "https://example.com/platform"),
])
def test_source_key(url, expected):
    assert source_key(url) == expected


def test_source_key_rejects_other_schemes():
    with pytest.raises(PullError):
        source_key("ftp://example.com")
