"""Tests for the replay-ledger command: ingest, stats, deploys, export, demo, exit codes and help."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
import typer
from typer.testing import CliRunner

from ledger import store
from ledger.cli import app
from ledger.ingest import ingest_paths
from tests.records import query, record, write_lines

ROOT = Path(__file__).resolve().parent.parent
CASES = Path(__file__).resolve().parent / "data" / "cases"
SAMPLE_DATA = ROOT / "sample_data"
START = datetime(2026, 3, 1, tzinfo=timezone.utc)

runner = CliRunner()


def invoke(*args: str, env: dict | None = None):
    return runner.invoke(app, [str(arg) for arg in args], env=env)


def varied_records() -> list[dict]:
    """Thirty records over six days, three deployments and three statuses, some with a divergence."""
    statuses = ("success", "partial", "failed")
    records = []
    for number in range(30):
        status = statuses[number % 3]
        divergences = [] if status == "success" else [
            {"type": "action_mismatch", "expected": "summarize", "actual": "fetch", "index": 1}
        ]
        records.append(record(
            number, status=status, deployment=("prod-eu", "prod-us", "staging")[number % 3 if number % 2 else 0],
            divergences=divergences, divergences_detected=len(divergences), actions_replayed=2 + number % 2,
            cost_savings=round(0.01 * number + 0.005, 3),
            submitted_at=(START + timedelta(hours=5 * number)).isoformat().replace("+00:00", "Z"),
        ))
    return records


@pytest.fixture(scope="module")
def varied_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger of `varied_records`, built once for the tests that only read it."""
    folder = tmp_path_factory.mktemp("varied")
    ledger = folder / "varied.duckdb"
    result = invoke("ingest", write_lines(folder / "varied.jsonl", varied_records()), "--db", ledger)
    assert result.exit_code == 0, result.output
    return ledger


# --- ingest ------------------------------------------------------------------------------------


def test_ingest_all_good_exit_0(ledger, tmp_path):
    result = invoke("ingest", write_lines(tmp_path / "a.jsonl", [record(1), record(2)]), "--db", ledger)
    assert result.exit_code == 0, result.output
    assert "2 records read, 2 ingested, 0 duplicates, 0 rejected" in result.stdout
    assert query(ledger, "SELECT count(*) FROM submissions") == [(2,)]


def test_ingest_duplicates_exit_0(ledger, tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [record(1)])
    invoke("ingest", path, "--db", ledger)
    result = invoke("ingest", path, "--db", ledger)
    assert result.exit_code == 0, result.output
    assert "1 records read, 0 ingested, 1 duplicates, 0 rejected" in result.stdout


def test_ingest_some_rejected_exit_1(ledger, tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [record(1), record(2, status="done")])
    result = invoke("ingest", path, "--db", ledger)
    assert result.exit_code == 1, result.output
    assert f"rejected {path}:2: status: must be one of success, partial, failed; got 'done'" in result.stderr


def test_ingest_missing_path_exit_2(ledger, tmp_path):
    good = write_lines(tmp_path / "a.jsonl", [record(1)])
    result = invoke("ingest", good, tmp_path / "missing.jsonl", "--db", ledger)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: {tmp_path / 'missing.jsonl'}: no such file or folder; check the path"
    assert not ledger.exists()


def test_ingest_named_csv_exit_2(ledger, tmp_path):
    good = write_lines(tmp_path / "a.jsonl", [record(1)])
    log = write_deploy_csv(tmp_path / "deploys.csv", [("prod-eu", "2.2.0", "2026-03-01T10:00:00Z", "")])
    result = invoke("ingest", good, log, "--db", ledger)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"error: {log}: is a CSV file, and CSV files are deploy logs; load it with `replay-ledger deploys import {log}`"
    )
    assert not ledger.exists()


def replay_ledger_command() -> list[str]:
    script = Path(sys.executable).with_name("replay-ledger")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ledger.cli"]


