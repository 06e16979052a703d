"""The Ingest page's report state, headline and tables, built from hand-made reports and ingest log entries."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ledger import formatting
from ledger.ingest import FileReport, IngestReport, Rejection
from ledger.queries import ingests
from ledger.ui import ingest_tables
from ledger.uploads import UploadRejected

BERLIN = formatting.parse_zone("Europe/Berlin")
FINISHED = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)


def rejection(number: int) -> Rejection:
    return Rejection(location=f"line {number}", field="status", value="done", reason="invalid status")


def two_file_report() -> IngestReport:
    good = FileReport(name="good.jsonl", shape="json-lines", read=5, ingested=4, duplicates=1)
    bad = FileReport(name="bad.json", shape="array", compressed=True, read=3, ingested=1,
                     rejected=[rejection(1), rejection(2)], warnings=["unknown field 'x' kept"])
    return IngestReport(files=[good, bad], ingest_id=7, seconds=1.25)


def entry(ingest_id: int, sources: tuple[str, ...]) -> ingests.IngestEntry:
    return ingests.IngestEntry(ingest_id=ingest_id, started_at=FINISHED - timedelta(seconds=2.345),
                               finished_at=FINISHED, origin="upload", sources=sources, records_read=8,
                               ingested=5, duplicates=1, rejected=2)


def test_report_headline_counts():
    assert ingest_tables.report_headline(two_file_report()) == "5 ingested, 1 duplicates, 2 rejected in 1.2 s"


def test_report_headline_nothing_ingested():
    assert ingest_tables.report_headline(IngestReport()) == "Nothing was ingested"


def test_report_state_totals_and_rows():
    state = ingest_tables.report_state(two_file_report(), [UploadRejected("huge.json", "over 1.0 MB")], "prod", True)

    assert state["ingest_id"] == 7
    assert state["queued"] is False
    assert state["totals"] == (8, 5, 1, 2)
    assert state["rejected"] == [("bad.json", "line 1", "status", "done", "invalid status"),
                                 ("bad.json", "line 2", "status", "done", "invalid status")]
    assert state["rejected_total"] == 2
    assert state["warnings"] == [("bad.json", "unknown field 'x' kept")]
    assert state["skipped"] == [("huge.json", "over 1.0 MB")]
    assert state["files"][1] == {"name": "bad.json", "shape": "array", "compressed": True, "read": 3,
                                 "ingested": 1, "duplicates": 0, "rejected": 2, "dropped": 0}
    assert (state["deployment"], state["strict"], state["seconds"]) == ("prod", True, 1.25)


def test_report_state_rejections_capped():
    many = FileReport(name="many.jsonl", read=1500, rejected=[rejection(n) for n in range(1500)])
    report = IngestReport(files=[many], queued_in_inbox="/tmp/inbox/batch.json")
    state = ingest_tables.report_state(report, [], None, False)

    assert len(state["rejected"]) == ingest_tables.REPORT_REJECTIONS_KEPT
    assert state["rejected"][-1][1] == "line 999"
    assert state["rejected_total"] == 1500
    assert state["queued"] is True


def test_files_frame_labels_and_gaps():
    files = [
        {"name": "a.jsonl", "shape": "envelope", "compressed": False, "read": 2, "ingested": 2, "duplicates": 0,
         "rejected": 0, "dropped": 0},
        {"name": "b.bin", "shape": "odd-shape", "compressed": True, "read": 1, "rejected": 1, "dropped": 1},
    ]
    frame = ingest_tables.files_frame(files)

    assert list(frame.columns) == ["File", "Shape", "gzip", "Read", "Ingested", "Duplicates", "Rejected",
                                   "Dropped (strict)"]
    assert frame["Shape"].tolist() == ["export page", "odd-shape"]
    assert frame["gzip"].tolist() == [False, True]
    assert frame["Ingested"].tolist()[0] == 2
    assert frame["Ingested"].isna().tolist() == [False, True]
    assert frame["Dropped (strict)"].tolist() == [0, 1]


def test_history_frame_in_zone():
    frame = ingest_tables.history_frame([entry(3, ("a.jsonl", "b.jsonl"))], BERLIN)

    assert list(frame.columns) == ["Ingest", "Finished (Europe/Berlin)", "Origin", "Sources", "Read", "Ingested",
                                   "Duplicates", "Rejected", "Seconds"]
    assert frame.iloc[0].tolist() == [3, "2026-03-01 13:00:00", "upload", "a.jsonl and 1 more", 8, 5, 1, 2, 2.35]


def test_sources_text_forms():
    assert ingest_tables.sources_text(()) == "—"
    assert ingest_tables.sources_text(("only.json",)) == "only.json"
    assert ingest_tables.sources_text(("a", *["x"] * 1500)) == "a and 1,500 more"
    assert ingest_tables.sources_text(("d" * 100,)) == "d" * 79 + "…"


def test_ingest_label_forms():
    labelled = ingest_tables.ingest_label(3, entry(3, ("a.jsonl",)), BERLIN)

    assert labelled == "#3 · 2026-03-01 13:00:00 · upload · a.jsonl"
    assert ingest_tables.ingest_label(12, None, BERLIN) == "#12"
