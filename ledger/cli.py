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

import duckdb
import orjson
import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ledger import deploy_log, sample, store
from ledger.export import FORMATS, ExportError, export_file
from ledger.ingest import EXIT_USAGE, IngestReport, ingest_paths
from ledger.models import STATUSES, FieldError, number_from_text, parse_timestamp
from ledger.queries import Filters, Tiles, deployments, tiles, tiles_by_deployment
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
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print only rejected records, errors and the summary line.")]
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
    """Return the instant of a time option: ISO-8601 text, or epoch seconds (epoch milliseconds from 1e11)."""
    if value is None:
        return None
    parsed_value = number_from_text(value)
    try:
        return parse_timestamp(name, parsed_value)[0]
    except FieldError as error:
        # Text that is not a plain number failed as ISO-8601, so name the other form too.
        other_form = " or epoch seconds such as 1772539200" if isinstance(parsed_value, str) else ""
        fail(f"--{name}: {error.reason}{other_form}")


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
    paths: Annotated[list[str], typer.Argument(metavar="PATH", help="Files or folders to ingest; '-' reads standard input.")],
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
        _merge_receiver_journals(ledger)
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


def _merge_receiver_journals(ledger: Path) -> None:
    """Merge posts that a stopped receiver journaled but never merged, as every writer of the ledger does."""
    from ledger.receiver import merge_left_journals

    count = merge_left_journals(ledger)
    if count:
        err.print(f"merged {count} receiver journal file(s) left in {store.inbox_path(ledger)}",
                  markup=False, highlight=False)


def print_report(report: IngestReport, ledger: Path, quiet: bool) -> None:
    """Print an ingest report: a table per file, the rejections, warnings and a summary line."""
    if not quiet:
        table = Table(title=None, show_edge=False)
        for heading in ("file", "shape", "read", "ingested", "duplicates", "rejected"):
            table.add_column(heading, justify="left" if heading in ("file", "shape") else "right")
        for name, shape, read, ingested, duplicates, rejected in _report_rows(report):
            table.add_row(name, shape, f"{read:,}", f"{ingested:,}", f"{duplicates:,}", f"{rejected:,}")
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


FILES_LISTED = 20


def _report_rows(report: IngestReport) -> list[tuple[str, str, int, int, int, int]]:
    """Return one table row a file; past FILES_LISTED files, clean files are folded into one row a folder."""
    rows = []
    folded: dict[str, list] = {}
    many = len(report.files) > FILES_LISTED
    for item in report.files:
        shape = item.shape + (" (gzip)" if item.compressed else "")
        counts = [item.read, item.ingested, item.duplicates, len(item.rejected)]
        if many and not item.rejected and not item.warnings:
            folder = str(Path(item.name).parent)
            totals = folded.setdefault(folder, [0, 0, 0, 0, 0, set()])
            for position, value in enumerate(counts):
                totals[position] += value
            totals[4] += 1
            totals[5].add(shape)
            continue
        rows.append((item.name, shape, *counts))
    for folder, (read, ingested, duplicates, rejected, files, shapes) in folded.items():
        label = f"{folder}/ ({files:,} file{'s' if files != 1 else ''})"
        rows.append((label, ", ".join(sorted(shapes)), read, ingested, duplicates, rejected))
    return rows


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
    start, end = parse_time_option("since", since), parse_time_option("until", until)
    if start is not None and end is not None and start >= end:
        fail(f"--since {since!r} is not before --until {until!r}; swap them or widen the range")
    return Filters(
        start=start,
        end=end,
        # Ingest stores deployment names trimmed, so the filter is trimmed too.
        deployments=tuple(name.strip() for name in deployment or ()),
        statuses=tuple(status or ()),
    )


def _merge_pending(ledger: Path, verb: str) -> None:
    """Merge the receiver's journals and the inbox into the ledger first, so a read includes every record that arrived."""
    if not ledger.exists():
        return
    try:
        _merge_receiver_journals(ledger)
        store.drain_inbox(ledger)
    except store.LedgerBusy:
        err.print(f"warning: the ledger is busy, so records waiting in its inbox are not {verb} yet",
                  markup=False, highlight=False)


