"""The cells of the Explore page's two tables: the submissions table and the SQL box's result.

Pure functions from query results to pandas frames. They call no Streamlit
element. Text from data stays text, and money is shown exactly as stored.
"""

from __future__ import annotations

from datetime import date, datetime, tzinfo
from decimal import Decimal
from typing import Any

import orjson
import pandas as pd

from ledger import formatting
from ledger.queries import explore, sandbox
from ledger.ui.links import run_url
from ledger.ui.status import status_tag

PREVIEW_CHARS = 80
# Integers past 2**53 lose digits as JavaScript numbers, so the SQL box shows them as text.
SAFE_INTEGER = 2**53


def cell(value: Any, kind: str, zone: tzinfo) -> Any:
    """Return a value of an Explore column as the table shows it; text from data stays text."""
    if value is None:
        return None if kind in ("count", "flag") else formatting.MISSING
    if kind == "time":
        return formatting.timestamp(value, zone)
    if kind == "money":
        return formatting.exact_money(value)
    if kind == "share":
        return formatting.percent(value)
    if kind == "list":
        return ", ".join(str(item) for item in value)
    if kind == "json":
        return formatting.preview(orjson.loads(value) if isinstance(value, str) else value, PREVIEW_CHARS)
    if kind == "flag":
        return "yes" if value else "no"
    return value


def table_frame(page: explore.ExplorePage, zone: tzinfo) -> pd.DataFrame:
    """Build the submissions table: run links, status tags, and money padded to the column's decimals."""
    columns: dict[str, list] = {}
    for index, key in enumerate(page.columns):
        column = explore.COLUMNS[key]
        values = [row[index] for row in page.rows]
        if key == "run_id":
            columns[column.label] = [run_url(run_id) for run_id in values]
        elif key == "status":
            columns[column.label] = [[status_tag(status, aborted)] for status, aborted in zip(values, page.strict_aborts)]
        elif column.kind == "money":
            places = formatting.money_places(values)
            columns[column.label] = [formatting.exact_money(value, places) for value in values]
        else:
            columns[column.label] = [cell(value, column.kind, zone) for value in values]
    return pd.DataFrame(columns)


def result_frame(result: sandbox.QueryResult, zone: tzinfo) -> pd.DataFrame:
    """Build a frame in which each column contains one kind of value: numbers, booleans or text."""
    names: list[str] = []
    for name in result.columns:
        unique, number = name, 2
        while unique in names:
            unique, number = f"{name} ({number})", number + 1
        names.append(unique)
    data = {}
    for index, name in enumerate(names):
        values = [row[index] for row in result.rows]
        data[name] = column_values(values, zone)
    return pd.DataFrame(data, columns=names)


def column_values(values: list[Any], zone: tzinfo) -> list[Any]:
    """Return a result column unchanged when it is all booleans, safe integers or floats, else as text."""
    present = [value for value in values if value is not None]
    if all(isinstance(value, bool) for value in present):
        return values
    if all(isinstance(value, int) and not isinstance(value, bool) and abs(value) < SAFE_INTEGER
           for value in present):
        return values
    if all(isinstance(value, float) for value in present):
        return values
    return [None if value is None else value_text(value, zone) for value in values]


def value_text(value: Any, zone: tzinfo) -> str:
    """Format a value of any SQL type as text: exact decimals, times in `zone`, bytes as hex, lists previewed."""
    if isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.isoformat(sep=" ")
        return f"{formatting.timestamp(value, zone)} {formatting.zone_name(zone)}"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return formatting.preview(bytes(value).hex(), PREVIEW_CHARS)
    if isinstance(value, (list, tuple, dict)):
        return formatting.preview(value, PREVIEW_CHARS * 2)
    return str(value)
