"""Group buys under concurrency: never beyond the maximum, and an order racing the close is
either in the outcome or refused, never lost or half-held."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

from ledger import commands as c
from ledger.application import Ledger, Outcome, now
from ledger.conservation import fold
from ledger.engine import Pending
from ledger.errors import DatabaseUnavailable, DomainError
from ledger.events import Cause
from ledger.groupbuy import GroupBuy, group_buy_aggregate_id
from ledger.resident import Resident
from test_ledger_concurrency import run_together
from world import OPERATOR, World, cause

RESIDENTS = 200
RETRIES_MAX = 50


def until_answered(ledger: Ledger, command: c.Command, why: Cause) -> Outcome:
    """Run a command as a client does: on DatabaseUnavailable (nothing was decided, e.g. the
    engine gave up after concurrent changes by another writer) retry with the same request
    id, until it is accepted or refused."""
    for _ in range(RETRIES_MAX):
        try:
            return ledger.execute(command, why)
        except DatabaseUnavailable:
            continue
    return ledger.execute(command, why)


def _residents(world: World, count: int, points_won: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A complex with `count` residents holding `points_won` points each (loaded in bulk)."""
    world.policy()
    complex_id = world.complex("GB-C")
    seller = world.resident(world.household(complex_id))
    households = [uuid.UUID(o["household_id"]) for o in world.ledger.execute_many(
        [(c.RegisterHousehold(complex_id, f"u-{i}"), cause()) for i in range(count)])]
    residents = [uuid.UUID(o["resident_id"]) for o in world.ledger.execute_many(
        [(c.EnrolResident(h, "consent"), cause()) for h in households])]
    world.ledger.execute_many([
        (c.RecordTrade(f"fund-{i}", "sharing", "x", seller, "resident", r,
                       points_won * 100 // 3, 0), cause()) for i, r in enumerate(residents)])
    return complex_id, residents


def _open(world: World, complex_id: uuid.UUID, quantity_max: int, quantity_min: int = 1,
          deadline_seconds: float = 3 * 24 * 3600) -> str:
    merchant = world.merchant("local_food")
    world.run(c.OpenGroupBuy("GB-race", merchant, "filters", 1_000, quantity_min, quantity_max,
                             now() + timedelta(seconds=deadline_seconds), (complex_id,)))
    return "GB-race"


def _check_holds(world: World, residents: list[uuid.UUID], points_won: int,
                 open_orders: dict[uuid.UUID, int]) -> None:
    """Each wallet holds exactly its open order's points, and has the rest available."""
    for resident in residents:
        wallet = world.ledger.snapshot(Resident, resident)
        assert wallet is not None
        held = open_orders.get(resident, 0)
        assert (wallet.held_won, wallet.available_won) == (held, points_won - held)


def test_two_hundred_residents_ordering_the_last_units(world: World) -> None:
    """200 residents order one unit each, at once, of a group buy with 50 left: exactly 50
    orders pass, 150 are group_buy_quantity_exceeded, and only the 50 hold points."""
    complex_id, residents = _residents(world, RESIDENTS, 300)
    group_buy_id = _open(world, complex_id, quantity_max=60)
    for index in range(10):  # ten units already taken
        world.run(c.PlaceGroupBuyOrder(group_buy_id, f"early-{index}", residents[index], 1, 0))
    buyers = residents[10:RESIDENTS] + residents[:10]

    def order(index: int) -> Outcome:
        return world.ledger.execute(
            c.PlaceGroupBuyOrder(group_buy_id, f"last-{index}", buyers[index], 1, 100),
            cause(buyers[index], "resident"))

    results = run_together(RESIDENTS, order)
    placed = [buyers[i] for i, r in enumerate(results) if isinstance(r, Outcome)]
    codes = Counter(r.code for r in results if isinstance(r, DomainError))
    assert not [r for r in results if not isinstance(r, Outcome | DomainError)]
    assert len(placed) == 50
    assert codes == {"group_buy_quantity_exceeded": 150}
    group_buy = world.ledger.snapshot(GroupBuy, group_buy_aggregate_id(group_buy_id))
    assert group_buy is not None and group_buy.quantity_ordered == 60
    _check_holds(world, residents, 300, dict.fromkeys(placed, 100))
    assert fold(world.all_events()).problems() == []


def test_two_writers_never_order_beyond_the_maximum(world: World) -> None:
    """Two ledgers on one database (two processes' writers), 40 orders of 2 units at once for
    30 units: exactly 15 pass; the events table's keys make the loser re-check."""
    complex_id, residents = _residents(world, 40, 300)
    group_buy_id = _open(world, complex_id, quantity_max=30)
    second = Ledger.connect(world.database_url, world.schema)
    try:
        second.snapshot(GroupBuy, group_buy_aggregate_id(group_buy_id))
        ledgers = [world.ledger, second]

        def order(index: int) -> Outcome:
            return until_answered(
                ledgers[index % 2],
                c.PlaceGroupBuyOrder(group_buy_id, f"two-{index}", residents[index], 2, 50),
                cause(residents[index], "resident"))

        results = run_together(40, order)
    finally:
        second.close()
    placed = [residents[i] for i, r in enumerate(results) if isinstance(r, Outcome)]
    codes = Counter(r.code for r in results if isinstance(r, DomainError))
    assert len(placed) == 15
    assert codes == {"group_buy_quantity_exceeded": 25}
    group_buy = world.ledger.snapshot(GroupBuy, group_buy_aggregate_id(group_buy_id))
    assert group_buy is not None and group_buy.quantity_ordered == 30
    _check_holds(world, residents, 300, dict.fromkeys(placed, 50))
    assert fold(world.all_events()).problems() == []


def _race_the_close(world: World, ledgers: list[Ledger], quantity_min: int) -> None:
    """Orders and the sweeper's close sent at once: every order placed before the close is
    in the outcome (a trade, or a released hold); every other is refused; no hold is left."""
    complex_id, residents = _residents(world, 61, 300)  # the 31st never orders
    group_buy_id = _open(world, complex_id, quantity_max=1_000, quantity_min=quantity_min)
    closing_at = now() + timedelta(days=4)

    def act(index: int) -> Any:
        if index == 30:
            return until_answered(
                ledgers[index % len(ledgers)], c.CloseGroupBuy(group_buy_id),
                cause(OPERATOR, "operator", occurred_at=closing_at))
        resident = residents[index]
        return until_answered(
            ledgers[index % len(ledgers)],
            c.PlaceGroupBuyOrder(group_buy_id, f"race-{index}", resident, 1, 100),
            cause(resident, "resident"))

    results = run_together(61, act)
    closed = results[30]
    assert isinstance(closed, Outcome), closed
    placed = [i for i, r in enumerate(results) if i != 30 and isinstance(r, Outcome)]
    refused = Counter(r.code for r in results if isinstance(r, DomainError))
    assert set(refused) <= {"group_buy_closed"}
    assert len(placed) + sum(refused.values()) == 60
    assert closed["orders_count"] == len(placed)
    group_buy = world.ledger.snapshot(GroupBuy, group_buy_aggregate_id(group_buy_id))
    assert group_buy is not None
    assert sorted(group_buy.orders) == sorted(f"race-{i}" for i in placed)
    completed = len(placed) >= quantity_min
    assert group_buy.state == ("completed" if completed else "cancelled")
    for index, resident in enumerate(residents):
        wallet = world.ledger.snapshot(Resident, resident)
        assert wallet is not None
        assert wallet.held_won == 0 and wallet.holds == {}
        if index in placed and completed:
            assert wallet.spent_total_won == 100
        else:
            assert wallet.spent_total_won == 0
    assert fold(world.all_events()).problems() == []


def test_orders_racing_the_close_are_in_the_outcome_or_refused(world: World) -> None:
    """One writer: 60 orders and the close at once; with a minimum of 1 it completes."""
    _race_the_close(world, [world.ledger], quantity_min=1)


def test_orders_racing_the_close_on_two_writers(world: World) -> None:
    """Two writers: 60 orders and the close at once; a minimum no race can reach cancels it,
    and every order either had its hold released or was refused."""
    second = Ledger.connect(world.database_url, world.schema)
    try:
        _race_the_close(world, [world.ledger, second], quantity_min=1_000)
    finally:
        second.close()


def test_a_close_run_again_reading_fresh_settles_every_order(world: World) -> None:
    """The engine's last resort after concurrent changes runs a command alone, reading every
    aggregate from the database (`fresh`): the close then reads its wallets ahead in one
    round trip and still settles every order, exactly as from memory."""
    complex_id, residents = _residents(world, 30, 300)
    group_buy_id = _open(world, complex_id, quantity_max=100, quantity_min=30)
    for index, resident in enumerate(residents):
        world.run(c.PlaceGroupBuyOrder(group_buy_id, f"fresh-{index}", resident, 1, 100),
                  actor=resident, role="resident")
    pending = Pending(c.CloseGroupBuy(group_buy_id), cause())
    with world.ledger.engine.write_lock:
        world.ledger.engine._attempt([pending], fresh=True)
    assert pending.error is None, pending.error
    assert pending.outcome is not None and pending.outcome["state"] == "completed"
    _check_holds(world, residents, 300 - 100, {})  # 100 spent
    for resident in residents:
        wallet = world.ledger.snapshot(Resident, resident)
        assert wallet is not None and wallet.spent_total_won == 100
        assert wallet.pending_won == 45  # 5 % of 900, pending for the shopping window
    assert fold(world.all_events()).problems() == []
