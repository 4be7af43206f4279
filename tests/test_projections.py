"""Projections: balances, history, funds, rent, market views; live, rebuilt, exactly once."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

import projections as p
from ledger import commands as c
from ledger.application import Ledger, now
from ledger.errors import DomainError
from ledger.events import Cause
from ledger.resident import Resident
from projections.runner import ProjectionRunner, WalletBalances, rebuild
from projections.wallet_balances import BALANCES
from world import GUARDS_OFF

OPERATOR = uuid.uuid4()


def cause(role: str = "operator", actor: uuid.UUID = OPERATOR, *,
          at: datetime | None = None, on_behalf_of: uuid.UUID | None = None) -> Cause:
    return Cause(actor, role, uuid.uuid4().hex, at or now(), on_behalf_of)


class World:
    """A ledger with one complex, one household, two residents, a merchant and a policy."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.complex_id = uuid.UUID(self.run(c.RegisterComplex("HS-01", "Hwaseong 1",
                                                              "Hwaseong"))["complex_id"])
        self.household_id = uuid.UUID(self.run(c.RegisterHousehold(self.complex_id,
                                                                   "101-1203"))["household_id"])
        self.buyer = self.enrol("consent-1")
        self.seller = self.enrol("consent-2")
        self.merchant = uuid.UUID(self.run(c.RegisterMerchant("local_food", "Farm"))["merchant_id"])
        self.run(c.SetAccrualPolicy.of([
            {"market": "sharing", "seller_kind": "resident", "personal_bps": 300,
             "common_bps": 100},
            {"market": "shopping", "seller_kind": "local_food", "personal_bps": 500,
             "common_bps": 200},
        ], guards=GUARDS_OFF))  # buyer and seller share a household
        self.trades = 0

    def run(self, command: c.Command, why: Cause | None = None) -> Any:
        return self.ledger.execute(command, why or cause())

    def enrol(self, consent: str) -> uuid.UUID:
        outcome = self.run(c.EnrolResident(self.household_id, consent), cause("coordinator"))
        return uuid.UUID(outcome["resident_id"])

    def trade(self, amount_won: int, points_used_won: int = 0, *, merchant: bool = False,
              at: datetime | None = None, trade_id: str | None = None) -> Any:
        self.trades += 1
        trade_id = trade_id or f"T{self.trades}"
        if merchant:
            command = c.RecordTrade(trade_id, "shopping", "food", self.merchant, "local_food",
                                    self.buyer, amount_won, points_used_won)
        else:
            command = c.RecordTrade(trade_id, "sharing", "childcare", self.seller, "resident",
                                    self.buyer, amount_won, points_used_won)
        return self.run(command, cause("platform", at=at))

    def invoice(self, invoice_id: str, amount_won: int = 500_000) -> None:
        self.run(c.IssueRentInvoice(self.household_id, invoice_id, "2026-11", amount_won,
                                    now() + timedelta(days=10)), cause("billing"))

    def pay_rent(self, payment_id: str, invoice_id: str, amount_won: int, *,
                 at: datetime | None = None, hold_seconds: int | None = None,
                 why: Cause | None = None) -> Any:
        return self.run(c.PayRent(payment_id, self.household_id, invoice_id, "2026-11",
                                  amount_won, self.buyer, hold_seconds),
                        why or cause("resident", self.buyer, at=at))


@pytest.fixture
def ledger(database_url: str, schema: str) -> Iterator[Ledger]:
    app = Ledger.connect(database_url, schema)
    yield app
    app.close()


@pytest.fixture
def world(ledger: Ledger) -> World:
    return World(ledger)


@pytest.fixture
def runner(database_url: str, schema: str, ledger: Ledger) -> Iterator[ProjectionRunner]:
    assert ledger  # the ledger creates the events table first
    projection_runner = ProjectionRunner(database_url, schema, start=False)
    yield projection_runner
    projection_runner.stop()


@pytest.fixture
def conn(database_url: str, schema: str) -> Iterator[psycopg.Connection[Any]]:
    with p.connect(database_url, schema, autocommit=True) as connection:
        yield connection


