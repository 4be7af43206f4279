"""The Kafka relay against a real PostgreSQL and a real Kafka-protocol broker (Tansu)."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from kafka import KafkaConsumer, TopicPartition

from eventlog.log import StoredRow
from feed.relay import (
    OutgoingMessage,
    Relay,
    event_id,
    event_stream_route,
    relay_status,
)
from kafka_broker import TansuBroker
from ledger.database import connect, eventsourcing_env

pytestmark = pytest.mark.kafka

repository_root = Path(__file__).resolve().parent.parent


class Household(Aggregate):
    """A stand-in aggregate: the relay only needs events with an id and a household."""

    def __init__(self, household_id: str) -> None:
        self.household_id = household_id
        self.noted_won = 0

    @event("Noted")
    def note(self, amount_won: int) -> None:
        self.noted_won = amount_won


class Ledger(Application[uuid.UUID]):
    name = "Ledger"


@dataclass(frozen=True)
class Received:
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    headers: dict[str, bytes]

    @property
    def event_id(self) -> str:
        return self.headers["event_id"].decode()

    @property
    def position(self) -> int:
        return int(self.headers["position"])


def ledger(database_url: str, schema: str) -> Ledger:
    return Ledger(env=eventsourcing_env(database_url, schema))


def committed_events(database_url: str, schema: str) -> list[tuple[int, uuid.UUID, int]]:
    """(position, originator id, version) of every committed event, in position order."""
    with connect(database_url, schema) as conn:  # type: ignore[attr-defined]
        rows = conn.execute(
            "SELECT notification_id, originator_id, originator_version"
            " FROM ledger_events ORDER BY notification_id"
        ).fetchall()
    return [(int(p), o, int(v)) for p, o, v in rows]


def wait_until(condition: Callable[[], bool], timeout_seconds: float, what: str) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_seconds} s waiting for {what}")
        time.sleep(0.05)


def consume(
    bootstrap_servers: str,
    topic: str,
    until: Callable[[list[Received]], bool],
    timeout_seconds: float = 20.0,
) -> list[Received]:
    """Every record of `topic` from the beginning, read with manual partition assignment."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    received: list[Received] = []
    try:
        deadline = time.monotonic() + timeout_seconds
        partitions = None
        while not partitions:
            consumer.topics()  # refreshes metadata
            partitions = consumer.partitions_for_topic(topic)
            if time.monotonic() > deadline:
                pytest.fail(f"topic {topic} never appeared")
            if not partitions:
                time.sleep(0.1)
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        while not until(received):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out consuming {topic}: have {len(received)} records")
            for records in consumer.poll(timeout_ms=200).values():
                received.extend(
                    Received(
                        r.topic,
                        r.partition,
                        r.offset,
                        r.key.decode(),
                        r.value,
                        dict(r.headers),
                    )
                    for r in records
                )
    finally:
        consumer.close()
    return received


@contextmanager
def running(relay: Relay) -> Iterator[threading.Thread]:
    stop_event = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop_event,), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop_event.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "relay did not stop"


def drained(relay: Relay) -> Callable[[], bool]:
    def check() -> bool:
        status = relay.status()
        return status["head_position"] > 0 and status["lag_events"] == 0

    return check


def deduplicated(received: list[Received]) -> list[Received]:
    """What a consumer applies: the first delivery of each event id, in log order."""
    seen: set[str] = set()
    first = []
    for record in sorted(received, key=lambda r: (r.topic, r.partition, r.offset)):
        if record.event_id not in seen:
            seen.add(record.event_id)
            first.append(record)
    return first


def assert_per_key_order(records: list[Received]) -> None:
    """Within each key, positions rise in offset order (first deliveries only)."""
    last_position: dict[tuple[str, str], int] = {}
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        previous = last_position.get((record.topic, record.key), 0)
        assert record.position > previous, (record.key, previous, record.position)
        last_position[record.topic, record.key] = record.position


def expected_ids(events: list[tuple[int, uuid.UUID, int]]) -> set[str]:
    return {str(event_id(originator_id, version)) for _, originator_id, version in events}


def rent_route(schema: str) -> Callable[[StoredRow], list[OutgoingMessage]]:
    """Every event to `<schema>.events` by aggregate id; `Noted` also to `<schema>.rent`."""
    to_events = event_stream_route(f"{schema}.events")

    def route(notification: StoredRow) -> list[OutgoingMessage]:
        messages = to_events(notification)
        if notification.event_class_name == "Household.Noted":
            state = json.loads(notification.state)
            payload = {"household_id": str(notification.originator_id), **state}
            messages.append(
                OutgoingMessage(
                    f"{schema}.rent",
                    str(notification.originator_id),
                    json.dumps(payload, default=str).encode(),
                    [("source", b"test")],
                    event_type="RentNoted",
                    schema_version=2,
                )
            )
        return messages

    return route


