"""Recognising input shapes and streaming records out of them with their location.

Shapes: a single record object, a JSON array, an export envelope (an object
holding the list under ``items``, ``results``, ``data`` or ``submissions``),
JSON Lines, any of these gzip-compressed (detected by the magic bytes, whatever
the file is called), folders (recursive) and standard input.

JSON Lines records are handed on as raw text so the fast validation path can
parse them; documents (arrays, envelopes, single objects) are parsed as a
stream of events, so a single-line page of hundreds of megabytes never sits in
memory whole.
"""

from __future__ import annotations

import gzip
import io
import re
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import ijson
import numpy as np

from ledger.normalize import pairs_to_dict, _Pairs

GZIP_MAGIC = b"\x1f\x8b"
ENVELOPE_KEYS = ("items", "results", "data", "submissions")
JSON_SUFFIXES = {".json", ".jsonl", ".ndjson", ".gz"}
LINE_SUFFIXES = {".jsonl", ".ndjson"}
STDIN_NAME = "<stdin>"
_RUN_IN_NAME = re.compile(r"(?:^|_)(run[-_.A-Za-z0-9]*)$", re.IGNORECASE)
# The first line of a file that is not named as JSON Lines is read whole to decide its
# shape, but only up to this size; a longer first line is a document, not a record a line.
_SNIFF_LIMIT = 1 << 20


class SourceError(Exception):
    """A source could not be opened or read at all (missing file, permission, not JSON)."""


@dataclass(slots=True)
class RawRecord:
    """One record as read: raw JSON text (JSON Lines) or a parsed value, or a read error."""

    location: str
    text: bytes | None = None
    value: Any = None
    error: str | None = None
    run_id_hint: str | None = None
    line: int | None = None


@dataclass
class SourceFile:
    """A file (or standard input) to read, with what reading it found beyond records."""

    name: str
    path: Path | None
    shape: str = "unknown"
    compressed: bool = False
    warnings: list[str] = field(default_factory=list)


