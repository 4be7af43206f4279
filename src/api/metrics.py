"""Prometheus metrics of the API process: requests, problems, the commit engine, the log.

What is counted, and where:
- `RequestMetrics`, a pure ASGI middleware, counts every HTTP request by method, route
  template (`/v1/wallets/{resident_id}`, never the raw path: the label set stays
  bounded) and status, times it, and counts every problem response by its `code`
  (`problems.problem_response` leaves the code in the request's scope).
- `EngineMetrics` is the commit engine's observer: the queue's depth and each batch's
  size and duration.
- `LogPositions` reads, when scraped, the head of the event log and each projection's
  position from the database: the lag is the database's state, the same whichever
  process answers.

Several worker processes (`ledger serve --workers N`) give the answers one process
would: `ledger serve` points PROMETHEUS_MULTIPROC_DIR at a directory made fresh for the
run, each process writes its values to files there, and a scrape, whichever worker it
lands on, adds up every process's files. A worker that stops removes its live gauge
files; one that died is found at the next scrape (its process id no longer exists) and
its files removed the same way. Counters and histograms of a dead worker stay counted:
a counter never goes back.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import psycopg
from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import projections
from api.problems import PROBLEM_CODE_SCOPE_KEY
from eventlog.log import head_position
from ledger import limits
from ledger.errors import GUARD_CODES

log = logging.getLogger(__name__)

METRICS_PATH: Final = "/metrics"
MULTIPROCESS_DIRECTORY_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE: Final = "unmatched"
"""The route label of a request no route took (a 404, or a body refused before routing)."""
OTHER_METHOD: Final = "other"
KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Any other method a client sends is labelled `other`: label values stay bounded."""

# `_created` series double the output for nothing an alert uses, and the multi-process
# mode has none: one format in both modes.
disable_created_metrics()

REQUESTS = Counter(
    "ledger_http_requests", "HTTP requests answered, by method, route template and status.",
    ("method", "route", "status"))