def _check_deployments(ledger: Path, filters: Filters) -> None:
    """Exit 2 when a --deployment value has no submissions in the ledger, so a typo does not pass for zero."""
    if not filters.deployments:
        return
    known = deployments(ledger)
    for name in filters.deployments:
        if name not in known:
            listed = ", ".join(repr(known_name) for known_name in known) or "none yet"
            fail(f"--deployment {name!r} has no submissions in {ledger}; deployments with submissions: {listed}")


DeploymentFilter = Annotated[Optional[list[str]], typer.Option("--deployment", metavar="NAME", help="Only this deployment (repeatable).")]
StatusFilter = Annotated[Optional[list[str]], typer.Option("--status", metavar="STATUS", help="Only this status: success, partial or failed (repeatable).")]
SinceOption = Annotated[Optional[str], typer.Option(metavar="TIME", help="Only submissions at or after this time (ISO-8601 or epoch seconds).")]
UntilOption = Annotated[Optional[str], typer.Option(metavar="TIME", help="Only submissions before this time (ISO-8601 or epoch seconds).")]


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
    _merge_pending(ledger, "counted")
    try:
        _check_deployments(ledger, filters)
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
    _merge_pending(ledger, "exported")
    try:
        _check_deployments(ledger, filters)
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
    folder = sample.sample_folder()
    report = ingest_paths(ledger, [str(folder)], origin="demo")
    added, present = store.add_deploys(ledger, read_deploy_log(folder / "deploys.csv"), origin="file")
    if not quiet:
        print_report(report, ledger, quiet=True)
        out.print(f"{added} deploy markers added, {present} already present", markup=False, highlight=False)
    out.print(f"sample ledger ready at {ledger}", markup=False, highlight=False)


def read_deploy_log(path: Path) -> list[dict[str, Any]]:
    """Read a deploy log into validated markers, or exit 2 naming the file, row and field of the first problem."""
    try:
        return deploy_log.read_deploy_log(path)
    except deploy_log.DeployLogError as error:
        fail(str(error))


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
    at: Annotated[Optional[str], typer.Option(metavar="TIME", help="When (ISO-8601 or epoch seconds). Default: now.")] = None,
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


# ---------------------------------------------------------------------------
# Deploy inference and the regression gate (check)


@deploys_app.command("infer")
def deploys_infer(
    db: DbOption = None,
    deployment: DeploymentFilter = None,
    field: Annotated[str, typer.Option(
        help="Key of the records that carries the deployed version; 'auto' tries agent_version, app_version, "
             "service_version, version, release, build and git_sha in that order.")] = "auto",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the markers without storing them.")] = False,
) -> None:
    """Add a deploy marker (origin 'inferred') at the first submission of each new version in a deployment's data."""
    from ledger import regressions
    from ledger.queries import deploys

    ledger = store.ledger_path(db)
    deployments = tuple(deployment or ())
    try:
        deploys.check_version_field(field)
        changes = deploys.version_changes(ledger, field, deployments)
        existing = deploys.markers(ledger, deployments)
    except deploys.InvalidDeploymentRequest as error:
        fail(f"--field: {error}")
    except (store.LedgerMissing, store.LedgerBusy) as error:
        fail(str(error))
    unmarked = regressions.unmarked_changes(changes, existing)
    table = Table(show_edge=False)
    for heading in ("first seen (UTC)", "deployment", "version", "previous", "field", "submission"):
        table.add_column(heading)
    for change in unmarked:
        table.add_row(change.first_seen.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"), change.deployment,
                      change.version, change.previous_version, change.field, change.submission_id)
    if unmarked:
        out.print(table, markup=False, highlight=False)
    already = len(changes) - len(unmarked)
    if dry_run:
        out.print(f"{len(unmarked)} version changes without a marker (not stored: --dry-run), "
                  f"{already} already marked", markup=False, highlight=False)
        return
    added, _ = store.add_deploys(ledger, regressions.inferred_markers(unmarked), origin=regressions.INFERRED_ORIGIN)
    out.print(f"{added} inferred deploy markers added, {already} version changes already had a marker",
              markup=False, highlight=False)


def _check_time(name: str, value: str | None, now: datetime) -> datetime | None:
    """Parse a --since/--until value: a time (ISO-8601, epoch seconds) or a duration back from now (14d)."""
    from ledger import regressions

    if value is None:
        return None
    if value.strip()[-1:].lower() in ("m", "h", "d", "w") and value.strip()[:1].isdigit():
        try:
            return now - regressions.parse_duration(value, f"--{name}")
        except regressions.InvalidCheckRequest as error:
            fail(str(error))
        except OverflowError:
            fail(f"--{name} {value.strip()!r} reaches back past the year 1; give a shorter duration")
    return parse_time_option(name, value)


