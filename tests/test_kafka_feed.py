"""The Kafka feed end to end: real ledger events, the public route, a real broker (Tansu).

The relay runs as `ledger relay` (and `python -m feed.relay --route …`) in a
subprocess that is killed with SIGKILL; the broker is stopped and started again.
Tansu keeps topics in memory, so a broker restart loses what it held: before the
outage the test stops the relay and reads everything acknowledged so far, and
after the outage it reads the rebuilt topics from the beginning. A consumer that
keeps the first delivery of each event id (the rule in docs/kafka.md) must then
have applied every committed rent event exactly once, in log order per household.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
import pytest
from billing_consumer import (
    Answer,
    AnswerResult,
    Billing,
    LedgerUnavailableError,
    RentEvent,
    http_answerer,
    kafka_consumer,
    ledger_answerer,
    run_until_idle,
)
from jsonschema import Draft202012Validator
from kafka import KafkaConsumer, TopicPartition

from eventlog.log import StoredRow
from feed.public_events import events_topic, rent_topic
from feed.public_events import route as public_route
from feed.relay import OutgoingMessage, Relay, relay_status
from kafka_broker import TansuBroker
from ledger import commands as c
from ledger.application import now
from ledger.database import ConnectionSettings
from ledger.household import Household
from ledger.resident import Resident
from world import BILLING, GUARDS_OFF, MANAGER, PLATFORM, World, cause

pytestmark = pytest.mark.kafka

repository_root = Path(__file__).resolve().parent.parent
schemas_dir = repository_root / "schemas"


# Reading the feed ---------------------------------------------------------------------


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

    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.value))


def wait_until(condition: Callable[[], bool], timeout_seconds: float, what: str) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_seconds} s waiting for {what}")
        time.sleep(0.05)


def consume(bootstrap_servers: str, topic: str, until: Callable[[list[Received]], bool],
            timeout_seconds: float = 60.0) -> list[Received]:
    """Every record of `topic` from the beginning (manual assignment), until `until` holds."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    received: list[Received] = []
    try:
        deadline = time.monotonic() + timeout_seconds
        partitions: set[int] | None = None
        while not partitions:
            consumer.topics()
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
                received.extend(Received(r.topic, r.partition, r.offset, r.key.decode(),
                                         r.value, dict(r.headers)) for r in records)
    finally:
        consumer.close()
    return sorted(received, key=lambda r: (r.partition, r.offset))


def first_deliveries(received: list[Received]) -> list[Received]:
    """What a deduplicating consumer applies: the first delivery of each event id."""
    seen: set[str] = set()
    first = []
    for record in received:
        if record.event_id not in seen:
            seen.add(record.event_id)
            first.append(record)
    return first


def assert_order_per_key(applied: list[Received]) -> None:
    """Per key (household), applied events come in rising log position."""
    last: dict[str, int] = {}
    for record in applied:
        assert record.position > last.get(record.key, 0), (record.key, record.position)
        last[record.key] = record.position


