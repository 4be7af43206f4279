"""`ledger relay`: publish the event log to Kafka; `ledger relay status`: how far behind.

`ledger relay` runs the tracked relay (feed.relay) with the public route
(`feed.public_events:route`: every public event to `ledger.events`, rent
events also to `ledger.rent`) until SIGTERM or SIGINT, then stops cleanly: the
batch in flight is either acknowledged and recorded or sent again by the next
relay.

Settings come from the environment; each has a flag that overrides it:

| variable | flag | default |
|---|---|---|
| LEDGER_DATABASE_URL | `ledger --database-url` | embedded PostgreSQL in LEDGER_DATA_DIR |
| LEDGER_SCHEMA | `ledger --schema` | public |
| KAFKA_BOOTSTRAP_SERVERS | `--bootstrap-servers` | 127.0.0.1:9092 |
| LEDGER_RELAY_ROUTE | `--route` | feed.public_events:route |
| LEDGER_RELAY_NAME | `--name` | kafka |
| LEDGER_RELAY_BATCH_SIZE | `--batch-size` | 1000 |
| LEDGER_RELAY_TOPIC_PARTITIONS | `--topic-partitions` | 3 |
| LEDGER_RELAY_METRICS_PORT | `--metrics-port` | 0 (no endpoint) |
| LEDGER_RELAY_STATUS_LOG_SECONDS | `--status-log-seconds` | 60 |

Lag is visible two ways. `--metrics-port` serves Prometheus text on
`http://HOST:PORT/metrics` (position, head, lag in events, seconds since the
last publication, events and messages published by this process); every
`--status-log-seconds` the relay logs one `relay status` line with the same
figures. `ledger relay status [--json] [--max-lag-events N]` prints them once
and exits 1 when the lag is above N, for health checks and alerts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from cli.arguments import bounded_int
from feed.relay import (
    Relay,
    RelayStatus,
    batch_size_default,
    batch_size_max,
    relay_status,
    resolve_route,
    topic_partitions_default,
    tracking_name_default,
)
from ledger import limits
from ledger.database import database_url

if TYPE_CHECKING:
    from types import FrameType

logger = logging.getLogger("feed.relay")

BOOTSTRAP_SERVERS_VARIABLE = "KAFKA_BOOTSTRAP_SERVERS"
ROUTE_VARIABLE = "LEDGER_RELAY_ROUTE"
NAME_VARIABLE = "LEDGER_RELAY_NAME"
BATCH_SIZE_VARIABLE = "LEDGER_RELAY_BATCH_SIZE"
TOPIC_PARTITIONS_VARIABLE = "LEDGER_RELAY_TOPIC_PARTITIONS"
METRICS_PORT_VARIABLE = "LEDGER_RELAY_METRICS_PORT"
METRICS_HOST_VARIABLE = "LEDGER_RELAY_METRICS_HOST"
STATUS_LOG_SECONDS_VARIABLE = "LEDGER_RELAY_STATUS_LOG_SECONDS"

ENVIRONMENT_NAMES = (
    "LEDGER_DATABASE_URL",
    "LEDGER_DATA_DIR",
    "LEDGER_SCHEMA",
    BOOTSTRAP_SERVERS_VARIABLE,
    ROUTE_VARIABLE,
    NAME_VARIABLE,
    BATCH_SIZE_VARIABLE,
    TOPIC_PARTITIONS_VARIABLE,
    METRICS_PORT_VARIABLE,
    METRICS_HOST_VARIABLE,
    STATUS_LOG_SECONDS_VARIABLE,
)
"""Every environment name `ledger relay` reads (checked against docker-compose.yml)."""

bootstrap_servers_default = "127.0.0.1:9092"
route_default = "feed.public_events:route"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def add_commands(commands: Any) -> None:
    """Add `relay` (and `relay status`) to the `ledger` command."""
    relay = commands.add_parser(
        "relay",
        help="publish the event log to Kafka (and `relay status`)",
        description="Publish the committed event log to Kafka until SIGTERM.",
    )
    relay.add_argument("--bootstrap-servers",
                       default=_env(BOOTSTRAP_SERVERS_VARIABLE, bootstrap_servers_default),
                       help=f"Kafka brokers (default: {BOOTSTRAP_SERVERS_VARIABLE})")
    relay.add_argument("--route", default=_env(ROUTE_VARIABLE, route_default),
                       help="'package.module:function' turning an event into messages")
    relay.add_argument("--name", default=_env(NAME_VARIABLE, tracking_name_default),
                       help="tracking name: one active relay per name and schema")
    relay.add_argument("--batch-size", type=bounded_int(1, batch_size_max),
                       default=int(_env(BATCH_SIZE_VARIABLE, str(batch_size_default))))
    relay.add_argument("--topic-partitions", type=bounded_int(1, limits.topic_partitions_max),
                       default=int(_env(TOPIC_PARTITIONS_VARIABLE,
                                        str(topic_partitions_default))),
                       help="partitions of the topics the relay creates")
    relay.add_argument("--poll-interval-seconds", type=float,
                       default=limits.relay_poll_seconds_default)
    relay.add_argument("--send-timeout-seconds", type=float,
                       default=limits.relay_send_timeout_seconds_default)
    relay.add_argument("--metrics-port", type=bounded_int(0, limits.port_number_max),
                       default=int(_env(METRICS_PORT_VARIABLE, "0")),
                       help="serve Prometheus text on this port at /metrics (0: off)")
    relay.add_argument("--metrics-host", default=_env(METRICS_HOST_VARIABLE, "127.0.0.1"))
    relay.add_argument("--status-log-seconds", type=float,
                       default=float(_env(STATUS_LOG_SECONDS_VARIABLE,
                                          str(limits.relay_status_log_seconds_default))),
                       help="log a status line this often (0: never)")
    relay.set_defaults(handler=cmd_relay)

    actions = relay.add_subparsers(dest="relay_command", metavar="ACTION")
    status = actions.add_parser("status", help="position, head, lag, last publication")
    status.add_argument("--name", dest="status_name",
                        default=_env(NAME_VARIABLE, tracking_name_default))
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.add_argument("--max-lag-events", type=int, default=None,
                        help="exit 1 when more events than this wait to be published")
    status.set_defaults(handler=cmd_status)


def _url(args: argparse.Namespace) -> str:
    return str(args.database_url or database_url())


# Status ----------------------------------------------------------------------------------


def status_document(status: RelayStatus, now: datetime | None = None) -> dict[str, Any]:
    """The status as JSON-ready values, with the age of the last publication."""
    last = status["last_published_at"]
    now = now or datetime.now(UTC)
    return {
        "position": status["position"],
        "head_position": status["head_position"],
        "lag_events": status["lag_events"],
        "last_published_at": last.isoformat() if last else None,
        "seconds_since_last_published": (
            round((now - last).total_seconds(), 3) if last else None),
    }


def status_line(status: RelayStatus) -> str:
    document = status_document(status)
    return " ".join(f"{key}={value}" for key, value in document.items())


def cmd_status(args: argparse.Namespace) -> int:
    status = relay_status(_url(args), args.schema, args.status_name)
    if args.json:
        print(json.dumps(status_document(status)))
    else:
        document = status_document(status)
        print(f"relay {args.status_name} on schema {args.schema}")
        for key, value in document.items():
            print(f"  {key}: {value}")
    if args.max_lag_events is not None and status["lag_events"] > args.max_lag_events:
        return 1
    return 0


# Metrics ---------------------------------------------------------------------------------


def metrics_text(status: RelayStatus, relay: Relay | None, name: str, schema: str) -> str:
    """The Prometheus text exposition of one status reading."""
    labels = f'{{relay="{name}",schema="{schema}"}}'
    document = status_document(status)
    lines = []

    def gauge(metric: str, help_text: str, value: float, kind: str = "gauge") -> None:
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} {kind}")
        lines.append(f"{metric}{labels} {value}")

    gauge("ledger_relay_position", "Last log position published and acknowledged.",
          status["position"])
    gauge("ledger_relay_head_position", "Highest committed log position.",
          status["head_position"])
    gauge("ledger_relay_lag_events", "Committed events not yet published.",
          status["lag_events"])
    last = status["last_published_at"]
    if last is not None:
        gauge("ledger_relay_last_published_timestamp_seconds",
              "When the relay last recorded a position (Unix time).", last.timestamp())
        gauge("ledger_relay_seconds_since_last_published",
              "Seconds since the relay last recorded a position.",
              document["seconds_since_last_published"])
    if relay is not None:
        gauge("ledger_relay_events_published_total", "Events published by this process.",
              relay.events_published, "counter")
        gauge("ledger_relay_messages_published_total", "Messages published by this process.",
              relay.messages_published, "counter")
    return "\n".join(lines) + "\n"


def serve_metrics(host: str, port: int, render: Callable[[], str]) -> ThreadingHTTPServer:
    """Serve `render()` at /metrics on a daemon thread; the caller shuts the server down."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            try:
                body = render().encode()
            except Exception as error:  # The database may be down; say so, keep serving.
                logger.warning("relay metrics: status unavailable: %s", error)
                self.send_error(503, "status unavailable")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: ARG002
            return  # Scrapes are not news.

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="relay-metrics", daemon=True).start()
    return server


