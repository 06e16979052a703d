"""The Ingest page's views of ingests: the report kept in the session, its headline, the files and history tables.

Pure functions from ingest reports and ingest log entries to plain values and
pandas frames. They call no Streamlit element.
"""

from __future__ import annotations

from datetime import tzinfo

import pandas as pd

from ledger import formatting, uploads
from ledger.ingest import IngestReport
from ledger.queries import ingests

REPORT_REJECTIONS_KEPT = 1_000
SOURCE_PREVIEW_CHARS = 80
SHAPE_LABELS = {
    "json-lines": "JSON Lines", "array": "JSON array", "envelope": "export page", "object": "single record",
    "empty": "empty", "unknown": "unknown",
}


def report_headline(report: IngestReport) -> str:
    """Return the one-line outcome of an upload ingest: its counts and seconds, or that nothing was ingested."""
    if not report.files:
        return "Nothing was ingested"
    return (f"{report.ingested:,} ingested, {report.duplicates:,} duplicates, {report.rejected:,} rejected "
            f"in {report.seconds:.1f} s")


def report_state(report: IngestReport, skipped: list[uploads.UploadRejected], deployment: str | None,
                 strict: bool) -> dict:
    """Return what the report view needs, for the session to keep, with at most a thousand rejections."""
    rejected = [
        (item.name, rejection.location, rejection.field, rejection.value, rejection.reason)
        for item in report.files for rejection in item.rejected
    ]
    return {
        "ingest_id": report.ingest_id,
        "queued": report.queued_in_inbox is not None,
        "files": [
            {"name": item.name, "shape": item.shape, "compressed": item.compressed, "read": item.read,
             "ingested": item.ingested, "duplicates": item.duplicates, "rejected": len(item.rejected),
             "dropped": item.dropped_by_strict}
            for item in report.files
        ],
        "warnings": [(item.name, warning) for item in report.files for warning in item.warnings],
        "skipped": [(error.name, error.reason) for error in skipped],
        "rejected": rejected[:REPORT_REJECTIONS_KEPT],
        "rejected_total": len(rejected),
        "totals": (report.read, report.ingested, report.duplicates, report.rejected),
        "seconds": report.seconds,
        "deployment": deployment,
        "strict": strict,
    }


def files_frame(files: list[dict]) -> pd.DataFrame:
    """Build the table of an ingest's files from dictionaries shaped as in `report_state`. Missing counts stay empty."""
    return pd.DataFrame({
        "File": [item["name"] for item in files],
        "Shape": [SHAPE_LABELS.get(item["shape"], item["shape"]) for item in files],
        "gzip": [item["compressed"] for item in files],
        "Read": [item["read"] for item in files],
        "Ingested": [item.get("ingested") for item in files],
        "Duplicates": [item.get("duplicates") for item in files],
        "Rejected": [item["rejected"] for item in files],
        "Dropped (strict)": [item["dropped"] for item in files],
    })


def history_frame(entries: list[ingests.IngestEntry], zone: tzinfo) -> pd.DataFrame:
    """Build the table of past ingests, with finish times in `zone` and durations in seconds."""
    name = formatting.zone_name(zone)
    return pd.DataFrame({
        "Ingest": [entry.ingest_id for entry in entries],
        f"Finished ({name})": [formatting.timestamp(entry.finished_at, zone) for entry in entries],
        "Origin": [entry.origin for entry in entries],
        "Sources": [sources_text(entry.sources) for entry in entries],
        "Read": [entry.records_read for entry in entries],
        "Ingested": [entry.ingested for entry in entries],
        "Duplicates": [entry.duplicates for entry in entries],
        "Rejected": [entry.rejected for entry in entries],
        "Seconds": [round((entry.finished_at - entry.started_at).total_seconds(), 2) for entry in entries],
    })


def sources_text(sources: tuple[str, ...]) -> str:
    """Return an ingest's first source, cut short, and how many more there are: ``a.jsonl and 2 more``."""
    if not sources:
        return formatting.MISSING
    first = formatting.preview(sources[0], SOURCE_PREVIEW_CHARS)
    return first if len(sources) == 1 else f"{first} and {len(sources) - 1:,} more"


def ingest_label(ingest_id: int, entry: ingests.IngestEntry | None, zone: tzinfo) -> str:
    """Return how the ingest picker lists an ingest: ``#12 · finish time · origin · sources``, or ``#12`` alone."""
    if entry is None:
        return f"#{ingest_id}"
    when = formatting.timestamp(entry.finished_at, zone)
    return f"#{ingest_id} · {when} · {entry.origin} · {sources_text(entry.sources)}"