def test_balances_after_trades_refunds_and_holds(world: World, runner: ProjectionRunner,
                                                 conn: psycopg.Connection[Any]) -> None:
    """A wallet's balances follow accruals, spending, refunds with clawback and rent holds."""
    world.trade(100_000)  # buyer accrues 3,000
    world.trade(10_000, 1_000)  # spends 1,000, accrues 270; seller receives 1,000
    world.trade(1_000, trade_id="R1")  # accrues 30
    world.run(c.RefundTrade("R1"), cause("platform"))  # claws back 30
    world.invoice("INV-1")
    world.pay_rent("P1", "INV-1", 2_000)
    runner.catch_up()
    buyer = p.wallet(conn, world.buyer)
    assert buyer is not None
    assert (buyer["available_won"], buyer["held_won"], buyer["owed_won"]) == (270, 2_000, 0)
    assert (buyer["accrued_total_won"], buyer["spent_total_won"]) == (3_270, 1_000)
    assert buyer["household_id"] == world.household_id
    assert not buyer["closed"]
    seller = p.wallet(conn, world.seller)
    assert seller is not None
    assert seller["available_won"] == 1_000
    aggregate = world.ledger.snapshot(Resident, world.buyer)
    assert aggregate is not None
    assert aggregate.available_won == buyer["available_won"]


def test_history_lines_explain_themselves(world: World, runner: ProjectionRunner,
                                          conn: psycopg.Connection[Any]) -> None:
    """History lines carry the policy version and rate of an accrual and who acted for whom."""
    world.trade(100_000)
    world.invoice("INV-1")
    coordinator = uuid.uuid4()
    world.pay_rent("P1", "INV-1", 500, why=cause("coordinator", coordinator,
                                                  on_behalf_of=world.buyer))
    runner.catch_up()
    page = p.wallet_entries(conn, world.buyer, None, 10)
    held, accrued, opened = page["entries"]
    assert (accrued["kind"], accrued["amount_won"], accrued["policy_version"],
            accrued["rate_bps"], accrued["market"], accrued["trade_id"]) == (
        "points_accrued", 3_000, 1, 300, "sharing", "T1")
    assert "3.00% of 100,000 won" in accrued["description"]
    assert "policy version 1" in accrued["description"]
    assert (held["kind"], held["amount_won"], held["held_delta_won"], held["payment_id"],
            held["invoice_id"]) == ("points_held", -500, 500, "P1", "INV-1")
    assert (held["actor_id"], held["actor_role"], held["on_behalf_of"]) == (
        coordinator, "coordinator", world.buyer)
    assert f"on behalf of {world.buyer}" in held["description"]
    assert opened["kind"] == "enrolled"
    assert opened["actor_role"] == "coordinator"
    first = p.wallet_entries(conn, world.buyer, None, 2)
    rest = p.wallet_entries(conn, world.buyer, first["next_cursor"], 2)
    assert [e["position"] for e in first["entries"] + rest["entries"]] == [
        e["position"] for e in page["entries"]]
    assert rest["next_cursor"] is None


def test_fund_inflows_by_kst_month(world: World, runner: ProjectionRunner,
                                   conn: psycopg.Connection[Any]) -> None:
    """An accrual at 23:30 UTC on a month's last day counts in the next KST month."""
    world.trade(100_000, at=datetime(2026, 1, 31, 23, 30, tzinfo=UTC))
    world.trade(10_000, at=datetime(2026, 1, 31, 14, 0, tzinfo=UTC))
    world.trade(10_000, merchant=True, at=datetime(2026, 2, 2, 1, 0, tzinfo=UTC))
    world.run(c.SpendFund(world.complex_id, "S1", "facility", 50, "DEC-7"), cause("manager"))
    runner.catch_up()
    fund = p.fund(conn, world.complex_id)
    assert fund is not None
    # The shopping trade's 200 won pend for its return window: accrued, not in the balance.
    assert (fund["balance_won"], fund["accrued_total_won"], fund["spent_total_won"]) == (
        1_000 + 100 - 50, 1_300, 50)
    inflows = {(row["month"], row["market"]): row["accrued_won"] for row in fund["inflows"]}
    assert inflows == {("2026-01", "sharing"): 100, ("2026-02", "sharing"): 1_000,
                       ("2026-02", "shopping"): 200}
    assert [(o["purpose"], o["decision_ref"], o["spent_won"]) for o in fund["outflows"]] == [
        ("facility", "DEC-7", 50)]