@app.command()
def check(
    db: DbOption = None,
    deployment: DeploymentFilter = None,
    since: Annotated[Optional[str], typer.Option(
        help="Judge deploy markers at or after this time: ISO-8601, epoch seconds, or a duration back from now "
             "such as 14d. Default: every marker.")] = None,
    until: Annotated[Optional[str], typer.Option(help="Judge deploy markers before this time (same forms).")] = None,
    window: Annotated[str, typer.Option(
        help="Data each side of a marker: a length (90m, 12h, 7d, 2w) or submissions each side (200sub).")] = "7d",
    alpha: Annotated[float, typer.Option(help="Significance level of Fisher's exact test.")] = 0.01,
    min_effect: Annotated[float, typer.Option(
        help="Smallest change in the divergence rate that counts, as a difference of rates: 0.05 is 5 percentage "
             "points.")] = 0.05,
    min_submissions: Annotated[int, typer.Option(help="Fewest submissions a side for a marker to be judged.")] = 20,
    shifts: Annotated[bool, typer.Option(
        "--shifts/--no-shifts", help="Also report daily rises in the divergence rate that no marker explains.")] = True,
    as_of: Annotated[Optional[str], typer.Option(
        "--as-of", help="Judge as if it were this time (ISO-8601 or epoch seconds). Default: now.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the stable JSON report (see docs/check.md).")] = False,
) -> None:
    """Exit 1 when a deploy, or a shift no deploy marker explains, raised the divergence rate; a CI gate.

    Exit 0 when nothing did, 2 on usage errors. See docs/check.md.
    """
    from ledger import queries, regressions

    ledger = store.ledger_path(db)
    now = parse_time_option("as-of", as_of) or datetime.now(timezone.utc)
    started = _check_time("since", since, now)
    ended = _check_time("until", until, now)
    if started is not None and ended is not None and started >= ended:
        fail(f"--since {since} is not before --until {until}; widen the range")
    try:
        settings = regressions.Settings(regressions.parse_window(window), alpha, min_effect, min_submissions).check()
    except regressions.InvalidCheckRequest as error:
        fail(str(error))
    deployments = tuple(deployment or ())
    try:
        if deployments:
            known = set(queries.deployments(ledger)) | {marker["deployment"] for marker in queries.deploy_markers(ledger)}
            unknown = [name for name in deployments if name not in known]
            if unknown:
                fail(f"--deployment {unknown[0]!r} has no submissions or deploy markers in {ledger}; known: "
                     f"{', '.join(sorted(known)[:20]) or 'none'}")
        report = regressions.scan(ledger, as_of=now, deployments=deployments, since=started, until=ended,
                                  settings=settings, shifts=shifts)
    except (store.LedgerMissing, store.LedgerBusy, store.LedgerTooNew) as error:
        fail(str(error))
    if json_output:
        sys.stdout.write(orjson.dumps(regressions.report_json(report, ledger), option=orjson.OPT_INDENT_2).decode()
                         + "\n")
    else:
        _print_check(report)
    raise typer.Exit(1 if report.regression_detected else 0)


def _print_check(report) -> None:
    """Print every marker's verdict, every shift, then one line per finding and a summary line."""
    from ledger import regressions

    results = report.results
    if results:
        table = Table(show_edge=False)
        for heading in ("deployed at (UTC)", "deployment", "version", "before", "after", "p", "verdict"):
            table.add_column(heading, justify="right" if heading in ("before", "after", "p") else "left")
        for result in results:
            window, verdict = result.window, result.verdict
            table.add_row(
                result.marker.deployed_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M"),
                result.marker.deployment, result.marker.version,
                f"{window.before_k:,}/{window.before_n:,}", f"{window.after_k:,}/{window.after_n:,}",
                "—" if verdict.p_value is None else f"{verdict.p_value:.3g}", verdict.verdict.replace("_", " "),
            )
        out.print(table, markup=False, highlight=False)
    for line in regressions.finding_lines(report):
        out.print(line, markup=False, highlight=False)
    counts = {name: sum(1 for result in results if result.verdict.verdict == name)
              for name in ("regression", "improvement", "no_change", "not_judged")}

    def plural(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else 's'}"

    shift_part = (f"; {plural(len(report.shifts), 'shift')}, {plural(len(report.unexplained_rises), 'unexplained rise')}"
                  if report.shifts_checked else "; shifts not checked")
    out.print(
        f"{plural(len(results), 'deploy marker')}: {plural(counts['regression'], 'regression')}, "
        f"{plural(counts['improvement'], 'improvement')}, {counts['no_change']} no change, "
        f"{counts['not_judged']} not judged ({report.settings.window.describe()}, alpha {report.settings.alpha:g})"
        f"{shift_part}",
        markup=False, highlight=False,
    )


