"""The Divergence causes page through Streamlit's AppTest on real ledgers; numbers are checked against hand SQL."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote

import duckdb
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from ledger import charts, store
from ledger.ingest import ingest_paths

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
CASES = Path(__file__).resolve().parent / "data" / "cases"
RUN_PREFIX = "./run?run_id="
SEED_START = datetime(2026, 10, 1, tzinfo=timezone.utc)

HAND_HOTSPOTS = """
WITH s AS (SELECT * FROM submissions WHERE {where}),
o AS (
    SELECT coalesce(d.action, CASE WHEN d.type = 'action_mismatch' THEN json_extract_string(d.expected, '$') END)
               AS action, c.path, c.cause, c.submission_id
    FROM divergence_causes c JOIN divergences d ON d.submission_id = c.submission_id AND d.position = c.position
    JOIN s ON s.submission_id = c.submission_id
)
SELECT action, path, cause, count(DISTINCT submission_id)
FROM o GROUP BY ALL ORDER BY 4 DESC, count(*) DESC, action NULLS LAST, path, cause
"""


def query(ledger: Path, sql: str, parameters: list | tuple = ()) -> list[tuple]:
    with duckdb.connect(str(ledger), read_only=True) as connection:
        return connection.execute(sql, list(parameters)).fetchall()


def seeded_records() -> list[dict]:
    """Ten replays of one run on deployment "seeded": nine with a fresh random seed, one clean."""
    records = []
    for number in range(10):
        diverged = number < 9
        divergences = [{
            "type": "input_mismatch", "action": "summarize", "index": 1,
            "expected_inputs": {"args": ["hi"], "kwargs": {"seed": 0.08145626752228585}},
            "actual_inputs": {"args": ["hi"], "kwargs": {"seed": 0.2 + number / 37 + 1e-9}},
        }] if diverged else []
        records.append({
            "run_id": f"seeded-{number}", "status": "partial" if diverged else "success", "actions_replayed": 3,
            "actions_total": 3, "divergences_detected": len(divergences), "divergences": divergences,
            "cost_savings": 0.1, "deployment": "seeded",
            "submitted_at": (SEED_START + timedelta(days=number)).isoformat().replace("+00:00", "Z"),
        })
    return records


@pytest.fixture(scope="module")
def causes_ledger(sample_ledger_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample ledger plus the seeded run, C08 under case-c08 and C11 under case-c11."""
    folder = tmp_path_factory.mktemp("app_causes")
    ledger = folder / "causes.duckdb"
    shutil.copyfile(sample_ledger_template, ledger)
    path = folder / "seeded.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in seeded_records()))
    ingest_paths(ledger, [str(path)])
    ingest_paths(ledger, [str(CASES / "c08_markup.json")], deployment="case-c08")
    ingest_paths(ledger, [str(CASES / "c11_strict_abort_run-abc.json")], deployment="case-c11")
    return ledger


@pytest.fixture(scope="module")
def app(causes_ledger: Path) -> AppTest:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(store.LEDGER_ENV, str(causes_ledger))
        at = AppTest.from_file(APP, default_timeout=60)
        at.context["timezone"] = "UTC"
        at.run()
        yield at


def show(at: AppTest, **params) -> AppTest:
    params.setdefault("range", "all")
    if "filters_written" in at.session_state:
        del at.session_state["filters_written"]
    at.query_params.clear()
    at.query_params.update(params)
    at.switch_page("pages/causes.py")
    at.run()
    assert not at.exception, [error.value for error in at.exception]
    return at


def metrics(at: AppTest) -> dict:
    return {metric.label: metric.value for metric in at.metric}


def frame_with(at: AppTest, column: str) -> pd.DataFrame:
    for frame in at.dataframe:
        if column in frame.value.columns:
            return frame.value
    raise AssertionError(f"no table with a {column!r} column")


def test_causes_tiles_match_sql(app: AppTest, causes_ledger: Path):
    show(app)
    total, with_divergence, divergences = query(causes_ledger, """
        SELECT count(*), count(*) FILTER (WHERE divergences_detected > 0),
               (SELECT count(*) FROM divergences) FROM submissions
    """)[0]
    leading, affected = query(causes_ledger, """
        SELECT cause, count(DISTINCT submission_id) FROM divergence_causes GROUP BY cause
        ORDER BY count(DISTINCT submission_id) DESC, count(*) DESC LIMIT 1
    """)[0]

    assert leading == "timestamp"
    assert metrics(app) == {
        "Submissions": f"{total:,}",
        "With a divergence": f"{with_divergence:,}",
        "Divergences": f"{divergences:,}",
        "Top cause: timestamp": f"{100 * affected / total:.1f}%",
    }


