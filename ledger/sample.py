"""Generate a seeded, deterministic sample of replay-run summaries.

The sample covers the 90 calendar days from 2026-09-02 through the fixed
instant 2026-11-30T23:59:59Z for three deployments. Each submission is the
body that agentsentinel-sdk 0.4.0 posts to
``POST /api/v1/replay/{run_id}/results``, and the submissions are spread over
four file kinds so that an importer has to merge them: receiver captures of
SDK posts, platform export pages, a JSON Lines log and a gzip archive of
September. A regression is planted in ``prod-eu``, where version 2.3.0 adds
a timestamp to the inputs of ``fetch_context``, so every later replay that
reaches that action diverges.

All randomness comes from ``random.Random(seed)`` and from ``random.Random``
instances seeded with strings built from the seed and run ids, so one seed
always produces byte-identical files.

Run ``python -m ledger.sample [OUT_DIR] [--seed N]``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import math
import random
import re
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

DEFAULT_SEED = 7
DEFAULT_OUT_DIR = Path(__file__).resolve().parent.parent / "sample_data"

WINDOW_FIRST_DAY = date(2026, 9, 2)
WINDOW_DAYS = 90
WINDOW_END = datetime(2026, 11, 30, 23, 59, 59, tzinfo=timezone.utc)
MAX_REPLAY_GAP_DAYS = 30

DEPLOYMENTS = ("prod-eu", "prod-us", "staging")
RUNS_PER_DEPLOYMENT = {"prod-eu": 1250, "prod-us": 1250, "staging": 500}
PEAK_HOURS_UTC = {"prod-eu": range(7, 18), "prod-us": range(13, 24), "staging": range(8, 17)}
WEEKEND_WEIGHT = {"prod-eu": 0.4, "prod-us": 0.4, "staging": 0.15}

# Probability that a replay without an exception diverges for a reason other
# than the planted leak. Times (1 - EXCEPTION_PROBABILITY), these give
# expected divergence rates without the leak of about 25%, 16% and 19%.
BASE_DIVERGENCE_PROBABILITY = {"prod-eu": 0.26, "prod-us": 0.17, "staging": 0.20}
EXCEPTION_PROBABILITY = 0.03
STRICT_MODE_PROBABILITY = 0.30
REPLAYED_RUN_SHARE = 0.10
DIVERGENCE_COUNT_WEIGHTS = {1: 60, 2: 25, 3: 10, 4: 5}
MAX_LENIENT_DIVERGENCES = 4
CAUSE_WEIGHTS = {
    "timestamp": 35,
    "request_id": 20,
    "random_seed": 15,
    "float_noise": 10,
    "list_order": 10,
    "control_flow": 10,
}

ARCHIVE_COUNT = 300
SDK_POST_COUNT = 150
# Not a multiple of EXPORT_PAGE_SIZE, so the last export page is partial.
EXPORT_COUNT = 1030
EXPORT_PAGE_SIZE = 200

SDK_POSTS_DIR = "sdk_posts"
EXPORTS_DIR = "exports"
REPLAYS_FILE = "replays.jsonl"
ARCHIVE_FILE = "archive/replays-2026-09.jsonl.gz"
DEPLOYS_FILE = "deploys.csv"
BAD_RECORDS_FILE = "bad/bad_records.jsonl"
README_FILE = "README.md"
SDK_POST_NAME = re.compile(r"\d{8}_run-[0-9a-f]{12}\.json")
EXPORT_PAGE_NAME = re.compile(r"history_page_\d{3}\.json")


@dataclass(frozen=True)
class Deploy:
    """One agent release rolled out to one deployment."""

    deployment: str
    version: str
    deployed_at: datetime
    note: str


def _parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


BASELINE_NOTE = "release in service when the window opens"
# The first deploy of each deployment happened before the window, so every
# agent_version in the sample has a row in deploys.csv.
DEPLOYS = (
    Deploy("prod-eu", "2.1.4", _parse_utc("2026-08-18T09:30"), BASELINE_NOTE),
    Deploy("prod-eu", "2.2.0", _parse_utc("2026-09-15T10:00"), "moves search_docs to the new index"),
    Deploy("prod-eu", "2.2.1", _parse_utc("2026-10-06T09:15"), "fixes retry backoff in call_llm"),
    Deploy("prod-eu", "2.3.0", _parse_utc("2026-10-20T14:00"), "adds request timing to fetch_context"),
    Deploy("prod-eu", "2.3.1", _parse_utc("2026-11-10T11:00"), "updates prompt templates"),
    Deploy("prod-us", "2.1.4", _parse_utc("2026-08-20T16:00"), BASELINE_NOTE),
    Deploy("prod-us", "2.2.0", _parse_utc("2026-09-22T17:00"), "moves search_docs to the new index"),
    Deploy("prod-us", "2.2.1", _parse_utc("2026-10-13T16:30"), "fixes retry backoff in call_llm"),
    Deploy("prod-us", "2.2.2", _parse_utc("2026-11-17T18:00"), "updates dependencies"),
    Deploy("staging", "2.1.5", _parse_utc("2026-08-25T08:00"), BASELINE_NOTE),
    Deploy("staging", "2.2.0", _parse_utc("2026-09-09T08:00"), "moves search_docs to the new index"),
    Deploy("staging", "2.2.2", _parse_utc("2026-11-03T08:00"), "updates dependencies"),
)
REGRESSION = DEPLOYS[3]
LEAK_ACTION = "fetch_context"
LEAK_KEY = "requested_at"


@dataclass(frozen=True)
class Agent:
    """An agent's action plan, made of opening actions, a loop of tool calls and a closing action."""

    name: str
    opening: tuple[str, ...]
    loop: tuple[str, ...]
    closing: str
    weight: float

    @property
    def actions(self) -> tuple[str, ...]:
        return (*self.opening, *self.loop, self.closing)