def append_households(app: Ledger, households: int, notes: int) -> list[uuid.UUID]:
    ids = []
    for number in range(households):
        household = Household(f"H-{number}")
        for amount in range(notes):
            household.note(amount)
        app.save(household)
        ids.append(household.id)
    return ids


def test_every_event_published_once_in_order_with_headers(
    database_url: str, schema: str, kafka_bootstrap: str
) -> None:
    """Each committed event reaches its topics once, in order per key, with the four headers."""
    app = ledger(database_url, schema)
    append_households(app, households=20, notes=9)
    relay = Relay(
        database_url,
        schema,
        kafka_bootstrap,
        route=rent_route(schema),
        batch_size=37,
        poll_interval_seconds=0.2,
    )
    with running(relay):
        wait_until(drained(relay), 20, "the relay to drain")
        append_households(app, households=5, notes=3)  # arrives by NOTIFY while running
        wait_until(drained(relay), 20, "the relay to drain again")
    events = committed_events(database_url, schema)
    assert len(events) == 25 * 10 - 5 * 6

    received = consume(kafka_bootstrap, f"{schema}.events", lambda r: len(r) >= len(events))
    assert len(received) == len(events), "no duplicates in a failure-free run"
    assert {r.event_id for r in received} == expected_ids(events)
    by_position = {position: (o, v) for position, o, v in events}
    for record in received:
        originator_id, version = by_position[record.position]
        assert record.key == str(originator_id)
        assert record.event_id == str(event_id(originator_id, version))
        assert record.headers["event_type"] in {b"Household.Created", b"Household.Noted"}
        assert record.headers["schema_version"] == b"1"
    assert_per_key_order(received)

    noted = [e for e in events if e[2] > 1]
    rent = consume(kafka_bootstrap, f"{schema}.rent", lambda r: len(r) >= len(noted))
    assert len(rent) == len(noted)
    assert {r.headers["event_type"] for r in rent} == {b"RentNoted"}
    assert {r.headers["schema_version"] for r in rent} == {b"2"}
    assert {r.headers["source"] for r in rent} == {b"test"}
    assert_per_key_order(rent)

    status = relay_status(database_url, schema)
    assert status["position"] == status["head_position"] == events[-1][0]
    assert status["lag_events"] == 0
    assert status["last_published_at"] is not None


def test_broker_and_database_outages_hold_the_position_then_drain(
    database_url: str, schema: str
) -> None:
    """While the broker is down nothing is marked published; after it returns the backlog drains."""
    app = ledger(database_url, schema)
    topic = f"{schema}.events"
    with TansuBroker() as broker:
        relay = Relay(
            database_url,
            schema,
            broker.bootstrap_servers,
            route=event_stream_route(topic),
            batch_size=25,
            poll_interval_seconds=0.2,
            send_timeout_seconds=2,
        )
        with running(relay):
            append_households(app, households=5, notes=4)
            wait_until(drained(relay), 20, "the first events")
            published = relay.status()["position"]

            broker.stop()
            append_households(app, households=10, notes=4)
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                assert relay.status()["position"] == published
                time.sleep(0.2)
            assert relay.status()["lag_events"] == 50

            # Memory storage: the broker comes back empty and the relay recreates its topic.
            broker.start()
            wait_until(drained(relay), 30, "the backlog after the broker returned")
            backlog = [e for e in committed_events(database_url, schema) if e[0] > published]
            received = consume(broker.bootstrap_servers, topic, lambda r: len(r) >= 50)
            assert {r.event_id for r in received} == expected_ids(backlog)
            assert_per_key_order(deduplicated(received))

            # The database drops the relay's connection; it reconnects and goes on.
            with psycopg.connect(database_url, autocommit=True) as admin:
                terminated = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = %s",
                    (relay.application_name,),
                ).fetchone()
            assert terminated is not None
            assert terminated[0] >= 1
            append_households(app, households=3, notes=4)
            wait_until(drained(relay), 20, "the events after the database dropped the relay")
        received = consume(broker.bootstrap_servers, topic, lambda r: len(r) >= 65)
        assert {r.event_id for r in deduplicated(received)} == expected_ids(
            [e for e in committed_events(database_url, schema) if e[0] > published]
        )


