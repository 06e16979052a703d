"""The read-only SQL box: what it returns, and every way out of its sandbox that it must close.

Each escape attempt runs against a real ledger file; afterwards the test
checks the effect did not happen (no file written, ledger unchanged), not
only that an error was raised.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from ledger.queries import sandbox

CASES = Path(__file__).resolve().parent / "data" / "cases"


def query(ledger: Path, sql: str, parameters: list | tuple = ()) -> list[tuple]:
    with duckdb.connect(str(ledger), read_only=True) as connection:
        return connection.execute(sql, list(parameters)).fetchall()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sandbox_ledger(sample_ledger_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sandbox") / "sandbox.duckdb"
    shutil.copyfile(sample_ledger_template, path)
    return path


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A readable file outside the ledger with a known line, so a refusal cannot be a missing-file error."""
    path = tmp_path_factory.mktemp("outside") / "secret.csv"
    path.write_text("name,value\nsecret,42\n")
    return path


# ---------------------------------------------------------------------------
# Answers


def test_sandbox_select_matches_hand_sql(sandbox_ledger: Path):
    result = sandbox.run_query(
        sandbox_ledger,
        "SELECT deployment, count(*) AS submissions, sum(cost_savings) AS saved "
        "FROM submissions GROUP BY deployment ORDER BY deployment",
    )
    expected = query(sandbox_ledger, "SELECT deployment, count(*), sum(cost_savings) FROM submissions "
                                     "GROUP BY deployment ORDER BY deployment")

    assert result.columns == ["deployment", "submissions", "saved"]
    assert result.rows == expected
    assert result.truncated is False
    assert all(isinstance(row[2], Decimal) for row in result.rows)


@pytest.mark.parametrize("sql", [
    "WITH d AS (SELECT deployment FROM submissions) SELECT count(*) FROM d",
    "FROM submissions SELECT count(*)",
    "DESCRIBE submissions",
    "SHOW TABLES",
    "SUMMARIZE SELECT cost_savings FROM submissions",
    "EXPLAIN SELECT count(*) FROM submissions",
    "PIVOT (SELECT status FROM submissions) ON status USING count(*)",
    "SELECT 1;",
    "-- a comment first\nSELECT 1",
])
def test_sandbox_read_statements_allowed(sandbox_ledger: Path, sql: str):
    result = sandbox.run_query(sandbox_ledger, sql)

    assert result.columns


def test_sandbox_pivot_counts_match_hand_sql(sandbox_ledger: Path):
    result = sandbox.run_query(sandbox_ledger, "PIVOT (SELECT status FROM submissions) ON status USING count(*)")
    expected = dict(query(sandbox_ledger, "SELECT status, count(*) FROM submissions GROUP BY status"))

    assert dict(zip(result.columns, result.rows[0])) == expected


@pytest.mark.parametrize("title", list(sandbox.EXAMPLES))
def test_sandbox_examples_run(sandbox_ledger: Path, title: str):
    result = sandbox.run_query(sandbox_ledger, sandbox.EXAMPLES[title])

    assert result.columns
    assert result.truncated is False


def test_sandbox_example_savings_match_hand_sql(sandbox_ledger: Path):
    result = sandbox.run_query(sandbox_ledger, sandbox.EXAMPLES["Savings and divergence rate by deployment"])
    expected = query(sandbox_ledger, "SELECT deployment, count(*), sum(cost_savings) FROM submissions "
                                     "GROUP BY deployment ORDER BY sum(cost_savings) DESC")

    assert [row[:3] for row in result.rows] == expected


def test_sandbox_row_cap_cuts_result(sandbox_ledger: Path):
    capped = sandbox.run_query(sandbox_ledger, "SELECT * FROM range(5000)", row_cap=100)
    exact = sandbox.run_query(sandbox_ledger, "SELECT * FROM range(100)", row_cap=100)

    assert len(capped.rows) == 100
    assert capped.truncated is True
    assert capped.rows[-1] == (99,)
    assert len(exact.rows) == 100
    assert exact.truncated is False


def test_sandbox_row_cap_streams_huge_result(sandbox_ledger: Path):
    started = time.perf_counter()
    result = sandbox.run_query(sandbox_ledger, "SELECT * FROM range(10000000000)", row_cap=10, timeout=5)

    assert len(result.rows) == 10
    assert result.truncated is True
    assert time.perf_counter() - started < 3


def test_sandbox_settings_locked_and_closed(sandbox_ledger: Path):
    result = sandbox.run_query(
        sandbox_ledger,
        "SELECT current_setting('enable_external_access'), current_setting('lock_configuration'), "
        "current_setting('autoload_known_extensions'), current_setting('autoinstall_known_extensions'), "
        "current_setting('access_mode')",
    )

    assert result.rows == [(False, True, False, False, "automatic")]


def test_sandbox_ledger_attached_read_only(sandbox_ledger: Path):
    result = sandbox.run_query(
        sandbox_ledger, "SELECT database_name, readonly FROM duckdb_databases() WHERE NOT internal")

    assert dict(result.rows)["ledger"] is True


