"""Request and response bodies of the HTTP API.

Request models forbid unknown fields and bound every string, amount and list by the
ledger's limits, so a malformed request is refused (422) before anything runs.
Strings may not contain control characters or lone surrogates: PostgreSQL text
cannot hold NUL, and nothing a person types needs the others.

Response models forbid extra fields too: a role-specific view can then never carry a
field of another view by accident, and the per-role union in the OpenAPI document
matches exactly one of its members.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal, get_args
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from ledger import limits
from ledger.complex import FUND_PURPOSES
from ledger.policy import MARKETS, MERCHANT_KINDS, SELLER_KINDS


def _no_control_characters(value: str) -> str:
    for character in value:
        if unicodedata.category(character) in ("Cc", "Cs"):
            msg = "control characters are not allowed"
            raise ValueError(msg)
    return value


def _occurred_at_in_bounds(value: datetime) -> datetime:
    latest = datetime.now(UTC) + timedelta(seconds=limits.occurred_at_ahead_seconds_max)
    if not limits.occurred_at_earliest <= value <= latest:
        msg = "occurred_at must be after 2020-01-01 and not in the future"
        raise ValueError(msg)
    return value


def _due_at_in_bounds(value: datetime) -> datetime:
    if not limits.due_at_earliest <= value < limits.due_at_latest:
        msg = "due_at must be between 2020 and 2100"
        raise ValueError(msg)
    return value


_VISIBLE = r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$"
_IDENTIFIER = r"^[\x21-\x7e]+$"

Text = Annotated[str, Field(min_length=1, max_length=limits.string_length_max,
                            pattern=_VISIBLE), AfterValidator(_no_control_characters)]
Identifier = Annotated[str, Field(min_length=1, max_length=limits.identifier_length_max,
                                  pattern=_IDENTIFIER,
                                  description="Client-chosen id: printable ASCII, no spaces.")]
AmountWon = Annotated[int, Field(strict=True, ge=1, le=limits.amount_won_max,
                                 description="Whole won (1 point = 1 won).")]
AmountWonOrZero = Annotated[int, Field(strict=True, ge=0, le=limits.amount_won_max)]
Bps = Annotated[int, Field(strict=True, ge=0, le=limits.rate_bps_max,
                           description="Basis points: 100 = 1 %.")]
BillingPeriod = Annotated[str, Field(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$",
                                     examples=["2026-11"], description="YYYY-MM")]
OccurredAt = Annotated[AwareDatetime, AfterValidator(_occurred_at_in_bounds), Field(
    description="When it happened on the platform (e.g. the time of the sale); "
                "default: when the request arrives.")]
DueAt = Annotated[AwareDatetime, AfterValidator(_due_at_in_bounds)]
Position = Annotated[int, Field(ge=0, le=limits.position_max,
                                description="Event log position this write reached; pass "
                                            "it as `consistent_with` to read your write.")]

Market = Literal["sharing", "shopping"]
SellerKind = Literal["resident", "small_firm", "social_enterprise", "local_food", "public_body"]
MerchantKind = Literal["small_firm", "social_enterprise", "local_food", "public_body"]
FundPurpose = Literal["facility", "event", "upkeep"]
RentStatus = Literal["held", "settled", "released", "expired"]

# The API's enumerations are the ledger's, spelled out for the OpenAPI document.
assert get_args(Market) == MARKETS
assert get_args(SellerKind) == SELLER_KINDS
assert get_args(MerchantKind) == MERCHANT_KINDS
assert get_args(FundPurpose) == FUND_PURPOSES


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResponseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Requests --------------------------------------------------------------------------------

class RegisterComplexRequest(RequestBody):
    code: Identifier = Field(examples=["HS-01"])
    name: Text
    region: Text


class RegisterHouseholdRequest(RequestBody):
    complex_id: UUID
    unit: Identifier = Field(examples=["101-1203"])


class EnrolResidentRequest(RequestBody):
    household_id: UUID
    consent_ref: Text = Field(description="Reference of the resident's signed consent.")
    resident_id: UUID | None = Field(
        default=None,
        description="The resident's identity-provider id, when enrolled by a coordinator or "
                    "the platform. A resident enrolling themself must not send it: their id "
                    "is the token's subject.")


class RegisterMerchantRequest(RequestBody):
    kind: MerchantKind
    name: Text


class PayoutRequest(RequestBody):
    payout_id: Identifier


class RateRow(RequestBody):
    market: Market
    seller_kind: SellerKind
    category: Text | None = Field(default=None, description="Omitted: every category.")
    personal_bps: Bps
    common_bps: Bps


class AccrualPolicyRequest(RequestBody):
    rates: list[RateRow] = Field(min_length=1, max_length=limits.policy_rates_count_max)


class TradeRequest(RequestBody):
    trade_id: Identifier
    market: Market
    category: Text
    seller_id: UUID
    seller_kind: SellerKind
    buyer_id: UUID
    amount_won: AmountWon
    points_used_won: AmountWonOrZero = 0
    policy_version: int | None = Field(default=None, ge=1, le=limits.policy_version_max,
                                       description="Omitted: the current version.")
    occurred_at: OccurredAt | None = None


class RefundRequest(RequestBody):
    occurred_at: OccurredAt | None = None


class RentInvoiceRequest(RequestBody):
    household_id: UUID
    invoice_id: Identifier
    billing_period: BillingPeriod
    amount_won: AmountWon
    due_at: DueAt
    occurred_at: OccurredAt | None = None


class RentPaymentRequest(RequestBody):
    payment_id: Identifier
    household_id: UUID
    invoice_id: Identifier
    billing_period: BillingPeriod
    amount_won: AmountWon
    hold_seconds: int | None = Field(
        default=None, ge=limits.hold_seconds_min, le=limits.hold_seconds_max,
        description="How long billing has to settle or release the hold; default 3 days.")
    resident_id: UUID | None = Field(
        default=None, description="Only for a coordinator paying on a resident's behalf.")


class FundSpendRequest(RequestBody):
    spend_id: Identifier
    purpose: FundPurpose
    amount_won: AmountWon
    decision_ref: Text = Field(description="The residents' or manager's decision, e.g. minutes.")


# Write responses -------------------------------------------------------------------------

class Written(ResponseBody):
    position: Position


class ComplexRegistered(Written):
    complex_id: UUID


class HouseholdRegistered(Written):
    household_id: UUID


class ResidentEnrolled(Written):
    resident_id: UUID


class ResidentMovedOut(Written):
    resident_id: UUID
    remaining_won: int = Field(description="Points left in the wallet, kept as unclaimed.")
    owed_won: int


class MerchantRegistered(Written):
    merchant_id: UUID


class MerchantPaidOut(Written):
    merchant_id: UUID
    payout_id: str
    amount_won: int


class AccrualPolicySet(Written):
    version: int


class TradeRecorded(Written):
    trade_id: str
    policy_version: int
    personal_accrued_won: int
    common_accrued_won: int
    points_used_won: int


class TradeRefunded(Written):
    trade_id: str
    points_returned_won: int
    personal_clawback_won: int
    common_clawback_won: int


class RentInvoiceIssued(Written):
    household_id: UUID
    invoice_id: str


class RentPaymentChanged(Written):
    payment_id: str
    status: RentStatus
    amount_won: int
    deadline_at: datetime | None = None


class FundSpent(Written):
    complex_id: UUID
    spend_id: str
    amount_won: int
    balance_won: int


# Read responses --------------------------------------------------------------------------

class WalletView(ResponseBody):
    """The whole wallet: for its resident and for auditors."""

    view: Literal["owner"] = "owner"
    resident_id: UUID
    household_id: UUID
    complex_id: UUID
    available_won: int
    held_won: int
    owed_won: int = Field(description="Points clawed back after a refund that could not be "
                                      "taken yet; repaid from future points.")
    accrued_total_won: int
    spent_total_won: int
    closed: bool
    enrolled_at: datetime
    position: int = Field(description="Log position of the last event that changed it.")


class WalletStaffView(ResponseBody):
    """What a coordinator or manager of the resident's complex sees."""

    view: Literal["staff"] = "staff"
    resident_id: UUID
    household_id: UUID
    complex_id: UUID
    available_won: int
    held_won: int
    closed: bool
    position: int


