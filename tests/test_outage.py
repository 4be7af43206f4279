"""The running service against a PostgreSQL that crashes, and an API that is killed -9.

Each test starts its own PostgreSQL cluster (see `private_postgres`) and the service as a
real uvicorn process, with writers that retry with the same Idempotency-Key, as a client
should. Every loop here is bounded in count and time and stops by itself.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from api.auth import Role, mint_token
from api.settings import ApiSettings
from ledger.application import Ledger
from private_postgres import PrivatePostgres
from running_service import Service
from world import GUARDS_OFF, World

pytestmark = pytest.mark.slow

ANSWER_SECONDS_MAX = 5.0
"""Every request is answered within this (the service's stated bound), outage or not."""
SLACK_SECONDS = 1.5
"""For a loaded two-core machine: a bound is asserted as bound + slack."""
OUTAGE_SECONDS = 10.0
WRITERS = 4


@pytest.fixture
def cluster() -> Iterator[PrivatePostgres]:
    with PrivatePostgres() as postgres:
        yield postgres


@pytest.fixture
def population(cluster: PrivatePostgres) -> dict[str, Any]:
    ledger = Ledger.connect(cluster.url, "public")
    try:
        world = World(ledger, cluster.url, "public")
        complex_id = world.complex()
        world.policy(guards=GUARDS_OFF)  # the same pairs trade over and over
        sellers = [world.resident(world.household(complex_id)) for _ in range(WRITERS)]
        buyers = [world.resident(world.household(complex_id)) for _ in range(WRITERS)]
    finally:
        ledger.close()
    return {"sellers": sellers, "buyers": buyers}


@pytest.fixture
def service(cluster: PrivatePostgres, population: dict[str, Any],
            tmp_path: Path) -> Iterator[Service]:
    running = Service(key_dir=tmp_path / "keys", database_url=cluster.url)
    running.start()
    yield running
    running.stop()


@dataclass
class Traffic:
    """What the writers saw: every trade they started, acknowledged and every answer."""

    started: set[str] = field(default_factory=set)
    acknowledged: dict[str, int] = field(default_factory=dict)
    statuses: list[int] = field(default_factory=list)
    slowest_seconds: float = 0.0
    unavailable_without_retry_after: int = 0
    successes_at: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, status: int, seconds: float, response: httpx.Response | None) -> None:
        with self.lock:
            self.statuses.append(status)
            self.slowest_seconds = max(self.slowest_seconds, seconds)
            if status == 503 and response is not None and "retry-after" not in response.headers:
                self.unavailable_without_retry_after += 1
            if status == 201:
                self.successes_at.append(time.monotonic())


def write_until(service: Service, population: dict[str, Any], traffic: Traffic,
                stop_starting: threading.Event, give_up_at: float, writer: int) -> None:
    """Start trades until told to stop; retry each (same key, same body) until it is
    acknowledged or the test's time is up."""
    token = mint_token(Role.PLATFORM, uuid.uuid4(),
                       settings=ApiSettings(dev_key_dir=service.key_dir, jwt_public_keys=()))
    with httpx.Client(timeout=ANSWER_SECONDS_MAX * 3) as client:
        while not stop_starting.is_set() and time.monotonic() < give_up_at:
            trade_id = f"W{writer}-{uuid.uuid4().hex[:10]}"
            body = {"trade_id": trade_id, "market": "sharing", "category": "childcare",
                    "seller_id": str(population["sellers"][writer]),
                    "seller_kind": "resident", "buyer_id": str(population["buyers"][writer]),
                    "amount_won": 10_000}
            headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": trade_id}
            with traffic.lock:
                traffic.started.add(trade_id)
            while time.monotonic() < give_up_at:
                began = time.monotonic()
                try:
                    response = client.post(f"{service.base}/v1/trades", json=body,
                                           headers=headers)
                except httpx.TransportError:  # the API process is down (kill -9)
                    traffic.note(0, time.monotonic() - began, None)
                    time.sleep(0.2)
                    continue
                traffic.note(response.status_code, time.monotonic() - began, response)
                if response.status_code == 201:
                    with traffic.lock:
                        traffic.acknowledged[trade_id] = int(response.json()["position"])
                    break
                time.sleep(0.2)


def stored_trades(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT convert_from(state, 'UTF8')::jsonb ->> 'trade_id', count(*)"
            " FROM ledger_events WHERE topic LIKE %s GROUP BY 1",
            ("%:Trade.Recorded",)).fetchall()
    return {trade_id: count for trade_id, count in rows if trade_id.startswith("W")}


def run_writers(service: Service, population: dict[str, Any], traffic: Traffic,
                stop_starting: threading.Event, give_up_at: float) -> list[threading.Thread]:
    threads = [threading.Thread(target=write_until, daemon=True,
                                args=(service, population, traffic, stop_starting, give_up_at,
                                      writer))
               for writer in range(WRITERS)]
    for thread in threads:
        thread.start()
    return threads


