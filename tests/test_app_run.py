"""The Run page through Streamlit's AppTest on a real ledger; every number is checked against hand-written SQL."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from urllib.parse import unquote

import duckdb
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from ledger import platform, store
from ledger.ingest import ingest_paths

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
CASES = Path(__file__).resolve().parent / "data" / "cases"
C08_RUN_ID = "<b>r1</b><script>alert(1)</script>"
RUN_PREFIX = "./run?run_id="
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
DIVERGENCE_COLUMNS = ["#", "Index", "Type", "Action", "Cause", "Path", "Expected", "Actual", "Suggestion"]


def query(ledger: Path, sql: str, parameters: list | tuple = ()) -> list[tuple]:
    with duckdb.connect(str(ledger), read_only=True) as connection:
        return connection.execute(sql, list(parameters)).fetchall()


def submission(run_id: str, at: datetime, **fields) -> dict:
    value = {"run_id": run_id, "status": "success", "actions_replayed": 2, "actions_total": 2,
             "divergences_detected": 0, "divergences": [], "cost_savings": 0.1,
             "submitted_at": at.isoformat().replace("+00:00", "Z")}
    value.update(fields)
    return value


SEED_DIVERGENCE = {"type": "input_mismatch", "action": "summarize", "index": 1,
                   "expected_inputs": {"args": ["hi"], "kwargs": {"seed": 0.08145626752228585}},
                   "actual_inputs": {"args": ["hi"], "kwargs": {"seed": 0.6180339887498949}}}
RECORDS = [
    submission("multi", T0, deployment="prod", cost_savings=1.005),
    submission("multi", T0 + timedelta(hours=2), deployment="prod", status="partial", divergences_detected=1,
               divergences=[SEED_DIVERGENCE], cost_savings=0.25),
    submission("multi", T0 + timedelta(hours=1), deployment="staging", status="failed", actions_replayed=1,
               actions_total=5, cost_savings=0.05),
    submission("multi-2", T0 + timedelta(days=1)),
    submission("pre-multi", T0 + timedelta(days=2)),
]


@pytest.fixture(scope="module")
def run_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("app_run")
    ledger = folder / "run.duckdb"
    ingest_paths(ledger, [str(CASES / "c08_markup.json"), str(CASES / "c10_sdk_post_run-demo-1.json"),
                          str(CASES / "c11_strict_abort_run-abc.json")])
    path = folder / "runs.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in RECORDS))
    ingest_paths(ledger, [str(path)])
    return ledger


@pytest.fixture(scope="module")
def run_env(run_ledger: Path):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(store.LEDGER_ENV, str(run_ledger))
        patch.delenv(platform.PLATFORM_URL_ENV, raising=False)
        yield run_ledger


@pytest.fixture(scope="module")
def app(run_env: Path) -> AppTest:
    """One app session on the run ledger, reused by tests that only change the URL."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.context["timezone"] = "UTC"
    at.run()
    return at


def show(at: AppTest, run_id: str | None) -> AppTest:
    at.query_params.clear()
    if run_id is not None:
        at.query_params["run_id"] = run_id
    at.switch_page("pages/run.py")
    at.run()
    assert not at.exception, [error.value for error in at.exception]
    return at


def metrics(at: AppTest) -> dict:
    return {metric.label: metric.value for metric in at.metric}


def divergence_tables(at: AppTest) -> list[pd.DataFrame]:
    return [frame.value for frame in at.dataframe if list(frame.value.columns) == DIVERGENCE_COLUMNS]


def markdown(at: AppTest) -> list[str]:
    return [element.value for element in at.markdown]


def money(amount: Decimal) -> str:
    return f"${amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"


def test_run_tiles_match_sql(app: AppTest, run_ledger: Path):
    show(app, "multi")
    count, replayed, total, divergences, saved = query(run_ledger, """
        SELECT count(*), sum(actions_replayed), sum(actions_total), sum(divergences_detected), sum(cost_savings)
        FROM submissions WHERE run_id = 'multi'
    """)[0]

    assert metrics(app) == {
        "Submissions": f"{count:,}",
        "Actions Replayed": f"{replayed:,} / {total:,}",
        "Divergences": f"{divergences:,}",
        "Cost Saved": money(saved),
    }
    assert metrics(app)["Cost Saved"] == "$1.31"


def test_run_submissions_newest_first(app: AppTest, run_ledger: Path):
    show(app, "multi")
    times = [row[0].strftime("%Y-%m-%d %H:%M:%S") for row in query(run_ledger, """
        SELECT submitted_at FROM submissions WHERE run_id = 'multi' ORDER BY submitted_at DESC
    """)]

    headings = [text for text in markdown(app) if text.startswith("**20")]
    assert [heading[2:21] for heading in headings] == times
    assert headings[0].endswith("UTC · partial")
    assert headings[1].endswith("UTC · failed: exception")


def test_run_exception_failure_told_apart(app: AppTest):
    show(app, "multi")

    assert [error.value for error in app.error] == ["Failed by an exception after 1 of 5 actions were replayed."]


def test_run_c11_aborted_at_action(app: AppTest, run_ledger: Path):
    show(app, "run-abc")
    replayed, total = query(run_ledger, "SELECT actions_replayed, actions_total FROM submissions "
                                        "WHERE run_id = 'run-abc'")[0]

    assert (replayed, total) == (4, 12)
    assert [error.value for error in app.error] == [
        "Aborted at action 4 of 12: strict mode stopped the replay at its first divergence. The recording "
        "expected `summarize` but the replay called `fetch_data`."
    ]
    assert any(text.endswith("UTC · failed: aborted at action 4 of 12 by a divergence") for text in markdown(app))
    assert "Failed replays: 1 aborted at a divergence (strict mode)." in [caption.value for caption in app.caption]


