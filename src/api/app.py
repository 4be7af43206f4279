"""The HTTP API: a thin FastAPI service over the ledger and its projections.

`create_app()` builds the application; its lifespan builds, once, the ledger (the
write side), a pool of read connections whose search_path is the ledger's schema,
the projection runner (unless told not to: `ledger project` may run it elsewhere)
and whatever background work the caller hands it (the service adds the audit chain
follower and the expiry sweeper, see `service.app`); and it closes them all at shutdown.
Routes only parse, authorise, call and map.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, Protocol

import psycopg
from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout
from starlette.requests import Request
from starlette.responses import JSONResponse

import projections
from api import (
    docs,
    metrics,
    problems,
    routes_audit,
    routes_group_buys,
    routes_money,
    routes_reads,
    routes_registry,
    routes_votes,
)
from api.auth import TokenVerifier
from api.models import Health, Readiness, StoppedFollowerView
from api.openapi import introduction, openapi_document
from api.problems import ApiProblemError
from api.ratelimit import WriteRateLimiter
from api.routes_common import Services
from api.settings import ApiSettings, get_settings
from eventlog.follower import stopped_followers
from ledger import limits
from ledger.application import Ledger
from ledger.database import ConnectionSettings, IdleCheck, database_url
from projections.runner import ProjectionRunner

log = logging.getLogger(__name__)

API_VERSION: Final = "1.0.0"
READINESS_PATH: Final = "/v1/ready"
"""Readiness, like liveness (/v1/health), answers without a token: load balancers ask."""

ROUTERS: Final = (routes_registry.router, routes_money.router, routes_reads.router,
                  routes_audit.router, routes_votes.router, routes_group_buys.router)


class BackgroundWork(Protocol):
    """Work the service runs beside the API for its lifetime (a follower, a sweeper)."""

    def stop(self) -> None: ...


StartWork = Callable[[Ledger, "ConnectionPool[psycopg.Connection[Any]]", ApiSettings],
                     BackgroundWork | None]
"""Starts one piece of background work once the ledger and the read pool exist."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]



BODY_METHODS: Final = frozenset({"POST", "PUT"})
"""The methods this API reads a body for (a body sent with another is never parsed)."""


