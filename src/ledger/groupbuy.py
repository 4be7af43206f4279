"""A group buy (공동구매) on the shopping market: all orders settle, or none.

A merchant (or the operator for it) opens a group buy with a unit price, a minimum and
a maximum total quantity, a deadline and the complexes whose residents may join.
Residents order before the deadline; the points an order uses are held on the wallet at
once. At the deadline, or earlier once the minimum is reached, the group buy closes: if
the ordered quantity reached the minimum it completes, and every open order becomes a
trade; otherwise it is cancelled and every hold released. Both happen in one save (see
ledger.group_buying), never some orders settled and others not.

Every order changes this aggregate (its ordered quantity), so orders, cancellations and
the close are ordered by its version: two orders for the last units cannot both pass,
and an order racing the close is either in the outcome or refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger import errors, limits
from ledger.errors import DomainError
from ledger.events import Cause, LedgerAggregate

OPEN = "open"
COMPLETED = "completed"
CANCELLED = "cancelled"

ORDER_OPEN = "open"
ORDER_CANCELLED = "cancelled"
ORDER_SETTLED = "settled"
ORDER_RELEASED = "released"
"""An order's states: open until the resident cancels it (cancelled) or the group buy
closes (settled when it completes, released when it is cancelled)."""

CLOSED_AT_DEADLINE = "deadline"
CLOSED_EARLY = "early"
MINIMUM_NOT_REACHED = "minimum_not_reached"


def group_buy_aggregate_id(group_buy_id: str) -> UUID:
    """Group buys are known by the platform's id; the aggregate id follows from it."""
    return uuid5(NAMESPACE_URL, f"ledger:group-buy:{group_buy_id}")


def order_locator_id(order_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"ledger:group-buy-order:{order_id}")


def order_trade_id(order_id: str) -> str:
    """The trade an order becomes when its group buy completes (refunded by this id)."""
    return f"{limits.group_buy_trade_prefix}{order_id}"


def money_won(quantity: int, unit_price_won: int, points_used_won: int) -> int:
    """The part of an order's price paid in money on the platform."""
    return quantity * unit_price_won - points_used_won


