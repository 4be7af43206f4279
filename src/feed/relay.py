"""Publish the committed event log to Kafka: one more tracked follower of the log.

The events table is the outbox. The relay reads events in position order after
the position recorded in `relay_tracking`, asks `route` which messages each
event becomes, sends them all, waits until the broker acknowledged every one,
and only then records the new position. A failure anywhere leaves the position
where it was; the relay rebuilds its producer, backs off and sends again from
the recorded position. Delivery is therefore at least once: after a crash at
most one batch is sent again, and consumers drop repeats by the `event_id`
header.

Positions may have gaps, left by transactions that took a position and rolled
back. Writers hold an exclusive lock on the events table, so positions commit
in order and `WHERE notification_id > position ORDER BY notification_id` never
passes over an event that commits later. A gap is never a loss and is never
reported as one.

The table and the channel are the ones the `eventsourcing` library creates for
the application named "Ledger": `{schema}.ledger_events`, NOTIFY channel
`ledger_events`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict, cast

import psycopg
from psycopg import sql

from eventlog.follower import TRANSIENT_DATABASE_ERRORS, Follower, Following, Stopped, Waiter
from eventlog.log import EVENTS_TABLE, StoredRow
from feed.messages import OutgoingMessage, Route, event_id, reserved_header_names
from ledger import limits
from ledger.database import connect, database_url

if TYPE_CHECKING:
    from types import FrameType

logger = logging.getLogger(__name__)

tracking_table_name = "relay_tracking"
tracking_name_default = "kafka"

batch_size_default = limits.relay_batch_size_events_default
batch_size_max = limits.relay_batch_size_events_max
topic_partitions_default = limits.topic_partitions_default
poll_interval_seconds_default = limits.relay_poll_seconds_default
send_timeout_seconds_default = limits.relay_send_timeout_seconds_default

# One Kafka record as handed to the producer: topic, key, value, headers.
_Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]


def event_stream_route(topic: str) -> Route:
    """A route that sends every event, as stored, to `topic`, keyed by aggregate id."""

    def route(notification: StoredRow) -> list[OutgoingMessage]:
        return [
            OutgoingMessage(
                topic,
                str(notification.originator_id),
                notification.state,
                event_type=notification.event_class_name,
                schema_version=1,
            )
        ]

    return route


route_to_event_stream: Route = event_stream_route("ledger.events")


class RelayStatus(TypedDict):
    position: int
    head_position: int
    lag_events: int
    last_published_at: datetime | None


class PublishError(Exception):
    """The broker did not acknowledge every message of a batch."""


class RouteError(Exception):
    """The route failed or broke its contract for one event; the relay stops there."""


def _identifier(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def _connect(url: str, schema: str) -> psycopg.Connection[Any]:
    return cast("psycopg.Connection[Any]", connect(url, schema, autocommit=True))


def _table_exists(conn: psycopg.Connection[Any], schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL",
        (sql.Identifier(schema, table).as_string(conn),),
    ).fetchone()
    return bool(row and row[0])


def read_status(
    conn: psycopg.Connection[Any], schema: str, name: str = tracking_name_default
) -> RelayStatus:
    """Where relay `name` stands against the head of the log, read on `conn`."""
    position = 0
    last_published_at: datetime | None = None
    if _table_exists(conn, schema, tracking_table_name):
        row = conn.execute(
            sql.SQL("SELECT position, updated_at FROM {} WHERE name = %s").format(
                _identifier(schema, tracking_table_name)
            ),
            (name,),
        ).fetchone()
        if row is not None:
            position, last_published_at = int(row[0]), row[1]
    head_position = 0
    lag_events = 0
    if _table_exists(conn, schema, EVENTS_TABLE):
        events = _identifier(schema, EVENTS_TABLE)
        row = conn.execute(
            sql.SQL(
                "SELECT (SELECT coalesce(max(notification_id), 0) FROM {0}),"
                " (SELECT count(*) FROM {0} WHERE notification_id > %s)"
            ).format(events),
            (position,),
        ).fetchone()
        assert row is not None
        head_position, lag_events = int(row[0]), int(row[1])
    return RelayStatus(
        position=position,
        head_position=head_position,
        lag_events=lag_events,
        last_published_at=last_published_at,
    )


def relay_status(url: str, schema: str, name: str = tracking_name_default) -> RelayStatus:
    """The status `ledger relay status` prints: position, head, lag, last publication."""
    with _connect(url, schema) as conn:
        return read_status(conn, schema, name)


def producer_settings(bootstrap_servers: str, send_timeout_seconds: float) -> dict[str, Any]:
    """The producer configuration, every delivery setting written out.

    Idempotence is asked for explicitly, so kafka-python raises on a conflicting
    setting instead of quietly turning idempotence off.
    """
    delivery_timeout_ms = int(send_timeout_seconds * 1000)
    assert delivery_timeout_ms >= 1000
    return {
        "bootstrap_servers": bootstrap_servers,
        "client_id": "ledger-relay",
        "acks": "all",
        "enable_idempotence": True,
        "max_in_flight_requests_per_connection": 5,
        "retries": 2_147_483_647,
        "linger_ms": limits.relay_linger_ms,
        "delivery_timeout_ms": delivery_timeout_ms,
        "request_timeout_ms": max(500, delivery_timeout_ms // 2 - limits.relay_linger_ms),
        "max_block_ms": delivery_timeout_ms,
        "bootstrap_timeout_ms": delivery_timeout_ms,
        "reconnect_backoff_max_ms": 1000,
        # Topics are created by the relay with their partition count, never by accident.
        "allow_auto_create_topics": False,
    }


class Relay(Follower):
    """Follows `{schema}.ledger_events` and publishes each event through `route`.

    One follower of the log (`eventlog.follower`): each batch is routed while the
    previous one is acknowledged, sent, acknowledged by the broker, and only then is its
    position recorded, in the transaction that locked it. Only one relay of a given
    `name` publishes at a time: the others wait on a PostgreSQL advisory lock, so a
    standby takes over when the active one dies. A broker that is away is waited for
    (bounded backoff); a route that keeps failing on one event stops the relay there.
    """

    transient = (*TRANSIENT_DATABASE_ERRORS, PublishError)

    def __init__(
        self,
        url: str,
        schema: str,
        bootstrap_servers: str,
        *,
        route: Route = route_to_event_stream,
        batch_size: int = batch_size_default,
        name: str = tracking_name_default,
        topic_partitions: int = topic_partitions_default,
        poll_interval_seconds: float = poll_interval_seconds_default,
        send_timeout_seconds: float = send_timeout_seconds_default,
    ) -> None:
        assert 1 <= batch_size <= batch_size_max, batch_size
        assert topic_partitions >= 1
        assert poll_interval_seconds > 0
        self.url = url
        self.schema = schema
        self.bootstrap_servers = bootstrap_servers
        self.route = route
        self.batch_size = batch_size
        self.tracking_name = name
        self.name = f"relay.{name}"
        self.topic_partitions = topic_partitions
        self.poll_interval_seconds = poll_interval_seconds
        self.send_timeout_seconds = send_timeout_seconds
        self.events_published = 0
        self.messages_published = 0
        self._producer: Any = None
        self._topics_ready: set[str] = set()
        self._in_flight = (0, 0)  # events and messages of the batch being published
        self.application_name = f"ledger relay {schema}.{name}"[:63]
        self._tracking = _identifier(schema, tracking_table_name)
        self._following = Following(
            url, schema, self, batch_size=batch_size, poll_seconds=poll_interval_seconds,
            backoff_seconds_min=limits.log_backoff_seconds_min,
            backoff_seconds_max=limits.log_backoff_seconds_max)

    # -- the loop -------------------------------------------------------------------

    def run(self, stop_event: threading.Event) -> None:
        """Publish until `stop_event` is set, surviving database and broker outages."""
        logger.info("relay %s started on schema %s", self.tracking_name, self.schema)
        self._following.start()
        try:
            while not stop_event.wait(self.poll_interval_seconds):
                if self._following.stopped is not None:
                    break
        finally:
            self._following.stop(timeout=self.send_timeout_seconds + 10)
            self.close()
            logger.info("relay %s stopped", self.tracking_name)

    @property
    def stopped(self) -> Stopped | None:
        """Where the relay stopped at an event its route keeps failing on, if it did."""
        return self._following.stopped

    def publish_batch(self) -> int:
        """Publish the next batch after the recorded position; return how many events it held.

        The position is recorded only after the broker acknowledged every message of
        the batch, and so every message before it.
        """
        conn = self._connection()
        return self._following.run_batches(conn, once=True)

    def drain(self) -> int:
        """Publish until caught up with the head of the log, once; return how many events.

        For one-shot runs and benchmarks; failures propagate instead of being retried.
        """
        return self._following.run_batches(self._connection())

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._following.connection()
        if conn is None:
            msg = f"relay {self.tracking_name} is already running elsewhere on schema {self.schema}"
            raise RuntimeError(msg)
        return conn

    def prepare_connection(self) -> None:
        """Connect and take the relay's lock now (benchmarks start their clock after it)."""
        self._connection()

    def status(self) -> RelayStatus:
        return relay_status(self.url, self.schema, self.tracking_name)

    def close(self) -> None:
        self._close_producer()
        self._following.stop(timeout=0)

    # -- the follower's side --------------------------------------------------------

    def connected(self, conn: psycopg.Connection[Any]) -> bool:
        """Name the connection, take the relay's lock, create the tracking row; False while
        another relay of this name holds the lock."""
        # Names the connection in pg_stat_activity, for operators (and the outage test).
        conn.execute("SELECT set_config('application_name', %s, false)", (self.application_name,))
        lock_key = f"ledger.relay:{self.schema}:{self.tracking_name}"
        row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (lock_key,)).fetchone()
        if not (row and row[0]):
            return False
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY,"
                " position bigint NOT NULL CHECK (position >= 0),"
                " updated_at timestamptz NOT NULL DEFAULT now())"
            ).format(self._tracking)
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (name, position) VALUES (%s, 0) ON CONFLICT (name) DO NOTHING"
            ).format(self._tracking),
            (self.tracking_name,),
        )
        logger.info("relay %s: connected", self.tracking_name)
        return True

    def locked_position(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(
            sql.SQL("SELECT position FROM {} WHERE name = %s FOR UPDATE").format(self._tracking),
            (self.tracking_name,),
        ).fetchone()
        assert row is not None, "the tracking row is created on connect"
        return int(row[0])

    def prepare(self, rows: list[tuple[Any, ...]]) -> list[_Record]:
        """The records a batch becomes: routing is done while the previous batch is in flight."""
        records: list[_Record] = []
        extend = records.extend
        make = self._records
        for row in rows:
            extend(make(StoredRow(row[0], row[1], row[2], row[3], row[4])))
        return records

    def handle(self, _conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]],
               prepared: list[_Record]) -> Waiter:
        futures = self._send(prepared)
        self._in_flight = (len(rows), len(prepared))
        return lambda: self._await_acknowledgements(futures)

    def save_position(self, conn: psycopg.Connection[Any], before: int, after: int) -> None:
        updated = conn.execute(
            sql.SQL(
                "UPDATE {} SET position = %s, updated_at = now() WHERE name = %s AND position = %s"
            ).format(self._tracking),
            (after, self.tracking_name, before),
        ).rowcount
        assert updated == 1, f"relay {self.tracking_name}: position moved under us"

    def committed(self, _position: int) -> None:
        events, messages = self._in_flight
        self.events_published += events
        self.messages_published += messages

    # -- broker ---------------------------------------------------------------------

    def _records(self, notification: StoredRow) -> list[_Record]:
        position = notification.position
        try:
            messages = self.route(notification)
        except Exception as error:
            msg = f"route raised for event at position {position}: {error!r}"
            raise RouteError(msg) from error
        if not messages:
            return []
        stable_id = str(event_id(notification.originator_id, notification.originator_version))
        id_header = ("event_id", stable_id.encode())
        position_header = ("position", str(position).encode())
        records: list[_Record] = []
        for message in messages:
            if not isinstance(message.value, bytes) or not message.topic or not message.event_type:
                msg = f"route returned an invalid message at position {position}"
                raise RouteError(msg)
            extra = message.headers
            if extra and any(name in reserved_header_names for name, _ in extra):
                msg = f"route set a reserved header at position {position}"
                raise RouteError(msg)
            headers = [
                *extra,
                id_header,
                position_header,
                ("event_type", message.event_type.encode()),
                ("schema_version", str(message.schema_version).encode()),
            ]
            records.append((message.topic, message.key.encode(), message.value, headers))
        return records

    def _send(self, records: Sequence[_Record]) -> list[Any]:
        """Hand every record to the producer, in order; the futures of their acknowledgements."""
        from kafka.errors import (  # noqa: PLC0415  (keeps `relay status` light)
            KafkaConfigurationError,
            KafkaError,
        )

        try:
            producer = self._ensure_producer({record[0] for record in records})
            send = producer.send
            return [
                send(topic, key=key, value=value, headers=headers)
                for topic, key, value, headers in records
            ]
        except KafkaConfigurationError:
            raise  # A setting conflicts with idempotence: fail loudly, never retry.
        except (KafkaError, OSError) as error:
            raise PublishError(repr(error)) from error

    def _await_acknowledgements(self, futures: Sequence[Any]) -> None:
        """Flush; raise PublishError unless the broker acknowledged every one of `futures`."""
        from kafka.errors import KafkaError  # noqa: PLC0415

        producer = self._producer
        if producer is None:
            msg = "the producer was closed with sends pending"
            raise PublishError(msg)
        try:
            producer.flush(timeout=self.send_timeout_seconds + 5)
        except (KafkaError, OSError) as error:
            raise PublishError(repr(error)) from error
        for future in futures:
            if not future.is_done:
                msg = "a send was still pending after flush"
                raise PublishError(msg)
            if future.failed():
                raise PublishError(repr(future.exception))

    def _ensure_producer(self, topics: set[str]) -> Any:
        from kafka import KafkaProducer  # noqa: PLC0415
        from kafka.admin import KafkaAdminClient, NewTopic  # noqa: PLC0415
        from kafka.errors import TopicAlreadyExistsError  # noqa: PLC0415

        if self._producer is None:
            self._topics_ready.clear()
            self._producer = KafkaProducer(
                **producer_settings(self.bootstrap_servers, self.send_timeout_seconds)
            )
        missing = sorted(topics - self._topics_ready)
        if missing:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers,
                client_id="ledger-relay-admin",
                request_timeout_ms=int(self.send_timeout_seconds * 1000),
            )
            try:
                for topic in missing:
                    try:
                        admin.create_topics(
                            [NewTopic(topic, self.topic_partitions, replication_factor=1)]
                        )
                        logger.info("relay %s: created topic %s", self.tracking_name, topic)
                    except TopicAlreadyExistsError:
                        pass
                    self._topics_ready.add(topic)
            finally:
                admin.close()
        return self._producer

    def recover(self, _error: BaseException) -> None:
        """After a transient failure: a producer that may be broken is built anew."""
        self._close_producer()

    def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        self._topics_ready.clear()
        if producer is not None:
            try:
                producer.close(timeout=1)
            except Exception:  # A broken producer may fail to close; it is dropped anyway.
                logger.debug("closing the producer failed", exc_info=True)


