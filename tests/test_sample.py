"""Tests for ledger.sample, which read the written files back with the json module."""

from __future__ import annotations

import csv
import gzip
import json
import math
import re
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ledger.sample import write_sample

SEED = 7
DEPLOYMENTS = ("prod-eu", "prod-us", "staging")
WINDOW_START = datetime(2026, 9, 2, tzinfo=timezone.utc)
WINDOW_END = datetime(2026, 11, 30, 23, 59, 59, tzinfo=timezone.utc)
REGRESSION_AT = datetime(2026, 10, 20, 14, 0, tzinfo=timezone.utc)
SDK_KEYS = ["status", "actions_replayed", "actions_total", "divergences_detected", "divergences", "cost_savings"]
LOG_KEYS = ["run_id", *SDK_KEYS, "submitted_at", "deployment", "agent_version"]
EXPORT_KEYS = [
    "id",
    "run_id",
    "status",
    "actions_replayed",
    "actions_total",
    "divergence_count",
    "divergences",
    "cost_savings",
    "created_at",
    "deployment",
    "agent_version",
]
RUN_ID = re.compile(r"run-[0-9a-f]{12}")
COMMITTED_SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"


# --- loading ----------------------------------------------------------------


def read_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def load_sdk_posts(out_dir: Path) -> list[dict]:
    records = []
    for path in sorted((out_dir / "sdk_posts").glob("*/*.json")):
        body = json.loads(path.read_text(encoding="utf-8"))
        day, run_id = path.stem.split("_", 1)
        records.append({**body, "run_id": run_id, "file_day": day, "file_deployment": path.parent.name})
    return records


def load_export_pages(out_dir: Path) -> list[dict]:
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted((out_dir / "exports").glob("*.json"))]


def load_replays(out_dir: Path) -> list[dict]:
    return read_jsonl((out_dir / "replays.jsonl").read_text(encoding="utf-8"))


def load_archive(out_dir: Path) -> list[dict]:
    with gzip.open(out_dir / "archive" / "replays-2026-09.jsonl.gz", "rt", encoding="utf-8") as archive:
        return read_jsonl(archive.read())


def load_deploys(out_dir: Path) -> list[dict]:
    with open(out_dir / "deploys.csv", newline="", encoding="utf-8") as deploys:
        return list(csv.DictReader(deploys))


def normalize(record: dict, source: str) -> dict:
    """Map a record of any file kind to the replays.jsonl names, with a parsed time and its source."""
    record = dict(record)
    if "divergence_count" in record:
        record["divergences_detected"] = record.pop("divergence_count")
        record["submitted_at"] = record.pop("created_at")
    record["time"] = datetime.fromisoformat(record["submitted_at"])
    record["source"] = source
    return record


def load_all(out_dir: Path) -> list[dict]:
    records = [normalize(record, "sdk_posts") for record in load_sdk_posts(out_dir)]
    for page in load_export_pages(out_dir):
        records.extend(normalize(item, "exports") for item in page["items"])
    records.extend(normalize(record, "replays_jsonl") for record in load_replays(out_dir))
    records.extend(normalize(record, "archive") for record in load_archive(out_dir))
    return records


def version_at(deploys: list[dict], deployment: str, instant: datetime) -> str:
    rows = [row for row in deploys if row["deployment"] == deployment]
    started = [row for row in rows if datetime.fromisoformat(row["deployed_at"]) <= instant]
    return max(started, key=lambda row: row["deployed_at"])["version"]


def divergence_rate(records: list[dict]) -> float:
    return sum(1 for record in records if record["divergences"]) / len(records)


def changed_kwargs(divergence: dict) -> set[str]:
    expected = divergence["expected_inputs"]["kwargs"]
    actual = divergence["actual_inputs"]["kwargs"]
    return {key for key in expected.keys() | actual.keys() if expected.get(key) != actual.get(key)}


def classify_input_mismatch(divergence: dict) -> str:
    """Name the cause of one input_mismatch from the kwargs that differ in it."""
    if divergence["expected_inputs"]["args"] != divergence["actual_inputs"]["args"]:
        return "unknown"
    keys = changed_kwargs(divergence)
    if keys == {"requested_at"}:
        return "leak"
    if len(keys) != 1:
        return "unknown"
    (key,) = keys
    if key in {"ts", "as_of", "since"}:
        return "timestamp"
    if key == "request_id":
        return "request_id"
    if key in {"seed", "temperature"}:
        return "random_seed"
    if key in {"score_threshold", "weight"}:
        return "float_noise"
    expected = divergence["expected_inputs"]["kwargs"][key]
    actual = divergence["actual_inputs"]["kwargs"][key]
    if isinstance(expected, list) and sorted(expected) == sorted(actual):
        return "list_order"
    return "unknown"


