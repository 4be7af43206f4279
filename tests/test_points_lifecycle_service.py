"""Points lifecycle on the read side and in the service: the wallet and fund views show
pending points and what expires soon; the sweeper releases ended windows and expires lots,
once, even with two sweepers; projections equal a fold of the events and a rebuild."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

import projections as p
from ledger import commands as c
from ledger.application import Ledger, now
from ledger.conservation import fold
from ledger.database import ConnectionSettings
from ledger.events import KST
from ledger.lots import add_months
from ledger.resident import Resident
from projections.runner import ProjectionRunner
from service.sweeper import ExpirySweeper
from world import DEFAULT_RATES, World

DAY = timedelta(days=1)


@pytest.fixture
def runner(database_url: str, schema: str, world: World) -> Iterator[ProjectionRunner]:
    assert world  # the ledger creates the events table first
    projection_runner = ProjectionRunner(database_url, schema, start=False)
    yield projection_runner
    projection_runner.stop()


@pytest.fixture
def conn(database_url: str, schema: str) -> Iterator[psycopg.Connection[Any]]:
    with p.connect(database_url, schema, autocommit=True) as connection:
        yield connection


@pytest.fixture
def pool(database_url: str, schema: str) -> Iterator[ConnectionPool[Any]]:
    conninfo = ConnectionSettings.from_url(database_url).conninfo()
    with ConnectionPool(conninfo, min_size=1, max_size=2,
                        kwargs={"options": f"-c search_path={schema}", "autocommit": True},
                        open=True) as connections:
        yield connections


def town(world: World) -> dict[str, Any]:
    world.run(c.SetAccrualPolicy.of(DEFAULT_RATES))
    complex_id = world.complex()
    seller = world.resident(world.household(complex_id))
    buyer = world.resident(world.household(complex_id))
    merchant = world.merchant("small_firm")
    return {"complex": complex_id, "seller": seller, "buyer": buyer, "merchant": merchant}


def test_wallet_and_fund_views_show_pending_and_expiring_points(
        world: World, runner: ProjectionRunner, conn: psycopg.Connection[Any]) -> None:
    """Pending points show in the wallet and the fund; a lot within 30 days of its expiry
    shows with its date; nothing pending or expiring shows as zero."""
    t = town(world)
    world.trade(t["buyer"], t["merchant"], 10_000, seller_kind="small_firm", trade_id="T-p")
    soon = now() - timedelta(days=365 * 2 - 20)  # expires in about 20 days
    world.trade(t["buyer"], t["seller"], 10_000, trade_id="T-old", occurred_at=soon)
    runner.catch_up()
    view = p.wallet_lifecycle(conn, t["buyer"], now())
    assert view["pending_won"] == 200
    assert view["expiring_soon_won"] == 300
    (entry,) = view["expiring_soon"]
    wallet = world.ledger.snapshot(Resident, t["buyer"])
    assert wallet is not None and wallet.lots is not None
    assert entry["expires_at"] == wallet.lots["accrual:T-old"][0]
    assert p.fund_pending_won(conn, t["complex"]) == 50
    assert p.wallet_lifecycle(conn, t["seller"], now())["pending_won"] == 0


def test_the_sweeper_releases_ended_windows_and_expires_lots_once(
        world: World, runner: ProjectionRunner, conn: psycopg.Connection[Any],
        pool: ConnectionPool[Any], database_url: str, schema: str) -> None:
    """A sweep releases every trade whose window ended and expires every lot past its
    expiry; a second sweeper at the same moment finds nothing left to do."""
    t = town(world)
    world.trade(t["buyer"], t["merchant"], 10_000, seller_kind="small_firm", trade_id="T-due",
                occurred_at=now() - 8 * DAY)
    world.trade(t["buyer"], t["merchant"], 10_000, seller_kind="small_firm", trade_id="T-open",
                occurred_at=now() - 2 * DAY)
    world.trade(t["seller"], t["merchant"], 10_000, seller_kind="small_firm", trade_id="T-x",
                occurred_at=now() - 3 * DAY)
    world.trade(t["buyer"], t["seller"], 10_000, trade_id="T-old", occurred_at=now() - 800 * DAY)
    runner.catch_up()
    first = ExpirySweeper(world.ledger, pool, 60)
    assert first.sweep_points() == (1, 1)
    runner.catch_up()
    second_ledger = Ledger.connect(database_url, schema)
    try:
        second = ExpirySweeper(second_ledger, pool, 60)
        assert second.sweep_points() == (0, 0)
    finally:
        second_ledger.close()
    wallet = world.ledger.snapshot(Resident, t["buyer"])
    assert wallet is not None
    assert (wallet.available_won, wallet.pending_won, wallet.expired_total_won) == (200, 200, 300)
    assert p.due_pending_trades(conn, now()) == []
    assert p.due_pending_trades(conn, now() + 8 * DAY) == ["T-x", "T-open"] or \
        sorted(p.due_pending_trades(conn, now() + 8 * DAY)) == ["T-open", "T-x"]
    assert fold(world.all_events()).problems() == []
    assert p.read_all(conn) == p.fold_all(database_url, schema)
    p.rebuild(database_url, schema, progress=False)
    assert p.read_all(conn) == p.fold_all(database_url, schema)


def test_one_sweep_takes_page_after_page_until_nothing_is_due(
        world: World, runner: ProjectionRunner, pool: ConnectionPool[Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A month-end with more due than one page: one round releases and expires everything
    due (pages of two here), not one page per interval; what a page did is not proposed
    again while the projection catches up."""
    t = town(world)
    residents = [world.resident(world.household(t["complex"])) for _ in range(5)]
    for number, resident in enumerate(residents):
        world.trade(resident, t["merchant"], 10_000, seller_kind="small_firm",
                    trade_id=f"T-due-{number}", occurred_at=now() - 8 * DAY)
        world.trade(resident, t["seller"], 10_000, trade_id=f"T-old-{number}",
                    occurred_at=now() - 800 * DAY)
    runner.catch_up()
    monkeypatch.setattr("ledger.limits.page_size_max", 2)
    assert ExpirySweeper(world.ledger, pool, 60).sweep_points() == (5, 5)
    for resident in residents:
        wallet = world.ledger.snapshot(Resident, resident)
        assert wallet is not None
        assert (wallet.pending_won, wallet.expired_total_won) == (0, 300)


