"""The receiver's journal: posts written and fsynced into the ledger's inbox before they are acknowledged.

Each line is one accepted request, as received, with what the receiver
assigned to it (id, deployment, arrival time), so replaying the line through
the same validation rebuilds exactly what was stored. The receiver merges
journal lines into the ledger in large transactions soon after. A journal
file is deleted once every line of it is in the ledger. A receiver that
starts finds the journals that a stopped receiver left and merges them, once.

Files are named ``receiver-<pid>-<start ns>-<number>.journal`` in the inbox
folder; other writers merge only ``*.duckdb`` batches there and leave these
alone.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from ledger import store

log = logging.getLogger(__name__)

SUFFIX = ".journal"
_NAME = re.compile(r"^receiver-(\d+)-(\d+)-(\d+)\.journal$")


class Journal:
    """Append-only journal files of one receiver process; `lock` orders appends and seals."""

    def __init__(self, ledger: Path):
        self.folder = store.inbox_path(ledger)
        self.prefix = f"receiver-{os.getpid()}-{time.time_ns()}"
        self.lock = threading.Lock()
        self._number = 0
        self._file = None
        self._path: Path | None = None

    def append(self, lines: list[bytes]) -> Path:
        """Write lines and fsync them; return the file they are in. Call with `lock` held."""
        if self._file is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._number += 1
            self._path = self.folder / f"{self.prefix}-{self._number:06d}{SUFFIX}"
            self._file = open(self._path, "ab", buffering=0)
            store.fsync_path(self.folder)
        self._file.write(b"".join(line + b"\n" for line in lines))
        os.fdatasync(self._file.fileno())
        return self._path

    def seal(self) -> Path | None:
        """Close the current file, so later appends go to a new one; return it (None if none was open)."""
        if self._file is None:
            return None
        self._file.close()
        sealed, self._file, self._path = self._path, None, None
        return sealed


def left_behind(ledger: Path) -> list[Path]:
    """Return the journal files of receivers that no longer run (this process's own excluded), oldest first.

    NOTE: a receiver counts as running while a process with its pid exists, so
    if the pid of a killed receiver is reused, its journals wait until that
    process ends too.
    """
    folder = store.inbox_path(ledger)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob(f"*{SUFFIX}"):
        match = _NAME.match(path.name)
        if match and int(match.group(1)) != os.getpid() and not store.process_alive(int(match.group(1))):
            found.append((int(match.group(2)), int(match.group(3)), path))
    return [path for _, _, path in sorted(found)]


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Return a journal's entries. A last line without its newline was never acknowledged, so it is skipped."""
    data = path.read_bytes()
    complete, _, torn = data.rpartition(b"\n")
    if torn:
        log.warning("%s ends in a partial line of %d bytes that was never acknowledged; skipping it", path.name, len(torn))
    return [orjson.loads(line) for line in complete.split(b"\n") if line]


def result_line(*, run_id: str, body: bytes, deployment: str, idempotency_key: str | None, request_id: str,
                received_at_us: int, submission_id: str) -> bytes:
    return orjson.dumps({
        "kind": "result", "run_id": run_id, "body": body.decode("utf-8"), "deployment": deployment,
        "idempotency_key": idempotency_key, "request_id": request_id, "received_at_us": received_at_us,
        "submission_id": submission_id,
    })


def actions_line(*, body: bytes, deployment: str, batch_id: str, received_at_us: int) -> bytes:
    return orjson.dumps({
        "kind": "actions", "body": body.decode("utf-8"), "deployment": deployment,
        "batch_id": batch_id, "received_at_us": received_at_us,
    })


def body_bytes(entry: dict[str, Any]) -> bytes:
    return entry["body"].encode("utf-8")
