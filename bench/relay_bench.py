"""How fast the relay drains the log, against a raw producer; and append-to-published lag.

Run: `.venv/bin/python bench/relay_bench.py [--households 1500 --months 1]
[--runs 1 --batch-size 1000] [--lag-commands 400 --rate 50]`. Uses
LEDGER_DATABASE_URL (else the embedded PostgreSQL) and KAFKA_BOOTSTRAP_SERVERS
(else a Tansu broker started for the run). Prints figures; asserts nothing. The
events are the ledger's own, written through its commands (`seeding.seed`), and
the relay uses the real route (`feed.public_events:route`: every public event
to `ledger.events`, rent events also to `ledger.rent`).

1. Throughput: the seeded log is drained by the relay (read, decode, build the
   public payload, send, flush, record the position). Then a raw kafka-python
   producer with the same settings sends the very same messages (already built,
   headers included) to topics `raw.<topic>` of the same partition count on the
   same broker. The ratio is relay messages/s over raw messages/s. With `--runs N`
   the pair is measured N times over the same log (each relay run under a
   tracking name of its own, so it drains everything again) and the median ratio
   is printed too.
2. Lag: with the relay running, rent is paid and settled through `Ledger.execute`
   at a fixed rate; a consumer of `ledger.events` notes when each position first
   arrives. Lag is from the return of the command that committed the event to
   the consumer receiving it.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import os
import random
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from eventlog.log import StoredRow
from feed.public_events import events_topic, rent_topic
from feed.public_events import route as public_route
from feed.relay import (
    Relay,
    event_id,
    producer_settings,
    topic_partitions_default,
)
from ledger import commands as c
from ledger.application import Ledger
from ledger.database import ConnectionSettings, database_url
from seeding.seed import seed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def create_topics(bootstrap_servers: str, topics: list[str]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers)
    try:
        for topic in topics:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [NewTopic(topic, topic_partitions_default, replication_factor=1)])
    finally:
        admin.close()


def throughput(url: str, schema: str, bootstrap_servers: str, households: int,
               months: int, runs: int, batch_size: int) -> None:
    ledger = Ledger.connect(url, schema)
    started = time.perf_counter()
    summary = seed(ledger, complexes=max(1, households // 500), households=households,
                   months=months, progress=False)
    ledger.close()
    events = summary.events_after - summary.events_before
    print(f"seeded {events:,} log events ({households:,} households, {months} month(s))"
          f" in {time.perf_counter() - started:.1f} s")

    # The same messages, headers included, built before any clock starts.
    with psycopg.connect(
        ConnectionSettings.from_url(url).conninfo(), options=f"-c search_path={schema}"
    ) as conn:
        rows = conn.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state"
            " FROM ledger_events ORDER BY notification_id"
        ).fetchall()
    messages: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
    for position, originator_id, version, topic, state in rows:
        notification = StoredRow(position, originator_id, version, topic, bytes(state))
        for message in public_route(notification):
            headers = [
                ("event_id", str(event_id(originator_id, version)).encode()),
                ("position", str(position).encode()),
                ("event_type", message.event_type.encode()),
                ("schema_version", str(message.schema_version).encode()),
            ]
            messages.append((f"raw.{message.topic}", message.key.encode(), message.value,
                             headers))
    raw_topics = sorted({topic for topic, _, _, _ in messages})
    create_topics(bootstrap_servers, raw_topics)

    ratios = []
    for run in range(1, runs + 1):
        # Each run drains the whole log again under a tracking name of its own.
        relay = Relay(url, schema, bootstrap_servers, route=public_route, batch_size=batch_size,
                      name=f"bench-{run}")
        relay.prepare_connection()
        relay._ensure_producer({events_topic, rent_topic})  # topics and metadata before the clock
        started = time.perf_counter()
        published = relay.drain()
        relay_seconds = time.perf_counter() - started
        messages_count = relay.messages_published
        relay.close()
        assert published == events, (published, events)
        assert len(messages) == messages_count, (len(messages), messages_count)

        producer = KafkaProducer(**producer_settings(bootstrap_servers, 30.0))
        for topic in raw_topics:
            producer.partitions_for(topic)  # metadata fetched before the clock starts
        started = time.perf_counter()
        futures = [
            producer.send(topic, key=key, value=value, headers=headers)
            for topic, key, value, headers in messages
        ]
        producer.flush()
        raw_seconds = time.perf_counter() - started
        producer.close()
        assert all(future.succeeded() for future in futures)

        relay_rate = messages_count / relay_seconds
        raw_rate = messages_count / raw_seconds
        ratios.append(relay_rate / raw_rate)
        print(f"run {run}: relay drain: {published:,} events -> {messages_count:,} messages in"
              f" {relay_seconds:.2f} s = {relay_rate:,.0f} messages/s"
              f" ({published / relay_seconds:,.0f} events/s)")
        print(f"run {run}: raw producer: {messages_count:,} messages in {raw_seconds:.2f} s ="
              f" {raw_rate:,.0f} messages/s")
        print(f"run {run}: relay/raw messages/s ratio: {relay_rate / raw_rate:.2f}")
    if runs > 1:
        print(f"median relay/raw ratio over {runs} runs: {statistics.median(ratios):.2f}"
              f" (min {min(ratios):.2f}, max {max(ratios):.2f})")


def lag(url: str, schema: str, bootstrap_servers: str, count: int,
        rate_per_second: float) -> None:
    from world import BILLING, World, cause  # noqa: PLC0415  (tests/ helpers)

    ledger = Ledger.connect(url, schema)
    world = World(ledger, url, schema)
    complex_id = world.complex("LAG-01")
    world.policy()
    seller = world.resident(world.household(complex_id))
    homes = []
    for _ in range(20):
        household_id = world.household(complex_id)
        homes.append((household_id, world.funded_resident(household_id, seller, 300_000)))
    invoices = {household_id: world.invoice(household_id, amount_won=100_000_000 // 100)
                for household_id, _ in homes}

    # The relay catches up with the setup before the clock starts.
    relay = Relay(url, schema, bootstrap_servers, route=public_route)
    relay.drain()
    start_position = relay.status()["position"]

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                             fetch_max_wait_ms=20)
    consumer.assign([TopicPartition(events_topic, p) for p in range(topic_partitions_default)])
    consumer.seek_to_end()
    received_at: dict[int, float] = {}
    writes_done = threading.Event()

    def consume() -> None:
        deadline = float("inf")
        while time.perf_counter() < deadline:
            for records in consumer.poll(timeout_ms=100).values():
                now = time.perf_counter()
                for record in records:
                    received_at.setdefault(int(dict(record.headers)["position"]), now)
            if writes_done.is_set() and deadline == float("inf"):
                deadline = time.perf_counter() + 10

    relay_stop = threading.Event()
    relay_thread = threading.Thread(target=relay.run, args=(relay_stop,))
    consumer_thread = threading.Thread(target=consume)
    relay_thread.start()
    consumer_thread.start()
    committed: list[tuple[int, float]] = []  # (position reached, when the command returned)
    rng = random.Random(1)
    interval = 1 / rate_per_second
    next_at = time.perf_counter()
    for number in range(count):
        time.sleep(max(0.0, next_at - time.perf_counter()))
        next_at += interval
        household_id, resident_id = homes[number % len(homes)]
        payment_id = f"LAG-{uuid.uuid4().hex[:10]}"
        outcome = ledger.execute(
            c.PayRent(payment_id, household_id, invoices[household_id], "2026-11",
                      rng.randrange(100, 1_000), resident_id),
            cause(resident_id, "resident"))
        committed.append((outcome.position, time.perf_counter()))
        outcome = ledger.execute(c.SettleRentPayment(payment_id), cause(BILLING, "billing"))
        committed.append((outcome.position, time.perf_counter()))
    writes_done.set()
    consumer_thread.join()
    relay_stop.set()
    relay_thread.join()
    consumer.close()
    ledger.close()
    positions = [position for position, _ in committed]
    lags_ms = []
    for position, received in received_at.items():
        if position <= start_position:
            continue
        index = bisect.bisect_left(positions, position)
        if index < len(committed):
            lags_ms.append((received - committed[index][1]) * 1000)
    print(
        f"lag over {len(lags_ms)} public events from {len(committed)} commands"
        f" at {rate_per_second:g} commands/s: p50 {statistics.median(lags_ms):.1f} ms,"
        f" p99 {percentile(lags_ms, 0.99):.1f} ms, max {max(lags_ms):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--households", type=int, default=1500)
    parser.add_argument("--months", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1,
                        help="throughput runs over the same seeded log, each relay then raw;"
                             " with more than one the median ratio is printed")
    parser.add_argument("--batch-size", type=int, default=1000, help="the relay's batch size")
    parser.add_argument("--lag-commands", type=int, default=400,
                        help="rent payments, each paid then settled (0: skip the lag run)")
    parser.add_argument("--rate", type=float, default=50.0, help="rent payments per second")
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
        throughput(url, schemas[0], bootstrap_servers, arguments.households, arguments.months,
                   arguments.runs, arguments.batch_size)
        if arguments.lag_commands > 0:
            if broker is not None:
                broker.restart()  # a clean broker: the lag run reads only its own records
            lag(url, schemas[1], bootstrap_servers, arguments.lag_commands, arguments.rate)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        if broker is not None:
            broker.close()


if __name__ == "__main__":
    main()
