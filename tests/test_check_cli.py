"""``replay-ledger check`` and ``replay-ledger deploys infer`` run in-process on real ledger files."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from ledger.cli import app
from ledger.ingest import ingest_paths

UTC = timezone.utc
AS_OF = "2026-12-04T00:00:00Z"
SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"


def run(*arguments: str):
    return CliRunner().invoke(app, list(arguments))


def query(ledger: Path, sql: str, parameters: list | tuple = ()) -> list[tuple]:
    with duckdb.connect(str(ledger), read_only=True) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        return connection.execute(sql, list(parameters)).fetchall()


@pytest.fixture(scope="module")
def unmarked_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample data without its deploy log, so only inferred markers exist."""
    path = tmp_path_factory.mktemp("unmarked") / "unmarked.duckdb"
    ingest_paths(path, [str(SAMPLE)], origin="demo")
    return path


@pytest.fixture
def unmarked(unmarked_template: Path, tmp_path: Path) -> Path:
    target = tmp_path / "unmarked.duckdb"
    shutil.copyfile(unmarked_template, target)
    return target


# ---------------------------------------------------------------------------
# check: exit codes and findings


def test_check_sample_regression_exit_1(sample_ledger_template: Path):
    result = run("check", "--db", str(sample_ledger_template), "--as-of", AS_OF)

    assert result.exit_code == 1, result.output
    assert ("regression: prod-eu 2.3.0 deployed 2026-10-20 14:00 UTC: 23.5% (27 of 115) → 60.6% (80 of 132) of "
            "submissions diverged (p=4.56e-09, 7 days each side)") in result.output
    assert result.output.rstrip().endswith(
        "12 deploy markers: 1 regression, 0 improvements, 8 no change, 3 not judged (7 days each side, alpha 0.01); "
        "1 shift, 0 unexplained rises")


def test_check_quiet_deployment_exit_0(sample_ledger_template: Path):
    result = run("check", "--db", str(sample_ledger_template), "--as-of", AS_OF, "--deployment", "prod-us")

    assert result.exit_code == 0, result.output
    assert "regression:" not in result.output
    assert "4 deploy markers: 0 regressions" in result.output


def test_check_since_skips_old_regression(sample_ledger_template: Path):
    result = run("check", "--db", str(sample_ledger_template), "--as-of", AS_OF, "--since", "2026-11-01")

    assert result.exit_code == 0, result.output
    assert "3 deploy markers" in result.output


def test_check_since_duration_back_from_as_of(sample_ledger_template: Path):
    relative = run("check", "--db", str(sample_ledger_template), "--as-of", AS_OF, "--since", "50d", "--json")
    absolute = run("check", "--db", str(sample_ledger_template), "--as-of", AS_OF, "--since",
                   "2026-10-15T00:00:00Z", "--json")

    assert relative.exit_code == absolute.exit_code == 1
    assert json.loads(relative.output)["settings"]["since"] == "2026-10-15T00:00:00.000000Z"
    assert json.loads(relative.output)["markers"] == json.loads(absolute.output)["markers"]


@pytest.mark.parametrize("since, message", [
    ("3000000d", "error: --since '3000000d' reaches back past the year 1; give a shorter duration"),
    ("\u0661\u0664d", "error: --since '\u0661\u0664d' is not a positive number with a unit; use e.g. 90m, 12h, 7d or 2w"),
])
def test_check_since_bad_duration_exit_2(sample_ledger_template: Path, since: str, message: str):
    # Exit 1 would read as a regression to a CI gate.
    result = run("check", "--db", str(sample_ledger_template), "--as-of", AS_OF, "--since", since)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == message


def test_check_submission_window(sample_ledger_template: Path):
    result = run("check", "--db", str(sample_ledger_template), "--as-of", AS_OF, "--window", "100sub",
                 "--deployment", "prod-eu", "--json")
    document = json.loads(result.output)
    (finding,) = document["findings"]

    assert result.exit_code == 1
    assert document["settings"]["window"] == {"kind": "submissions", "per_side": 100}
    assert (finding["before"]["submissions"], finding["after"]["submissions"]) == (100, 100)
    assert (finding["before"]["with_divergence"], finding["after"]["with_divergence"]) == (26, 64)


def test_check_no_shifts(sample_ledger_template: Path):
    result = run("check", "--db", str(sample_ledger_template), "--as-of", AS_OF, "--no-shifts", "--json")
    document = json.loads(result.output)

    assert document["shifts"] == []
    assert document["settings"]["shifts"]["checked"] is False


def test_check_alpha_changes_verdicts(sample_ledger_template: Path):
    # prod-eu 2.2.1 has p = 0.041: no change at the default alpha 0.01, a regression at 0.05.
    result = run("check", "--db", str(sample_ledger_template), "--as-of", AS_OF, "--alpha", "0.05",
                 "--deployment", "prod-eu", "--json")
    versions = [finding["version"] for finding in json.loads(result.output)["findings"]]

    assert result.exit_code == 1
    assert versions == ["2.2.1", "2.3.0"]