REQUEST_SECONDS = Histogram(
    "ledger_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by method and route template.",
    ("method", "route"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
PROBLEMS = Counter(
    "ledger_http_problems",
    "Problem responses (RFC 9457) by their stable code and status: 503s by cause "
    "(database_unavailable, not_ready, not_yet_consistent), 429 rate_limited, and the rest.",
    ("code", "status"))
GUARD_REFUSALS = Counter(
    "ledger_trades_refused_by_guard",
    "Trades a wash-trade guard refused (ledger.guards), by the guard's code: "
    "same_household_trade, pair_trade_cap_reached, sharing_accrual_cap_reached. A refusal "
    "stores no event; this is where the operator sees them.",
    ("code",))
QUEUE_DEPTH = Gauge(
    "ledger_engine_queue_depth",
    "Commands waiting for the commit engine to take them into a batch (all live workers).",
    multiprocess_mode="livesum")
BATCH_COMMANDS = Histogram(
    "ledger_engine_batch_commands",
    "Commands per batch of the commit engine (one transaction each); the sum counts commands.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, limits.batch_commands_max,
             limits.bulk_commands_max))
BATCH_SECONDS = Histogram(
    "ledger_engine_batch_duration_seconds",
    "Time to run, save and answer one batch of the commit engine.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))


class RequestMetrics:
    """Count and time every HTTP request; count every problem by its code.

    Pure ASGI: it sees the response's status on its way out and reads the route FastAPI
    matched from the scope afterwards. The labelled series are cached, so a request
    costs two dictionary look-ups and three increments.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 0

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            # Answered 500 internal_error by the server's outermost handler, unless a
            # response had begun already.
            self._record(scope, status or 500, time.perf_counter() - began,
                         None if status else "internal_error")
            raise
        self._record(scope, status, time.perf_counter() - began,
                     scope.get(PROBLEM_CODE_SCOPE_KEY))

    def _record(self, scope: Scope, status: int, seconds: float, code: str | None) -> None:
        route = scope.get("route")
        template = getattr(route, "path_format", None) or UNMATCHED_ROUTE
        method = scope["method"] if scope["method"] in KNOWN_METHODS else OTHER_METHOD
        key = (method, template, status)
        series = self._series.get(key)
        if series is None:
            series = (REQUESTS.labels(method, template, str(status)),
                      REQUEST_SECONDS.labels(method, template))
            self._series[key] = series
        series[0].inc()
        series[1].observe(seconds)
        if status >= 400:
            PROBLEMS.labels(code or "unknown", str(status)).inc()
            if code in GUARD_CODES:
                GUARD_REFUSALS.labels(code).inc()


class EngineMetrics:
    """The commit engine's observer (`ledger.engine.EngineObserver`)."""

    def queue_depth_changed(self, depth: int) -> None:
        QUEUE_DEPTH.set(depth)

    def batch_ran(self, commands: int, seconds: float) -> None:
        BATCH_COMMANDS.observe(commands)
        BATCH_SECONDS.observe(seconds)


ENGINE_METRICS: Final = EngineMetrics()


class LogPositions:
    """The head of the event log and each projection's position, read when scraped.

    Read from the database, not from this process's runner: with several workers (or
    `ledger project` elsewhere) the tracking table is the one truth. While the database
    is away these series are absent, and the scrape still answers.
    """

    def __init__(self, pool: ConnectionPool[psycopg.Connection[Any]]) -> None:
        self.pool = pool

    def collect(self) -> Iterable[Metric]:
        try:
            with self.pool.connection(timeout=limits.readiness_check_seconds_max) as conn:
                head = head_position(conn)
                tracked = projections.runner.positions(conn)
        except (psycopg.Error, PoolTimeout, OSError) as error:
            log.warning("metrics: log positions unavailable: %s", error)
            return []
        head_metric = GaugeMetricFamily(
            "ledger_log_head_position", "The highest committed position of the event log.",
            value=head)
        position = GaugeMetricFamily(
            "ledger_projection_position", "The log position each projection has committed.",
            labels=("projection",))
        lag = GaugeMetricFamily(
            "ledger_projection_lag_positions",
            "Log positions between the head and each projection's position (an upper bound "
            "of the events it has yet to fold: positions have gaps).",
            labels=("projection",))
        for name, committed in sorted(tracked.items()):
            position.add_metric((name,), committed)
            lag.add_metric((name,), max(0, head - committed))
        return [head_metric, position, lag]


def multiprocess_directory() -> Path | None:
    """The directory every worker writes its values to, or None in single-process mode.

    The mode is the one the values were created in: PROMETHEUS_MULTIPROC_DIR must be set
    before prometheus_client is first imported, which `ledger serve` does."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    directory = os.environ.get(MULTIPROCESS_DIRECTORY_VARIABLE, "")
    return Path(directory) if directory else None


_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def forget_dead_processes(directory: Path) -> list[int]:
    """Remove the live gauges of processes that no longer exist; return their ids."""
    dead = set()
    for path in directory.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match and not _alive(int(match[1])):
            dead.add(int(match[1]))
    for pid in dead:
        mark_process_dead(pid, str(directory))
    return sorted(dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, under another user
        return True
    return True


def process_stopped() -> None:
    """At a worker's shutdown: its live gauges leave the sums."""
    directory = multiprocess_directory()
    if directory is not None:
        mark_process_dead(os.getpid(), str(directory))


def exposition(pool: ConnectionPool[psycopg.Connection[Any]]) -> bytes:
    """Every metric, in the Prometheus text format: all workers' in multi-process mode."""
    directory = multiprocess_directory()
    registry = REGISTRY
    if directory is not None:
        forget_dead_processes(directory)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(directory))
    read_now = CollectorRegistry()
    read_now.register(LogPositions(pool))
    return generate_latest(registry) + generate_latest(read_now)


def install(app: FastAPI) -> None:
    """Count requests on `app` and serve GET /metrics, outside the OpenAPI document and
    without a token (see docs/api.md, "Metrics")."""
    app.add_middleware(RequestMetrics)

    @app.get(METRICS_PATH, include_in_schema=False)
    def metrics(request: Request) -> Response:
        pool = request.app.state.services.pool
        return Response(exposition(pool), media_type=CONTENT_TYPE_LATEST)
