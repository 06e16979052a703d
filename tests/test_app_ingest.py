"""The Ingest page in Streamlit's AppTest, and the upload handling under it, on real DuckDB ledgers.

Uploads go through AppTest's file uploader into the real ingest. Every count
on screen is compared with the ledger's ingest_log, submissions and rejected
tables, read by hand-written SQL.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import sys
import tempfile
from datetime import date, datetime, time, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from ledger import store, uploads
from ledger.ingest import ingest_paths
from ledger.ui import code_span

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
CASES = Path(__file__).resolve().parent / "data" / "cases"
MARKUP_NAME = "<img src=x onerror=alert(1)>../../etc/passwd.jsonl"


def query(ledger: Path, sql: str, parameters: list | tuple = ()) -> list[tuple]:
    with duckdb.connect(str(ledger), read_only=True) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        return connection.execute(sql, list(parameters)).fetchall()


def upload_folders() -> set[str]:
    return {path.name for path in Path(tempfile.gettempdir()).glob("replay-ledger-upload-*")}


def open_page(at: AppTest, **params) -> AppTest:
    at.query_params.clear()
    at.query_params.update(params)
    at.switch_page("pages/ingest.py")
    at.run()
    assert not at.exception, [error.value for error in at.exception]
    return at


def submit_upload(at: AppTest, files: list[tuple[str, bytes]], *, deployment: str | None = None,
                  strict: bool = False) -> AppTest:
    open_page(at)
    at.file_uploader(key="ingest_files").set_value([(name, data, "application/octet-stream") for name, data in files])
    if deployment is not None:
        at.text_input(key="ingest_new_deployment").set_value(deployment)
    at.toggle(key="ingest_strict").set_value(strict)
    next(button for button in at.button if button.label == "Ingest").click().run()
    assert not at.exception, [error.value for error in at.exception]
    return at


def cleaned(row: tuple) -> tuple:
    """Return a table row with empty cells (None, NaN or "") as None, as the ledger stores them."""
    return tuple(None if value is None or value == "" or (isinstance(value, float) and pd.isna(value)) else value
                 for value in row)


def metrics(at: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


# The columns that tell the page's tables apart (AppTest does not expose a dataframe's key).
TABLE_COLUMNS = {
    "ingest_report_files": ["File", "Shape", "gzip", "Read", "Ingested", "Duplicates", "Rejected", "Dropped (strict)"],
    "ingest_report_rejected": ["Location", "Field", "Value", "Reason"],
    "ingest_skipped": ["File", "Reason"],
    "ingest_markers": ["Deployed (Europe/Berlin)", "Deployment", "Version", "Note", "Added by"],
    "ingest_history": ["Ingest", "Finished (Europe/Berlin)", "Origin", "Sources", "Read", "Ingested", "Duplicates",
                       "Rejected", "Seconds"],
    "ingest_detail_files": ["File", "Shape", "gzip", "Read", "Rejected", "Dropped (strict)"],
    "ingest_detail_rejected": ["Location", "Field", "Value", "Reason", "Record"],
}


def frame(at: AppTest, key: str) -> pd.DataFrame:
    for element in at.dataframe:
        if list(element.value.columns) == TABLE_COLUMNS[key]:
            return element.value
    raise AssertionError(f"no table like {key}: {[list(element.value.columns) for element in at.dataframe]}")


@pytest.fixture
def ingest_ledger(sample_ledger_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ingest.duckdb"
    shutil.copyfile(sample_ledger_template, path)
    monkeypatch.setenv(store.LEDGER_ENV, str(path))
    return path


@pytest.fixture
def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.context["timezone"] = "Europe/Berlin"
    return at


def last_ingest(ledger: Path) -> tuple:
    return query(ledger, "SELECT ingest_id, origin, sources, records_read, ingested, duplicates, rejected "
                         "FROM ingest_log ORDER BY ingest_id DESC LIMIT 1")[0]


# ---------------------------------------------------------------------------
# Uploads through the page


def test_ingest_upload_report_matches_ledger(app: AppTest, ingest_ledger: Path):
    malformed = (CASES / "c06_malformed.jsonl").read_bytes()
    money = gzip.compress((CASES / "c04_money.jsonl").read_bytes())
    sdk_post = (CASES / "c10_sdk_post_run-demo-1.json").read_bytes()
    before = upload_folders()

    submit_upload(app, [(MARKUP_NAME, malformed), ("money-export.bin", money), ("c10_sdk_post_run-demo-1.json",
                                                                                 sdk_post)])
    ingest_id, origin, sources, read, ingested, duplicates, rejected = last_ingest(ingest_ledger)

    assert origin == "upload"
    assert sources == [MARKUP_NAME, "money-export.bin", "c10_sdk_post_run-demo-1.json"]
    assert (read, ingested, duplicates, rejected) == (17, 14, 0, 3)
    assert metrics(app) == {"Files": "3", "Records read": "17", "Ingested": "14", "Duplicates": "0", "Rejected": "3"}
    assert [subheader.value for subheader in app.subheader] == [f"Report of ingest #{ingest_id}"]
    assert upload_folders() == before


def test_ingest_upload_files_table(app: AppTest, ingest_ledger: Path):
    money = gzip.compress((CASES / "c04_money.jsonl").read_bytes())
    submit_upload(app, [(MARKUP_NAME, (CASES / "c06_malformed.jsonl").read_bytes()), ("money-export.bin", money)])
    files = frame(app, "ingest_report_files")

    assert list(files["File"]) == [MARKUP_NAME, "money-export.bin"]
    assert list(files["Shape"]) == ["JSON Lines", "JSON Lines"]
    assert list(files["gzip"]) == [False, True]
    assert list(files["Read"]) == [5, 11]
    assert list(files["Ingested"]) == [2, 11]
    assert list(files["Rejected"]) == [3, 0]


def test_ingest_upload_rejections_match_ledger(app: AppTest, ingest_ledger: Path):
    submit_upload(app, [(MARKUP_NAME, (CASES / "c06_malformed.jsonl").read_bytes())])
    ingest_id = last_ingest(ingest_ledger)[0]
    expected = query(ingest_ledger, "SELECT location, field, value, reason FROM rejected WHERE ingest_id = ? "
                                    "ORDER BY rowid", [ingest_id])
    shown = frame(app, "ingest_report_rejected")

    assert [location for location, *_ in expected] == [f"{MARKUP_NAME}:{line}" for line in (2, 3, 5)]
    assert [cleaned(row) for row in shown.itertuples(index=False)] == [tuple(row) for row in expected]
    assert [button.label for button in app.get("download_button")] == ["Download rejected records (CSV)"]


def test_ingest_upload_name_never_a_path(app: AppTest, ingest_ledger: Path, tmp_path: Path):
    decoy = tmp_path.parent / "etc" / "passwd.jsonl"
    submit_upload(app, [(MARKUP_NAME, (CASES / "c04_money.jsonl").read_bytes())])
    locations = query(ingest_ledger, "SELECT DISTINCT location FROM submissions WHERE ingest_id = ?",
                      [last_ingest(ingest_ledger)[0]])

    assert not decoy.exists()
    assert all(location.startswith(MARKUP_NAME + ":") for (location,) in locations)
    assert not any("replay-ledger-upload-" in location for (location,) in locations)


def test_ingest_upload_run_id_from_display_name(app: AppTest, ingest_ledger: Path):
    submit_upload(app, [("c10_sdk_post_run-demo-1.json", (CASES / "c10_sdk_post_run-demo-1.json").read_bytes())])
    rows = query(ingest_ledger, "SELECT run_id, status, actions_replayed, actions_total, divergences_detected, "
                                "cost_savings::VARCHAR FROM submissions WHERE ingest_id = ?",
                 [last_ingest(ingest_ledger)[0]])

    assert rows == [("run-demo-1", "partial", 3, 3, 2, "0.090000")]


def test_ingest_upload_typed_deployment(app: AppTest, ingest_ledger: Path):
    submit_upload(app, [("money.jsonl", (CASES / "c04_money.jsonl").read_bytes())], deployment="team-new")
    rows = query(ingest_ledger, "SELECT DISTINCT deployment FROM submissions WHERE ingest_id = ?",
                 [last_ingest(ingest_ledger)[0]])

    assert rows == [("team-new",)]


def test_ingest_upload_listed_deployment(app: AppTest, ingest_ledger: Path):
    open_page(app)
    app.file_uploader(key="ingest_files").set_value(
        [("money.jsonl", (CASES / "c04_money.jsonl").read_bytes(), "application/json")])
    app.selectbox(key="ingest_deployment").set_value("staging")
    next(button for button in app.button if button.label == "Ingest").click().run()
    rows = query(ingest_ledger, "SELECT DISTINCT deployment FROM submissions WHERE ingest_id = ?",
                 [last_ingest(ingest_ledger)[0]])

    assert rows == [("staging",)]


def test_ingest_upload_invalid_deployment(app: AppTest, ingest_ledger: Path):
    before = last_ingest(ingest_ledger)[0]
    long_name = "d" * 200
    submit_upload(app, [("money.jsonl", (CASES / "c04_money.jsonl").read_bytes())], deployment=long_name)

    assert last_ingest(ingest_ledger)[0] == before
    assert [error.value for error in app.error] == [
        f"The deployment {code_span(long_name)} is invalid: {code_span('is longer than 128 characters')}. "
        "Type a shorter name without control characters, or pick one from the list."]


def test_ingest_upload_strict_drops_file(app: AppTest, ingest_ledger: Path):
    submit_upload(app, [("bad.jsonl", (CASES / "c06_malformed.jsonl").read_bytes())], strict=True)
    ingest_id, *_ = last_ingest(ingest_ledger)
    stored = query(ingest_ledger, "SELECT count(*) FROM submissions WHERE ingest_id = ?", [ingest_id])[0][0]

    assert stored == 0
    assert list(frame(app, "ingest_report_files")["Dropped (strict)"]) == [2]
    assert metrics(app)["Ingested"] == "0"


def test_ingest_upload_duplicates_counted(app: AppTest, ingest_ledger: Path):
    data = (CASES / "c04_money.jsonl").read_bytes()
    submit_upload(app, [("money.jsonl", data)])
    submit_upload(app, [("money-again.jsonl", data)])

    assert last_ingest(ingest_ledger)[4:6] == (0, 11)
    assert metrics(app)["Duplicates"] == "11"


def test_ingest_upload_over_cap_skipped(app: AppTest, ingest_ledger: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(uploads.MAX_UPLOAD_MB_ENV, "1")
    before = last_ingest(ingest_ledger)[0]
    big = b"x" * 1_200_000
    submit_upload(app, [("huge.jsonl", big)])
    skipped = frame(app, "ingest_skipped")

    assert last_ingest(ingest_ledger)[0] == before
    assert list(skipped["File"]) == ["huge.jsonl"]
    assert list(skipped["Reason"]) == [
        "the file is larger than the upload limit of 1.0 MB; split it, or ingest it with `replay-ledger ingest PATH`"]


def test_ingest_upload_over_cap_others_ingested(app: AppTest, ingest_ledger: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(uploads.MAX_UPLOAD_MB_ENV, "1")
    submit_upload(app, [("huge.jsonl", b"x" * 1_200_000), ("money.jsonl", (CASES / "c04_money.jsonl").read_bytes())])
    _, _, sources, read, ingested, *_ = last_ingest(ingest_ledger)

    assert sources == ["money.jsonl"]
    assert (read, ingested) == (11, 11)
    assert list(frame(app, "ingest_skipped")["File"]) == ["huge.jsonl"]


def test_ingest_no_files_warning(app: AppTest, ingest_ledger: Path):
    open_page(app)
    next(button for button in app.button if button.label == "Ingest").click().run()

    assert [warning.value for warning in app.warning] == ["Choose one or more files first, then press Ingest."]


# ---------------------------------------------------------------------------
# Deploy markers


def add_marker(at: AppTest, deployment: str | None, version: str, day, at_time, note: str = "") -> AppTest:
    """Fill the shared deploy marker form on the Ingest page and submit it."""
    open_page(at, ingest_tab="Deploy markers")
    if deployment is not None:
        at.selectbox(key="ingest_deploy_deployment").set_value(deployment)
    at.text_input(key="ingest_deploy_version").set_value(version)
    at.date_input(key="ingest_deploy_date").set_value(day)
    at.time_input(key="ingest_deploy_time").set_value(at_time)
    at.text_input(key="ingest_deploy_note").set_value(note)
    next(button for button in at.button if button.label == "Add marker").click().run()
    assert not at.exception, [error.value for error in at.exception]
    return at


def test_ingest_deploy_marker_added_in_viewer_zone(app: AppTest, ingest_ledger: Path):
    add_marker(app, "prod-eu", "v9.9.9", date(2026, 7, 1), time(0, 30), note="<b>note</b>")
    rows = query(ingest_ledger, "SELECT deployed_at, note, origin FROM deploys WHERE version = 'v9.9.9'")
    berlin = datetime(2026, 7, 1, 0, 30, tzinfo=ZoneInfo("Europe/Berlin"))

    assert rows == [(berlin.astimezone(timezone.utc), "<b>note</b>", "app")]
    assert [message.value for message in app.success] == [
        f"Deploy marker {code_span('prod-eu')} {code_span('v9.9.9')} at 2026-07-01 00:30:00 Europe/Berlin added."]
    assert "<b>note</b>" in list(frame(app, "ingest_markers")["Note"])


def test_ingest_deploy_marker_twice_already_present(app: AppTest, ingest_ledger: Path):
    add_marker(app, "staging", "v2", date(2026, 7, 2), time(12, 0))
    add_marker(app, "staging", "v2", date(2026, 7, 2), time(12, 0))

    assert query(ingest_ledger, "SELECT count(*) FROM deploys WHERE version = 'v2' AND deployment = 'staging'") \
        == [(1,)]
    assert [message.value for message in app.info] == [
        f"Deploy marker {code_span('staging')} {code_span('v2')} at 2026-07-02 12:00:00 Europe/Berlin "
        "was already in the ledger."]


def test_ingest_deploy_marker_missing_version(app: AppTest, ingest_ledger: Path):
    before = query(ingest_ledger, "SELECT count(*) FROM deploys")
    add_marker(app, "staging", "   ", date(2026, 7, 2), time(12, 0))

    assert query(ingest_ledger, "SELECT count(*) FROM deploys") == before
    assert [error.value for error in app.error] == [
        "The marker is invalid: version: must be non-empty text, got '   '."]


def test_ingest_deploy_marker_missing_deployment(app: AppTest, ingest_ledger: Path):
    before = query(ingest_ledger, "SELECT count(*) FROM deploys")
    add_marker(app, None, "v1", date(2026, 7, 2), time(12, 0))

    assert query(ingest_ledger, "SELECT count(*) FROM deploys") == before
    assert [error.value for error in app.error] == ["Pick or type the deployment that was deployed."]


# ---------------------------------------------------------------------------
# History


@pytest.fixture
def history_ledger(ingest_ledger: Path) -> Path:
    ingest_paths(ingest_ledger, [str(CASES / "c07_invalid.jsonl")], deployment="case-c07")
    ingest_paths(ingest_ledger, [str(CASES / "c06_malformed.jsonl"), str(CASES / "c04_money.jsonl")])
    return ingest_ledger


def test_ingest_history_matches_ingest_log(app: AppTest, history_ledger: Path):
    open_page(app, ingest_tab="History")
    shown = frame(app, "ingest_history")
    expected = query(history_ledger, "SELECT ingest_id, origin, records_read, ingested, duplicates, rejected "
                                     "FROM ingest_log ORDER BY ingest_id DESC LIMIT 25")

    assert [tuple(row) for row in shown[["Ingest", "Origin", "Read", "Ingested", "Duplicates", "Rejected"]]
            .itertuples(index=False)] == expected
    assert shown["Sources"][0] == f"{CASES / 'c06_malformed.jsonl'} and 1 more"


def test_ingest_history_detail_from_url(app: AppTest, history_ledger: Path):
    ingest_id = query(history_ledger, "SELECT ingest_id FROM ingest_log WHERE sources[1] LIKE '%c07_invalid%'")[0][0]
    open_page(app, ingest_tab="History", ingest=str(ingest_id))
    expected = query(history_ledger, "SELECT location, field, value, reason, record FROM rejected "
                                     "WHERE ingest_id = ? ORDER BY rowid", [ingest_id])
    shown = frame(app, "ingest_detail_rejected")
    read, ingested, duplicates, rejected = query(
        history_ledger, "SELECT records_read, ingested, duplicates, rejected FROM ingest_log WHERE ingest_id = ?",
        [ingest_id])[0]

    assert metrics(app) == {"Records read": f"{read:,}", "Ingested": f"{ingested:,}",
                            "Duplicates": f"{duplicates:,}", "Rejected": f"{rejected:,}"}
    assert len(shown) == len(expected) == rejected
    assert [cleaned(row) for row in shown.itertuples(index=False)] == [tuple(row) for row in expected]
    files = frame(app, "ingest_detail_files")
    assert list(files["File"]) == [str(CASES / "c07_invalid.jsonl")]
    assert list(files["Read"]) == [read]
    labels = [button.label for button in app.get("download_button")]
    assert labels == [f"Download all {query(history_ledger, 'SELECT count(*) FROM rejected')[0][0]:,} rejected "
                      "records (CSV)", "Download these rejected records (CSV)"]


def test_ingest_history_unknown_ingest_in_url(app: AppTest, history_ledger: Path):
    open_page(app, ingest_tab="History", ingest="99999")

    assert [warning.value for warning in app.warning] == ["No ingest #99999 is in this ledger."]


# ---------------------------------------------------------------------------
# Upload handling without the page


def test_uploads_display_name_cleaned():
    assert uploads.display_name("a\x00b\nc.jsonl", 1) == "a?b?c.jsonl"
    assert uploads.display_name("", 3) == "upload-3"
    assert uploads.display_name(None, 4) == "upload-4"
    assert len(uploads.display_name("x" * 500, 1)) == uploads.DISPLAY_NAME_MAX


def test_uploads_saved_under_made_up_names(tmp_path: Path):
    saved = uploads.save_uploads(
        [("../../evil.json", io.BytesIO(b"{}")), ("../../evil.json", io.BytesIO(b"[]"))], directory=tmp_path)
    try:
        assert [source.name for source in saved.sources] == ["../../evil.json", "../../evil.json (2)"]
        assert [source.path.name for source in saved.sources] == ["0001.upload", "0002.upload"]
        assert all(source.path.parent == saved.folder for source in saved.sources)
        assert saved.folder.parent == tmp_path
        assert not (tmp_path.parent / "evil.json").exists()
    finally:
        saved.remove()
    assert not saved.folder.exists()


def test_uploads_gzip_bomb_skipped(tmp_path: Path):
    bomb = gzip.compress(b"\n" * 3_000_000)
    saved = uploads.save_uploads([("bomb.jsonl.gz", io.BytesIO(bomb))], max_bytes=100_000,
                                 max_expanded_bytes=2_000_000, directory=tmp_path)

    assert len(bomb) < 100_000
    assert saved.sources == []
    assert [str(error) for error in saved.skipped] == [
        "bomb.jsonl.gz: skipped, the gzip data expands to more than 2.0 MB; "
        "split it, or ingest it with `replay-ledger ingest PATH`"]
    saved.remove()


def test_uploads_gzip_bomb_in_second_member_skipped(tmp_path: Path):
    members = gzip.compress(b"{}\n") + gzip.compress(b"\n" * 3_000_000)
    saved = uploads.save_uploads([("two.gz", io.BytesIO(members))], max_bytes=100_000,
                                 max_expanded_bytes=2_000_000, directory=tmp_path)

    assert saved.sources == []
    assert len(saved.skipped) == 1
    saved.remove()


def test_uploads_gzip_under_limit_kept(tmp_path: Path):
    data = gzip.compress((CASES / "c04_money.jsonl").read_bytes())
    saved = uploads.save_uploads([("m.bin", io.BytesIO(data))], max_bytes=100_000, directory=tmp_path)

    assert [source.compressed for source in saved.sources] == [True]
    assert saved.sources[0].path.read_bytes() == data
    saved.remove()


def test_uploads_corrupt_gzip_reported_by_ingest(ledger: Path):
    corrupt = gzip.compress((CASES / "c04_money.jsonl").read_bytes())[:40] + b"\x00garbage"
    outcome = uploads.ingest_uploads(ledger, [("broken.jsonl.gz", io.BytesIO(corrupt))])

    assert outcome.skipped == []
    assert outcome.report.rejected >= 1
    assert outcome.report.files[0].rejected[0].location.startswith("broken.jsonl.gz")


def test_uploads_max_upload_env_invalid(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(uploads.MAX_UPLOAD_MB_ENV, "lots")

    with pytest.raises(ValueError) as raised:
        uploads.max_upload_bytes()

    assert str(raised.value) == "REPLAY_LEDGER_MAX_UPLOAD_MB='lots' is not a whole number of megabytes from 1 up"


def test_uploads_ingest_all_skipped_writes_nothing(ledger: Path):
    outcome = uploads.ingest_uploads(ledger, [("big.json", io.BytesIO(b"[" + b" " * 2000 + b"]"))], max_bytes=1000)

    assert outcome.report.files == []
    assert [error.name for error in outcome.skipped] == ["big.json"]
    assert not ledger.exists()


def test_uploads_json_rows_roundtrip(ledger: Path):
    rows = [{"run_id": f"r{i}", "status": "success", "actions_replayed": 1, "actions_total": 1,
             "divergences_detected": 0, "divergences": [], "cost_savings": 0.1,
             "submitted_at": "2026-03-01T10:00:00Z"} for i in range(3)]
    outcome = uploads.ingest_uploads(ledger, [("rows.json", io.BytesIO(json.dumps(rows).encode()))])

    assert outcome.report.ingested == 3
    assert query(ledger, "SELECT sum(cost_savings)::VARCHAR FROM submissions") == [("0.300000",)]


def test_ingest_invalid_upload_limit_setting(app: AppTest, ingest_ledger: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(uploads.MAX_UPLOAD_MB_ENV, "0")
    open_page(app)

    assert [error.value for error in app.error] == [
        "Uploads are off until the setting is fixed: "
        f"{code_span('REPLAY_LEDGER_MAX_UPLOAD_MB=' + repr('0') + ' is not a whole number of megabytes from 1 up', 200)}"
        ". Restart the app after changing it."]
    assert not app.file_uploader


def test_ingest_report_names_deployment_and_mode(app: AppTest, ingest_ledger: Path):
    submit_upload(app, [("money.jsonl", (CASES / "c04_money.jsonl").read_bytes())], deployment="<i>team</i>",
                  strict=True)
    captions = [caption.value for caption in app.caption]

    assert any(text.startswith(f"Deployment: {code_span('<i>team</i>')}. Strict: on. Took ") for text in captions)


def test_ingest_busy_ledger_queues_batch(app: AppTest, ingest_ledger: Path):
    open_page(app)  # the page's reads are cached from here on, so the rerun below opens the ledger only to merge
    app.file_uploader(key="ingest_files").set_value(
        [("money.jsonl", (CASES / "c04_money.jsonl").read_bytes(), "application/json")])
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
                               "time.sleep(float(sys.argv[2]))", str(ingest_ledger), "30"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        next(button for button in app.button if button.label == "Ingest").click().run()
        warnings = [warning.value for warning in app.warning]
        queued = store.inbox_batches(ingest_ledger)
    finally:
        holder.kill()
        holder.wait()

    assert [subheader.value for subheader in app.subheader] == ["Report"]
    assert any(text.startswith("The ledger was busy with another writer, so this batch waits in the ledger's inbox.")
               for text in warnings)
    assert len(queued) == 1
    assert store.drain_inbox(ingest_ledger) == 1
    assert query(ingest_ledger, "SELECT count(*) FROM submissions WHERE location LIKE 'money.jsonl:%'") == [(11,)]
