"""Fixtures shared by the test modules: ledger paths, the input cases and a sample ledger."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ledger import store
from ledger.deploy_log import read_deploy_log
from ledger.ingest import ingest_paths

ROOT = Path(__file__).resolve().parent.parent
CASES = Path(__file__).resolve().parent / "data" / "cases"
SAMPLE_DATA = ROOT / "sample_data"


@pytest.fixture
def cases() -> Path:
    """The folder of input cases that tools of this kind have got wrong."""
    return CASES


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    """A path for a fresh ledger file in a temporary folder (not created yet)."""
    return tmp_path / "ledger.duckdb"


@pytest.fixture(scope="session")
def sample_ledger_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger built once per session from sample_data/ with its deploy log; copy it before writing."""
    path = tmp_path_factory.mktemp("sample") / "sample.duckdb"
    ingest_paths(path, [str(SAMPLE_DATA)], origin="demo")
    store.add_deploys(path, read_deploy_log(SAMPLE_DATA / "deploys.csv"), origin="file")
    return path


@pytest.fixture
def sample_ledger(sample_ledger_template: Path, tmp_path: Path) -> Path:
    """A private copy of the sample ledger that a test may change."""
    target = tmp_path / "sample.duckdb"
    shutil.copyfile(sample_ledger_template, target)
    return target
