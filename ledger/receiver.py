"""The receiver: the platform's replay API over the ledger, for the Agent Sentinel SDK and for pulls.

Endpoints:

- ``POST /api/v1/replay/{run_id}/results``: a replay result as the SDK posts
  it; ``201`` with the stored submission once it is durable.
- ``POST /api/v1/ingest``: the SDK's recorded action batches; ``202``.
- ``GET /api/v1/replay/history/?skip=&limit=`` and
  ``GET /api/v1/replay/history/{run_id}``: submissions newest first.
- ``GET /api/v1/health``, and FastAPI's ``/docs`` and ``/openapi.json``.

Every endpoint but health and the docs takes ``Authorization: ApiKey <key>``
or ``Bearer <key>``; the key decides the deployment of what it posts. Reads
see every deployment, as the platform's org-wide history does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import sys
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledger import journal, store
from ledger.actions import MAX_ENTRIES, parse_action_batch
from ledger.batch_writer import BatchWriter, IdempotencyConflict, WriterOverloaded, WriterStopped
from ledger.http_limits import RejectionLog, RequestLimits, error_body, header_deadline_protocol, request_id_of
from ledger.keys import ApiKey, KeyRing, key_from_header, read_keys_file
from ledger.models import ReplayResult
from ledger.normalize import RecordRejected, parse_exact
from ledger.posts import PostLimits, PostRejected, build_post
from ledger.queries.history import DEFAULT_LIMIT, MAX_LIMIT, HistoryPage, history_page, run_history

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MAX_BODY_BYTES = 1024 * 1024
MAX_BATCH_BODY_BYTES = 16 * 1024 * 1024
READ_TIMEOUT_SECONDS = 10.0
NO_AUTH_DEPLOYMENT = "local"
KEY_REFRESH_SECONDS = 1.0
RETRY_AFTER_SECONDS = 1


class ReceiverConfigError(Exception):
    """The receiver's settings are invalid (for example --no-auth on a public address)."""


@dataclass(frozen=True)
class ReceiverConfig:
    """Everything a receiver is started with."""

    ledger: Path
    keys_file: Path | None = None
    no_auth: bool = False
    max_body: int = MAX_BODY_BYTES
    max_batch_body: int = MAX_BATCH_BODY_BYTES
    read_timeout: float = READ_TIMEOUT_SECONDS
    limits: PostLimits = PostLimits()
    max_entries: int = MAX_ENTRIES
    queue_limit: int = 10_000
    write_budget: float = store.WRITE_BUDGET_SECONDS
    # How often the writer reloads keys from the ledger and merges its inbox when idle.
    maintenance_seconds: float = 2.0


class ApiError(Exception):
    """An error response in the receiver's one JSON shape."""

    def __init__(self, status: int, errors: list[tuple[str, str]], headers: dict[str, str] | None = None):
        super().__init__(errors)
        self.status = status
        self.errors = errors
        self.headers = headers or {}


