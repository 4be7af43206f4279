"""wallet_balances: what does each resident hold, and where did every won come from?

One row per resident with the same arithmetic as `Resident.apply` (available, held,
owed, accrued and spent totals), and one history line per wallet event. Each line
explains itself: the trade, market, policy version and rate of an accrual; the
payment and invoice of a rent hold (or the order, in `payment_id`, of a group-buy
hold); who acted, in which role, on whose behalf.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from eventlog.log import Event
from ledger import limits
from projections.base import Changes, Projection, Table, TradeFacts

BALANCES = Table(
    name="p_wallet_balances",
    columns=(
        ("resident_id", "uuid"), ("household_id", "uuid"), ("complex_id", "uuid"),
        ("available_won", "bigint"), ("held_won", "bigint"), ("owed_won", "bigint"),
        ("accrued_total_won", "bigint"), ("spent_total_won", "bigint"),
        ("closed", "boolean"), ("enrolled_at", "timestamptz"), ("position", "bigint"),
    ),
    key=("resident_id",),
    add=("available_won", "held_won", "owed_won", "accrued_total_won", "spent_total_won"),
    indexes=(("household", "household_id"),),
)

ENTRIES = Table(
    name="p_wallet_entries",
    columns=(
        ("position", "bigint"), ("resident_id", "uuid"), ("occurred_at", "timestamptz"),
        ("recorded_at", "timestamptz"), ("kind", "text"), ("amount_won", "bigint"),
        ("held_delta_won", "bigint"), ("owed_delta_won", "bigint"), ("trade_id", "text"),
        ("market", "text"), ("policy_version", "integer"), ("rate_bps", "integer"),
        ("payment_id", "text"), ("invoice_id", "text"), ("actor_id", "uuid"),
        ("actor_role", "text"), ("on_behalf_of", "uuid"), ("request_id", "text"),
        ("description", "text"),
    ),
    key=("position",),
    append_only=True,
    indexes=(("resident", "resident_id, position"),),
)


def _won(amount_won: int) -> str:
    return f"{amount_won:,} won"


def _actor(event: Event) -> str:
    role = event.data["actor_role"]
    on_behalf_of = event.uuid("on_behalf_of")
    if on_behalf_of is not None:
        return f"by {role} {event.uuid('actor_id')} on behalf of {UUID(on_behalf_of)}"
    return f"by {role}"


def _lapse(destination: str) -> str:
    return {"fund": "the complex's common fund", "issuance": "issuance",
            "unclaimed": "unclaimed"}[destination]


def _recovered(recovered_won: int) -> str:
    return f"; {_won(recovered_won)} of it repaid owed points" if recovered_won else ""


def _owed(owed_won: int) -> str:
    return f"; {_won(owed_won)} could not be taken and is owed" if owed_won else ""


class WalletBalances(Projection):
    name = "wallet_balances"
    reads = ("Resident.",)
    rebuild_cost = 3.2
    tables = (BALANCES, ENTRIES)

    def fold_into(self, changes: Changes, events: Sequence[Event],
                  trades: TradeFacts) -> Changes:
        for event in events:
            if event.name.startswith("Resident."):
                self._fold_one(changes, event, trades)
        return changes

    def _fold_one(
            self, changes: Changes, event: Event, trades: TradeFacts) -> None:
        data = event.data
        resident = event.originator_id
        key = (resident,)
        kind = event.name[len("Resident."):]
        line: dict[str, Any] = {}
        available = held = owed = 0
        table = BALANCES.name
        if kind == "Enrolled":
            changes.set(table, key, household_id=event.uuid("household_id"),
                        complex_id=event.uuid("complex_id"), closed=False,
                        enrolled_at=event.occurred_at)
            changes.add(table, key, available_won=0)
            description = f"Wallet opened {_actor(event)}"
        elif kind == "PointsAccrued":
            amount, recovered = data["amount_won"], data["recovered_won"]
            pending_until = event.time("pending_until")
            if pending_until is None:
                available, owed = amount - recovered, -recovered
            changes.add(table, key, accrued_total_won=amount)
            line = {"trade_id": data["trade_id"], "market": data["market"],
                    "policy_version": data["policy_version"], "rate_bps": data["personal_bps"]}
            description = (
                f"Accrued {_won(amount)}: {data['personal_bps'] / 100:.2f}% of "
                f"{_won(data['accrual_base_won'])} paid in money on {data['market']} trade "
                f"{data['trade_id']}, accrual policy version {data['policy_version']}"
                f"{_recovered(recovered)}"
                + ("" if pending_until is None else
                   f"; pending until {pending_until} (the return window)"))
        elif kind == "PendingPointsReleased":
            amount, recovered = data["amount_won"], data["recovered_won"]
            available, owed = amount - recovered, -recovered
            line = {"trade_id": data["trade_id"], "policy_version": data["policy_version"]}
            description = (f"{_won(amount)} pending from trade {data['trade_id']} available: "
                           f"its return window ended; they expire "
                           f"{event.time('expires_at')}{_recovered(recovered)}")
        elif kind == "PendingPointsCancelled":
            changes.add(table, key, accrued_total_won=-data["amount_won"])
            line = {"trade_id": data["trade_id"]}
            description = (f"{_won(data['amount_won'])} pending from trade {data['trade_id']} "
                           f"cancelled: the trade was refunded inside its return window")
        elif kind == "PointsExpired":
            available = -data["amount_won"]
            line = {"policy_version": data["policy_version"]}
            description = (f"{_won(data['amount_won'])} expired from "
                           f"{len(data['lots'])} lot(s), moved to {_lapse(data['expired_to'])}")
        elif kind == "PointsReceived":
            amount, recovered = data["amount_won"], data["recovered_won"]
            available, owed = amount - recovered, -recovered
            line = {"trade_id": data["trade_id"]}
            description = (f"Received {_won(amount)} in points as seller of trade "
                           f"{data['trade_id']}{_recovered(recovered)}")
        elif kind == "PointsRefunded":
            amount, recovered = data["amount_won"], data["recovered_won"]
            available, owed = amount - recovered, -recovered
            changes.add(table, key, spent_total_won=-amount)
            line = {"trade_id": data["trade_id"]}
            description = (f"Points returned: {_won(amount)} used on refunded trade "
                           f"{data['trade_id']}{_recovered(recovered)}")
        elif kind == "PointsSpent":
            amount = data["amount_won"]
            available = -amount
            changes.add(table, key, spent_total_won=amount)
            line = {"trade_id": data["trade_id"]}
            description = f"Spent {_won(amount)} on trade {data['trade_id']}"
        elif kind == "AccrualClawedBack":
            amount, taken, owed_won = data["amount_won"], data["taken_won"], data["owed_won"]
            available, owed = -taken, owed_won
            changes.add(table, key, accrued_total_won=-amount)
            facts = trades.get(data["trade_id"]) or {}
            line = {"trade_id": data["trade_id"], "market": facts.get("market"),
                    "policy_version": facts.get("policy_version"),
                    "rate_bps": facts.get("personal_bps")}
            description = (f"Accrual of {_won(amount)} taken back: trade {data['trade_id']} "
                           f"was refunded{_owed(owed_won)}")
        elif kind == "PaymentReturned":
            amount, taken, owed_won = data["amount_won"], data["taken_won"], data["owed_won"]
            available, owed = -taken, owed_won
            line = {"trade_id": data["trade_id"]}
            description = (f"Returned {_won(amount)} received for refunded trade "
                           f"{data['trade_id']} to its buyer{_owed(owed_won)}")
        elif kind == "PointsHeld":
            amount = data["amount_won"]
            available, held = -amount, amount
            line = {"payment_id": data["payment_id"], "invoice_id": data["invoice_id"]}
            description = (f"Held {_won(amount)} for rent payment {data['payment_id']} "
                           f"on invoice {data['invoice_id']}")
        elif kind == "HoldSettled":
            amount = data["amount_won"]
            held = -amount
            changes.add(table, key, spent_total_won=amount)
            line = {"payment_id": data["payment_id"]}
            description = f"Rent payment {data['payment_id']} settled: {_won(amount)} paid rent"
        elif kind == "HoldReleased":
            amount = data["amount_won"]
            available, held = amount, -amount
            line = {"payment_id": data["payment_id"]}
            description = (f"Rent payment {data['payment_id']} {data['reason']}: "
                           f"{_won(amount)} available again")
        elif kind == "OrderPointsHeld":
            amount = data["amount_won"]
            available, held = -amount, amount
            line = {"payment_id": data["order_id"]}
            description = (f"Held {_won(amount)} for order {data['order_id']} in group buy "
                           f"{data['group_buy_id']}")
        elif kind == "OrderHoldSpent":
            amount = data["amount_won"]
            held = -amount
            changes.add(table, key, spent_total_won=amount)
            line = {"trade_id": data["trade_id"], "payment_id": data["order_id"]}
            description = (f"Group buy {data['group_buy_id']} completed: {_won(amount)} held "
                           f"for order {data['order_id']} paid trade {data['trade_id']}")
        elif kind == "OrderHoldReleased":
            amount = data["amount_won"]
            available, held = amount, -amount
            line = {"payment_id": data["order_id"]}
            why = ("the order was cancelled" if data["reason"] == "order_cancelled"
                   else "the group buy was cancelled")
            description = (f"Order {data['order_id']} in group buy {data['group_buy_id']}: "
                           f"{why}, {_won(amount)} available again")
        elif kind == "MovedOut":
            remaining = data["remaining_won"]
            available = -remaining
            changes.set(table, key, closed=True)
            moved_to = data.get("moved_to", "unclaimed")
            description = (f"Moved out; wallet closed, {_won(remaining)} kept on record as "
                           f"unclaimed" if moved_to == "unclaimed" else
                           f"Moved out; wallet closed, {_won(remaining)} moved to "
                           f"{_lapse(moved_to)}")
            if data.get("pending_cancelled_won"):
                description += (f"; {_won(data['pending_cancelled_won'])} pending "
                                f"cancelled")
        else:
            raise AssertionError(f"unknown wallet event {event.name}")
        row = changes.row(table, key)
        row["available_won"] = row.get("available_won", 0) + available
        row["held_won"] = row.get("held_won", 0) + held
        row["owed_won"] = row.get("owed_won", 0) + owed
        row["position"] = event.position
        get = line.get
        # Every column, in table order: the rows are copied out with one itemgetter.
        changes.appended[ENTRIES.name].append({
            "position": event.position, "resident_id": resident,
            "occurred_at": event.occurred_at, "recorded_at": event.recorded_at,
            "kind": _snake(kind), "amount_won": available, "held_delta_won": held,
            "owed_delta_won": owed, "trade_id": get("trade_id"), "market": get("market"),
            "policy_version": get("policy_version"), "rate_bps": get("rate_bps"),
            "payment_id": get("payment_id"), "invoice_id": get("invoice_id"),
            "actor_id": event.uuid("actor_id"), "actor_role": data["actor_role"],
            "on_behalf_of": event.uuid("on_behalf_of"), "request_id": data["request_id"],
            "description": f"{description} ({_actor(event)})"
            if kind != "Enrolled" else description,
        })


_snake_names: dict[str, str] = {}


def _snake(name: str) -> str:
    """'PointsAccrued' -> 'points_accrued' (cached: a handful of event kinds)."""
    snake = _snake_names.get(name)
    if snake is None:
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
        _snake_names[name] = snake
    return snake


# Reads the API calls ---------------------------------------------------------------------

WALLET_SELECT = (
    "SELECT resident_id, household_id, complex_id, available_won, held_won, owed_won,"
    " accrued_total_won, spent_total_won, closed, enrolled_at, position"
    " FROM p_wallet_balances WHERE resident_id = %s")
ENTRIES_SELECT = (
    "SELECT position, occurred_at, recorded_at, kind, amount_won, held_delta_won,"
    " owed_delta_won, trade_id, market, policy_version, rate_bps, payment_id,"
    " invoice_id, actor_id, actor_role, on_behalf_of, request_id, description"
    " FROM p_wallet_entries WHERE resident_id = %s AND position < %s"
    " ORDER BY position DESC LIMIT %s")


def wallet(conn: psycopg.Connection[Any], resident_id: UUID) -> dict[str, Any] | None:
    """A resident's wallet, or None if the projection has not seen them."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(WALLET_SELECT, (resident_id,))
        return cursor.fetchone()


