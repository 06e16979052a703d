"""The Explore page in Streamlit's AppTest, on real DuckDB ledgers, with every number checked against hand SQL.

The ledger is the sample data plus cases C04 (money), C08 (markup in values)
and C11 (a strict-mode abort). One AppTest session is reused by tests that set
the whole view through the URL, because a new one costs about 150 ms.
"""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote

import duckdb
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from ledger import store
from ledger.ingest import ingest_paths
from ledger.queries import sandbox
from ledger.ui import code_span

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
CASES = Path(__file__).resolve().parent / "data" / "cases"
C08_RUN_ID = "<b>r1</b><script>alert(1)</script>"
RUN_PREFIX = "./run?run_id="
# Run ids with LIKE wildcards in them, which "run id contains" must match literally.
EDGE_ROWS = [
    {"run_id": run_id, "status": "success", "actions_replayed": 1, "actions_total": 1, "divergences_detected": 0,
     "divergences": [], "cost_savings": 0.5, "submitted_at": "2026-03-02T00:00:00Z"}
    for run_id in ("edge-100%-done", "edge_under_score", "EDGE-CASE")
]


def query(ledger: Path, sql: str, parameters: list | tuple = ()) -> list[tuple]:
    with duckdb.connect(str(ledger), read_only=True) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        return connection.execute(sql, list(parameters)).fetchall()


def expected_money(amount: Decimal) -> str:
    """Exact dollars with at least cents, written independently of the page's helper."""
    text = format(amount, "f")
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")
    return f"${int(whole):,}.{fraction}"


def expected_money_column(amounts: list[Decimal]) -> list[str]:
    """A column of exact dollars, all with as many decimals as the longest needs (at least two)."""
    texts = [format(amount.normalize(), "f") for amount in amounts]
    places = max([2] + [len(text.partition(".")[2]) for text in texts])
    return [f"${amount:,.{places}f}" for amount in amounts]


def new_app(*, zone: str = "UTC") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.context["timezone"] = zone
    return at


def show(at: AppTest, **params) -> AppTest:
    """Open the Explore page with exactly these URL parameters, resetting filters, columns, sort and paging not named."""
    params.setdefault("range", "all")
    for group in ("explore_filters", "explore"):
        # Without its "written" record a group reads the URL again as on a session's first run.
        if f"{group}_written" in at.session_state:
            del at.session_state[f"{group}_written"]
    at.query_params.clear()
    at.query_params.update(params)
    at.switch_page("pages/explore.py")
    at.run()
    assert not at.exception, [error.value for error in at.exception]
    return at


def table(at: AppTest) -> pd.DataFrame:
    frames = [frame.value for frame in at.dataframe]
    assert frames, "no table on the page"
    return frames[0]


def run_ids(at: AppTest) -> list[str]:
    urls = table(at)["Run ID"]
    assert all(url.startswith(RUN_PREFIX) for url in urls)
    return [unquote(url[len(RUN_PREFIX):]) for url in urls]


def summary(at: AppTest) -> str:
    return next(caption.value for caption in at.caption if "match" in caption.value and "saved" in caption.value)


