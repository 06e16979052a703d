"""Benchmark the receiver: sustained posts per second and p50/p99 latency at 1, 8 and 32 concurrent clients.

Both servers run in their own processes on 127.0.0.1 with the same uvicorn
settings: the real receiver (`replay-ledger serve`, durable writes into a fresh
ledger) and, as the baseline measured in the same run, a bare FastAPI endpoint
that reads the body and returns 201. The load comes from this process over
keep-alive connections with a minimal HTTP/1.1 client, so the client costs as
little CPU as possible on a small machine. Every level sends a bounded number
of posts and stops early after a bounded time.

    .venv/bin/python bench/receiver.py [--posts 2000] [--levels 1,8,32]

Prints one line per server and level, the ratio of the receiver's throughput
to the baseline's, the machine's load average, and checks that every post the
receiver acknowledged with 201 is in the ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from fastapi import Request, Response

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BODY = orjson.dumps({
    "status": "partial", "actions_replayed": 3, "actions_total": 3, "divergences_detected": 2,
    "divergences": [
        {"type": "input_mismatch", "action": "fetch_data", "index": 0,
         "expected_inputs": {"args": ["https://example.com/a"], "kwargs": {"ts": "2026-12-04T19:34:47.590247"}},
         "actual_inputs": {"args": ["https://example.com/a"], "kwargs": {"ts": "2026-12-04T19:34:47.595188"}}},
        {"type": "action_mismatch", "expected": "summarize", "actual": "fetch_data", "index": 1},
    ],
    "cost_savings": 0.09000000000000001,
})
LEVEL_SECONDS_MAX = 60.0


def serve_bare() -> None:
    """Run the baseline: a FastAPI endpoint on the receiver's path that reads the body and returns 201."""
    import uvicorn
    from fastapi import FastAPI

    from ledger.http_limits import RejectionLog, header_deadline_protocol

    app = FastAPI()

    @app.post("/api/v1/replay/{run_id}/results", status_code=201)
    async def results(run_id: str, request: Request) -> Response:
        await request.body()
        return Response(b"{}", status_code=201, media_type="application/json")

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, ws="none", timeout_keep_alive=5,
                                  http=header_deadline_protocol(10.0, RejectionLog()))).run(sockets=[sock])


def start(command: list[str], log_path: Path) -> tuple[subprocess.Popen, int]:
    handle = log_path.open("wb")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log_path.read_text())
        if match:
            time.sleep(0.5)
            return process, int(match.group(1))
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit(f"{command[:4]} did not start: {log_path.read_text()[-2000:]}")


async def one_client(port: int, key: str | None, numbers: list[int], latencies: list[float], failures: list[str],
                     deadline: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    auth = f"Authorization: ApiKey {key}\r\n" if key else ""
    try:
        for number in numbers:
            if time.perf_counter() > deadline:
                return
            head = (f"POST /api/v1/replay/run-bench-{number}/results HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
                    f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n").encode()
            started = time.perf_counter()
            writer.write(head + BODY)
            await writer.drain()
            status_line = await reader.readuntil(b"\r\n")
            headers = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", headers).group(1))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if b" 201 " not in status_line:
                failures.append(status_line.decode().strip())
    finally:
        writer.close()


async def run_level(port: int, key: str | None, clients: int, posts: int, first: int) -> dict:
    latencies: list[float] = []
    failures: list[str] = []
    numbers = list(range(first, first + posts))
    shares = [numbers[index::clients] for index in range(clients)]
    started = time.perf_counter()
    deadline = started + LEVEL_SECONDS_MAX
    await asyncio.gather(*(one_client(port, key, share, latencies, failures, deadline) for share in shares))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "clients": clients, "posts": len(latencies), "seconds": elapsed, "per_second": len(latencies) / elapsed,
        "p50_ms": statistics.median(ordered) * 1000, "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
        "failures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=2000, help="posts per level (default 2000)")
    parser.add_argument("--levels", default="1,8,32", help="concurrent clients per level (default 1,8,32)")
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve_bare:
        serve_bare()
        return
    levels = [int(level) for level in options.levels.split(",")]

    from ledger import keys, store

    folder = Path(tempfile.mkdtemp(prefix="bench-receiver-"))
    ledger = folder / "ledger.duckdb"
    store.create_empty(ledger)
    key_id, key = keys.new_key()
    store.add_api_key(ledger, key_id, "bench", keys.hash_key(key), "bench")
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    bare, bare_port = start([sys.executable, __file__, "--serve-bare"], folder / "bare.log")
    receiver, receiver_port = start([sys.executable, "-m", "ledger.cli", "serve", "--db", str(ledger), "--port", "0"],
                                    folder / "receiver.log")
    results = []
    try:
        number = 0
        for clients in levels:
            for name, port, credential in (("bare", bare_port, None), ("receiver", receiver_port, key)):
                result = asyncio.run(run_level(port, credential, clients, options.posts, number))
                number += options.posts
                result["server"] = name
                results.append(result)
                print(f"{name:>8} {clients:>3} clients: {result['posts']:>5} posts in {result['seconds']:6.2f} s = "
                      f"{result['per_second']:7.0f}/s, p50 {result['p50_ms']:6.1f} ms, p99 {result['p99_ms']:6.1f} ms"
                      + (f", {len(result['failures'])} not 201 (first: {result['failures'][0]})" if result["failures"] else ""))
    finally:
        for process in (bare, receiver):
            process.terminate()
            process.wait(30)
    print(f"load average after: {os.getloadavg()[0]:.2f} (1 min)")
    for clients in levels:
        bare_result, receiver_result = (next(r for r in results if r["clients"] == clients and r["server"] == name)
                                        for name in ("bare", "receiver"))
        print(f"{clients:>3} clients: receiver/bare throughput {receiver_result['per_second'] / bare_result['per_second']:.2f}")
    acknowledged = sum(r["posts"] - len(r["failures"]) for r in results if r["server"] == "receiver")
    with store.reading(ledger) as connection:
        stored = connection.execute("SELECT count(*) FROM submissions").fetchone()[0]
    print(f"receiver acknowledged {acknowledged} posts with 201; the ledger holds {stored}")
    shutil.rmtree(folder, ignore_errors=True)
    if stored != acknowledged:
        raise SystemExit("some acknowledged posts are missing from the ledger")


if __name__ == "__main__":
    main()