NOT_LEDGERS = {
    "notes.duckdb": ("these are my notes, not a ledger\n", "these ar"),
    # DuckDB opens an existing CSV file as a temporary database, so an ingest into it would vanish.
    "ledger.csv": ("run_id,status\nrun-1,success\n", "run_id,s"),
}


@pytest.mark.parametrize("name", sorted(NOT_LEDGERS))
@pytest.mark.parametrize("command", [("ingest",), ("stats",), ("serve", "--no-auth", "--port", "0")])
def test_not_a_ledger_exit_2(tmp_path, command, name):
    text, start = NOT_LEDGERS[name]
    fake = tmp_path / name
    fake.write_text(text)
    paths = [str(write_lines(tmp_path / "a.jsonl", [record(1)]))] if command == ("ingest",) else []
    # A subprocess, because the error is turned into exit code 2 once, in main().
    result = subprocess.run([*replay_ledger_command(), *command, *paths, "--db", str(fake)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"error: {fake}: is not a DuckDB ledger file (it starts with {start!r}); give a ledger file with --db or "
        "REPLAY_LEDGER_DB, and ingest data files with `replay-ledger ingest`"
    )
    assert fake.read_text() == text


def damaged_copy(ledger: Path, target: Path, *, offset: int | None = None, size: int | None = None) -> Path:
    """Copy a ledger, then overwrite 8 KiB at `offset` or cut the copy to `size` bytes."""
    data = bytearray(ledger.read_bytes())
    if offset is not None:
        data[offset:offset + 8192] = b"x" * 8192
    if size is not None:
        del data[size:]
    target.write_bytes(bytes(data))
    return target


def test_damaged_ledger_exit_2(varied_ledger, tmp_path):
    # The first block after the headers: its checksum no longer matches.
    copy = damaged_copy(varied_ledger, tmp_path / "damaged.duckdb", offset=12288)
    result = subprocess.run([*replay_ledger_command(), "stats", "--db", str(copy)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {copy}: is damaged (Corrupt database file: ")
    assert result.stderr.strip().endswith("); restore it from a copy, or give another file with --db")
    assert "Traceback" not in result.stderr


def test_truncated_ledger_exit_2(sample_ledger_template, tmp_path):
    size = sample_ledger_template.stat().st_size // 2
    copy = damaged_copy(sample_ledger_template, tmp_path / "cut.duckdb", size=size)
    result = subprocess.run([*replay_ledger_command(), "stats", "--db", str(copy)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: reading or writing the ledger failed: IO Error: ")
    assert f'"{copy}"' in result.stderr
    assert "Traceback" not in result.stderr
    assert copy.stat().st_size == size


def test_ingest_json_output_parses(ledger, tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [record(1), record(2, actions_total="9"), record(1)])
    result = invoke("ingest", path, "--db", ledger, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert (report["read"], report["ingested"], report["duplicates"], report["rejected"]) == (3, 1, 1, 1)
    assert report["files"][0]["rejected"] == [
        {"location": f"{path}:2", "field": "actions_total", "value": "9",
         "reason": "must be a JSON integer, got the string '9'; write it without quotes"}
    ]


def test_ingest_strict_other_files_still_ingested(ledger, tmp_path):
    bad = write_lines(tmp_path / "bad.jsonl", [record(1), record(2, cost_savings=-1)])
    good = write_lines(tmp_path / "good.jsonl", [record(3)])
    result = invoke("ingest", bad, good, "--db", ledger, "--strict")
    assert result.exit_code == 1, result.output
    assert f"{bad}: strict mode ingested none of its 1 valid records" in result.stderr
    assert query(ledger, "SELECT run_id FROM submissions") == [("run-3",)]


def test_ingest_deployment_option(ledger, tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [record(1, deployment="prod-eu"), record(2)])
    invoke("ingest", path, "--db", ledger, "--deployment", "canary")
    assert query(ledger, "SELECT DISTINCT deployment FROM submissions") == [("canary",)]


def test_ingest_quiet_prints_summary_only(ledger, tmp_path):
    result = invoke("ingest", write_lines(tmp_path / "a.jsonl", [record(1)]), "--db", ledger, "--quiet")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"1 records read, 1 ingested, 0 duplicates, 0 rejected into {ledger}"


def test_ingest_ledger_from_environment(tmp_path):
    ledger = tmp_path / "from-env.duckdb"
    result = invoke("ingest", write_lines(tmp_path / "a.jsonl", [record(1)]), env={"REPLAY_LEDGER_DB": str(ledger)})
    assert result.exit_code == 0, result.output
    assert query(ledger, "SELECT count(*) FROM submissions") == [(1,)]


# --- stats ------------------------------------------------------------------------------------------


def test_stats_four_tiles(varied_ledger):
    result = invoke("stats", "--db", varied_ledger)
    assert result.exit_code == 0, result.output
    count, replayed, total, divergences, saved = query(
        varied_ledger,
        "SELECT count(*), sum(actions_replayed), sum(actions_total), sum(divergences_detected), sum(cost_savings) "
        "FROM submissions",
    )[0]
    row = next(line for line in result.stdout.splitlines() if line.strip().startswith("all"))
    cells = [cell.strip() for cell in row.split("│")]
    assert cells == ["all", f"{count:,}", f"{replayed:,} of {total:,}", f"{divergences:,}",
                     f"${saved.quantize(Decimal('0.01'))}"]


def test_stats_json(varied_ledger):
    result = invoke("stats", "--db", varied_ledger, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    count, replayed, saved = query(
        varied_ledger, "SELECT count(*), sum(actions_replayed), sum(cost_savings) FROM submissions"
    )[0]
    assert data[0]["deployment"] == "all"
    assert (data[0]["submissions"], data[0]["actions_replayed"]) == (count, replayed)
    assert Decimal(data[0]["cost_saved"]) == saved


def test_stats_by_deployment(varied_ledger):
    result = invoke("stats", "--db", varied_ledger, "--by-deployment", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    expected = query(
        varied_ledger,
        "SELECT deployment, count(*), sum(divergences_detected), sum(cost_savings) FROM submissions "
        "GROUP BY deployment ORDER BY count(*) DESC, deployment",
    )
    assert [(row["deployment"], row["submissions"], row["divergences"], Decimal(row["cost_saved"]))
            for row in data[1:]] == expected
    table = invoke("stats", "--db", varied_ledger, "--by-deployment")
    assert [line.split("│")[0].strip() for line in table.stdout.splitlines()[2:]] == ["all"] + [
        row[0] for row in expected
    ]


def test_stats_filters(varied_ledger):
    result = invoke("stats", "--db", varied_ledger, "--json", "--status", "failed", "--deployment", "prod-eu")
    expected = query(varied_ledger, "SELECT count(*) FROM submissions WHERE status = 'failed' AND deployment = 'prod-eu'")
    assert json.loads(result.stdout)[0]["submissions"] == expected[0][0]


# 2026-03-03T12:00:00Z, the time of the 13th varied record.
EPOCH_NOON = 1772539200


@pytest.mark.parametrize("since", [str(EPOCH_NOON), f"{EPOCH_NOON}.0", str(EPOCH_NOON * 1000)])
def test_stats_since_epoch(varied_ledger, since):
    by_epoch = invoke("stats", "--db", varied_ledger, "--json", "--since", since)
    by_iso = invoke("stats", "--db", varied_ledger, "--json", "--since", "2026-03-03T12:00:00Z")
    expected = query(varied_ledger, "SELECT count(*) FROM submissions WHERE submitted_at >= TIMESTAMPTZ '2026-03-03 12:00:00+00'")
    assert by_epoch.exit_code == 0, by_epoch.output
    assert json.loads(by_epoch.stdout)[0]["submissions"] == expected[0][0]
    assert expected[0][0] == 18
    assert json.loads(by_epoch.stdout) == json.loads(by_iso.stdout)


def test_stats_until_epoch_fraction(varied_ledger):
    # Half a second after the 13th record's time, so it counts as before --until.
    result = invoke("stats", "--db", varied_ledger, "--json", "--until", f"{EPOCH_NOON}.5")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["submissions"] == 13


def test_stats_since_epoch_before_2000_exit_2(varied_ledger):
    result = invoke("stats", "--db", varied_ledger, "--since", "-5")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: --since: is 1969-12-31T23:59:55+00:00, outside the accepted range 2000-01-01 to 2100-01-01"
    )


@pytest.mark.parametrize("command", ["stats", "export"])
def test_unknown_deployment_exit_2(varied_ledger, tmp_path, command):
    output = tmp_path / "out.csv"
    extra = ["--output", output] if command == "export" else []
    result = invoke(command, "--db", varied_ledger, "--deployment", "prod-eu", "--deployment", "prod-euu", *extra)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"error: --deployment 'prod-euu' has no submissions in {varied_ledger}; "
        "deployments with submissions: 'prod-eu', 'prod-us', 'staging'"
    )
    assert not output.exists()


def test_stats_deployment_trimmed(varied_ledger):
    padded = invoke("stats", "--db", varied_ledger, "--json", "--deployment", " prod-eu ")
    plain = invoke("stats", "--db", varied_ledger, "--json", "--deployment", "prod-eu")
    assert padded.exit_code == 0, padded.output
    assert json.loads(padded.stdout) == json.loads(plain.stdout)


@pytest.mark.parametrize("command", ["stats", "export"])
def test_reversed_range_exit_2(varied_ledger, tmp_path, command):
    output = tmp_path / "out.csv"
    extra = ["--output", output] if command == "export" else []
    result = invoke(command, "--db", varied_ledger, "--since", "2026-03-04T00:00:00Z", "--until", "2026-03-02", *extra)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        "error: --since '2026-03-04T00:00:00Z' is not before --until '2026-03-02'; swap them or widen the range"
    )
    assert not output.exists()


def test_export_merges_inbox_first(tmp_path):
    from tests.test_ingest import hold_ledger

    ledger = tmp_path / "busy.duckdb"
    store.create_empty(ledger)
    holder = hold_ledger(ledger, 1.5)
    try:
        report = ingest_paths(ledger, [str(write_lines(tmp_path / "q.jsonl", [record(1, deployment="late")]))],
                              budget=0.2)
    finally:
        holder.wait(timeout=30)
    assert report.queued_in_inbox is not None
    output = tmp_path / "late.csv"
    result = invoke("export", "--db", ledger, "--deployment", "late", "--output", output)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"1 submissions written to {output}"


def test_stats_missing_ledger_exit_2(tmp_path):
    result = invoke("stats", "--db", tmp_path / "none.duckdb")
    assert result.exit_code == 2
    assert "no ledger here yet" in result.stderr


def test_stats_bad_status_exit_2(varied_ledger):
    result = invoke("stats", "--db", varied_ledger, "--status", "done")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --status 'done' is not one of success, partial, failed"


# --- deploys -------------------------------------------------------------------------------------------


def test_deploys_add_and_list(ledger):
    result = invoke("deploys", "add", "--deployment", "prod-eu", "--version", "2.2.0",
                    "--at", "2026-03-01T09:30:00+01:00", "--note", "new index", "--db", ledger)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "deploy prod-eu 2.2.0 at 2026-03-01T08:30:00+00:00 added"
    again = invoke("deploys", "add", "--deployment", "prod-eu", "--version", "2.2.0",
                   "--at", "2026-03-01T08:30:00Z", "--db", ledger)
    assert again.stdout.strip().endswith("already present")
    assert query(ledger, "SELECT deployment, version, deployed_at, note FROM deploys") == [
        ("prod-eu", "2.2.0", datetime(2026, 3, 1, 8, 30, tzinfo=timezone.utc), "new index")
    ]
    listing = invoke("deploys", "list", "--db", ledger)
    assert listing.exit_code == 0
    assert "2026-03-01 08:30:00" in listing.stdout
    assert "new index" in listing.stdout


def test_deploys_add_at_epoch(ledger):
    result = invoke("deploys", "add", "--deployment", "prod-eu", "--version", "2.2.0", "--at", str(EPOCH_NOON),
                    "--db", ledger)
    assert result.exit_code == 0, result.output
    assert query(ledger, "SELECT deployed_at FROM deploys") == [(datetime(2026, 3, 3, 12, tzinfo=timezone.utc),)]


def test_deploys_import_csv_epoch(ledger, tmp_path):
    log = write_deploy_csv(tmp_path / "deploys.csv", [("prod-eu", "2.2.0", str(EPOCH_NOON), "")])
    result = invoke("deploys", "import", log, "--db", ledger)
    assert result.exit_code == 0, result.output
    assert query(ledger, "SELECT deployed_at FROM deploys") == [(datetime(2026, 3, 3, 12, tzinfo=timezone.utc),)]


def test_deploys_add_bad_time_exit_2(ledger):
    result = invoke("deploys", "add", "--deployment", "prod", "--version", "1", "--at", "soon", "--db", ledger)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: --at: is not an ISO-8601 timestamp: 'soon'; use e.g. 2026-03-01T10:00:00Z or epoch seconds such as "
        "1772539200"
    )


def write_deploy_csv(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["deployment", "version", "deployed_at", "note"])
        writer.writerows(rows)
    return path


def test_deploys_import_csv_repeated(ledger, tmp_path):
    log = write_deploy_csv(tmp_path / "deploys.csv", [
        ("prod-eu", "2.1.4", "2026-02-01T09:30:00Z", "in service"),
        ("prod-eu", "2.2.0", "2026-03-01T10:00:00Z", "new index"),
        ("staging", "2.2.0-rc1", "2026-02-20T08:00:00+01:00", ""),
    ])
    first = invoke("deploys", "import", log, "--db", ledger)
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == "3 deploy markers added, 0 already present"
    second = invoke("deploys", "import", log, "--db", ledger)
    assert second.stdout.strip() == "0 deploy markers added, 3 already present"
    assert query(ledger, "SELECT count(*) FROM deploys") == [(3,)]
    listing = invoke("deploys", "list", "--db", ledger, "--deployment", "prod-eu")
    versions = [line.split("│")[2].strip() for line in listing.stdout.splitlines()[2:]]
    assert versions == ["2.1.4", "2.2.0"]


def test_deploys_import_json(ledger, tmp_path):
    log = tmp_path / "deploys.json"
    log.write_text(json.dumps([
        {"deployment": "prod-us", "version": "3.0", "deployed_at": "2026-03-02T00:00:00Z", "note": "midnight"},
        {"deployment": "prod-us", "version": 3.1, "deployed_at": 1772582400},
    ]))
    result = invoke("deploys", "import", log, "--db", ledger)
    assert result.exit_code == 0, result.output
    assert query(ledger, "SELECT version, deployed_at FROM deploys ORDER BY deployed_at") == [
        ("3.0", datetime(2026, 3, 2, tzinfo=timezone.utc)), ("3.1", datetime(2026, 3, 4, tzinfo=timezone.utc)),
    ]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("prod", "v1", "2026-03-01T00:00:00Z", ""), ("prod", "", "2026-03-02T00:00:00Z", "")],
         "{path}:3: version: must be non-empty text, got ''"),
        ([("prod", "v1", "yesterday", "")],
         "{path}:2: deployed_at: is not an ISO-8601 timestamp: 'yesterday'; use e.g. 2026-03-01T10:00:00Z"),
    ],
    ids=["empty-version", "bad-time"],
)
def test_deploys_import_bad_row_exit_2(ledger, tmp_path, rows, message):
    log = write_deploy_csv(tmp_path / "deploys.csv", rows)
    result = invoke("deploys", "import", log, "--db", ledger)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == "error: " + message.format(path=log)
    assert not ledger.exists() or query(ledger, "SELECT count(*) FROM deploys") == [(0,)]


def test_deploys_import_bad_json_row_exit_2(ledger, tmp_path):
    log = tmp_path / "deploys.json"
    log.write_text(json.dumps([{"deployment": "prod", "version": "1", "deployed_at": "2026-03-01T00:00:00Z"},
                               {"deployment": "", "version": "2", "deployed_at": "2026-03-02T00:00:00Z"}]))
    result = invoke("deploys", "import", log, "--db", ledger)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {log}#/1: deployment: must be non-empty text, got ''"


def test_deploys_import_bad_header_exit_2(ledger, tmp_path):
    log = tmp_path / "deploys.csv"
    log.write_text("deployment,version\nprod,v1\n")
    result = invoke("deploys", "import", log, "--db", ledger)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {log}: the header lacks deployed_at; expected deployment,version,deployed_at,note"
    )


