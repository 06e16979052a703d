"""The reads behind the Explore page: filters beyond the shared ones, any columns, any sort, one page at a time.

`ExploreFilters` adds to the shared `Filters`: run id contains (case
insensitive, matched literally), divergences at least, savings at least, and
divergence causes. Causes live in the ``divergence_causes`` table, which
ledgers of schema version 3 and later have. For a ledger without it,
`cause_options` returns None and a cause filter raises `CausesUnavailable`.

Every column the page can show or sort by is a fixed SQL expression in
`COLUMNS`; a column key or direction outside those sets raises `InvalidColumn`
before any SQL runs, and every filter value is a query parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import duckdb

from ledger import store
from ledger.queries import EXPORT_COLUMNS, Filters, where
from ledger.queries.hub import DIRECTIONS, PAGE_SIZES, STRICT_ABORT_SQL

CAUSES_TABLE = "divergence_causes"
RUN_ID_CONTAINS_MAX = 256
MAX_SAVINGS = Decimal("999999999999.999999")


@dataclass(frozen=True)
class Column:
    """A column of the Explore table: its heading, its SQL, what it sorts by, and how its values read."""

    label: str
    sql: str
    kind: str
    sort: tuple[str, ...] = ()

    @property
    def sort_terms(self) -> tuple[str, ...]:
        return self.sort or (self.sql,)


# kind: text, count, money, time, share, list, json, flag
COLUMNS: dict[str, Column] = {
    "submitted": Column("Submitted", "s.submitted_at", "time"),
    "run_id": Column("Run ID", "s.run_id", "text"),
    "status": Column("Status", "s.status", "text"),
    "strict_abort": Column("Aborted by divergence", STRICT_ABORT_SQL, "flag"),
    "actions_replayed": Column("Replayed", "s.actions_replayed", "count"),
    "actions_total": Column("Recorded", "s.actions_total", "count"),
    "replayed_share": Column(
        "Share replayed", "s.actions_replayed::DOUBLE / NULLIF(s.actions_total, 0)", "share"),
    "divergences": Column("Divergences", "s.divergences_detected", "count"),
    "saved": Column("Saved", "s.cost_savings", "money"),
    "deployment": Column("Deployment", "s.deployment", "text"),
    "submission_id": Column("Submission ID", "s.submission_id", "text"),
    "platform_id": Column("Platform ID", "s.platform_id", "text"),
    "ingested": Column("Ingested", "s.ingested_at", "time"),
    "ingest_id": Column("Ingest", "s.ingest_id", "count"),
    "location": Column("Source location", "s.location", "text"),
    "flags": Column("Flags", "s.flags", "list"),
    "extra": Column("Other fields", "s.extra", "json", ("CAST(s.extra AS VARCHAR)",)),
}
DEFAULT_COLUMNS = ("submitted", "run_id", "status", "actions_replayed", "actions_total", "divergences", "saved",
                   "deployment")
DEFAULT_SORT = "submitted"
DEFAULT_DIRECTION = "desc"
DEFAULT_PAGE_SIZE = 50
TIEBREAKER = "s.submission_id"


class InvalidColumn(ValueError):
    """A column key, sort direction, page or page size is outside the allowed set."""


class InvalidFilter(ValueError):
    """A filter value is out of range or of the wrong kind."""


class CausesUnavailable(InvalidFilter):
    """A cause filter was asked of a ledger that has no divergence causes table."""


@dataclass(frozen=True)
class ExploreFilters:
    """The shared filters plus the Explore page's own; an empty or None value does not filter."""

    base: Filters = field(default_factory=Filters)
    run_id_contains: str = ""
    min_divergences: int | None = None
    min_savings: Decimal | None = None
    causes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.run_id_contains) > RUN_ID_CONTAINS_MAX:
            raise InvalidFilter(
                f"run id contains: the text is {len(self.run_id_contains)} characters long; "
                f"use at most {RUN_ID_CONTAINS_MAX}")
        if self.min_divergences is not None:
            if isinstance(self.min_divergences, bool) or not isinstance(self.min_divergences, int) \
                    or self.min_divergences < 0:
                raise InvalidFilter(
                    f"divergences at least: {self.min_divergences!r} is not a whole number from 0 up")
        if self.min_savings is not None:
            if not isinstance(self.min_savings, Decimal) or not self.min_savings.is_finite() \
                    or not Decimal(0) <= self.min_savings <= MAX_SAVINGS:
                raise InvalidFilter(
                    f"saved at least: {self.min_savings!r} is not an amount of US dollars from 0 up")