class WalletEntry(ResponseBody):
    position: int
    occurred_at: datetime
    recorded_at: datetime
    kind: str = Field(examples=["points_accrued", "points_held", "hold_settled"])
    amount_won: int = Field(description="Change of the available points.")
    held_delta_won: int
    owed_delta_won: int
    trade_id: str | None = None
    market: str | None = None
    policy_version: int | None = None
    rate_bps: int | None = None
    payment_id: str | None = None
    invoice_id: str | None = None
    actor_id: UUID | None = None
    actor_role: str
    on_behalf_of: UUID | None = None
    request_id: str | None = None
    description: str


class WalletEntriesPage(ResponseBody):
    entries: list[WalletEntry]
    next_cursor: int | None = Field(description="Pass as `cursor` for the next (older) page; "
                                                "null on the last page.")


class RentPaymentView(ResponseBody):
    payment_id: str
    household_id: UUID
    invoice_id: str
    billing_period: str
    resident_id: UUID
    complex_id: UUID
    amount_won: int
    status: RentStatus
    deadline_at: datetime
    held_at: datetime
    resolved_at: datetime | None = None
    actor_role: str
    on_behalf_of: UUID | None = None
    resolved_by_role: str | None = None


class RentInvoiceView(ResponseBody):
    invoice_id: str
    billing_period: str
    amount_won: int
    due_at: datetime
    issued_at: datetime
    held_won: int
    settled_won: int
    open_won: int
    payments: list[RentPaymentView]