# ---------------------------------------------------------------------------
# Statements other than a single read


REJECTED_STATEMENTS = {
    "copy_to": ("COPY submissions TO '{out}'", "COPY statements are not allowed"),
    "copy_query_to": ("COPY (SELECT * FROM submissions) TO '{out}' (FORMAT parquet)", "COPY statements are not allowed"),
    "copy_from": ("COPY submissions FROM '{secret}'", "COPY statements are not allowed"),
    "attach": ("ATTACH '{out}' AS other", "ATTACH statements are not allowed"),
    "attach_ledger_writable": ("ATTACH '{ledger}' AS writable", "ATTACH statements are not allowed"),
    "detach": ("DETACH ledger", "DETACH statements are not allowed"),
    "install": ("INSTALL httpfs", "INSTALL and LOAD statements are not allowed"),
    "force_install": ("FORCE INSTALL httpfs", "INSTALL and LOAD statements are not allowed"),
    "load": ("LOAD httpfs", "INSTALL and LOAD statements are not allowed"),
    "set_external_access": ("SET enable_external_access = true", "SET, RESET and USE statements are not allowed"),
    "unlock": ("SET lock_configuration = false", "SET, RESET and USE statements are not allowed"),
    "reset": ("RESET memory_limit", "SET, RESET and USE statements are not allowed"),
    "use": ("USE memory", "SET, RESET and USE statements are not allowed"),
    "pragma": ("PRAGMA enable_profiling", "PRAGMA statements are not allowed"),
    "call": ("CALL pragma_version()", "CALL statements are not allowed"),
    "checkpoint": ("CHECKPOINT", "CALL statements are not allowed"),
    "insert": ("INSERT INTO submissions SELECT * FROM submissions", "INSERT statements are not allowed"),
    "update": ("UPDATE submissions SET cost_savings = 0", "UPDATE statements are not allowed"),
    "delete": ("DELETE FROM submissions", "DELETE statements are not allowed"),
    "create_table": ("CREATE TABLE stolen AS SELECT * FROM submissions", "CREATE statements are not allowed"),
    "create_temp": ("CREATE TEMP TABLE t AS SELECT 1", "CREATE statements are not allowed"),
    "create_secret": ("CREATE SECRET (TYPE s3)", "CREATE statements are not allowed"),
    "drop": ("DROP TABLE submissions", "DROP statements are not allowed"),
    "alter": ("ALTER TABLE submissions ADD COLUMN x INTEGER", "ALTER statements are not allowed"),
    "export_database": ("EXPORT DATABASE '{folder}'", "EXPORT statements are not allowed"),
    "transaction": ("BEGIN TRANSACTION", "TRANSACTION statements are not allowed"),
    "vacuum": ("VACUUM", "VACUUM and ANALYZE statements are not allowed"),
    "prepare": ("PREPARE p AS SELECT 1", "PREPARE statements are not allowed"),
    "second_statement": ("SELECT 1; DROP TABLE submissions", "the text contains 2 statements"),
    "empty": ("  ;  ", "the SQL box is empty"),
    "comment_only": ("-- nothing here", "the SQL box is empty"),
}


@pytest.mark.parametrize("name", list(REJECTED_STATEMENTS))
def test_sandbox_statement_rejected(sandbox_ledger: Path, secret_file: Path, tmp_path: Path, name: str):
    template, message = REJECTED_STATEMENTS[name]
    out = tmp_path / "out.file"
    sql = template.format(out=out, secret=secret_file, ledger=sandbox_ledger, folder=tmp_path / "dump")
    before = digest(sandbox_ledger)

    with pytest.raises(sandbox.QueryRejected) as raised:
        sandbox.run_query(sandbox_ledger, sql)

    assert message in str(raised.value)
    assert not out.exists()
    assert not (tmp_path / "dump").exists()
    assert digest(sandbox_ledger) == before


def test_sandbox_rejection_message_says_what_runs():
    with pytest.raises(sandbox.QueryRejected) as raised:
        sandbox.check_statement("COPY submissions TO 'x.csv'")

    assert str(raised.value) == (
        "COPY statements are not allowed: the SQL box only reads the ledger, so it runs SELECT queries "
        "(also WITH, FROM, DESCRIBE, SHOW, SUMMARIZE) and EXPLAIN"
    )


# ---------------------------------------------------------------------------
# Reads of anything but the ledger


FILE_READS = {
    "read_csv_passwd": "SELECT * FROM read_csv('/etc/passwd')",
    "read_text_passwd": "SELECT * FROM read_text('/etc/passwd')",
    "read_blob_hostname": "SELECT * FROM read_blob('/etc/hostname')",
    "read_csv_secret": "SELECT * FROM read_csv('{secret}')",
    "read_csv_auto_secret": "SELECT * FROM read_csv_auto('{secret}')",
    "replacement_scan_secret": "SELECT * FROM '{secret}'",
    "read_json_secret": "SELECT * FROM read_json('{secret}')",
    "read_parquet_secret": "SELECT * FROM read_parquet('{parquet}')",
    "glob_etc": "SELECT * FROM glob('/etc/*')",
    "sniff_csv": "SELECT * FROM sniff_csv('{secret}')",
    "parquet_metadata": "SELECT * FROM parquet_metadata('{parquet}')",
    "loopback_http": "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')",
    "subquery_read": "SELECT count(*) FROM submissions WHERE run_id IN (SELECT column0 FROM read_csv('{secret}'))",
}