def test_aborted_writes_among_concurrent_writers_skip_nothing(
    database_url: str, schema: str, kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Rolled-back inserts leave gaps; every committed event is published and nothing warns."""
    caplog.set_level(logging.WARNING, logger="feed.relay")
    app = ledger(database_url, schema)
    topic = f"{schema}.events"
    writers_done = threading.Event()
    errors: list[BaseException] = []

    def write(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(40):
                household = Household(f"H-{seed}")
                for amount in range(rng.randrange(0, 4)):
                    household.note(amount)
                app.save(household)
        except BaseException as error:
            errors.append(error)
            raise

    def abort(seed: int) -> None:
        rng = random.Random(seed)
        with connect(database_url, schema) as conn:  # type: ignore[attr-defined]
            while not writers_done.is_set():
                with conn.transaction(force_rollback=True):
                    if rng.random() < 0.5:  # as the library does, so positions stay ordered
                        conn.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
                    conn.execute(
                        "INSERT INTO ledger_events"
                        " (originator_id, originator_version, topic, state)"
                        " VALUES (%s, 1, 'aborted', '{}')",
                        (uuid.uuid4(),),
                    )
                    time.sleep(rng.uniform(0, 0.01))

    relay = Relay(
        database_url,
        schema,
        kafka_bootstrap,
        route=event_stream_route(topic),
        batch_size=16,
        poll_interval_seconds=0.05,
    )
    with running(relay):
        writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        aborters = [threading.Thread(target=abort, args=(100 + n,)) for n in range(2)]
        for thread in writers + aborters:
            thread.start()
        for thread in writers:
            thread.join(timeout=60)
        writers_done.set()
        for thread in aborters:
            thread.join(timeout=10)
        assert not errors
        wait_until(drained(relay), 30, "the relay to drain")

    events = committed_events(database_url, schema)
    assert events[-1][0] > len(events), "aborted writes must have burned positions"
    received = consume(kafka_bootstrap, topic, lambda r: len(r) >= len(events))
    assert len(received) == len(events)
    assert {r.event_id for r in received} == expected_ids(events)
    assert_per_key_order(received)
    assert [r for r in caplog.records if r.name == "feed.relay"] == []


def test_kill_9_repeatedly_loses_nothing_and_duplicates_at_most_a_batch_per_kill(
    database_url: str, schema: str, kafka_bootstrap: str
) -> None:
    """A relay killed ten times mid-stream still delivers every event; repeats stay bounded."""
    batch_size = 20
    kills = 10
    app = ledger(database_url, schema)
    mine: set[uuid.UUID] = set()
    writers_done = threading.Event()

    def write() -> None:
        while not writers_done.is_set():
            household = Household("H")
            household.note(1)
            app.save(household)
            mine.add(household.id)

    command = [
        sys.executable,
        "-m",
        "feed.relay",
        "--database-url",
        database_url,
        "--schema",
        schema,
        "--bootstrap-servers",
        kafka_bootstrap,
        "--batch-size",
        str(batch_size),
        "--poll-interval-seconds",
        "0.1",
        "--send-timeout-seconds",
        "5",
    ]
    environ = {**os.environ, "PYTHONPATH": str(repository_root / "src")}

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    writers = [threading.Thread(target=write) for _ in range(2)]
    for thread in writers:
        thread.start()
    positions = []
    process = start()
    try:
        for _ in range(kills):
            time.sleep(random.uniform(0.8, 1.6))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            positions.append(relay_status(database_url, schema)["position"])
            process = start()
        writers_done.set()
        for thread in writers:
            thread.join(timeout=30)
        probe = Relay(database_url, schema, kafka_bootstrap)
        wait_until(drained(probe), 30, "the last relay to drain")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        writers_done.set()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    assert positions == sorted(positions)
    assert positions[-1] > positions[0], "the relay made progress between kills"
    events = [e for e in committed_events(database_url, schema) if e[1] in mine]
    wanted = expected_ids(events)
    received = consume(
        kafka_bootstrap,
        "ledger.events",
        lambda r: wanted <= {x.event_id for x in r},
        timeout_seconds=30,
    )
    received = [r for r in received if r.event_id in wanted]
    applied = deduplicated(received)
    assert {r.event_id for r in applied} == wanted
    assert len(applied) == len(events)
    assert_per_key_order(applied)
    duplicates = len(received) - len(applied)
    assert duplicates <= kills * batch_size, duplicates


def test_a_second_relay_of_the_same_name_stands_by(
    database_url: str, schema: str, kafka_bootstrap: str
) -> None:
    """Two relays with one name never both publish: the second waits on the advisory lock."""
    app = ledger(database_url, schema)
    topic = f"{schema}.events"
    relays = [
        Relay(
            database_url,
            schema,
            kafka_bootstrap,
            route=event_stream_route(topic),
            batch_size=10,
            poll_interval_seconds=0.1,
        )
        for _ in range(2)
    ]
    with running(relays[0]), running(relays[1]):
        for _ in range(5):
            append_households(app, households=4, notes=4)
            time.sleep(0.1)
        wait_until(drained(relays[0]), 20, "the relays to drain")
    events = committed_events(database_url, schema)
    received = consume(kafka_bootstrap, topic, lambda r: len(r) >= len(events))
    assert len(received) == len(events)
    assert {r.event_id for r in received} == expected_ids(events)
    assert sorted(relay.events_published for relay in relays) == [0, len(events)]


def test_status_of_a_schema_without_relay_or_events(database_url: str, schema: str) -> None:
    """`ledger relay status` answers on an empty schema instead of failing."""
    assert relay_status(database_url, schema) == {
        "position": 0,
        "head_position": 0,
        "lag_events": 0,
        "last_published_at": None,
    }
