"""market_views: what is traded where, how many points did it earn, and what do merchants hold?

Trades and their accruals are counted per KST day of `occurred_at`, per market,
category, seller kind and (buyer's) complex; weeks (ISO) and months are sums of days,
so any range of dates can be asked for. A refund is counted on the day it happened,
under its trade's market, category and seller kind, and netted out of the accruals:
a closed week never changes after the fact.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from eventlog.log import Event
from projections.base import Changes, Projection, Table, TradeFacts, kst_day

DAILY = Table(
    name="p_market_daily",
    columns=(
        ("day", "date"), ("market", "text"), ("category", "text"), ("seller_kind", "text"),
        ("complex_id", "uuid"),
        ("trades_count", "bigint"), ("amount_won", "bigint"), ("points_used_won", "bigint"),
        ("accrual_base_won", "bigint"), ("personal_accrued_won", "bigint"),
        ("common_accrued_won", "bigint"), ("refunds_count", "bigint"),
        ("refunded_amount_won", "bigint"), ("personal_clawback_won", "bigint"),
        ("common_clawback_won", "bigint"),
    ),
    key=("day", "market", "category", "seller_kind", "complex_id"),
    add=("trades_count", "amount_won", "points_used_won", "accrual_base_won",
         "personal_accrued_won", "common_accrued_won", "refunds_count", "refunded_amount_won",
         "personal_clawback_won", "common_clawback_won"),
    indexes=(("complex", "complex_id, day"),),
)

MERCHANTS = Table(
    name="p_merchant_settlements",
    columns=(
        ("merchant_id", "uuid"), ("kind", "text"), ("name", "text"),
        ("sales_count", "bigint"), ("sales_amount_won", "bigint"),
        ("points_received_won", "bigint"), ("refunds_count", "bigint"),
        ("refunded_amount_won", "bigint"), ("balance_won", "bigint"), ("owed_won", "bigint"),
        ("paid_out_won", "bigint"), ("payouts_count", "bigint"),
        ("last_paid_out_at", "timestamptz"), ("position", "bigint"),
    ),
    key=("merchant_id",),
    add=("sales_count", "sales_amount_won", "points_received_won", "refunds_count",
         "refunded_amount_won", "balance_won", "owed_won", "paid_out_won", "payouts_count"),
)

RESIDENT_SELLER = "resident"


class MarketViews(Projection):
    name = "market_views"
    reads = ("Trade.", "Merchant.")
    rebuild_cost = 1.7
    tables = (DAILY, MERCHANTS)

    def fold_into(self, changes: Changes, events: Sequence[Event],
                  trades: TradeFacts) -> Changes:
        for event in events:
            name = event.name
            data = event.data
            if name == "Trade.Recorded":
                key = (kst_day(event.occurred_at), data["market"], data["category"],
                       data["seller_kind"], event.uuid("complex_id"))
                changes.add(DAILY.name, key, trades_count=1, amount_won=data["amount_won"],
                            points_used_won=data["points_used_won"],
                            accrual_base_won=data["accrual_base_won"],
                            personal_accrued_won=data["personal_won"],
                            common_accrued_won=data["common_won"])
                if data["seller_kind"] != RESIDENT_SELLER:
                    changes.add(MERCHANTS.name, (data["seller_id"]["_data_"],), sales_count=1,
                                sales_amount_won=data["amount_won"])
            elif name == "Trade.Refunded":
                facts = trades.get(data["trade_id"])
                assert facts is not None, f"refund of unknown trade {data['trade_id']}"
                key = (kst_day(event.occurred_at), facts["market"], facts["category"],
                       facts["seller_kind"], event.uuid("complex_id"))
                changes.add(DAILY.name, key, refunds_count=1,
                            refunded_amount_won=data["amount_won"],
                            # A share cancelled inside the return window is taken
                            # back on refund too: it counts with the clawbacks here.
                            personal_clawback_won=data["personal_clawback_won"]
                            + data.get("personal_cancelled_won", 0),
                            common_clawback_won=data["common_clawback_won"]
                            + data.get("common_cancelled_won", 0))
                if facts["seller_kind"] != RESIDENT_SELLER:
                    changes.add(MERCHANTS.name, (facts["seller_id"]["_data_"],), refunds_count=1,
                                refunded_amount_won=data["amount_won"])
            elif name.startswith("Merchant."):
                self._fold_merchant(changes, event)
        return changes

    def _fold_merchant(self, changes: Changes, event: Event) -> None:
        data = event.data
        key = (event.originator_id,)
        kind = event.name[len("Merchant."):]
        if kind == "Registered":
            changes.set(MERCHANTS.name, key, kind=data["kind"], name=data["name"])
            changes.add(MERCHANTS.name, key, balance_won=0)
        elif kind == "SettlementCredited":
            amount, recovered = data["amount_won"], data["recovered_won"]
            changes.add(MERCHANTS.name, key, points_received_won=amount,
                        balance_won=amount - recovered, owed_won=-recovered)
        elif kind == "SettlementReturned":
            changes.add(MERCHANTS.name, key, points_received_won=-data["amount_won"],
                        balance_won=-data["taken_won"], owed_won=data["owed_won"])
        elif kind == "PaidOut":
            changes.add(MERCHANTS.name, key, balance_won=-data["amount_won"],
                        paid_out_won=data["amount_won"], payouts_count=1)
            changes.set(MERCHANTS.name, key, last_paid_out_at=event.occurred_at)
        else:
            raise AssertionError(f"unknown merchant event {event.name}")
        changes.set(MERCHANTS.name, key, position=event.position)


# Reads the API calls ---------------------------------------------------------------------

_SUMS = (
    "COALESCE(SUM(trades_count), 0)::bigint AS trades_count,"
    " COALESCE(SUM(amount_won), 0)::bigint AS amount_won,"
    " COALESCE(SUM(points_used_won), 0)::bigint AS points_used_won,"
    " COALESCE(SUM(personal_accrued_won), 0)::bigint AS personal_accrued_won,"
    " COALESCE(SUM(common_accrued_won), 0)::bigint AS common_accrued_won,"
    " COALESCE(SUM(refunds_count), 0)::bigint AS refunds_count,"
    " COALESCE(SUM(refunded_amount_won), 0)::bigint AS refunded_amount_won,"
    " COALESCE(SUM(personal_clawback_won), 0)::bigint AS personal_clawback_won,"
    " COALESCE(SUM(common_clawback_won), 0)::bigint AS common_clawback_won,"
    " COALESCE(SUM(personal_accrued_won + common_accrued_won - personal_clawback_won"
    " - common_clawback_won), 0)::bigint AS net_accrued_won")

_GROUPINGS = {
    "by_week": "to_char(day, 'IYYY-\"W\"IW')",
    "by_month": "to_char(day, 'YYYY-MM')",
    "by_market": "market",
    "by_category": "market || '/' || category",
    "by_seller_kind": "seller_kind",
    "by_complex": "complex_id::text",
}


def market_stats(conn: psycopg.Connection[Any], from_date: date, to_date: date,
                 complex_id: UUID | None = None, market: str | None = None) -> dict[str, Any]:
    """Trades, accruals and refunds between two KST dates (both included), with breakdowns.

    Without `complex_id` these are platform totals ("points accrued this week across
    all complexes" is `market_stats(conn, monday, sunday)["totals"]["net_accrued_won"]`).
    """
    where = "day BETWEEN %(from)s AND %(to)s"
    params: dict[str, Any] = {"from": from_date, "to": to_date}
    if complex_id is not None:
        where += " AND complex_id = %(complex)s"
        params["complex"] = complex_id
    if market is not None:
        where += " AND market = %(market)s"
        params["market"] = market
    result: dict[str, Any] = {"from_date": from_date, "to_date": to_date,
                              "complex_id": complex_id, "market": market}
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(f"SELECT {_SUMS} FROM p_market_daily WHERE {where}", params)
        result["totals"] = cursor.fetchone()
        for name, expression in _GROUPINGS.items():
            cursor.execute(
                f"SELECT {expression} AS bucket, {_SUMS} FROM p_market_daily WHERE {where}"
                f" GROUP BY 1 ORDER BY 1", params)
            result[name] = cursor.fetchall()
    return result


def merchant_settlement(conn: psycopg.Connection[Any],
                        merchant_id: UUID) -> dict[str, Any] | None:
    """A merchant's sales and settlement account, for GET /v1/merchants/{id}/settlement."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            "SELECT merchant_id, kind, name, sales_count, sales_amount_won, points_received_won,"
            " refunds_count, refunded_amount_won, balance_won, owed_won, paid_out_won,"
            " payouts_count, last_paid_out_at, position"
            " FROM p_merchant_settlements WHERE merchant_id = %s", (merchant_id,))
        return cursor.fetchone()