class RequestBodyCheck:
    """Refuse request bodies over `body_bytes_max` (413) and bodies of writes that are not
    UTF-8 (400 `invalid_encoding`), before anything parses them or asks who is calling.

    The body is read here (at most `body_bytes_max` bytes are ever buffered) and handed
    on whole, so a chunked body without Content-Length is bounded too. Every body this
    API accepts is JSON, and JSON between systems is UTF-8 (RFC 8259): bytes that do not
    decode as UTF-8 (a UTF-16 body included) are refused whatever the route.
    """

    def __init__(self, app: ASGIApp, body_bytes_max: int) -> None:
        self.app = app
        self.body_bytes_max = body_bytes_max

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.body_bytes_max + 1
                if declared > self.body_bytes_max:
                    await self._refuse(scope, receive, send, ApiProblemError(
                        "body_too_large", f"at most {self.body_bytes_max} bytes"),
                        {"Connection": "close"})
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.body_bytes_max:
                await self._refuse(scope, receive, send, ApiProblemError(
                    "body_too_large", f"at most {self.body_bytes_max} bytes"),
                    {"Connection": "close"})
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            if scope["method"] in BODY_METHODS:
                body.decode("utf-8")
        except UnicodeDecodeError as error:
            await self._refuse(scope, receive, send, ApiProblemError(
                "invalid_encoding", f"byte {error.start}"), {})
            return
        whole = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay([whole], receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send,
                      error: ApiProblemError, headers: dict[str, str]) -> None:
        request = Request(scope)
        language = problems.preferred_language(request.headers.get("accept-language"))
        message = error.kind.korean if language == "ko" else error.kind.english
        response = problems.problem_response(
            request, error.code, error.kind.status, message, f"{message} ({error.detail})",
            language=language, headers=headers)
        await response(scope, receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _read_connection_options(url: str, schema: str) -> tuple[str, dict[str, Any]]:
    """The read pools' connection string and session settings: the ledger's schema,
    read-only by default also outside the transactions psycopg begins READ ONLY (a
    one-statement read runs without a transaction, `Read.statement_connection`), every
    statement and every connection attempt bounded."""
    statement_ms = limits.database_statement_seconds_max * 1000
    return ConnectionSettings.from_url(url).conninfo(), {
        "options": f"-c search_path={schema} -c statement_timeout={statement_ms}"
                   " -c default_transaction_read_only=on",
        "connect_timeout": limits.database_connect_seconds_max}


def _read_pool(url: str, schema: str, size_max: int
               ) -> ConnectionPool[psycopg.Connection[Any]]:
    """The API's read connections, every wait bounded: a connection within
    `database_checkout_seconds_max` (else PoolTimeout, a 503), connecting and each
    statement within their limits, and a broken connection found before it is used, so
    the pool recovers by itself when the database comes back."""
    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.read_only = True  # the read side never writes through this pool

    conninfo, options = _read_connection_options(url, schema)
    idle_check = IdleCheck()
    return ConnectionPool(
        conninfo, kwargs=options, min_size=min(2, size_max), max_size=size_max,
        configure=configure, check=idle_check.check, reset=idle_check.reset,
        timeout=limits.database_checkout_seconds_max,
        reconnect_timeout=limits.database_reconnect_seconds_max,
        name="ledger-reads", open=False)


def _async_read_pool(url: str, schema: str, size_max: int
                     ) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
    """The same read connections for the routes that read on the event loop (the hot
    ones: wallets and their entries), with the same bounds. A read awaited on the loop
    costs no hand-over to a worker thread and back, which was a fifth of a wallet
    read's time in the event loop's thread (see docs/api.md, "HTTP throughput")."""
    conninfo, options = _read_connection_options(url, schema)
    idle_check = IdleCheck()
    return AsyncConnectionPool(
        conninfo, kwargs={**options, "autocommit": True}, min_size=min(2, size_max),
        max_size=size_max, check=idle_check.check_async, reset=idle_check.reset_async,
        timeout=limits.database_checkout_seconds_max,
        reconnect_timeout=limits.database_reconnect_seconds_max,
        name="ledger-reads-async", open=False)


def create_app(settings: ApiSettings | None = None, *, ledger: Ledger | None = None,
               runner: ProjectionRunner | None = None,
               background: Sequence[StartWork] = ()) -> FastAPI:
    """The API. Pass `ledger` or `runner` to share ones the caller owns (and closes);
    `background` starts work that lives as long as the app (stopped in reverse order)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # First, so that a deployment without token keys refuses to start before it
        # touches the database; the JWKS is fetched in the background meanwhile.
        token_verifier = TokenVerifier.from_settings(settings)
        if token_verifier.jwks is not None:
            token_verifier.jwks.prefetch()
        url = settings.database_url or database_url()
        the_ledger = ledger or Ledger.connect(url, settings.schema_name)
        if settings.metrics_enabled:
            the_ledger.engine.observer = metrics.ENGINE_METRICS
        pool = _read_pool(url, settings.schema_name, settings.read_pool_size_max)
        pool.open(wait=False)  # the service starts (and is live) while the database is away
        async_pool = _async_read_pool(url, settings.schema_name, settings.read_pool_size_max)
        await async_pool.open(wait=False)
        the_runner = runner
        started: list[BackgroundWork] = []
        try:
            with pool.connection() as conn:
                conn.read_only = False
                projections.runner.setup(conn, projections.ALL)
                conn.read_only = True
            if the_runner is None and settings.run_projections:
                the_runner = ProjectionRunner(url, settings.schema_name)
            for start in background:
                work = start(the_ledger, pool, settings)
                if work is not None:
                    started.append(work)
            app.state.services = Services(
                settings=settings, ledger=the_ledger, pool=pool, async_pool=async_pool,
                runner=the_runner,
                limiter=WriteRateLimiter(settings.rate_limit_writes_per_minute),
                service_limiter=WriteRateLimiter(settings.rate_limit_service_writes_per_minute))
            app.state.token_verifier = token_verifier
            yield
        finally:
            for work in reversed(started):
                work.stop()
            if the_runner is not None and runner is None:
                the_runner.stop()
            pool.close()
            await async_pool.close()
            if ledger is None:
                the_ledger.close()
            if settings.metrics_enabled:
                metrics.process_stopped()

    app = FastAPI(
        title="Points ledger for public rental housing (내친구)",
        version=API_VERSION,
        description=introduction(settings),
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load from a CDN; `docs` serves its own
        redoc_url=None,
    )
    app.state.settings = settings
    problems.install(app)
    docs.install(app)
    app.add_middleware(RequestBodyCheck, body_bytes_max=settings.body_bytes_max)
    if settings.metrics_enabled:
        metrics.install(app)  # outermost: it also counts what RequestBodyCheck refuses

    @app.get("/v1/health", response_model=Health, tags=["service"],
             responses=problems.problem_responses(413),
             summary="Liveness: answers without touching the database")
    def health() -> Health:
        return Health(status="ok")

    @app.get(READINESS_PATH, response_model=Readiness, tags=["service"],
             summary="Readiness: the database answers and no follower of the log is stopped; "
                     "answers without a token, like the health check",
             responses=problems.problem_responses(413, 503))
    def ready(request: Request) -> JSONResponse:
        return readiness(request, request.app.state.services)

    for router in ROUTERS:
        app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app, settings, ROUTERS)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def readiness(request: Request, services: Services) -> JSONResponse:
    """Whether this process can serve: the database answers within
    `limits.readiness_check_seconds_max`, and no follower of the log (in any process)
    is stopped at a poison event. Not ready is a problem+json 503 with Retry-After."""
    stopped: list[StoppedFollowerView] = []
    database: Literal["ok", "unavailable"] = "ok"
    try:
        with services.pool.connection(timeout=limits.readiness_check_seconds_max) as conn:
            stopped = [StoppedFollowerView(name=s.name, position=s.position)
                       for s in stopped_followers(conn)]
    except (psycopg.Error, PoolTimeout, OSError):
        database = "unavailable"
    runner = services.runner
    if runner is not None and runner.stopped is not None and not any(
            s.name == runner.stopped.name for s in stopped):
        stopped.append(StoppedFollowerView(name=runner.stopped.name,
                                           position=runner.stopped.position))
    body = Readiness(status="ready" if database == "ok" and not stopped else "not_ready",
                     database=database, stopped_followers=stopped).model_dump(mode="json")
    if body["status"] == "ready":
        return JSONResponse(body)
    language = problems.preferred_language(request.headers.get("accept-language"))
    error = ApiProblemError("not_ready", "")
    message = error.kind.korean if language == "ko" else error.kind.english
    reasons = ([] if database == "ok" else ["database unavailable"]) + [
        f"{s.name} stopped at position {s.position}" for s in stopped]
    return problems.problem_response(
        request, "not_ready", 503, message, f"{message} ({'; '.join(reasons)})",
        language=language, headers={"Retry-After": str(limits.retry_after_unready_seconds)},
        extensions={"database": database,
                    "stopped_followers": body["stopped_followers"]})
