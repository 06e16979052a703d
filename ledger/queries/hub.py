"""The reads behind the Replay Hub: tiles with their change, one sorted page of submissions, the ledger overview.

Sorting happens in SQL over every filtered submission, so the order is right
across pages, not only inside one. Each sortable column maps to fixed SQL in
`SORT_COLUMNS`, and a sort key or direction outside the allowed sets raises
`InvalidSort` before any SQL runs. Nulls sort last in both directions. Rows
that tie come newest first, and the row id ends every order, so every row has
exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from ledger import store
from ledger.queries import Filters, Tiles, where

# Column key -> SQL expressions it sorts by, in order. "replayed" sorts by the
# share of recorded actions that were replayed (null when nothing was recorded),
# then by the number recorded.
SORT_COLUMNS: dict[str, tuple[str, ...]] = {
    "run_id": ("s.run_id",),
    "status": ("s.status",),
    "replayed": ("s.actions_replayed::DOUBLE / NULLIF(s.actions_total, 0)", "s.actions_total"),
    "divergences": ("s.divergences_detected",),
    "saved": ("s.cost_savings",),
    "submitted": ("s.submitted_at",),
    "deployment": ("s.deployment",),
}
# Columns with few distinct values, whose pages are found from per-value counts (see _grouped_positions).
GROUPED_SORTS = frozenset({"status", "deployment", "divergences"})
DIRECTIONS = ("desc", "asc")
PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_SORT = "submitted"
DEFAULT_DIRECTION = "desc"
DEFAULT_PAGE_SIZE = 50
# Rows that tie on the sort column come newest first. The ledger only appends
# to submissions, so rowid is unique and stable and ends every order. It keeps
# DuckDB's top-N fast: with the submission id (text) as the last key, a page
# sorted by Saved took about 4 times as long at 10M rows.
TIES = (("s.submitted_at", "desc"), ("s.rowid", "desc"))
DEMO_ORIGIN = "demo"

# A strict-mode replay stops at its first divergence and the SDK reports it as
# failed. Its shape distinguishes it from a failure by exception: failed,
# exactly one divergence, and fewer actions replayed than recorded.
STRICT_ABORT_SQL = (
    "(s.status = 'failed' AND s.divergences_detected = 1 AND s.actions_replayed < s.actions_total)"
)


class InvalidSort(ValueError):
    """A sort column, direction, page or page size is outside the allowed set."""


@dataclass(frozen=True)
class HubTiles:
    """The four tiles for the filtered period and for the period of equal length before it."""

    current: Tiles
    previous: Tiles | None


@dataclass(frozen=True)
class HubRow:
    """One submission as a row of the Replay Hub table."""

    submission_id: str
    run_id: str
    status: str
    actions_replayed: int
    actions_total: int
    divergences_detected: int
    cost_savings: Decimal
    submitted_at: datetime
    deployment: str
    strict_abort: bool


@dataclass(frozen=True)
class HubPage:
    """One page of the sorted, filtered submissions and the count of all of them.

    `page` is the page served, which is the last page when the one requested
    lies past the end.
    """

    rows: list[HubRow]
    total: int
    page: int
    page_size: int
    sort: str
    direction: str

    @property
    def pages(self) -> int:
        """The number of pages, at least 1."""
        return max(1, -(-self.total // self.page_size))

    @property
    def first_position(self) -> int:
        """The 1-based position of the page's first row among all matching rows (0 when there are none)."""
        return (self.page - 1) * self.page_size + 1 if self.rows else 0


