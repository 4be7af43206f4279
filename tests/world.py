"""A small world to test the ledger in: helpers that enrol, trade and read back events."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg

from ledger import commands as c
from ledger.application import Ledger, Outcome, now
from ledger.codec import decode, event_name
from ledger.database import ConnectionSettings
from ledger.events import Cause

OPERATOR = uuid.UUID("00000000-0000-4000-8000-00000000000a")
PLATFORM = uuid.UUID("00000000-0000-4000-8000-00000000000b")
BILLING = uuid.UUID("00000000-0000-4000-8000-00000000000c")
COORDINATOR = uuid.UUID("00000000-0000-4000-8000-00000000000d")
MANAGER = uuid.UUID("00000000-0000-4000-8000-00000000000e")

DEFAULT_RATES = [
    {"market": "sharing", "seller_kind": "resident", "personal_bps": 300, "common_bps": 100},
    {"market": "shopping", "seller_kind": "small_firm", "personal_bps": 200, "common_bps": 50},
    {"market": "shopping", "seller_kind": "local_food", "personal_bps": 500, "common_bps": 200},
]

GUARDS_OFF: dict[str, Any] = {"same_household_trades": "allowed",
                              "sharing_accrual_won_per_month_max": None,
                              "pair_trades_per_month_max": None}
"""Wash-trade guards off: for workloads about something else that trade within one household
or often between two residents (the guards have their own tests, test_ledger_guards)."""

_request_numbers = itertools.count(1)


def cause(actor: UUID = OPERATOR, role: str = "operator", request_id: str | None = None,
          occurred_at: datetime | None = None, on_behalf_of: UUID | None = None) -> Cause:
    return Cause(actor, role, request_id or f"req-{next(_request_numbers)}-{uuid.uuid4().hex[:6]}",
                 occurred_at or now(), on_behalf_of)


@dataclass
class World:
    ledger: Ledger
    database_url: str
    schema: str
    complexes: list[UUID] = field(default_factory=list)

    def run(self, command: c.Command, **cause_fields: Any) -> Outcome:
        return self.ledger.execute(command, cause(**cause_fields))

    def complex(self, code: str = "HS-01") -> UUID:
        complex_id = UUID(self.run(c.RegisterComplex(code, f"Complex {code}", "Hwaseong"))
                          ["complex_id"])
        self.complexes.append(complex_id)
        return complex_id

    def household(self, complex_id: UUID, unit: str | None = None) -> UUID:
        unit = unit or f"{uuid.uuid4().hex[:4]}-{uuid.uuid4().hex[:4]}"
        return UUID(self.run(c.RegisterHousehold(complex_id, unit))["household_id"])

    def resident(self, household_id: UUID) -> UUID:
        return UUID(self.run(c.EnrolResident(household_id, "consent-paper-1"),
                             actor=COORDINATOR, role="coordinator")["resident_id"])

    def merchant(self, kind: str = "small_firm") -> UUID:
        return UUID(self.run(c.RegisterMerchant(kind, f"{kind} shop"))["merchant_id"])

    def policy(self, rates: list[dict[str, Any]] | None = None,
               guards: dict[str, Any] | None = None) -> int:
        outcome = self.run(c.SetAccrualPolicy.of(rates or DEFAULT_RATES, guards=guards))
        return int(outcome["version"])

    def trade(self, buyer: UUID, seller: UUID, amount_won: int, points_used_won: int = 0,
              seller_kind: str = "resident", market: str | None = None,
              trade_id: str | None = None, category: str = "childcare",
              occurred_at: datetime | None = None) -> Outcome:
        market = market or ("sharing" if seller_kind == "resident" else "shopping")
        return self.run(c.RecordTrade(trade_id or f"T-{uuid.uuid4().hex[:10]}", market, category,
                                      seller, seller_kind, buyer, amount_won, points_used_won),
                        actor=PLATFORM, role="platform", occurred_at=occurred_at)

    def invoice(self, household_id: UUID, amount_won: int = 300_000,
                billing_period: str = "2026-11", invoice_id: str | None = None) -> str:
        invoice_id = invoice_id or f"INV-{uuid.uuid4().hex[:8]}"
        self.run(c.IssueRentInvoice(household_id, invoice_id, billing_period, amount_won,
                                    now() + timedelta(days=10)), actor=BILLING, role="billing")
        return invoice_id

    def pay_rent(self, resident: UUID, household_id: UUID, invoice_id: str, amount_won: int,
                 payment_id: str | None = None, billing_period: str = "2026-11",
                 hold_seconds: int | None = None) -> str:
        payment_id = payment_id or f"PAY-{uuid.uuid4().hex[:8]}"
        self.run(c.PayRent(payment_id, household_id, invoice_id, billing_period, amount_won,
                           resident, hold_seconds), actor=resident, role="resident")
        return payment_id

    def funded_resident(self, household_id: UUID, seller: UUID, points_won: int) -> UUID:
        """A resident who earned `points_won` personal points (3 % of a sharing trade)."""
        resident = self.resident(household_id)
        assert points_won % 3 == 0
        self.trade(resident, seller, points_won * 100 // 3)
        return resident

    # Reading back --------------------------------------------------------------------------

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(ConnectionSettings.from_url(self.database_url).conninfo(),
                               options=f"-c search_path={self.schema}")

    def events_after(self, position: int) -> list[Any]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT originator_id, originator_version, topic, state FROM ledger_events "
                "WHERE notification_id > %s ORDER BY notification_id", (position,)).fetchall()
        return [decode(*row) for row in rows]

    def event_names_after(self, position: int) -> list[str]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT topic FROM ledger_events WHERE notification_id > %s "
                "ORDER BY notification_id", (position,)).fetchall()
        return [event_name(row[0]) for row in rows if "RequestRecord" not in row[0]]

    def all_events(self) -> list[Any]:
        return self.events_after(0)
