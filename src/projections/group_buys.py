"""group_buys: which group buys are open to a complex, and where does each order stand?

One row per group buy (its terms, state, ordered quantity and, once closed, its totals),
one row per complex it is open to, and one row per order. An order is `open` until the
resident cancels it (`cancelled`) or the group buy closes: `settled` (its trade id is
set) when the group buy completes, `released` when it is cancelled. `due_group_buys`
lists the open group buys past their deadline, for the sweeper to close.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from eventlog.log import Event
from ledger import limits
from ledger.groupbuy import (
    CANCELLED,
    COMPLETED,
    OPEN,
    ORDER_CANCELLED,
    ORDER_OPEN,
    ORDER_RELEASED,
    ORDER_SETTLED,
)
from projections.base import Changes, Projection, Table, TradeFacts

GROUP_BUYS = Table(
    name="p_group_buys",
    columns=(
        ("group_buy_id", "text"), ("merchant_id", "uuid"), ("seller_kind", "text"),
        ("category", "text"), ("unit_price_won", "bigint"), ("quantity_min", "bigint"),
        ("quantity_max", "bigint"), ("deadline_at", "timestamptz"), ("state", "text"),
        ("quantity_ordered", "bigint"), ("orders_count", "bigint"),
        ("opened_at", "timestamptz"), ("opened_by_role", "text"), ("closed_at", "timestamptz"),
        ("closed", "text"), ("points_used_won_total", "bigint"), ("money_won_total", "bigint"),
        ("position", "bigint"),
    ),
    key=("group_buy_id",),
    add=("quantity_ordered", "orders_count"),
    indexes=(("due", "state, deadline_at"), ("merchant", "merchant_id")),
)

COMPLEXES = Table(
    name="p_group_buy_complexes",
    columns=(("complex_id", "uuid"), ("group_buy_id", "text")),
    key=("complex_id", "group_buy_id"),
)

ORDERS = Table(
    name="p_group_buy_orders",
    columns=(
        ("order_id", "text"), ("group_buy_id", "text"), ("resident_id", "uuid"),
        ("complex_id", "uuid"), ("quantity", "bigint"), ("points_used_won", "bigint"),
        ("money_won", "bigint"), ("status", "text"), ("trade_id", "text"),
        ("placed_at", "timestamptz"), ("placed_position", "bigint"), ("actor_role", "text"),
        ("on_behalf_of", "uuid"), ("resolved_at", "timestamptz"),
    ),
    key=("order_id",),
    indexes=(("group_buy", "group_buy_id, placed_position"), ("resident", "resident_id")),
)


class GroupBuys(Projection):
    name = "group_buys"
    reads = ("GroupBuy.", "Resident.Order")
    rebuild_cost = 0.2
    tables = (GROUP_BUYS, COMPLEXES, ORDERS)

    def fold_into(self, changes: Changes, events: Sequence[Event],
                  trades: TradeFacts) -> Changes:  # noqa: ARG002
        for event in events:
            name = event.name
            if name.startswith("GroupBuy."):
                self._group_buy(changes, event, name[len("GroupBuy."):])
            elif name in ("Resident.OrderHoldSpent", "Resident.OrderHoldReleased"):
                self._resolved(changes, event, name[len("Resident."):])
        return changes

    def _group_buy(self, changes: Changes, event: Event, kind: str) -> None:
        data = event.data
        key = (data["group_buy_id"],)
        if kind == "Opened":
            changes.set(GROUP_BUYS.name, key, merchant_id=event.uuid("merchant_id"),
                        seller_kind=data["seller_kind"], category=data["category"],
                        unit_price_won=data["unit_price_won"],
                        quantity_min=data["quantity_min"], quantity_max=data["quantity_max"],
                        deadline_at=event.time("deadline_at"), state=OPEN,
                        opened_at=event.occurred_at, opened_by_role=data["actor_role"],
                        position=event.position)
            changes.add(GROUP_BUYS.name, key, quantity_ordered=0, orders_count=0)
            for complex_id in data["complex_ids"]:
                changes.set(COMPLEXES.name, (UUID(complex_id), data["group_buy_id"]))
        elif kind == "OrderPlaced":
            changes.add(GROUP_BUYS.name, key, quantity_ordered=data["quantity"],
                        orders_count=1)
            changes.set(GROUP_BUYS.name, key, position=event.position)
            changes.set(ORDERS.name, (data["order_id"],), group_buy_id=data["group_buy_id"],
                        resident_id=event.uuid("resident_id"),
                        complex_id=event.uuid("complex_id"), quantity=data["quantity"],
                        points_used_won=data["points_used_won"], money_won=data["money_won"],
                        status=ORDER_OPEN, placed_at=event.occurred_at,
                        placed_position=event.position, actor_role=data["actor_role"],
                        on_behalf_of=event.uuid("on_behalf_of"))
        elif kind == "OrderCancelled":
            changes.add(GROUP_BUYS.name, key, quantity_ordered=-data["quantity"],
                        orders_count=-1)
            changes.set(GROUP_BUYS.name, key, position=event.position)
            changes.set(ORDERS.name, (data["order_id"],), status=ORDER_CANCELLED,
                        resolved_at=event.occurred_at)
        elif kind in ("Completed", "Cancelled"):
            changes.set(GROUP_BUYS.name, key,
                        state=COMPLETED if kind == "Completed" else CANCELLED,
                        closed_at=event.occurred_at,
                        closed=data["closed"] if kind == "Completed" else data["reason"],
                        points_used_won_total=data["points_used_won_total"],
                        money_won_total=data["money_won_total"], position=event.position)
        else:
            raise AssertionError(f"unknown group buy event {event.name}")

    def _resolved(self, changes: Changes, event: Event, kind: str) -> None:
        data = event.data
        key = (data["order_id"],)
        if kind == "OrderHoldSpent":
            changes.set(ORDERS.name, key, status=ORDER_SETTLED, trade_id=data["trade_id"],
                        resolved_at=event.occurred_at)
        elif data["reason"] != "order_cancelled":  # the group buy was cancelled
            changes.set(ORDERS.name, key, status=ORDER_RELEASED, resolved_at=event.occurred_at)


# Reads the API and the sweeper call ------------------------------------------------------

_GROUP_BUY_COLUMNS = (
    "group_buy_id, merchant_id, seller_kind, category, unit_price_won, quantity_min,"
    " quantity_max, deadline_at, state, quantity_ordered, orders_count, opened_at, closed_at,"
    " closed, points_used_won_total, money_won_total")
_ORDER_COLUMNS = (
    "order_id, group_buy_id, resident_id, complex_id, quantity, points_used_won, money_won,"
    " status, trade_id, placed_at, actor_role, on_behalf_of, resolved_at")


def group_buy(conn: psycopg.Connection[Any], group_buy_id: str) -> dict[str, Any] | None:
    """A group buy with the complexes it is open to, or None."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(f"SELECT {_GROUP_BUY_COLUMNS} FROM p_group_buys WHERE group_buy_id = %s",
                       (group_buy_id,))
        row = cursor.fetchone()
        if row is None:
            return None
        cursor.execute("SELECT complex_id FROM p_group_buy_complexes WHERE group_buy_id = %s"
                       " ORDER BY complex_id", (group_buy_id,))
        row["complex_ids"] = [found["complex_id"] for found in cursor.fetchall()]
    return row


