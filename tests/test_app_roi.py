"""The ROI page under Streamlit's AppTest on the sample ledger; every number is checked against hand SQL."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from ledger import store

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "roi.py")


def query(ledger: Path, sql: str, parameters: list | tuple = ()) -> list[tuple]:
    with duckdb.connect(str(ledger), read_only=True) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        return connection.execute(sql, list(parameters)).fetchall()


def money(amount: Decimal) -> str:
    return f"${amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"


@pytest.fixture(scope="module")
def page(sample_ledger_template: Path) -> AppTest:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(store.LEDGER_ENV, str(sample_ledger_template))
        yield AppTest.from_file(PAGE, default_timeout=60)


def show(at: AppTest, **params) -> AppTest:
    params.setdefault("range", "all")
    at.context["timezone"] = "UTC"
    at.query_params.clear()
    at.query_params.update(params)
    at.run()
    assert not at.exception, [error.value for error in at.exception]
    return at


def metrics(at: AppTest) -> dict:
    return {metric.label: metric.value for metric in at.metric}


def texts(at: AppTest) -> list[str]:
    return [element.value for element in [*at.markdown, *at.caption, *at.info, *at.warning, *at.subheader]]


RUNS_SQL = """
WITH runs AS (SELECT run_id, max(cost_savings) AS saved FROM submissions {where} GROUP BY run_id)
SELECT (SELECT sum(cost_savings) FROM submissions {where}), (SELECT sum(saved) FROM runs),
       (SELECT count(*) FROM runs), (SELECT count(*) FROM submissions {where})
"""


@pytest.mark.parametrize(
    ("params", "where"),
    [({}, ""), ({"deployment": "prod-eu"}, "WHERE deployment = 'prod-eu'"),
     ({"range": "custom", "from": "2026-10-01", "to": "2026-10-31", "tz": "utc"},
      "WHERE submitted_at >= '2026-10-01' AND submitted_at < '2026-11-01'")],
)
def test_roi_tiles_match_sql(page: AppTest, sample_ledger_template: Path, params: dict, where: str):
    show(page, **params)
    gross, once, runs, submissions = query(sample_ledger_template, RUNS_SQL.format(where=where))[0]
    shown = metrics(page)

    assert shown["Gross savings"] == money(gross)
    assert shown["Savings once per run"] == money(once)
    assert shown["Runs"] == f"{runs:,}"
    assert shown["Submissions per run"] == f"{submissions / runs:.2f}"
    assert once < gross


def test_roi_projection_matches_sql(page: AppTest, sample_ledger_template: Path):
    show(page)
    table = next(frame.value for frame in page.dataframe if "Horizon" in frame.value.columns)
    last = query(sample_ledger_template, "SELECT max(submitted_at) FROM submissions")[0][0]
    gross, once = query(sample_ledger_template, """
        WITH w AS (SELECT * FROM submissions WHERE submitted_at > ? AND submitted_at <= ?)
        SELECT sum(cost_savings), (SELECT sum(m) FROM (SELECT max(cost_savings) AS m FROM w GROUP BY run_id)) FROM w""",
                        [last - timedelta(days=28), last])[0]

    assert list(table["Horizon"]) == ["next 30 days", "next 90 days", "next 365 days"]
    assert list(table["Gross savings"]) == [money(gross * days / 28) for days in (30, 90, 365)]
    assert list(table["Savings once per run"]) == [money(once * days / 28) for days in (30, 90, 365)]
    method = next(text for text in texts(page) if text.startswith("Method: "))
    assert f"(28 days: gross {money(gross)}, once per run {money(once)})" in method


def test_roi_definitions_on_screen(page: AppTest):
    show(page)
    definitions = next(text for text in texts(page) if text.startswith("**Gross savings**"))

    assert "a run replayed ten times counts ten times" in definitions
    assert "**Savings once per run** count each run once" in definitions
    assert "times 30, 90 and 365 days" in definitions


def test_roi_period_table_matches_sql(page: AppTest, sample_ledger_template: Path):
    show(page, period="month")
    table = next(frame.value for frame in page.dataframe if "Runs first seen" in frame.value.columns)
    expected = query(sample_ledger_template, """
        SELECT strftime(date_trunc('month', submitted_at), '%Y-%m'), deployment, count(*), sum(cost_savings)
        FROM submissions GROUP BY 1, 2 ORDER BY 1, 2""")

    assert [(period, name, n, gross) for period, name, n, gross in zip(
        table["Period"], table["Deployment"], table["Submissions"], table["Gross savings"])] == [
        (f"{month} (UTC)", name, n, money(gross)) for month, name, n, gross in expected]


def test_roi_measure_param_charts(page: AppTest):
    show(page, measure="once_per_run", period="month")
    specs = [json.loads(element.proto.spec) for element in page.get("vega_lite_chart")]

    assert [spec["encoding"]["y"]["field"] for spec in specs] == ["once_per_run_high", "cumulative_once_per_run"]
    assert "Savings once per run per month" in texts(page)


def test_roi_zone_param_axis(page: AppTest):
    show(page, bucket_tz="America/New_York")
    spec = json.loads(page.get("vega_lite_chart")[0].proto.spec)

    assert spec["encoding"]["x"]["axis"]["title"] == "Week (from Monday) (America/New_York)"


def test_roi_download_offered(page: AppTest):
    show(page)
    (button,) = page.get("download_button")

    assert button.proto.label == "Download CSV"


def test_roi_bad_period_link(page: AppTest):
    show(page, period="fortnight")

    assert any(text.startswith("The link's period `fortnight` is not one of week, month") for text in
               [element.value for element in page.warning])
    assert page.selectbox(key="roi_period").value == "week"


def test_roi_no_data(page: AppTest):
    show(page, range="custom", **{"from": "2020-01-01", "to": "2020-01-31"})

    assert any(text.startswith("No submissions match these filters.") for text in texts(page))
    assert not page.metric


def exact_money(amount: Decimal) -> str:
    """Return dollars to the cent, with the exact amount beside them when it has more decimals."""
    if amount == amount.quantize(Decimal("0.01")):
        return money(amount)
    return f"{money(amount)} (exactly ${amount.normalize():f})"


def chart_rows(at: AppTest, index: int) -> tuple[dict, list[dict]]:
    """Return one chart's spec and the rows of its data set."""
    element = at.get("vega_lite_chart")[index]
    (dataset,) = element.proto.datasets
    return json.loads(element.proto.spec), pa.ipc.open_stream(dataset.data.data).read_all().to_pylist()