@cache
def validator(event_type: str) -> Draft202012Validator:
    schema = json.loads((schemas_dir / f"{event_type}.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def assert_valid(record: Received) -> str:
    """The record validates against its schema and its headers agree with its payload."""
    payload = record.payload()
    event_type = record.headers["event_type"].decode()
    errors = sorted(validator(event_type).iter_errors(payload), key=str)
    assert not errors, (event_type, [error.message for error in errors])
    assert payload["event_type"] == event_type
    assert event_type.endswith(f".v{record.headers['schema_version'].decode()}")
    assert payload["event_id"] == record.event_id
    assert payload["position"] == record.position
    assert payload["aggregate_id"] == record.key
    return event_type


def expected_messages(world: World, topic: str, after: int = 0) -> dict[str, int]:
    """Event id → position of every committed event the public route sends to `topic`."""
    with world.connect() as conn:
        rows = conn.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state"
            " FROM ledger_events WHERE notification_id > %s ORDER BY notification_id",
            (after,)).fetchall()
    wanted: dict[str, int] = {}
    for position, originator_id, version, stored_topic, state in rows:
        notification = StoredRow(int(position), originator_id, int(version), stored_topic,
                                    bytes(state))
        for message in public_route(notification):
            if message.topic == topic:
                payload = json.loads(message.value)
                wanted[payload["event_id"]] = int(position)
    return wanted


def prefixed_route(prefix: str) -> Callable[[StoredRow], list[OutgoingMessage]]:
    """The public route with topics renamed `<prefix>.<topic>`, for a broker shared by tests."""
    def route(notification: StoredRow) -> list[OutgoingMessage]:
        return [replace(message, topic=f"{prefix}.{message.topic}")
                for message in public_route(notification)]

    return route


@contextmanager
def running(relay: Relay) -> Iterator[None]:
    stop_event = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop_event,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop_event.set()
        thread.join(timeout=40)
        assert not thread.is_alive(), "relay did not stop"


def drained(url: str, schema: str) -> Callable[[], bool]:
    def check() -> bool:
        status = relay_status(url, schema)
        return status["head_position"] > 0 and status["lag_events"] == 0

    return check


# Writing real rent events -------------------------------------------------------------


@dataclass
class Home:
    household_id: uuid.UUID
    resident_id: uuid.UUID
    seller_id: uuid.UUID


def rent_homes(world: World, households: int, points_won: int = 300_000) -> list[Home]:
    """Households in one complex, each with a resident holding `points_won` points."""
    complex_id = world.complex(f"HS-{uuid.uuid4().hex[:6]}")
    world.policy(guards=GUARDS_OFF)  # funded by one large sharing trade each
    seller = world.resident(world.household(complex_id))
    homes = []
    for _ in range(households):
        household_id = world.household(complex_id)
        homes.append(Home(household_id, world.funded_resident(household_id, seller, points_won),
                          seller))
    return homes


def rent_cycle(world: World, home: Home, rng: random.Random) -> None:
    """One month of rent for a household: invoice, a payment by points, settle or release."""
    wallet = world.ledger.snapshot(Resident, home.resident_id)
    if wallet is not None and wallet.available_won < 2_000:
        # Long runs spend the starting points: earn more (3 % of a sale) before paying.
        world.trade(home.resident_id, home.seller_id, 100_000)
    invoice_id = world.invoice(home.household_id, amount_won=rng.randrange(2_000, 5_000))
    payment_id = world.pay_rent(home.resident_id, home.household_id, invoice_id,
                                rng.randrange(500, 2_000))
    if rng.random() < 0.7:
        world.run(c.SettleRentPayment(payment_id), actor=BILLING, role="billing")
    else:
        world.run(c.ReleaseRentPayment(payment_id), actor=BILLING, role="billing")


class RentWriters:
    """Threads writing rent cycles for their own households until stopped."""

    def __init__(self, world: World, homes: list[Home], threads: int = 2) -> None:
        self.world = world
        self.stop_event = threading.Event()
        self.errors: list[BaseException] = []
        self.cycles = 0
        self.threads = [threading.Thread(target=self._write, args=(homes[n::threads], n))
                        for n in range(threads)]

    def _write(self, homes: list[Home], seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not self.stop_event.is_set():
                for home in homes:
                    rent_cycle(self.world, home, rng)
                    self.cycles += 1
                time.sleep(0.01)
        except BaseException as error:
            self.errors.append(error)
            raise

    def __enter__(self) -> RentWriters:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self.threads)


# Relay subprocesses -------------------------------------------------------------------


def relay_environment(database_url: str, schema: str, bootstrap_servers: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(repository_root / "src"),
            "LEDGER_DATABASE_URL": database_url, "LEDGER_SCHEMA": schema,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers}


def relay_commands(batch_size: int) -> list[list[str]]:
    """The two ways to start the relay: `ledger relay`, and the module with a route."""
    tuning = ["--batch-size", str(batch_size), "--poll-interval-seconds", "0.1",
              "--send-timeout-seconds", "3"]
    return [
        [sys.executable, "-m", "cli.main", "relay", *tuning, "--status-log-seconds", "0"],
        [sys.executable, "-m", "feed.relay", "--route", "feed.public_events:route", *tuning],
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# Tests --------------------------------------------------------------------------------


@pytest.mark.slow
def test_rent_events_exactly_once_in_effect_across_ten_kills_and_a_broker_outage(
    world: World, database_url: str, schema: str
) -> None:
    """Ten SIGKILLs of the relay and one broker outage: every rent event applied once, in order."""
    batch_size = 20
    kills = 10
    homes = rent_homes(world, households=8)
    environment: dict[str, str]
    commands = relay_commands(batch_size)
    starts = 0
    kill_positions: list[int] = []
    before: list[Received] = []

    def start() -> subprocess.Popen[bytes]:
        nonlocal starts
        starts += 1
        return subprocess.Popen(commands[starts % 2], env=environment,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        kill_positions.append(relay_status(database_url, schema)["position"])

    with TansuBroker() as broker:
        environment = relay_environment(database_url, schema, broker.bootstrap_servers)
        process = start()
        try:
            with RentWriters(world, homes) as writers:
                for _ in range(kills // 2):
                    time.sleep(random.uniform(1.0, 2.0))
                    kill(process)
                    process = start()
                # The outage. Tansu forgets everything on restart, so first read all that
                # the broker acknowledged (the relay is stopped: nothing more is acknowledged).
                time.sleep(1.5)
                kill(process)
                published = kill_positions[-1]
                wanted = {i for i, p in expected_messages(world, rent_topic).items()
                          if p <= published}
                before = consume(broker.bootstrap_servers, rent_topic,
                                 lambda r: wanted <= {x.event_id for x in r})
                broker.stop()
                process = start()
                time.sleep(3)
                # With the broker down nothing is marked published, though events keep coming.
                status = relay_status(database_url, schema)
                assert status["position"] == published
                assert status["lag_events"] > 0
                broker.start()
                for _ in range(kills - kills // 2 - 1):
                    time.sleep(random.uniform(1.0, 2.0))
                    kill(process)
                    process = start()
            assert not writers.errors
            wait_until(drained(database_url, schema), 120, "the relay to drain the backlog")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0, "SIGTERM stops the relay cleanly"
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        assert len(kill_positions) == kills
        assert kill_positions == sorted(kill_positions)
        assert kill_positions[-1] > kill_positions[0], "the relay made progress between kills"

        committed = expected_messages(world, rent_topic)
        after_ids = {i for i, p in committed.items() if p > published}
        after = consume(broker.bootstrap_servers, rent_topic,
                        lambda r: after_ids <= {x.event_id for x in r})

    applied = first_deliveries(before + after)
    assert {r.event_id for r in applied} == set(committed), "every rent event, none extra"
    assert len(applied) == len(committed)
    assert_order_per_key(applied)
    assert {r.key for r in applied} == {str(home.household_id) for home in homes}
    for record in before + after:
        assert_valid(record)
    # Repeats come only from batches sent again after a kill or the outage.
    duplicates = len(before) + len(after) - len(applied)
    assert duplicates <= (kills + 1) * batch_size, duplicates
    assert writers.cycles >= 50, "the writers produced a real workload"


def test_every_public_message_validates_against_its_schema(
    world: World, database_url: str, schema: str, kafka_bootstrap: str
) -> None:
    """Every message of a varied day on the platform validates with Draft 2020-12."""
    homes = rent_homes(world, households=3, points_won=30_000)
    rng = random.Random(4)
    for home in homes:
        rent_cycle(world, home, rng)
        rent_cycle(world, home, rng)
    merchant = world.merchant("small_firm")
    trade_id = f"T-{uuid.uuid4().hex[:8]}"
    world.trade(homes[0].resident_id, merchant, 40_000, points_used_won=1_000,
                seller_kind="small_firm", trade_id=trade_id)
    world.run(c.RefundTrade(trade_id), actor=PLATFORM, role="platform")
    world.trade(homes[1].resident_id, merchant, 20_000, seller_kind="small_firm",
                points_used_won=500)
    world.run(c.PayOutMerchant(merchant, f"PO-{uuid.uuid4().hex[:6]}"))
    complex_id = world.complexes[0]
    world.run(c.SpendFund(complex_id, f"SP-{uuid.uuid4().hex[:6]}", "facility", 100,
                          "vote-2026-11"), actor=MANAGER, role="manager")
    proposal_id = f"V-{uuid.uuid4().hex[:6]}"
    world.run(c.OpenProposal(complex_id, proposal_id, "event", "Fair", 50,
                             now() + timedelta(hours=2)), actor=MANAGER, role="manager")
    world.run(c.CastBallot(proposal_id, homes[0].resident_id, "yes"),
              actor=homes[0].resident_id, role="resident")
    world.run(c.CloseProposal(proposal_id, now() + timedelta(hours=3)))
    expiring = world.pay_rent(homes[2].resident_id, homes[2].household_id,
                              world.invoice(homes[2].household_id, 3_000), 1_000,
                              hold_seconds=60)
    world.ledger.execute(c.ExpireRentPayment(expiring, now() + timedelta(hours=1)),
                         cause(PLATFORM, "platform"))
    world.run(c.MoveOut(homes[2].resident_id))

    relay = Relay(database_url, schema, kafka_bootstrap, route=prefixed_route(schema),
                  batch_size=50, poll_interval_seconds=0.1)
    assert relay.drain() > 0
    relay.close()
    seen: set[str] = set()
    for topic in (events_topic, rent_topic):
        wanted = expected_messages(world, topic)
        received = consume(kafka_bootstrap, f"{schema}.{topic}",
                           lambda r, wanted=wanted: len(r) >= len(wanted))
        assert {r.event_id for r in received} == set(wanted)
        assert len(received) == len(wanted), "no repeats in a run without failures"
        seen |= {assert_valid(record) for record in received}
        if topic == rent_topic:
            assert {r.key for r in received} == {str(h.household_id) for h in homes}
    assert {"rent.invoice_issued.v1", "rent.payment_held.v1", "rent.payment_settled.v1",
            "rent.payment_released.v1", "trade.recorded.v2", "trade.refunded.v2",
            "wallet.points_held.v2", "fund.spent.v2", "merchant.paid_out.v1",
            "wallet.resident_moved_out.v2", "vote.proposal_opened.v1",
            "vote.proposal_decided.v1"} <= seen


def test_with_the_broker_down_nothing_is_marked_published_then_the_backlog_drains(
    world: World, database_url: str, schema: str
) -> None:
    """Real rent events written during an outage wait in the log and drain when it returns."""
    homes = rent_homes(world, households=3)
    rng = random.Random(9)
    with TansuBroker() as broker:
        relay = Relay(database_url, schema, broker.bootstrap_servers, route=public_route,
                      batch_size=25, poll_interval_seconds=0.1, send_timeout_seconds=2)
        with running(relay):
            wait_until(drained(database_url, schema), 30, "the setup events")
            published = relay_status(database_url, schema)["position"]
            broker.stop()
            for home in homes:
                for _ in range(4):
                    rent_cycle(world, home, rng)
            backlog = expected_messages(world, rent_topic, after=published)
            assert len(backlog) == 3 * 4 * 3
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                assert relay_status(database_url, schema)["position"] == published
                time.sleep(0.2)
            assert relay.events_published > 0
            broker.start()
            wait_until(drained(database_url, schema), 40, "the backlog after the outage")
        received = consume(broker.bootstrap_servers, rent_topic,
                           lambda r: set(backlog) <= {x.event_id for x in r})
    applied = [r for r in first_deliveries(received) if r.event_id in backlog]
    assert {r.event_id for r in applied} == set(backlog)
    assert_order_per_key(applied)


def test_relay_command_serves_lag_metrics_and_status(
    world: World, database_url: str, schema: str, kafka_bootstrap: str
) -> None:
    """`ledger relay --metrics-port` exposes lag; `ledger relay status --json` reports it."""
    rent_homes(world, households=2)
    environment = relay_environment(database_url, schema, kafka_bootstrap)
    status_command = [sys.executable, "-m", "cli.main", "relay", "status", "--json"]

    before = json.loads(subprocess.run(status_command, env=environment, check=True,
                                       capture_output=True, timeout=60).stdout)
    assert before["position"] == 0
    assert before["lag_events"] == before["head_position"] > 0
    assert before["last_published_at"] is None
    lagging = subprocess.run([*status_command, "--max-lag-events", "0"],
                             env=environment, capture_output=True, timeout=60, check=False)
    assert lagging.returncode == 1

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "relay", "--metrics-port", str(port),
         "--route", "test_kafka_feed:schema_prefixed_route", "--poll-interval-seconds", "0.1"],
        env={**environment, "PYTHONPATH": os.pathsep.join(
                 str(repository_root / folder) for folder in ("src", "tests", "examples")),
             "FEED_TEST_TOPIC_PREFIX": schema},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(drained(database_url, schema), 60, "the relay command to drain")

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                        timeout=5) as response:
                return str(response.read().decode())

        wait_until(lambda: "ledger_relay_events_published_total" in _safe(scrape), 30,
                   "the metrics endpoint")
        metrics = scrape()
        status = relay_status(database_url, schema)
        assert f'ledger_relay_lag_events{{relay="kafka",schema="{schema}"}} 0' in metrics
        assert (f'ledger_relay_position{{relay="kafka",schema="{schema}"}} '
                f'{status["position"]}') in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    after = json.loads(subprocess.run(status_command, env=environment, check=True,
                                      capture_output=True, timeout=60).stdout)
    assert after["lag_events"] == 0
    assert after["position"] == after["head_position"]
    assert after["seconds_since_last_published"] >= 0


def _safe(read: Callable[[], str]) -> str:
    try:
        return read()
    except OSError:
        return ""


def schema_prefixed_route(notification: StoredRow) -> list[OutgoingMessage]:
    """The public route under a per-test prefix, loaded by the relay command in a subprocess."""
    return prefixed_route(os.environ["FEED_TEST_TOPIC_PREFIX"])(notification)


# The billing loop ---------------------------------------------------------------------


@pytest.fixture
def billing_conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to billing's own database (here: the test server), not autocommit."""
    with psycopg.connect(ConnectionSettings.from_url(database_url).conninfo()) as conn:
        yield conn


@pytest.fixture
def billing_schema(billing_conn: psycopg.Connection[Any], schema: str) -> Iterator[str]:
    name = f"billing_{schema}"
    yield name
    billing_conn.rollback()
    billing_conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    billing_conn.commit()


def rent_events(world: World, after: int = 0) -> list[RentEvent]:
    """The `ledger.rent` records of the log after `after`, as billing reads them."""
    events = []
    with world.connect() as conn:
        rows = conn.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state"
            " FROM ledger_events WHERE notification_id > %s ORDER BY notification_id",
            (after,)).fetchall()
    for position, originator_id, version, stored_topic, state in rows:
        notification = StoredRow(int(position), originator_id, int(version), stored_topic,
                                    bytes(state))
        for message in public_route(notification):
            if message.topic == rent_topic:
                payload = json.loads(message.value)
                headers = [("event_id", payload["event_id"].encode()),
                           ("event_type", message.event_type.encode()),
                           ("position", str(position).encode())]
                events.append(RentEvent.from_record(headers, message.value))
    return events


def payment_status(world: World, household_id: uuid.UUID, payment_id: str) -> str:
    household = world.ledger.snapshot(Household, household_id)
    assert household is not None
    return str(household.payments[payment_id]["status"])


def billing_rows(conn: psycopg.Connection[Any], schema: str, table: str,
                 columns: str, key: str) -> dict[str, tuple[Any, ...]]:
    rows = conn.execute(f'SELECT {key}, {columns} FROM "{schema}".{table}').fetchall()
    conn.commit()
    return {str(row[0]): tuple(row[1:]) for row in rows}


def test_billing_consumer_applies_each_rent_event_once_and_answers_back(
    world: World, database_url: str, schema: str, kafka_bootstrap: str,
    billing_conn: psycopg.Connection[Any], billing_schema: str,
) -> None:
    """Over Kafka: payments applied once though consumed twice; holds settled or released."""
    paid, overpaid, cancelled = rent_homes(world, households=3, points_won=30_000)
    invoices = [world.invoice(home.household_id, amount_won=10_000)
                for home in (paid, overpaid, cancelled)]
    relay = Relay(database_url, schema, kafka_bootstrap, route=prefixed_route(schema),
                  batch_size=100)
    topic = f"{schema}.{rent_topic}"
    billing = Billing(billing_conn, billing_schema, ledger_answerer(world.ledger, BILLING))
    consumer = kafka_consumer(kafka_bootstrap, topic, f"billing-{schema}")
    try:
        relay.drain()
        run_until_idle(billing, consumer, idle_seconds=1.5, timeout_seconds=60)
        assert billing.applied == 3 + 0  # three invoices (the households are not rent events)
        # Billing's own books move meanwhile: rent paid in cash, an invoice cancelled.
        billing_conn.execute(f'UPDATE "{billing_schema}".invoices SET paid_won = 8000'
                             " WHERE invoice_id = %s", (invoices[1],))
        billing_conn.execute(f'UPDATE "{billing_schema}".invoices SET cancelled = true'
                             " WHERE invoice_id = %s", (invoices[2],))
        billing_conn.commit()

        payments = [world.pay_rent(home.resident_id, home.household_id, invoice, 4_000)
                    for home, invoice in zip((paid, overpaid, cancelled), invoices, strict=True)]
        relay.drain()
        run_until_idle(billing, consumer, idle_seconds=1.5, timeout_seconds=60)
        assert payment_status(world, paid.household_id, payments[0]) == "settled"
        assert payment_status(world, overpaid.household_id, payments[1]) == "released"
        assert payment_status(world, cancelled.household_id, payments[2]) == "released"

        relay.drain()  # the ledger's settled and released events
        run_until_idle(billing, consumer, idle_seconds=1.5, timeout_seconds=60)
    finally:
        consumer.close()
        relay.close()
    assert billing.applied == 9
    assert billing.duplicates == 0

    def books() -> tuple[dict[str, Any], ...]:
        return (billing_rows(billing_conn, billing_schema, "invoices", "paid_won", "invoice_id"),
                billing_rows(billing_conn, billing_schema, "applied_payments", "status",
                             "payment_id"),
                billing_rows(billing_conn, billing_schema, "answers", "action, outcome",
                             "payment_id"),
                billing_rows(billing_conn, billing_schema, "processed_events", "position",
                             "event_id"))

    first = books()
    assert first[0] == {invoices[0]: (4_000,), invoices[1]: (8_000,), invoices[2]: (0,)}
    assert first[1] == {payments[0]: ("settled",), payments[1]: ("released",),
                        payments[2]: ("released",)}
    assert first[2] == {payments[0]: ("settle", "accepted"), payments[1]: ("release", "accepted"),
                        payments[2]: ("release", "accepted")}

    # A second consumer group reads the whole topic again: every record is a repeat.
    again = kafka_consumer(kafka_bootstrap, topic, f"billing-again-{schema}")
    try:
        run_until_idle(billing, again, idle_seconds=1.5, timeout_seconds=60)
    finally:
        again.close()
    assert billing.duplicates == 9
    assert billing.applied == 9
    assert books() == first


def test_billing_applies_repeats_once_and_keeps_answers_queued_through_an_outage(
    world: World, billing_conn: psycopg.Connection[Any], billing_schema: str,
) -> None:
    """Each event delivered twice applies once; an unreachable ledger leaves answers queued."""
    home = rent_homes(world, households=1, points_won=30_000)[0]
    invoice = world.invoice(home.household_id, amount_won=10_000)
    payment = world.pay_rent(home.resident_id, home.household_id, invoice, 3_000)
    calls: list[Answer] = []

    def unreachable(answer: Answer) -> AnswerResult:
        calls.append(answer)
        raise LedgerUnavailableError("connection refused")

    billing = Billing(billing_conn, billing_schema, unreachable)
    events = rent_events(world)
    assert [e.event_type for e in events] == ["rent.invoice_issued.v1", "rent.payment_held.v1"]
    assert [billing.apply(e) for e in events + events] == [True, True, False, False]
    assert billing.send_answers() == 0
    assert billing.pending_answers() == 1
    assert payment_status(world, home.household_id, payment) == "held"

    in_process = ledger_answerer(world.ledger, BILLING)
    billing.answerer = in_process
    assert billing.send_answers() == 1
    assert payment_status(world, home.household_id, payment) == "settled"
    # The same answer sent again (a crash before it was marked sent) changes nothing.
    assert in_process(Answer("settle", payment, events[1].event_id)).accepted
    assert calls == [Answer("settle", payment, events[1].event_id)]
    assert billing.pending_answers() == 0
    paid = billing_rows(billing_conn, billing_schema, "invoices", "paid_won", "invoice_id")
    assert paid == {invoice: (3_000,)}


def test_a_hold_that_expired_before_billing_answered_comes_off_the_invoice(
    world: World, billing_conn: psycopg.Connection[Any], billing_schema: str,
) -> None:
    """Settle after expiry is rejected; the released event takes the payment off the invoice."""
    home = rent_homes(world, households=1, points_won=30_000)[0]
    invoice = world.invoice(home.household_id, amount_won=10_000)
    payment = world.pay_rent(home.resident_id, home.household_id, invoice, 3_000,
                             hold_seconds=60)
    billing = Billing(billing_conn, billing_schema, ledger_answerer(world.ledger, BILLING))
    for event in rent_events(world):
        billing.apply(event)
    position = world.ledger.position()
    world.ledger.execute(c.ExpireRentPayment(payment, now() + timedelta(hours=1)),
                         cause(PLATFORM, "platform"))
    assert billing.send_answers() == 1
    answers = billing_rows(billing_conn, billing_schema, "answers", "outcome", "payment_id")
    assert answers == {payment: ("hold_already_released",)}
    for event in rent_events(world, after=position):
        billing.apply(event)
    assert billing_rows(billing_conn, billing_schema, "invoices", "paid_won",
                        "invoice_id") == {invoice: (0,)}
    assert billing_rows(billing_conn, billing_schema, "applied_payments", "status",
                        "payment_id") == {payment: ("released",)}


def test_billing_answers_through_the_http_api(
    world: World, database_url: str, schema: str, tmp_path: Path,
    billing_conn: psycopg.Connection[Any], billing_schema: str,
) -> None:
    """The HTTP answerer settles and releases through the real API with a billing token."""
    app_module = pytest.importorskip("service.app")
    uvicorn = pytest.importorskip("uvicorn")
    from api.auth import Role, mint_token  # noqa: PLC0415
    from api.settings import ApiSettings  # noqa: PLC0415

    settings = ApiSettings(database_url=database_url, schema_name=schema,
                           run_projections=False, expiry_sweep_seconds=0,
                           dev_key_dir=tmp_path / "keys")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app_module.create_app(settings, ledger=world.ledger),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30, "the API to start")
        home = rent_homes(world, households=1, points_won=30_000)[0]
        invoice = world.invoice(home.household_id, amount_won=5_000)
        payments = [world.pay_rent(home.resident_id, home.household_id, invoice, 2_000)
                    for _ in range(2)]
        billing = Billing(billing_conn, billing_schema, http_answerer(
            f"http://127.0.0.1:{port}", mint_token(Role.BILLING, BILLING, settings=settings)))
        billing_conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{billing_schema}"')
        events = rent_events(world)
        billing.apply(events[0])
        # Billing learned of 3,000 won paid in cash: only one 2,000 won payment still fits.
        billing_conn.execute(f'UPDATE "{billing_schema}".invoices SET paid_won = 3000')
        billing_conn.commit()
        for event in events[1:] + events:
            billing.apply(event)
        assert billing.send_answers() == 2
        assert payment_status(world, home.household_id, payments[0]) == "settled"
        assert payment_status(world, home.household_id, payments[1]) == "released"
        # Sent again with the same Idempotency-Key: the API replays the first answer.
        answer = http_answerer(f"http://127.0.0.1:{port}",
                               mint_token(Role.BILLING, BILLING, settings=settings))
        assert answer(Answer("settle", payments[0], events[1].event_id)).accepted
        rejected = answer(Answer("settle", payments[1], str(uuid.uuid4())))
        assert rejected == AnswerResult(accepted=False, code="hold_already_released")
    finally:
        server.should_exit = True
        thread.join(timeout=20)
