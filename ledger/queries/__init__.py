"""Every read the app, the CLI and the HTTP API make, as SQL over the ledger.

Functions take the ledger path and plain values (never a connection), so the
app can cache their results by argument. Each opens the ledger read-only for
its own unit of work. Aggregates are computed in SQL and only what a caller
shows is fetched. Money comes back as `Decimal`, counts as `int`.

Submodules hold the reads of one screen each; this module contains the filters
they share and the four tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from ledger import store
from ledger.models import STATUSES


@dataclass(frozen=True)
class Filters:
    """The filters every page shares: a half-open time range, deployments and statuses (empty = all)."""

    start: datetime | None = None
    end: datetime | None = None
    deployments: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [status for status in self.statuses if status not in STATUSES]
        if unknown:
            raise ValueError(f"unknown status {unknown[0]!r}; use one of {', '.join(STATUSES)}")
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must carry a time zone, got {value.isoformat()}")

    def previous_period(self) -> "Filters | None":
        """Return the same filters over the period of equal length just before this one, if bounded."""
        if self.start is None or self.end is None:
            return None
        length = self.end - self.start
        return Filters(self.start - length, self.start, self.deployments, self.statuses)


def where(filters: Filters, alias: str = "s") -> tuple[str, list[Any]]:
    """Return a SQL condition on submissions (table alias `alias`) and its parameters."""
    conditions = ["TRUE"]
    parameters: list[Any] = []
    if filters.start is not None:
        conditions.append(f"{alias}.submitted_at >= ?")
        parameters.append(filters.start)
    if filters.end is not None:
        conditions.append(f"{alias}.submitted_at < ?")
        parameters.append(filters.end)
    if filters.deployments:
        conditions.append(f"{alias}.deployment IN ({', '.join('?' for _ in filters.deployments)})")
        parameters.extend(filters.deployments)
    if filters.statuses:
        conditions.append(f"{alias}.status IN ({', '.join('?' for _ in filters.statuses)})")
        parameters.extend(filters.statuses)
    return " AND ".join(conditions), parameters


@dataclass(frozen=True)
class Tiles:
    """The four headline numbers of a filtered view."""

    submissions: int
    actions_replayed: int
    actions_total: int
    divergences: int
    cost_saved: Decimal
    submissions_with_divergence: int = 0

    @property
    def divergence_rate(self) -> float | None:
        """Share of submissions with at least one divergence, or None with no submissions."""
        return None if not self.submissions else self.submissions_with_divergence / self.submissions


TILES_SQL = """
SELECT count(*)::BIGINT,
       coalesce(sum(actions_replayed), 0)::BIGINT,
       coalesce(sum(actions_total), 0)::BIGINT,
       coalesce(sum(divergences_detected), 0)::BIGINT,
       coalesce(sum(cost_savings), 0)::DECIMAL(38, 6),
       count(*) FILTER (WHERE divergences_detected > 0)::BIGINT
FROM submissions AS s
WHERE {where}
"""


def tiles(ledger: Path, filters: Filters) -> Tiles:
    """Return the tiles for the filtered submissions."""
    condition, parameters = where(filters)
    with store.reading(ledger) as connection:
        row = connection.execute(TILES_SQL.format(where=condition), parameters).fetchone()
    return Tiles(*row)


def tiles_by_deployment(ledger: Path, filters: Filters) -> list[tuple[str, Tiles]]:
    """Return the tiles of each deployment, largest first."""
    condition, parameters = where(filters)
    sql = TILES_SQL.format(where=condition).replace("SELECT count", "SELECT deployment, count", 1)
    sql += " GROUP BY deployment ORDER BY count(*) DESC, deployment"
    with store.reading(ledger) as connection:
        rows = connection.execute(sql, parameters).fetchall()
    return [(row[0], Tiles(*row[1:])) for row in rows]


def deployments(ledger: Path) -> list[str]:
    """Return every deployment that has submissions, sorted."""
    with store.reading(ledger) as connection:
        return [row[0] for row in connection.execute(
            "SELECT DISTINCT deployment FROM submissions ORDER BY deployment"
        ).fetchall()]


def time_span(ledger: Path) -> tuple[datetime | None, datetime | None]:
    """Return the first and last submission time in the ledger."""
    with store.reading(ledger) as connection:
        return connection.execute("SELECT min(submitted_at), max(submitted_at) FROM submissions").fetchone()


def deploy_markers(ledger: Path, deployments_filter: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Return deploy markers, oldest first, optionally for some deployments only."""
    sql = "SELECT deployment, version, deployed_at, note, origin FROM deploys"
    parameters: list[Any] = []
    if deployments_filter:
        sql += f" WHERE deployment IN ({', '.join('?' for _ in deployments_filter)})"
        parameters.extend(deployments_filter)
    sql += " ORDER BY deployed_at, deployment, version"
    with store.reading(ledger) as connection:
        rows = connection.execute(sql, parameters).fetchall()
    return [dict(zip(("deployment", "version", "deployed_at", "note", "origin"), row)) for row in rows]


EXPORT_COLUMNS = (
    "submission_id", "platform_id", "run_id", "deployment", "status", "actions_replayed", "actions_total",
    "divergences_detected", "cost_savings", "submitted_at", "ingested_at", "location", "flags", "extra",
)


def export_sql(filters: Filters, *, nested: bool) -> tuple[str, list[Any]]:
    """Return the query behind an export of filtered submissions, oldest first, with their divergences.

    With `nested`, divergences are a list of structs (Parquet, JSON Lines);
    otherwise one JSON text column (CSV).
    """
    condition, parameters = where(filters)
    columns = ", ".join(f"s.{name}" for name in EXPORT_COLUMNS)
    listed = (
        "list({'type': d.type, 'action': d.action, 'index': d.action_index, "
        "'expected': d.expected, 'actual': d.actual, 'detail': d.detail} ORDER BY d.position)"
    )
    divergences = listed if nested else f"to_json({listed})"
    sql = f"""
        SELECT {columns}, coalesce(d.divergences, {'[]' if nested else "'[]'"}) AS divergences
        FROM submissions AS s
        LEFT JOIN (
            SELECT d.submission_id, {divergences} AS divergences
            FROM divergences AS d
            GROUP BY d.submission_id
        ) AS d USING (submission_id)
        WHERE {condition}
        ORDER BY s.submitted_at, s.submission_id
    """
    return sql, parameters