# The agents that open with fetch_context take half of the weight, which sets
# how far the planted leak raises prod-eu's divergence rate.
AGENTS = (
    Agent(
        "support-triage",
        opening=("fetch_context",),
        loop=("search_docs", "classify_ticket", "call_llm"),
        closing="write_answer",
        weight=0.30,
    ),
    Agent(
        "code-review",
        opening=("fetch_diff", "fetch_context"),
        loop=("run_linter", "search_docs", "call_llm"),
        closing="post_comment",
        weight=0.20,
    ),
    Agent(
        "research-assistant",
        opening=("search_docs",),
        loop=("fetch_page", "summarize", "call_llm"),
        closing="write_answer",
        weight=0.30,
    ),
    Agent(
        "report-builder",
        opening=("query_metrics",),
        loop=("query_metrics", "summarize", "call_llm", "render_chart"),
        closing="write_report",
        weight=0.20,
    ),
)

# Positional argument kinds and fixed keyword arguments that each action records.
ACTION_INPUTS = {
    "fetch_context": (("ticket",), {"max_items": 20}),
    "search_docs": (("query",), {"top_k": 5}),
    "classify_ticket": (("ticket",), {"labels": ["billing", "bug", "how-to", "account"]}),
    "call_llm": ((), {"model": "chat-large", "max_tokens": 1024}),
    "write_answer": (("ticket",), {"format": "markdown"}),
    "fetch_page": (("url",), {"timeout_s": 10}),
    "summarize": (("doc",), {"max_words": 150}),
    "fetch_diff": (("pull",), {}),
    "run_linter": (("path",), {"rules": ["E501", "F401", "W605", "B006"]}),
    "post_comment": (("pull",), {"draft": False}),
    "query_metrics": (("metric",), {"window": "7d"}),
    "render_chart": (("metric",), {"kind": "line"}),
    "write_report": (("doc",), {"format": "html"}),
}
QUERIES = ("refund policy", "reset password", "rate limits", "sso setup", "export invoices")
URL_PATHS = ("guides/auth", "guides/webhooks", "api/limits", "changelog", "faq/billing")
SOURCE_PATHS = ("src/api/routes.py", "src/billing/invoice.py", "src/auth/session.py", "tests/test_api.py")
METRICS = ("p95_latency_ms", "error_rate", "tickets_opened", "active_users", "token_spend_usd")


@dataclass
class Run:
    """A recorded agent run, whose actions and costs stay fixed across replays."""

    run_id: str
    deployment: str
    agent: Agent
    actions: list[str]
    costs: list[float]
    recorded_at: datetime


@dataclass
class Submission:
    """One replay summary as the receiver stored it."""

    submission_id: str
    run: Run
    submitted_at: datetime
    agent_version: str
    body: dict


@dataclass(frozen=True)
class SampleSummary:
    """Counts of what write_sample wrote and where the regression is planted.

    ``by_file_kind`` counts submissions under the keys ``sdk_posts``,
    ``exports``, ``replays_jsonl`` and ``archive``, which add up to ``total``.
    The divergence rates are the shares of ``regression_deployment``
    submissions with at least one divergence before and from
    ``regression_at`` on.
    """

    seed: int
    total: int
    distinct_runs: int
    replayed_runs: int
    by_file_kind: dict[str, int]
    by_deployment: dict[str, int]
    export_pages: int
    deploys: int
    bad_records: int
    regression_deployment: str
    regression_version: str
    regression_at: datetime
    divergence_rate_before: float
    divergence_rate_after: float


# --- runs and submission times ---------------------------------------------


def _day_weights(deployment: str) -> list[float]:
    weights = []
    for offset in range(WINDOW_DAYS):
        day = WINDOW_FIRST_DAY + timedelta(days=offset)
        weights.append(WEEKEND_WEIGHT[deployment] if day.weekday() >= 5 else 1.0)
    return weights