def parse_savings(text: str) -> Decimal | None:
    """Parse a dollar amount typed by a user (``0.05``, ``$1,200``); return None for empty text.

    Raises InvalidFilter with the text for anything else, including negative,
    non-finite and over-precise (beyond micro-dollars) amounts.
    """
    cleaned = text.strip().replace(",", "").replace("_", "")
    if cleaned.startswith("$"):
        cleaned = cleaned[1:].strip()
    if not cleaned:
        return None
    shown = text.strip()[:40]
    try:
        amount = Decimal(cleaned)
    except InvalidOperation:
        raise InvalidFilter(
            f"saved at least: {shown!r} is not an amount in US dollars; type a number such as 0.05") from None
    if not amount.is_finite() or amount < 0:
        raise InvalidFilter(f"saved at least: {shown!r} must be a finite amount of 0 or more")
    if amount > MAX_SAVINGS:
        raise InvalidFilter(f"saved at least: {shown!r} is larger than any amount the ledger can hold")
    if amount != amount.quantize(Decimal("0.000001")):
        raise InvalidFilter(
            f"saved at least: {shown!r} has more than six decimals; the ledger stores whole micro-dollars")
    return amount


def explore_where(filters: ExploreFilters, *, causes_table: bool) -> tuple[str, list[Any]]:
    """Return the SQL condition on submissions (alias ``s``) for the filters, and its parameters.

    Raises CausesUnavailable when the filters name causes and `causes_table` is False.
    """
    condition, parameters = where(filters.base)
    conditions = [condition]
    if filters.run_id_contains:
        # strpos matches the text literally, so % and _ in it are not wildcards.
        conditions.append("strpos(lower(s.run_id), lower(?)) > 0")
        parameters.append(filters.run_id_contains)
    if filters.min_divergences is not None:
        conditions.append("s.divergences_detected >= ?")
        parameters.append(filters.min_divergences)
    if filters.min_savings is not None:
        conditions.append("s.cost_savings >= CAST(? AS DECIMAL(18, 6))")
        parameters.append(str(filters.min_savings))
    if filters.causes:
        if not causes_table:
            raise CausesUnavailable(
                "this ledger has no divergence causes yet, so the cause filter cannot be applied; clear it")
        marks = ", ".join("?" for _ in filters.causes)
        conditions.append(
            f"EXISTS (SELECT 1 FROM {CAUSES_TABLE} AS c WHERE c.submission_id = s.submission_id "
            f"AND c.cause IN ({marks}))"
        )
        parameters.extend(filters.causes)
    return " AND ".join(conditions), parameters


def _has_causes(connection: duckdb.DuckDBPyConnection) -> bool:
    return connection.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = ?",
        [CAUSES_TABLE],
    ).fetchone()[0] > 0


def cause_options(ledger: Path) -> tuple[str, ...] | None:
    """Return the causes recorded in the ledger, sorted; None when the ledger has no causes table."""
    with store.reading(ledger) as connection:
        if not _has_causes(connection):
            return None
        rows = connection.execute(f"SELECT DISTINCT cause FROM {CAUSES_TABLE} WHERE cause IS NOT NULL ORDER BY cause")
        return tuple(row[0] for row in rows.fetchall())


def check_columns(columns: tuple[str, ...]) -> None:
    """Raise InvalidColumn unless every key is one of `COLUMNS` and there is at least one."""
    if not columns:
        raise InvalidColumn("choose at least one column to show")
    for key in columns:
        if key not in COLUMNS:
            raise InvalidColumn(f"unknown column {key!r}; use one of {', '.join(COLUMNS)}")


def check_page_request(sort: str, direction: str, page: int, page_size: int) -> None:
    """Raise InvalidColumn unless the sort column, direction, page and page size are allowed values."""
    if sort not in COLUMNS:
        raise InvalidColumn(f"unknown sort column {sort!r}; use one of {', '.join(COLUMNS)}")
    if direction not in DIRECTIONS:
        raise InvalidColumn(f"unknown sort direction {direction!r}; use asc or desc")
    if page_size not in PAGE_SIZES:
        raise InvalidColumn(f"page size {page_size!r} is not one of {', '.join(map(str, PAGE_SIZES))}")
    if not isinstance(page, int) or isinstance(page, bool) or page < 1:
        raise InvalidColumn(f"page {page!r} is not a whole number from 1 up")


def order_by(sort: str, direction: str, *, reverse: bool = False) -> str:
    """Return the ORDER BY list for a column key; `reverse` gives the exact opposite order.

    Nulls come last in the normal order, and the submission id breaks ties, so
    every row has one place.
    """
    keep = {"asc": "ASC", "desc": "DESC"}
    flip = {"asc": "DESC", "desc": "ASC"}
    chosen = flip if reverse else keep
    nulls = "NULLS FIRST" if reverse else "NULLS LAST"
    terms = [f"{term} {chosen[direction]} {nulls}" for term in COLUMNS[sort].sort_terms]
    terms.append(f"{TIEBREAKER} {'DESC' if reverse else 'ASC'}")
    return ", ".join(terms)


@dataclass(frozen=True)
class ExploreSummary:
    """How many submissions match, and what they add up to."""

    submissions: int
    actions_replayed: int
    divergences: int
    cost_saved: Decimal


