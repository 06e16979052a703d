"""Cached calls of `ledger.queries` functions, renewed whenever the ledger changes.

A result is cached under the query's name, the ledger path, the ledger's data
version and the call's arguments. Arguments must be plain values (text,
numbers, dates, tuples, and frozen dataclasses of those such as `Filters`).
Their `repr` is the key, which is cheaper than Streamlit hashing each argument
and exact for such values.

`store.data_version` reads only file metadata (size and modification time of
the ledger, its WAL and its inbox), so each call checks it. Any write to the
ledger makes a new key, so new data shows on the next rerun or browser reload
with no time-to-live to wait out. Results of older versions drop out when the
cache reaches `MAX_ENTRIES`.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import streamlit as st

from ledger import store
from ledger.receiver import merge_left_journals

log = logging.getLogger(__name__)

QUERIES_PACKAGE = "ledger.queries"
MAX_ENTRIES = 512
Result = TypeVar("Result")


class NotAQuery(TypeError):
    """A function given to `cached` is not a public function of the ledger.queries package."""


@dataclass(frozen=True)
class CachedResult:
    """A query result and the time it was read from the ledger (UTC)."""

    value: Any
    read_at: datetime


def _query_name(query: Callable) -> tuple[str, str]:
    module = getattr(query, "__module__", "") or ""
    name = getattr(query, "__name__", "") or ""
    in_package = module == QUERIES_PACKAGE or module.startswith(QUERIES_PACKAGE + ".")
    if not in_package or name.startswith("_") or getattr(importlib.import_module(module), name, None) is not query:
        raise NotAQuery(f"{module}.{name} is not a public function of {QUERIES_PACKAGE}; only queries are cached")
    return module, name


_PLAIN_TYPES = (str, int, float, bool, type(None), Decimal, datetime, date, timedelta, Path)


def _check_plain(value: Any, name: str) -> None:
    """Raise TypeError unless `value` is a plain value whose repr identifies it."""
    if isinstance(value, _PLAIN_TYPES):
        return
    if isinstance(value, tuple):
        for item in value:
            _check_plain(item, name)
        return
    if dataclasses.is_dataclass(value) and not isinstance(value, type) and value.__dataclass_params__.frozen:
        for item in dataclasses.fields(value):
            _check_plain(getattr(value, item.name), name)
        return
    raise TypeError(
        f"argument {name} of a cached query is a {type(value).__name__}; pass text, numbers, dates, "
        "tuples or frozen dataclasses of them"
    )


@st.cache_data(max_entries=MAX_ENTRIES, show_spinner=False)
def _call(key: str, _module: str, _name: str, _ledger: str, _args: tuple, _kwargs: dict) -> CachedResult:
    """Run one query. Streamlit hashes only `key`, which names the query, ledger, data version and arguments."""
    query = getattr(importlib.import_module(_module), _name)
    return CachedResult(query(Path(_ledger), *_args, **_kwargs), datetime.now(timezone.utc))


def cached_result(query: Callable[..., Result], ledger: Path, *args: Any, **kwargs: Any) -> CachedResult:
    """Call `query(ledger, *args, **kwargs)` through the cache and return its value with the time it was read.

    `query` must be a public function of `ledger.queries` that takes the ledger
    path first and plain, hashable values after it (never a connection).
    Exceptions such as `store.LedgerMissing` and `store.LedgerBusy` pass
    through and are not cached.
    """
    module, name = _query_name(query)
    for position, value in enumerate(args):
        _check_plain(value, f"#{position + 1}")
    for keyword, value in kwargs.items():
        _check_plain(value, keyword)
    key = repr((module, name, str(ledger), store.data_version(ledger), args, sorted(kwargs.items())))
    return _call(key, module, name, str(ledger), args, kwargs)


def cached(query: Callable[..., Result], ledger: Path, *args: Any, **kwargs: Any) -> Result:
    """Call `query(ledger, *args, **kwargs)` through the cache and return its value; see `cached_result`."""
    return cached_result(query, ledger, *args, **kwargs).value


def clear() -> None:
    """Drop every cached query result of this process."""
    _call.clear()


def refresh(ledger: Path) -> str | None:
    """Merge the ledger's inbox and drop cached results; return a note for the user when the merge failed.

    Meant for a Refresh button's ``on_click``, after which Streamlit reruns the page.
    """
    note = None
    try:
        journals = merge_left_journals(ledger)
        if journals:
            log.info("refresh merged %d journals that a stopped receiver left in %s", journals, ledger)
        merged = store.drain_inbox(ledger)
        if merged:
            log.info("refresh merged %d inbox batches into %s", merged, ledger)
    except store.LedgerBusy:
        log.info("refresh left the inbox of %s for the next writer, because the ledger is busy", ledger)
        note = "The ledger is busy with another writer, so records waiting in its inbox show after the next write."
    except (OSError, duckdb.Error) as error:
        log.warning("refresh could not merge the inbox of %s: %s", ledger, error)
        note = "Records waiting in the ledger's inbox could not be merged; the app's log has the reason."
    clear()
    return note