def test_a_lot_falling_due_later_the_same_day_gets_a_sweep_of_its_own(
        world: World, runner: ProjectionRunner, pool: ConnectionPool[Any]) -> None:
    """Two lots of one wallet expire at 09:00 and 15:00 of one day: a sweep at 10:00 expires
    the first, a sweep at 16:00 the second (not the next day's sweep)."""
    t = town(world)
    morning = (now().astimezone(KST) - 800 * DAY).replace(hour=9, minute=0, second=0,
                                                          microsecond=0)
    world.trade(t["buyer"], t["seller"], 10_000, trade_id="T-9", occurred_at=morning)
    world.trade(t["buyer"], t["seller"], 20_000, trade_id="T-15",
                occurred_at=morning + timedelta(hours=6))
    runner.catch_up()
    first_due = add_months(morning, 24)
    sweeper = ExpirySweeper(world.ledger, pool, 60)
    assert sweeper.sweep_points(first_due + timedelta(hours=1)) == (0, 1)
    runner.catch_up()
    wallet = world.ledger.snapshot(Resident, t["buyer"])
    assert wallet is not None and wallet.expired_total_won == 300
    assert sweeper.sweep_points(first_due + timedelta(hours=7)) == (0, 1)
    wallet = world.ledger.snapshot(Resident, t["buyer"])
    assert wallet is not None
    assert (wallet.available_won, wallet.expired_total_won) == (0, 900)