class HouseholdRentView(ResponseBody):
    household_id: UUID
    invoices: list[RentInvoiceView]


class FundInflow(ResponseBody):
    month: str
    market: str
    accruals_count: int
    accrued_won: int
    recovered_won: int
    clawbacks_count: int
    clawed_back_won: int
    net_won: int


class FundOutflow(ResponseBody):
    purpose: str
    decision_ref: str
    spends_count: int
    spent_won: int
    last_spent_at: datetime | None = None


class FundView(ResponseBody):
    complex_id: UUID
    code: str
    name: str
    region: str
    balance_won: int
    owed_won: int
    accrued_total_won: int
    clawed_back_total_won: int
    spent_total_won: int
    position: int
    inflows: list[FundInflow]
    outflows: list[FundOutflow]


class MerchantSettlementView(ResponseBody):
    merchant_id: UUID
    kind: str
    name: str
    sales_count: int
    sales_amount_won: int
    points_received_won: int
    refunds_count: int
    refunded_amount_won: int
    balance_won: int
    owed_won: int
    paid_out_won: int
    payouts_count: int
    last_paid_out_at: datetime | None = None
    position: int


class MarketSums(ResponseBody):
    trades_count: int
    amount_won: int
    points_used_won: int
    personal_accrued_won: int
    common_accrued_won: int
    refunds_count: int
    refunded_amount_won: int
    personal_clawback_won: int
    common_clawback_won: int
    net_accrued_won: int


class MarketBucket(MarketSums):
    bucket: str


class MarketStatsView(ResponseBody):
    from_date: date
    to_date: date
    complex_id: UUID | None
    market: Market | None
    totals: MarketSums
    by_week: list[MarketBucket]
    by_month: list[MarketBucket]
    by_market: list[MarketBucket]
    by_category: list[MarketBucket]
    by_seller_kind: list[MarketBucket]
    by_complex: list[MarketBucket]


class Health(ResponseBody):
    status: Literal["ok"]


class StoppedFollowerView(ResponseBody):
    name: str = Field(description="The follower of the event log that stopped.")
    position: int = Field(description="The log position of the event it keeps failing on "
                                      "(the error is in the service's log).")


class Readiness(ResponseBody):
    status: Literal["ready", "not_ready"]
    database: Literal["ok", "unavailable"]
    stopped_followers: list[StoppedFollowerView] = Field(
        description="Followers of the event log (projections, relay, audit chain) stopped "
                    "at an event that keeps failing; their data is stale until fixed.")


class PolicyRateView(ResponseBody):
    market: str
    seller_kind: str
    category: str = Field(description="`*`: every category not named in its own row.")
    personal_bps: int
    common_bps: int


class AccrualPolicyView(ResponseBody):
    version: int = Field(description="The version trades use now.")
    rates: list[PolicyRateView]
    rounding: str = Field(description="How each share is computed, in won.")