def _time_on_day(rng: random.Random, deployment: str, day_offset: int) -> datetime:
    hour_weights = [4.0 if hour in PEAK_HOURS_UTC[deployment] else 1.0 for hour in range(24)]
    hour = rng.choices(range(24), hour_weights)[0]
    millisecond = hour * 3_600_000 + rng.randrange(3_600_000)
    # Caps the time of day at 23:59:59.000, so no instant passes WINDOW_END.
    millisecond = min(millisecond, 86_399_000)
    day = WINDOW_FIRST_DAY + timedelta(days=day_offset)
    midnight = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return midnight + timedelta(milliseconds=millisecond)


def _submission_times(rng: random.Random, deployment: str, replay_count: int) -> list[datetime]:
    """Draw replay_count instants on distinct days, at most MAX_REPLAY_GAP_DAYS after the first."""
    last_first_day = WINDOW_DAYS - replay_count
    day_weights = _day_weights(deployment)[: last_first_day + 1]
    first_day = rng.choices(range(last_first_day + 1), day_weights)[0]

    later_days = range(first_day + 1, min(first_day + MAX_REPLAY_GAP_DAYS + 1, WINDOW_DAYS))
    days = [first_day, *sorted(rng.sample(later_days, replay_count - 1))]
    return [_time_on_day(rng, deployment, day) for day in days]


def _action_plan(rng: random.Random, agent: Agent) -> list[str]:
    total = round(rng.triangular(3, 20, 7))
    loop_length = total - len(agent.opening) - 1
    return [*agent.opening, *(rng.choice(agent.loop) for _ in range(loop_length)), agent.closing]


def _action_cost(rng: random.Random, action: str) -> float:
    """Draw a recorded cost_usd between $0.001 and $0.40, rounded to 4 decimals."""
    if action == "call_llm":
        cost = math.exp(rng.uniform(math.log(0.01), math.log(0.40)))
    elif action == "summarize":
        cost = math.exp(rng.uniform(math.log(0.005), math.log(0.12)))
    else:
        cost = rng.uniform(0.001, 0.02)
    return round(cost, 4)


def _recorded_at(rng: random.Random, first_submission: datetime) -> datetime:
    if rng.random() < 0.6:
        return first_submission - timedelta(seconds=rng.uniform(2, 900))
    return first_submission - timedelta(hours=rng.uniform(1, 72))


def _new_hex_id(rng: random.Random, prefix: str, hex_digits: int, used_ids: set[str]) -> str:
    while True:
        candidate = f"{prefix}{rng.getrandbits(4 * hex_digits):0{hex_digits}x}"
        if candidate not in used_ids:
            used_ids.add(candidate)
            return candidate


# --- replay bodies -----------------------------------------------------------


def _naive_iso(instant: datetime) -> str:
    """Format instant without an offset and with microseconds, as datetime.now().isoformat() does."""
    return instant.replace(tzinfo=None).isoformat(timespec="microseconds")


def _argument(kind: str, recorded: random.Random) -> str:
    if kind == "ticket":
        return f"TCK-{recorded.randint(10000, 99999)}"
    if kind == "query":
        return recorded.choice(QUERIES)
    if kind == "url":
        return f"https://docs.example.com/{recorded.choice(URL_PATHS)}"
    if kind == "doc":
        return f"doc-{recorded.randint(1, 9999)}"
    if kind == "pull":
        return f"acme/api#{recorded.randint(100, 4999)}"
    if kind == "path":
        return recorded.choice(SOURCE_PATHS)
    return recorded.choice(METRICS)


def _recorder(seed: int, run: Run, index: int, topic: str) -> random.Random:
    """Seed a generator for recorded values, so replays of a run see the same recording.

    Random seeds a str through SHA-512, so the values do not depend on PYTHONHASHSEED.
    """
    return random.Random(f"{seed}:{run.run_id}:{index}:{topic}")


def _recorded_inputs(seed: int, run: Run, index: int, action: str) -> dict:
    recorded = _recorder(seed, run, index, action)
    argument_kinds, fixed_kwargs = ACTION_INPUTS[action]
    args = [_argument(kind, recorded) for kind in argument_kinds]
    return {"args": args, "kwargs": json.loads(json.dumps(fixed_kwargs))}


def _reordered(rng: random.Random, values: list) -> list:
    while True:
        shuffled = rng.sample(values, len(values))
        if shuffled != values:
            return shuffled