# ---------------------------------------------------------------------------
# Receiver: serve, keys, pull

keys_app = typer.Typer(help="API keys of the receiver: each maps to the deployment its posts are stored under.",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")
KeysFileOption = Annotated[
    Optional[Path],
    typer.Option("--keys", help="Keys file (JSON) to use instead of the ledger's api_keys table.", show_default=False),
]


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on; 0 picks a free one.")] = 8765,
    keys: KeysFileOption = None,
    db: DbOption = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Take posts without an API key (loopback addresses only).")] = False,
    max_body: Annotated[int, typer.Option(help="Largest replay result body, in bytes.")] = 1024 * 1024,
    max_batch_body: Annotated[int, typer.Option(help="Largest action batch body (/api/v1/ingest), in bytes.")] = 16 * 1024 * 1024,
    read_timeout: Annotated[float, typer.Option(help="Seconds a client may take to send a request's headers, and again its body.")] = 10.0,
    max_divergences: Annotated[int, typer.Option(help="Most divergences one replay result may list.")] = 1000,
    max_divergence_bytes: Annotated[int, typer.Option(help="Largest single divergence, in bytes of JSON.")] = 64 * 1024,
) -> None:
    """Run the receiver: the platform's replay API, storing what the SDK posts into the ledger."""
    from ledger.keys import KeyFileError
    from ledger.posts import PostLimits
    from ledger.receiver import ReceiverConfig, ReceiverConfigError, serve as run_receiver

    logging.getLogger("ledger").setLevel(logging.INFO)
    config = ReceiverConfig(
        ledger=store.ledger_path(db), keys_file=keys, no_auth=no_auth, max_body=max_body,
        max_batch_body=max_batch_body, read_timeout=read_timeout,
        limits=PostLimits(max_divergences=max_divergences, max_divergence_bytes=max_divergence_bytes),
    )
    _check_receiver_ledger(config.ledger)
    try:
        run_receiver(config, host, port)
    except (ReceiverConfigError, KeyFileError, store.LedgerTooNew) as error:
        fail(str(error))
    except OSError as error:
        fail(f"cannot listen on {host}:{port}: {error.strerror or error}")


def _check_receiver_ledger(ledger: Path) -> None:
    """Exit 2 before the server starts when the ledger file is not a ledger; a busy ledger is checked later."""
    store.check_ledger_file(ledger)
    if not ledger.exists():
        return
    try:
        store.upgrade(ledger)
    except store.LedgerBusy:
        err.print(f"warning: {ledger} is busy, so it is checked at the first merge", markup=False, highlight=False)
    except store.LedgerTooNew as error:
        fail(str(error))


@keys_app.command("add")
def keys_add(
    deployment: Annotated[str, typer.Option(help="The deployment that posts made with this key are stored under.")],
    label: Annotated[str, typer.Option(help="A note to recognise the key by in `keys list`.")] = "",
    keys: KeysFileOption = None,
    db: DbOption = None,
) -> None:
    """Make a new API key, print it once, and store only its hash."""
    from ledger.keys import KeyFileError, add_to_file, hash_key, new_key
    from ledger.models import parse_deployment

    try:
        deployment = parse_deployment("--deployment", deployment)
    except FieldError as error:
        fail(str(error))
    if keys is not None:
        try:
            stored, whole = add_to_file(keys, deployment, label)
        except KeyFileError as error:
            fail(str(error))
        key_id = stored.key_id
    else:
        key_id, whole = new_key()
        store.add_api_key(store.ledger_path(db), key_id, deployment, hash_key(whole), label)
    out.print(whole, markup=False, highlight=False)
    err.print(f"key {key_id} for deployment {deployment} stored; the key is shown only this once",
              markup=False, highlight=False)


