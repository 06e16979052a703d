"""Download files: the size cap, export folders in a private temporary folder, their clean-up, rejected-records CSV."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import pytest

from ledger import downloads
from ledger.ingest import ingest_paths
from ledger.queries import Filters, explore

CASES = Path(__file__).resolve().parent / "data" / "cases"


def query(ledger: Path, sql: str, parameters: list | tuple = ()) -> list[tuple]:
    with duckdb.connect(str(ledger), read_only=True) as connection:
        return connection.execute(sql, list(parameters)).fetchall()


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder that tempfile uses as the system's temporary folder for the test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_max_download_default(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(downloads.MAX_DOWNLOAD_MB_ENV, raising=False)
    assert downloads.max_download_bytes() == 500_000_000


def test_max_download_from_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(downloads.MAX_DOWNLOAD_MB_ENV, " 3 ")
    assert downloads.max_download_bytes() == 3_000_000


@pytest.mark.parametrize("raw", ["0", "-1", "1.5", "ten", "٣"])
def test_max_download_invalid_env(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, raw: str):
    monkeypatch.setenv(downloads.MAX_DOWNLOAD_MB_ENV, raw)
    with caplog.at_level("WARNING", logger="ledger.downloads"):
        assert downloads.max_download_bytes() == 500_000_000
    assert f"REPLAY_LEDGER_MAX_DOWNLOAD_MB={raw!r} is not a whole number of megabytes; using 500" in caplog.text


def test_remove_old_exports_only_old(tmp_path: Path):
    old = tmp_path / f"{downloads.EXPORT_DIR_PREFIX}old"
    fresh = tmp_path / f"{downloads.EXPORT_DIR_PREFIX}fresh"
    other = tmp_path / "someone-else-old"
    for folder in (old, fresh, other):
        folder.mkdir()
        (folder / "export.csv").write_text("a\n")
    two_hours_ago = time.time() - 2 * 3600
    for folder in (old, other):
        os.utime(folder, (two_hours_ago, two_hours_ago))

    downloads.remove_old_exports(tmp_path)

    assert not old.exists()
    assert fresh.exists()
    assert other.exists()


def test_remove_old_exports_system_temp(temp_dir: Path):
    old = temp_dir / f"{downloads.EXPORT_DIR_PREFIX}left"
    old.mkdir()
    two_hours_ago = time.time() - 2 * 3600
    os.utime(old, (two_hours_ago, two_hours_ago))

    downloads.remove_old_exports()

    assert not old.exists()


def test_prepare_export_csv_matches_ledger(sample_ledger: Path, temp_dir: Path):
    filters = explore.ExploreFilters(base=Filters(), min_divergences=2)
    prepared = downloads.prepare_explore_export(sample_ledger, filters, ("run_id", "divergences"), "csv", True)
    expected = query(sample_ledger, "SELECT count(*) FROM submissions WHERE divergences_detected >= 2")[0][0]
    try:
        rows = query(sample_ledger, f"SELECT count(*) FROM read_csv('{prepared.path}')")[0][0]

        assert prepared.folder.parent == temp_dir
        assert prepared.folder.name.startswith(downloads.EXPORT_DIR_PREFIX)
        assert prepared.path == prepared.folder / "export.csv.gz"
        assert re.fullmatch(r"replay-ledger-submissions-\d{8}-\d{6}\.csv\.gz", prepared.file_name)
        assert prepared.rows == expected
        assert rows == expected
        assert prepared.size == prepared.path.stat().st_size
        assert downloads.file_reader(prepared.path)() == prepared.path.read_bytes()
    finally:
        downloads.remove_export(prepared.folder)
    assert not prepared.folder.exists()


def test_prepare_export_parquet_never_gzip(sample_ledger: Path, temp_dir: Path):
    prepared = downloads.prepare_explore_export(sample_ledger, explore.ExploreFilters(base=Filters()), None,
                                                "parquet", True)
    downloads.remove_export(prepared.folder)

    assert prepared.path.name == "export.parquet"
    assert prepared.file_name.endswith(".parquet")


def test_prepare_export_failure_removes_folder(sample_ledger: Path, temp_dir: Path):
    with pytest.raises(explore.InvalidColumn):
        downloads.prepare_explore_export(sample_ledger, explore.ExploreFilters(base=Filters()), ("bogus",),
                                         "csv", False)

    assert list(temp_dir.iterdir()) == []


def test_rejections_csv_header_and_quoting():
    data = downloads.rejections_csv([("a.jsonl", "line 2", "status", 'done, "really"', "invalid status")])
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))

    assert rows == [["file", "location", "field", "value", "reason"],
                    ["a.jsonl", "line 2", "status", 'done, "really"', "invalid status"]]


def test_rejections_reader_matches_ledger(ledger: Path, temp_dir: Path):
    report = ingest_paths(ledger, [str(CASES / "c07_invalid.jsonl")])
    expected = query(ledger, "SELECT count(*) FROM rejected WHERE ingest_id = ?", [report.ingest_id])[0][0]
    read = downloads.rejections_reader(ledger, report.ingest_id)

    assert list(temp_dir.iterdir()) == []
    rows = list(csv.reader(io.StringIO(read().decode("utf-8"))))

    assert expected > 0
    assert len(rows) == expected + 1
    assert rows[0][0] == "ingest_id"
    assert {row[0] for row in rows[1:]} == {str(report.ingest_id)}
    assert list(temp_dir.iterdir()) == []


def test_rejections_reader_all_ingests(ledger: Path, temp_dir: Path):
    ingest_paths(ledger, [str(CASES / "c07_invalid.jsonl")])
    shutil.copyfile(CASES / "c07_invalid.jsonl", temp_dir.parent / "again.jsonl")
    ingest_paths(ledger, [str(temp_dir.parent / "again.jsonl")])
    expected = query(ledger, "SELECT count(*) FROM rejected")[0][0]
    rows = list(csv.reader(io.StringIO(downloads.rejections_reader(ledger, None)().decode("utf-8"))))

    assert len({row[0] for row in rows[1:]}) == 2
    assert len(rows) == expected + 1