def test_deploys_import_missing_file_exit_2(ledger, tmp_path):
    result = invoke("deploys", "import", tmp_path / "none.csv", "--db", ledger)
    assert result.exit_code == 2
    assert "cannot be read" in result.stderr


# --- export -------------------------------------------------------------------------------------------

FILTER_ARGS = ("--deployment", "prod-eu", "--deployment", "prod-us", "--status", "partial", "--status", "failed",
               "--since", "2026-03-02T00:00:00Z", "--until", "2026-03-06T00:00:00Z")
FILTER_SQL = (
    "SELECT run_id, cost_savings, submitted_at, divergences_detected FROM submissions "
    "WHERE deployment IN ('prod-eu', 'prod-us') AND status IN ('partial', 'failed') "
    "AND submitted_at >= TIMESTAMPTZ '2026-03-02 00:00:00+00' AND submitted_at < TIMESTAMPTZ '2026-03-06 00:00:00+00' "
    "ORDER BY submitted_at, submission_id"
)


def read_export(path: Path, file_format: str) -> list[tuple]:
    """Read an export back as (run_id, cost_savings as Decimal, submitted_at, number of divergences)."""
    if file_format == "jsonl":
        rows = [json.loads(line, parse_float=Decimal) for line in path.read_text().splitlines()]
        return [(row["run_id"], Decimal(str(row["cost_savings"])),
                 datetime.fromisoformat(row["submitted_at"]).astimezone(timezone.utc), len(row["divergences"]))
                for row in rows]
    with duckdb.connect() as connection:
        connection.execute("SET TimeZone = 'UTC'")
        if file_format == "csv":
            relation = (
                "SELECT run_id, CAST(cost_savings AS DECIMAL(18, 6)), CAST(submitted_at AS TIMESTAMPTZ), "
                "json_array_length(divergences) FROM read_csv(?, all_varchar = true)"
            )
        else:
            relation = "SELECT run_id, cost_savings, submitted_at, len(divergences) FROM read_parquet(?)"
        return connection.execute(relation, [str(path)]).fetchall()