def test_causes_overall_table_match_sql(app: AppTest, causes_ledger: Path):
    show(app)
    total = query(causes_ledger, "SELECT count(*) FROM submissions")[0][0]
    hand = query(causes_ledger, """
        SELECT cause, count(DISTINCT submission_id), count(DISTINCT (submission_id, position)), count(*)
        FROM divergence_causes GROUP BY cause ORDER BY 2 DESC, 4 DESC, cause
    """)

    frame = frame_with(app, "Differences")
    labels = {"random_number": "random number", "uuid": "UUID", "float_noise": "floating-point noise",
              "type_change": "type change", "missing_key": "missing key", "extra_key": "extra key",
              "other_value": "other value", "control_flow": "changed control flow"}
    assert list(frame["Cause"]) == [labels.get(row[0], row[0]) for row in hand]
    assert list(frame["Replays"]) == [row[1] for row in hand]
    assert list(frame["Divergences"]) == [row[2] for row in hand]
    assert list(frame["Differences"]) == [row[3] for row in hand]
    assert list(frame["Share of replays"]) == pytest.approx([100 * row[1] / total for row in hand])


def test_causes_hotspots_match_sql(app: AppTest, causes_ledger: Path):
    show(app)
    total = query(causes_ledger, "SELECT count(*) FROM submissions")[0][0]
    hand = query(causes_ledger, HAND_HOTSPOTS.format(where="TRUE"))[:50]

    frame = frame_with(app, "Example run")
    assert list(frame["Action"]) == [row[0] for row in hand]
    assert list(frame["Replays"]) == [row[3] for row in hand]
    assert list(frame["Share of replays"]) == pytest.approx([100 * row[3] / total for row in hand])
    assert f"The top 50 of {len(query(causes_ledger, HAND_HOTSPOTS.format(where='TRUE'))):,} hotspots are shown." \
        in [caption.value for caption in app.caption]


def test_causes_seeded_deployment_headline(app: AppTest):
    show(app, deployment="seeded")

    assert metrics(app)["Submissions"] == "10"
    assert metrics(app)["Top cause: random number"] == "90.0%"
    assert ("- `summarize` → `kwargs.seed`: **random number** in 100% of the replays that diverged at `summarize` "
            "(90.0% of all replays). Pin the seed.") in [
        element.value for element in app.markdown
    ]
    frame = frame_with(app, "Example run")
    assert list(zip(frame["Action"], frame["Path"], frame["Cause"], frame["Replays"])) == [
        ("summarize", "kwargs.seed", "random number", 9),
    ]
    assert frame["First seen"][0] == "2026-10-01 00:00:00"
    assert frame["Last seen"][0] == "2026-10-09 00:00:00"
    assert unquote(frame["Example run"][0][len(RUN_PREFIX):]) == "seeded-8"


def test_causes_examples_newest_first(app: AppTest):
    show(app, deployment="seeded")

    examples = frame_with(app, "Divergence")
    assert [unquote(url[len(RUN_PREFIX):]) for url in examples["Run"]] == [f"seeded-{n}" for n in range(8, -1, -1)]
    assert set(examples["Expected"]) == {"0.08145626752228585"}


def test_causes_by_deployment_match_sql(app: AppTest, causes_ledger: Path):
    show(app, deployment=["seeded", "case-c11"])
    hand = query(causes_ledger, """
        WITH totals AS (SELECT deployment, count(*) AS n FROM submissions GROUP BY deployment)
        SELECT c.cause, s.deployment, 100.0 * count(DISTINCT c.submission_id) / t.n
        FROM divergence_causes c JOIN submissions s USING (submission_id) JOIN totals t USING (deployment)
        WHERE s.deployment IN ('seeded', 'case-c11') GROUP BY c.cause, s.deployment, t.n
    """)

    frame = frame_with(app, "seeded")
    shares = {(row["Cause"], deployment): row[deployment] for _, row in frame.iterrows()
              for deployment in ("seeded", "case-c11")}
    labels = {"random_number": "random number", "control_flow": "changed control flow"}
    assert {(labels[cause], deployment): share for cause, deployment, share in hand} == {
        key: value for key, value in shares.items() if value
    }
    assert shares[("changed control flow", "case-c11")] == 100.0
    assert shares[("random number", "seeded")] == 90.0


