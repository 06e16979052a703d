"""Tests for ledger.readers: every input shape, with each record's location, end to end where counts matter."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from ledger import store
from ledger.ingest import ingest_paths
from ledger.readers import SourceError, SourceFile, find_sources, read_records, run_id_from_name
from tests.records import record

ROOT = Path(__file__).resolve().parent.parent


def sdk_body() -> dict:
    """An SDK result body: no run id, no timestamp."""
    return {"status": "partial", "actions_replayed": 2, "actions_total": 3, "divergences_detected": 0,
            "divergences": [], "cost_savings": 0.5}


def json_lines(records: list[dict], newline: str = "\n") -> str:
    return "".join(json.dumps(item) + newline for item in records)


def read_all(path: Path) -> tuple[SourceFile, list]:
    source = SourceFile(name=str(path), path=path)
    return source, list(read_records(source))


def stored_run_ids(ledger: Path) -> list[str]:
    with store.reading(ledger) as connection:
        return [row[0] for row in connection.execute("SELECT run_id FROM submissions ORDER BY run_id").fetchall()]


def replay_ledger_command() -> list[str]:
    """The installed console script, else the module run by this interpreter."""
    script = Path(sys.executable).with_name("replay-ledger")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ledger.cli"]


# --- file names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("x_run-demo-1.json", "run-demo-1"),
        ("c10_sdk_post_run-demo-1.json", "run-demo-1"),
        ("prod-us/20260902_run-6f63c0622bbd.json", "run-6f63c0622bbd"),
        ("results_run-abc.json.gz", "run-abc"),
        ("run-7.json", "run-7"),
        ("results.json", None),
        ("rerun.json", None),
    ],
)
def test_run_id_from_name(name, expected):
    assert run_id_from_name(name) == expected


# --- single objects, arrays, envelopes ----------------------------------------------------------


def test_reader_single_object_run_id_from_name(tmp_path):
    path = tmp_path / "x_run-demo-1.json"
    path.write_text(json.dumps(sdk_body(), indent=2))
    source, records = read_all(path)
    assert source.shape == "object"
    assert len(records) == 1
    assert records[0].location == str(path)
    assert records[0].run_id_hint == "run-demo-1"
    assert records[0].value["status"] == "partial"


def test_ingest_single_object_run_id_from_name(tmp_path, ledger):
    path = tmp_path / "x_run-demo-1.json"
    path.write_text(json.dumps(sdk_body()))
    report = ingest_paths(ledger, [str(path)])
    assert (report.read, report.ingested, report.rejected) == (1, 1, 0)
    assert stored_run_ids(ledger) == ["run-demo-1"]


def test_ingest_single_object_run_id_inside(tmp_path, ledger):
    path = tmp_path / "x_run-demo-1.json"
    path.write_text(json.dumps(record(5)))
    ingest_paths(ledger, [str(path)])
    assert stored_run_ids(ledger) == ["run-5"]


def test_reader_array_locations(tmp_path):
    path = tmp_path / "page.json"
    path.write_text(json.dumps([record(1), record(2), record(3)]))
    source, records = read_all(path)
    assert source.shape == "array"
    assert [item.location for item in records] == [f"{path}#/0", f"{path}#/1", f"{path}#/2"]
    assert [item.value["run_id"] for item in records] == ["run-1", "run-2", "run-3"]


@pytest.mark.parametrize("key", ["items", "results", "data", "submissions"])
def test_reader_envelope_keys(tmp_path, key):
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"total": 2, "skip": 0, "limit": 200, key: [record(1), record(2)]}))
    source, records = read_all(path)
    assert source.shape == "envelope"
    assert [item.location for item in records] == [f"{path}#/{key}/0", f"{path}#/{key}/1"]
    assert source.warnings == []


def test_ingest_envelope_keys_every_record(tmp_path, ledger):
    for key in ("items", "results", "data", "submissions"):
        (tmp_path / f"{key}.json").write_text(json.dumps({key: [record(hash(key) % 1000, run_id=f"{key}-1")]}))
    report = ingest_paths(ledger, [str(tmp_path)])
    assert report.ingested == 4
    assert stored_run_ids(ledger) == ["data-1", "items-1", "results-1", "submissions-1"]


def test_reader_envelope_total_mismatch_warns(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"items": [record(1)], "total": 3, "skip": 0, "limit": 200}))
    source, records = read_all(path)
    assert len(records) == 1
    assert source.warnings == [
        f"{path}: the envelope announced total 3 (skip 0, limit 200), so 3 records on this page, "
        "but it held 1; another page may be missing"
    ]


def test_ingest_envelope_total_mismatch_still_ingests(tmp_path, ledger):
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"items": [record(1)], "total": 3}))
    report = ingest_paths(ledger, [str(path)])
    assert report.ingested == 1
    assert report.exit_code == 0
    assert any("announced total 3" in warning for warning in report.files[0].warnings)


def test_reader_envelope_last_page_no_warning(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"items": [record(5)], "total": 5, "skip": 4, "limit": 2}))
    source, _ = read_all(path)
    assert source.warnings == []


# --- JSON Lines ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson"])
def test_reader_json_lines_locations(tmp_path, suffix):
    path = tmp_path / f"replays{suffix}"
    path.write_text(json.dumps(record(1)) + "\n\n" + json.dumps(record(3)) + "\n")
    source, records = read_all(path)
    assert source.shape == "json-lines"
    assert [item.location for item in records] == [f"{path}:1", f"{path}:3"]
    assert json.loads(records[1].text)["run_id"] == "run-3"


def test_reader_json_lines_named_json(tmp_path):
    path = tmp_path / "replays.json"
    path.write_text(json_lines([record(1), record(2)]))
    source, records = read_all(path)
    assert source.shape == "json-lines"
    assert [item.location for item in records] == [f"{path}:1", f"{path}:2"]


def test_ingest_json_lines_long_first_line_named_json(tmp_path, ledger):
    path = tmp_path / "replays.json"
    path.write_text(json_lines([record(1, notes="x" * 100_000), record(2), record(3)]))
    report = ingest_paths(ledger, [str(path)])
    assert report.files[0].shape == "json-lines"
    assert (report.read, report.ingested, report.rejected) == (3, 3, 0)
    assert stored_run_ids(ledger) == ["run-1", "run-2", "run-3"]


def test_ingest_crlf_line_endings(tmp_path, ledger):
    lines = tmp_path / "crlf.jsonl"
    lines.write_bytes(json_lines([record(1), record(2)], newline="\r\n").encode())
    document = tmp_path / "crlf.json"
    document.write_bytes(json.dumps({"items": [record(3)]}, indent=2).replace("\n", "\r\n").encode())
    report = ingest_paths(ledger, [str(lines), str(document)])
    assert (report.read, report.ingested, report.rejected) == (3, 3, 0)
    assert stored_run_ids(ledger) == ["run-1", "run-2", "run-3"]


def test_ingest_byte_order_mark(tmp_path, ledger):
    bom = b"\xef\xbb\xbf"
    (tmp_path / "bom.jsonl").write_bytes(bom + json_lines([record(1), record(2)]).encode())
    (tmp_path / "bom_array.json").write_bytes(bom + json.dumps([record(3)]).encode())
    (tmp_path / "bom_run-4.json").write_bytes(bom + json.dumps(sdk_body()).encode())
    report = ingest_paths(ledger, [str(tmp_path)])
    assert (report.read, report.ingested, report.rejected) == (4, 4, 0)
    assert stored_run_ids(ledger) == ["run-1", "run-2", "run-3", "run-4"]


# --- gzip ------------------------------------------------------------------------------------------


def test_reader_gzip_with_misleading_name(tmp_path):
    path = tmp_path / "data.json"
    path.write_bytes(gzip.compress(json_lines([record(1), record(2)]).encode()))
    source, records = read_all(path)
    assert source.compressed is True
    assert source.shape == "json-lines"
    assert [item.location for item in records] == [f"{path}:1", f"{path}:2"]


def test_ingest_gzip_envelope(tmp_path, ledger):
    path = tmp_path / "history.gz"
    path.write_bytes(gzip.compress(json.dumps({"items": [record(1), record(2)], "total": 2}).encode()))
    report = ingest_paths(ledger, [str(path)])
    assert report.files[0].compressed is True
    assert report.files[0].shape == "envelope"
    assert report.ingested == 2
    assert stored_run_ids(ledger) == ["run-1", "run-2"]


def test_ingest_gzip_json_lines_suffix(tmp_path, ledger):
    path = tmp_path / "archive.jsonl.gz"
    path.write_bytes(gzip.compress(json_lines([record(1), record(2), record(3)]).encode()))
    report = ingest_paths(ledger, [str(path)])
    assert report.ingested == 3


@pytest.mark.parametrize("records", [200, 8_000, 60_000], ids=["small", "over-1-mib", "over-8-mib"])
def test_ingest_gzip_truncated_keeps_earlier_lines(tmp_path, ledger, records):
    packed = gzip.compress(json_lines([record(number) for number in range(records)]).encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(packed[: len(packed) - 40])
    decodable = zlib.decompressobj(wbits=31).decompress(path.read_bytes())
    whole_lines = decodable.count(b"\n")
    assert 0 < whole_lines < records
    report = ingest_paths(ledger, [str(path)])
    rejected = report.files[0].rejected
    assert [item.location for item in rejected if "gzip" in item.reason] == [str(path)]
    # Every whole line before the break is ingested; a cut last line is one more rejection, with its line number.
    assert report.ingested == whole_lines
    assert len(rejected) <= 2
    assert stored_run_ids(ledger)[:1] == ["run-0"]


# --- folders, empty and broken files -------------------------------------------------------------------


def test_find_sources_folder_recursive(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(record(1)))
    (tmp_path / "deep" / "deeper").mkdir(parents=True)
    (tmp_path / "deep" / "deeper" / "b.jsonl").write_text(json_lines([record(2)]))
    (tmp_path / "deep" / "packed").write_bytes(gzip.compress(json_lines([record(3)]).encode()))
    (tmp_path / ".hidden.json").write_text(json.dumps(record(4)))
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "c.json").write_text(json.dumps(record(5)))
    (tmp_path / "deploys.csv").write_text("deployment,version,deployed_at\n")
    (tmp_path / "notes.txt").write_text("hello")
    sources, skipped = find_sources([str(tmp_path)])
    assert sorted(source.path.relative_to(tmp_path).as_posix() for source in sources) == [
        "a.json", "deep/deeper/b.jsonl", "deep/packed",
    ]
    assert sorted(skipped) == [
        f"{tmp_path / 'deploys.csv'}: skipped; CSV files are deploy logs, load them with `replay-ledger deploys import`",
        f"{tmp_path / 'notes.txt'}: skipped, not a JSON, JSON Lines or gzip file",
    ]


def test_ingest_folder_recursive(tmp_path, ledger):
    folder = tmp_path / "in"
    (folder / "deep").mkdir(parents=True)
    (folder / "a.json").write_text(json.dumps([record(1), record(2)]))
    (folder / "deep" / "b.jsonl").write_text(json_lines([record(3)]))
    (folder / ".hidden.jsonl").write_text(json_lines([record(4)]))
    (folder / "deploys.csv").write_text("deployment,version,deployed_at\n")
    report = ingest_paths(ledger, [str(folder)])
    assert report.ingested == 3
    assert stored_run_ids(ledger) == ["run-1", "run-2", "run-3"]
    assert report.skipped == [
        f"{folder / 'deploys.csv'}: skipped; CSV files are deploy logs, load them with `replay-ledger deploys import`"
    ]


def test_find_sources_missing_path():
    with pytest.raises(SourceError) as caught:
        find_sources(["/no/such/replays.json"])
    assert str(caught.value) == "/no/such/replays.json: no such file or folder; check the path"


@pytest.mark.parametrize("content", [b"", b"  \n\n", b"\xef\xbb\xbf"], ids=["empty", "blank", "bom-only"])
def test_ingest_empty_file(tmp_path, ledger, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    report = ingest_paths(ledger, [str(path)])
    assert (report.read, report.ingested, report.rejected) == (0, 0, 0)
    assert report.files[0].shape == "empty"
    assert report.files[0].warnings == [f"{path}: the file is empty"]
    assert report.exit_code == 0


def test_ingest_not_json(tmp_path, ledger):
    path = tmp_path / "notes.json"
    path.write_text("hello, world\n")
    report = ingest_paths(ledger, [str(path)])
    assert report.ingested == 0
    assert [item.location for item in report.files[0].rejected] == [str(path)]
    assert report.files[0].rejected[0].reason == (
        "does not start like JSON (first character 'h'); give a JSON, JSON Lines or gzip file"
    )


def test_named_csv_file_rejected_whole(tmp_path):
    path = tmp_path / "deploys.csv"
    path.write_text("deployment,version,deployed_at\nprod,1.0,2026-03-01T00:00:00Z\n")
    with pytest.raises(SourceError) as raised:
        find_sources([str(path)])
    assert str(raised.value) == (
        f"{path}: is a CSV file, and CSV files are deploy logs; load it with `replay-ledger deploys import {path}`"
    )


def test_ingest_truncated_array(tmp_path, ledger):
    path = tmp_path / "cut.json"
    text = json.dumps([record(1), record(2), record(3)])
    path.write_text(text[: text.index('"run-3"') + 4])
    report = ingest_paths(ledger, [str(path)])
    assert report.ingested == 2
    assert stored_run_ids(ledger) == ["run-1", "run-2"]
    rejected = report.files[0].rejected
    assert len(rejected) == 1
    assert rejected[0].location == f"{path}#/2"
    assert rejected[0].reason.startswith("invalid JSON after 2 records: ")
    assert rejected[0].reason.endswith("; the records before this point were read")
    assert "\n" not in rejected[0].reason


def test_ingest_truncated_envelope(tmp_path, ledger):
    path = tmp_path / "cut.json"
    text = json.dumps({"items": [record(1), record(2)], "total": 2})
    path.write_text(text[: text.index('"run-2"')])
    report = ingest_paths(ledger, [str(path)])
    assert report.ingested == 1
    assert [item.location for item in report.files[0].rejected] == [f"{path}#/items/1"]


@pytest.mark.parametrize(
    "content",
    [json.dumps(record(1)) + json.dumps(record(2)), json.dumps([record(1)]) + " trailing"],
    ids=["two-objects", "array-then-text"],
)
def test_ingest_data_after_document_rejected(tmp_path, ledger, content):
    path = tmp_path / "joined.json"
    path.write_text(content)
    report = ingest_paths(ledger, [str(path)])
    assert report.ingested == 1
    assert len(report.files[0].rejected) == 1
    assert "after the end of the JSON document" in report.files[0].rejected[0].reason
    assert report.exit_code == 1


def test_ingest_single_object_repeated_key_rejected(tmp_path, ledger):
    path = tmp_path / "x_run-9.json"
    path.write_text('{"status": "success", "status": "failed", "actions_replayed": 1, "actions_total": 1, '
                    '"cost_savings": 0.1}')
    report = ingest_paths(ledger, [str(path)])
    assert report.ingested == 0
    rejection = report.files[0].rejected[0]
    assert (rejection.location, rejection.field) == (str(path), "status")
    assert rejection.reason == "key 'status' appears more than once in the record"


def test_ingest_array_item_repeated_key_rejected(tmp_path, ledger):
    path = tmp_path / "page.json"
    path.write_text('[{"run_id": "a", "run_id": "b", "status": "success", "actions_replayed": 1, '
                    '"actions_total": 1, "cost_savings": 0.1}]')
    report = ingest_paths(ledger, [str(path)])
    assert report.ingested == 0
    assert report.files[0].rejected[0].location == f"{path}#/0"
    assert report.files[0].rejected[0].field == "run_id"


def test_ingest_record_locations_in_rejections(tmp_path, ledger):
    (tmp_path / "lines.jsonl").write_text(json_lines([record(1), record(2, status="done")]))
    (tmp_path / "page.json").write_text(json.dumps({"items": [record(3), record(4, actions_total="9")]}))
    (tmp_path / "list.json").write_text(json.dumps([record(5, cost_savings=-1)]))
    report = ingest_paths(ledger, [str(tmp_path)])
    located = sorted((item.location, item.field) for item in report.files for item in item.rejected)
    assert located == [
        (f"{tmp_path / 'lines.jsonl'}:2", "status"),
        (f"{tmp_path / 'list.json'}#/0", "cost_savings"),
        (f"{tmp_path / 'page.json'}#/items/1", "actions_total"),
    ]


# --- standard input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["json-lines", "envelope", "gzip"])
def test_ingest_standard_input(tmp_path, shape):
    ledger = tmp_path / "stdin.duckdb"
    if shape == "json-lines":
        data = json_lines([record(1), record(2)]).encode()
    elif shape == "envelope":
        data = json.dumps({"items": [record(1), record(2)], "total": 2}).encode()
    else:
        data = gzip.compress(json_lines([record(1), record(2)]).encode())
    result = subprocess.run(
        [*replay_ledger_command(), "ingest", "-", "--db", str(ledger), "--json"],
        input=data, capture_output=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["files"][0]["name"] == "<stdin>"
    assert report["ingested"] == 2
    assert stored_run_ids(ledger) == ["run-1", "run-2"]


def test_ingest_standard_input_rejection_location(tmp_path):
    ledger = tmp_path / "stdin.duckdb"
    data = json_lines([record(1), record(2, status="done")]).encode()
    result = subprocess.run(
        [*replay_ledger_command(), "ingest", "-", "--db", str(ledger), "--json"],
        input=data, capture_output=True, timeout=120,
    )
    assert result.returncode == 1, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["files"][0]["rejected"][0]["location"] == "<stdin>:2"


# --- a single-line export page of about 200 MB -------------------------------------------------------------

BIG_PAGE_RECORDS = 100_000
PEAK_RSS_LIMIT_KIB = 1024 * 1024

_MEASURE_CHILD = """
import resource, subprocess, sys
result = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
sys.stderr.buffer.write(result.stderr[-2000:])
print(result.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def write_big_page(path: Path, count: int) -> int:
    """Write one export envelope on a single line, about 2 kB a record; return its size in bytes."""
    padding = "p" * 1_850
    with path.open("w", encoding="utf-8") as handle:
        handle.write(f'{{"total": {count}, "skip": 0, "limit": {count}, "items": [')
        for number in range(count):
            if number:
                handle.write(",")
            handle.write(json.dumps(record(number, notes=padding, submitted_at=1_772_359_200 + number)))
        handle.write("]}")
    return path.stat().st_size


@pytest.mark.slow
def test_ingest_big_single_line_page_bounded_memory(tmp_path):
    page = tmp_path / "history_page.json"
    size = write_big_page(page, BIG_PAGE_RECORDS)
    assert size > 200 * 1000 * 1000
    assert page.read_bytes().count(b"\n") == 0
    ledger = tmp_path / "big.duckdb"
    # A fresh interpreter runs the ingest, so RUSAGE_CHILDREN covers only that one process.
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE_CHILD, *replay_ledger_command(), "ingest", str(page), "--db", str(ledger),
         "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    returncode, peak_kib = (int(part) for part in result.stdout.split())
    assert returncode == 0, result.stderr
    assert peak_kib < PEAK_RSS_LIMIT_KIB, f"peak RSS {peak_kib / 1024:.0f} MiB"
    with store.reading(ledger) as connection:
        count, distinct, first, last = connection.execute(
            "SELECT count(*), count(DISTINCT run_id), min(run_id), max(run_id) FROM submissions"
        ).fetchone()
    assert count == BIG_PAGE_RECORDS
    assert distinct == BIG_PAGE_RECORDS
    assert (first, last) == ("run-0", "run-99999")


def test_lines_small_chunks_keep_numbers(tmp_path, ledger, monkeypatch):
    """Lines cut across reads and checked in several SQL batches keep their numbers."""
    from ledger import ingest, readers

    monkeypatch.setattr(readers, "CHUNK_BYTES", 100)
    monkeypatch.setattr(ingest, "LINE_BATCH", 3)
    staged_by_sql = []
    check = store.Stage.check_line_batch

    def counting_check(stage, lines, *arguments):
        result = check(stage, lines, *arguments)
        staged_by_sql.append(result[0])
        return result

    monkeypatch.setattr(store.Stage, "check_line_batch", counting_check)
    rows = [json.dumps(record(number)) for number in range(1, 8)]
    text = "\r\n".join(rows[:3]) + "\r\n\n  \n" + "{not json}\n" + "\n".join(rows[3:])
    path = tmp_path / "chunks.jsonl"
    path.write_bytes(text.encode())
    report = ingest_paths(ledger, [str(path)])
    assert (report.read, report.ingested) == (8, 7)
    assert len(staged_by_sql) >= 3
    assert sum(staged_by_sql) == 7
    assert [item.location for item in report.files[0].rejected] == [f"{path}:6"]
    assert stored_run_ids(ledger) == [f"run-{number}" for number in range(1, 8)]
    with store.reading(ledger) as connection:
        locations = dict(connection.execute("SELECT run_id, location FROM submissions").fetchall())
    assert locations["run-1"] == f"{path}:1"
    assert locations["run-4"] == f"{path}:7"
    assert locations["run-7"] == f"{path}:10"