@keys_app.command("list")
def keys_list(keys: KeysFileOption = None, db: DbOption = None) -> None:
    """List API keys (ids, deployments, state), never the keys themselves."""
    from ledger.keys import ApiKey, KeyFileError, read_keys_file

    try:
        stored = read_keys_file(keys) if keys is not None else [ApiKey(*row) for row in store.api_keys(store.ledger_path(db))]
    except KeyFileError as error:
        fail(str(error))
    table = Table(show_edge=False)
    for heading in ("key id", "deployment", "label", "created (UTC)", "state"):
        table.add_column(heading)
    for key in stored:
        state = "active" if key.active else f"revoked {key.revoked_at.astimezone(timezone.utc):%Y-%m-%d %H:%M}"
        table.add_row(key.key_id, key.deployment, key.label,
                      key.created_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M"), state)
    out.print(table, markup=False, highlight=False)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id, as `keys list` shows it.")],
    keys: KeysFileOption = None,
    db: DbOption = None,
) -> None:
    """Revoke an API key; a running receiver stops taking it within a few seconds."""
    from ledger.keys import KeyFileError, is_key_id, revoke_in_file

    if not is_key_id(key_id):
        fail(f"{key_id[:40]!r} is not a key id (12 hex digits, as `replay-ledger keys list` shows)")
    try:
        revoked = revoke_in_file(keys, key_id) if keys is not None else store.revoke_api_key(store.ledger_path(db), key_id)
    except KeyFileError as error:
        fail(str(error))
    if not revoked:
        fail(f"no active key {key_id}; see `replay-ledger keys list`", code=1)
    out.print(f"key {key_id} revoked", markup=False, highlight=False)


@app.command()
def pull(
    url: Annotated[str, typer.Option(help="The platform's base URL, e.g. https://api.example.com.")],
    api_key: Annotated[str, typer.Option(help="API key for the platform.", envvar="REPLAY_LEDGER_API_KEY",
                                         show_envvar=True)],
    since: SinceOption = None,
    full: Annotated[bool, typer.Option("--full", help="Pull everything, ignoring where earlier pulls stopped.")] = False,
    retries: Annotated[int, typer.Option(help="Retries of a failing page (429, 5xx, network) before giving up.")] = 8,
    db: DbOption = None,
    quiet: QuietOption = False,
) -> None:
    """Pull submission history from a platform into the ledger, resuming where the last pull stopped."""
    from ledger.remote import PullError, pull as run_pull

    started = parse_time_option("since", since)
    ledger = store.ledger_path(db)
    with Progress(TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True,
                  disable=quiet or not err.is_terminal) as bar:
        task = bar.add_task("pulling")

        def progress(fetched: int, total: int | None) -> None:
            bar.update(task, description=f"pulled {fetched:,}" + (f" of {total:,}" if total else "") + " submissions")

        try:
            report = run_pull(ledger, url, api_key, since=started, full=full, retries=retries, progress=progress)
        except PullError as error:
            fail(f"pull from {url}: {error}")
    for message in report.rejections:
        err.print(f"rejected {message}", markup=False, highlight=False)
    resumed = f", resumed at {report.resumed_at:,}" if report.resumed_at is not None else ""
    queued = f"; {report.queued_in_inbox} pages wait in the ledger's inbox" if report.queued_in_inbox else ""
    out.print(
        f"{report.fetched:,} submissions fetched in {report.pages} pages{resumed}: {report.ingested:,} ingested, "
        f"{report.duplicates:,} duplicates, {report.rejected:,} rejected, {report.retries} retries{queued}",
        markup=False, highlight=False,
    )
    raise typer.Exit(1 if report.rejected else 0)


def main() -> None:
    """Run the command line, with log lines of long-running parts on standard error."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except (store.LedgerUnreadable, store.LedgerBusy) as error:
        err.print(f"error: {error}", markup=False, highlight=False)
        sys.exit(EXIT_USAGE)
    except duckdb.IOException as error:
        # A ledger whose header is intact can still be cut short. DuckDB's message names the file.
        err.print(f"error: reading or writing the ledger failed: {error}; if the file was cut short or damaged, "
                  "restore it from a copy", markup=False, highlight=False)
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    main()
