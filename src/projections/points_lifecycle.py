"""points_lifecycle: what is pending, and which lots expire when?

Two tables. `p_pending_shares`, one row per trade with a return window: the buyer's
personal and the complex's common share, when they become available, and each share's
state (`pending`, `released`, `cancelled`). `p_wallet_lots`, one row per lot of a wallet:
its expiry and what it still holds, folded from the lots each event records (a debit's
taking, a release's give-back, an expiry's lots).

Debits stored before lots recorded no taking: they are folded into a lot named `legacy`
(with no expiry), so a wallet's lots still sum to its available points; such a wallet's
older lots read high by what those debits took until they expire (the sweeper asks the
ledger, which knows, and is told `nothing_to_expire` when nothing is due).

Reads: a wallet's pending points and what expires within `limits.expiring_soon_days`;
a fund's pending points; and, for the sweeper, trades whose window has ended and wallets
with a lot past its expiry.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from eventlog.log import Event
from ledger import limits
from ledger.resident import legacy_expiry
from projections.base import Changes, Projection, Table, TradeFacts
from projections.wallet_balances import WALLET_SELECT

PENDING = "pending"
RELEASED = "released"
CANCELLED = "cancelled"
LEGACY_LOT = "legacy"

SHARES = Table(
    name="p_pending_shares",
    columns=(
        ("trade_id", "text"), ("resident_id", "uuid"), ("complex_id", "uuid"),
        ("available_at", "timestamptz"), ("personal_won", "bigint"), ("common_won", "bigint"),
        ("personal_state", "text"), ("common_state", "text"), ("position", "bigint"),
    ),
    key=("trade_id",),
    add=("personal_won", "common_won"),
    indexes=(("resident", "resident_id, personal_state"), ("fund", "complex_id, common_state"),
             ("due", "available_at")),
)

LOTS = Table(
    name="p_wallet_lots",
    columns=(
        ("resident_id", "uuid"), ("lot_id", "text"), ("expires_at", "timestamptz"),
        ("remaining_won", "bigint"), ("position", "bigint"),
    ),
    key=("resident_id", "lot_id"),
    add=("remaining_won",),
    indexes=(("expiry", "expires_at"),),
)

_DEBITS = {"PointsSpent": "amount_won", "AccrualClawedBack": "taken_won",
           "PaymentReturned": "taken_won", "PointsHeld": "amount_won",
           "OrderPointsHeld": "amount_won", "MovedOut": "remaining_won",
           "PointsExpired": "amount_won"}
_GIVE_BACKS = ("HoldReleased", "OrderHoldReleased", "PointsRefunded")


class PointsLifecycle(Projection):
    name = "points_lifecycle"
    reads = ("Resident.", "Complex.")
    rebuild_cost = 1.0
    tables = (SHARES, LOTS)

    def fold_into(self, changes: Changes, events: Sequence[Event],
                  trades: TradeFacts) -> Changes:  # noqa: ARG002
        for event in events:
            kind, _, what = event.name.partition(".")
            if kind == "Resident":
                self._wallet(changes, event, what)
            elif kind == "Complex":
                self._fund(changes, event, what)
        return changes

    def _lot(self, changes: Changes, event: Event, lot_id: str, expires_at: str | None,
             amount_won: int) -> None:
        key = (event.originator_id, lot_id)
        if expires_at is not None:
            changes.set(LOTS.name, key, expires_at=expires_at)
        changes.add(LOTS.name, key, remaining_won=amount_won)
        changes.set(LOTS.name, key, position=event.position)

    def _parts(self, changes: Changes, event: Event, sign: int, amount_won: int) -> None:
        recorded = event.data.get("lots")
        if recorded is None:  # stored before lots: see the module's docstring
            if amount_won:
                self._lot(changes, event, LEGACY_LOT, None, sign * amount_won)
            return
        for part in recorded:
            self._lot(changes, event, part["lot_id"], part["expires_at"]["_data_"],
                      sign * part["amount_won"])

    def _wallet(self, changes: Changes, event: Event, what: str) -> None:
        data = event.data
        if what == "PointsAccrued" and data.get("pending_until") is not None:
            key = (data["trade_id"],)
            changes.set(SHARES.name, key, resident_id=event.originator_id,
                        complex_id=event.uuid("complex_id"),
                        available_at=event.time("pending_until"), personal_state=PENDING,
                        position=event.position)
            changes.add(SHARES.name, key, personal_won=data["amount_won"])
        elif what in ("PointsAccrued", "PointsReceived", "PendingPointsReleased"):
            prefix = "received" if what == "PointsReceived" else "accrual"
            expires_at = event.time("expires_at")
            if expires_at is None:  # stored before lots: 24 months from the event
                expires_at = legacy_expiry(datetime.fromisoformat(event.occurred_at)).isoformat()
            self._lot(changes, event, f"{prefix}:{data['trade_id']}", expires_at,
                      data["amount_won"] - data["recovered_won"])
            if what == "PendingPointsReleased":
                changes.set(SHARES.name, (data["trade_id"],), personal_state=RELEASED,
                            position=event.position)
        elif what == "PendingPointsCancelled":
            changes.set(SHARES.name, (data["trade_id"],), personal_state=CANCELLED,
                        position=event.position)
        elif what in _DEBITS:
            self._parts(changes, event, -1, data[_DEBITS[what]])
        elif what in _GIVE_BACKS:
            amount_won = data["amount_won"] - data.get("recovered_won", 0)
            self._parts(changes, event, 1, amount_won)

    def _fund(self, changes: Changes, event: Event, what: str) -> None:
        data = event.data
        if what == "CommonPointsAccrued" and data.get("pending_until") is not None:
            key = (data["trade_id"],)
            changes.set(SHARES.name, key, complex_id=event.originator_id,
                        available_at=event.time("pending_until"), common_state=PENDING,
                        position=event.position)
            changes.add(SHARES.name, key, common_won=data["amount_won"])
        elif what == "PendingCommonPointsReleased":
            changes.set(SHARES.name, (data["trade_id"],), common_state=RELEASED,
                        position=event.position)
        elif what == "PendingCommonPointsCancelled":
            changes.set(SHARES.name, (data["trade_id"],), common_state=CANCELLED,
                        position=event.position)


# Reads -----------------------------------------------------------------------------------

_PENDING_SELECT = (
    "SELECT COALESCE(SUM(personal_won), 0)::bigint AS pending_won,"
    " MIN(available_at) AS next_available_at"
    " FROM p_pending_shares WHERE resident_id = %s AND personal_state = 'pending'")
_EXPIRING_SELECT = (
    "SELECT expires_at, SUM(remaining_won)::bigint AS amount_won FROM p_wallet_lots"
    " WHERE resident_id = %s AND remaining_won > 0 AND expires_at > %s"
    " AND expires_at <= %s GROUP BY expires_at ORDER BY expires_at LIMIT %s")


def _lifecycle_view(pending: dict[str, Any] | None,
                    expiring: list[dict[str, Any]]) -> dict[str, Any]:
    pending = pending or {"pending_won": 0, "next_available_at": None}
    return {"pending_won": pending["pending_won"],
            "next_available_at": pending["next_available_at"],
            "expiring_soon_won": sum(row["amount_won"] for row in expiring),
            "expiring_soon": expiring}


def wallet_lifecycle(conn: psycopg.Connection[Any], resident_id: UUID,
                     moment: datetime) -> dict[str, Any]:
    """A wallet's pending points, and its lots expiring within the next 30 days."""
    until = moment + timedelta(days=limits.expiring_soon_days)
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(_PENDING_SELECT, (resident_id,))
        pending = cursor.fetchone()
        cursor.execute(_EXPIRING_SELECT, (resident_id, moment, until, limits.page_size_max))
        return _lifecycle_view(pending, cursor.fetchall())


