"""How fast the relay drains the log, against a raw producer; and append-to-published lag.

Run: `.venv/bin/python bench/relay_bench.py [--events 20000] [--lag-events 400 --rate 50]`.
Uses LEDGER_DATABASE_URL (else the embedded PostgreSQL) and KAFKA_BOOTSTRAP_SERVERS
(else a Tansu broker started for the run). Prints figures; asserts nothing.

1. Throughput: N events are appended first. The relay drains them (read, route,
   send, flush, record the position), then a raw kafka-python producer with the
   same settings sends the same messages, to a topic of the same partition count
   on the same broker.
2. Lag: with the relay running, events are appended one at a time at a fixed
   rate; a consumer records when each appears. Lag is the time from the end of
   `save()` (the commit) to the consumer receiving the record.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from ledger.database import ConnectionSettings, database_url, eventsourcing_env
from ledger.relay import (
    Notification,
    Relay,
    event_id,
    event_stream_route,
    producer_settings,
    topic_partitions_default,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


class Household(Aggregate):
    def __init__(self, household_id: str) -> None:
        self.household_id = household_id

    @event("Noted")
    def note(self, amount_won: int) -> None:
        self.amount_won = amount_won


class Ledger(Application[uuid.UUID]):
    name = "Ledger"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def create_topic(bootstrap_servers: str, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers)
    try:
        admin.create_topics([NewTopic(topic, topic_partitions_default, replication_factor=1)])
    finally:
        admin.close()


def append(app: Ledger, events: int) -> None:
    """`events` events, ten per aggregate, two hundred aggregates per save."""
    households = []
    for number in range(events // 10):
        household = Household(f"H-{number}")
        for amount in range(9):
            household.note(amount)
        households.append(household)
        if len(households) == 200:
            app.save(*households)
            households = []
    if households:
        app.save(*households)


def throughput(url: str, schema: str, bootstrap_servers: str, events: int) -> None:
    app = Ledger(env=eventsourcing_env(url, schema))
    started = time.perf_counter()
    append(app, events)
    print(f"appended {events} events in {time.perf_counter() - started:.2f} s")

    relay_topic, raw_topic = f"{schema}.relay", f"{schema}.raw"
    route = event_stream_route(relay_topic)
    relay = Relay(url, schema, bootstrap_servers, route=route, batch_size=1000)
    started = time.perf_counter()
    published = relay.drain()
    relay_seconds = time.perf_counter() - started
    relay.close()
    assert published == events, published

    # The same messages, headers included, built before the clock starts.
    with psycopg.connect(
        ConnectionSettings.from_url(url).conninfo(), options=f"-c search_path={schema}"
    ) as conn:
        rows = conn.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state"
            " FROM ledger_events ORDER BY notification_id"
        ).fetchall()
    messages: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
    for position, originator_id, version, topic, state in rows:
        notification = Notification(position, originator_id, version, topic, bytes(state))
        for message in route(notification):
            headers = [
                ("event_id", str(event_id(originator_id, version)).encode()),
                ("position", str(position).encode()),
                ("event_type", message.event_type.encode()),
                ("schema_version", str(message.schema_version).encode()),
            ]
            messages.append((message.key.encode(), message.value, headers))
    create_topic(bootstrap_servers, raw_topic)
    producer = KafkaProducer(**producer_settings(bootstrap_servers, 30.0))
    producer.partitions_for(raw_topic)  # metadata fetched before the clock starts
    started = time.perf_counter()
    futures = [
        producer.send(raw_topic, key=key, value=value, headers=headers)
        for key, value, headers in messages
    ]
    producer.flush()
    raw_seconds = time.perf_counter() - started
    producer.close()
    assert all(future.succeeded() for future in futures)

    print(f"relay drain: {relay_seconds:.2f} s = {events / relay_seconds:,.0f} events/s")
    print(f"raw producer: {raw_seconds:.2f} s = {events / raw_seconds:,.0f} messages/s")
    print(f"relay/raw time ratio: {relay_seconds / raw_seconds:.2f}")


def lag(url: str, schema: str, bootstrap_servers: str, count: int, rate_per_second: float) -> None:
    app = Ledger(env=eventsourcing_env(url, schema))
    topic = f"{schema}.lag"
    create_topic(bootstrap_servers, topic)
    received_at: dict[str, float] = {}
    committed_at: dict[str, float] = {}
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, fetch_max_wait_ms=20
    )
    consumer.assign([TopicPartition(topic, p) for p in range(topic_partitions_default)])
    consumer.seek_to_beginning()
    writes_done = threading.Event()

    def consume() -> None:
        deadline = float("inf")
        while len(received_at) < count and time.perf_counter() < deadline:
            for records in consumer.poll(timeout_ms=100).values():
                now = time.perf_counter()
                for record in records:
                    received_at.setdefault(dict(record.headers)["event_id"].decode(), now)
            if writes_done.is_set() and deadline == float("inf"):
                deadline = time.perf_counter() + 30

    relay_stop = threading.Event()
    relay = Relay(url, schema, bootstrap_servers, route=event_stream_route(topic))
    relay_thread = threading.Thread(target=relay.run, args=(relay_stop,))
    consumer_thread = threading.Thread(target=consume)
    relay_thread.start()
    consumer_thread.start()
    interval = 1 / rate_per_second
    next_at = time.perf_counter()
    for _ in range(count):
        time.sleep(max(0.0, next_at - time.perf_counter()))
        next_at += interval
        household = Household("H")
        app.save(household)
        committed_at[str(event_id(household.id, 1))] = time.perf_counter()
    writes_done.set()
    consumer_thread.join()
    relay_stop.set()
    relay_thread.join()
    consumer.close()
    lags_ms = [
        (received_at[key] - committed) * 1000
        for key, committed in committed_at.items()
        if key in received_at
    ]
    print(
        f"lag over {len(lags_ms)}/{count} events at {rate_per_second:g}/s:"
        f" p50 {statistics.median(lags_ms):.1f} ms, p99 {percentile(lags_ms, 0.99):.1f} ms,"
        f" max {max(lags_ms):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--lag-events", type=int, default=400)
    parser.add_argument("--rate", type=float, default=50.0)
    arguments = parser.parse_args()
    url = database_url()
    broker: Any = None
    bootstrap_servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if not bootstrap_servers:
        from kafka_broker import TansuBroker  # noqa: PLC0415  (tests/ helper)

        broker = TansuBroker()
        broker.start()
        bootstrap_servers = broker.bootstrap_servers
    schemas = [f"bench_{uuid.uuid4().hex[:10]}", f"bench_{uuid.uuid4().hex[:10]}"]
    conninfo = ConnectionSettings.from_url(url).conninfo()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        throughput(url, schemas[0], bootstrap_servers, arguments.events)
        lag(url, schemas[1], bootstrap_servers, arguments.lag_events, arguments.rate)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        if broker is not None:
            broker.close()


if __name__ == "__main__":
    main()