def _cause_values(
    rng: random.Random, recorded: random.Random, cause: str, kwargs: dict, run: Run, submitted_at: datetime
) -> tuple[str, object, object]:
    """Draw the kwargs key a cause changes, with its recorded and replayed values."""
    if cause == "timestamp":
        key = recorded.choice(("ts", "as_of", "since"))
        expected = run.recorded_at + timedelta(microseconds=recorded.randrange(60_000_000))
        actual = submitted_at - timedelta(microseconds=rng.randrange(200_000, 30_000_000))
        return key, _naive_iso(expected), _naive_iso(actual)
    if cause == "request_id":
        expected = uuid.UUID(int=recorded.getrandbits(128), version=4)
        return "request_id", str(expected), str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if cause == "random_seed":
        if recorded.random() < 0.6:
            return "seed", recorded.random(), rng.random()
        return "temperature", 0.7 + recorded.uniform(-0.05, 0.05), 0.7 + rng.uniform(-0.05, 0.05)
    if cause == "float_noise":
        expected = round(recorded.uniform(0.1, 0.9), 2)
        actual = expected
        for _ in range(rng.randint(1, 3)):
            actual = math.nextafter(actual, 1.0)
        return recorded.choice(("score_threshold", "weight")), expected, actual
    # The remaining cause, list_order, reorders a list the action already takes or else a list of document ids.
    key = next((name for name, value in kwargs.items() if isinstance(value, list)), "doc_ids")
    values = kwargs.get(key) or [f"doc-{recorded.randint(1, 9999)}" for _ in range(recorded.randint(3, 6))]
    return key, values, _reordered(rng, values)


def _input_mismatch(index: int, action: str, expected_inputs: dict, actual_inputs: dict) -> dict:
    # Key order as agentsentinel-sdk 0.4.0 ReplayMode.get_next_output builds it.
    return {
        "type": "input_mismatch",
        "action": action,
        "expected_inputs": expected_inputs,
        "actual_inputs": actual_inputs,
        "index": index,
    }


def _cause_divergences(
    rng: random.Random, seed: int, run: Run, index: int, cause: str, submitted_at: datetime, follow_up: bool
) -> list[dict]:
    """Build the divergence records one cause produces at one action index.

    A control-flow change gives an action_mismatch. With follow_up set, the
    substituted action's inputs also differ from the recorded ones, which the
    SDK reports as a second, input_mismatch record at the same index.
    """
    action = run.actions[index]
    if cause == "control_flow":
        substitute = rng.choice([name for name in run.agent.actions if name != action])
        divergences = [{"type": "action_mismatch", "expected": action, "actual": substitute, "index": index}]
        if follow_up:
            expected_inputs = _recorded_inputs(seed, run, index, action)
            actual_inputs = _recorded_inputs(seed, run, index, substitute)
            divergences.append(_input_mismatch(index, substitute, expected_inputs, actual_inputs))
        return divergences

    expected_inputs = _recorded_inputs(seed, run, index, action)
    actual_inputs = json.loads(json.dumps(expected_inputs))
    recorded = _recorder(seed, run, index, cause)
    key, expected, actual = _cause_values(rng, recorded, cause, expected_inputs["kwargs"], run, submitted_at)
    expected_inputs["kwargs"][key] = expected
    actual_inputs["kwargs"][key] = actual
    return [_input_mismatch(index, action, expected_inputs, actual_inputs)]


def _leak_divergence(rng: random.Random, seed: int, run: Run, index: int, submitted_at: datetime) -> dict:
    """Build the input_mismatch that the planted requested_at leak causes."""
    expected_inputs = _recorded_inputs(seed, run, index, LEAK_ACTION)
    actual_inputs = json.loads(json.dumps(expected_inputs))
    # Runs recorded before the deploy have no requested_at in the recording.
    if run.recorded_at >= REGRESSION.deployed_at:
        recorded_offset = timedelta(microseconds=_recorder(seed, run, index, LEAK_KEY).randrange(5_000_000))
        expected_inputs["kwargs"][LEAK_KEY] = _naive_iso(run.recorded_at + recorded_offset)
    replayed_offset = timedelta(microseconds=rng.randrange(100_000, 20_000_000))
    actual_inputs["kwargs"][LEAK_KEY] = _naive_iso(submitted_at - replayed_offset)
    return _input_mismatch(index, LEAK_ACTION, expected_inputs, actual_inputs)


def _draw_base_causes(
    rng: random.Random, run: Run, strict: bool, leak_indices: list[int]
) -> list[tuple[int, str]]:
    """Draw (index, cause) pairs for divergences other than the planted leak.

    Strict mode needs only one, at an index before the last action, because
    the SDK stops at the first divergence and a strict abort leaves actions
    unreplayed. Lenient mode keeps the total, leak included, at four or fewer.
    """
    if strict:
        count = 1
        last_index = len(run.actions) - 2
    else:
        count = rng.choices(list(DIVERGENCE_COUNT_WEIGHTS), list(DIVERGENCE_COUNT_WEIGHTS.values()))[0]
        count = min(count, MAX_LENIENT_DIVERGENCES - len(leak_indices))
        last_index = len(run.actions) - 1
    candidates = [i for i in range(last_index + 1) if i not in leak_indices]
    indices = sorted(rng.sample(candidates, min(count, len(candidates))))
    causes = rng.choices(list(CAUSE_WEIGHTS), list(CAUSE_WEIGHTS.values()), k=len(indices))
    return list(zip(indices, causes))