def test_rent_statuses_including_expiry(world: World, runner: ProjectionRunner,
                                        conn: psycopg.Connection[Any]) -> None:
    """Rent payments show held, settled, released and expired, and due holds are listed."""
    world.trade(1_000_000)  # 30,000 points
    world.invoice("INV-1")
    long_ago = now() - timedelta(days=2)
    for payment_id in ("P1", "P2", "P3", "P4"):
        world.pay_rent(payment_id, "INV-1", 1_000, at=long_ago, hold_seconds=60)
    world.pay_rent("P5", "INV-1", 1_000)
    world.run(c.SettleRentPayment("P1"), cause("billing"))
    world.run(c.ReleaseRentPayment("P2"), cause("billing"))
    runner.catch_up()
    assert p.due_holds(conn, now(), 10) == ["P3", "P4"]
    world.run(c.ExpireRentPayment("P3", now()), cause("sweeper"))
    runner.catch_up()
    assert p.due_holds(conn, now(), 10) == ["P4"]
    statuses = {pid: p.rent_payment(conn, pid)["status"] for pid in ("P1", "P2", "P3", "P5")}
    assert statuses == {"P1": "settled", "P2": "released", "P3": "expired", "P5": "held"}
    expired = p.rent_payment(conn, "P3")
    assert expired["resolved_at"] is not None
    assert expired["resident_id"] == world.buyer
    rent = p.household_rent(conn, world.household_id)
    (invoice,) = rent["invoices"]
    assert (invoice["amount_won"], invoice["held_won"], invoice["settled_won"]) == (
        500_000, 2_000, 1_000)
    assert len(invoice["payments"]) == 5


def test_market_stats_per_week(world: World, runner: ProjectionRunner,
                               conn: psycopg.Connection[Any]) -> None:
    """Market stats sum trades and accruals per ISO week, net of refunds, and per merchant."""
    monday = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # ISO week 2026-W10
    world.trade(10_000, at=monday)
    world.trade(20_000, merchant=True, at=monday + timedelta(days=1), trade_id="M1")
    world.trade(30_000, at=monday + timedelta(days=7))  # next week
    world.run(c.RefundTrade("M1"), cause("platform", at=monday + timedelta(days=2)))
    runner.catch_up()
    week = p.market_stats(conn, date(2026, 3, 2), date(2026, 3, 8))
    totals = week["totals"]
    assert (totals["trades_count"], totals["amount_won"], totals["refunds_count"]) == (
        2, 30_000, 1)
    assert totals["personal_accrued_won"] == 300 + 1_000
    assert totals["net_accrued_won"] == 300 + 100
    both = p.market_stats(conn, date(2026, 3, 1), date(2026, 3, 31), market="sharing")
    assert [(w["bucket"], w["personal_accrued_won"]) for w in both["by_week"]] == [
        ("2026-W10", 300), ("2026-W11", 900)]
    assert p.market_stats(conn, date(2026, 3, 2), date(2026, 3, 8),
                          complex_id=uuid.uuid4())["totals"]["trades_count"] == 0
    settlement = p.merchant_settlement(conn, world.merchant)
    assert settlement is not None
    assert (settlement["sales_count"], settlement["refunds_count"],
            settlement["balance_won"]) == (1, 1, 0)


def test_live_follow_and_wait_for(database_url: str, schema: str, world: World,
                                  conn: psycopg.Connection[Any]) -> None:
    """A started runner follows new events live; wait_for gives read-your-writes."""
    with ProjectionRunner(database_url, schema) as live:
        outcome = world.trade(100_000)
        assert live.wait_for(outcome.position, timeout=5)
        wallet = p.wallet(conn, world.buyer)
        assert wallet is not None
        assert wallet["available_won"] == 3_000
        assert min(live.positions().values()) >= outcome.position
        assert not live.wait_for(outcome.position + 10_000, timeout=0.2)


def test_rebuild_equals_live_state(database_url: str, schema: str, world: World,
                                   runner: ProjectionRunner,
                                   conn: psycopg.Connection[Any]) -> None:
    """A rebuild from position 0 gives exactly the tables the live runner built."""
    for amount in (10_000, 20_000, 30_000):
        world.trade(amount)
    world.trade(5_000, 500, merchant=True, trade_id="M1")
    world.trade(5_000, 300, merchant=True, trade_id="M2")
    runner.catch_up()
    world.run(c.RefundTrade("M1"), cause("platform"))
    world.run(c.PayOutMerchant(world.merchant, "PO-1"), cause())
    runner.catch_up()
    live_state = p.read_all(conn)
    live_positions = p.positions(conn)
    built = rebuild(database_url, schema, progress=False, batch_size=7)
    assert p.read_all(conn) == live_state
    assert built == live_positions == p.positions(conn)
    rebuild(database_url, schema, name="wallet_balances", progress=False)  # twice: names free
    assert p.read_all(conn) == live_state


