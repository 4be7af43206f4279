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
import random
import signal
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict, cast

import psycopg
from psycopg import sql

from ledger.database import connect, database_url

if TYPE_CHECKING:
    from types import FrameType

logger = logging.getLogger(__name__)

events_table_name = "ledger_events"
notify_channel_name = "ledger_events"
tracking_table_name = "relay_tracking"
tracking_name_default = "kafka"

batch_size_default = 1000
batch_size_max = 10_000
topic_partitions_default = 3
poll_interval_seconds_default = 1.0
send_timeout_seconds_default = 30.0
backoff_seconds_min = 0.1
backoff_seconds_max = 10.0
linger_ms = 5

# Header names the relay writes itself; a route may not set them.
reserved_header_names = frozenset({"event_id", "position", "event_type", "schema_version"})

# Namespace of the stable event ids: uuid5(namespace, "<originator_id>:<originator_version>").
event_id_namespace = uuid.uuid5(uuid.NAMESPACE_URL, "urn:ledger:event")


def event_id(originator_id: uuid.UUID, originator_version: int) -> uuid.UUID:
    """The stable id of one event, the same on every delivery of it."""
    return uuid.uuid5(event_id_namespace, f"{originator_id}:{originator_version}")


@dataclass(frozen=True)
class Notification:
    """One committed event as stored: `state` is the UTF-8 JSON of the event's fields."""

    position: int
    originator_id: uuid.UUID
    originator_version: int
    topic: str
    state: bytes

    @property
    def event_class_name(self) -> str:
        """`Wallet.PointsAccrued` for the library topic `ledger.wallet:Wallet.PointsAccrued`."""
        return self.topic.rpartition(":")[2]


@dataclass(frozen=True)
class OutgoingMessage:
    """One Kafka record a route makes from an event.

    `event_type` and `schema_version` describe the payload and become headers;
    `headers` holds any further headers the route wants (not the reserved names).
    """

    topic: str
    key: str
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    event_type: str = field(kw_only=True)
    schema_version: int = field(kw_only=True)


Route = Callable[[Notification], list[OutgoingMessage]]

# One Kafka record as handed to the producer: topic, key, value, headers.
_Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]


@dataclass(frozen=True, slots=True)
class _Batch:
    """The events after position `after` up to `last`, and the records they became."""

    after: int
    last: int
    events: int
    records: list[_Record]


def event_stream_route(topic: str) -> Route:
    """A route that sends every event, as stored, to `topic`, keyed by aggregate id."""

    def route(notification: Notification) -> list[OutgoingMessage]:
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
    if _table_exists(conn, schema, events_table_name):
        events = _identifier(schema, events_table_name)
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
        "linger_ms": linger_ms,
        "delivery_timeout_ms": delivery_timeout_ms,
        "request_timeout_ms": max(500, delivery_timeout_ms // 2 - linger_ms),
        "max_block_ms": delivery_timeout_ms,
        "bootstrap_timeout_ms": delivery_timeout_ms,
        "reconnect_backoff_max_ms": 1000,
        # Topics are created by the relay with their partition count, never by accident.
        "allow_auto_create_topics": False,
    }