def _sdk_body(status: str, replayed: int, run: Run, divergences: list[dict]) -> dict:
    # sum() starts from the integer 0, so a replay that stopped before its
    # first action reports cost_savings 0, an int, as agentsentinel-sdk 0.4.0 does.
    return {
        "status": status,
        "actions_replayed": replayed,
        "actions_total": len(run.actions),
        "divergences_detected": len(divergences),
        "divergences": divergences,
        "cost_savings": sum(run.costs[:replayed]),
    }


def _replay_body(rng: random.Random, seed: int, run: Run, submitted_at: datetime) -> dict:
    """Simulate one replay of run and build the body the SDK posts.

    An exception gives "failed" with no divergence. In strict mode the first
    divergence aborts the replay with "failed". Otherwise the replay finishes
    with "success" or, after any divergence, "partial".
    """
    total = len(run.actions)
    strict = rng.random() < STRICT_MODE_PROBABILITY
    leak_active = run.deployment == REGRESSION.deployment and submitted_at >= REGRESSION.deployed_at
    leak_indices = [i for i, action in enumerate(run.actions) if action == LEAK_ACTION] if leak_active else []

    if rng.random() < EXCEPTION_PROBABILITY:
        # The exception has to come before the first leaking call, which would diverge.
        last_reachable = leak_indices[0] if leak_indices else total - 1
        return _sdk_body("failed", rng.randint(0, last_reachable), run, [])

    base_causes = []
    if rng.random() < BASE_DIVERGENCE_PROBABILITY[run.deployment]:
        base_causes = _draw_base_causes(rng, run, strict, leak_indices)
    events = sorted([*base_causes, *((index, "leak") for index in leak_indices)])
    if strict:
        events = events[:1]

    divergences = []
    follow_ups = 0
    for index, cause in events:
        if cause == "leak":
            divergences.append(_leak_divergence(rng, seed, run, index, submitted_at))
            continue
        room = MAX_LENIENT_DIVERGENCES - len(events) - follow_ups
        follow_up = not strict and room > 0 and rng.random() < 0.5
        records = _cause_divergences(rng, seed, run, index, cause, submitted_at, follow_up)
        follow_ups += len(records) - 1
        divergences.extend(records)

    if strict and divergences:
        return _sdk_body("failed", divergences[0]["index"] + 1, run, divergences)
    return _sdk_body("partial" if divergences else "success", total, run, divergences)


# --- submissions ------------------------------------------------------------


def _version_at(deployment: str, instant: datetime) -> str:
    """Return the agent version running in deployment at instant. A deploy applies from its deployed_at on."""
    deployed = [deploy for deploy in DEPLOYS if deploy.deployment == deployment and deploy.deployed_at <= instant]
    return max(deployed, key=lambda deploy: deploy.deployed_at).version


def _generate_run(rng: random.Random, deployment: str, run_ids: set[str]) -> tuple[Run, list[datetime]]:
    replay_count = rng.randint(2, 5) if rng.random() < REPLAYED_RUN_SHARE else 1
    submission_times = _submission_times(rng, deployment, replay_count)
    agent = rng.choices(AGENTS, [agent.weight for agent in AGENTS])[0]
    actions = _action_plan(rng, agent)
    run = Run(
        run_id=_new_hex_id(rng, "run-", 12, run_ids),
        deployment=deployment,
        agent=agent,
        actions=actions,
        costs=[_action_cost(rng, action) for action in actions],
        recorded_at=_recorded_at(rng, submission_times[0]),
    )
    return run, submission_times


def _generate_submissions(rng: random.Random, seed: int) -> list[Submission]:
    """Generate every run and its replays, sorted by submitted_at, then run_id."""
    run_ids: set[str] = set()
    submission_ids: set[str] = set()
    submissions = []
    for deployment in DEPLOYMENTS:
        for _ in range(RUNS_PER_DEPLOYMENT[deployment]):
            run, submission_times = _generate_run(rng, deployment, run_ids)
            for submitted_at in submission_times:
                submission = Submission(
                    submission_id=_new_hex_id(rng, "sub_", 16, submission_ids),
                    run=run,
                    submitted_at=submitted_at,
                    agent_version=_version_at(deployment, submitted_at),
                    body=_replay_body(rng, seed, run, submitted_at),
                )
                submissions.append(submission)
    submissions.sort(key=lambda submission: (submission.submitted_at, submission.run.run_id))
    return submissions