def classify_divergences(record: dict) -> list[tuple[str, dict]]:
    """Pair each divergence of a submission with the name of its cause.

    An input_mismatch at the index of an earlier action_mismatch compares the
    inputs of two different actions, so it is named "substituted_action".
    """
    classified = []
    mismatched_indices = set()
    for divergence in record["divergences"]:
        if divergence["type"] == "action_mismatch":
            mismatched_indices.add(divergence["index"])
            cause = "control_flow"
        elif divergence["index"] in mismatched_indices:
            cause = "substituted_action"
        else:
            cause = classify_input_mismatch(divergence)
        classified.append((cause, divergence))
    return classified


def divergences_with_cause(records: list[dict], wanted: str) -> list[dict]:
    return [d for record in records for cause, d in classify_divergences(record) if cause == wanted]


# --- fixtures ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("sample")
    summary = write_sample(out_dir, seed=SEED)
    return out_dir, summary


@pytest.fixture(scope="module")
def records(sample):
    out_dir, _ = sample
    return load_all(out_dir)


@pytest.fixture(scope="module")
def deploys(sample):
    out_dir, _ = sample
    return load_deploys(out_dir)


def file_bytes(out_dir: Path) -> dict[str, bytes]:
    return {str(path.relative_to(out_dir)): path.read_bytes() for path in sorted(out_dir.rglob("*")) if path.is_file()}


# --- counts and layout ------------------------------------------------------


def test_file_kind_counts_match_summary(sample, records):
    _, summary = sample
    counts = Counter(record["source"] for record in records)

    assert dict(counts) == summary.by_file_kind
    assert sum(summary.by_file_kind.values()) == summary.total
    assert len(records) == summary.total
    assert 140 <= counts["sdk_posts"] <= 160
    assert 950 <= counts["exports"] <= 1100
    assert 280 <= counts["archive"] <= 320


def test_totals_per_deployment(sample, records):
    _, summary = sample
    counts = Counter(record["deployment"] for record in records)

    assert summary.total >= 3000
    assert dict(counts) == summary.by_deployment
    assert set(counts) == set(DEPLOYMENTS)
    assert counts["staging"] < counts["prod-eu"]
    assert counts["staging"] < counts["prod-us"]


def test_submission_in_one_file_only(records):
    keys = Counter((record["run_id"], record["time"]) for record in records)
    duplicates = [key for key, count in keys.items() if count > 1]

    assert duplicates == []


def test_sdk_post_body_and_name(sample):
    out_dir, _ = sample
    posts = load_sdk_posts(out_dir)

    assert posts
    for post in posts:
        assert list(post)[:8] == [*SDK_KEYS, "submitted_at", "deployment"]
        assert RUN_ID.fullmatch(post["run_id"])
        assert post["submitted_at"].endswith("Z")
        assert post["deployment"] == post["file_deployment"]
        assert datetime.fromisoformat(post["submitted_at"]).strftime("%Y%m%d") == post["file_day"]


def test_sdk_post_body_has_no_run_id(sample):
    out_dir, _ = sample
    for path in (out_dir / "sdk_posts").glob("*/*.json"):
        body = json.loads(path.read_text(encoding="utf-8"))
        assert "run_id" not in body
        assert list(body) == [*SDK_KEYS, "submitted_at", "deployment"]


def test_export_page_envelopes(sample):
    out_dir, summary = sample
    pages = load_export_pages(out_dir)
    total = sum(len(page["items"]) for page in pages)

    assert len(pages) == summary.export_pages
    assert total == summary.by_file_kind["exports"]
    for number, page in enumerate(pages):
        assert list(page) == ["items", "total", "skip", "limit"]
        assert page["limit"] == 200
        assert page["skip"] == number * 200
        assert page["total"] == total
        assert 1 <= len(page["items"]) <= 200
    assert all(len(page["items"]) == 200 for page in pages[:-1])


