"""Group buys, given / when / then: orders hold points at once; at the close every order
settles as a trade, or every hold is released; never some of each."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from ledger import commands as c
from ledger.application import now
from ledger.complex import Complex
from ledger.conservation import fold
from ledger.errors import DomainError
from ledger.groupbuy import GroupBuy, group_buy_aggregate_id
from ledger.merchant import Merchant
from ledger.resident import Resident
from ledger.trade import Trade, trade_aggregate_id
from world import COORDINATOR, OPERATOR, PLATFORM, World


def rejected(world: World, code: str, command: c.Command, **cause_fields: Any) -> None:
    """Assert that the command is rejected with `code` and that nothing was recorded."""
    before = world.ledger.position()
    with pytest.raises(DomainError) as caught:
        world.run(command, **cause_fields)
    assert caught.value.code == code, caught.value
    assert world.ledger.position() == before


class Market:
    """A complex with funded residents, a merchant and the helpers to run a group buy."""

    def __init__(self, world: World) -> None:
        self.world = world
        world.policy()
        self.complex = world.complex("GB-01")
        self.other_complex = world.complex("GB-02")
        self.merchant = world.merchant("local_food")
        self.seller = world.resident(world.household(self.complex))

    def resident(self, points_won: int = 0, complex_id: uuid.UUID | None = None) -> uuid.UUID:
        household = self.world.household(complex_id or self.complex)
        if points_won:
            return self.world.funded_resident(household, self.seller, points_won)
        return self.world.resident(household)

    def open(self, group_buy_id: str = "GB-1", *, unit_price_won: int = 10_000,
             quantity_min: int = 3, quantity_max: int = 5, deadline_at: datetime | None = None,
             complex_ids: tuple[uuid.UUID, ...] | None = None, **cause: Any) -> str:
        self.world.run(c.OpenGroupBuy(
            group_buy_id, self.merchant, "ventilation_filter", unit_price_won, quantity_min,
            quantity_max, deadline_at or now() + timedelta(days=3),
            complex_ids or (self.complex,)), **({"actor": self.merchant, "role": "merchant"}
                                                | cause))
        return group_buy_id

    def order(self, resident: uuid.UUID, order_id: str, quantity: int = 1,
              points_used_won: int = 0, group_buy_id: str = "GB-1", **cause: Any) -> Any:
        return self.world.run(c.PlaceGroupBuyOrder(group_buy_id, order_id, resident, quantity,
                                                    points_used_won),
                              **({"actor": resident, "role": "resident"} | cause))

    def close(self, group_buy_id: str = "GB-1", at: datetime | None = None) -> Any:
        return self.world.run(c.CloseGroupBuy(group_buy_id), actor=OPERATOR, role="operator",
                              occurred_at=at)

    def group_buy(self, group_buy_id: str = "GB-1") -> GroupBuy:
        found = self.world.ledger.snapshot(GroupBuy, group_buy_aggregate_id(group_buy_id))
        assert found is not None
        return found

    def wallet(self, resident: uuid.UUID) -> Resident:
        found = self.world.ledger.snapshot(Resident, resident)
        assert found is not None
        return found


@pytest.fixture
def market(world: World) -> Market:
    return Market(world)


def after_deadline() -> datetime:
    return now() + timedelta(days=4)


# Opening ----------------------------------------------------------------------------------

def test_a_merchant_opens_a_group_buy(world: World, market: Market) -> None:
    """Opening records the offer with its terms; it starts open with nothing ordered."""
    before = world.ledger.position()
    market.open()
    assert world.event_names_after(before) == ["GroupBuy.Opened"]
    group_buy = market.group_buy()
    assert (group_buy.state, group_buy.quantity_ordered, group_buy.seller_kind,
            group_buy.complex_ids) == ("open", 0, "local_food", [str(market.complex)])


def test_a_group_buy_id_is_used_once(world: World, market: Market) -> None:
    """Opening a second group buy with the same id is group_buy_exists."""
    market.open()
    rejected(world, "group_buy_exists",
             c.OpenGroupBuy("GB-1", market.merchant, "x", 1_000, 1, 2, now() + timedelta(days=1),
                            (market.complex,)))


def test_opening_names_a_registered_merchant(world: World, market: Market) -> None:
    """A seller that is not a registered merchant is unknown_merchant."""
    rejected(world, "unknown_merchant",
             c.OpenGroupBuy("GB-x", market.seller, "x", 1_000, 1, 2, now() + timedelta(days=1),
                            (market.complex,)))


def test_opening_names_registered_complexes(world: World, market: Market) -> None:
    """A complex that was never registered is unknown_complex."""
    rejected(world, "unknown_complex",
             c.OpenGroupBuy("GB-x", market.merchant, "x", 1_000, 1, 2, now() + timedelta(days=1),
                            (market.complex, uuid.uuid4())))


@pytest.mark.parametrize(("quantity_min", "quantity_max"), [(0, 5), (6, 5), (1, 100_001)])
def test_quantities_must_be_ordered_and_bounded(world: World, market: Market,
                                                quantity_min: int, quantity_max: int) -> None:
    """A minimum above the maximum, or quantities outside 1..100,000, are invalid_quantity."""
    rejected(world, "invalid_quantity",
             c.OpenGroupBuy("GB-x", market.merchant, "x", 1_000, quantity_min, quantity_max,
                            now() + timedelta(days=1), (market.complex,)))


def test_a_deadline_must_be_in_the_future(world: World, market: Market) -> None:
    """A deadline already past is group_buy_deadline_passed."""
    rejected(world, "group_buy_deadline_passed",
             c.OpenGroupBuy("GB-x", market.merchant, "x", 1_000, 1, 2, now() - timedelta(1),
                            (market.complex,)))


def test_a_group_buy_needs_an_accrual_policy(world: World) -> None:
    """Without an accrual policy its trades could never be recorded: unknown_policy."""
    complex_id = world.complex("GB-09")
    merchant = world.merchant("small_firm")
    rejected(world, "unknown_policy",
             c.OpenGroupBuy("GB-x", merchant, "x", 1_000, 1, 2, now() + timedelta(days=1),
                            (complex_id,)))


# Ordering ---------------------------------------------------------------------------------

def test_an_order_holds_its_points_at_once(world: World, market: Market) -> None:
    """Points used by an order leave the available balance and are held; the group buy counts
    the quantity and records the money part."""
    market.open()
    buyer = market.resident(points_won=3_000)
    before = world.ledger.position()
    outcome = market.order(buyer, "O-1", quantity=2, points_used_won=2_500)
    assert world.event_names_after(before) == [
        "GroupBuy.OrderPlaced", "Resident.OrderPointsHeld", "GroupBuyOrderLocator.Registered"]
    assert (outcome["money_won"], outcome["quantity_ordered"]) == (17_500, 2)
    wallet = market.wallet(buyer)
    assert (wallet.available_won, wallet.held_won) == (500, 2_500)


def test_a_coordinator_orders_on_a_residents_behalf(world: World, market: Market) -> None:
    """A coordinator's order is recorded with the coordinator as actor, for the resident."""
    market.open()
    buyer = market.resident()
    before = world.ledger.position()
    market.order(buyer, "O-c", actor=COORDINATOR, role="coordinator", on_behalf_of=buyer)
    placed = next(e for e in world.events_after(before) if isinstance(e, GroupBuy.OrderPlaced))
    assert (placed.actor_id, placed.actor_role, placed.on_behalf_of, placed.resident_id) == (
        COORDINATOR, "coordinator", buyer, buyer)