def _assign_file_kinds(rng: random.Random, submissions: list[Submission]) -> dict[str, list[Submission]]:
    """Split submissions into the four file kinds so that each appears in exactly one."""
    september = [i for i, submission in enumerate(submissions) if submission.submitted_at.month == 9]
    archive = set(rng.sample(september, ARCHIVE_COUNT))
    remaining = [i for i in range(len(submissions)) if i not in archive]
    sdk_posts = set(rng.sample(remaining, SDK_POST_COUNT))
    remaining = [i for i in remaining if i not in sdk_posts]
    exports = set(rng.sample(remaining, EXPORT_COUNT))

    kinds: dict[str, list[Submission]] = {"sdk_posts": [], "exports": [], "replays_jsonl": [], "archive": []}
    for i, submission in enumerate(submissions):
        if i in archive:
            kinds["archive"].append(submission)
        elif i in sdk_posts:
            kinds["sdk_posts"].append(submission)
        elif i in exports:
            kinds["exports"].append(submission)
        else:
            kinds["replays_jsonl"].append(submission)
    return kinds


# --- file formats -----------------------------------------------------------


def _iso_z(instant: datetime) -> str:
    return f"{instant:%Y-%m-%dT%H:%M:%S}.{instant.microsecond // 1000:03d}Z"


def _compact_json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _log_record(submission: Submission) -> dict:
    """Build the record that replays.jsonl and the archive store."""
    return {
        "run_id": submission.run.run_id,
        **submission.body,
        "submitted_at": _iso_z(submission.submitted_at),
        "deployment": submission.run.deployment,
        "agent_version": submission.agent_version,
    }


def _export_item(submission: Submission) -> dict:
    """Build a platform listing item, which renames two fields and adds a submission id."""
    body = submission.body
    return {
        "id": submission.submission_id,
        "run_id": submission.run.run_id,
        "status": body["status"],
        "actions_replayed": body["actions_replayed"],
        "actions_total": body["actions_total"],
        "divergence_count": body["divergences_detected"],
        "divergences": body["divergences"],
        "cost_savings": body["cost_savings"],
        "created_at": submission.submitted_at.isoformat(timespec="microseconds"),
        "deployment": submission.run.deployment,
        "agent_version": submission.agent_version,
    }


# --- writers ----------------------------------------------------------------


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")


def _remove_owned_files(out_dir: Path) -> None:
    """Delete the files an earlier write_sample run may have left, and nothing else."""
    for deployment in DEPLOYMENTS:
        for path in (out_dir / SDK_POSTS_DIR / deployment).glob("*.json"):
            if SDK_POST_NAME.fullmatch(path.name):
                path.unlink()
    for path in (out_dir / EXPORTS_DIR).glob("history_page_*.json"):
        if EXPORT_PAGE_NAME.fullmatch(path.name):
            path.unlink()
    for name in (REPLAYS_FILE, ARCHIVE_FILE, DEPLOYS_FILE, BAD_RECORDS_FILE, README_FILE):
        (out_dir / name).unlink(missing_ok=True)


def _write_sdk_posts(out_dir: Path, submissions: list[Submission]) -> None:
    for submission in submissions:
        deployment = submission.run.deployment
        name = f"{submission.submitted_at:%Y%m%d}_{submission.run.run_id}.json"
        # The receiver adds submitted_at and deployment. The run id stays only in the file name.
        received = {**submission.body, "submitted_at": _iso_z(submission.submitted_at), "deployment": deployment}
        _write_text(out_dir / SDK_POSTS_DIR / deployment / name, json.dumps(received, indent=2) + "\n")


def _write_export_pages(out_dir: Path, submissions: list[Submission]) -> int:
    """Write the export newest first in pages of EXPORT_PAGE_SIZE items and return the page count."""
    newest_first = sorted(submissions, key=lambda s: (s.submitted_at, s.submission_id), reverse=True)
    items = [_export_item(submission) for submission in newest_first]
    page_count = math.ceil(len(items) / EXPORT_PAGE_SIZE)
    for page_number in range(1, page_count + 1):
        skip = (page_number - 1) * EXPORT_PAGE_SIZE
        page = {
            "items": items[skip : skip + EXPORT_PAGE_SIZE],
            "total": len(items),
            "skip": skip,
            "limit": EXPORT_PAGE_SIZE,
        }
        _write_text(out_dir / EXPORTS_DIR / f"history_page_{page_number:03d}.json", _compact_json(page) + "\n")
    return page_count


def _json_lines(submissions: list[Submission]) -> str:
    return "".join(_compact_json(_log_record(submission)) + "\n" for submission in submissions)


def _write_archive(out_dir: Path, submissions: list[Submission]) -> None:
    path = out_dir / ARCHIVE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the gzip header, and so the file, identical across runs.
    path.write_bytes(gzip.compress(_json_lines(submissions).encode("utf-8"), mtime=0))


def _write_deploys(out_dir: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["deployment", "version", "deployed_at", "note"])
    for deploy in DEPLOYS:
        writer.writerow([deploy.deployment, deploy.version, f"{deploy.deployed_at:%Y-%m-%dT%H:%M:%SZ}", deploy.note])
    _write_text(out_dir / DEPLOYS_FILE, buffer.getvalue())