def test_check_json_matches_sql(sample_ledger_template: Path):
    result = run("check", "--db", str(sample_ledger_template), "--as-of", AS_OF, "--json")
    document = json.loads(result.output)
    by_version = {(m["deployment"], m["version"]): m for m in document["markers"]}
    marker = by_version[("prod-us", "2.2.1")]
    deployed_at = datetime(2026, 10, 13, 16, 30, tzinfo=UTC)
    expected = query(sample_ledger_template, """
        SELECT count(*) FILTER (WHERE submitted_at < ?),
               count(*) FILTER (WHERE submitted_at < ? AND divergences_detected > 0),
               count(*) FILTER (WHERE submitted_at >= ?),
               count(*) FILTER (WHERE submitted_at >= ? AND divergences_detected > 0)
        FROM submissions WHERE deployment = 'prod-us' AND submitted_at >= ? AND submitted_at < ?""",
                     [deployed_at] * 4 + [deployed_at - timedelta(days=7), deployed_at + timedelta(days=7)])[0]

    assert result.exit_code == 1
    assert document["regression_detected"] is True
    assert (marker["before"]["submissions"], marker["before"]["with_divergence"], marker["after"]["submissions"],
            marker["after"]["with_divergence"]) == expected
    assert marker["verdict"] == "no_change"
    assert marker["deployed_at"] == "2026-10-13T16:30:00.000000Z"
    assert len(document["markers"]) == query(sample_ledger_template, "SELECT count(*) FROM deploys")[0][0]


# ---------------------------------------------------------------------------
# check: usage errors exit 2


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["--window", "7"], "window '7' has no unit; write 7d for days or 7sub for submissions each side"),
     (["--window", "soon"], "window 'soon' is not a duration or a submission count"),
     (["--alpha", "2"], "alpha must be between 0 and 1 (exclusive), got 2.0"),
     (["--min-effect", "5"], "0.05 means 5 percentage points"),
     (["--min-submissions", "0"], "the minimum submissions a side must be at least 1"),
     (["--deployment", "prod-eux"], "--deployment 'prod-eux' has no submissions or deploy markers in"),
     (["--since", "yesterday"], "--since: is not an ISO-8601 timestamp: 'yesterday'"),
     (["--since", "0d"], "--since '0d' is not a positive number with a unit"),
     (["--since", "2026-11-01", "--until", "2026-10-01"], "--since 2026-11-01 is not before --until 2026-10-01"),
     (["--as-of", "later"], "--as-of: is not an ISO-8601 timestamp")],
)
def test_check_usage_errors(sample_ledger_template: Path, arguments: list[str], message: str):
    result = run("check", "--db", str(sample_ledger_template), *arguments)

    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_check_missing_ledger(tmp_path: Path):
    result = run("check", "--db", str(tmp_path / "none.duckdb"))

    assert result.exit_code == 2
    assert "no ledger here yet" in result.stderr
    assert not (tmp_path / "none.duckdb").exists()


def test_check_unknown_option():
    result = run("check", "--windw", "7d")

    assert result.exit_code == 2


def test_check_leaves_ledger_unchanged(sample_ledger: Path):
    before = query(sample_ledger, "SELECT count(*), (SELECT count(*) FROM deploys) FROM submissions")

    run("check", "--db", str(sample_ledger), "--as-of", AS_OF)

    assert query(sample_ledger, "SELECT count(*), (SELECT count(*) FROM deploys) FROM submissions") == before


# ---------------------------------------------------------------------------
# deploys infer


def test_infer_stores_version_changes(unmarked: Path):
    result = run("deploys", "infer", "--db", str(unmarked))
    stored = query(unmarked, "SELECT deployment, version, deployed_at, origin FROM deploys ORDER BY deployed_at")
    expected = query(unmarked, """
        WITH v AS (SELECT deployment, extra ->> '$.agent_version' AS version, min(submitted_at) AS first_seen
                   FROM submissions WHERE extra ->> '$.agent_version' IS NOT NULL GROUP BY ALL)
        SELECT deployment, version, first_seen, 'inferred' FROM v
        WHERE first_seen > (SELECT min(first_seen) FROM v AS w WHERE w.deployment = v.deployment)
        ORDER BY first_seen""")

    assert result.exit_code == 0, result.output
    assert stored == expected
    assert "9 inferred deploy markers added, 0 version changes already had a marker" in result.output


def test_infer_twice_adds_nothing(unmarked: Path):
    run("deploys", "infer", "--db", str(unmarked))

    result = run("deploys", "infer", "--db", str(unmarked))

    assert result.exit_code == 0
    assert "0 inferred deploy markers added, 9 version changes already had a marker" in result.output
    assert query(unmarked, "SELECT count(*) FROM deploys")[0][0] == 9


def test_infer_skips_marked_versions(sample_ledger: Path):
    result = run("deploys", "infer", "--db", str(sample_ledger))

    assert "0 inferred deploy markers added, 9 version changes already had a marker" in result.output
    assert query(sample_ledger, "SELECT count(*) FROM deploys WHERE origin = 'inferred'")[0][0] == 0


def test_infer_dry_run_stores_nothing(unmarked: Path):
    result = run("deploys", "infer", "--db", str(unmarked), "--dry-run", "--deployment", "prod-eu")

    assert result.exit_code == 0
    assert "4 version changes without a marker (not stored: --dry-run), 0 already marked" in result.output
    assert "2.3.0" in result.output
    assert query(unmarked, "SELECT count(*) FROM deploys")[0][0] == 0


def test_infer_then_check_finds_regression(unmarked: Path):
    run("deploys", "infer", "--db", str(unmarked))

    result = run("check", "--db", str(unmarked), "--as-of", AS_OF, "--json")
    (finding,) = json.loads(result.output)["findings"]

    assert result.exit_code == 1
    assert (finding["deployment"], finding["version"], finding["origin"]) == ("prod-eu", "2.3.0", "inferred")


@pytest.mark.parametrize("field", ["$.version", "agent version", "a" * 65])
def test_infer_rejects_bad_field(unmarked: Path, field: str):
    result = run("deploys", "infer", "--db", str(unmarked), "--field", field)

    assert result.exit_code == 2
    assert "is not a plain key name" in result.stderr


def test_infer_missing_ledger(tmp_path: Path):
    result = run("deploys", "infer", "--db", str(tmp_path / "none.duckdb"))

    assert result.exit_code == 2
    assert "no ledger here yet" in result.stderr