def _entries_arguments(resident_id: UUID, cursor: int | None, limit: int
                       ) -> tuple[int, tuple[UUID, int, int]]:
    limit = max(1, min(limit, limits.page_size_max))
    below = cursor if cursor is not None else limits.position_max
    return limit, (resident_id, below, limit + 1)


def _entries_page(rows: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    next_cursor = rows[limit - 1]["position"] if len(rows) > limit else None
    return {"entries": rows[:limit], "next_cursor": next_cursor}


def wallet_entries(conn: psycopg.Connection[Any], resident_id: UUID, cursor: int | None = None,
                   limit: int = limits.page_size_default) -> dict[str, Any]:
    """One page of a wallet's history, newest first; `cursor` is the position to go below."""
    limit, arguments = _entries_arguments(resident_id, cursor, limit)
    with conn.cursor(row_factory=dict_row) as db:
        db.execute(ENTRIES_SELECT, arguments)
        return _entries_page(db.fetchall(), limit)


async def wallet_entries_async(conn: psycopg.AsyncConnection[Any], resident_id: UUID,
                               cursor: int | None = None,
                               limit: int = limits.page_size_default) -> dict[str, Any]:
    """`wallet_entries` on an async connection."""
    limit, arguments = _entries_arguments(resident_id, cursor, limit)
    async with conn.cursor(row_factory=dict_row) as db:
        await db.execute(ENTRIES_SELECT, arguments)
        return _entries_page(await db.fetchall(), limit)