@dataclass(frozen=True)
class ExplorePage:
    """One page of the matching submissions, with the requested columns, in order.

    `rows` has one tuple a row, with values in the order of `columns`. `page`
    is the page served, which is the last page when the requested one lies
    past the end. `run_ids` and `strict_aborts` come with every row, so the
    page can link runs and tag statuses whatever columns are shown.
    """

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    run_ids: list[str]
    strict_aborts: list[bool]
    summary: ExploreSummary
    page: int
    page_size: int
    sort: str
    direction: str

    @property
    def total(self) -> int:
        return self.summary.submissions

    @property
    def pages(self) -> int:
        """The number of pages, at least 1."""
        return max(1, -(-self.total // self.page_size))


def explore_page(
    ledger: Path,
    filters: ExploreFilters,
    columns: tuple[str, ...] = DEFAULT_COLUMNS,
    sort: str = DEFAULT_SORT,
    direction: str = DEFAULT_DIRECTION,
    page: int = 1,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> ExplorePage:
    """Return one page of the filtered submissions with the chosen columns, sorted in SQL, and their totals.

    Raises InvalidColumn for a column, sort, direction, page or page size
    outside the allowed sets, and CausesUnavailable for a cause filter on a
    ledger without causes. A page past the end returns the last page. Pages
    in the back half are read in the reversed order from the end, so a deep
    page costs what a shallow one does.
    """
    check_columns(columns)
    check_page_request(sort, direction, page, page_size)
    with store.reading(ledger) as connection:
        condition, parameters = explore_where(filters, causes_table=_has_causes(connection))
        summary = ExploreSummary(*connection.execute(
            "SELECT count(*)::BIGINT, coalesce(sum(s.actions_replayed), 0)::BIGINT, "
            "coalesce(sum(s.divergences_detected), 0)::BIGINT, coalesce(sum(s.cost_savings), 0)::DECIMAL(38, 6) "
            f"FROM submissions AS s WHERE {condition}",
            parameters,
        ).fetchone())
        total = summary.submissions
        pages = max(1, -(-total // page_size))
        page = min(page, pages)
        offset = (page - 1) * page_size
        limit = page_size
        reverse = offset + page_size / 2 > total / 2
        if reverse:
            end = min(offset + page_size, total)
            limit = end - offset
            offset = total - end
        selected = ", ".join(COLUMNS[key].sql for key in columns)
        rows = connection.execute(
            f"SELECT s.run_id, {STRICT_ABORT_SQL}, {selected} FROM submissions AS s WHERE {condition} "
            f"ORDER BY {order_by(sort, direction, reverse=reverse)} LIMIT ? OFFSET ?",
            parameters + [limit, offset],
        ).fetchall()
    if reverse:
        rows.reverse()
    return ExplorePage(
        columns=tuple(columns),
        rows=[row[2:] for row in rows],
        run_ids=[row[0] for row in rows],
        strict_aborts=[bool(row[1]) for row in rows],
        summary=summary,
        page=page,
        page_size=page_size,
        sort=sort,
        direction=direction,
    )


def export_sql(
    filters: ExploreFilters, *, nested: bool, causes_table: bool, columns: tuple[str, ...] | None = None
) -> tuple[str, list[Any]]:
    """Return the query behind a download of every filtered submission, oldest first.

    Without `columns` it is the full record, as `ledger.queries.export_sql`
    writes it, divergences included (a list of structs with `nested`, else one
    JSON text column). With `columns` it is those columns of the table, named
    by their keys.
    """
    condition, parameters = explore_where(filters, causes_table=causes_table)
    order = "ORDER BY s.submitted_at, s.submission_id"
    if columns is not None:
        check_columns(columns)
        selected = ", ".join(f"{COLUMNS[key].sql} AS {key}" for key in columns)
        return f"SELECT {selected} FROM submissions AS s WHERE {condition} {order}", parameters
    names = ", ".join(f"s.{name}" for name in EXPORT_COLUMNS)
    listed = (
        "list({'type': d.type, 'action': d.action, 'index': d.action_index, "
        "'expected': d.expected, 'actual': d.actual, 'detail': d.detail} ORDER BY d.position)"
    )
    divergences = listed if nested else f"to_json({listed})"
    empty = "[]" if nested else "'[]'"
    sql = f"""
        SELECT {names}, coalesce(d.divergences, {empty}) AS divergences
        FROM submissions AS s
        LEFT JOIN (
            SELECT d.submission_id, {divergences} AS divergences
            FROM divergences AS d
            GROUP BY d.submission_id
        ) AS d USING (submission_id)
        WHERE {condition}
        {order}
    """
    return sql, parameters


def has_causes_table(ledger: Path) -> bool:
    """Return whether the ledger has the divergence causes table."""
    with store.reading(ledger) as connection:
        return _has_causes(connection)