_WALLET_COLUMNS = ", ".join(
    f"w.{column.strip()}"
    for column in WALLET_SELECT.removeprefix("SELECT ").split(" FROM ")[0].split(","))
"""The columns of `wallet_balances.wallet`, read from the same row."""
_WALLET_VIEW_SELECT = (
    f"SELECT {_WALLET_COLUMNS},"
    " p.pending_won, p.next_available_at, e.expires_at, e.amounts_won"
    " FROM p_wallet_balances w"
    " CROSS JOIN LATERAL (SELECT COALESCE(SUM(personal_won), 0)::bigint AS pending_won,"
    "  MIN(available_at) AS next_available_at FROM p_pending_shares"
    "  WHERE resident_id = w.resident_id AND personal_state = 'pending') p"
    " CROSS JOIN LATERAL (SELECT array_agg(expires_at ORDER BY expires_at) AS expires_at,"
    "  array_agg(amount_won ORDER BY expires_at) AS amounts_won"
    "  FROM (SELECT expires_at, SUM(remaining_won)::bigint AS amount_won FROM p_wallet_lots"
    "   WHERE resident_id = w.resident_id AND remaining_won > 0 AND expires_at > %s"
    "   AND expires_at <= %s GROUP BY expires_at ORDER BY expires_at LIMIT %s) soon) e"
    " WHERE w.resident_id = %s")