@pytest.fixture(scope="module")
def secret_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("outside_parquet") / "secret.parquet"
    with duckdb.connect() as connection:
        connection.execute(f"COPY (SELECT 'secret' AS name) TO '{path}' (FORMAT parquet)")
    return path


@pytest.mark.parametrize("name", list(FILE_READS))
def test_sandbox_file_read_rejected(sandbox_ledger: Path, secret_file: Path, secret_parquet: Path, name: str):
    sql = FILE_READS[name].format(secret=secret_file, parquet=secret_parquet)

    with pytest.raises(sandbox.QueryRejected) as raised:
        sandbox.run_query(sandbox_ledger, sql)

    assert "the SQL box cannot read or write files, reach the network or load extensions" in str(raised.value)
    assert "secret,42" not in str(raised.value)


def test_sandbox_python_variables_unreachable(sandbox_ledger: Path):
    secret_frame = pd.DataFrame({"token": ["do-not-leak"]})  # a replacement scan would find this local

    with pytest.raises(sandbox.QueryFailed) as raised:
        sandbox.run_query(sandbox_ledger, "SELECT * FROM secret_frame")

    assert "secret_frame" in str(raised.value)
    assert secret_frame.shape == (1, 1)


def test_sandbox_extension_functions_unavailable(sandbox_ledger: Path):
    with pytest.raises(sandbox.SandboxError) as raised:
        sandbox.run_query(sandbox_ledger, "SELECT * FROM sqlite_scan('/tmp/x.db', 't')")

    assert "sqlite_scan" in str(raised.value)


# ---------------------------------------------------------------------------
# Limits


def test_sandbox_timeout_stops_long_query(sandbox_ledger: Path):
    started = time.perf_counter()

    with pytest.raises(sandbox.QueryTimedOut) as raised:
        sandbox.run_query(sandbox_ledger, "SELECT count(*) FROM range(10000000000000)", timeout=1.0)

    elapsed = time.perf_counter() - started
    assert str(raised.value) == (
        "the query ran longer than 1 s and was stopped; add a LIMIT, a WHERE on submitted_at, or aggregate with GROUP BY"
    )
    assert 1.0 <= elapsed < 4.0


def test_sandbox_timeout_covers_fetching(sandbox_ledger: Path):
    # DuckDB streams results, so this returns from execute at once and spends its time finding the first row.
    slow_first_row = "SELECT range FROM range(100000000000) WHERE range % 1000000007 = 1000000006"
    started = time.perf_counter()

    with pytest.raises(sandbox.QueryTimedOut):
        sandbox.run_query(sandbox_ledger, slow_first_row, timeout=0.5)

    assert time.perf_counter() - started < 3.0


def test_sandbox_memory_limit_stops_query(sandbox_ledger: Path):
    with pytest.raises(sandbox.QueryFailed) as raised:
        sandbox.run_query(sandbox_ledger, "SELECT * FROM range(30000000) ORDER BY random()",
                          memory_limit="32MB", timeout=20)

    assert str(raised.value) == "the query needed more than the SQL box's 32MB of memory; aggregate, filter or add a LIMIT"


def test_sandbox_syntax_error_message(sandbox_ledger: Path):
    with pytest.raises(sandbox.QueryFailed) as raised:
        sandbox.run_query(sandbox_ledger, "SELEC count(*) FROM submissions")

    assert str(raised.value) == 'Parser Error: syntax error at or near "SELEC"'


def test_sandbox_too_long_text_rejected(sandbox_ledger: Path):
    sql = "SELECT 1" + " " * sandbox.MAX_SQL_CHARS

    with pytest.raises(sandbox.QueryRejected) as raised:
        sandbox.run_query(sandbox_ledger, sql)

    assert f"takes up to {sandbox.MAX_SQL_CHARS:,}" in str(raised.value)


def test_sandbox_missing_ledger(tmp_path: Path):
    from ledger import store

    with pytest.raises(store.LedgerMissing):
        sandbox.run_query(tmp_path / "absent.duckdb", "SELECT 1")


def test_sandbox_ledger_unchanged_after_attempts(sandbox_ledger: Path, tmp_path: Path):
    before = digest(sandbox_ledger)
    attempts = [
        "INSERT INTO submissions SELECT * FROM submissions",
        "SELECT * FROM submissions; DELETE FROM submissions",
        f"COPY submissions TO '{tmp_path / 'x.csv'}'",
        "SELECT count(*) FROM submissions",
    ]
    for sql in attempts:
        try:
            sandbox.run_query(sandbox_ledger, sql)
        except sandbox.SandboxError:
            pass

    assert digest(sandbox_ledger) == before
    assert list(tmp_path.iterdir()) == []
