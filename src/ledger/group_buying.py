"""Group buys: the work that spans a group buy, its residents' wallets and its trades.

Each aggregate's rules stay in its command methods (ledger.groupbuy, ledger.resident,
ledger.trading); these handlers find the aggregates, run every check before the first
change, then call the command methods in order. Closing a completed group buy records
each open order as a trade through `trading.record_order_trade`, so accruals follow the
policy in force, every rule of trades applies and each order's trade refunds on its own;
all of it, for every order, is one command and so one save.
"""

from __future__ import annotations

from uuid import UUID

from ledger import commands as c
from ledger import errors, limits, trading
from ledger.checks import check_amount, check_aware, check_identifier, check_text
from ledger.complex import Complex
from ledger.errors import DomainError
from ledger.events import Cause
from ledger.groupbuy import (
    COMPLETED,
    MINIMUM_NOT_REACHED,
    GroupBuy,
    GroupBuyOrderLocator,
    group_buy_aggregate_id,
    order_locator_id,
    order_trade_id,
)
from ledger.merchant import Merchant
from ledger.policy import POLICY_ID, AccrualPolicy
from ledger.resident import Resident
from ledger.unit import Result, UnitOfWork

SHOPPING = "shopping"
ORDER_CANCELLED_BY_RESIDENT = "order_cancelled"
GROUP_BUY_CANCELLED = "group_buy_cancelled"
"""Why an order's hold was released (`Resident.OrderHoldReleased.reason`)."""


def _quantity(name: str, value: object) -> int:
    if type(value) is not int or not 1 <= value <= limits.group_buy_quantity_max:
        raise DomainError(errors.invalid_quantity, f"{name}: 1..{limits.group_buy_quantity_max}")
    return value


def _order_id(value: object) -> str:
    order_id = check_identifier("order_id", value)
    if len(order_id) > limits.group_buy_order_id_length_max:
        raise DomainError(errors.invalid_field,
                          f"order_id: 1 to {limits.group_buy_order_id_length_max} characters")
    return order_id


def _group_buy(group_buy_id: object, unit: UnitOfWork) -> GroupBuy:
    checked = check_identifier("group_buy_id", group_buy_id)
    return unit.get(GroupBuy, group_buy_aggregate_id(checked), errors.unknown_group_buy)


def open_group_buy(command: c.OpenGroupBuy, cause: Cause, unit: UnitOfWork) -> Result:
    """A merchant's offer, open to the residents of the named complexes until its deadline."""
    group_buy_id = check_identifier("group_buy_id", command.group_buy_id)
    category = check_text("category", command.category)
    unit_price_won = check_amount(command.unit_price_won)
    quantity_min = _quantity("quantity_min", command.quantity_min)
    quantity_max = _quantity("quantity_max", command.quantity_max)
    deadline_at = check_aware("deadline_at", command.deadline_at)
    complex_ids = list(command.complex_ids)
    merchant = unit.get(Merchant, command.merchant_id, errors.unknown_merchant)
    for complex_id in complex_ids[:limits.group_buy_complexes_max]:
        unit.get(Complex, complex_id, errors.unknown_complex)
    if unit.find(AccrualPolicy, POLICY_ID) is None:  # its trades could never be recorded
        raise DomainError(errors.unknown_policy, "no accrual policy has been set")
    if unit.exists(group_buy_aggregate_id(group_buy_id)):
        raise DomainError(errors.group_buy_exists, group_buy_id)
    group_buy = GroupBuy.open(group_buy_id, merchant.id, merchant.kind, category,
                              unit_price_won, quantity_min, quantity_max, deadline_at,
                              complex_ids, cause)
    unit.change(group_buy)
    return ({"group_buy_id": group_buy_id, "state": group_buy.state,
             "deadline_at": deadline_at.isoformat()}, None)