def _bad_record_lines(rng: random.Random, submissions: list[Submission]) -> list[str]:
    """Build eight invalid lines, one fault each, in the order the README lists them.

    Each line starts from a valid nine-action success record and gets a fresh
    run id, so no bad line collides with a real submission.
    """
    template = next(s for s in submissions if s.body["status"] == "success" and s.body["actions_total"] == 9)
    base = _log_record(template)
    used_run_ids = {submission.run.run_id for submission in submissions}

    def variant(**changes: object) -> dict:
        return {**base, "run_id": _new_hex_id(rng, "run-", 12, used_run_ids), **changes}

    records = [
        variant(actions_replayed=11),
        variant(divergences_detected=-1),
        variant(status="done"),
        variant(run_id=""),
        variant(cost_savings=-0.42),
        variant(actions_total="9"),
    ]
    lines = [_compact_json(record) for record in records]
    lines.append(_compact_json(variant())[:-1] + ",}")
    # json.dumps writes NaN for float("nan") because allow_nan defaults to True.
    lines.append(_compact_json(variant(cost_savings=float("nan"))))
    return lines


# --- summary and README -----------------------------------------------------


def _divergence_rate(submissions: list[Submission]) -> float:
    diverged = sum(1 for submission in submissions if submission.body["divergences"])
    return diverged / len(submissions)


def _regression_rates(submissions: list[Submission]) -> tuple[float, float]:
    affected = [s for s in submissions if s.run.deployment == REGRESSION.deployment]
    before = [s for s in affected if s.submitted_at < REGRESSION.deployed_at]
    after = [s for s in affected if s.submitted_at >= REGRESSION.deployed_at]
    return _divergence_rate(before), _divergence_rate(after)


def _readme_files_section(summary: SampleSummary) -> str:
    kinds = summary.by_file_kind
    return f"""## Files

Each submission is in exactly one of the first four file kinds.

- `sdk_posts/<deployment>/<YYYYMMDD>_<run_id>.json` ({kinds["sdk_posts"]:,} files): the
  body that agentsentinel-sdk 0.4.0 posts to
  `POST /api/v1/replay/{{run_id}}/results`, plus `submitted_at` and
  `deployment`, which the receiver adds. The run id is only in the file name.
  These files carry no `agent_version`, so look it up in `deploys.csv`.
- `exports/history_page_NNN.json` ({kinds["exports"]:,} submissions in {summary.export_pages} pages): platform
  export pages `{{"items": [...], "total": T, "skip": S, "limit": {EXPORT_PAGE_SIZE}}}`, newest
  first. Items use the platform's field names: `id` (stable per submission),
  `divergence_count` and `created_at` (ISO 8601 with `+00:00`).
- `replays.jsonl` ({kinds["replays_jsonl"]:,} lines): one submission a line, oldest first, with
  `run_id`, the SDK fields, `submitted_at` (ISO 8601 with `Z`), `deployment`
  and `agent_version`.
- `archive/replays-2026-09.jsonl.gz` ({kinds["archive"]:,} lines): September submissions in the
  `replays.jsonl` format, gzip-compressed. None of them is in `replays.jsonl`.
- `deploys.csv` ({summary.deploys} rows): `deployment,version,deployed_at,note`. The first
  row of each deployment is the release already in service when the window
  opens. A deploy applies to submissions from its `deployed_at` on.
- `bad/bad_records.jsonl` ({summary.bad_records} lines): invalid records in the `replays.jsonl`
  format, with one fault each. In line order, the faults are actions_replayed
  greater than actions_total, a negative divergences_detected, status "done",
  an empty run_id, a negative cost_savings, actions_total as the string "9",
  a trailing comma (invalid JSON) and `NaN` as cost_savings. These lines are
  not counted as submissions.
"""