@pytest.fixture(scope="module")
def explore_ledger(sample_ledger_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("explore") / "explore.duckdb"
    shutil.copyfile(sample_ledger_template, path)
    for name, deployment in (("c04_money.jsonl", "case-c04"), ("c08_markup.json", "case-c08"),
                             ("c11_strict_abort_run-abc.json", "case-c11")):
        ingest_paths(path, [str(CASES / name)], deployment=deployment)
    edge = path.parent / "edge.jsonl"
    edge.write_text("".join(json.dumps(row) + "\n" for row in EDGE_ROWS))
    ingest_paths(path, [str(edge)], deployment="case-edge")
    return path


@pytest.fixture(scope="module")
def explore_app(explore_ledger: Path) -> AppTest:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(store.LEDGER_ENV, str(explore_ledger))
        yield new_app()


# ---------------------------------------------------------------------------
# Summary and filters


VIEWS = {
    "everything": ({}, "TRUE", []),
    "run_contains": ({"run": "A"}, "strpos(lower(run_id), 'a') > 0", []),
    "run_contains_percent": ({"run": "%"}, "run_id = 'edge-100%-done'", []),
    "run_contains_underscore": ({"run": "_"}, "run_id = 'edge_under_score'", []),
    "run_contains_case": ({"run": "edge-c"}, "run_id = 'EDGE-CASE'", []),
    "min_divergences": ({"min_div": "2"}, "divergences_detected >= 2", []),
    "min_saved": ({"min_saved": "0.5"}, "cost_savings >= 0.5", []),
    "min_saved_dollar_sign": ({"min_saved": "$0.09"}, "cost_savings >= 0.09", []),
    "cause": ({"cause": "timestamp"},
              "submission_id IN (SELECT submission_id FROM divergence_causes WHERE cause = 'timestamp')", []),
    "two_causes": ({"cause": ["uuid", "random_number"]},
                   "submission_id IN (SELECT submission_id FROM divergence_causes "
                   "WHERE cause IN ('uuid', 'random_number'))", []),
    "with_sidebar": ({"deployment": "prod-eu", "status": "partial", "min_div": "1", "run": "b"},
                     "deployment = 'prod-eu' AND status = 'partial' AND divergences_detected >= 1 "
                     "AND strpos(lower(run_id), 'b') > 0", []),
    "november_utc": ({"range": "custom", "from": "2026-11-01", "to": "2026-11-30", "tz": "utc", "min_div": "1"},
                     "submitted_at >= '2026-11-01 00:00:00+00' AND submitted_at < '2026-12-01 00:00:00+00' "
                     "AND divergences_detected >= 1", []),
}


@pytest.mark.parametrize("name", list(VIEWS))
def test_explore_summary_matches_sql(explore_app: AppTest, explore_ledger: Path, name: str):
    params, condition, parameters = VIEWS[name]
    show(explore_app, **params)
    count, replayed, divergences, saved = query(explore_ledger, f"""
        SELECT count(*), coalesce(sum(actions_replayed), 0), coalesce(sum(divergences_detected), 0),
               coalesce(sum(cost_savings), 0)
        FROM submissions WHERE {condition}""", parameters)[0]

    noun = "submission matches" if count == 1 else "submissions match"
    assert count > 0
    assert summary(explore_app).startswith(
        f"**{count:,}** {noun} · {replayed:,} actions replayed · {divergences:,} divergences · "
        f"{expected_money(saved)} saved · ")


SORTS = {
    "saved_desc": ({"sort": "saved", "order": "desc"}, "cost_savings DESC"),
    "saved_asc": ({"sort": "saved", "order": "asc"}, "cost_savings ASC"),
    "run_id_asc": ({"sort": "run_id", "order": "asc"}, "run_id ASC"),
    "divergences_desc": ({"sort": "divergences"}, "divergences_detected DESC"),
    "recorded_asc": ({"sort": "actions_total", "order": "asc"}, "actions_total ASC"),
    "deployment_desc": ({"sort": "deployment"}, "deployment DESC"),
    "share_asc": ({"sort": "replayed_share", "order": "asc"},
                  "CASE WHEN actions_total = 0 THEN NULL ELSE actions_replayed / actions_total END ASC NULLS LAST"),
    "platform_id_desc": ({"sort": "platform_id"}, "platform_id DESC NULLS LAST"),
    "extra_asc": ({"sort": "extra", "order": "asc"}, "extra::VARCHAR ASC NULLS LAST"),
    "submitted_default": ({}, "submitted_at DESC"),
}


@pytest.mark.parametrize("name", list(SORTS))
def test_explore_page_order_matches_sql(explore_app: AppTest, explore_ledger: Path, name: str):
    params, order = SORTS[name]
    show(explore_app, **params)
    expected = [row[0] for row in query(
        explore_ledger, f"SELECT run_id FROM submissions ORDER BY {order}, submission_id LIMIT 50")]

    assert run_ids(explore_app) == expected


@pytest.mark.parametrize("page", ["2", "60", "75"])
def test_explore_deep_page_matches_sql(explore_app: AppTest, explore_ledger: Path, page: str):
    show(explore_app, sort="saved", order="asc", page=page, rows="50")
    offset = (int(page) - 1) * 50
    expected = query(explore_ledger, "SELECT run_id, cost_savings FROM submissions "
                                     "ORDER BY cost_savings ASC, submission_id LIMIT 50 OFFSET ?", [offset])
    frame = table(explore_app)

    assert expected
    assert run_ids(explore_app) == [row[0] for row in expected]
    assert list(frame["Saved"]) == expected_money_column([row[1] for row in expected])


def test_explore_columns_from_url(explore_app: AppTest, explore_ledger: Path):
    show(explore_app, col=["run_id", "saved", "extra", "strict_abort", "flags"], deployment="case-c11")
    frame = table(explore_app)
    extra, flags = query(explore_ledger, "SELECT extra::VARCHAR, flags FROM submissions "
                                         "WHERE deployment = 'case-c11'")[0]

    assert list(frame.columns) == ["Run ID", "Saved", "Other fields", "Aborted by divergence", "Flags"]
    assert extra is None
    assert list(frame["Aborted by divergence"]) == ["yes"]
    assert list(frame["Other fields"]) == ["—"]
    assert flags
    assert list(frame["Flags"]) == [", ".join(flags)]
    assert explore_app.multiselect(key="explore_columns").value == ["run_id", "saved", "extra", "strict_abort",
                                                                    "flags"]


def test_explore_other_fields_preview(explore_app: AppTest, explore_ledger: Path):
    run_id, extra = query(explore_ledger, "SELECT run_id, extra::VARCHAR FROM submissions WHERE extra IS NOT NULL "
                                          "ORDER BY submitted_at DESC, submission_id LIMIT 1")[0]
    show(explore_app, run=run_id, col=["run_id", "extra"])
    value = json.loads(extra)
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    expected = f"{len(value)} key{'s' if len(value) != 1 else ''}: {text}"

    assert table(explore_app)["Other fields"][0] == expected


def test_explore_unknown_column_in_url_noted(explore_app: AppTest):
    show(explore_app, col=["run_id", "bogus<b>"])
    notes = [warning.value for warning in explore_app.warning]

    assert list(table(explore_app).columns) == ["Run ID"]
    assert f"The link's column {code_span('bogus<b>')} is unknown here and is ignored." in notes


def test_explore_money_exact(explore_app: AppTest, explore_ledger: Path):
    show(explore_app, deployment="case-c04", sort="run_id", order="asc", col=["run_id", "saved"])
    expected = query(explore_ledger, "SELECT run_id, cost_savings FROM submissions WHERE deployment = 'case-c04' "
                                     "ORDER BY run_id, submission_id")
    frame = table(explore_app)

    assert list(frame["Saved"]) == expected_money_column([amount for _, amount in expected])
    assert list(frame["Saved"]).count("$0.10") == 10
    assert "$0.09" in list(frame["Saved"])
    assert " · $1.09 saved · " in summary(explore_app)


def test_explore_status_tags(explore_app: AppTest, explore_ledger: Path):
    show(explore_app, deployment="case-c11")

    assert list(table(explore_app)["Status"]) == [["aborted"]]


def test_explore_markup_run_id_stays_text(explore_app: AppTest):
    show(explore_app, run="<b>")
    shown = [element.value for element in [*explore_app.markdown, *explore_app.caption, *explore_app.warning,
                                           *explore_app.error, *explore_app.info]]

    assert run_ids(explore_app) == [C08_RUN_ID]
    assert not any("<script>" in text for text in shown)
    assert explore_app.text_input(key="explore_run").value == "<b>"


INVALID_SAVINGS = {
    "letters": ("12abc", "saved at least: '12abc' is not an amount in US dollars; type a number such as 0.05"),
    "negative": ("-1", "saved at least: '-1' must be a finite amount of 0 or more"),
    "infinite": ("Infinity", "saved at least: 'Infinity' must be a finite amount of 0 or more"),
    "too_precise": ("0.0000001", "saved at least: '0.0000001' has more than six decimals; "
                                 "the ledger stores whole micro-dollars"),
    "markup": ("[x](javascript:alert(1))", "saved at least: '[x](javascript:alert(1))' is not an amount in US "
                                           "dollars; type a number such as 0.05"),
}


@pytest.mark.parametrize("name", list(INVALID_SAVINGS))
def test_explore_invalid_savings_error(explore_app: AppTest, name: str):
    typed, message = INVALID_SAVINGS[name]
    show(explore_app, min_saved=typed)

    assert [error.value for error in explore_app.error] == [code_span(message, 300)]
    assert not explore_app.dataframe


def test_explore_invalid_min_divergences_in_url(explore_app: AppTest, explore_ledger: Path):
    show(explore_app, min_div="two")
    notes = [warning.value for warning in explore_app.warning]
    total = query(explore_ledger, "SELECT count(*) FROM submissions")[0][0]

    assert f"The link's divergences-at-least value {code_span('two')} is not a whole number, so it is ignored." in notes
    assert summary(explore_app).startswith(f"**{total:,}** submissions match")


def test_explore_no_match_message(explore_app: AppTest):
    show(explore_app, run="no-such-run-anywhere")

    assert [info.value for info in explore_app.info] == [
        "No submissions match these filters. Clear some of them, here or in the sidebar."]


def test_explore_filters_written_to_url(explore_app: AppTest):
    show(explore_app)
    explore_app.text_input(key="explore_run").set_value("run-1").run()
    explore_app.number_input(key="explore_min_div").set_value(2).run()

    assert explore_app.query_params["run"] == "run-1"
    assert explore_app.query_params["min_div"] == "2"


# ---------------------------------------------------------------------------
# Causes table missing


@pytest.fixture
def ledger_without_causes(sample_ledger_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ledger as schema version 2 left it: no divergence causes table."""
    path = tmp_path / "old.duckdb"
    shutil.copyfile(sample_ledger_template, path)
    with duckdb.connect(str(path)) as connection:
        connection.execute("DROP TABLE divergence_causes")
        connection.execute("DELETE FROM schema_migrations WHERE version >= 3")
    monkeypatch.setenv(store.LEDGER_ENV, str(path))
    return path


def test_explore_cause_filter_hidden_without_table(ledger_without_causes: Path):
    at = show(new_app(), cause="timestamp")
    total = query(ledger_without_causes, "SELECT count(*) FROM submissions")[0][0]
    tables = query(ledger_without_causes, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'divergence_causes'")

    assert tables == [(0,)]
    assert any(caption.value.startswith("Cause filter unavailable: this ledger has no divergence causes table.")
               for caption in at.caption)
    assert not [widget for widget in at.multiselect if widget.key == "explore_causes"]
    assert summary(at).startswith(f"**{total:,}** submissions match")
    assert [warning.value for warning in at.warning] == [
        f"The link's cause {code_span('timestamp')} is not in this ledger's divergence causes, so it is ignored."]


def test_explore_unknown_cause_in_url_noted(explore_app: AppTest, explore_ledger: Path):
    show(explore_app, cause=["uuid", "<b>bogus</b>"])
    expected = query(explore_ledger, "SELECT count(*) FROM submissions WHERE submission_id IN "
                                     "(SELECT submission_id FROM divergence_causes WHERE cause = 'uuid')")[0][0]

    assert f"The link's cause {code_span('<b>bogus</b>')} is not in this ledger's divergence causes, so it is " \
           "ignored." in [warning.value for warning in explore_app.warning]
    assert explore_app.multiselect(key="explore_causes").value == ["uuid"]
    assert summary(explore_app).startswith(f"**{expected:,}** submissions match")


# ---------------------------------------------------------------------------
# Downloads


def prepared(at: AppTest) -> dict:
    return at.session_state["explore_export"]


@pytest.fixture
def cleanup_export(explore_app: AppTest):
    """Remove the file a test prepared, which the page otherwise leaves for its hourly cleanup."""
    yield
    if "explore_export" in explore_app.session_state and "folder" in prepared(explore_app):
        shutil.rmtree(prepared(explore_app)["folder"], ignore_errors=True)


def test_explore_download_prepared_file(explore_app: AppTest, explore_ledger: Path, cleanup_export):
    show(explore_app, min_div="2")
    explore_app.button_group(key="explore_format").set_value("csv").run()
    explore_app.button(key="explore_prepare").click().run()
    first = prepared(explore_app)
    expected = query(explore_ledger, "SELECT count(*) FROM submissions WHERE divergences_detected >= 2")[0][0]
    with open(first["path"], encoding="utf-8") as handle:
        lines = handle.read().splitlines()

    assert first["rows"] == expected
    assert lines[0].startswith("submission_id,platform_id,run_id,")
    assert len(lines) == expected + 1
    assert [button.label for button in explore_app.get("download_button")] == ["Download CSV"]

    explore_app.button_group(key="explore_format").set_value("parquet").run()
    assert "changed since the file was prepared" in " ".join(caption.value for caption in explore_app.caption)
    explore_app.button(key="explore_prepare").click().run()

    assert not Path(first["folder"]).exists()
    assert prepared(explore_app)["file_name"].endswith(".parquet")
    assert [button.label for button in explore_app.get("download_button")] == ["Download Parquet"]


def test_explore_prepare_after_failed_export(explore_app: AppTest, explore_ledger: Path, cleanup_export):
    show(explore_app, min_div="2")
    explore_app.button_group(key="explore_format").set_value("csv").run()
    # What the page keeps after an export failed, for example on a ledger that stayed locked.
    explore_app.session_state["explore_export"] = {"error": "the ledger stayed locked by another process"}
    explore_app.button(key="explore_prepare").click().run()
    expected = query(explore_ledger, "SELECT count(*) FROM submissions WHERE divergences_detected >= 2")[0][0]

    assert not explore_app.exception
    assert prepared(explore_app)["rows"] == expected
    assert [button.label for button in explore_app.get("download_button")] == ["Download CSV"]


def test_explore_download_over_cap(explore_app: AppTest, monkeypatch: pytest.MonkeyPatch, cleanup_export):
    monkeypatch.setenv("REPLAY_LEDGER_MAX_DOWNLOAD_MB", "1")
    show(explore_app)
    explore_app.button_group(key="explore_format").set_value("csv").run()
    explore_app.button(key="explore_prepare").click().run()
    size = prepared(explore_app)["size"]
    warnings = [warning.value for warning in explore_app.warning]

    assert size > 1_000_000
    assert any("more than this app serves (1.0 MB)" in text for text in warnings)
    assert not explore_app.get("download_button")


# ---------------------------------------------------------------------------
# The SQL box


def run_sql(at: AppTest, sql: str) -> AppTest:
    show(at, explore_tab="SQL")
    at.text_area(key="explore_sql").set_value(sql)
    next(button for button in at.button if button.label == "Run query").click().run()
    assert not at.exception, [error.value for error in at.exception]
    return at


def test_explore_sql_result_matches_hand_sql(explore_app: AppTest, explore_ledger: Path):
    run_sql(explore_app, "SELECT deployment, count(*) AS n, sum(cost_savings) AS saved FROM submissions "
                         "GROUP BY deployment ORDER BY deployment")
    frame = table(explore_app)
    expected = query(explore_ledger, "SELECT deployment, count(*), sum(cost_savings) FROM submissions "
                                     "GROUP BY deployment ORDER BY deployment")

    assert list(frame.columns) == ["deployment", "n", "saved"]
    assert list(frame["deployment"]) == [row[0] for row in expected]
    assert list(frame["n"]) == [row[1] for row in expected]
    assert list(frame["saved"]) == [format(row[2], "f") for row in expected]


def test_explore_sql_copy_rejected(explore_app: AppTest, tmp_path: Path):
    target = tmp_path / "stolen.csv"
    run_sql(explore_app, f"COPY submissions TO '{target}'")

    assert [error.value for error in explore_app.error] == [
        "Not allowed: " + code_span("COPY statements are not allowed: the SQL box only reads the ledger, so it runs "
                                    "SELECT queries (also WITH, FROM, DESCRIBE, SHOW, SUMMARIZE) and EXPLAIN", 400)]
    assert not target.exists()


def test_explore_sql_file_read_rejected(explore_app: AppTest):
    run_sql(explore_app, "SELECT * FROM read_csv('/etc/passwd')")
    errors = [error.value for error in explore_app.error]

    assert len(errors) == 1
    assert errors[0].startswith("Not allowed: `the SQL box cannot read or write files")
    assert not explore_app.dataframe


def test_explore_sql_row_cap(explore_app: AppTest):
    run_sql(explore_app, "SELECT range AS n FROM range(5000)")

    assert len(table(explore_app)) == sandbox.DEFAULT_ROW_CAP
    assert any(warning.value.startswith("Showing the first 1,000 rows; the query returned more.")
               for warning in explore_app.warning)


def test_explore_sql_values_as_text(explore_app: AppTest):
    run_sql(explore_app, f"SELECT 9007199254740993::BIGINT AS big, 1 AS x, 2 AS x, [1, 2] AS items, "
                         f"'{C08_RUN_ID}' AS markup, TIMESTAMPTZ '2026-03-01 10:00:00+00' AS at")
    frame = table(explore_app)

    assert list(frame.columns) == ["big", "x", "x (2)", "items", "markup", "at"]
    assert frame["big"][0] == "9007199254740993"
    assert frame["x (2)"][0] == 2
    assert frame["items"][0] == "2 items: [1,2]"
    assert frame["markup"][0] == C08_RUN_ID
    assert frame["at"][0] == "2026-03-01 10:00:00 UTC"


def test_explore_sql_example_loads(explore_app: AppTest):
    show(explore_app, explore_tab="SQL")
    title = "Rejected records by reason"
    explore_app.selectbox(key="explore_example").set_value(title).run()

    assert explore_app.text_area(key="explore_sql").value == sandbox.EXAMPLES[title]