def run_relay(
    database_url: str,
    schema: str,
    bootstrap_servers: str,
    stop_event: threading.Event,
    *,
    route: Route | str = route_to_event_stream,
    batch_size: int = batch_size_default,
    name: str = tracking_name_default,
    topic_partitions: int = topic_partitions_default,
    poll_interval_seconds: float = poll_interval_seconds_default,
    send_timeout_seconds: float = send_timeout_seconds_default,
) -> None:
    """The body of `ledger relay`: publish until `stop_event` is set.

    `route` is a function or its import path, `"package.module:attribute"`.
    """
    relay = Relay(
        database_url,
        schema,
        bootstrap_servers,
        route=resolve_route(route) if isinstance(route, str) else route,
        batch_size=batch_size,
        name=name,
        topic_partitions=topic_partitions,
        poll_interval_seconds=poll_interval_seconds,
        send_timeout_seconds=send_timeout_seconds,
    )
    relay.run(stop_event)


def resolve_route(path: str) -> Route:
    module_name, _, attribute = path.partition(":")
    if not attribute:
        msg = f"route must be 'package.module:attribute', got {path!r}"
        raise ValueError(msg)
    route = getattr(importlib.import_module(module_name), attribute)
    assert callable(route), path
    return cast("Route", route)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m feed.relay`: run the relay until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="feed.relay")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--schema", default=os.environ.get("LEDGER_SCHEMA", "").strip() or "public")
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip() or "127.0.0.1:9092",
    )
    parser.add_argument("--route", default="feed.relay:route_to_event_stream")
    parser.add_argument("--batch-size", type=int, default=batch_size_default)
    parser.add_argument("--name", default=tracking_name_default)
    parser.add_argument("--poll-interval-seconds", type=float,
                        default=poll_interval_seconds_default)
    parser.add_argument("--send-timeout-seconds", type=float,
                        default=send_timeout_seconds_default)
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop_event = threading.Event()

    def stop(_signal: int, _frame: FrameType | None) -> None:
        stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    run_relay(
        arguments.database_url or database_url(),
        arguments.schema,
        arguments.bootstrap_servers,
        stop_event,
        route=arguments.route,
        batch_size=arguments.batch_size,
        name=arguments.name,
        poll_interval_seconds=arguments.poll_interval_seconds,
        send_timeout_seconds=arguments.send_timeout_seconds,
    )


if __name__ == "__main__":
    main()