def run_id_from_name(name: str) -> str | None:
    """Return the run id a file name carries, as in ``results_run-demo-1.json``, or None."""
    stem = Path(name).name
    for suffix in (".gz", ".json", ".jsonl", ".ndjson"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    match = _RUN_IN_NAME.search(stem)
    return match.group(1) if match else None


def find_sources(paths: list[str]) -> tuple[list[SourceFile], list[str]]:
    """Expand paths (``-`` is standard input, folders are walked) into sources; return (sources, skipped notes).

    Raises SourceError for a path that does not exist, and for a CSV file named
    directly (in a folder, one is skipped with a note): CSV files are deploy logs.
    """
    sources: list[SourceFile] = []
    skipped: list[str] = []
    for raw in paths:
        if raw == "-":
            sources.append(SourceFile(name=STDIN_NAME, path=None))
            continue
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                relative = child.relative_to(path)
                if any(part.startswith(".") for part in relative.parts) or not child.is_file():
                    continue
                if child.suffix.lower() in JSON_SUFFIXES or _starts_with_gzip(child):
                    sources.append(SourceFile(name=str(child), path=child))
                elif child.suffix.lower() == ".csv":
                    skipped.append(f"{child}: skipped; CSV files are deploy logs, load them with "
                                   "`replay-ledger deploys import`")
                else:
                    skipped.append(f"{child}: skipped, not a JSON, JSON Lines or gzip file")
        elif path.is_file() and path.suffix.lower() == ".csv":
            raise SourceError(f"{raw}: is a CSV file, and CSV files are deploy logs; load it with "
                              f"`replay-ledger deploys import {raw}`")
        elif path.is_file():
            sources.append(SourceFile(name=str(path), path=path))
        elif path.exists():
            raise SourceError(f"{raw}: not a regular file or folder")
        else:
            raise SourceError(f"{raw}: no such file or folder; check the path")
    return sources, skipped


def _starts_with_gzip(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(2) == GZIP_MAGIC
    except OSError:
        return False


def open_source(source: SourceFile) -> IO[bytes]:
    """Open a source for reading bytes, decompressing gzip found by its magic bytes."""
    try:
        # A buffer as large as the sniff limit lets `peek` see a long first line of a file whole.
        raw = sys.stdin.buffer if source.path is None else source.path.open("rb", buffering=_SNIFF_LIMIT)
    except OSError as error:
        raise SourceError(f"{source.name}: cannot be opened: {error.strerror}") from None
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)
    if buffered.peek(2)[:2] == GZIP_MAGIC:
        source.compressed = True
        return io.BufferedReader(_Gunzip(buffered), buffer_size=_SNIFF_LIMIT)
    return buffered


class TruncatedGzip(EOFError):
    """A gzip stream ended before its end marker; everything before the break was returned."""


class _Gunzip(io.RawIOBase):
    """Decompress a gzip stream (several members too) without losing the data before a truncation.

    gzip.GzipFile raises at a truncated end and drops what it decompressed in that
    call; this reader returns every byte it could decompress first, then raises
    TruncatedGzip on the next read.
    """

    def __init__(self, compressed: IO[bytes]):
        self.compressed = compressed
        self.decompressor = zlib.decompressobj(wbits=31)
        self.pending = b""
        self.finished = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.pending and not self.finished:
            if self.decompressor.unconsumed_tail:
                block = self.decompressor.unconsumed_tail
            else:
                block = self.compressed.read(1 << 16)
            if not block:
                self.finished = True
                if not self.decompressor.eof:
                    raise TruncatedGzip("the gzip data ended before its end marker; the file is truncated")
                break
            try:
                self.pending = self.decompressor.decompress(block, 1 << 20)
            except zlib.error as error:
                self.finished = True
                raise TruncatedGzip(f"the gzip data is corrupt: {error}") from None
            if self.decompressor.eof and self.decompressor.unused_data:
                # Another gzip member follows (as `cat a.gz b.gz` makes).
                rest = self.decompressor.unused_data
                self.decompressor = zlib.decompressobj(wbits=31)
                self.pending += self.decompressor.decompress(rest, 1 << 20)
        count = min(len(buffer), len(self.pending))
        buffer[:count] = self.pending[:count]
        self.pending = self.pending[count:]
        return count


@dataclass(slots=True)
class LineChunk:
    """Consecutive raw lines of a JSON Lines source, the first numbered `first_line`; blank lines included.

    Line ``i`` is ``data[starts[i]:starts[i + 1]]`` with its line break, so the
    lines become an Arrow string array over `data` without a copy.
    """

    first_line: int
    data: bytes
    starts: np.ndarray

    def __len__(self) -> int:
        return len(self.starts) - 1

    @property
    def lines(self) -> list[bytes]:
        """The lines as separate byte strings, without their line breaks (slow: for the rare odd chunk)."""
        starts = self.starts.tolist()
        return [self.data[start:end].rstrip(b"\r\n") for start, end in zip(starts, starts[1:])]


CHUNK_BYTES = 8 << 20


def read_records(source: SourceFile, *, line_chunks: bool = False) -> Iterator[RawRecord | LineChunk]:
    """Yield every record of a source with its location; read errors are yielded as records with `error`.

    With `line_chunks`, a JSON Lines source is yielded as `LineChunk`s of raw
    lines instead of one record a line, for callers that validate lines in bulk.
    """
    stream = open_source(source)
    try:
        try:
            head = stream.peek(_SNIFF_LIMIT)[:_SNIFF_LIMIT]
        except (OSError, EOFError, gzip.BadGzipFile) as error:
            yield RawRecord(location=source.name, error=f"cannot be read: {error}")
            return
        if head.startswith(b"\xef\xbb\xbf"):
            stream.read(3)
            head = head[3:]
        first = head.lstrip()[:1]
        if _is_json_lines(source, head, first):
            source.shape = "json-lines"
            yield from (_read_line_chunks(source, stream) if line_chunks else _read_lines(source, stream))
        elif first in (b"[", b"{"):
            yield from _read_document(source, stream)
        elif not first:
            source.shape = "empty"
            source.warnings.append(f"{source.name}: the file is empty")
        else:
            source.shape = "unknown"
            yield RawRecord(
                location=source.name,
                error=f"does not start like JSON (first character {first.decode('latin-1')!r}); "
                      "give a JSON, JSON Lines or gzip file",
            )
    except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as error:
        yield RawRecord(location=source.name, error=f"reading failed: {error}")
    finally:
        if source.path is not None:
            stream.close()


def _is_json_lines(source: SourceFile, head: bytes, first: bytes) -> bool:
    name = source.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if Path(name).suffix in LINE_SUFFIXES:
        return True
    if first != b"{":
        return False
    stripped = head.lstrip()
    end = stripped.find(b"\n")
    if end < 0:
        return False
    import orjson

    try:
        orjson.loads(stripped[:end])
    except orjson.JSONDecodeError:
        return False
    return bool(stripped[end:].strip())


def _read_lines(source: SourceFile, stream: IO[bytes]) -> Iterator[RawRecord]:
    blank = True
    for number, line in enumerate(stream, start=1):
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        line = line.strip()
        if line:
            blank = False
            yield RawRecord(location=f"{source.name}:{number}", text=line, line=number)
    if blank:
        source.shape = "empty"
        source.warnings.append(f"{source.name}: the file is empty")


def _read_line_chunks(source: SourceFile, stream: IO[bytes]) -> Iterator[LineChunk]:
    """Split a JSON Lines stream into chunks of whole lines, finding the line breaks with numpy."""
    carry = b""
    next_line = 1
    empty = True
    while True:
        # read1 returns what one underlying read gives, so the lines before a truncated
        # gzip end are yielded before the read that raises.
        block = stream.read1(CHUNK_BYTES)
        if not block:
            break
        if empty and block.strip():
            empty = False
        data = carry + block if carry else block
        breaks = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
        if not len(breaks):
            carry = data
            continue
        end = int(breaks[-1]) + 1
        carry = data[end:]
        starts = np.empty(len(breaks) + 1, np.int64)
        starts[0] = 0
        starts[1:] = breaks + 1
        chunk = LineChunk(next_line, data[:end] if carry else data, starts)
        if next_line == 1 and chunk.data.startswith(b"\xef\xbb\xbf"):
            chunk.starts[0] = 3
        yield chunk
        next_line += len(chunk)
    if carry:
        empty = empty and not carry.strip()
        chunk = LineChunk(next_line, carry, np.array([0, len(carry)], np.int64))
        if next_line == 1 and carry.startswith(b"\xef\xbb\xbf"):
            chunk.starts[0] = 3
        yield chunk
    if empty:
        source.shape = "empty"
        source.warnings.append(f"{source.name}: the file is empty")


def _read_document(source: SourceFile, stream: IO[bytes]) -> Iterator[RawRecord]:
    """Stream a JSON document: an array of records, an envelope, or one record."""
    events = ijson.parse(stream)
    top: dict[str, Any] = _Pairs()
    listed = 0
    envelope_key = None
    try:
        prefix, event, value = next(events)
        if event == "start_array":
            source.shape = "array"
            for position, item in enumerate(_array_items(events)):
                listed += 1
                yield RawRecord(location=f"{source.name}#/{position}", value=item)
            yield from _check_document_end(source, events)
            return
        # An object: an envelope when one of its keys holds the list, otherwise one record.
        for prefix, event, value in events:
            if event == "end_map":
                break
            key = value
            if key.lower() in ENVELOPE_KEYS and envelope_key is None:
                prefix, event, value = next(events)
                if event == "start_array":
                    envelope_key = key
                    for position, item in enumerate(_array_items(events)):
                        listed += 1
                        yield RawRecord(location=f"{source.name}#/{key}/{position}", value=item)
                    continue
                top[key] = _build_value(events, event, value)
            else:
                prefix, event, value = next(events)
                top[key] = _build_value(events, event, value)
    except ijson.JSONError as error:
        if envelope_key:
            where = f"{source.name}#/{envelope_key}/{listed}"
        elif source.shape == "array":
            where = f"{source.name}#/{listed}"
        else:
            where = source.name
        yield RawRecord(
            location=where,
            error=f"invalid JSON after {listed} records: {_first_line(error)}; the records before this point were read",
        )
        return
    if envelope_key is not None:
        source.shape = "envelope"
        _check_envelope_total(source, top, listed)
    else:
        source.shape = "object"
        yield RawRecord(location=source.name, value=top, run_id_hint=run_id_from_name(source.name))
    yield from _check_document_end(source, events)


def _check_document_end(source: SourceFile, events: Iterator) -> Iterator[RawRecord]:
    """Yield a read error when anything but white space follows the document, so no record is skipped silently."""
    try:
        next(events)
    except StopIteration:
        return
    except ijson.JSONError:
        pass
    yield RawRecord(
        location=source.name,
        error="has data after the end of the JSON document, which was not read; "
        "give one document a file, or one record a line in a .jsonl file",
    )


def _first_line(error: Exception) -> str:
    """Return the first line of a parser's message (yajl appends a multi-line pointer)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _check_envelope_total(source: SourceFile, meta: dict, listed: int) -> None:
    total = meta.get("total")
    skip = meta.get("skip") or 0
    if isinstance(total, int) and isinstance(skip, int):
        expected = max(0, total - skip)
        limit = meta.get("limit")
        if isinstance(limit, int):
            expected = min(expected, limit)
        if expected != listed:
            source.warnings.append(
                f"{source.name}: the envelope announced total {total} (skip {skip}, limit {limit}), "
                f"so {expected} records on this page, but it held {listed}; another page may be missing"
            )


def _array_items(events: Iterator) -> Iterator[Any]:
    """Yield each element of the array whose start event was just read.

    Each element is built whole from its events, so the next event at this level
    is either the start of the next element or the end of the array.
    """
    for _prefix, event, value in events:
        if event == "end_array":
            return
        yield _build_value(events, event, value)


def _build_value(events: Iterator, event: str, value: Any) -> Any:
    """Build one JSON value from its first event and the events after it."""
    if event not in ("start_map", "start_array"):
        return value
    builder = ijson.ObjectBuilder(map_type=_Pairs)
    builder.event(event, value)
    depth = 1
    for _prefix, inner_event, inner_value in events:
        builder.event(inner_event, inner_value)
        if inner_event in ("start_map", "start_array"):
            depth += 1
        elif inner_event in ("end_map", "end_array"):
            depth -= 1
            if depth == 0:
                return builder.value
    raise ijson.IncompleteJSONError("the document ended inside a value")


__all__ = [
    "LineChunk",
    "RawRecord",
    "SourceError",
    "SourceFile",
    "find_sources",
    "pairs_to_dict",
    "read_records",
    "run_id_from_name",
]
