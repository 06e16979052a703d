"""The ``replay-ledger`` command: parse options, call the ledger functions, print results.

Exit codes: 0 everything was ingested (or was a duplicate), 1 some records were
rejected, 2 usage or I/O errors (a missing file, an unwritable destination).
"""

from __future__ import annotations

import csv
import io
import logging
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Optional

import orjson
import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ledger import store
from ledger.export import FORMATS, ExportError, export_file
from ledger.ingest import EXIT_USAGE, IngestReport, ingest_paths
from ledger.models import STATUSES, FieldError, parse_timestamp
from ledger.queries import Filters, Tiles, tiles, tiles_by_deployment
from ledger.readers import SourceError

app = typer.Typer(
    help="Keep AI-agent replay results in a local DuckDB ledger and report what replay saved and where it diverged.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
deploys_app = typer.Typer(help="Record deploys of a deployment, so divergence rates can be compared around them.",
                          no_args_is_help=True)
app.add_typer(deploys_app, name="deploys")

# Without a terminal (pipes, CI logs) rich would wrap tables at 80 columns and split file names.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 200)

DbOption = Annotated[
    Optional[Path],
    typer.Option("--db", help="Ledger file. Default: $REPLAY_LEDGER_DB, else ./replay-ledger.duckdb.", show_default=False),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and the final line.")]
PROGRESS_AFTER_SECONDS = 2.0
REJECTIONS_SHOWN = 50


def fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print an error message to standard error and exit with `code`."""
    err.print(f"error: {message}", markup=False, highlight=False)
    raise typer.Exit(code)


def money(amount: Decimal) -> str:
    """Format US dollars exactly to the cent, or with more decimals below a cent so nothing shows as $0.00."""
    if amount == 0:
        return "$0.00"
    if abs(amount) < Decimal("0.01"):
        return f"${amount.normalize():f}"
    return f"${amount.quantize(Decimal('0.01')):,}"


def parse_time_option(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_timestamp(name, value)[0]
    except FieldError as error:
        fail(f"--{name}: {error.reason}")


class _LazyProgress:
    """A progress line on standard error that appears only once work has run for a few seconds."""

    def __init__(self, quiet: bool):
        self.enabled = not quiet and err.is_terminal
        self.started = time.monotonic()
        self.progress: Progress | None = None
        self.task = None

    def __call__(self, records: int) -> None:
        if not self.enabled or time.monotonic() - self.started < PROGRESS_AFTER_SECONDS:
            return
        if self.progress is None:
            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                     console=err, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("validating")
        self.progress.update(self.task, description=f"validated {records:,} records")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@app.command()
def ingest(
    paths: Annotated[list[str], typer.Argument(help="Files or folders to ingest; '-' reads standard input.")],
    db: DbOption = None,
    deployment: Annotated[
        Optional[str], typer.Option(help="Deployment for every record, over any 'deployment' field in the data.")
    ] = None,
    strict: Annotated[bool, typer.Option(help="Ingest nothing from a file that has any bad record.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON on standard output.")] = False,
    quiet: QuietOption = False,
) -> None:
    """Ingest replay results from JSON, JSON Lines, export pages or gzip files (exit 0 all ingested, 1 some rejected, 2 I/O error)."""
    ledger = store.ledger_path(db)
    progress = _LazyProgress(quiet or json_output)
    try:
        report = ingest_paths(ledger, paths, deployment=deployment, strict=strict, progress=progress)
    except SourceError as error:
        fail(str(error))
    except store.LedgerTooNew as error:
        fail(str(error))
    finally:
        progress.stop()
    if json_output:
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_report(report, ledger, quiet)
    raise typer.Exit(report.exit_code)


def print_report(report: IngestReport, ledger: Path, quiet: bool) -> None:
    """Print an ingest report: a table per file, the rejections, warnings and a summary line."""
    if not quiet:
        table = Table(title=None, show_edge=False)
        for heading in ("file", "shape", "read", "ingested", "duplicates", "rejected"):
            table.add_column(heading, justify="left" if heading in ("file", "shape") else "right")
        for item in report.files:
            shape = item.shape + (" (gzip)" if item.compressed else "")
            table.add_row(item.name, shape, f"{item.read:,}", f"{item.ingested:,}", f"{item.duplicates:,}",
                          f"{len(item.rejected):,}")
        out.print(table, markup=False, highlight=False)
        for note in report.skipped:
            out.print(note, markup=False, highlight=False)
    rejections = [rejection for item in report.files for rejection in item.rejected]
    for rejection in rejections[:REJECTIONS_SHOWN]:
        message = rejection.message()
        if rejection.value and rejection.value not in message:
            message += f" (near: {rejection.value})"
        err.print(f"rejected {message}", markup=False, highlight=False)
    if len(rejections) > REJECTIONS_SHOWN:
        err.print(f"… and {len(rejections) - REJECTIONS_SHOWN:,} more rejected records; "
                  "all are stored in the ledger's rejected table", markup=False, highlight=False)
    if not quiet:
        for item in report.files:
            strict_note = f"{item.name}: strict mode ingested none of its {item.dropped_by_strict:,} valid records"
            if item.dropped_by_strict:
                err.print(strict_note, markup=False, highlight=False)
            _print_warnings(item.warnings)
    summary = (
        f"{report.read:,} records read, {report.ingested:,} ingested, {report.duplicates:,} duplicates, "
        f"{report.rejected:,} rejected"
    )
    if report.queued_in_inbox:
        summary += f"; the ledger was busy, so the batch waits in {report.queued_in_inbox} for the next writer"
    else:
        summary += f" into {ledger}"
    out.print(summary, markup=False, highlight=False)


def _print_warnings(warnings: list[str]) -> None:
    """Print warnings, folding repeats of the same kind into one line with a count."""
    kinds: dict[str, list[str]] = {}
    for warning in warnings:
        location, _, text = warning.partition(": ")
        kinds.setdefault(text or warning, []).append(location)
    for text, locations in kinds.items():
        where = locations[0] if len(locations) == 1 else f"{locations[0]} and {len(locations) - 1:,} more"
        err.print(f"warning: {where}: {text}", markup=False, highlight=False)


def _filters(deployment: list[str] | None, status: list[str] | None, since: str | None, until: str | None) -> Filters:
    for value in status or []:
        if value not in STATUSES:
            fail(f"--status {value!r} is not one of {', '.join(STATUSES)}")
    return Filters(
        start=parse_time_option("since", since),
        end=parse_time_option("until", until),
        deployments=tuple(deployment or ()),
        statuses=tuple(status or ()),
    )


DeploymentFilter = Annotated[Optional[list[str]], typer.Option("--deployment", help="Only this deployment (repeatable).")]
StatusFilter = Annotated[Optional[list[str]], typer.Option("--status", help="Only this status: success, partial or failed (repeatable).")]
SinceOption = Annotated[Optional[str], typer.Option(help="Only submissions at or after this time (ISO-8601 or epoch seconds).")]
UntilOption = Annotated[Optional[str], typer.Option(help="Only submissions before this time (ISO-8601 or epoch seconds).")]


@app.command()
def stats(
    db: DbOption = None,
    by_deployment: Annotated[bool, typer.Option("--by-deployment", help="One row per deployment.")] = False,
    deployment: DeploymentFilter = None,
    status: StatusFilter = None,
    since: SinceOption = None,
    until: UntilOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print the four tiles: submissions, actions replayed, divergences and cost saved."""
    ledger = store.ledger_path(db)
    filters = _filters(deployment, status, since, until)
    if ledger.exists():
        try:
            store.drain_inbox(ledger)
        except store.LedgerBusy:
            err.print("warning: the ledger is busy, so records waiting in its inbox are not counted yet",
                      markup=False, highlight=False)
    try:
        rows = [("all", tiles(ledger, filters))]
        if by_deployment:
            rows += tiles_by_deployment(ledger, filters)
    except store.LedgerMissing as error:
        fail(str(error))
    if json_output:
        data = [{"deployment": name, "submissions": t.submissions, "actions_replayed": t.actions_replayed,
                 "actions_total": t.actions_total, "divergences": t.divergences, "cost_saved": str(t.cost_saved)}
                for name, t in rows]
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = Table(show_edge=False)
    for heading in ("deployment", "submissions", "actions replayed", "divergences", "cost saved"):
        table.add_column(heading, justify="left" if heading == "deployment" else "right")
    for name, values in rows:
        table.add_row(name, *_tile_cells(values))
    out.print(table, markup=False, highlight=False)


def _tile_cells(values: Tiles) -> list[str]:
    return [
        f"{values.submissions:,}",
        f"{values.actions_replayed:,} of {values.actions_total:,}",
        f"{values.divergences:,}",
        money(values.cost_saved),
    ]


@app.command()
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    file_format: Annotated[str, typer.Option("--format", help="csv, parquet or jsonl.")] = "csv",
    db: DbOption = None,
    deployment: DeploymentFilter = None,
    status: StatusFilter = None,
    since: SinceOption = None,
    until: UntilOption = None,
) -> None:
    """Export filtered submissions with their divergences, streamed to a file."""
    if file_format not in FORMATS:
        fail(f"--format {file_format!r} is not one of {', '.join(FORMATS)}")
    ledger = store.ledger_path(db)
    filters = _filters(deployment, status, since, until)
    try:
        rows = export_file(ledger, output, file_format, filters)
    except (ExportError, store.LedgerMissing) as error:
        fail(str(error))
    out.print(f"{rows:,} submissions written to {output}", markup=False, highlight=False)


@app.command()
def demo(
    db: DbOption = None,
    quiet: QuietOption = False,
) -> None:
    """Build a ledger from the bundled sample data: 90 days, three deployments, deploy markers."""
    ledger = store.ledger_path(db)
    folder = sample_folder()
    report = ingest_paths(ledger, [str(folder)], origin="demo")
    added, present = store.add_deploys(ledger, read_deploy_log(folder / "deploys.csv"), origin="file")
    if not quiet:
        print_report(report, ledger, quiet=True)
        out.print(f"{added} deploy markers added, {present} already present", markup=False, highlight=False)
    out.print(f"sample ledger ready at {ledger}", markup=False, highlight=False)


def sample_folder() -> Path:
    """Return the bundled sample_data folder, generating it into a temporary folder when not installed beside the package."""
    bundled = Path(__file__).resolve().parent.parent / "sample_data"
    if (bundled / "deploys.csv").is_file():
        return bundled
    import tempfile

    from ledger import sample

    target = Path(tempfile.mkdtemp(prefix="replay-ledger-sample-"))
    sample.write_sample(target)
    return target


def read_deploy_log(path: Path) -> list[dict[str, Any]]:
    """Read a deploy log (CSV with a header, or a JSON list) into validated markers; exit 2 on the first bad row."""
    from ledger.models import DeployMarker

    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        fail(f"{path}: cannot be read: {error.strerror}")
    except UnicodeDecodeError:
        fail(f"{path}: is not UTF-8 text; save the file as UTF-8")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            rows = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            fail(f"{path}: invalid JSON: {error}")
        if not isinstance(rows, list):
            fail(f"{path}: expected a JSON list of deploys")
        located = [(f"{path}#/{number}", row) for number, row in enumerate(rows)]
    else:
        reader = csv.DictReader(io.StringIO(text))
        missing = {"deployment", "version", "deployed_at"} - set(reader.fieldnames or [])
        if missing:
            fail(f"{path}: the header lacks {', '.join(sorted(missing))}; expected deployment,version,deployed_at,note")
        located = [(f"{path}:{number}", row) for number, row in enumerate(reader, start=2)]
    markers = []
    for location, row in located:
        try:
            marker = DeployMarker.model_validate(row)
        except Exception as error:  # pydantic's ValidationError, flattened below
            fail(f"{location}: {_first_error(error)}")
        markers.append(marker.model_dump())
    return markers


def _first_error(error: Exception) -> str:
    errors = getattr(error, "errors", None)
    if errors is None:
        return str(error)
    detail = errors(include_url=False)[0]
    cause = (detail.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return str(cause)
    return f"{'.'.join(str(part) for part in detail['loc'])}: {detail['msg']}"


@deploys_app.command("add")
def deploys_add(
    deployment: Annotated[str, typer.Option(help="The deployment that was deployed.")],
    version: Annotated[str, typer.Option(help="The version deployed.")],
    at: Annotated[Optional[str], typer.Option(help="When (ISO-8601 or epoch seconds). Default: now.")] = None,
    note: Annotated[str, typer.Option(help="A note shown in chart tooltips.")] = "",
    db: DbOption = None,
) -> None:
    """Add one deploy marker."""
    from ledger.models import DeployMarker

    when = parse_time_option("at", at) or datetime.now(timezone.utc)
    try:
        marker = DeployMarker(deployment=deployment, version=version, deployed_at=when, note=note)
    except Exception as error:
        fail(_first_error(error))
    added, _ = store.add_deploys(store.ledger_path(db), [marker.model_dump()], origin="cli")
    state = "added" if added else "already present"
    out.print(f"deploy {marker.deployment} {marker.version} at {marker.deployed_at.isoformat()} {state}",
              markup=False, highlight=False)


@deploys_app.command("import")
def deploys_import(
    path: Annotated[Path, typer.Argument(help="CSV (deployment,version,deployed_at,note) or JSON list.")],
    db: DbOption = None,
) -> None:
    """Import deploy markers from a deploy log; repeated imports add nothing twice."""
    markers = read_deploy_log(path)
    added, present = store.add_deploys(store.ledger_path(db), markers, origin="file")
    out.print(f"{added} deploy markers added, {present} already present", markup=False, highlight=False)


@deploys_app.command("list")
def deploys_list(
    db: DbOption = None,
    deployment: DeploymentFilter = None,
) -> None:
    """List deploy markers, oldest first."""
    from ledger.queries import deploy_markers

    try:
        markers = deploy_markers(store.ledger_path(db), tuple(deployment or ()))
    except store.LedgerMissing as error:
        fail(str(error))
    table = Table(show_edge=False)
    for heading in ("deployed at (UTC)", "deployment", "version", "origin", "note"):
        table.add_column(heading)
    for marker in markers:
        table.add_row(marker["deployed_at"].astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
                      marker["deployment"], marker["version"], marker["origin"], marker["note"])
    out.print(table, markup=False, highlight=False)


def main() -> None:
    """Run the command line, with log lines of long-running parts on standard error."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