def test_export_items_newest_first(sample):
    out_dir, _ = sample
    items = [item for page in load_export_pages(out_dir) for item in page["items"]]
    created = [datetime.fromisoformat(item["created_at"]) for item in items]

    assert created == sorted(created, reverse=True)
    for item in items:
        assert list(item) == EXPORT_KEYS
        assert re.fullmatch(r"sub_[0-9a-f]{16}", item["id"])
        assert item["created_at"].endswith("+00:00")
    assert len({item["id"] for item in items}) == len(items)


def test_export_ids_stable_across_runs(sample, tmp_path):
    out_dir, _ = sample
    write_sample(tmp_path, seed=SEED)
    first = [item["id"] for page in load_export_pages(out_dir) for item in page["items"]]
    second = [item["id"] for page in load_export_pages(tmp_path) for item in page["items"]]

    assert first == second


def test_log_records_field_names(sample):
    out_dir, _ = sample
    for record in [*load_replays(out_dir), *load_archive(out_dir)]:
        assert list(record) == LOG_KEYS
        assert record["submitted_at"].endswith("Z")


def test_archive_is_september_only(sample):
    out_dir, _ = sample
    archived = load_archive(out_dir)

    assert archived
    for record in archived:
        assert record["submitted_at"].startswith("2026-09-")


def test_times_inside_window(records):
    for record in records:
        assert WINDOW_START <= record["time"] <= WINDOW_END


def test_sample_size_below_limit():
    size = sum(path.stat().st_size for path in COMMITTED_SAMPLE.rglob("*") if path.is_file())

    assert size < 6_000_000


# --- SDK semantics and shares -----------------------------------------------


def test_status_rules_hold(records):
    for record in records:
        status = record["status"]
        replayed = record["actions_replayed"]
        total = record["actions_total"]
        divergences = record["divergences"]
        assert record["divergences_detected"] == len(divergences)
        assert [d["index"] for d in divergences] == sorted(d["index"] for d in divergences)
        if status == "success":
            assert divergences == []
            assert replayed == total
        elif status == "partial":
            assert 1 <= len(divergences) <= 4
            assert replayed == total
        else:
            assert status == "failed"
            assert replayed < total
            assert len(divergences) <= 1
            if divergences:
                assert replayed == divergences[0]["index"] + 1


def test_status_shares(records):
    total = len(records)
    success = sum(1 for r in records if r["status"] == "success") / total
    partial = sum(1 for r in records if r["status"] == "partial") / total
    strict_aborts = sum(1 for r in records if r["status"] == "failed" and r["divergences"]) / total
    exceptions = sum(1 for r in records if r["status"] == "failed" and not r["divergences"]) / total

    assert 0.62 <= success <= 0.78
    assert 0.10 <= partial <= 0.30
    assert 0.03 <= strict_aborts <= 0.15
    assert 0.01 <= exceptions <= 0.06


def test_counts_and_costs_in_range(records):
    savings = [record["cost_savings"] for record in records]

    for record in records:
        assert 3 <= record["actions_total"] <= 20
        assert 0 <= record["actions_replayed"] <= record["actions_total"]
    assert min(savings) >= 0
    assert max(savings) > 1.0
    assert min(s for s in savings if s > 0) < 0.05


def test_empty_replay_saves_integer_zero(records):
    empty = [record for record in records if record["actions_replayed"] == 0]

    assert empty
    for record in empty:
        assert record["cost_savings"] == 0
        assert type(record["cost_savings"]) is int


def test_run_ids_and_repeats(records):
    days_by_run = defaultdict(list)
    for record in records:
        assert RUN_ID.fullmatch(record["run_id"])
        days_by_run[record["run_id"]].append(record["time"].date())
    repeated = [days for days in days_by_run.values() if len(days) > 1]

    assert 0.07 <= len(repeated) / len(days_by_run) <= 0.13
    for days in repeated:
        assert 2 <= len(days) <= 5
        assert len(set(days)) == len(days)


def test_run_keeps_one_deployment(records):
    deployments_by_run = defaultdict(set)
    for record in records:
        deployments_by_run[record["run_id"]].add(record["deployment"])

    assert all(len(deployments) == 1 for deployments in deployments_by_run.values())


def test_divergence_causes_present(records):
    causes = Counter(cause for record in records for cause, _ in classify_divergences(record))
    non_leak = sum(count for cause, count in causes.items() if cause != "leak")

    assert causes["unknown"] == 0
    for cause in ("timestamp", "request_id", "random_seed", "float_noise", "list_order", "control_flow"):
        assert causes[cause] / non_leak >= 0.04, cause
    assert causes.most_common(1)[0][0] in {"timestamp", "leak"}
    assert causes["timestamp"] > causes["request_id"] > causes["float_noise"]