def test_database_crash_answers_503_in_bound_and_recovers_with_nothing_lost_or_doubled(
        cluster: PrivatePostgres, population: dict[str, Any], service: Service) -> None:
    """PostgreSQL crashes for 10 s under four writers and a reader: every answer is 201,
    200 or 503 with Retry-After, within the bound; writes and reads succeed again within
    5 s of its return; every started write is acknowledged and stored exactly once."""
    traffic = Traffic()
    stop_starting = threading.Event()
    give_up_at = time.monotonic() + 90
    reads: list[tuple[int, float, float]] = []  # status, seconds, began
    auditor = mint_token(Role.AUDITOR, uuid.uuid4(), settings=ApiSettings(
        dev_key_dir=service.key_dir, jwt_public_keys=()))

    def read() -> None:
        with httpx.Client(timeout=ANSWER_SECONDS_MAX * 3) as client:
            while not stop_starting.is_set() and time.monotonic() < give_up_at:
                for path in ("/v1/accrual-policy",
                             f"/v1/wallets/{population['buyers'][0]}"):
                    began = time.monotonic()
                    response = client.get(f"{service.base}{path}",
                                          headers={"Authorization": f"Bearer {auditor}"})
                    reads.append((response.status_code, time.monotonic() - began, began))
                time.sleep(0.1)

    threads = run_writers(service, population, traffic, stop_starting, give_up_at)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(3)
    acknowledged_before = len(traffic.acknowledged)
    cluster.crash()
    time.sleep(OUTAGE_SECONDS)
    cluster.start()
    back_at = time.monotonic()
    time.sleep(8)
    stop_starting.set()
    for thread in [*threads, reader]:
        thread.join(timeout=give_up_at - time.monotonic() + 5)

    assert acknowledged_before > 0, "writes went through before the crash"
    assert set(traffic.statuses) <= {201, 503}, sorted(set(traffic.statuses))
    assert 503 in traffic.statuses, "the outage was seen"
    assert traffic.unavailable_without_retry_after == 0
    assert traffic.slowest_seconds <= ANSWER_SECONDS_MAX + SLACK_SECONDS
    first_success_after = min(t for t in traffic.successes_at if t >= back_at)
    assert first_success_after - back_at <= 5.0 + SLACK_SECONDS
    assert {status for status, _, _ in reads} <= {200, 503}, sorted({s for s, _, _ in reads})
    assert max(seconds for _, seconds, _ in reads) <= ANSWER_SECONDS_MAX + SLACK_SECONDS
    # Reads recover by themselves too (the wallet is read on the event loop's own pool).
    first_read_after = min(began for status, _, began in reads
                           if status == 200 and began >= back_at)
    assert first_read_after - back_at <= 5.0 + SLACK_SECONDS
    assert traffic.started == set(traffic.acknowledged), "every started write acknowledged"
    assert stored_trades(cluster.url) == dict.fromkeys(traffic.acknowledged, 1)


def test_api_killed_9_during_writes_loses_and_doubles_nothing(
        cluster: PrivatePostgres, population: dict[str, Any], service: Service) -> None:
    """The API process is killed -9 twice under four writers and started again; the
    writers retry with the same keys: every write is stored exactly once."""
    traffic = Traffic()
    stop_starting = threading.Event()
    give_up_at = time.monotonic() + 90
    threads = run_writers(service, population, traffic, stop_starting, give_up_at)
    for _ in range(2):
        time.sleep(2)
        service.kill()
        time.sleep(1)
        service.start()
    time.sleep(2)
    stop_starting.set()
    for thread in threads:
        thread.join(timeout=give_up_at - time.monotonic() + 5)
    assert set(traffic.statuses) <= {0, 201, 503}, sorted(set(traffic.statuses))
    assert traffic.started == set(traffic.acknowledged)
    assert len(traffic.acknowledged) > WRITERS * 2
    assert stored_trades(cluster.url) == dict.fromkeys(traffic.acknowledged, 1)


def token(service: Service, role: Role, subject: uuid.UUID,
          complex_id: uuid.UUID | None = None) -> dict[str, str]:
    minted = mint_token(role, subject, complex_id, settings=ApiSettings(
        dev_key_dir=service.key_dir, jwt_public_keys=()))
    return {"Authorization": f"Bearer {minted}"}