@dataclass(frozen=True)
class LedgerOverview:
    """The ledger's contents as a whole, independent of filters.

    `deployments` lists the deployments that have submissions, sorted.
    """

    submissions: int
    demo_ingests: int
    other_ingests: int
    deploys: int
    last_ingest_at: datetime | None
    deployments: tuple[str, ...] = ()

    @property
    def is_fresh(self) -> bool:
        """True for a ledger nothing was ever ingested into and that has no deploy markers."""
        return not (self.submissions or self.demo_ingests or self.other_ingests or self.deploys)

    @property
    def is_sample_only(self) -> bool:
        """True when every ingest came from the bundled sample data."""
        return self.demo_ingests > 0 and self.other_ingests == 0

    @property
    def mixes_sample(self) -> bool:
        """True when the bundled sample data shares the ledger with the user's own ingests."""
        return self.demo_ingests > 0 and self.other_ingests > 0


# count_if rather than count(*) FILTER: DuckDB 2.0 runs it several times faster on a 10M-row scan.
_TILE_COLUMNS = """
    count(*)::BIGINT,
    coalesce(sum(s.actions_replayed), 0)::BIGINT,
    coalesce(sum(s.actions_total), 0)::BIGINT,
    coalesce(sum(s.divergences_detected), 0)::BIGINT,
    coalesce(sum(s.cost_savings), 0)::DECIMAL(38, 6),
    coalesce(count_if(s.divergences_detected > 0), 0)::BIGINT
"""


def _read_tiles(connection: duckdb.DuckDBPyConnection, filters: Filters) -> HubTiles:
    """Aggregate the current and the previous period, each scanning only its own time range."""
    previous = filters.previous_period()
    periods = [filters] + ([previous] if previous else [])
    selects, parameters = [], []
    for number, period in enumerate(periods):
        condition, period_parameters = where(period)
        selects.append(f"SELECT {number} AS period, {_TILE_COLUMNS} FROM submissions AS s WHERE {condition}")
        parameters += period_parameters
    rows = connection.execute(" UNION ALL ".join(selects) + " ORDER BY period", parameters).fetchall()
    previous_tiles = Tiles(*rows[1][1:]) if previous else None
    return HubTiles(Tiles(*rows[0][1:]), previous_tiles)


def hub_tiles(ledger: Path, filters: Filters) -> HubTiles:
    """Return the tiles of the filtered submissions and of the previous period.

    The previous period is the same filters over the span of equal length
    just before `filters.start`. It is None when the range is unbounded.
    """
    with store.reading(ledger) as connection:
        return _read_tiles(connection, filters)


def check_page_request(sort: str, direction: str, page: int, page_size: int) -> None:
    """Raise InvalidSort unless the sort column, direction, page and page size are allowed values."""
    if sort not in SORT_COLUMNS:
        raise InvalidSort(f"unknown sort column {sort!r}; use one of {', '.join(SORT_COLUMNS)}")
    if direction not in DIRECTIONS:
        raise InvalidSort(f"unknown sort direction {direction!r}; use asc or desc")
    if page_size not in PAGE_SIZES:
        raise InvalidSort(f"page size {page_size!r} is not one of {', '.join(map(str, PAGE_SIZES))}")
    if not isinstance(page, int) or isinstance(page, bool) or page < 1:
        raise InvalidSort(f"page {page!r} is not a whole number from 1 up")


def sort_terms(sort: str, direction: str) -> list[tuple[str, str]]:
    """Return the (expression, direction) pairs of a sort: its column's expressions, then the tie order.

    Sorting by Submitted breaks ties by row id in the same direction.
    """
    terms = [(expression, direction) for expression in SORT_COLUMNS[sort]]
    if sort == "submitted":
        return terms + [("s.rowid", direction)]
    return terms + list(TIES)


def order_by(sort: str, direction: str, *, reverse: bool = False) -> str:
    """Return the ORDER BY list for a sort column, or with `reverse` the exact opposite order.

    Nulls come last in the normal order, so the reversed order puts them first.
    """
    return _order_list(sort_terms(sort, direction), reverse=reverse)


def _order_list(terms: list[tuple[str, str]], *, reverse: bool) -> str:
    flip = {"asc": "DESC", "desc": "ASC"}
    keep = {"asc": "ASC", "desc": "DESC"}
    chosen = flip if reverse else keep
    nulls = "NULLS FIRST" if reverse else "NULLS LAST"
    return ", ".join(f"{expression} {chosen[way]} {nulls}" for expression, way in terms)


