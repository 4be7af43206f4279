"""The commands the ledger accepts. Each is a request to change something.

Commands carry only what the client sent; who sent it, with which request id and
when it happened travel beside it in a `Cause`. A command's `content()` is what
its idempotency fingerprint covers.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID


@dataclass(frozen=True)
class Command:
    name: ClassVar[str] = ""

    def content(self) -> dict[str, Any]:
        # Shallow on purpose: fields are primitives, and asdict() deep-copies each one.
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def named_ids(self) -> list[UUID]:
        """The aggregate ids the command names (households, residents, complexes, sellers):
        what it will read first, so a batch can load them together (`Ledger.prefetch`)."""
        return [value for f in dataclasses.fields(self)
                if isinstance(value := getattr(self, f.name), UUID)]


@dataclass(frozen=True)
class RegisterComplex(Command):
    name: ClassVar[str] = "register_complex"
    code: str
    complex_name: str
    region: str


@dataclass(frozen=True)
class RegisterHousehold(Command):
    name: ClassVar[str] = "register_household"
    complex_id: UUID
    unit: str


@dataclass(frozen=True)
class EnrolResident(Command):
    """A resident enrols themself (resident_id is the actor) or is enrolled on their behalf."""

    name: ClassVar[str] = "enrol_resident"
    household_id: UUID
    consent_ref: str
    resident_id: UUID | None = None


@dataclass(frozen=True)
class MoveOut(Command):
    name: ClassVar[str] = "move_out"
    resident_id: UUID


@dataclass(frozen=True)
class RegisterMerchant(Command):
    name: ClassVar[str] = "register_merchant"
    kind: str
    merchant_name: str


@dataclass(frozen=True)
class PayOutMerchant(Command):
    name: ClassVar[str] = "pay_out_merchant"
    merchant_id: UUID
    payout_id: str


@dataclass(frozen=True)
class SetAccrualPolicy(Command):
    name: ClassVar[str] = "set_accrual_policy"
    rates: tuple[tuple[tuple[str, Any], ...], ...]
    lifecycle_json: str = ""
    """The version's points lifecycle settings as canonical JSON; empty: the defaults."""
    guards: tuple[tuple[str, Any], ...] | None = None
    """Wash-trade guard settings (ledger.guards); None: the defaults."""

    @classmethod
    def of(cls, rates: list[dict[str, Any]], lifecycle: dict[str, Any] | None = None,
           guards: dict[str, Any] | None = None) -> SetAccrualPolicy:
        return cls(rates=tuple(tuple(sorted(row.items())) for row in rates),
                   lifecycle_json="" if lifecycle is None else json.dumps(lifecycle,
                                                                         sort_keys=True),
                   guards=None if guards is None else tuple(sorted(guards.items())))

    def lifecycle(self) -> dict[str, Any] | None:
        found: dict[str, Any] | None = (json.loads(self.lifecycle_json) if self.lifecycle_json
                                         else None)
        return found

    def rate_rows(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self.rates]

    def guard_settings(self) -> dict[str, Any] | None:
        return None if self.guards is None else dict(self.guards)

    def content(self) -> dict[str, Any]:
        content: dict[str, Any] = {"rates": self.rate_rows()}
        if self.lifecycle_json:  # absent as before lifecycles: old request records match
            content["lifecycle"] = self.lifecycle()
        if self.guards is not None:  # absent as before guards: old request records match
            content["guards"] = self.guard_settings()
        return content


@dataclass(frozen=True)
class RecordTrade(Command):
    name: ClassVar[str] = "record_trade"
    trade_id: str
    market: str
    category: str
    seller_id: UUID
    seller_kind: str
    buyer_id: UUID
    amount_won: int
    points_used_won: int
    policy_version: int | None = None


@dataclass(frozen=True)
class RefundTrade(Command):
    name: ClassVar[str] = "refund_trade"
    trade_id: str


@dataclass(frozen=True)
class IssueRentInvoice(Command):
    name: ClassVar[str] = "issue_rent_invoice"
    household_id: UUID
    invoice_id: str
    billing_period: str
    amount_won: int
    due_at: datetime