def test_causes_status_filter(app: AppTest, causes_ledger: Path):
    show(app, status="failed")
    hand = query(causes_ledger, HAND_HOTSPOTS.format(where="status = 'failed'"))

    frame = frame_with(app, "Example run")
    assert list(frame["Replays"]) == [row[3] for row in hand][:50]
    assert metrics(app)["Submissions"] == f"{query(causes_ledger, 'SELECT count(*) FROM submissions WHERE status = ? ', ['failed'])[0][0]:,}"


def test_causes_c08_values_as_text(app: AppTest):
    show(app, deployment="case-c08")

    frame = frame_with(app, "Example run")
    assert list(frame["Action"]) == ["[click](javascript:alert(1))"]
    assert app.selectbox(key="causes_hotspot").options == ["[click](javascript:alert(1)) → kwargs.cmd → other value"]
    headline = next(element.value for element in app.markdown if "kwargs.cmd" in element.value)
    assert headline.startswith("- `[click](javascript:alert(1))` → `kwargs.cmd`: **other value**")
    examples = frame_with(app, "Divergence")
    assert list(examples["Actual"]) == ['"<img src=x onerror=alert(document.domain)>"']


def test_causes_no_match_message(app: AppTest):
    show(app, range="custom", **{"from": "2020-01-01", "to": "2020-01-02"})

    assert "No submissions match these filters." in app.info[0].value


def test_causes_older_ledger_upgrade_button(causes_ledger: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    old = tmp_path / "old.duckdb"
    shutil.copyfile(causes_ledger, old)
    before = query(old, "SELECT count(*) FROM divergence_causes")[0][0]
    with duckdb.connect(str(old)) as connection:
        connection.execute("DROP TABLE divergence_causes")
        connection.execute("DELETE FROM schema_migrations WHERE version = 3")
    monkeypatch.setenv(store.LEDGER_ENV, str(old))
    at = AppTest.from_file(APP, default_timeout=60)
    at.context["timezone"] = "UTC"
    at.run()
    show(at)

    assert at.info[0].value.startswith("This ledger was written by an older release")
    at.button(key="causes_upgrade").click().run()

    assert query(old, "SELECT max(version) FROM schema_migrations") == [(3,)]
    assert query(old, "SELECT count(*) FROM divergence_causes")[0][0] == before
    assert metrics(at)["Divergences"] == f"{query(old, 'SELECT count(*) FROM divergences')[0][0]:,}"


def chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(element.proto.spec) for element in at.get("vega_lite_chart")]


def test_causes_by_deployment_chart_palette(app: AppTest, causes_ledger: Path):
    show(app)
    (spec,) = [spec for spec in chart_specs(app) if "yOffset" in spec["encoding"]]
    deployments = [row[0] for row in query(causes_ledger, """
        SELECT deployment FROM submissions
        WHERE deployment IN (SELECT s.deployment FROM divergence_causes JOIN submissions AS s USING (submission_id))
        GROUP BY deployment ORDER BY count(*) DESC, deployment""")]

    assert spec["encoding"]["color"]["scale"]["domain"] == deployments
    assert spec["encoding"]["color"]["scale"]["range"] == charts.series_palette(len(deployments))
    assert spec["encoding"]["color"]["scale"]["range"][:3] == list(charts.SERIES_COLORS[:3])
    assert spec["encoding"]["color"]["legend"]["direction"] == "vertical"


def test_causes_by_deployment_order_follows_share(app: AppTest):
    show(app)
    specs = chart_specs(app)
    (by_deployment,) = [spec for spec in specs if "yOffset" in spec["encoding"]]
    (overall,) = [spec for spec in specs if "yOffset" not in spec["encoding"]]
    ranked = list(frame_with(app, "Differences")["Cause"])
    pivot = frame_with(app, "seeded")

    assert ranked[:2] == ["timestamp", "UUID"]
    assert by_deployment["encoding"]["y"]["sort"] == ranked
    assert overall["encoding"]["y"]["sort"] == ranked
    assert list(pivot["Cause"]) == [cause for cause in ranked if cause in set(pivot["Cause"])]
    assert by_deployment["encoding"]["y"]["axis"]["labelLimit"] >= 8 * len("changed control flow")