def test_timestamps_have_microseconds(records):
    timestamps = [
        divergence[side]["kwargs"][key]
        for divergence in divergences_with_cause(records, "timestamp")
        for key in changed_kwargs(divergence)
        for side in ("expected_inputs", "actual_inputs")
    ]

    assert timestamps
    for value in timestamps:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", value)


def test_float_noise_is_last_bits(records):
    noisy = divergences_with_cause(records, "float_noise")

    assert noisy
    for divergence in noisy:
        for key in changed_kwargs(divergence):
            expected = divergence["expected_inputs"]["kwargs"][key]
            actual = divergence["actual_inputs"]["kwargs"][key]
            assert expected != actual
            assert math.isclose(expected, actual, rel_tol=1e-12)


def test_substituted_action_follows_mismatch(records):
    substituted = 0
    for record in records:
        classified = classify_divergences(record)
        for position, (cause, divergence) in enumerate(classified):
            if cause != "substituted_action":
                continue
            substituted += 1
            _, mismatch = classified[position - 1]
            assert record["status"] == "partial"
            assert mismatch["type"] == "action_mismatch"
            assert mismatch["index"] == divergence["index"]
            assert divergence["action"] == mismatch["actual"]

    assert substituted > 0


# --- deploys and the planted regression -------------------------------------


def test_deploys_csv_rows(sample, deploys):
    _, summary = sample
    regression = [row for row in deploys if row["version"] == "2.3.0" and row["deployment"] == "prod-eu"]

    assert list(deploys[0]) == ["deployment", "version", "deployed_at", "note"]
    assert len(deploys) == summary.deploys
    assert len(regression) == 1
    assert regression[0]["deployed_at"] == "2026-10-20T14:00:00Z"
    assert "adds request timing to fetch_context" in regression[0]["note"]
    for deployment in DEPLOYMENTS:
        in_window = [
            row
            for row in deploys
            if row["deployment"] == deployment and datetime.fromisoformat(row["deployed_at"]) >= WINDOW_START
        ]
        assert 2 <= len(in_window) <= 4, deployment


def test_agent_version_matches_deploys(records, deploys):
    with_version = [record for record in records if "agent_version" in record]

    assert len(with_version) == len(records) - sum(1 for r in records if r["source"] == "sdk_posts")
    for record in with_version:
        assert record["agent_version"] == version_at(deploys, record["deployment"], record["time"])


def test_summary_names_regression(sample):
    _, summary = sample

    assert summary.regression_deployment == "prod-eu"
    assert summary.regression_version == "2.3.0"
    assert summary.regression_at == REGRESSION_AT


def test_regression_rate_jumps(sample, records):
    _, summary = sample
    prod_eu = [record for record in records if record["deployment"] == "prod-eu"]
    before = divergence_rate([record for record in prod_eu if record["time"] < REGRESSION_AT])
    after = divergence_rate([record for record in prod_eu if record["time"] >= REGRESSION_AT])

    assert 0.18 <= before <= 0.32
    assert 0.52 <= after <= 0.70
    assert before == pytest.approx(summary.divergence_rate_before)
    assert after == pytest.approx(summary.divergence_rate_after)


def test_leak_only_after_regression(records):
    for record in records:
        leaks = [
            d
            for d in record["divergences"]
            if d["type"] == "input_mismatch"
            and ("requested_at" in d["actual_inputs"]["kwargs"] or "requested_at" in d["expected_inputs"]["kwargs"])
        ]
        if record["deployment"] != "prod-eu" or record["time"] < REGRESSION_AT:
            assert leaks == []
        for divergence in leaks:
            assert divergence["action"] == "fetch_context"
            assert "requested_at" in divergence["actual_inputs"]["kwargs"]


def test_leak_share_after_regression(records):
    after = [r for r in records if r["deployment"] == "prod-eu" and r["time"] >= REGRESSION_AT]
    leaking = [r for r in after if divergences_with_cause([r], "leak")]

    assert 0.40 <= len(leaking) / len(after) <= 0.60
    for record in leaking:
        leak_indices = [d["index"] for d in divergences_with_cause([record], "leak")]
        assert len(leak_indices) == 1
        assert leak_indices[0] in (0, 1)


