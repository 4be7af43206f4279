"""complex_funds: what does each complex's common fund hold, what came in, what went out?

Inflows are counted by KST month of `occurred_at` (when the sale happened) and by
market; a clawback counts in the month it happened, under its trade's market.
Outflows are counted by purpose and decision reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from eventlog.log import Event
from projections.base import Changes, Projection, Table, TradeFacts, kst_month

FUNDS = Table(
    name="p_complex_funds",
    columns=(
        ("complex_id", "uuid"), ("code", "text"), ("name", "text"), ("region", "text"),
        ("balance_won", "bigint"), ("owed_won", "bigint"), ("accrued_total_won", "bigint"),
        ("clawed_back_total_won", "bigint"), ("spent_total_won", "bigint"),
        ("position", "bigint"),
    ),
    key=("complex_id",),
    add=("balance_won", "owed_won", "accrued_total_won", "clawed_back_total_won",
         "spent_total_won"),
)

INFLOWS = Table(
    name="p_fund_inflows",
    columns=(
        ("complex_id", "uuid"), ("month", "text"), ("market", "text"),
        ("accruals_count", "bigint"), ("accrued_won", "bigint"), ("recovered_won", "bigint"),
        ("clawbacks_count", "bigint"), ("clawed_back_won", "bigint"),
    ),
    key=("complex_id", "month", "market"),
    add=("accruals_count", "accrued_won", "recovered_won", "clawbacks_count",
         "clawed_back_won"),
)

OUTFLOWS = Table(
    name="p_fund_outflows",
    columns=(
        ("complex_id", "uuid"), ("purpose", "text"), ("decision_ref", "text"),
        ("spends_count", "bigint"), ("spent_won", "bigint"), ("last_spent_at", "timestamptz"),
    ),
    key=("complex_id", "purpose", "decision_ref"),
    add=("spends_count", "spent_won"),
)

UNKNOWN_MARKET = "unknown"


class ComplexFunds(Projection):
    name = "complex_funds"
    reads = ("Complex.",)
    rebuild_cost = 1.4
    tables = (FUNDS, INFLOWS, OUTFLOWS)

    def fold_into(self, changes: Changes, events: Sequence[Event],
                  trades: TradeFacts) -> Changes:
        for event in events:
            if not event.name.startswith("Complex."):
                continue
            data = event.data
            complex_id = event.originator_id
            key = (complex_id,)
            kind = event.name[len("Complex."):]
            if kind == "Registered":
                changes.set(FUNDS.name, key, code=data["code"], name=data["name"],
                            region=data["region"])
                changes.add(FUNDS.name, key, balance_won=0)
            elif kind == "CommonPointsAccrued":
                amount, recovered = data["amount_won"], data["recovered_won"]
                if event.time("pending_until") is not None:  # pending: not in the balance yet
                    changes.add(FUNDS.name, key, accrued_total_won=amount)
                else:
                    changes.add(FUNDS.name, key, balance_won=amount - recovered,
                                owed_won=-recovered, accrued_total_won=amount)
                changes.add(INFLOWS.name, (complex_id, kst_month(event.occurred_at),
                                           data["market"]),
                            accruals_count=1, accrued_won=amount, recovered_won=recovered)
            elif kind == "CommonPointsClawedBack":
                facts = trades.get(data["trade_id"]) or {}
                changes.add(FUNDS.name, key, balance_won=-data["taken_won"],
                            owed_won=data["owed_won"], clawed_back_total_won=data["amount_won"])
                changes.add(INFLOWS.name, (complex_id, kst_month(event.occurred_at),
                                           facts.get("market", UNKNOWN_MARKET)),
                            clawbacks_count=1, clawed_back_won=data["amount_won"])
            elif kind == "FundSpent":
                changes.add(FUNDS.name, key, balance_won=-data["amount_won"],
                            spent_total_won=data["amount_won"])
                changes.add(OUTFLOWS.name, (complex_id, data["purpose"], data["decision_ref"]),
                            spends_count=1, spent_won=data["amount_won"])
                changes.set(OUTFLOWS.name, (complex_id, data["purpose"], data["decision_ref"]),
                            last_spent_at=event.occurred_at)
            elif kind in ("PendingCommonPointsReleased", "LapsedPointsReceived"):
                amount, recovered = data["amount_won"], data["recovered_won"]
                changes.add(FUNDS.name, key, balance_won=amount - recovered,
                            owed_won=-recovered)
            elif kind == "PendingCommonPointsCancelled":
                facts = trades.get(data["trade_id"]) or {}
                changes.add(FUNDS.name, key, accrued_total_won=-data["amount_won"])
                changes.add(INFLOWS.name, (complex_id, kst_month(event.occurred_at),
                                           facts.get("market", UNKNOWN_MARKET)),
                            accrued_won=-data["amount_won"])
            elif kind in ("HouseholdCounted", "FundAllowanceSet"):
                pass  # counted by the proposals projection: no points move
            else:
                raise AssertionError(f"unknown complex event {event.name}")
            changes.set(FUNDS.name, key, position=event.position)
        return changes


def fund(conn: psycopg.Connection[Any], complex_id: UUID) -> dict[str, Any] | None:
    """A complex's common fund with its inflows by month and market and outflows by purpose."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            "SELECT complex_id, code, name, region, balance_won, owed_won, accrued_total_won,"
            " clawed_back_total_won, spent_total_won, position"
            " FROM p_complex_funds WHERE complex_id = %s", (complex_id,))
        row = cursor.fetchone()
        if row is None:
            return None
        cursor.execute(
            "SELECT month, market, accruals_count, accrued_won, recovered_won, clawbacks_count,"
            " clawed_back_won, accrued_won - clawed_back_won AS net_won"
            " FROM p_fund_inflows WHERE complex_id = %s ORDER BY month, market", (complex_id,))
        row["inflows"] = cursor.fetchall()
        cursor.execute(
            "SELECT purpose, decision_ref, spends_count, spent_won, last_spent_at"
            " FROM p_fund_outflows WHERE complex_id = %s ORDER BY purpose, decision_ref",
            (complex_id,))
        row["outflows"] = cursor.fetchall()
    return row
