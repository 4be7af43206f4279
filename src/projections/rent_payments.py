"""rent_payments: what has each household been billed, and where is each rent payment?

A payment is `held` until billing settles it (`settled`) or releases it (`released`),
or its deadline passes and the sweeper expires it (`expired`). `due_holds` lists the
held payments past their deadline, for the sweeper to send ExpireRentPayment.
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
from ledger.household import EXPIRED, HELD, RELEASED, SETTLED
from projections.base import Changes, Projection, Table, TradeFacts

INVOICES = Table(
    name="p_rent_invoices",
    columns=(
        ("household_id", "uuid"), ("invoice_id", "text"), ("complex_id", "uuid"),
        ("billing_period", "text"), ("amount_won", "bigint"), ("due_at", "timestamptz"),
        ("issued_at", "timestamptz"), ("held_won", "bigint"), ("settled_won", "bigint"),
    ),
    key=("household_id", "invoice_id"),
    add=("held_won", "settled_won"),
)

PAYMENTS = Table(
    name="p_rent_payments",
    columns=(
        ("payment_id", "text"), ("household_id", "uuid"), ("invoice_id", "text"),
        ("billing_period", "text"), ("resident_id", "uuid"), ("complex_id", "uuid"),
        ("amount_won", "bigint"), ("status", "text"), ("deadline_at", "timestamptz"),
        ("held_at", "timestamptz"), ("resolved_at", "timestamptz"),
        ("actor_role", "text"), ("on_behalf_of", "uuid"), ("resolved_by_role", "text"),
    ),
    key=("payment_id",),
    indexes=(("household", "household_id, invoice_id"), ("due", "status, deadline_at")),
)


class RentPayments(Projection):
    name = "rent_payments"
    reads = ("Household.",)
    rebuild_cost = 1.2
    tables = (INVOICES, PAYMENTS)

    def fold_into(self, changes: Changes, events: Sequence[Event],
                  trades: TradeFacts) -> Changes:  # noqa: ARG002
        for event in events:
            if not event.name.startswith("Household."):
                continue
            data = event.data
            household = event.originator_id
            kind = event.name[len("Household."):]
            if kind == "Registered":
                continue
            if kind == "RentInvoiceIssued":
                changes.set(INVOICES.name, (household, data["invoice_id"]),
                            complex_id=event.uuid("complex_id"),
                            billing_period=data["billing_period"],
                            amount_won=data["amount_won"], due_at=event.time("due_at"),
                            issued_at=event.occurred_at)
                changes.add(INVOICES.name, (household, data["invoice_id"]), held_won=0)
                continue
            invoice_key = (household, data["invoice_id"])
            payment_key = (data["payment_id"],)
            amount = data["amount_won"]
            if kind == "RentPaymentHeld":
                changes.add(INVOICES.name, invoice_key, held_won=amount)
                changes.set(PAYMENTS.name, payment_key, household_id=household,
                            invoice_id=data["invoice_id"], billing_period=data["billing_period"],
                            resident_id=event.uuid("resident_id"),
                            complex_id=event.uuid("complex_id"), amount_won=amount, status=HELD,
                            deadline_at=event.time("deadline_at"), held_at=event.occurred_at,
                            actor_role=data["actor_role"],
                            on_behalf_of=event.uuid("on_behalf_of"))
            elif kind == "RentPaymentSettled":
                changes.add(INVOICES.name, invoice_key, held_won=-amount, settled_won=amount)
                changes.set(PAYMENTS.name, payment_key, status=SETTLED,
                            resolved_at=event.occurred_at, resolved_by_role=data["actor_role"])
            elif kind == "RentPaymentReleased":
                changes.add(INVOICES.name, invoice_key, held_won=-amount)
                status = EXPIRED if data["reason"] == EXPIRED else RELEASED
                changes.set(PAYMENTS.name, payment_key, status=status,
                            resolved_at=event.occurred_at, resolved_by_role=data["actor_role"])
            else:
                raise AssertionError(f"unknown household event {event.name}")
        return changes


_PAYMENT_COLUMNS = (
    "payment_id, household_id, invoice_id, billing_period, resident_id, complex_id,"
    " amount_won, status, deadline_at, held_at, resolved_at, actor_role, on_behalf_of,"
    " resolved_by_role")


def rent_payment(conn: psycopg.Connection[Any], payment_id: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(f"SELECT {_PAYMENT_COLUMNS} FROM p_rent_payments WHERE payment_id = %s",
                       (payment_id,))
        return cursor.fetchone()


def household_rent(conn: psycopg.Connection[Any], household_id: UUID) -> dict[str, Any]:
    """A household's invoices, each with its payments, oldest billing period first."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            "SELECT invoice_id, billing_period, amount_won, due_at, issued_at, held_won,"
            " settled_won, amount_won - held_won - settled_won AS open_won"
            " FROM p_rent_invoices WHERE household_id = %s ORDER BY billing_period, invoice_id"
            " LIMIT %s", (household_id, limits.page_size_max))
        invoices = cursor.fetchall()
        cursor.execute(
            f"SELECT {_PAYMENT_COLUMNS} FROM p_rent_payments WHERE household_id = %s"
            " ORDER BY held_at, payment_id", (household_id,))
        payments = cursor.fetchall()
    by_invoice: dict[str, list[dict[str, Any]]] = {}
    for payment in payments:
        by_invoice.setdefault(payment["invoice_id"], []).append(payment)
    for invoice in invoices:
        invoice["payments"] = by_invoice.get(invoice["invoice_id"], [])
    return {"household_id": household_id, "invoices": invoices}


def due_holds(conn: psycopg.Connection[Any], now: datetime,
              limit: int = limits.page_size_max) -> list[str]:
    """Ids of held rent payments whose deadline has passed, earliest deadline first."""
    rows = conn.execute(
        "SELECT payment_id FROM p_rent_payments WHERE status = %s AND deadline_at <= %s"
        " ORDER BY deadline_at, payment_id LIMIT %s", (HELD, now, limit)).fetchall()
    return [row[0] for row in rows]
