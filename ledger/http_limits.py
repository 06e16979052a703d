"""What a client may send the receiver: body size, and how long it may take to send a request.

`RequestLimits` is ASGI middleware. It gives each request an id, answers
``413`` as soon as a body is known to exceed its cap (from ``Content-Length``
before reading anything, or while reading a chunked body), and ``408`` when
the body does not arrive within the read timeout. Memory stays bounded by the
cap, whatever the client sends.

A client that sends its request headers slowly never reaches the ASGI app, so
`header_deadline_protocol` extends uvicorn's h11 protocol with a timer that
cuts off a connection whose request headers are not complete in time.

Every error the receiver sends has one JSON shape, built by `error_body`:
``{"errors": [{"field": ..., "message": ...}], "request_id": ...}``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

log = logging.getLogger("ledger.receiver")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_BODY_METHODS = {"POST", "PUT", "PATCH"}


def error_body(errors: list[tuple[str, str]], request_id: str | None) -> bytes:
    """Return the receiver's JSON error body for (field, message) pairs."""
    return orjson.dumps({
        "errors": [{"field": field, "message": message} for field, message in errors],
        "request_id": request_id,
    })


class RejectionLog:
    """Logs rejected requests, at most `limit` lines per `period` seconds, then one line counting the rest."""

    def __init__(self, limit: int = 20, period: float = 10.0):
        self.limit = limit
        self.period = period
        self._window_start = 0.0
        self._logged = 0
        self._suppressed = 0

    def __call__(self, status: int, request_id: str | None, client: Any, reason: str) -> None:
        now = time.monotonic()
        if now - self._window_start >= self.period:
            if self._suppressed:
                log.warning("%d more rejected requests in the last %.0f s were not logged", self._suppressed, self.period)
            self._window_start = now
            self._logged = 0
            self._suppressed = 0
        if self._logged >= self.limit:
            self._suppressed += 1
            return
        self._logged += 1
        peer = f"{client[0]}:{client[1]}" if client else "unknown client"
        log.warning("rejected request %s from %s with %d: %s", request_id, peer, status, reason)


def request_id_of(scope: dict) -> str | None:
    return scope.get("state", {}).get("request_id")


class RequestLimits:
    """ASGI middleware: request ids, body size caps and a deadline for reading the body."""

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        *,
        limit_for: Callable[[str], int],
        read_timeout: float,
        rejections: RejectionLog,
    ):
        self.app = app
        self.limit_for = limit_for
        self.read_timeout = read_timeout
        self.rejections = rejections

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = send_id = request_id

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", send_id.encode())]}
            await send(message)

        if scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send_with_id)
            return
        body = await self._read_body(scope, receive, send_with_id)
        if body is None:
            return
        delivered = False

        async def replay() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_id)

    async def _read_body(self, scope: dict, receive: Callable, send: Callable) -> bytes | None:
        """Return the whole body, or None after answering 400, 408 or 413 (or when the client left)."""
        limit = self.limit_for(scope["path"])
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await self._reject(scope, send, 400, "Content-Length", f"is not a number of bytes: {declared[:40]!r}")
                return None
            if int(declared) > limit:
                await self._reject(scope, send, 413, "body",
                                   f"is {int(declared):,} bytes, more than the {limit:,} bytes allowed here")
                return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout
        chunks: list[bytes] = []
        size = 0
        while True:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                await self._reject(scope, send, 408, "body",
                                   f"did not arrive within {self.read_timeout:g} s ({size:,} bytes came); send it faster")
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._reject(scope, send, 413, "body", f"exceeds the {limit:,} bytes allowed here")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _reject(self, scope: dict, send: Callable, status: int, field: str, message: str) -> None:
        request_id = request_id_of(scope)
        self.rejections(status, request_id, scope.get("client"), f"{field}: {message}")
        payload = error_body([(field, message)], request_id)
        # The rest of the body is never read, so the connection cannot carry another request.
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": payload})


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1").strip()
    return None


def _request_id(scope: dict) -> str:
    given = _header(scope, b"x-request-id")
    if given and _REQUEST_ID.match(given):
        return given
    return uuid.uuid4().hex[:16]


def header_deadline_protocol(header_timeout: float, rejections: RejectionLog) -> type:
    """Return uvicorn's h11 protocol class, extended to close connections whose request headers come too slowly.

    The timer runs from the connection's start, and from the first byte of each
    later request on a kept-alive connection, until the headers are complete.
    NOTE: this reads uvicorn's own attributes (``conn``, ``transport``, ``cycle``),
    checked against uvicorn 0.55 with h11 0.16.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    timeout_body = error_body([("headers", f"did not arrive within {header_timeout:g} s")], None)
    timeout_response = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(timeout_body)).encode() + b"\r\n\r\n" + timeout_body
    )

    class HeaderDeadlineProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._header_timer = self.loop.call_later(header_timeout, self._headers_timed_out)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                if self._header_timer is None:
                    self._header_timer = self.loop.call_later(header_timeout, self._headers_timed_out)
            else:
                self._cancel_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_timed_out(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self.cycle is not None and not self.cycle.response_complete:
                return
            rejections(408, None, self.client, f"request headers did not arrive within {header_timeout:g} s")
            self.transport.write(timeout_response)
            self.transport.close()

    return HeaderDeadlineProtocol