def test_two_api_workers_answer_as_one_process_would(cluster: PrivatePostgres,
                                                     tmp_path: Path) -> None:
    """With two worker processes (each request may land on either): a resident who just
    earned points pays rent with them, against an invoice just issued, every time; and
    ten concurrent payments from a wallet that affords three accept exactly three."""
    ledger = Ledger.connect(cluster.url, "public")
    try:
        world = World(ledger, cluster.url, "public")
        complex_id = world.complex()
        world.policy(guards=GUARDS_OFF)  # the same pairs trade over and over
        seller = world.resident(world.household(complex_id))
        homes = [world.household(complex_id) for _ in range(11)]
        payers = [world.resident(home) for home in homes]
    finally:
        ledger.close()
    service = Service(key_dir=tmp_path / "keys", database_url=cluster.url, workers=2)
    service.start()
    try:
        platform = token(service, Role.PLATFORM, uuid.uuid4())
        billing = token(service, Role.BILLING, uuid.uuid4())
        refused: list[str] = []
        for round_number, (home, payer) in enumerate(zip(homes[:10], payers[:10],
                                                         strict=True)):
            # A new connection per request: the kernel hands each to either worker.
            invoice = httpx.post(f"{service.base}/v1/rent-invoices", headers={
                **billing, "Idempotency-Key": f"inv-{round_number}"}, json={
                "household_id": str(home), "invoice_id": f"INV-{round_number}",
                "billing_period": "2026-12", "amount_won": 500_000,
                "due_at": "2026-12-25T00:00:00+09:00"}, timeout=10)
            assert invoice.status_code == 201, invoice.text
            earned = httpx.post(f"{service.base}/v1/trades", headers={
                **platform, "Idempotency-Key": f"earn-{round_number}"}, json={
                "trade_id": f"EARN-{round_number}", "market": "sharing",
                "category": "childcare", "seller_id": str(seller), "seller_kind": "resident",
                "buyer_id": str(payer), "amount_won": 100_000}, timeout=10)
            assert earned.status_code == 201, earned.text
            paid = httpx.post(f"{service.base}/v1/rent-payments", headers={
                **token(service, Role.RESIDENT, payer),
                "Idempotency-Key": f"pay-{round_number}"}, json={
                "payment_id": f"PAY-{round_number}", "household_id": str(home),
                "invoice_id": f"INV-{round_number}", "billing_period": "2026-12",
                "amount_won": 3_000}, timeout=10)
            if paid.status_code != 201:
                refused.append(paid.text)
        assert refused == [], "no stale rejection from either worker"

        hot_home, hot_payer = homes[10], payers[10]
        assert httpx.post(f"{service.base}/v1/rent-invoices", headers={
            **billing, "Idempotency-Key": "inv-hot"}, json={
            "household_id": str(hot_home), "invoice_id": "INV-HOT",
            "billing_period": "2026-12", "amount_won": 500_000,
            "due_at": "2026-12-25T00:00:00+09:00"}, timeout=10).status_code == 201
        assert httpx.post(f"{service.base}/v1/trades", headers={
            **platform, "Idempotency-Key": "earn-hot"}, json={
            "trade_id": "EARN-HOT", "market": "sharing", "category": "childcare",
            "seller_id": str(seller), "seller_kind": "resident", "buyer_id": str(hot_payer),
            "amount_won": 100_000}, timeout=10).status_code == 201  # 3,000 points
        statuses: list[tuple[int, str]] = []

        def pay(number: int) -> None:
            response = httpx.post(f"{service.base}/v1/rent-payments", headers={
                **token(service, Role.RESIDENT, hot_payer),
                "Idempotency-Key": f"hot-{number}"}, json={
                "payment_id": f"HOT-{number}", "household_id": str(hot_home),
                "invoice_id": "INV-HOT", "billing_period": "2026-12", "amount_won": 1_000},
                timeout=15)
            statuses.append((response.status_code, response.json().get("code", "")))

        racers = [threading.Thread(target=pay, args=(n,)) for n in range(10)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(timeout=30)
        accepted = [s for s in statuses if s[0] == 201]
        assert len(statuses) == 10
        assert len(accepted) == 3, statuses
        assert all(code == "insufficient_points" for status, code in statuses
                   if status != 201), statuses
    finally:
        assert service.stop()


def test_sigterm_finishes_what_is_in_flight_and_exits(
        cluster: PrivatePostgres, population: dict[str, Any], service: Service) -> None:
    """SIGTERM under four writers: the service exits by itself, cleanly, within 20 s;
    every write it acknowledged is stored, and whatever it did not is retried elsewhere
    (here: against the restarted service) exactly once."""
    traffic = Traffic()
    stop_starting = threading.Event()
    give_up_at = time.monotonic() + 60
    threads = run_writers(service, population, traffic, stop_starting, give_up_at)
    time.sleep(2)
    began = time.monotonic()
    assert service.stop(), "a clean shutdown, without being killed"
    assert time.monotonic() - began < 20
    service.start()
    time.sleep(1)
    stop_starting.set()
    for thread in threads:
        thread.join(timeout=give_up_at - time.monotonic() + 5)
    assert set(traffic.statuses) <= {0, 201, 503}, sorted(set(traffic.statuses))
    assert traffic.started == set(traffic.acknowledged)
    assert stored_trades(cluster.url) == dict.fromkeys(traffic.acknowledged, 1)