_PAGE_COLUMNS = (
    "s.submission_id, s.run_id, s.status, s.actions_replayed, s.actions_total, s.divergences_detected, "
    f"s.cost_savings, s.submitted_at, s.deployment, {STRICT_ABORT_SQL}"
)


def _read_page(connection: duckdb.DuckDBPyConnection, filters: Filters, total: int,
               sort: str, direction: str, page: int, page_size: int) -> HubPage:
    """Read one page in two steps: the page's row ids in order, then those rows.

    The ordering step carries only the row id and the first sort expression,
    so DuckDB keeps far less per row for a deep page. The second step finds
    the rows by that expression's range on the page, which zone maps can
    prune, and by row id.
    """
    pages = max(1, -(-total // page_size))
    page = min(page, pages)
    offset = (page - 1) * page_size
    if sort in GROUPED_SORTS:
        positions = _grouped_positions(connection, filters, sort, direction, offset, page_size)
    else:
        positions = _sorted_positions(connection, filters, sort, direction, offset, page_size, total)
    rows = _rows_by_id(connection, SORT_COLUMNS[sort][0], positions)
    return HubPage([HubRow(*row) for row in rows], total, page, page_size, sort, direction)


def _sorted_positions(connection: duckdb.DuckDBPyConnection, filters: Filters, sort: str, direction: str,
                      offset: int, limit: int, total: int) -> list[tuple]:
    """Return (row id, first sort key) of the rows at `offset`, in order, with one top-N query."""
    condition, parameters = where(filters)
    # A page in the back half is read from the end in the reversed order, so
    # DuckDB's top-N keeps at most half of the rows, not all before the page.
    reverse = offset + limit / 2 > total / 2
    if reverse:
        end = min(offset + limit, total)
        limit = end - offset
        offset = total - end
    positions = connection.execute(
        f"SELECT s.rowid, {SORT_COLUMNS[sort][0]} FROM submissions AS s WHERE {condition} "
        f"ORDER BY {order_by(sort, direction, reverse=reverse)} LIMIT ? OFFSET ?",
        parameters + [limit, offset],
    ).fetchall()
    if reverse:
        positions.reverse()
    return positions


def _grouped_positions(connection: duckdb.DuckDBPyConnection, filters: Filters, sort: str, direction: str,
                       offset: int, limit: int) -> list[tuple]:
    """Return (row id, sort key) of the rows at `offset` for a column with few distinct values.

    The page is located in the per-value counts, then each value it spans is
    read in the tie order. That is the order `order_by` gives, without a top-N
    over millions of rows that tie on the key.
    """
    key = SORT_COLUMNS[sort][0]
    condition, parameters = where(filters)
    groups = connection.execute(
        f"SELECT {key}, count(*) FROM submissions AS s WHERE {condition} "
        f"GROUP BY 1 ORDER BY 1 {direction.upper()} NULLS LAST",
        parameters,
    ).fetchall()
    positions: list[tuple] = []
    group_start = 0
    for value, size in groups:
        group_end = group_start + size
        if group_end > offset and group_start < offset + limit:
            skip = max(0, offset - group_start)
            take = min(offset + limit, group_end) - group_start - skip
            positions += _group_positions(connection, condition, parameters, key, value, size, skip, take)
        group_start = group_end
        if group_start >= offset + limit:
            break
    return positions


def _group_positions(connection: duckdb.DuckDBPyConnection, condition: str, parameters: list[Any], key: str,
                     value: Any, size: int, skip: int, take: int) -> list[tuple]:
    """Return (row id, value) of `take` rows after `skip` among the rows whose key equals `value`, in tie order."""
    match, match_parameters = (f"{key} IS NULL", []) if value is None else (f"{key} = ?", [value])
    reverse = skip + take / 2 > size / 2
    if reverse:
        skip = size - skip - take
    row_ids = connection.execute(
        f"SELECT s.rowid FROM submissions AS s WHERE {condition} AND {match} "
        f"ORDER BY {_order_list(list(TIES), reverse=reverse)} LIMIT ? OFFSET ?",
        parameters + match_parameters + [take, skip],
    ).fetchall()
    if reverse:
        row_ids.reverse()
    return [(row_id, value) for (row_id,) in row_ids]


def _rows_by_id(connection: duckdb.DuckDBPyConnection, key: str, positions: list[tuple]) -> list[tuple]:
    """Return the page columns of the rows in `positions` (row id, sort key value), in that order."""
    if not positions:
        return []
    row_ids = [row_id for row_id, _ in positions]
    values = [value for _, value in positions if value is not None]
    ranges, parameters = [], []
    if values:
        ranges.append(f"{key} BETWEEN ? AND ?")
        parameters += [min(values), max(values)]
    if len(values) < len(positions):
        ranges.append(f"{key} IS NULL")
    fetched = connection.execute(
        f"SELECT s.rowid, {_PAGE_COLUMNS} FROM submissions AS s "
        f"WHERE ({' OR '.join(ranges)}) AND s.rowid IN ({', '.join('?' for _ in row_ids)})",
        parameters + row_ids,
    ).fetchall()
    by_id = {row[0]: row[1:] for row in fetched}
    return [by_id[row_id] for row_id in row_ids]


def submissions_page(
    ledger: Path,
    filters: Filters,
    sort: str = DEFAULT_SORT,
    direction: str = DEFAULT_DIRECTION,
    page: int = 1,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> HubPage:
    """Return one page of the filtered submissions in the requested order, and their count.

    Raises InvalidSort for a sort, direction, page or page size outside the
    allowed sets. A request for a page past the end returns the last page.
    """
    check_page_request(sort, direction, page, page_size)
    condition, parameters = where(filters)
    with store.reading(ledger) as connection:
        total = connection.execute(f"SELECT count(*) FROM submissions AS s WHERE {condition}", parameters).fetchone()[0]
        return _read_page(connection, filters, total, sort, direction, page, page_size)


@dataclass(frozen=True)
class HubView:
    """Everything one Replay Hub view shows from the ledger: the tiles and one page of the table."""

    tiles: HubTiles
    page: HubPage


def hub_view(
    ledger: Path,
    filters: Filters,
    sort: str = DEFAULT_SORT,
    direction: str = DEFAULT_DIRECTION,
    page: int = 1,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> HubView:
    """Return the tiles and one sorted page for the filters, read in one open of the ledger.

    Opening the ledger costs more than a small query (15 to 60 ms on a shared
    2-core machine with DuckDB 2.0.1), so a view pays it once. The page's count
    is the Submissions tile. Raises InvalidSort like `submissions_page`.
    """
    check_page_request(sort, direction, page, page_size)
    with store.reading(ledger) as connection:
        tiles = _read_tiles(connection, filters)
        rows = _read_page(connection, filters, tiles.current.submissions, sort, direction, page, page_size)
    return HubView(tiles, rows)


def overview(ledger: Path) -> LedgerOverview:
    """Return the ledger's overall contents: submissions, ingests by origin, deploy markers, deployments."""
    with store.reading(ledger) as connection:
        row = connection.execute(
            """
            SELECT (SELECT count(*) FROM submissions),
                   (SELECT count(*) FROM ingest_log WHERE origin = ?),
                   (SELECT count(*) FROM ingest_log WHERE origin <> ?),
                   (SELECT count(*) FROM deploys),
                   (SELECT max(finished_at) FROM ingest_log),
                   (SELECT coalesce(list(DISTINCT deployment ORDER BY deployment), []) FROM submissions)
            """,
            [DEMO_ORIGIN, DEMO_ORIGIN],
        ).fetchone()
    return LedgerOverview(*row[:5], deployments=tuple(row[5]))