class Relay:
    """Follows `{schema}.ledger_events` and publishes each event through `route`.

    Only one relay of a given `name` publishes at a time: the others wait on a
    PostgreSQL advisory lock, so a standby takes over when the active one dies.
    """

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
        self.name = name
        self.topic_partitions = topic_partitions
        self.poll_interval_seconds = poll_interval_seconds
        self.send_timeout_seconds = send_timeout_seconds
        self.events_published = 0
        self.messages_published = 0
        self._conn: psycopg.Connection[Any] | None = None
        self._producer: Any = None
        self._topics_ready: set[str] = set()
        # The recorded position as last read or written on this connection; None: read it.
        self._position: int | None = None
        # The next batch, built while the previous one was in flight; never sent yet.
        self._prefetched: _Batch | None = None
        self._backoff_seconds = backoff_seconds_min
        self.application_name = f"ledger relay {schema}.{name}"[:63]
        self._events = _identifier(schema, events_table_name)
        self._tracking = _identifier(schema, tracking_table_name)
        self._select_batch = sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state"
            " FROM {} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
        ).format(self._events)

    # -- the loop -------------------------------------------------------------------

    def run(self, stop_event: threading.Event) -> None:
        """Publish until `stop_event` is set, surviving database and broker outages."""
        logger.info("relay %s started on schema %s", self.name, self.schema)
        try:
            while not stop_event.is_set():
                try:
                    if not self._ensure_connection():
                        stop_event.wait(self.poll_interval_seconds)  # Another relay is active.
                        continue
                    published = self.publish_batch()
                    self._backoff_seconds = backoff_seconds_min
                    if published < self.batch_size:
                        self._wait_for_events(stop_event)
                except (psycopg.Error, OSError) as error:
                    logger.warning("relay %s: database unavailable: %s", self.name, error)
                    self._close_connection()
                    self._back_off(stop_event)
                except PublishError as error:
                    logger.warning("relay %s: publishing failed: %s", self.name, error)
                    self._close_producer()
                    self._back_off(stop_event)
                except RouteError:
                    logger.exception("relay %s: route failed; position held", self.name)
                    self._back_off(stop_event)
        finally:
            self.close()
            logger.info("relay %s stopped", self.name)

    def publish_batch(self) -> int:
        """Publish the next batch after the recorded position; return how many events it held.

        The position is recorded only after the broker acknowledged every message of
        the batch, and so every message before it. While the broker works on a full
        batch, the next one is read and built (not sent): it is sent only after this
        batch's position is recorded, so at most one batch is ever sent and not yet
        recorded, and a crash repeats at most one batch.
        """
        conn = self._conn
        assert conn is not None, "not connected"
        batch, self._prefetched = self._prefetched, None
        try:
            position = self._position
            if position is None:
                position = self._position = self._recorded_position(conn)
            if batch is None or batch.after != position:
                batch = self._read_batch(conn, position)
            if batch is None:
                return 0
            futures = self._send(batch.records)
            if batch.events == self.batch_size:
                # The broker acknowledges this batch meanwhile; the next one waits, built.
                self._prefetched = self._prefetch(conn, batch.last)
            self._await_acknowledgements(futures)
            # After this point, every message of the batch is acknowledged by the broker.
            updated = conn.execute(
                sql.SQL(
                    "UPDATE {} SET position = %s, updated_at = now()"
                    " WHERE name = %s AND position = %s"
                ).format(self._tracking),
                (batch.last, self.name, position),
            ).rowcount
            assert updated == 1, f"relay {self.name}: position moved under us (two active relays?)"
            self._position = batch.last
        except BaseException:
            self._prefetched = None
            self._position = None  # read again from the table after any failure
            raise
        self.events_published += batch.events
        self.messages_published += len(batch.records)
        return batch.events

    def _read_batch(self, conn: psycopg.Connection[Any], position: int) -> _Batch | None:
        """The events after `position`, at most one batch, as records ready to send."""
        rows = conn.execute(self._select_batch, (position, self.batch_size), binary=True).fetchall()
        if not rows:
            return None
        records: list[_Record] = []
        extend = records.extend
        make = self._records
        for row in rows:
            extend(make(Notification(row[0], row[1], row[2], row[3], row[4])))
        last = rows[-1][0]
        assert rows[0][0] > position, (rows[0][0], position)
        return _Batch(after=position, last=last, events=len(rows), records=records)

    def _prefetch(self, conn: psycopg.Connection[Any], position: int) -> _Batch | None:
        """The next batch, read and built while the current one is in flight.

        A route error is left for the next `publish_batch`, which reads the batch again
        and fails there, after the current batch's position is recorded.
        """
        try:
            return self._read_batch(conn, position)
        except RouteError:
            return None

    def drain(self) -> int:
        """Publish until caught up with the head of the log, once; return how many events.

        For one-shot runs and benchmarks; failures propagate instead of being retried.
        """
        if not self._ensure_connection():
            msg = f"relay {self.name} is already running elsewhere on schema {self.schema}"
            raise RuntimeError(msg)
        total = 0
        while True:
            published = self.publish_batch()
            total += published
            if published < self.batch_size:
                return total

    def status(self) -> RelayStatus:
        return relay_status(self.url, self.schema, self.name)

    def close(self) -> None:
        self._close_producer()
        self._close_connection()

    # -- database -------------------------------------------------------------------

    def _ensure_connection(self) -> bool:
        """Connect, take the relay's lock and LISTEN; False while another relay holds the lock."""
        if self._conn is not None and not self._conn.closed:
            return True
        conn = _connect(self.url, self.schema)
        try:
            # Names the connection in pg_stat_activity, for operators (and the outage test).
            conn.execute(
                "SELECT set_config('application_name', %s, false)", (self.application_name,)
            )
            lock_key = f"feed.relay:{self.schema}:{self.name}"
            row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (lock_key,)).fetchone()
            if not (row and row[0]):
                conn.close()
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
                (self.name,),
            )
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(notify_channel_name)))
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        logger.info("relay %s: connected, at position %d", self.name, self._recorded_position(conn))
        return True

    def _recorded_position(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(
            sql.SQL("SELECT position FROM {} WHERE name = %s").format(self._tracking), (self.name,)
        ).fetchone()
        assert row is not None, "tracking row is created on connect"
        return int(row[0])

    def _wait_for_events(self, stop_event: threading.Event) -> None:
        """Wait for a NOTIFY from a writer, at most one poll interval."""
        conn = self._conn
        assert conn is not None
        if stop_event.is_set():
            return
        for _ in conn.notifies(timeout=self.poll_interval_seconds, stop_after=1):
            break
        # Drop notifications queued meanwhile: the next read covers them all.
        for _ in conn.notifies(timeout=0):
            pass

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._position = None
        self._prefetched = None
        if conn is not None:
            try:
                conn.close()
            except (psycopg.Error, OSError):
                logger.debug("closing a broken connection failed", exc_info=True)

    # -- broker ---------------------------------------------------------------------

    def _records(self, notification: Notification) -> list[_Record]:
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
                        logger.info("relay %s: created topic %s", self.name, topic)
                    except TopicAlreadyExistsError:
                        pass
                    self._topics_ready.add(topic)
            finally:
                admin.close()
        return self._producer

    def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        self._prefetched = None
        self._topics_ready.clear()
        if producer is not None:
            try:
                producer.close(timeout=1)
            except Exception:  # A broken producer may fail to close; it is dropped anyway.
                logger.debug("closing the producer failed", exc_info=True)

    def _back_off(self, stop_event: threading.Event) -> None:
        delay = self._backoff_seconds * random.uniform(0.5, 1.0)  # noqa: S311  (jitter)
        stop_event.wait(delay)
        self._backoff_seconds = min(self._backoff_seconds * 2, backoff_seconds_max)


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
    parser.add_argument("--poll-interval-seconds", type=float, default=1.0)
    parser.add_argument("--send-timeout-seconds", type=float, default=30.0)
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