def test_an_order_for_an_unknown_group_buy_is_refused(world: World, market: Market) -> None:
    """Ordering from a group buy never opened is unknown_group_buy."""
    rejected(world, "unknown_group_buy",
             c.PlaceGroupBuyOrder("GB-none", "O-1", market.resident(), 1, 0))


def test_an_order_id_is_used_once(world: World, market: Market) -> None:
    """A second order with the same id, in this group buy or another, is order_exists."""
    market.open()
    market.open("GB-2")
    buyer = market.resident()
    market.order(buyer, "O-1")
    rejected(world, "order_exists", c.PlaceGroupBuyOrder("GB-1", "O-1", buyer, 1, 0))
    rejected(world, "order_exists", c.PlaceGroupBuyOrder("GB-2", "O-1", buyer, 1, 0))


def test_an_order_after_the_deadline_is_refused(world: World, market: Market) -> None:
    """An order at or after the deadline is group_buy_deadline_passed."""
    market.open()
    rejected(world, "group_buy_deadline_passed",
             c.PlaceGroupBuyOrder("GB-1", "O-late", market.resident(), 1, 0),
             occurred_at=after_deadline())


def test_an_order_beyond_the_maximum_is_refused(world: World, market: Market) -> None:
    """An order that would take the total beyond the maximum is group_buy_quantity_exceeded;
    the last units can still be ordered exactly."""
    market.open()
    market.order(market.resident(), "O-1", quantity=4)
    rejected(world, "group_buy_quantity_exceeded",
             c.PlaceGroupBuyOrder("GB-1", "O-2", market.resident(), 2, 0))
    market.order(market.resident(), "O-3", quantity=1)
    assert market.group_buy().quantity_ordered == 5