def test_other_deploys_keep_rate(records, deploys):
    """Check each version segment of 150 or more submissions against its deployment's baseline."""
    for deployment in DEPLOYMENTS:
        rows = sorted((row for row in deploys if row["deployment"] == deployment), key=lambda row: row["deployed_at"])
        own = [r for r in records if r["deployment"] == deployment]
        unaffected = [r for r in own if deployment != "prod-eu" or r["time"] < REGRESSION_AT]
        baseline = divergence_rate(unaffected)
        assert 0.10 <= baseline <= 0.30, deployment
        for row in rows:
            segment = [r for r in unaffected if version_at(deploys, deployment, r["time"]) == row["version"]]
            if len(segment) >= 150:
                assert abs(divergence_rate(segment) - baseline) <= 0.07, (deployment, row["version"])


# --- bad records ------------------------------------------------------------


def test_bad_records_one_fault_each(sample):
    out_dir, summary = sample
    lines = (out_dir / "bad" / "bad_records.jsonl").read_text(encoding="utf-8").splitlines()

    assert len(lines) == 8
    assert summary.bad_records == 8
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[6])
    parsed = [json.loads(line) for index, line in enumerate(lines) if index != 6]
    over, negative, done, empty_id, negative_cost, string_count, nan_cost = parsed
    assert over["actions_replayed"] > over["actions_total"]
    assert negative["divergences_detected"] < 0
    assert done["status"] == "done"
    assert empty_id["run_id"] == ""
    assert negative_cost["cost_savings"] < 0
    assert string_count["actions_total"] == "9"
    assert math.isnan(nan_cost["cost_savings"])
    assert '"cost_savings":NaN' in lines[7]
    assert lines[6].endswith(",}")


def test_bad_records_do_not_collide(sample, records):
    out_dir, _ = sample
    lines = (out_dir / "bad" / "bad_records.jsonl").read_text(encoding="utf-8").splitlines()
    run_ids = {match for line in lines for match in re.findall(r"run-[0-9a-f]{12}", line)}

    assert len(run_ids) == 7
    assert run_ids.isdisjoint({record["run_id"] for record in records})


# --- determinism and file ownership -----------------------------------------


def test_same_seed_byte_identical(sample, tmp_path):
    out_dir, _ = sample
    write_sample(tmp_path, seed=SEED)

    assert file_bytes(tmp_path) == file_bytes(out_dir)


def test_other_seed_differs(sample, tmp_path):
    out_dir, _ = sample
    summary = write_sample(tmp_path, seed=SEED + 1)

    assert summary.total >= 3000
    assert (tmp_path / "replays.jsonl").read_bytes() != (out_dir / "replays.jsonl").read_bytes()


def test_rewrite_replaces_owned_files_only(tmp_path):
    reused = tmp_path / "reused"
    fresh = tmp_path / "fresh"
    write_sample(reused, seed=SEED + 1)
    stale_page = reused / "exports" / "history_page_099.json"
    stale_page.write_text("{}", encoding="utf-8")
    foreign = reused / "notes.txt"
    foreign.write_text("kept", encoding="utf-8")
    foreign_post = reused / "sdk_posts" / "prod-eu" / "readme.txt"
    foreign_post.write_text("kept", encoding="utf-8")

    write_sample(reused, seed=SEED)
    write_sample(fresh, seed=SEED)

    assert not stale_page.exists()
    assert foreign.read_text(encoding="utf-8") == "kept"
    assert foreign_post.read_text(encoding="utf-8") == "kept"
    generated = {name: data for name, data in file_bytes(reused).items() if not name.endswith(".txt")}
    assert generated == file_bytes(fresh)


def test_readme_lists_totals(sample):
    out_dir, summary = sample
    readme = (out_dir / "README.md").read_text(encoding="utf-8")

    assert "python -m ledger.sample" in readme
    assert f"{summary.total:,}" in readme
    assert "2026-10-20T14:00:00Z" in readme
    for kind_count in summary.by_file_kind.values():
        assert f"{kind_count:,}" in readme


def test_committed_sample_matches_generator(sample):
    """Check that sample_data in the repository is what seed 7 generates now.

    The archive is compared after decompression, because another zlib build
    may compress the same lines to different bytes.
    """
    out_dir, _ = sample
    committed = file_bytes(COMMITTED_SAMPLE)
    generated = file_bytes(out_dir)
    archive = "archive/replays-2026-09.jsonl.gz"

    assert committed.keys() == generated.keys()
    assert gzip.decompress(committed.pop(archive)) == gzip.decompress(generated.pop(archive))
    assert committed == generated
