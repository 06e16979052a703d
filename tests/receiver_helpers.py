"""Helpers shared by the receiver, SDK and pull tests: a real uvicorn server in a thread or a process, keys, bodies."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from ledger import keys, store
from ledger.http_limits import header_deadline_protocol
from ledger.receiver import ReceiverConfig, create_app

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "ledger.cli"]


def add_key(ledger: Path, deployment: str) -> str:
    """Store a new key for `deployment` in the ledger and return the whole key."""
    key_id, whole = keys.new_key()
    store.add_api_key(ledger, key_id, deployment, keys.hash_key(whole), "test")
    return whole


def sdk_body(**changes: Any) -> dict[str, Any]:
    """The body the SDK posts for a 3-action replay with two divergences, with `changes` applied."""
    body = {
        "status": "partial",
        "actions_replayed": 3,
        "actions_total": 3,
        "divergences_detected": 2,
        "divergences": [
            {"type": "input_mismatch", "action": "fetch_data", "index": 0,
             "expected_inputs": {"args": ["https://example.com/a"], "kwargs": {"ts": "2026-12-04T19:34:47.590247"}},
             "actual_inputs": {"args": ["https://example.com/a"], "kwargs": {"ts": "2026-12-04T19:34:47.595188"}}},
            {"type": "action_mismatch", "expected": "summarize", "actual": "fetch_data", "index": 1},
        ],
        "cost_savings": 0.09000000000000001,
    }
    body.update(changes)
    return body


@contextmanager
def running(app: Callable, config: ReceiverConfig) -> Iterator[str]:
    """Serve an ASGI app on a free port of 127.0.0.1 in a thread; yield its base URL; stop it afterwards."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    rejections = getattr(getattr(app, "state", None), "rejections", None)
    server = uvicorn.Server(uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", ws="none", timeout_keep_alive=5,
        http=header_deadline_protocol(config.read_timeout, rejections or (lambda *args: None)),
    ))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test receiver did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)


@contextmanager
def receiver(config: ReceiverConfig) -> Iterator[str]:
    """Run the real receiver app for `config` in a thread; yield its base URL."""
    with running(create_app(config), config) as url:
        yield url


@contextmanager
def receiver_process(ledger: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """Run `replay-ledger serve` as its own process on a free port; yield (base URL, process, log file)."""
    log_file = ledger.with_name(ledger.name + ".serve.log")
    handle = log_file.open("wb")
    process = subprocess.Popen(
        [*CLI, "serve", "--db", str(ledger), "--port", "0", *extra],
        stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})},
    )
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the receiver did not start: {log_file.read_text()[-2000:]}")
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log_file.read_text())
            url = match.group(1) if match else None
            time.sleep(0.05)
        while True:
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the receiver did not respond: {log_file.read_text()[-2000:]}")
            time.sleep(0.05)
        yield url, process, log_file
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        handle.close()


def rss_bytes(pid: int) -> int:
    """Return a process's resident memory from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