def test_failed_batch_neither_advances_nor_doubles(database_url: str, schema: str,
                                                   world: World,
                                                   conn: psycopg.Connection[Any]) -> None:
    """A batch that fails mid-write leaves rows and position as they were; a retry applies once."""

    class Flaky(WalletBalances):
        fail = True

        def write(self, conn: Any, changes: Any, suffix: str = "") -> None:
            super().write(conn, changes, suffix)  # the rows are written ...
            if self.fail:
                raise RuntimeError("killed mid-batch")  # ... then the batch dies

    flaky = Flaky()
    with ProjectionRunner(database_url, schema, [flaky], start=False) as runner:
        world.trade(100_000)
        with pytest.raises(RuntimeError):
            runner.catch_up()
        assert p.positions(conn)["wallet_balances"] == 0
        assert p.wallet(conn, world.buyer) is None
        flaky.fail = False
        runner.catch_up()
        runner.catch_up()
        assert p.wallet(conn, world.buyer)["available_won"] == 3_000
        assert len(p.wallet_entries(conn, world.buyer, None, 50)["entries"]) == 2


def test_random_workload_projections_equal_fold(database_url: str, schema: str, world: World,
                                                conn: psycopg.Connection[Any]) -> None:
    """After a seeded random workload, some of it rejected, every projection equals fold_all."""
    rng = random.Random(20261126)
    residents = [world.buyer, world.seller] + [world.enrol(f"c{i}") for i in range(4)]
    invoice_ids = [f"INV-{i}" for i in range(3)]
    for invoice_id in invoice_ids:
        world.invoice(invoice_id, 20_000)
    trade_ids: list[str] = []
    payment_ids: list[str] = []
    rejected = 0
    base = datetime(2026, 1, 1, tzinfo=UTC)
    with ProjectionRunner(database_url, schema, start=False, batch_size=37) as runner:
        for step in range(400):
            at = base + timedelta(hours=rng.randrange(24 * 120))
            buyer, seller = rng.sample(residents, 2)
            choice = rng.random()
            try:
                if choice < 0.45:
                    trade_id = f"X{step}"
                    merchant = rng.random() < 0.3
                    world.run(c.RecordTrade(
                        trade_id, "shopping" if merchant else "sharing", rng.choice("abc"),
                        world.merchant if merchant else seller,
                        "local_food" if merchant else "resident", buyer,
                        rng.randrange(1_000, 200_000), rng.choice([0, 0, rng.randrange(1, 3_000)])),
                        cause("platform", at=at))
                    trade_ids.append(trade_id)
                elif choice < 0.55 and trade_ids:
                    world.run(c.RefundTrade(rng.choice(trade_ids)), cause("platform", at=at))
                elif choice < 0.7:
                    payment_id = f"P{step}"
                    world.run(c.PayRent(payment_id, world.household_id, rng.choice(invoice_ids),
                                        "2026-11", rng.randrange(1, 3_000), buyer, 60),
                              cause("resident", buyer, at=now() - timedelta(hours=1)))
                    payment_ids.append(payment_id)
                elif choice < 0.8 and payment_ids:
                    command = rng.choice([c.SettleRentPayment, c.ReleaseRentPayment])
                    world.run(command(rng.choice(payment_ids)), cause("billing"))
                elif choice < 0.85 and payment_ids:
                    world.run(c.ExpireRentPayment(rng.choice(payment_ids), now()), cause())
                elif choice < 0.92:
                    world.run(c.SpendFund(world.complex_id, f"S{step}", rng.choice(
                        ["facility", "event", "upkeep"]), rng.randrange(1, 500),
                        f"DEC-{step % 3}"), cause("manager", at=at))
                elif choice < 0.99:
                    world.run(c.PayOutMerchant(world.merchant, f"PO{step}"), cause())
                else:
                    world.run(c.MoveOut(rng.choice(residents)), cause())
            except DomainError:
                rejected += 1
            if step % 50 == 0:
                runner.catch_up()
        runner.catch_up()
    assert rejected > 10
    assert p.read_all(conn) == p.fold_all(database_url, schema)
    for resident_id in residents:
        aggregate = world.ledger.snapshot(Resident, resident_id)
        row = p.read_all(conn, "wallet_balances")[BALANCES.name][(resident_id,)]
        assert aggregate is not None
        assert (row["available_won"], row["held_won"], row["owed_won"], row["closed"]) == (
            aggregate.available_won, aggregate.held_won, aggregate.owed_won, aggregate.closed)
