"""Tests for the receiver through a real uvicorn server on 127.0.0.1 and real ledger files."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from ledger import store
from ledger.keys import hash_key, new_key
from ledger.posts import PostLimits
from ledger.queries import Filters, tiles
from ledger.queries.history import run_actions
from ledger.receiver import ReceiverConfig, ReceiverConfigError, check_config
from tests.receiver_helpers import ROOT, add_key, receiver, receiver_process, rss_bytes, sdk_body

RESULTS = "/api/v1/replay/{run_id}/results"
HISTORY = "/api/v1/replay/history/"


def journals(ledger: Path) -> list[Path]:
    return sorted(store.inbox_path(ledger).glob("*.journal"))


def merged(ledger: Path, timeout: float = 15.0) -> None:
    """Wait until the receiver has merged every journaled post into the ledger."""
    deadline = time.monotonic() + timeout
    while journals(ledger) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert journals(ledger) == []


def query(ledger: Path, sql: str, parameters: list | None = None) -> list[tuple]:
    merged(ledger)
    with store.reading(ledger) as connection:
        return connection.execute(sql, parameters or []).fetchall()


@pytest.fixture
def key_ci(ledger: Path) -> str:
    store.create_empty(ledger)
    return add_key(ledger, "ci")


@pytest.fixture
def served(ledger: Path, key_ci: str):
    """A receiver on the test ledger, with a client that sends the key for deployment ci."""
    config = ReceiverConfig(ledger=ledger, maintenance_seconds=0.2)
    with receiver(config) as url, httpx.Client(base_url=url, headers={"Authorization": f"ApiKey {key_ci}"}) as client:
        yield client


def test_post_result_stores_submission(served, ledger):
    response = served.post(RESULTS.format(run_id="run-demo-1"), json=sdk_body())
    assert response.status_code == 201, response.text
    stored = response.json()
    assert stored["run_id"] == "run-demo-1"
    assert stored["deployment"] == "ci"
    assert stored["status"] == "partial"
    assert stored["cost_savings"] == 0.09
    assert stored["divergences"] == sdk_body()["divergences"]
    assert stored["submitted_at"].endswith("Z")
    rows = query(ledger, "SELECT submission_id, deployment, actions_replayed, actions_total, divergences_detected, "
                         "cost_savings, flags FROM submissions")
    assert rows == [(stored["id"], "ci", 3, 3, 2, Decimal("0.090000"), None)]
    assert query(ledger, "SELECT count(*) FROM divergences WHERE submission_id = ?", [stored["id"]]) == [(2,)]
    assert tiles(ledger, Filters()).cost_saved == Decimal("0.09")


def test_post_result_equals_history_item(served):
    posted = served.post(RESULTS.format(run_id="run-demo-1"), json=sdk_body(model="gpt-x")).json()
    page = served.get(HISTORY).json()
    assert page["total"] == 1
    assert page["items"] == [posted]
    assert posted["model"] == "gpt-x"


def test_post_result_fast_and_model_paths_agree(served, ledger):
    fast = served.post(RESULTS.format(run_id="run-1"), json=sdk_body()).json()
    exact = served.post(RESULTS.format(run_id="run-1"), json=sdk_body(run_id="run-1")).json()
    for document in (fast, exact):
        del document["id"], document["submitted_at"]
    assert exact == fast
    columns = "run_id, deployment, status, actions_replayed, actions_total, divergences_detected, cost_savings, flags, extra"
    rows = query(ledger, f"SELECT {columns} FROM submissions")
    assert rows[0] == rows[1]
    divergences = query(ledger, "SELECT submission_id, position, type, action, action_index, expected, actual, detail "
                                "FROM divergences ORDER BY submission_id, position")
    assert [row[1:] for row in divergences[:2]] == [row[1:] for row in divergences[2:]]


def test_journal_partial_last_line_skipped(tmp_path):
    from ledger.journal import read_lines

    path = tmp_path / "receiver-1-2-000001.journal"
    path.write_bytes(b'{"kind": "result", "n": 1}\n{"kind": "result", "n": 2}\n{"kind": "res')
    assert read_lines(path) == [{"kind": "result", "n": 1}, {"kind": "result", "n": 2}]


def test_post_result_server_time(served):
    before = datetime.now(timezone.utc)
    posted = served.post(RESULTS.format(run_id="run-1"), json=sdk_body()).json()
    after = datetime.now(timezone.utc)
    instant = datetime.fromisoformat(posted["submitted_at"].replace("Z", "+00:00"))
    assert before <= instant <= after


@pytest.mark.parametrize("stamp", [
    "2026-03-01T10:00:00Z", "2026-03-01T11:00:00+01:00", "2026-03-01T10:00:00", 1772359200, 1772359200000,
])
def test_post_result_timestamp_file_rule(served, ledger, stamp):
    response = served.post(RESULTS.format(run_id="run-ts"), json=sdk_body(submitted_at=stamp))
    assert response.status_code == 201, response.text
    assert response.json()["submitted_at"] == "2026-03-01T10:00:00.000000Z"
    flags = query(ledger, "SELECT flags FROM submissions")[0][0]
    if stamp == "2026-03-01T10:00:00":
        assert flags == ["submitted_at had no time zone and was taken as UTC"]
    else:
        assert flags is None


def test_post_result_bearer_accepted(served, key_ci):
    response = served.post(RESULTS.format(run_id="run-1"), json=sdk_body(), headers={"Authorization": f"Bearer {key_ci}"})
    assert response.status_code == 201, response.text


def test_post_result_missing_key_401(served, ledger):
    response = served.post(RESULTS.format(run_id="run-1"), json=sdk_body(), headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "ApiKey, Bearer"
    assert response.json()["errors"][0]["field"] == "Authorization"
    assert query(ledger, "SELECT count(*) FROM submissions") == [(0,)]


def test_post_result_wrong_keys_401(served, key_ci):
    unknown = new_key()[1]
    wrong_secret = key_ci[:-4] + ("AAAA" if not key_ci.endswith("AAAA") else "BBBB")
    answers = []
    for presented in (unknown, wrong_secret, "not-a-key"):
        response = served.post(RESULTS.format(run_id="run-1"), json=sdk_body(),
                               headers={"Authorization": f"ApiKey {presented}"})
        assert response.status_code == 401
        answers.append(response.json()["errors"])
    assert answers[0] == answers[1] == answers[2]
    assert key_ci not in json.dumps(answers)


def test_post_result_new_key_works(served, ledger):
    fresh = add_key(ledger, "prod-eu")
    response = served.post(RESULTS.format(run_id="run-1"), json=sdk_body(), headers={"Authorization": f"ApiKey {fresh}"})
    assert response.status_code == 201, response.text
    assert response.json()["deployment"] == "prod-eu"


def test_post_result_revoked_key_401(served, ledger, key_ci):
    key_id = key_ci.split("_")[1]
    assert served.post(RESULTS.format(run_id="run-1"), json=sdk_body()).status_code == 201
    assert store.revoke_api_key(ledger, key_id) is True
    deadline = time.monotonic() + 10
    status = 200
    while status == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        status = served.get(HISTORY).status_code
    assert status == 401


@pytest.mark.parametrize(("body", "field", "fragment"), [
    (sdk_body(status="done"), "status", "must be one of success, partial, failed"),
    (sdk_body(actions_replayed="3"), "actions_replayed", "must be a JSON integer, got the string '3'"),
    (sdk_body(actions_replayed=4), "actions_replayed", "more than actions_total 3"),
    (sdk_body(cost_savings=-0.5), "cost_savings", "must not be negative"),
    (sdk_body(divergences_detected=5), "divergences_detected", "but 2 divergences are listed"),
    (sdk_body(deployment="prod"), "deployment", "is set by the API key"),
    (sdk_body(id="abc"), "id", "send an Idempotency-Key header instead"),
    (sdk_body(run_id="run-other"), "run_id", "in the body but the path names 'run-1'"),
    ({k: v for k, v in sdk_body().items() if k != "status"}, "status", "is missing"),
    ([sdk_body()], "body", "must be a JSON object"),
])
def test_post_result_invalid_body_422(served, ledger, body, field, fragment):
    response = served.post(RESULTS.format(run_id="run-1"), json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert errors[0]["field"] == field
    assert fragment in errors[0]["message"]
    assert response.json()["request_id"] == response.headers["x-request-id"]
    assert query(ledger, "SELECT count(*) FROM submissions") == [(0,)]


@pytest.mark.parametrize(("raw", "fragment"), [
    (b'{"status": "partial", "actions_replayed": 1, "actions_total": 1, "cost_savings": NaN}', "must be a finite number, got NaN"),
    (b'{"status": "partial",', "invalid JSON"),
    (b'\xff\xfe{}', "not valid UTF-8"),
    (b'{"status": "partial", "status": "failed", "actions_replayed": 1, "actions_total": 1, "cost_savings": 0}',
     "appears more than once"),
])
def test_post_result_malformed_json_422(served, ledger, raw, fragment):
    response = served.post(RESULTS.format(run_id="run-1"), content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert fragment in response.json()["errors"][0]["message"]
    assert query(ledger, "SELECT count(*) FROM submissions") == [(0,)]


def test_post_result_every_error_listed(served):
    response = served.post(RESULTS.format(run_id="run-1"), json=sdk_body(status="done", cost_savings="1"))
    assert response.status_code == 422
    fields = [error["field"] for error in response.json()["errors"]]
    assert fields == ["status", "cost_savings"]


@pytest.mark.parametrize(("path_run_id", "fragment"), [
    ("run%01x", "must not contain control characters"),
    ("r" * 257, "at most 256 are allowed"),
    ("%20%20", "must not be empty"),
])
def test_post_result_invalid_run_id_422(served, path_run_id, fragment):
    response = served.post(f"/api/v1/replay/{path_run_id}/results", json=sdk_body())
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "run_id"
    assert fragment in response.json()["errors"][0]["message"]


def test_post_result_divergence_caps_422(ledger, key_ci):
    config = ReceiverConfig(ledger=ledger, limits=PostLimits(max_divergences=2, max_divergence_bytes=300))
    with receiver(config) as url, httpx.Client(base_url=url, headers={"Authorization": f"ApiKey {key_ci}"}) as client:
        many = [{"type": "action_mismatch", "expected": "a", "actual": "b", "index": n} for n in range(3)]
        response = client.post(RESULTS.format(run_id="run-1"), json=sdk_body(divergences=many, divergences_detected=3))
        assert response.status_code == 422
        assert response.json()["errors"][0] == {
            "field": "divergences", "message": "lists 3 divergences, at most 2 are allowed in one post"}
        big = [{"type": "input_mismatch", "action": "a", "index": 0, "expected_inputs": "x" * 400, "actual_inputs": "y"}]
        response = client.post(RESULTS.format(run_id="run-1"), json=sdk_body(divergences=big, divergences_detected=1))
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "divergences[0]"
        assert "at most 300 are allowed for one divergence" in response.json()["errors"][0]["message"]


def test_idempotency_key_counts_once(served, ledger):
    headers = {"Idempotency-Key": "replay-42"}
    first = served.post(RESULTS.format(run_id="run-1"), json=sdk_body(), headers=headers)
    second = served.post(RESULTS.format(run_id="run-1"), json=sdk_body(), headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert query(ledger, "SELECT count(*) FROM submissions") == [(1,)]
    assert query(ledger, "SELECT idempotency_key FROM idempotency_keys") == [("replay-42",)]


def test_idempotency_key_other_body_422(served, ledger):
    headers = {"Idempotency-Key": "replay-43"}
    assert served.post(RESULTS.format(run_id="run-1"), json=sdk_body(), headers=headers).status_code == 201
    response = served.post(RESULTS.format(run_id="run-1"), json=sdk_body(status="failed"), headers=headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"
    assert query(ledger, "SELECT status FROM submissions") == [("partial",)]


def test_idempotency_key_concurrent_posts_once(served, ledger):
    def post(_: int) -> httpx.Response:
        return served.post(RESULTS.format(run_id="run-1"), json=sdk_body(), headers={"Idempotency-Key": "same"})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(16)))
    assert {response.status_code for response in responses} == {201}
    assert len({response.json()["id"] for response in responses}) == 1
    assert query(ledger, "SELECT count(*) FROM submissions") == [(1,)]


def test_idempotency_key_invalid_422(served):
    response = served.post(RESULTS.format(run_id="run-1"), json=sdk_body(), headers={"Idempotency-Key": "x" * 300})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"


def test_history_pages_newest_first(served):
    posted = [served.post(RESULTS.format(run_id=f"run-{n % 2}"), json=sdk_body()).json() for n in range(7)]
    newest_first = [item["id"] for item in reversed(posted)]
    first = served.get(HISTORY, params={"limit": 3}).json()
    second = served.get(HISTORY, params={"skip": 3, "limit": 3}).json()
    last = served.get(HISTORY, params={"skip": 6, "limit": 3}).json()
    assert first["total"] == second["total"] == 7
    assert [item["id"] for item in first["items"] + second["items"] + last["items"]] == newest_first
    assert served.get(HISTORY).json()["limit"] == 50


def test_history_by_run_id(served):
    posted = [served.post(RESULTS.format(run_id=f"run-{n % 2}"), json=sdk_body()).json() for n in range(5)]
    page = served.get(HISTORY + "run-0").json()
    assert page["run_id"] == "run-0"
    assert page["total"] == 3
    assert [item["id"] for item in page["items"]] == [posted[4]["id"], posted[2]["id"], posted[0]["id"]]
    missing = served.get(HISTORY + "run-nope")
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["field"] == "run_id"


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 201}, {"skip": -1}, {"limit": "many"}])
def test_history_bad_paging_422(served, params):
    response = served.get(HISTORY, params=params)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] in ("limit", "skip")


def test_ingest_actions_stored_in_order(served, ledger):
    entries = [
        {"id": "e1", "action": "fetch_data", "timestamp": "2026-03-01T10:00:00+00:00", "cost_usd": 0.01,
         "duration_ms": 5.5, "outcome": "success", "tags": ["web"], "run_id": "run-a",
         "payload": {"inputs": {"args": ["u"], "kwargs": {}}, "outputs": {"ok": True}}},
        {"id": "e2", "action": "summarize", "timestamp": "2026-03-01T10:00:01", "cost_usd": 0.06, "outcome": "success",
         "payload": {"inputs": {"args": [], "kwargs": {"seed": 0.5}}, "outputs": "text"}},
        {"id": "e3", "action": "fetch_data", "cost_usd": "free"},
        {"id": "e4", "action": "fetch_data", "outcome": "replayed", "payload": {"inputs": {}, "outputs": None}},
    ]
    response = served.post("/api/v1/ingest", json={"run_id": "run-a", "agent_id": "agent-1", "entries": entries})
    assert response.status_code == 202, response.text
    assert response.json() == {"run_id": "run-a", "accepted": 3, "rejected": [
        {"field": "entries[2].cost_usd", "message": "must be a JSON number of US dollars, got 'free'"}]}
    again = served.post("/api/v1/ingest", json={"run_id": "run-a", "entries": entries[:2]})
    assert again.json()["accepted"] == 2
    merged(ledger)
    actions = run_actions(ledger, "run-a")
    assert [(a["entry_id"], a["action"], a["replay_index"]) for a in actions] == [
        ("e1", "fetch_data", 0), ("e2", "summarize", 1), ("e4", "fetch_data", None)]
    assert actions[0]["inputs"] == {"args": ["u"], "kwargs": {}}
    assert actions[0]["detail"] == {"tags": ["web"], "run_id": "run-a"}
    assert actions[0]["cost_usd"] == Decimal("0.010000")
    assert actions[0]["deployment"] == "ci"
    assert query(ledger, "SELECT flags FROM recorded_actions WHERE entry_id = 'e2'") == [
        (["timestamp had no time zone and was taken as UTC"],)]


@pytest.mark.parametrize(("body", "field"), [
    ({"entries": []}, "run_id"),
    ({"run_id": "run-a", "entries": "x"}, "entries"),
    ({"run_id": "run-a", "entries": [{}] * 1001}, "entries"),
])
def test_ingest_actions_bad_envelope_422(served, body, field):
    response = served.post("/api/v1/ingest", json=body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field


def test_health_and_openapi(served):
    assert served.get("/api/v1/health", headers={"Authorization": ""}).json()["status"] == "ok"
    schema = served.get("/openapi.json").json()
    assert "/api/v1/replay/{run_id}/results" in schema["paths"]
    assert "/api/v1/replay/history/" in schema["paths"]
    assert served.get("/docs").status_code == 200


def test_unknown_path_404_json(served):
    response = served.get("/api/v2/nothing")
    assert response.status_code == 404
    assert response.json()["errors"][0]["message"].startswith("not found")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "example.com"])
def test_no_auth_public_address_rejected(ledger, host):
    with pytest.raises(ReceiverConfigError) as caught:
        check_config(ReceiverConfig(ledger=ledger, no_auth=True), host)
    assert f"--no-auth is allowed only on a loopback address such as 127.0.0.1, not {host}" in str(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_no_auth_loopback_allowed(ledger, host):
    check_config(ReceiverConfig(ledger=ledger, no_auth=True), host)


def test_no_auth_posts_as_local(ledger):
    with receiver(ReceiverConfig(ledger=ledger, no_auth=True)) as url:
        response = httpx.post(url + RESULTS.format(run_id="run-1"), json=sdk_body())
    assert response.status_code == 201
    assert response.json()["deployment"] == "local"


def test_keys_file_auth(tmp_path, ledger):
    from ledger.keys import add_to_file, read_keys_file

    keys_file = tmp_path / "keys.json"
    stored, whole = add_to_file(keys_file, "prod-eu", "ci runner")
    assert whole not in keys_file.read_text()
    assert read_keys_file(keys_file)[0].key_hash == hash_key(whole)
    assert keys_file.stat().st_mode & 0o777 == 0o600
    with receiver(ReceiverConfig(ledger=ledger, keys_file=keys_file)) as url:
        ok = httpx.post(url + RESULTS.format(run_id="run-1"), json=sdk_body(), headers={"Authorization": f"Bearer {whole}"})
        refused = httpx.post(url + RESULTS.format(run_id="run-1"), json=sdk_body(),
                             headers={"Authorization": f"Bearer {new_key()[1]}"})
    assert ok.status_code == 201
    assert ok.json()["deployment"] == "prod-eu"
    assert refused.status_code == 401


def test_queue_full_429(ledger, key_ci):
    with receiver(ReceiverConfig(ledger=ledger, queue_limit=0)) as url:
        response = httpx.post(url + RESULTS.format(run_id="run-1"), json=sdk_body(),
                              headers={"Authorization": f"ApiKey {key_ci}"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert query(ledger, "SELECT count(*) FROM submissions") == [(0,)]


HOLD_LEDGER = """
import duckdb, sys, time
connection = duckdb.connect(sys.argv[1])
print("held", flush=True)
sys.stdin.readline()
connection.close()
"""


def test_busy_ledger_posts_journaled(ledger, key_ci):
    config = ReceiverConfig(ledger=ledger, write_budget=0.3, maintenance_seconds=0.2)
    with receiver(config) as url:
        holder = subprocess.Popen([sys.executable, "-c", HOLD_LEDGER, str(ledger)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            client = httpx.Client(base_url=url, headers={"Authorization": f"ApiKey {key_ci}"})
            posted = client.post(RESULTS.format(run_id="run-busy"), json=sdk_body(), headers={"Idempotency-Key": "k1"})
            actions = client.post("/api/v1/ingest", json={"run_id": "run-busy", "entries": [{"id": "e1", "action": "a"}]})
            retried = client.post(RESULTS.format(run_id="run-busy"), json=sdk_body(), headers={"Idempotency-Key": "k1"})
            assert posted.status_code == 201, posted.text
            assert actions.status_code == 202, actions.text
            assert retried.status_code == 201
            assert retried.headers["idempotent-replayed"] == "true"
            time.sleep(0.5)
            assert len(journals(ledger)) >= 1
            holder.stdin.write("\n")
            holder.stdin.flush()
            holder.wait(10)
            page = client.get(HISTORY).json()
        finally:
            holder.kill()
            holder.wait()
    assert [item["id"] for item in page["items"]] == [posted.json()["id"]]
    assert [a["entry_id"] for a in run_actions(ledger, "run-busy")] == ["e1"]
    assert query(ledger, "SELECT count(*) FROM idempotency_keys") == [(1,)]


def test_journal_of_killed_receiver_merged(ledger, tmp_path):
    from ledger.keys import add_to_file

    store.create_empty(ledger)
    keys_file = tmp_path / "keys.json"
    key = add_to_file(keys_file, "ci")[1]
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LEDGER, str(ledger)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with receiver_process(ledger, "--keys", str(keys_file)) as (url, process, _):
            client = httpx.Client(base_url=url, headers={"Authorization": f"ApiKey {key}"})
            posted = [client.post(RESULTS.format(run_id=f"run-k{n}"), json=sdk_body(),
                                  headers={"Idempotency-Key": f"key-{n}"} if n % 2 else {}) for n in range(6)]
            client.post("/api/v1/ingest", json={"run_id": "run-k0", "entries": [{"id": "e1", "action": "a"}]})
            process.kill()
            process.wait(10)
    finally:
        holder.kill()
        holder.wait()
    assert [response.status_code for response in posted] == [201] * 6
    assert len(journals(ledger)) >= 1
    with receiver(ReceiverConfig(ledger=ledger, keys_file=keys_file)) as url:
        client = httpx.Client(base_url=url, headers={"Authorization": f"ApiKey {key}"})
        again = client.post(RESULTS.format(run_id="run-k1"), json=sdk_body(), headers={"Idempotency-Key": "key-1"})
        page = client.get(HISTORY).json()
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == posted[1].json()
    assert sorted(item["id"] for item in page["items"]) == sorted(response.json()["id"] for response in posted)
    assert [a["entry_id"] for a in run_actions(ledger, "run-k0")] == ["e1"]
    assert journals(ledger) == []


# ---------------------------------------------------------------------------
# Oversized and slow clients, against a receiver in its own process


def _raw_request(url: str, head: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(head)
    return sock


def _read_status(sock: socket.socket) -> int | None:
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return int(data.split()[1]) if data.startswith(b"HTTP/1.1") else None


@pytest.fixture
def process_receiver(ledger, key_ci):
    with receiver_process(ledger, "--read-timeout", "1.5") as (url, process, log_file):
        yield url, process, log_file, key_ci


def test_oversized_body_413_memory_flat(process_receiver):
    url, process, log_file, key = process_receiver
    auth = f"Authorization: ApiKey {key}\r\n".encode()
    before = rss_bytes(process.pid)
    size = 50 * 1024 * 1024
    block = b"x" * (1024 * 1024)

    declared = _raw_request(url, b"POST /api/v1/replay/run-big/results HTTP/1.1\r\nHost: t\r\n" + auth +
                            f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n".encode())
    sent = 0
    try:
        while sent < size:
            declared.sendall(block)
            sent += len(block)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert _read_status(declared) == 413
    assert sent < size

    chunked = _raw_request(url, b"POST /api/v1/replay/run-big/results HTTP/1.1\r\nHost: t\r\n" + auth +
                           b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    sent = 0
    try:
        while sent < size:
            chunked.sendall(f"{len(block):x}\r\n".encode() + block + b"\r\n")
            sent += len(block)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert _read_status(chunked) == 413
    assert sent < size
    after = rss_bytes(process.pid)
    assert after - before < 20 * 1024 * 1024, f"resident memory grew by {(after - before) / 2**20:.1f} MiB"
    normal = httpx.post(url + RESULTS.format(run_id="run-1"), json=sdk_body(), headers={"Authorization": f"ApiKey {key}"})
    assert normal.status_code == 201
    assert "rejected request" in log_file.read_text()
    assert key not in log_file.read_text()


def test_oversized_body_413_with_httpx(process_receiver):
    url, _, _, key = process_receiver
    response = httpx.post(url + RESULTS.format(run_id="run-big"), content=b"[" + b"1," * (1024 * 1024) + b"1]",
                          headers={"Authorization": f"ApiKey {key}", "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["errors"][0]["field"] == "body"
    assert "more than the 1,048,576 bytes allowed here" in response.json()["errors"][0]["message"]


def test_slow_clients_cut_off(process_receiver):
    url, _, _, key = process_receiver
    auth = f"Authorization: ApiKey {key}\r\n".encode()
    body = json.dumps(sdk_body()).encode()
    head = (b"POST /api/v1/replay/run-slow/results HTTP/1.1\r\nHost: t\r\n" + auth +
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode())

    def trickle(prefix: bytes, payload: bytes) -> tuple[int, int | None]:
        sock = _raw_request(url, prefix)
        sent = 0
        try:
            for byte in payload:
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.25)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return sent, _read_status(sock)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow_headers = pool.submit(trickle, b"", head)
        slow_body = pool.submit(trickle, head, body)
        time.sleep(0.5)
        normal = httpx.post(url + RESULTS.format(run_id="run-1"), json=sdk_body(), headers={"Authorization": f"ApiKey {key}"})
        headers_sent, headers_status = slow_headers.result()
        body_sent, body_status = slow_body.result()
    assert normal.status_code == 201
    assert headers_status == 408
    assert body_status == 408
    assert headers_sent < len(head)
    assert body_sent < len(body)


def test_serve_cli_no_auth_public_exits_2(ledger):
    result = subprocess.run([sys.executable, "-m", "ledger.cli", "serve", "--db", str(ledger), "--host", "0.0.0.0",
                             "--no-auth"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "--no-auth is allowed only on a loopback address" in result.stderr


def test_keys_cli_add_list_revoke(ledger):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ledger.cli", "keys", *args, "--db", str(ledger)],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)

    added = run("add", "--deployment", "prod-eu", "--label", "runner")
    assert added.returncode == 0, added.stderr
    whole = added.stdout.strip()
    key_id = whole.split("_")[1]
    stored = query(ledger, "SELECT key_id, deployment, key_hash, label FROM api_keys")
    assert stored == [(key_id, "prod-eu", hash_key(whole), "runner")]
    listed = run("list")
    assert key_id in listed.stdout
    assert whole not in listed.stdout
    assert run("revoke", key_id).returncode == 0
    assert query(ledger, "SELECT revoked_at IS NOT NULL FROM api_keys") == [(True,)]
    again = run("revoke", key_id)
    assert again.returncode == 1
    assert f"no active key {key_id}" in again.stderr
    assert run("revoke", "zz").returncode == 2


# ---------------------------------------------------------------------------
# One ledger shared by the receiver, `replay-ledger ingest` and a reader at once

READER = r"""
import sys, time, traceback
from pathlib import Path
from ledger.queries import Filters, tiles
from ledger.queries.history import history_page
ledger, stop = Path(sys.argv[1]), Path(sys.argv[2])
reads = errors = 0
while not stop.exists():
    try:
        tiles(ledger, Filters())
        history_page(ledger, 0, 50)
        reads += 1
    except Exception:
        errors += 1
        traceback.print_exc()
    time.sleep(0.2)