def test_roi_week_ticks_on_mondays(page: AppTest, sample_ledger_template: Path):
    show(page)
    spec, _ = chart_rows(page, 0)
    starts = [row[0] for row in query(sample_ledger_template, """
        SELECT DISTINCT date_trunc('week', submitted_at)::DATE FROM submissions ORDER BY 1""")]
    ticks = [date(value["year"], value["month"], value["date"]) for value in spec["encoding"]["x"]["axis"]["values"]]

    assert ticks == starts
    assert {tick.weekday() for tick in ticks} == {0}
    assert {(value["hours"], value["minutes"], value["utc"]) for value in spec["encoding"]["x"]["axis"]["values"]} \
        == {(0, 0, True)}


def test_roi_last_week_partial_exact(page: AppTest, sample_ledger_template: Path):
    show(page)
    spec, rows = chart_rows(page, 0)
    expected = query(sample_ledger_template, """
        SELECT deployment, sum(cost_savings) FROM submissions
        WHERE submitted_at >= (SELECT date_trunc('week', max(submitted_at)) FROM submissions)
        GROUP BY deployment ORDER BY deployment""")
    last = sorted((row for row in rows if row["x_start"] == "2026-11-30T00:00:00.000Z"),
                  key=lambda row: row["series"])
    table = next(frame.value for frame in page.dataframe if "Runs first seen" in frame.value.columns)
    last_table = table[table["Period"] == "week of 2026-11-30 (UTC)"]

    assert [(row["series"], row["gross_text"]) for row in last] == [
        (name, exact_money(amount)) for name, amount in expected]
    assert sum(row["gross"] for row in last) == pytest.approx(float(sum(amount for _, amount in expected)))
    assert money(sum(amount for _, amount in expected)) == "$15.70"
    assert list(last_table["Gross savings"]) == [money(amount) for _, amount in expected]
    assert {row["coverage"] for row in last} == {"partial"}
    assert {row["Data covers"] for row in last} == {"2026-11-30 only (1 of 7 days)"}
    assert {row["coverage"] for row in rows if row["x_start"] == "2026-11-23T00:00:00.000Z"} == {"full"}
    assert spec["encoding"]["opacity"]["scale"]["range"][1] < 1
    assert any("week of 2026-11-30 (UTC) has data from 2026-11-30 only (1 of 7 days)" in text
               for text in texts(page))


def test_roi_month_no_partial_last(page: AppTest):
    show(page, period="month")
    _, rows = chart_rows(page, 0)

    assert {row["x_start"] for row in rows if row["coverage"] == "partial"} == {"2026-09-01T00:00:00.000Z"}
    assert any("2026-09 (UTC) has data from 2026-09-02 to 2026-09-30 (29 of 30 days)" in text for text in texts(page))


def test_roi_span_of_a_century_in_years(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Weeks or months from 2000 to 2099 are too many bars, so the page falls back to years.
    from ledger.ingest import ingest_paths
    from tests.records import record, write_lines

    ledger = tmp_path / "century.duckdb"
    records = [record(number, submitted_at=f"{year}-06-01T00:00:00Z", cost_savings=0.25)
               for number, year in enumerate((2000, 2040, 2099))]
    ingest_paths(ledger, [str(write_lines(tmp_path / "century.jsonl", records))])
    monkeypatch.setenv(store.LEDGER_ENV, str(ledger))
    at = show(AppTest.from_file(PAGE, default_timeout=60))

    assert any(text.startswith("All time · Years in UTC · data as of") for text in texts(at))
    assert metrics(at)["Gross savings"] == "$0.75"