def test_an_order_from_another_complex_is_refused(world: World, market: Market) -> None:
    """A resident of a complex the group buy is not open to gets group_buy_not_open_to_complex."""
    market.open()
    outsider = market.resident(complex_id=market.other_complex)
    rejected(world, "group_buy_not_open_to_complex",
             c.PlaceGroupBuyOrder("GB-1", "O-1", outsider, 1, 0))


def test_an_order_from_a_closed_wallet_is_refused(world: World, market: Market) -> None:
    """A resident who moved out cannot order: wallet_closed."""
    market.open()
    buyer = market.resident()
    world.run(c.MoveOut(buyer))
    rejected(world, "wallet_closed", c.PlaceGroupBuyOrder("GB-1", "O-1", buyer, 1, 0))


def test_an_order_needs_the_points_it_uses(world: World, market: Market) -> None:
    """Using more points than available is insufficient_points; nothing is held."""
    market.open()
    buyer = market.resident(points_won=300)
    rejected(world, "insufficient_points", c.PlaceGroupBuyOrder("GB-1", "O-1", buyer, 1, 301))


def test_points_cannot_exceed_the_orders_price(world: World, market: Market) -> None:
    """Points above quantity x unit price are points_exceed_amount (no negative money part)."""
    market.open(unit_price_won=100)
    buyer = market.resident(points_won=300)
    rejected(world, "points_exceed_amount", c.PlaceGroupBuyOrder("GB-1", "O-1", buyer, 2, 201))


@pytest.mark.parametrize("quantity", [0, -1, 6])
def test_an_order_quantity_is_bounded(world: World, market: Market, quantity: int) -> None:
    """A quantity below 1 or above the group buy's maximum is invalid_quantity."""
    market.open()
    rejected(world, "invalid_quantity",
             c.PlaceGroupBuyOrder("GB-1", "O-1", market.resident(), quantity, 0))


def test_an_order_id_leaves_room_for_its_trade_id(world: World, market: Market) -> None:
    """An order id longer than 54 characters is invalid_field (its trade id adds a prefix)."""
    market.open()
    rejected(world, "invalid_field",
             c.PlaceGroupBuyOrder("GB-1", "O" * 55, market.resident(), 1, 0))


def test_platform_trades_may_not_take_group_buy_trade_ids(world: World, market: Market) -> None:
    """A trade id starting with `group-buy:` is reserved for orders: invalid_field."""
    buyer = market.resident()
    rejected(world, "invalid_field",
             c.RecordTrade("group-buy:O-1", "sharing", "x", market.seller, "resident", buyer,
                           1_000, 0), actor=PLATFORM, role="platform")


def test_a_resident_with_an_open_order_cannot_move_out(world: World, market: Market) -> None:
    """An open order (even paid wholly in money) keeps the wallet open: holds_pending."""
    market.open()
    buyer = market.resident()
    market.order(buyer, "O-1")
    rejected(world, "holds_pending", c.MoveOut(buyer))


# Cancelling an order ----------------------------------------------------------------------

def test_cancelling_an_order_releases_its_hold(world: World, market: Market) -> None:
    """Cancelling before the deadline releases the points and frees the quantity."""
    market.open()
    buyer = market.resident(points_won=600)
    market.order(buyer, "O-1", quantity=2, points_used_won=600)
    before = world.ledger.position()
    outcome = world.run(c.CancelGroupBuyOrder("O-1"), actor=buyer, role="resident")
    assert world.event_names_after(before) == [
        "GroupBuy.OrderCancelled", "Resident.OrderHoldReleased"]
    assert (outcome["status"], outcome["quantity_ordered"]) == ("cancelled", 0)
    wallet = market.wallet(buyer)
    assert (wallet.available_won, wallet.held_won, wallet.holds) == (600, 0, {})


def test_an_order_is_cancelled_once(world: World, market: Market) -> None:
    """Cancelling a cancelled order is order_already_cancelled."""
    market.open()
    buyer = market.resident()
    market.order(buyer, "O-1")
    world.run(c.CancelGroupBuyOrder("O-1"))
    rejected(world, "order_already_cancelled", c.CancelGroupBuyOrder("O-1"))


def test_cancelling_an_unknown_order_is_refused(world: World, market: Market) -> None:
    """An order id never placed is unknown_group_buy_order."""
    rejected(world, "unknown_group_buy_order", c.CancelGroupBuyOrder("O-none"))