def place_order(command: c.PlaceGroupBuyOrder, cause: Cause, unit: UnitOfWork) -> Result:
    """A resident's order: checked against the group buy and the wallet, points held."""
    order_id = _order_id(command.order_id)
    quantity = _quantity("quantity", command.quantity)
    points_used_won = check_amount(command.points_used_won, allow_zero=True)
    group_buy = _group_buy(command.group_buy_id, unit)
    wallet = unit.get(Resident, command.resident_id, errors.unknown_resident)
    if unit.exists(order_locator_id(order_id)):
        raise DomainError(errors.order_exists, order_id)
    group_buy.check_order(order_id, wallet.home_complex_id, quantity, points_used_won,
                          cause.occurred_at)
    wallet.check_can_hold_order(order_id, points_used_won)
    # After this point, every change must succeed.
    locator = GroupBuyOrderLocator.register(group_buy.group_buy_id, order_id, wallet.id,
                                            wallet.home_complex_id, cause)
    unit.change(group_buy, wallet, locator)
    group_buy.place_order(order_id, wallet.id, wallet.home_complex_id, quantity,
                          points_used_won, cause)
    wallet.hold_for_order(group_buy.group_buy_id, order_id, points_used_won, cause)
    order = group_buy.orders[order_id]
    return ({"group_buy_id": group_buy.group_buy_id, "order_id": order_id,
             "status": order["status"], "quantity": quantity,
             "points_used_won": points_used_won, "money_won": order["money_won"],
             "quantity_ordered": group_buy.quantity_ordered}, wallet.home_complex_id)


def order_parts(order_id: str, unit: UnitOfWork) -> tuple[GroupBuy, Resident]:
    """The group buy an order belongs to, and the wallet that placed it."""
    locator = unit.get(GroupBuyOrderLocator, order_locator_id(order_id),
                       errors.unknown_group_buy_order)
    group_buy = _group_buy(locator.group_buy_id, unit)
    wallet = unit.get(Resident, locator.resident_id, errors.unknown_resident)
    return group_buy, wallet


def cancel_order(command: c.CancelGroupBuyOrder, cause: Cause, unit: UnitOfWork) -> Result:
    """The resident withdraws an order before the deadline: its hold is released."""
    order_id = _order_id(command.order_id)
    group_buy, wallet = order_parts(order_id, unit)
    order = group_buy.open_order(order_id)
    group_buy.check_open(cause.occurred_at)
    wallet.check_order_hold(order_id, order["points_used_won"])
    # After this point, every change must succeed.
    unit.change(group_buy, wallet)
    order = group_buy.cancel_order(order_id, wallet.home_complex_id, cause)
    wallet.release_order_hold(group_buy.group_buy_id, order_id, ORDER_CANCELLED_BY_RESIDENT,
                              cause)
    return ({"group_buy_id": group_buy.group_buy_id, "order_id": order_id,
             "status": order["status"], "quantity": order["quantity"],
             "points_used_won": order["points_used_won"], "money_won": order["money_won"],
             "quantity_ordered": group_buy.quantity_ordered}, wallet.home_complex_id)


def close_group_buy(command: c.CloseGroupBuy, cause: Cause, unit: UnitOfWork) -> Result:
    """Complete (every open order a trade) or cancel (every hold released), all at once."""
    group_buy = _group_buy(command.group_buy_id, unit)
    outcome = group_buy.outcome_at(cause.occurred_at)
    orders = group_buy.open_order_items()
    unit.read_ahead(list({order["resident_id"] for _, order in orders}))
    wallets: dict[UUID, Resident] = {}
    for _, order in orders:
        resident_id = order["resident_id"]
        if resident_id not in wallets:
            wallets[resident_id] = unit.get(Resident, resident_id, errors.unknown_resident)
    for order_id, order in orders:
        wallets[order["resident_id"]].check_order_hold(order_id, order["points_used_won"])
    # After this point, every change must succeed: the orders were checked when placed,
    # and a wallet with an open order cannot close (its hold is pending).
    unit.change(group_buy, *wallets.values())
    if outcome == COMPLETED:
        for order_id, order in orders:
            trading.record_order_trade(
                c.RecordTrade(order_trade_id(order_id), SHOPPING, group_buy.category,
                              group_buy.merchant_id, group_buy.seller_kind, order["resident_id"],
                              order["quantity"] * group_buy.unit_price_won,
                              order["points_used_won"]),
                cause, unit, group_buy.group_buy_id, order_id)
    else:
        for order_id, order in orders:
            wallets[order["resident_id"]].release_order_hold(
                group_buy.group_buy_id, order_id, GROUP_BUY_CANCELLED, cause)
    totals = group_buy.close(outcome, cause.occurred_at, cause)
    result = {"group_buy_id": group_buy.group_buy_id, "state": group_buy.state, **totals}
    if outcome != COMPLETED:
        result["reason"] = MINIMUM_NOT_REACHED
    return result, None