class KeySource:
    """The keys a receiver accepts, from the ledger (reloaded by the writer) or from a keys file."""

    def __init__(self, ledger: Path, keys_file: Path | None):
        self.ledger = ledger
        self.keys_file = keys_file
        self.ring = KeyRing([])
        self._file_checked = 0.0
        self._file_version: tuple | None = None
        self._last_refresh = 0.0
        self._refreshing: asyncio.Future | None = None

    def load(self) -> None:
        """Load every key now; used once at start. Raises LedgerBusy when the ledger stays locked for 2 s."""
        if self.keys_file is not None:
            self._load_file()
        else:
            self.from_rows(store.api_keys(self.ledger, budget=2.0))

    def from_rows(self, rows: list[tuple]) -> None:
        self.ring = KeyRing([ApiKey(*row) for row in rows])

    def _load_file(self) -> None:
        try:
            info = self.keys_file.stat()
            version = (info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            version = None
        if version != self._file_version:
            self.ring = KeyRing(read_keys_file(self.keys_file))
            self._file_version = version

    def check_file(self) -> None:
        """Reload the keys file when it changed, looking at most once a second."""
        now = time.monotonic()
        if self.keys_file is None or now - self._file_checked < KEY_REFRESH_SECONDS:
            return
        self._file_checked = now
        try:
            self._load_file()
        except Exception as error:  # a half-written or broken file: keep the keys in use
            log.error("keys file %s could not be reloaded, the previous keys stay in use: %s", self.keys_file, error)

    async def refresh_for_unknown(self, writer: BatchWriter) -> None:
        """Reload keys from the ledger now (at most once a second), so a key added a moment ago works."""
        if self.keys_file is not None:
            return
        if self._refreshing is not None and not self._refreshing.done():
            await asyncio.shield(self._refreshing)
            return
        if time.monotonic() - self._last_refresh < KEY_REFRESH_SECONDS:
            return
        self._last_refresh = time.monotonic()
        self._refreshing = asyncio.wrap_future(writer.refresh())
        try:
            await asyncio.wait_for(asyncio.shield(self._refreshing), timeout=store.WRITE_BUDGET_SECONDS + 1)
        except Exception as error:
            log.warning("reloading API keys failed: %s", error)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_config(config: ReceiverConfig, host: str) -> None:
    """Raise ReceiverConfigError for settings that must not run."""
    if config.no_auth and not is_loopback(host):
        raise ReceiverConfigError(
            f"--no-auth is allowed only on a loopback address such as 127.0.0.1, not {host}; "
            "add a key with `replay-ledger keys add --deployment NAME` instead"
        )
    for name in ("max_body", "max_batch_body"):
        if getattr(config, name) < 1:
            raise ReceiverConfigError(f"{name.replace('_', '-')} must be at least 1 byte")
    if config.read_timeout <= 0:
        raise ReceiverConfigError("read-timeout must be more than 0 seconds")


class _ArrivalClock:
    """Microseconds since the epoch that increase strictly within the process, so arrival order is kept."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, time.time_ns() // 1000)
            return self._last


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def _error(request: Request, status: int, errors: list[tuple[str, str]], headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(errors, request_id_of(request.scope)), status_code=status,
                    media_type="application/json", headers=headers)


def create_app(config: ReceiverConfig) -> FastAPI:
    """Build the receiver app for one ledger; the batching writer starts and stops with the app's lifespan."""
    keys = KeySource(config.ledger, config.keys_file)
    writer = BatchWriter(config.ledger, budget=config.write_budget, queue_limit=config.queue_limit,
                         maintenance_seconds=config.maintenance_seconds,
                         on_keys=None if config.keys_file or config.no_auth else keys.from_rows,
                         rebuild=_rebuild)
    rejections = RejectionLog()
    arrival = _ArrivalClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not config.no_auth:
            try:
                keys.load()
            except store.LedgerBusy:
                log.warning("the ledger is busy, so API keys are loaded once it is free; until then posts get 401")
            if not len(keys.ring):
                log.warning("no active API keys for %s; add one with `replay-ledger keys add --deployment NAME`",
                            config.keys_file or config.ledger)
        else:
            log.warning("authentication is off (--no-auth): every post is stored as deployment %r", NO_AUTH_DEPLOYMENT)
        writer.start()
        log.info("receiver started for ledger %s", config.ledger)
        try:
            yield
        finally:
            writer.stop()
            log.info("receiver stopped after merging %d jobs in %d transactions", writer.merged_jobs, writer.merges)

    app = FastAPI(
        title="replay-ledger receiver",
        summary="The Agent Sentinel replay API, storing into a local replay ledger.",
        version="1",
        lifespan=lifespan,
    )
    app.state.writer = writer
    app.state.keys = keys

    async def deployment_of(request: Request) -> str:
        """Return the deployment of the request's API key; raise ApiError 401 when it has no valid key."""
        if config.no_auth:
            return NO_AUTH_DEPLOYMENT
        presented = key_from_header(request.headers.get("authorization"))
        if presented is None:
            _reject(request, 401, "missing or malformed Authorization header")
            raise ApiError(401, [("Authorization", "is missing; send 'Authorization: ApiKey <key>' or 'Bearer <key>'")],
                           {"WWW-Authenticate": "ApiKey, Bearer"})
        keys.check_file()
        key = keys.ring.authenticate(presented)
        if key is None and not keys.ring.knows(presented):
            await keys.refresh_for_unknown(writer)
            key = keys.ring.authenticate(presented)
        if key is None:
            _reject(request, 401, "invalid API key")
            raise ApiError(401, [("Authorization", "the API key is not valid; check it or ask for a new one")],
                           {"WWW-Authenticate": "ApiKey, Bearer"})
        return key.deployment

    def _reject(request: Request, status: int, reason: str) -> None:
        rejections(status, request_id_of(request.scope), request.client, reason)

    # A default value, not an annotation: annotations are strings here and would not resolve.
    key_deployment = Depends(deployment_of)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> Response:
        return _error(request, error.status, error.errors, error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        errors = [(".".join(str(part) for part in item["loc"] if part not in ("query", "path")), item["msg"])
                  for item in error.errors()]
        _reject(request, 422, "; ".join(f"{field}: {message}" for field, message in errors))
        return _error(request, 422, errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        message = {404: "not found; the API is under /api/v1/ (see /docs)", 405: "method not allowed here"}.get(
            error.status_code, str(error.detail))
        return _error(request, error.status_code, [("", message)], dict(error.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> Response:
        request_id = request_id_of(request.scope)
        log.error("request %s (%s %s) failed: %r", request_id, request.method, request.url.path, error, exc_info=error)
        return _error(request, 500, [("", f"internal error; the receiver's log has the details under request {request_id}")])

    @app.post(
        "/api/v1/replay/{run_id}/results",
        status_code=201,
        summary="Store a replay result",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": ReplayResult.model_json_schema()}}}},
        responses={201: {"description": "The stored submission"}, 401: {"description": "No valid API key"},
                   413: {"description": "Body too large"}, 422: {"description": "Invalid result"},
                   429: {"description": "Too many posts waiting; retry after Retry-After seconds"}},
    )
    async def post_result(run_id: str, request: Request, deployment: str = key_deployment) -> Response:
        request_id = request_id_of(request.scope)
        body = await request.body()
        received_at_us = arrival()
        idempotency_key = request.headers.get("idempotency-key")
        try:
            post = build_post(run_id, body, deployment=deployment, idempotency_key=idempotency_key,
                              request_id=request_id, received_at_us=received_at_us, limits=config.limits)
        except PostRejected as error:
            _reject(request, 422, str(error))
            raise ApiError(422, error.errors) from None
        line = journal.result_line(run_id=run_id, body=body, deployment=deployment, idempotency_key=idempotency_key,
                                   request_id=request_id, received_at_us=received_at_us,
                                   submission_id=post.submission.platform_id)
        try:
            outcome = await _stored(writer, request, post, line)
        except IdempotencyConflict:
            _reject(request, 422, "Idempotency-Key reused with another body")
            raise ApiError(422, [("Idempotency-Key", "was already used with a different body; "
                                                     "use a new key for a new result")]) from None
        headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
        return Response(outcome.response, status_code=201, media_type="application/json", headers=headers)

    @app.post("/api/v1/ingest", status_code=202, summary="Store a batch of recorded actions")
    async def post_actions(request: Request, deployment: str = key_deployment) -> Response:
        request_id = request_id_of(request.scope)
        body = await request.body()
        received_at_us = arrival()
        try:
            batch = parse_action_batch(parse_exact(body, "request body"), deployment=deployment, batch_id=request_id,
                                       received_at_us=received_at_us, max_entries=config.max_entries)
        except RecordRejected as error:
            _reject(request, 422, str(error))
            raise ApiError(422, [(error.field or "body", error.reason)]) from None
        line = journal.actions_line(body=body, deployment=deployment, batch_id=request_id, received_at_us=received_at_us)
        outcome = await _stored(writer, request, batch, line)
        if batch.rejected:
            _reject(request, 202, f"{len(batch.rejected)} of {len(batch.rows) + len(batch.rejected)} entries invalid")
        # Entries the ledger already has (a retried batch) are left out when the batch is merged.
        return _json({
            "run_id": batch.run_id, "accepted": outcome.accepted,
            "rejected": [{"field": item.field, "message": item.message} for item in batch.rejected],
        }, status=202)

    @app.get("/api/v1/replay/history/", summary="List submissions, newest first")
    @app.get("/api/v1/replay/history", include_in_schema=False)
    async def history(
        skip: Annotated[int, Query(ge=0, description="Submissions to skip from the newest.")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Submissions on the page.")] = DEFAULT_LIMIT,
        deployment: str = key_deployment,
    ) -> Response:
        await _merged(writer)
        page = await run_in_threadpool(history_page, config.ledger, skip, limit)
        return _json(_page(page))

    @app.get("/api/v1/replay/history/{run_id}", summary="List one run's submissions, newest first")
    async def run_history_endpoint(
        run_id: str,
        skip: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        deployment: str = key_deployment,
    ) -> Response:
        await _merged(writer)
        page = await run_in_threadpool(run_history, config.ledger, run_id, skip, limit)
        if page.total == 0:
            raise ApiError(404, [("run_id", f"no submissions for run {run_id[:80]!r}")])
        return _json({"run_id": run_id, **_page(page)})

    @app.get("/api/v1/health", summary="Whether the receiver runs, and how many jobs wait for the writer")
    async def health() -> Response:
        return _json({"status": "ok", "backlog": writer.backlog, "ledger": config.ledger.name})

    app.add_middleware(RequestLimits, limit_for=lambda path: config.max_batch_body if path == "/api/v1/ingest"
                       else config.max_body, read_timeout=config.read_timeout, rejections=rejections)
    app.state.rejections = rejections
    return app


def _rebuild(entry: dict[str, Any]):
    """Rebuild a journaled request into the writer's job, as when it was accepted (caps no longer apply)."""
    body = journal.body_bytes(entry)
    if entry["kind"] == "result":
        return build_post(entry["run_id"], body, deployment=entry["deployment"],
                          idempotency_key=entry["idempotency_key"], request_id=entry["request_id"],
                          received_at_us=entry["received_at_us"], limits=_NO_CAPS,
                          submission_id=entry["submission_id"])
    return parse_action_batch(parse_exact(body, "journal"), deployment=entry["deployment"],
                              batch_id=entry["batch_id"], received_at_us=entry["received_at_us"], max_entries=2**31)


_NO_CAPS = PostLimits(max_divergences=2**31, max_divergence_bytes=2**62)


async def _stored(writer: BatchWriter, request: Request, work, line: bytes):
    """Hand work to the writer and wait until it is durable; raise ApiError when it could not be stored."""
    try:
        future = writer.submit(work, line)
    except WriterOverloaded as error:
        raise ApiError(429, [("", f"the receiver is busy ({error}); retry after {RETRY_AFTER_SECONDS} s")],
                       {"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
    except WriterStopped as error:
        raise ApiError(503, [("", f"{error}; retry shortly")], {"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
    try:
        return await asyncio.wrap_future(future)
    except IdempotencyConflict:
        raise
    except Exception:
        # The writer has logged the error with the ids of every job in its group.
        request_id = request_id_of(request.scope)
        raise ApiError(503, [("", f"the post could not be made durable; nothing was stored, retry shortly "
                                  f"(request {request_id})")], {"Retry-After": str(RETRY_AFTER_SECONDS)}) from None


async def _merged(writer: BatchWriter) -> None:
    """Wait until the posts acknowledged so far are merged, so a read after a post sees it."""
    if writer.backlog:
        await asyncio.wrap_future(writer.sync())


def _page(page: HistoryPage) -> dict[str, Any]:
    return {"items": page.items, "total": page.total, "skip": page.skip, "limit": page.limit}


def make_server(config: ReceiverConfig, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT):
    """Return (uvicorn server, bound socket) for a receiver; `port` 0 picks a free port.

    Raises ReceiverConfigError for invalid settings and OSError when the address cannot be bound.
    """
    import uvicorn

    check_config(config, host)
    app = create_app(config)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this on Linux. uvicorn writes a response's head and
    # body separately, and without it Nagle's algorithm delays the body until the
    # client's delayed ACK, about 40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    uvicorn_config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ws="none",
        http=header_deadline_protocol(config.read_timeout, app.state.rejections),
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
    )
    return uvicorn.Server(uvicorn_config), sock


def serve(config: ReceiverConfig, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Run a receiver until interrupted."""
    # The merge thread's Python work would otherwise keep request handling waiting
    # for up to the default 5 ms switch interval at a time.
    sys.setswitchinterval(0.001)
    server, sock = make_server(config, host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    log.info("receiver listening on http://%s:%d (ledger %s, %s)", bound_host, bound_port, config.ledger,
                "no authentication" if config.no_auth else f"keys from {config.keys_file or 'the ledger'}")
    server.run(sockets=[sock])


def merge_left_journals(ledger: Path, *, timeout: float = 60.0) -> int:
    """Merge the journals that stopped receivers left in the ledger's inbox; return how many files there were.

    Writers other than the receiver call this, so posts acknowledged by a
    receiver that was stopped and never restarted still reach the ledger.
    """
    files = journal.left_behind(ledger)
    if not files:
        return 0
    writer = BatchWriter(ledger, rebuild=_rebuild)
    writer.start()
    try:
        writer.sync().result(timeout)
    finally:
        writer.stop()
    return len(files)