async def wallet_view_async(conn: psycopg.AsyncConnection[Any], resident_id: UUID,
                            moment: datetime) -> dict[str, Any] | None:
    """A wallet's row (`wallet_balances.wallet`) with its pending points and what expires
    within the next 30 days, all read at one moment: one statement, which PostgreSQL runs
    on one snapshot, so a projection committing meanwhile cannot mix two moments. One
    round trip, and no transaction to begin and end around it (a pipeline of BEGIN, three
    statements and COMMIT cost the API's event loop about a fifth of a wallet read, see
    docs/api.md, "HTTP throughput"). None when the wallet is not known."""
    until = moment + timedelta(days=limits.expiring_soon_days)
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(_WALLET_VIEW_SELECT,
                         (moment, until, limits.page_size_max, resident_id))
    row = await cursor.fetchone()
    if row is None:
        return None
    expires_at, amounts_won = row.pop("expires_at") or [], row.pop("amounts_won") or []
    expiring = [{"expires_at": day, "amount_won": amount}
                for day, amount in zip(expires_at, amounts_won, strict=True)]
    row.update(_lifecycle_view({"pending_won": row.pop("pending_won"),
                                "next_available_at": row.pop("next_available_at")},
                               expiring))
    return row


def fund_pending_won(conn: psycopg.Connection[Any], complex_id: UUID) -> int:
    row = conn.execute(
        "SELECT COALESCE(SUM(common_won), 0)::bigint FROM p_pending_shares"
        " WHERE complex_id = %s AND common_state = %s", (complex_id, PENDING)).fetchone()
    return 0 if row is None else int(row[0])


def due_pending_trades(conn: psycopg.Connection[Any], moment: datetime,
                       limit: int = limits.page_size_max) -> list[str]:
    """Trades whose return window ended by `moment` with a share still pending."""
    rows = conn.execute(
        "SELECT trade_id FROM p_pending_shares WHERE available_at <= %s"
        " AND (personal_state = %s OR common_state = %s)"
        " ORDER BY available_at, trade_id LIMIT %s",
        (moment, PENDING, PENDING, limit)).fetchall()
    return [row[0] for row in rows]


def due_expiry_wallets(conn: psycopg.Connection[Any], moment: datetime,
                       limit: int = limits.page_size_max) -> list[tuple[UUID, datetime]]:
    """Wallets with a lot past its expiry at `moment` that still holds points, each with
    the earliest expiry among those lots."""
    rows = conn.execute(
        "SELECT resident_id, MIN(expires_at) FROM p_wallet_lots"
        " WHERE expires_at <= %s AND remaining_won > 0"
        " GROUP BY resident_id ORDER BY MIN(expires_at), resident_id LIMIT %s",
        (moment, limit)).fetchall()
    return [(row[0], row[1]) for row in rows]