def _readme_text(summary: SampleSummary) -> str:
    regression_at = f"{summary.regression_at:%Y-%m-%dT%H:%M:%SZ}"
    per_deployment = ", ".join(f"{name} {count:,}" for name, count in summary.by_deployment.items())
    return f"""# Sample replay data

Synthetic summaries of AI-agent replay runs for trying out replay-ledger. The
generator is `ledger/sample.py`. This command, run from the repository root,
deletes and rewrites the files listed below and leaves other files alone:

    python -m ledger.sample sample_data --seed {summary.seed}

The same seed always gives byte-identical files. The data covers the 90 days
from 2026-09-02T00:00:00Z to 2026-11-30T23:59:59Z for the deployments
prod-eu, prod-us and staging.

{_readme_files_section(summary)}
## Shape of the data

Status follows the SDK. An exception gives "failed" with no divergence and
fewer actions replayed than recorded. A strict-mode replay stops at its
first divergence with "failed", so actions_replayed is that divergence's
index plus one. A lenient replay gives "success" without divergences and
"partial" with one to four. A replay that stopped before its first action
reports `cost_savings` as the integer `0`, because the SDK sums an empty list.

Divergence causes are timestamps in kwargs, request ids (UUID 4), random
seeds and temperature jitter, floating-point noise in the last bits,
reordered lists and changed control flow. A changed control flow gives an
`action_mismatch`, which in lenient mode is sometimes followed by an
`input_mismatch` at the same index. About 10% of the runs were replayed two
to five times, on different days.

## Planted regression

{summary.regression_deployment} deployed version {summary.regression_version} at {regression_at}. From then on
`{LEAK_ACTION}` passes the current time as `kwargs.{LEAK_KEY}`, so every replay
that reaches it diverges, and later prod-eu deploys keep the leak. The share of
{summary.regression_deployment} submissions with at least one divergence is {summary.divergence_rate_before:.1%} before the deploy
and {summary.divergence_rate_after:.1%} after it. The generator gives the other deploys no effect on
divergences.

## Totals

- Submissions: {summary.total:,} ({per_deployment})
- Distinct runs: {summary.distinct_runs:,}, of which {summary.replayed_runs:,} were replayed more than once
"""


# --- entry points -----------------------------------------------------------


def write_sample(out_dir: Path, seed: int = DEFAULT_SEED) -> SampleSummary:
    """Generate the sample for seed and write it under out_dir.

    Deletes and rewrites only the files this generator owns (the files its
    README lists) and leaves other files in out_dir alone. The same seed
    gives byte-identical files. Returns the counts written and the planted
    regression.
    """
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    submissions = _generate_submissions(rng, seed)
    kinds = _assign_file_kinds(rng, submissions)
    bad_lines = _bad_record_lines(rng, submissions)

    _remove_owned_files(out_dir)
    _write_sdk_posts(out_dir, kinds["sdk_posts"])
    export_pages = _write_export_pages(out_dir, kinds["exports"])
    _write_text(out_dir / REPLAYS_FILE, _json_lines(kinds["replays_jsonl"]))
    _write_archive(out_dir, kinds["archive"])
    _write_deploys(out_dir)
    _write_text(out_dir / BAD_RECORDS_FILE, "".join(line + "\n" for line in bad_lines))

    submissions_per_run = Counter(submission.run.run_id for submission in submissions)
    submissions_per_deployment = Counter(submission.run.deployment for submission in submissions)
    rate_before, rate_after = _regression_rates(submissions)
    summary = SampleSummary(
        seed=seed,
        total=len(submissions),
        distinct_runs=len(submissions_per_run),
        replayed_runs=sum(1 for count in submissions_per_run.values() if count > 1),
        by_file_kind={kind: len(group) for kind, group in kinds.items()},
        by_deployment={name: submissions_per_deployment[name] for name in DEPLOYMENTS},
        export_pages=export_pages,
        deploys=len(DEPLOYS),
        bad_records=len(bad_lines),
        regression_deployment=REGRESSION.deployment,
        regression_version=REGRESSION.version,
        regression_at=REGRESSION.deployed_at,
        divergence_rate_before=rate_before,
        divergence_rate_after=rate_after,
    )
    _write_text(out_dir / README_FILE, _readme_text(summary))
    return summary


def sample_folder() -> Path:
    """Return the bundled sample_data folder, or generate it into a temporary folder when it is not beside the package."""
    bundled = Path(__file__).resolve().parent.parent / "sample_data"
    if (bundled / "deploys.csv").is_file():
        return bundled
    target = Path(tempfile.mkdtemp(prefix="replay-ledger-sample-"))
    write_sample(target)
    return target


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, write the sample and print its summary."""
    parser = argparse.ArgumentParser(prog="python -m ledger.sample", description=__doc__.splitlines()[0])
    parser.add_argument(
        "out_dir", nargs="?", type=Path, default=DEFAULT_OUT_DIR, help=f"output directory (default: {DEFAULT_OUT_DIR})"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default: {DEFAULT_SEED})")
    args = parser.parse_args(argv)

    summary = write_sample(args.out_dir, args.seed)
    print(f"wrote {summary.total:,} submissions from {summary.distinct_runs:,} runs to {args.out_dir}")
    for kind, count in summary.by_file_kind.items():
        print(f"  {kind}: {count:,}")
    for deployment, count in summary.by_deployment.items():
        print(f"  {deployment}: {count:,}")
    print(
        f"  regression: {summary.regression_deployment} {summary.regression_version} at "
        f"{summary.regression_at:%Y-%m-%dT%H:%M:%SZ}, divergence rate "
        f"{summary.divergence_rate_before:.1%} before, {summary.divergence_rate_after:.1%} after"
    )


if __name__ == "__main__":
    main()