def group_buy_orders(conn: psycopg.Connection[Any], group_buy_id: str, *,
                     resident_id: UUID | None = None, complex_id: UUID | None = None,
                     after: int = 0, limit: int = limits.page_size_max
                     ) -> dict[str, Any]:
    """One page of a group buy's orders in the order they were placed (only one resident's,
    or one complex's residents', if named): `after` is the `next_cursor` of the page
    before."""
    limit = max(1, min(limit, limits.page_size_max))
    conditions = ["group_buy_id = %s", "placed_position > %s"]
    values: list[Any] = [group_buy_id, after]
    if resident_id is not None:
        conditions.append("resident_id = %s")
        values.append(resident_id)
    if complex_id is not None:
        conditions.append("complex_id = %s")
        values.append(complex_id)
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(f"SELECT {_ORDER_COLUMNS}, placed_position FROM p_group_buy_orders"
                       f" WHERE {' AND '.join(conditions)}"
                       " ORDER BY placed_position LIMIT %s", (*values, limit + 1))
        rows = cursor.fetchall()
    next_cursor = rows[limit - 1]["placed_position"] if len(rows) > limit else None
    for row in rows:
        del row["placed_position"]
    return {"orders": rows[:limit], "next_cursor": next_cursor}


def group_buy_order(conn: psycopg.Connection[Any], order_id: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(f"SELECT {_ORDER_COLUMNS} FROM p_group_buy_orders WHERE order_id = %s",
                       (order_id,))
        return cursor.fetchone()


def open_group_buys(conn: psycopg.Connection[Any], complex_id: UUID, now: datetime,
                    limit: int = limits.page_size_max) -> list[dict[str, Any]]:
    """The group buys a complex's residents may order from now, earliest deadline first."""
    columns = ", ".join(f"g.{name.strip()}" for name in _GROUP_BUY_COLUMNS.split(","))
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            f"SELECT {columns} FROM p_group_buy_complexes c"
            " JOIN p_group_buys g ON g.group_buy_id = c.group_buy_id"
            " WHERE c.complex_id = %s AND g.state = %s AND g.deadline_at > %s"
            " ORDER BY g.deadline_at, g.group_buy_id LIMIT %s",
            (complex_id, OPEN, now, max(1, min(limit, limits.page_size_max))))
        return cursor.fetchall()


def due_group_buys(conn: psycopg.Connection[Any], now: datetime,
                   limit: int = limits.page_size_max) -> list[str]:
    """Ids of open group buys whose deadline has passed, earliest deadline first."""
    rows = conn.execute(
        "SELECT group_buy_id FROM p_group_buys WHERE state = %s AND deadline_at <= %s"
        " ORDER BY deadline_at, group_buy_id LIMIT %s", (OPEN, now, limit)).fetchall()
    return [row[0] for row in rows]