def test_an_order_cannot_be_cancelled_after_the_deadline(world: World, market: Market) -> None:
    """After the deadline the order waits for the outcome: group_buy_deadline_passed."""
    market.open()
    market.order(market.resident(), "O-1")
    rejected(world, "group_buy_deadline_passed", c.CancelGroupBuyOrder("O-1"),
             occurred_at=after_deadline())


def test_an_order_cannot_be_cancelled_once_closed(world: World, market: Market) -> None:
    """After an early close the orders are trades: group_buy_closed."""
    market.open(quantity_min=1)
    market.order(market.resident(), "O-1")
    market.close()
    rejected(world, "group_buy_closed", c.CancelGroupBuyOrder("O-1"))


# Closing ----------------------------------------------------------------------------------

def test_reaching_the_minimum_turns_every_order_into_a_trade(world: World,
                                                             market: Market) -> None:
    """At the deadline with the minimum reached, each open order is a trade: its held points
    go to the merchant, its money part accrues by the policy in force; cancelled orders are
    not part of it."""
    market.open()
    first = market.resident(points_won=3_000)
    second = market.resident()
    market.order(first, "O-1", quantity=2, points_used_won=3_000)
    market.order(second, "O-2", quantity=1)
    market.order(second, "O-3", quantity=1)
    world.run(c.CancelGroupBuyOrder("O-3"))
    market.order(market.resident(), "O-4", quantity=1)
    before = world.ledger.position()
    outcome = market.close(at=after_deadline())
    names = world.event_names_after(before)
    assert names[0] == "GroupBuy.Completed"
    assert names.count("Trade.Recorded") == 3
    assert names.count("Resident.OrderHoldSpent") == 3
    assert (outcome["state"], outcome["orders_count"], outcome["quantity_ordered"],
            outcome["points_used_won_total"], outcome["money_won_total"]) == (
        "completed", 3, 4, 3_000, 37_000)
    trade = world.ledger.snapshot(Trade, trade_aggregate_id("group-buy:O-1"))
    assert trade is not None
    assert (trade.amount_won, trade.points_used_won, trade.market, trade.seller_kind,
            trade.personal_won, trade.common_won) == (20_000, 3_000, "shopping", "local_food",
                                                      850, 340)  # 5 % and 2 % of 17,000
    wallet = market.wallet(first)
    # A group buy's trades are shopping trades: their accruals pend for the return window.
    assert (wallet.available_won, wallet.pending_won, wallet.held_won, wallet.holds) == (
        0, 850, 0, {})
    merchant = world.ledger.snapshot(Merchant, market.merchant)
    assert merchant is not None and merchant.balance_won == 3_000
    assert market.group_buy().state == "completed"
    assert fold(world.all_events()).problems() == []


def test_missing_the_minimum_cancels_every_order(world: World, market: Market) -> None:
    """At the deadline below the minimum, every open order is released: no trade, every
    held point available again."""
    market.open()
    buyer = market.resident(points_won=900)
    market.order(buyer, "O-1", quantity=1, points_used_won=900)
    market.order(market.resident(), "O-2", quantity=1)
    before = world.ledger.position()
    outcome = market.close(at=after_deadline())
    names = world.event_names_after(before)
    assert names == ["GroupBuy.Cancelled", "Resident.OrderHoldReleased",
                     "Resident.OrderHoldReleased"]
    assert (outcome["state"], outcome["reason"], outcome["money_won_total"]) == (
        "cancelled", "minimum_not_reached", 10_000 + 9_100)
    wallet = market.wallet(buyer)
    assert (wallet.available_won, wallet.held_won) == (900, 0)
    assert world.ledger.snapshot(Trade, trade_aggregate_id("group-buy:O-1")) is None


def test_a_group_buy_closes_early_once_its_minimum_is_reached(world: World,
                                                              market: Market) -> None:
    """The merchant may close before the deadline once the minimum is ordered."""
    market.open(quantity_min=2)
    market.order(market.resident(), "O-1", quantity=2)
    before = world.ledger.position()
    outcome = world.run(c.CloseGroupBuy("GB-1"), actor=market.merchant, role="merchant")
    assert outcome["state"] == "completed"
    completed = next(e for e in world.events_after(before)
                     if isinstance(e, GroupBuy.Completed))
    assert completed.closed == "early"


def test_an_early_close_needs_the_minimum(world: World, market: Market) -> None:
    """Before the deadline and below the minimum, closing is group_buy_minimum_not_reached."""
    market.open()
    market.order(market.resident(), "O-1")
    rejected(world, "group_buy_minimum_not_reached", c.CloseGroupBuy("GB-1"))