def log_status_every(seconds: float, read: Callable[[], RelayStatus],
                     stop_event: threading.Event) -> threading.Thread:
    def loop() -> None:
        while not stop_event.wait(seconds):
            try:
                logger.info("relay status %s", status_line(read()))
            except Exception as error:  # A status read never stops the relay.
                logger.warning("relay status unavailable: %s", error)

    thread = threading.Thread(target=loop, name="relay-status-log", daemon=True)
    thread.start()
    return thread


# Running ---------------------------------------------------------------------------------


def cmd_relay(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    url = _url(args)
    relay = Relay(
        url,
        args.schema,
        args.bootstrap_servers,
        route=resolve_route(args.route),
        batch_size=args.batch_size,
        name=args.name,
        topic_partitions=args.topic_partitions,
        poll_interval_seconds=args.poll_interval_seconds,
        send_timeout_seconds=args.send_timeout_seconds,
    )
    stop_event = threading.Event()

    def stop(_signal: int, _frame: FrameType | None) -> None:
        stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def read() -> RelayStatus:
        return relay_status(url, args.schema, args.name)

    server = None
    if args.metrics_port:
        server = serve_metrics(args.metrics_host, args.metrics_port,
                               lambda: metrics_text(read(), relay, args.name, args.schema))
        logger.info("relay metrics on http://%s:%d/metrics", args.metrics_host,
                    server.server_address[1])
    if args.status_log_seconds > 0:
        log_status_every(args.status_log_seconds, read, stop_event)
    try:
        relay.run(stop_event)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    return 0