def test_run_c10_divergence_table(app: AppTest, run_ledger: Path):
    show(app, "run-demo-1")
    hand = query(run_ledger, """
        SELECT d.position + 1, d.action_index, d.type, d.action, c.path, c.expected, c.actual
        FROM divergence_causes c JOIN divergences d USING (submission_id, position)
        JOIN submissions s USING (submission_id) WHERE s.run_id = 'run-demo-1' ORDER BY d.position, c.ordinal
    """)

    tables = divergence_tables(app)
    assert len(tables) == 1
    frame = tables[0]
    assert list(zip(frame["#"], frame["Index"], frame["Type"], frame["Action"], frame["Path"], frame["Expected"],
                    frame["Actual"])) == hand
    assert list(frame["Cause"]) == ["timestamp", "random number"]
    assert list(frame["Suggestion"]) == ["freeze the clock in replays, or pass the time in as an input",
                                        "pin the seed"]


def test_run_c10_side_by_side_marks(app: AppTest):
    show(app, "run-demo-1")

    bodies = [element.proto.body for element in app.html]
    assert len(bodies) == 2
    assert ">0247</span>" in bodies[0]
    assert ">5188</span>" in bodies[0]
    assert ">8145626752228585</span>" in bodies[1]
    assert [expander.label for expander in app.expander] == [
        "Divergence 1 · `input_mismatch` · index 0 · `fetch_data`",
        "Divergence 2 · `input_mismatch` · index 1 · `summarize`",
    ]
    assert "`kwargs.seed`: **random number**. Pin the seed." in markdown(app)


def test_run_c08_shown_as_text(app: AppTest):
    show(app, C08_RUN_ID)

    assert C08_RUN_ID in [element.value for element in app.text]
    frame = divergence_tables(app)[0]
    assert list(frame["Action"]) == ["[click](javascript:alert(1))"]
    assert list(frame["Actual"]) == ['"<img src=x onerror=alert(document.domain)>"']
    body = app.html[0].proto.body
    assert "<img" not in body
    assert "&lt;img src=x onerror=alert(document.domain)&gt;" in body
    assert app.expander[0].label.endswith("`[click](javascript:alert(1))`")


def test_run_unknown_id_offers_search(app: AppTest):
    show(app, "multi-")

    assert [warning.value for warning in app.warning] == [
        "No submissions of run `multi-` are in the ledger. Check the id, or search for part of it."
    ]
    assert app.text_input(key="run_search").value == "multi-"
    frame = app.dataframe[0].value
    assert [unquote(url[len(RUN_PREFIX):]) for url in frame["Run ID"]] == ["multi-2"]


def test_run_search_without_id(app: AppTest, run_ledger: Path):
    show(app, None)
    app.text_input(key="run_search").input("MULTI").run()
    hand = [row[0] for row in query(run_ledger, """
        SELECT run_id FROM submissions WHERE contains(lower(run_id), 'multi')
        GROUP BY run_id ORDER BY min(CASE WHEN run_id = 'MULTI' THEN 0 WHEN starts_with(lower(run_id), 'multi') THEN 1
                                          ELSE 2 END), max(submitted_at) DESC
    """)]

    frame = app.dataframe[0].value
    assert [unquote(url[len(RUN_PREFIX):]) for url in frame["Run ID"]] == hand == ["multi-2", "multi", "pre-multi"]
    assert list(frame["Match"]) == ["prefix", "prefix", "contains"]
    assert list(frame["Submissions"]) == [1, 3, 1]


def test_run_search_too_long_warns(app: AppTest):
    show(app, None)
    app.text_input(key="run_search").input("x" * 300).run()

    assert [warning.value for warning in app.warning] == [
        "The search did not run: the search text is 300 characters long; run ids have at most 256, so enter a "
        "shorter part of one."
    ]


def test_run_search_no_match(app: AppTest):
    show(app, None)
    app.text_input(key="run_search").input("zzz").run()

    assert "No run id contains `zzz`." in [info.value for info in app.info]


def test_run_platform_link(app: AppTest, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(platform.PLATFORM_URL_ENV, "https://sentinel.example.com/runs/{run_id}")
    show(app, C08_RUN_ID)

    buttons = app.link_button
    assert [button.value for button in buttons] == ["Open on the platform"]
    assert buttons[0].proto.url == (
        "https://sentinel.example.com/runs/%3Cb%3Er1%3C%2Fb%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E"
    )


def test_run_platform_link_absent_by_default(app: AppTest):
    show(app, "multi")

    assert len(app.link_button) == 0


def test_run_platform_link_invalid_setting(app: AppTest, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(platform.PLATFORM_URL_ENV, "javascript:alert(1)")
    show(app, "multi")

    assert len(app.link_button) == 0
    assert any(caption.value.startswith("No link to the platform: `REPLAY_LEDGER_PLATFORM_URL is 'javascript:")
               for caption in app.caption)


def test_run_older_ledger_without_causes(run_ledger: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    old = tmp_path / "old.duckdb"
    shutil.copyfile(run_ledger, old)
    with duckdb.connect(str(old)) as connection:
        connection.execute("DROP TABLE divergence_causes")
        connection.execute("DELETE FROM schema_migrations WHERE version = 3")
    monkeypatch.setenv(store.LEDGER_ENV, str(old))
    at = AppTest.from_file(APP, default_timeout=60)
    at.context["timezone"] = "UTC"
    at.run()
    show(at, "run-demo-1")

    assert any(info.value.startswith("This ledger was written by an older release") for info in at.info)
    assert list(divergence_tables(at)[0]["Cause"]) == ["—", "—"]
