"""What every recorded fact carries: who did it, why, and when it happened.

`timestamp` (from the library) is when the event was recorded; `occurred_at`
is when the thing happened on the platform (the time of the sale, say). Both
are timezone-aware; months and weeks are reckoned in Korea Standard Time.

Money movements are double entry: every event that moves points lists its
`postings()`, (account, signed amount) pairs that sum to zero. Accounts are
named `kind` or `kind:id`; the kinds are listed in `ACCOUNT_KINDS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from uuid import UUID

from eventsourcing.domain import Aggregate

KST = timezone(timedelta(hours=9), "KST")

ISSUANCE = "issuance"
"""Points come into being here when accrued and return here when clawed back."""
RENT_CLEARING = "rent_clearing"
"""Settled rent holds: points handed to the billing system as rent."""
FUND_SPENDING = "fund_spending"
"""Points spent from common funds on facilities, events and upkeep."""
PAYOUTS = "payouts"
"""Merchants' settlement accounts paid out in cash by the operator."""
UNCLAIMED = "unclaimed"
"""What remained in a wallet when its resident moved out, kept on record."""
TRADE_CLEARING = "trade_clearing"
"""Points in flight between a buyer and a seller within one trade or refund; zero after
every command, because both sides are saved together."""

LAPSE_CLEARING = "lapse_clearing"
"""Expired or moved-out personal points on their way from a wallet to its complex's fund;
zero after every command, because the wallet and the fund are saved together."""

ACCOUNT_KINDS = (
    "wallet", "held", "fund", "merchant", "pending",
    ISSUANCE, RENT_CLEARING, FUND_SPENDING, PAYOUTS, UNCLAIMED, TRADE_CLEARING, LAPSE_CLEARING,
)
SYSTEM_ACCOUNT_KINDS = (ISSUANCE, RENT_CLEARING, FUND_SPENDING, PAYOUTS, UNCLAIMED, TRADE_CLEARING,
                        LAPSE_CLEARING)
OWNED_ACCOUNT_KINDS = ("wallet", "held", "fund", "merchant", "pending")
"""Accounts that belong to someone and may never go below zero. `pending:ID` holds a
wallet's or a fund's accrued points while their trades' return windows are open."""

Posting = tuple[str, int]


def account(kind: str, owner_id: UUID) -> str:
    assert kind in ACCOUNT_KINDS, kind
    return f"{kind}:{owner_id}"


def account_kind(name: str) -> str:
    return name.split(":", 1)[0]


@dataclass(frozen=True)
class Cause:
    """Who asked for a change, on whose behalf, with which request, and when it happened."""

    actor_id: UUID
    actor_role: str
    request_id: str
    occurred_at: datetime
    on_behalf_of: UUID | None = None

    def fields(self, complex_id: UUID | None) -> dict[str, object]:
        return {
            "actor_id": self.actor_id,
            "actor_role": self.actor_role,
            "on_behalf_of": self.on_behalf_of,
            "request_id": self.request_id,
            "complex_id": complex_id,
            "occurred_at": self.occurred_at,
        }


@dataclass(frozen=True)
class Caused:
    """Fields every ledger event carries (mixed into each event class)."""

    actor_id: UUID
    actor_role: str
    on_behalf_of: UUID | None
    request_id: str
    complex_id: UUID | None
    occurred_at: datetime

    def postings(self) -> list[Posting]:
        """Double-entry lines of this event; empty for events that move no points."""
        return []


class LedgerAggregate(Aggregate):
    """Base of the ledger's aggregates: events carry a Cause."""

    class Event(Caused, Aggregate.Event):
        pass

    class Created(Caused, Aggregate.Created):
        pass