def test_a_group_buy_closes_once(world: World, market: Market) -> None:
    """Closing a closed group buy is group_buy_closed; so is ordering from it."""
    market.open(quantity_min=1)
    market.order(market.resident(), "O-1")
    market.close()
    rejected(world, "group_buy_closed", c.CloseGroupBuy("GB-1"))
    rejected(world, "group_buy_closed",
             c.PlaceGroupBuyOrder("GB-1", "O-2", market.resident(), 1, 0))


def test_closing_an_unknown_group_buy_is_refused(world: World, market: Market) -> None:
    """Closing a group buy never opened is unknown_group_buy."""
    rejected(world, "unknown_group_buy", c.CloseGroupBuy("GB-none"))


def test_a_group_buy_without_orders_is_cancelled_at_its_deadline(world: World,
                                                                 market: Market) -> None:
    """With no orders at all the outcome is cancelled, recorded on its own."""
    market.open()
    outcome = market.close(at=after_deadline())
    assert (outcome["state"], outcome["orders_count"]) == ("cancelled", 0)


def test_an_order_trade_refunds_on_its_own(world: World, market: Market) -> None:
    """After completion each order's trade is refunded by its trade id, alone: the points
    come back from the merchant and the accruals are clawed back."""
    market.open(quantity_min=1)
    buyer = market.resident(points_won=3_000)
    market.order(buyer, "O-1", quantity=1, points_used_won=1_000)
    market.order(market.resident(), "O-2", quantity=1)
    market.close()
    world.run(c.RefundTrade("group-buy:O-1"), actor=PLATFORM, role="platform")
    wallet = market.wallet(buyer)
    assert wallet.available_won == 3_000
    assert world.ledger.snapshot(Trade, trade_aggregate_id("group-buy:O-2")).refunded is False
    fund = world.ledger.snapshot(Complex, market.complex)
    assert fund is not None and fund.balance_won > 0
    assert fold(world.all_events()).problems() == []


def test_a_moved_out_resident_can_move_out_once_the_group_buy_closed(world: World,
                                                                      market: Market) -> None:
    """Once the outcome is recorded the order's hold is resolved and the wallet may close."""
    market.open()
    buyer = market.resident()
    market.order(buyer, "O-1")
    market.close(at=after_deadline())
    assert world.run(c.MoveOut(buyer))["remaining_won"] == 0


def test_an_order_id_is_unique_across_residents_and_group_buys(world: World,
                                                               market: Market) -> None:
    """Another resident reusing an order id in another group buy is order_exists too (the
    order's locator is saved once)."""
    market.open()
    market.open("GB-2")
    market.order(market.resident(), "O-1")
    rejected(world, "order_exists", c.PlaceGroupBuyOrder("GB-2", "O-1", market.resident(), 1, 0))


def test_an_order_exactly_at_the_deadline_is_refused(world: World, market: Market) -> None:
    """The deadline is the first moment an order is refused: group_buy_deadline_passed."""
    deadline_at = now() + timedelta(days=1)
    market.open(deadline_at=deadline_at)
    rejected(world, "group_buy_deadline_passed",
             c.PlaceGroupBuyOrder("GB-1", "O-1", market.resident(), 1, 0),
             occurred_at=deadline_at)
    market.order(market.resident(), "O-2", occurred_at=deadline_at - timedelta(seconds=1))
    assert market.group_buy().quantity_ordered == 1


def test_a_close_at_the_deadline_is_recorded_as_such(world: World, market: Market) -> None:
    """Reaching the minimum and closing at (or after) the deadline records `deadline`."""
    deadline_at = now() + timedelta(days=1)
    market.open(quantity_min=1, deadline_at=deadline_at)
    market.order(market.resident(), "O-1")
    before = world.ledger.position()
    market.close(at=deadline_at)
    completed = next(e for e in world.events_after(before)
                     if isinstance(e, GroupBuy.Completed))
    assert (completed.closed, completed.orders_count) == ("deadline", 1)


def test_a_coordinator_cancels_on_a_residents_behalf(world: World, market: Market) -> None:
    """A coordinator's cancellation records the coordinator as actor, for the resident."""
    market.open()
    buyer = market.resident()
    market.order(buyer, "O-1")
    before = world.ledger.position()
    world.run(c.CancelGroupBuyOrder("O-1"), actor=COORDINATOR, role="coordinator",
              on_behalf_of=buyer)
    cancelled = next(e for e in world.events_after(before)
                     if isinstance(e, GroupBuy.OrderCancelled))
    assert (cancelled.actor_role, cancelled.on_behalf_of, cancelled.resident_id) == (
        "coordinator", buyer, buyer)
