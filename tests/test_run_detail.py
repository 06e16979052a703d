"""The Run page's parts without Streamlit: run reads against hand SQL, run search, platform links, the JSON diff."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from ledger import jsondiff, platform
from ledger.analysis import MISSING
from ledger.ingest import ingest_paths
from ledger.queries import runs

CASES = Path(__file__).resolve().parent / "data" / "cases"
C08_RUN_ID = "<b>r1</b><script>alert(1)</script>"
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def query(ledger: Path, sql: str, parameters: list | tuple = ()) -> list[tuple]:
    with duckdb.connect(str(ledger), read_only=True) as connection:
        return connection.execute(sql, list(parameters)).fetchall()


def submission(run_id: str, at: datetime, **fields) -> dict:
    value = {"run_id": run_id, "status": "success", "actions_replayed": 2, "actions_total": 2,
             "divergences_detected": 0, "divergences": [], "cost_savings": 0.1,
             "submitted_at": at.isoformat().replace("+00:00", "Z")}
    value.update(fields)
    return value


@pytest.fixture(scope="module")
def run_ledger(tmp_path_factory) -> Path:
    """C08, C10 and C11, plus a run with three submissions and runs whose ids share a prefix."""
    folder = tmp_path_factory.mktemp("runs")
    ledger = folder / "runs.duckdb"
    ingest_paths(ledger, [str(CASES / "c08_markup.json"), str(CASES / "c10_sdk_post_run-demo-1.json"),
                          str(CASES / "c11_strict_abort_run-abc.json")])
    divergence = {"type": "input_mismatch", "action": "fetch", "index": 1,
                  "expected_inputs": {"kwargs": {"id": "3f1c2a4e-8b7d-4c6e-9a21-5d0f7e6b4c3a"}},
                  "actual_inputs": {"kwargs": {"id": "9b2e7d1f-0c4a-4f8b-b6d3-2e1a9c8f7b60"}}}
    records = [
        submission("multi", T0, deployment="prod"),
        submission("multi", T0 + timedelta(hours=2), deployment="prod", status="partial", divergences_detected=1,
                   divergences=[divergence], cost_savings=0.25),
        submission("multi", T0 + timedelta(hours=1), deployment="staging", status="failed", actions_replayed=1,
                   actions_total=5, cost_savings=0.05),
        submission("multi-2", T0 + timedelta(days=1)),
        submission("MULTI-upper", T0 + timedelta(days=2)),
        submission("pre-multi", T0 + timedelta(days=3)),
    ]
    path = folder / "runs.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in records))
    ingest_paths(ledger, [str(path)])
    return ledger


# ---------------------------------------------------------------------------
# run_detail


def test_run_detail_tiles_match_sql(run_ledger):
    detail = runs.run_detail(run_ledger, "multi")
    hand = query(run_ledger, """
        SELECT count(*), sum(actions_replayed), sum(actions_total), sum(divergences_detected), sum(cost_savings),
               min(submitted_at), max(submitted_at)
        FROM submissions WHERE run_id = 'multi'
    """)[0]

    tiles = detail.tiles
    assert (tiles.submissions, tiles.actions_replayed, tiles.actions_total, tiles.divergences, tiles.cost_saved,
            tiles.first_submitted, tiles.last_submitted) == hand
    assert tiles.cost_saved == Decimal("0.4")
    assert tiles.deployments == ("prod", "staging")
    assert tiles.exception_failures == 1
    assert tiles.strict_aborts == 0


def test_run_detail_newest_first(run_ledger):
    detail = runs.run_detail(run_ledger, "multi")

    assert [item.submitted_at for item in detail.submissions] == [
        T0 + timedelta(hours=2), T0 + timedelta(hours=1), T0,
    ]
    assert [item.status for item in detail.submissions] == ["partial", "failed", "success"]


def test_run_detail_limit(run_ledger):
    detail = runs.run_detail(run_ledger, "multi", limit=1)

    assert detail.tiles.submissions == 3
    assert [item.status for item in detail.submissions] == ["partial"]


def test_run_detail_divergence_with_cause(run_ledger):
    newest = runs.run_detail(run_ledger, "multi").submissions[0]

    assert len(newest.divergences) == 1
    divergence = newest.divergences[0]
    assert (divergence.position, divergence.type, divergence.action, divergence.action_index) == (0, "input_mismatch",
                                                                                                  "fetch", 1)
    assert divergence.expected == {"kwargs": {"id": "3f1c2a4e-8b7d-4c6e-9a21-5d0f7e6b4c3a"}}
    assert divergence.causes == (runs.DivergenceCause(
        "kwargs.id", "uuid", '"3f1c2a4e-8b7d-4c6e-9a21-5d0f7e6b4c3a"', '"9b2e7d1f-0c4a-4f8b-b6d3-2e1a9c8f7b60"'),)


def test_run_detail_c10_causes(run_ledger):
    detail = runs.run_detail(run_ledger, "run-demo-1")

    causes = [(cause.path, cause.cause) for item in detail.submissions[0].divergences for cause in item.causes]
    assert causes == [("kwargs.ts", "timestamp"), ("kwargs.seed", "random_number")]
    assert detail.causes_available


def test_run_detail_c11_strict_abort(run_ledger):
    detail = runs.run_detail(run_ledger, "run-abc")

    item = detail.submissions[0]
    assert item.strict_abort
    assert (item.status, item.actions_replayed, item.actions_total) == ("failed", 4, 12)
    assert detail.tiles.strict_aborts == 1
    assert item.divergences[0].expected == "summarize"
    assert item.divergences[0].actual == "fetch_data"
    assert item.divergences[0].causes[0].cause == "control_flow"


def test_run_detail_c08_values_kept(run_ledger):
    detail = runs.run_detail(run_ledger, C08_RUN_ID)

    divergence = detail.submissions[0].divergences[0]
    assert divergence.action == "[click](javascript:alert(1))"
    assert divergence.actual == {"args": [], "kwargs": {"cmd": "<img src=x onerror=alert(document.domain)>"}}


def test_run_detail_unknown_run(run_ledger):
    detail = runs.run_detail(run_ledger, "no-such-run")

    assert not detail.found
    assert detail.submissions == ()
    assert detail.tiles.submissions == 0


def test_run_detail_exact_match_only(run_ledger):
    assert not runs.run_detail(run_ledger, "MULTI").found
    assert runs.run_detail(run_ledger, "MULTI-upper").found


def test_run_detail_absent_side_missing(tmp_path):
    ledger = tmp_path / "absent.duckdb"
    item = submission("absent", T0, status="partial", divergences_detected=1,
                      divergences=[{"type": "input_mismatch", "action": "f", "expected_inputs": {"a": 1}}])
    path = tmp_path / "absent.jsonl"
    path.write_text(json.dumps(item) + "\n")
    ingest_paths(ledger, [str(path)])

    divergence = runs.run_detail(ledger, "absent").submissions[0].divergences[0]

    assert divergence.expected == {"a": 1}
    assert divergence.actual is MISSING
    assert [(cause.path, cause.cause, cause.actual) for cause in divergence.causes] == [("", "missing_key", None)]


@pytest.mark.parametrize("limit", [0, 1001, True, "5"])
def test_run_detail_rejects_bad_limit(run_ledger, limit):
    with pytest.raises(ValueError, match="limit must be a whole number from 1 to 1,000"):
        runs.run_detail(run_ledger, "multi", limit=limit)


# ---------------------------------------------------------------------------
# search_runs


def test_search_ranks_exact_prefix_contains(run_ledger):
    found = runs.search_runs(run_ledger, "multi")

    assert [(match.run_id, match.match) for match in found.matches] == [
        ("multi", "exact"), ("MULTI-upper", "prefix"), ("multi-2", "prefix"), ("pre-multi", "contains"),
    ]
    assert not found.more


def test_search_counts_match_sql(run_ledger):
    found = runs.search_runs(run_ledger, "multi")
    hand = dict(query(run_ledger, "SELECT run_id, count(*) FROM submissions GROUP BY run_id"))

    assert {match.run_id: match.submissions for match in found.matches} == {
        run_id: hand[run_id] for run_id in ("multi", "MULTI-upper", "multi-2", "pre-multi")
    }


def test_search_bounded_with_more(run_ledger):
    found = runs.search_runs(run_ledger, "MULTI", limit=2)

    assert len(found.matches) == 2
    assert found.more


def test_search_strips_and_finds_markup(run_ledger):
    found = runs.search_runs(run_ledger, "  <script>  ")

    assert found.text == "<script>"
    assert [match.run_id for match in found.matches] == [C08_RUN_ID]


def test_search_like_wildcards_literal(run_ledger):
    assert runs.search_runs(run_ledger, "%").matches == ()
    assert runs.search_runs(run_ledger, "_").matches == ()


@pytest.mark.parametrize(("text", "limit", "message"), [
    ("   ", 20, "the search text is empty; enter all or part of a run id"),
    ("x" * 257, 20, "the search text is 257 characters long; run ids have at most 256"),
    ("multi", 0, "the result limit must be a whole number from 1 to 100, got 0"),
    ("multi", 101, "got 101"),
    (None, 20, "the search text must be text, got NoneType"),
])
def test_search_rejects_bad_request(run_ledger, text, limit, message):
    with pytest.raises(runs.InvalidSearch, match=message):
        runs.search_runs(run_ledger, text, limit=limit)


# ---------------------------------------------------------------------------
# Platform links


@pytest.mark.parametrize(("template", "run_id", "url"), [
    ("https://sentinel.example.com/runs/{run_id}", "run-demo-1", "https://sentinel.example.com/runs/run-demo-1"),
    ("https://sentinel.example.com/runs/", "a/b?c=d#e", "https://sentinel.example.com/runs/a%2Fb%3Fc%3Dd%23e"),
    ("http://localhost:8000/r?id={run_id}&tab=replay", "x&y", "http://localhost:8000/r?id=x%26y&tab=replay"),
    ("https://sentinel.example.com/runs/{run_id}", C08_RUN_ID,
     "https://sentinel.example.com/runs/%3Cb%3Er1%3C%2Fb%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E"),
])
def test_platform_run_page_url(template, run_id, url):
    assert platform.run_page_url(template, run_id) == url


@pytest.mark.parametrize(("template", "message"), [
    ("javascript:alert(1)//{run_id}", "not an http or https address with a host"),
    ("ftp://example.com/{run_id}", "not an http or https address with a host"),
    ("sentinel.example.com/runs/{run_id}", "not an http or https address with a host"),
    ("https:///runs/{run_id}", "not an http or https address with a host"),
    ("https://{run_id}.example.com/", "puts {run_id} in the host"),
    ("https://example.com/{run_id}/{run_id}", "more than once"),
    ("https://example.com/runs /{run_id}", "spaces or control characters"),
])
def test_platform_rejects_bad_template(template, message):
    with pytest.raises(platform.InvalidPlatformUrl, match=message):
        platform.check_template(template)


def test_platform_template_from_environment():
    assert platform.platform_template({}) is None
    assert platform.platform_template({platform.PLATFORM_URL_ENV: "  "}) is None
    assert platform.platform_template({platform.PLATFORM_URL_ENV: "https://a.example/{run_id}"}) == \
        "https://a.example/{run_id}"
    with pytest.raises(platform.InvalidPlatformUrl, match="REPLAY_LEDGER_PLATFORM_URL is 'data:text/html,x'"):
        platform.platform_template({platform.PLATFORM_URL_ENV: "data:text/html,x"})


# ---------------------------------------------------------------------------
# The side-by-side JSON diff


def marked(lines) -> list[str]:
    return ["".join(segment.text for segment in line.segments if segment.marked) for line in lines
            if line.marked]


def test_jsondiff_c10_timestamp_digits_marked():
    comparison = jsondiff.compare(
        {"args": ["https://example.com/a"], "kwargs": {"ts": "2026-12-04T19:34:47.590247"}},
        {"args": ["https://example.com/a"], "kwargs": {"ts": "2026-12-04T19:34:47.595188"}},
    )

    assert marked(comparison.expected) == ["0247"]
    assert marked(comparison.actual) == ["5188"]
    assert [line.text for line in comparison.expected][-3] == '    "ts": "2026-12-04T19:34:47.590247"'


def test_jsondiff_missing_and_extra_keys_whole():
    comparison = jsondiff.compare({"kwargs": {"a": [1, 2], "b": 1}}, {"kwargs": {"b": 1, "c": {"d": 2}}})

    assert marked(comparison.expected) == ['"a": [', "1,", "2", "],"]
    assert marked(comparison.actual) == ['"c": {', '"d": 2', "}"]


def test_jsondiff_reordering_whole_list():
    comparison = jsondiff.compare({"ids": [1, 2]}, {"ids": [2, 1]})

    assert marked(comparison.expected) == ['"ids": [', "1,", "2", "]"]


def test_jsondiff_action_mismatch_whole():
    comparison = jsondiff.compare_divergence("action_mismatch", "summarize", "fetch_data")

    assert marked(comparison.expected) == ['"summarize"']
    assert marked(comparison.actual) == ['"fetch_data"']


def test_jsondiff_absent_side():
    comparison = jsondiff.compare_divergence("input_mismatch", {"a": 1}, MISSING)

    assert [line.text for line in comparison.actual] == [jsondiff.ABSENT_TEXT]
    assert comparison.actual[0].marked


def test_jsondiff_folds_unchanged_lines():
    expected = {"items": list(range(100))}
    actual = {"items": list(range(50)) + [999] + list(range(51, 100))}

    lines = jsondiff.compare(expected, actual).expected

    # Lines 1-48 fold before the change at line 52; lines 56-102, the closing bracket included, after it.
    assert [line.text for line in lines if line.note] == ["… 48 unchanged lines", "… 47 unchanged lines"]
    assert marked(lines) == ["50"]
    assert len(lines) < 15


def test_jsondiff_long_line_cut_keeps_mark():
    comparison = jsondiff.compare({"p": "a" * 1000 + "X"}, {"p": "a" * 1000 + "Y"})

    line = comparison.expected[1]
    assert len(line.text) == jsondiff.MAX_LINE_CHARS
    assert line.text.endswith("…")


def test_jsondiff_html_escapes_c08():
    comparison = jsondiff.compare(
        {"args": [], "kwargs": {"cmd": "ls"}},
        {"args": [], "kwargs": {"cmd": "<img src=x onerror=alert(document.domain)>"}},
    )

    page = jsondiff.to_html(comparison, "Expected <i>", "Actual")

    assert "<img" not in page
    assert "&lt;img src=x onerror=alert(document.domain)&gt;" in page
    assert "Expected &lt;i&gt;" in page
    assert "<script" not in page