@dataclass(frozen=True)
class PayRent(Command):
    name: ClassVar[str] = "pay_rent"
    payment_id: str
    household_id: UUID
    invoice_id: str
    billing_period: str
    amount_won: int
    resident_id: UUID
    hold_seconds: int | None = None


@dataclass(frozen=True)
class SettleRentPayment(Command):
    name: ClassVar[str] = "settle_rent_payment"
    payment_id: str


@dataclass(frozen=True)
class ReleaseRentPayment(Command):
    name: ClassVar[str] = "release_rent_payment"
    payment_id: str


@dataclass(frozen=True)
class ExpireRentPayment(Command):
    """Release a hold whose deadline has passed; `now` is the sweeper's clock."""

    name: ClassVar[str] = "expire_rent_payment"
    payment_id: str
    now: datetime


@dataclass(frozen=True)
class ReleasePendingPoints(Command):
    """A trade's return window ended: make its pending shares available (`now` is the
    sweeper's clock)."""

    name: ClassVar[str] = "release_pending_points"
    trade_id: str
    now: datetime


@dataclass(frozen=True)
class ExpirePoints(Command):
    """Expire a wallet's lots that reached their expiry by `now` (the sweeper's clock)."""

    name: ClassVar[str] = "expire_points"
    resident_id: UUID
    now: datetime


@dataclass(frozen=True)
class SpendFund(Command):
    """A spend cites an approved proposal (`proposal_id`), or stays within the month's
    allowance; `decision_ref` is a free-text note kept for compatibility."""

    name: ClassVar[str] = "spend_fund"
    complex_id: UUID
    spend_id: str
    purpose: str
    amount_won: int
    decision_ref: str = ""
    proposal_id: str | None = None

    def content(self) -> dict[str, Any]:
        # Without a proposal, the fingerprint is the one spends had before proposals
        # existed: a client retrying such a request is answered as before.
        content = super().content()
        if content["proposal_id"] is None:
            del content["proposal_id"]
        return content


# Group buys (shopping market): see ledger.groupbuy and ledger.group_buying.

@dataclass(frozen=True)
class OpenGroupBuy(Command):
    name: ClassVar[str] = "open_group_buy"
    group_buy_id: str
    merchant_id: UUID
    category: str
    unit_price_won: int
    quantity_min: int
    quantity_max: int
    deadline_at: datetime
    complex_ids: tuple[UUID, ...]

    def content(self) -> dict[str, Any]:
        content = super().content()
        content["complex_ids"] = sorted(str(complex_id) for complex_id in self.complex_ids)
        return content


@dataclass(frozen=True)
class SetFundAllowance(Command):
    name: ClassVar[str] = "set_fund_allowance"
    complex_id: UUID
    allowance_won: int


@dataclass(frozen=True)
class OpenProposal(Command):
    name: ClassVar[str] = "open_proposal"
    complex_id: UUID
    proposal_id: str
    purpose: str
    title: str
    amount_won: int
    voting_closes_at: datetime
    voting_opens_at: datetime | None = None
    quorum_bps: int | None = None
    approval_bps: int | None = None


@dataclass(frozen=True)
class CastBallot(Command):
    """A resident votes for their household, or a coordinator for them (with consent_ref)."""

    name: ClassVar[str] = "cast_ballot"
    proposal_id: str
    resident_id: UUID
    choice: str
    consent_ref: str = ""


@dataclass(frozen=True)
class CloseProposal(Command):
    """Decide a proposal whose window has closed; `now` is the closer's clock (the sweeper's),
    else the request's time."""

    name: ClassVar[str] = "close_proposal"
    proposal_id: str
    now: datetime | None = None


@dataclass(frozen=True)
class PlaceGroupBuyOrder(Command):
    name: ClassVar[str] = "place_group_buy_order"
    group_buy_id: str
    order_id: str
    resident_id: UUID
    quantity: int
    points_used_won: int


@dataclass(frozen=True)
class CancelGroupBuyOrder(Command):
    name: ClassVar[str] = "cancel_group_buy_order"
    order_id: str


@dataclass(frozen=True)
class CloseGroupBuy(Command):
    """Close a group buy: at its deadline (the sweeper), or early once its minimum is
    reached; the cause's `occurred_at` is the moment it is closed at."""

    name: ClassVar[str] = "close_group_buy"
    group_buy_id: str