class GroupBuy(LedgerAggregate):
    if TYPE_CHECKING:  # state, declared for type checkers only: the library
        # would otherwise take annotations as constructor arguments.
        group_buy_id: str
        merchant_id: UUID
        seller_kind: str
        category: str
        unit_price_won: int
        quantity_min: int
        quantity_max: int
        deadline_at: datetime
        complex_ids: list[str]
        state: str
        quantity_ordered: int
        orders: dict[str, dict[str, Any]]
        open_orders: int

    class Opened(LedgerAggregate.Created):
        group_buy_id: str
        merchant_id: UUID
        seller_kind: str
        category: str
        unit_price_won: int
        quantity_min: int
        quantity_max: int
        deadline_at: datetime
        complex_ids: list[str]

        def apply(self, group_buy: GroupBuy) -> None:
            group_buy.group_buy_id = self.group_buy_id
            group_buy.merchant_id = self.merchant_id
            group_buy.seller_kind = self.seller_kind
            group_buy.category = self.category
            group_buy.unit_price_won = self.unit_price_won
            group_buy.quantity_min = self.quantity_min
            group_buy.quantity_max = self.quantity_max
            group_buy.deadline_at = self.deadline_at
            group_buy.complex_ids = list(self.complex_ids)
            group_buy.state = OPEN
            group_buy.quantity_ordered = 0
            group_buy.orders = {}
            group_buy.open_orders = 0

    @classmethod
    def open(cls, group_buy_id: str, merchant_id: UUID, seller_kind: str, category: str,
             unit_price_won: int, quantity_min: int, quantity_max: int,
             deadline_at: datetime, complex_ids: list[UUID], cause: Cause) -> GroupBuy:
        if not 1 <= quantity_min <= quantity_max <= limits.group_buy_quantity_max:
            raise DomainError(errors.invalid_quantity,
                              f"1 <= quantity_min <= quantity_max <= "
                              f"{limits.group_buy_quantity_max}")
        if deadline_at <= cause.occurred_at:
            raise DomainError(errors.group_buy_deadline_passed, deadline_at.isoformat())
        if (deadline_at - cause.occurred_at).days >= limits.group_buy_open_days_max:
            raise DomainError(errors.invalid_field,
                              f"deadline_at: within {limits.group_buy_open_days_max} days")
        if not 1 <= len(complex_ids) <= limits.group_buy_complexes_max or len(
                set(complex_ids)) != len(complex_ids):
            raise DomainError(errors.invalid_field,
                              f"complex_ids: 1 to {limits.group_buy_complexes_max}, distinct")
        return cls._create(cls.Opened, id=group_buy_aggregate_id(group_buy_id),
                           group_buy_id=group_buy_id, merchant_id=merchant_id,
                           seller_kind=seller_kind, category=category,
                           unit_price_won=unit_price_won, quantity_min=quantity_min,
                           quantity_max=quantity_max, deadline_at=deadline_at,
                           complex_ids=[str(complex_id) for complex_id in complex_ids],
                           **cause.fields(None))

    def open_to(self, complex_id: UUID) -> bool:
        return str(complex_id) in self.complex_ids

    def check_open(self, moment: datetime) -> None:
        if self.state != OPEN:
            raise DomainError(errors.group_buy_closed, self.group_buy_id)
        if moment >= self.deadline_at:
            raise DomainError(errors.group_buy_deadline_passed, self.group_buy_id)

    # Orders -------------------------------------------------------------------------------

    class OrderPlaced(LedgerAggregate.Event):
        """An order, with its money part: what the platform captures if the buy completes."""

        group_buy_id: str
        order_id: str
        resident_id: UUID
        quantity: int
        points_used_won: int
        money_won: int
        quantity_ordered: int

        def apply(self, group_buy: GroupBuy) -> None:
            group_buy.quantity_ordered += self.quantity
            group_buy.open_orders += 1
            group_buy.orders[self.order_id] = {
                "resident_id": self.resident_id, "quantity": self.quantity,
                "points_used_won": self.points_used_won, "money_won": self.money_won,
                "status": ORDER_OPEN,
            }

    def check_order(self, order_id: str, complex_id: UUID, quantity: int,
                    points_used_won: int, moment: datetime) -> None:
        """Whether this group buy takes the order (the wallet's checks are the wallet's)."""
        if order_id in self.orders:
            raise DomainError(errors.order_exists, order_id)
        self.check_open(moment)
        if not self.open_to(complex_id):
            raise DomainError(errors.group_buy_not_open_to_complex, str(complex_id))
        if not 1 <= quantity <= self.quantity_max:
            raise DomainError(errors.invalid_quantity, f"1..{self.quantity_max}")
        amount_won = quantity * self.unit_price_won
        if amount_won > limits.amount_won_max:
            raise DomainError(errors.invalid_amount, f"{amount_won} won in one order")
        if points_used_won > amount_won:
            raise DomainError(errors.points_exceed_amount, order_id)
        if self.quantity_ordered + quantity > self.quantity_max:
            raise DomainError(errors.group_buy_quantity_exceeded,
                              f"maximum {self.quantity_max}, ordered {self.quantity_ordered}, "
                              f"asked {quantity}")
        if len(self.orders) >= limits.group_buy_orders_max:
            raise DomainError(errors.group_buy_orders_exceeded, self.group_buy_id)

    def place_order(self, order_id: str, resident_id: UUID, complex_id: UUID, quantity: int,
                    points_used_won: int, cause: Cause) -> None:
        self.check_order(order_id, complex_id, quantity, points_used_won, cause.occurred_at)
        # After this point, the order must succeed.
        self.trigger_event(self.OrderPlaced, group_buy_id=self.group_buy_id,
                           order_id=order_id, resident_id=resident_id, quantity=quantity,
                           points_used_won=points_used_won,
                           money_won=money_won(quantity, self.unit_price_won, points_used_won),
                           quantity_ordered=self.quantity_ordered + quantity,
                           **cause.fields(complex_id))
        assert self.quantity_ordered <= self.quantity_max

    class OrderCancelled(LedgerAggregate.Event):
        """The resident (or a coordinator for them) cancelled the order before the deadline:
        the platform refunds its money part."""

        group_buy_id: str
        order_id: str
        resident_id: UUID
        quantity: int
        points_used_won: int
        money_won: int
        quantity_ordered: int

        def apply(self, group_buy: GroupBuy) -> None:
            order = group_buy.orders[self.order_id]
            order["status"] = ORDER_CANCELLED
            group_buy.quantity_ordered -= self.quantity
            group_buy.open_orders -= 1

    def open_order(self, order_id: str) -> dict[str, Any]:
        order = self.orders.get(order_id)
        if order is None:
            raise DomainError(errors.unknown_group_buy_order, order_id)
        if order["status"] == ORDER_CANCELLED:
            raise DomainError(errors.order_already_cancelled, order_id)
        return order

    def cancel_order(self, order_id: str, complex_id: UUID, cause: Cause) -> dict[str, Any]:
        order = self.open_order(order_id)
        self.check_open(cause.occurred_at)
        # After this point, the cancellation must succeed.
        self.trigger_event(self.OrderCancelled, group_buy_id=self.group_buy_id,
                           order_id=order_id, resident_id=order["resident_id"],
                           quantity=order["quantity"], points_used_won=order["points_used_won"],
                           money_won=order["money_won"],
                           quantity_ordered=self.quantity_ordered - order["quantity"],
                           **cause.fields(complex_id))
        assert self.quantity_ordered >= 0
        return order

    # Closing ------------------------------------------------------------------------------

    def outcome_at(self, moment: datetime) -> str:
        """What closing at `moment` does: COMPLETED or CANCELLED; or the rejection."""
        if self.state != OPEN:
            raise DomainError(errors.group_buy_closed, self.group_buy_id)
        reached = self.quantity_ordered >= self.quantity_min
        if moment < self.deadline_at and not reached:
            raise DomainError(errors.group_buy_minimum_not_reached,
                              f"minimum {self.quantity_min}, ordered {self.quantity_ordered}")
        return COMPLETED if reached else CANCELLED

    def open_order_items(self) -> list[tuple[str, dict[str, Any]]]:
        """Open orders in the order they were placed."""
        return [(order_id, order) for order_id, order in self.orders.items()
                if order["status"] == ORDER_OPEN]

    def _totals(self) -> dict[str, int]:
        orders = self.open_order_items()
        return {
            "quantity_ordered": self.quantity_ordered,
            "orders_count": len(orders),
            "points_used_won_total": sum(o["points_used_won"] for _, o in orders),
            "money_won_total": sum(o["money_won"] for _, o in orders),
        }

    class Completed(LedgerAggregate.Event):
        """The minimum was reached: every open order became a trade (`group-buy:<order>`),
        whose money part the platform captures."""

        group_buy_id: str
        merchant_id: UUID
        closed: str
        quantity_min: int
        quantity_ordered: int
        orders_count: int
        points_used_won_total: int
        money_won_total: int

        def apply(self, group_buy: GroupBuy) -> None:
            group_buy.state = COMPLETED
            for order in group_buy.orders.values():
                if order["status"] == ORDER_OPEN:
                    order["status"] = ORDER_SETTLED
            group_buy.open_orders = 0

    class Cancelled(LedgerAggregate.Event):
        """The minimum was not reached by the deadline: every open order was cancelled and
        its hold released; the platform refunds every money part."""

        group_buy_id: str
        merchant_id: UUID
        reason: str
        quantity_min: int
        quantity_ordered: int
        orders_count: int
        points_used_won_total: int
        money_won_total: int

        def apply(self, group_buy: GroupBuy) -> None:
            group_buy.state = CANCELLED
            for order in group_buy.orders.values():
                if order["status"] == ORDER_OPEN:
                    order["status"] = ORDER_RELEASED
            group_buy.open_orders = 0

    def close(self, outcome: str, moment: datetime, cause: Cause) -> dict[str, int]:
        """Record the outcome; the orders' trades or releases are saved with it."""
        assert outcome == self.outcome_at(moment)
        totals = self._totals()
        if outcome == COMPLETED:
            closed = CLOSED_EARLY if moment < self.deadline_at else CLOSED_AT_DEADLINE
            self.trigger_event(self.Completed, group_buy_id=self.group_buy_id,
                               merchant_id=self.merchant_id, closed=closed,
                               quantity_min=self.quantity_min, **totals, **cause.fields(None))
        else:
            self.trigger_event(self.Cancelled, group_buy_id=self.group_buy_id,
                               merchant_id=self.merchant_id, reason=MINIMUM_NOT_REACHED,
                               quantity_min=self.quantity_min, **totals, **cause.fields(None))
        assert self.state == outcome and self.open_orders == 0
        return totals


class GroupBuyOrderLocator(LedgerAggregate):
    """Where an order lives: a cancellation names the order alone.

    Saved once, with the order; it also makes order ids unique across group buys.
    """

    if TYPE_CHECKING:  # state, declared for type checkers only: the library
        # would otherwise take annotations as constructor arguments.
        group_buy_id: str
        resident_id: UUID

    class Registered(LedgerAggregate.Created):
        group_buy_id: str
        order_id: str
        resident_id: UUID

        def apply(self, locator: GroupBuyOrderLocator) -> None:
            locator.group_buy_id = self.group_buy_id
            locator.resident_id = self.resident_id

    @classmethod
    def register(cls, group_buy_id: str, order_id: str, resident_id: UUID, complex_id: UUID,
                 cause: Cause) -> GroupBuyOrderLocator:
        return cls._create(cls.Registered, id=order_locator_id(order_id),
                           group_buy_id=group_buy_id, order_id=order_id,
                           resident_id=resident_id, **cause.fields(complex_id))