@pytest.mark.parametrize("file_format", ["csv", "parquet", "jsonl"])
def test_export_filters_match_hand_query(varied_ledger, tmp_path, file_format):
    target = tmp_path / f"export.{file_format}"
    result = invoke("export", "--format", file_format, "-o", target, "--db", varied_ledger, *FILTER_ARGS)
    assert result.exit_code == 0, result.output
    expected = query(varied_ledger, FILTER_SQL)
    assert len(expected) >= 3
    assert result.stdout.strip() == f"{len(expected)} submissions written to {target}"
    assert read_export(target, file_format) == [tuple(row) for row in expected]


@pytest.mark.parametrize("file_format", ["csv", "parquet", "jsonl"])
def test_export_c04_exactly_1_09(ledger, tmp_path, file_format):
    invoke("ingest", CASES / "c04_money.jsonl", "--db", ledger)
    target = tmp_path / f"money.{file_format}"
    result = invoke("export", "--format", file_format, "-o", target, "--db", ledger)
    assert result.exit_code == 0, result.output
    amounts = [row[1] for row in read_export(target, file_format)]
    assert len(amounts) == 11
    assert sum(amounts) == Decimal("1.09")
    assert sorted(amounts)[0] == Decimal("0.09")


def test_export_csv_columns(varied_ledger, tmp_path):
    target = tmp_path / "all.csv"
    invoke("export", "--format", "csv", "-o", target, "--db", varied_ledger)
    with target.open(newline="") as handle:
        header = next(csv.reader(handle))
    assert header[:3] == ["submission_id", "platform_id", "run_id"]
    assert "cost_savings" in header
    assert header[-1] == "divergences"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--format", "xml"), "error: --format 'xml' is not one of csv, parquet, jsonl"),
        (("--status", "done"), "error: --status 'done' is not one of success, partial, failed"),
        (("--since", "last week"),
         "error: --since: is not an ISO-8601 timestamp: 'last week'; use e.g. 2026-03-01T10:00:00Z or epoch seconds "
         "such as 1772539200"),
    ],
    ids=["format", "status", "since"],
)
def test_export_bad_option_exit_2(varied_ledger, tmp_path, args, message):
    result = invoke("export", "-o", tmp_path / "out.csv", "--db", varied_ledger, *args)
    assert result.exit_code == 2
    assert result.stderr.strip() == message
    assert not (tmp_path / "out.csv").exists()


