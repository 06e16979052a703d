"""The real agentsentinel-sdk (0.4.0) replaying a recorded agent run against the receiver on 127.0.0.1.

The agent runs in a child process, so the SDK's process-wide state (its local
action ledger, sync and replay stacks) stays out of the test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from ledger import store
from ledger.queries.history import run_actions
from ledger.receiver import ReceiverConfig
from tests.receiver_helpers import ROOT, add_key, receiver

pytest.importorskip("agent_sentinel")

COSTS = {"fetch_data": 0.01, "summarize": 0.06, "store_summary": 0.02}

AGENT = r"""
import datetime, json, random, sys
from agent_sentinel import ExecutionContext, guarded_action, replay_mode
from agent_sentinel.errors import ReplayDivergenceError
from agent_sentinel.sync import enable_remote_sync

url, key, run_id, strict_run_id = sys.argv[1:5]
costs = json.loads(sys.argv[5])


@guarded_action(name="fetch_data", cost_usd=costs["fetch_data"], impact="read")
def fetch_data(address, ts=None):
    return {"address": address, "body": "a page about replays"}


@guarded_action(name="summarize", cost_usd=costs["summarize"], impact="read")
def summarize(text, seed=None):
    return "replays save money"


# "low" impact runs without a policy loaded, which the SDK asks of "medium" and "high".
@guarded_action(name="store_summary", cost_usd=costs["store_summary"], impact="low")
def store_summary(summary):
    return True


def agent():
    # A timestamp and a random seed in the inputs: a replay never sees the recorded ones again.
    page = fetch_data("https://example.com/a", ts=datetime.datetime.now().isoformat())
    summary = summarize(page["body"], seed=random.random())
    store_summary(summary)


outcome = {}
for recorded in (run_id, strict_run_id):
    with ExecutionContext(agent_id="demo-agent", run_id=recorded):
        agent()

sync = enable_remote_sync(platform_url=url, api_token=key, run_id=run_id, agent_id="demo-agent", sync_mode="manual")
with replay_mode(run_id=run_id, strict=False) as replay:
    agent()
outcome["divergences"] = len(replay.get_divergences())

sync = enable_remote_sync(platform_url=url, api_token=key, run_id=strict_run_id, agent_id="demo-agent",
                          sync_mode="manual")
try:
    with replay_mode(run_id=strict_run_id, strict=True):
        agent()
    outcome["strict_aborted"] = False
except ReplayDivergenceError:
    outcome["strict_aborted"] = True

# Upload the recorded actions last: the SDK deletes uploaded lines from its local ledger.
sync.flush()
print(json.dumps(outcome))
"""


@pytest.fixture(scope="module")
def sdk_run(tmp_path_factory):
    """Record two runs with the real SDK and replay them against a receiver; return (ledger, run ids, agent output)."""
    folder = tmp_path_factory.mktemp("sdk")
    ledger = folder / "ledger.duckdb"
    store.create_empty(ledger)
    key = add_key(ledger, "ci")
    run_id, strict_run_id = "run-sdk-partial", "run-sdk-strict"
    with receiver(ReceiverConfig(ledger=ledger)) as url:
        result = subprocess.run(
            [sys.executable, "-c", AGENT, url, key, run_id, strict_run_id, json.dumps(COSTS)],
            capture_output=True, text=True, cwd=folder, timeout=120,
            env={**os.environ, "AGENT_SENTINEL_HOME": str(folder / "sdk-home"), "PYTHONPATH": str(ROOT)},
        )
    assert result.returncode == 0, result.stderr[-3000:]
    return ledger, run_id, strict_run_id, json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def submission(ledger: Path, run_id: str) -> dict:
    with store.reading(ledger) as connection:
        rows = connection.execute(
            "SELECT submission_id, deployment, status, actions_replayed, actions_total, divergences_detected, "
            "cost_savings, flags FROM submissions WHERE run_id = ?", [run_id]
        ).fetchall()
        assert len(rows) == 1, rows
        names = ("id", "deployment", "status", "replayed", "total", "detected", "savings", "flags")
        found = dict(zip(names, rows[0]))
        found["divergences"] = connection.execute(
            "SELECT type, action, action_index, expected, actual FROM divergences WHERE submission_id = ? "
            "ORDER BY position", [found["id"]]
        ).fetchall()
    return found


def test_sdk_partial_replay_stored(sdk_run):
    ledger, run_id, _, outcome, stderr = sdk_run
    assert outcome["divergences"] == 2
    found = submission(ledger, run_id)
    assert found["deployment"] == "ci"
    assert found["status"] == "partial"
    assert found["replayed"] == 3
    assert found["total"] == 3
    assert found["detected"] == 2
    assert found["savings"] == sum(Decimal(str(cost)) for cost in COSTS.values())
    assert found["flags"] is None
    assert "Failed to report replay results" not in stderr


def test_sdk_partial_replay_divergences(sdk_run):
    ledger, run_id, _, _, _ = sdk_run
    divergences = submission(ledger, run_id)["divergences"]
    assert [(kind, action, index) for kind, action, index, _, _ in divergences] == [
        ("input_mismatch", "fetch_data", 0), ("input_mismatch", "summarize", 1)]
    fetch_expected, fetch_actual = (json.loads(text) for text in divergences[0][3:])
    assert fetch_expected["args"] == fetch_actual["args"] == ["https://example.com/a"]
    assert fetch_expected["kwargs"]["ts"] != fetch_actual["kwargs"]["ts"]
    summarize_expected, summarize_actual = (json.loads(text) for text in divergences[1][3:])
    assert summarize_expected["kwargs"]["seed"] != summarize_actual["kwargs"]["seed"]


def test_sdk_strict_replay_aborts(sdk_run):
    ledger, _, strict_run_id, outcome, _ = sdk_run
    assert outcome["strict_aborted"] is True
    found = submission(ledger, strict_run_id)
    assert found["deployment"] == "ci"
    assert found["status"] == "failed"
    assert found["replayed"] == 1
    assert found["total"] == 3
    assert found["detected"] == 1
    assert found["savings"] == Decimal(str(COSTS["fetch_data"]))
    assert [(kind, action, index) for kind, action, index, _, _ in found["divergences"]] == [
        ("input_mismatch", "fetch_data", 0)]


def test_sdk_recorded_actions_stored(sdk_run):
    ledger, run_id, _, _, _ = sdk_run
    actions = run_actions(ledger, run_id)
    recorded = [(item["action"], item["replay_index"]) for item in actions if item["outcome"] != "replayed"]
    assert recorded == [("fetch_data", 0), ("summarize", 1), ("store_summary", 2)]
    assert {item["deployment"] for item in actions} == {"ci"}
    assert actions[0]["cost_usd"] == Decimal("0.010000")
    assert "ts" in actions[0]["inputs"]["kwargs"]