print(f"reads={reads} errors={errors}")
"""
POSTERS = 16
POSTS_EACH = 125
INGEST_FILES = 6
INGEST_RECORDS = 150
LOCK_WORDS = ("could not set lock", "conflicting lock", "ledgerbusy", "locked by another process", "traceback")


def _ingest_file(folder: Path, number: int) -> Path:
    path = folder / f"batch-{number}.jsonl"
    lines = [json.dumps({
        "id": f"file-{number}-{index}", "run_id": f"run-file-{number}", "status": "success", "actions_replayed": 2,
        "actions_total": 2, "divergences": [], "cost_savings": 0.5, "deployment": "batch",
        "submitted_at": f"2026-03-0{1 + number % 9}T10:{index % 60:02d}:00Z",
    }) for index in range(INGEST_RECORDS)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_shared_ledger_receiver_ingest_reader(ledger, key_ci, tmp_path):
    stop = tmp_path / "stop"
    files = [_ingest_file(tmp_path, number) for number in range(INGEST_FILES)]
    with receiver_process(ledger) as (url, _, log_file):
        reader = subprocess.Popen([sys.executable, "-c", READER, str(ledger), str(stop)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ingest_outputs: list[tuple[int, str]] = []

        def ingest_all() -> None:
            for path in files:
                done = subprocess.run([sys.executable, "-m", "ledger.cli", "ingest", str(path), "--db", str(ledger)],
                                      capture_output=True, text=True, cwd=ROOT, timeout=120)
                ingest_outputs.append((done.returncode, done.stdout + done.stderr))

        def post_many(poster: int) -> list[httpx.Response]:
            with httpx.Client(base_url=url, headers={"Authorization": f"ApiKey {key_ci}"}, timeout=60) as client:
                return [client.post(RESULTS.format(run_id=f"run-c{poster}-{n}"), json=sdk_body())
                        for n in range(POSTS_EACH)]

        with concurrent.futures.ThreadPoolExecutor(POSTERS + 1) as pool:
            ingesting = pool.submit(ingest_all)
            posted = [response for batch in pool.map(post_many, range(POSTERS)) for response in batch]
            ingesting.result()
        stop.write_text("stop")
        reader_output, _ = reader.communicate(timeout=60)
        deadline = time.monotonic() + 15
        while (store.inbox_batches(ledger) or journals(ledger)) and time.monotonic() < deadline:
            time.sleep(0.1)
        receiver_log = log_file.read_text()
    assert [response.status_code for response in posted] == [201] * (POSTERS * POSTS_EACH)
    ids = {response.json()["id"] for response in posted}
    assert len(ids) == POSTERS * POSTS_EACH
    assert store.inbox_batches(ledger) == []
    stored = {row[0] for row in query(ledger, "SELECT submission_id FROM submissions WHERE deployment = 'ci'")}
    assert stored == ids
    assert query(ledger, "SELECT count(*) FROM submissions WHERE deployment = 'batch'") == [
        (INGEST_FILES * INGEST_RECORDS,)], ingest_outputs
    assert [code for code, _ in ingest_outputs] == [0] * INGEST_FILES
    assert reader.returncode == 0
    assert "errors=0" in reader_output
    for name, text in [("receiver", receiver_log), ("reader", reader_output),
                       *[(f"ingest {n}", output) for n, (_, output) in enumerate(ingest_outputs)]]:
        for word in LOCK_WORDS:
            assert word not in text.lower(), f"{name} output mentions {word!r}: {text[-1500:]}"