def test_export_unwritable_exit_2(varied_ledger, tmp_path):
    result = invoke("export", "-o", tmp_path / "no" / "such" / "out.csv", "--db", varied_ledger)
    assert result.exit_code == 2
    assert "the export failed" in result.stderr


# --- demo ---------------------------------------------------------------------------------------------


def sample_submission_count() -> int:
    """Count the sample's submissions from its files, independently of the ledger code."""
    import gzip

    posts = len(list((SAMPLE_DATA / "sdk_posts").rglob("*.json")))
    pages = sum(len(json.loads(path.read_text())["items"]) for path in (SAMPLE_DATA / "exports").glob("*.json"))
    lines = len((SAMPLE_DATA / "replays.jsonl").read_text().splitlines())
    archived = sum(len(gzip.decompress(path.read_bytes()).splitlines()) for path in (SAMPLE_DATA / "archive").glob("*.gz"))
    return posts + pages + lines + archived


def test_demo_builds_sample_ledger(tmp_path):
    ledger = tmp_path / "demo.duckdb"
    result = invoke("demo", "--db", ledger, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(f"sample ledger ready at {ledger}")
    expected = sample_submission_count()
    assert expected >= 3000
    assert query(ledger, "SELECT count(*) FROM submissions") == [(expected,)]
    assert query(ledger, "SELECT count(DISTINCT deployment) FROM submissions")[0][0] >= 3
    with (SAMPLE_DATA / "deploys.csv").open() as handle:
        assert query(ledger, "SELECT count(*) FROM deploys") == [(sum(1 for _ in csv.DictReader(handle)),)]

    before = query(ledger, "SELECT count(*), sum(cost_savings) FROM submissions")
    again = invoke("demo", "--db", ledger)
    assert again.exit_code == 0, again.output
    assert "0 deploy markers added" in again.stdout
    assert query(ledger, "SELECT count(*), sum(cost_savings) FROM submissions") == before


# --- help ----------------------------------------------------------------------------------------------


def command_paths() -> list[tuple[str, ...]]:
    """Every command and subcommand of the app, as argument tuples."""
    paths = [()]

    def walk(command, prefix: tuple[str, ...]) -> None:
        for name, child in getattr(command, "commands", {}).items():
            paths.append((*prefix, name))
            walk(child, (*prefix, name))

    walk(typer.main.get_command(app), ())
    return paths


@pytest.mark.parametrize("path", command_paths(), ids=lambda path: " ".join(path) or "replay-ledger")
def test_help_every_command(path):
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    assert "--help" in result.stdout


def test_help_lists_core_commands():
    names = {" ".join(path) for path in command_paths()}
    assert {"ingest", "stats", "export", "demo", "deploys", "deploys add", "deploys import", "deploys list"} <= names
