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

import re
import unicodedata
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal, get_args
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from ledger import limits
from ledger.complex import FUND_PURPOSES
from ledger.policy import MARKETS, MERCHANT_KINDS, SELLER_KINDS

# Patterns, written so that the server (pydantic's regex engine) and a client reading the
# OpenAPI document (ECMA-262 regular expressions) read them the same way: no `\d` or `\s`
# (Unicode-aware in one, ASCII in the other), escapes of code points only.


def _character_class(characters: Iterable[str]) -> str:
    """A regular-expression class body naming these characters, as `\\uXXXX` ranges."""
    points = sorted({ord(character) for character in characters})
    assert points and points[-1] <= 0xFFFF
    ranges: list[tuple[int, int]] = []
    for point in points:
        if ranges and ranges[-1][1] == point - 1:
            ranges[-1] = (ranges[-1][0], point)
        else:
            ranges.append((point, point))
    return "".join(f"\\u{first:04x}" if first == last else f"\\u{first:04x}-\\u{last:04x}"
                   for first, last in ranges)


def _number_range_pattern(low: int, high: int) -> str:
    """A regular expression (no anchors) matching the decimal numbers low..high, which
    are written with the same number of digits."""
    return _digits_between(str(low), str(high))


def _digits_between(low: str, high: str) -> str:
    assert len(low) == len(high) and low <= high
    rest = len(low) - 1
    if low == high:
        return low
    if set(low) == {"0"} and set(high) == {"9"}:
        return "[0-9]" + (f"{{{len(low)}}}" if len(low) > 1 else "")
    if rest == 0:
        return f"[{low}-{high}]"
    if low[0] == high[0]:
        return low[0] + _group(_digits_between(low[1:], high[1:]))
    parts = [low[0] + _group(_digits_between(low[1:], "9" * rest))]
    if int(low[0]) + 1 <= int(high[0]) - 1:
        first, last = int(low[0]) + 1, int(high[0]) - 1
        digit = str(first) if first == last else f"[{first}-{last}]"
        parts.append(digit + _digits_between("0" * rest, "9" * rest))
    parts.append(high[0] + _group(_digits_between("0" * rest, high[1:])))
    return "|".join(parts)


def _group(pattern: str) -> str:
    return f"(?:{pattern})" if "|" in pattern else pattern


CONTROL_CHARACTERS = "\\u0000-\\u001f\\u007f-\\u009f"
"""Unicode's control characters (Cc): PostgreSQL text cannot hold NUL, and nothing a
person types needs the others."""
# What str.strip() removes, which the ledger's text checks ignore (every such character
# is in the Basic Multilingual Plane).
WHITESPACE = _character_class(chr(point) for point in range(0x10000)
                              if chr(point).isspace() and unicodedata.category(chr(point)) != "Cc")
TEXT_PATTERN = (f"^[^{CONTROL_CHARACTERS}]*[^{CONTROL_CHARACTERS}{WHITESPACE}]"
                f"[^{CONTROL_CHARACTERS}]*$")
"""Some character that is not white space, and no control character."""
IDENTIFIER_PATTERN = r"^[\x21-\x7e]+$"
"""Printable ASCII without spaces: client-chosen ids and Idempotency-Key."""
YEAR = _number_range_pattern(limits.calendar_year_earliest, limits.calendar_year_latest)
MONTH_PATTERN = f"^(?:{YEAR})-(?:0[1-9]|1[0-2])$"
"""A calendar month YYYY-MM between the calendar limits."""
DAY_PATTERN = f"^(?:{YEAR})-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])$"
"""A calendar day YYYY-MM-DD between the calendar limits (the day must also exist)."""
DATE_TIME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})$")
"""RFC 3339 date-time, the JSON Schema `date-time` format, offset required."""
CALENDAR_YEARS = f"{limits.calendar_year_earliest}–{limits.calendar_year_latest}"


def _no_control_characters(value: str) -> str:
    for character in value:
        if unicodedata.category(character) in ("Cc", "Cs"):
            msg = "control characters are not allowed"
            raise ValueError(msg)
    return value


def _whole_number(value: Any) -> Any:
    """JSON has one kind of number: to JSON Schema, 1000.0 and 1e3 are the integer 1000,
    so they are taken as such. A fraction, a string or a boolean is not an integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _date_time_text(value: Any) -> Any:
    """Only an RFC 3339 string is a date-time (pydantic alone would also take numbers,
    as Unix times, and a few other spellings)."""
    if not isinstance(value, str) or DATE_TIME.match(value) is None:
        msg = "a date-time written as in RFC 3339, with its offset (2026-11-30T09:00:00+09:00)"
        raise ValueError(msg)
    return value


def _occurred_at_in_bounds(value: datetime) -> datetime:
    latest = datetime.now(UTC) + timedelta(seconds=limits.occurred_at_ahead_seconds_max)
    if not limits.occurred_at_earliest <= value <= latest:
        msg = (f"occurred_at must be from {limits.occurred_at_earliest.isoformat()} and at "
               f"most {limits.occurred_at_ahead_seconds_max} seconds ahead of the server's clock")
        raise ValueError(msg)
    return value


def _due_at_in_bounds(value: datetime) -> datetime:
    if not limits.due_at_earliest <= value < limits.due_at_latest:
        msg = (f"due_at must be from {limits.due_at_earliest.isoformat()} and before "
               f"{limits.due_at_latest.isoformat()}")
        raise ValueError(msg)
    return value


WHOLE_NUMBER = BeforeValidator(_whole_number)
"""With `strict` and the bounds in the Field before it: an integer as JSON Schema has it
(1000.0 is 1000; "1000", true and 1000.5 are not integers), and the document shows the
bounds as `minimum` and `maximum`."""

Text = Annotated[str, Field(
    min_length=1, max_length=limits.string_length_max, pattern=TEXT_PATTERN,
    description=f"1–{limits.string_length_max} characters, not only white space; no control "
                "characters or lone surrogates."), AfterValidator(_no_control_characters)]
Identifier = Annotated[str, Field(
    min_length=1, max_length=limits.identifier_length_max, pattern=IDENTIFIER_PATTERN,
    description=f"Client-chosen id: 1–{limits.identifier_length_max} printable ASCII "
                "characters, no spaces.")]
AmountWon = Annotated[int, Field(
    strict=True, ge=1, le=limits.amount_won_max,
    description=f"Whole won (1 point = 1 won), 1–{limits.amount_won_max:,}."), WHOLE_NUMBER]
AmountWonOrZero = Annotated[int, Field(strict=True, ge=0, le=limits.amount_won_max),
                            WHOLE_NUMBER]
Bps = Annotated[int, Field(
    strict=True, ge=0, le=limits.rate_bps_max,
    description=f"Basis points (100 = 1 %), 0–{limits.rate_bps_max:,}."), WHOLE_NUMBER]
PolicyVersion = Annotated[int, Field(
    strict=True, ge=1, le=limits.policy_version_max,
    description="Omitted: the current version."), WHOLE_NUMBER]
HoldSeconds = Annotated[int, Field(
    strict=True, ge=limits.hold_seconds_min, le=limits.hold_seconds_max,
    description="How long billing has to settle or release the hold, in seconds; default "
                f"{limits.hold_seconds_default}."), WHOLE_NUMBER]
BillingPeriod = Annotated[str, Field(
    pattern=MONTH_PATTERN, examples=["2026-11"],
    description=f"The month billed, YYYY-MM, in {CALENDAR_YEARS}.")]
OccurredAt = Annotated[AwareDatetime, BeforeValidator(_date_time_text),
                       AfterValidator(_occurred_at_in_bounds), Field(
    description="When it happened on the platform (e.g. the time of the sale), RFC 3339 "
                "with offset; default: when the request arrives. From "
                f"{limits.occurred_at_earliest.isoformat()} to at most "
                f"{limits.occurred_at_ahead_seconds_max} seconds ahead of the server's clock "
                "(a rule JSON Schema cannot state; else 422).")]
DueAt = Annotated[AwareDatetime, BeforeValidator(_date_time_text),
                  AfterValidator(_due_at_in_bounds), Field(
    description=f"RFC 3339 with offset, from {limits.due_at_earliest.isoformat()} and before "
                f"{limits.due_at_latest.isoformat()} (else 422).")]
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
                    "the platform. A resident enrolling themself must not send it (422 "
                    "`invalid_field`): their id is the token's subject. An id already "
                    "enrolled is refused (409).")


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


class ReturnWindows(RequestBody):
    sharing: int | None = Field(default=None, ge=0, le=limits.return_window_days_max)
    shopping: int | None = Field(default=None, ge=0, le=limits.return_window_days_max)


LapseDestination = Literal["fund", "issuance", "unclaimed"]


class LifecycleSettings(RequestBody):
    """A policy version's points lifecycle; an omitted setting takes its default
    (docs/api.md: shopping 7 days, sharing 0, expiry 24 months, both destinations `fund`)."""

    return_window_days: ReturnWindows | None = Field(default=None, description=(
        "Days a trade's points stay pending, per market."))
    expiry_months: int | None = Field(default=None, ge=1, le=limits.expiry_months_max,
                                      description="Months from availability to a lot's expiry.")
    expired_to: LapseDestination | None = Field(default=None, description=(
        "Where expired personal points go: the complex's common fund, issuance or unclaimed."))
    moved_out_to: LapseDestination | None = Field(default=None, description=(
        "Where a moved-out resident's remaining points go."))


class GuardSettings(RequestBody):
    """Wash-trade guards of the version (docs/ledger.md); an omitted setting gets its default."""

    same_household_trades: Literal["refused", "allowed"] = Field(
        default="refused" if limits.guard_same_household_refused_default else "allowed",
        description="Trades between residents of one household: refused with 409 "
                    "`same_household_trade`, or allowed.")
    sharing_accrual_won_per_month_max: Annotated[
        int, Field(strict=True, ge=0, le=limits.amount_won_max), WHOLE_NUMBER] | None = Field(
        default=limits.guard_sharing_accrual_won_per_month_default,
        description="Personal points one resident may accrue from the sharing market per KST "
                    "month; a trade that would pass it is refused whole with 409 "
                    "`sharing_accrual_cap_reached`. null: no cap.")
    pair_trades_per_month_max: Annotated[
        int, Field(strict=True, ge=0, le=limits.guard_pair_trades_per_month_max),
        WHOLE_NUMBER] | None = Field(
        default=limits.guard_pair_trades_per_month_default,
        description="Trades between the same two residents per KST month, both directions "
                    "counted together; the next is refused with 409 `pair_trade_cap_reached`. "
                    "null: no cap.")


class AccrualPolicyRequest(RequestBody):
    rates: list[RateRow] = Field(
        min_length=1, max_length=limits.policy_rates_count_max,
        description=f"1–{limits.policy_rates_count_max} rows, each (market, seller_kind, "
                    "category) at most once, an omitted category counting as `*` (a rule "
                    "JSON Schema cannot state; else 422 `invalid_field`).")
    lifecycle: LifecycleSettings | None = Field(default=None, description=(
        "Points lifecycle settings of this version; omitted: the defaults."))
    guards: GuardSettings | None = Field(
        default=None, description="Omitted: every guard at its default.")


class TradeRequest(RequestBody):
    trade_id: Identifier
    market: Market
    category: Text
    seller_id: UUID = Field(description=(
        "A registered seller of `seller_kind` (else 422 `seller_kind_mismatch`); a resident "
        "seller is not the buyer (else 422 `seller_is_buyer`)."))
    seller_kind: SellerKind
    buyer_id: UUID
    amount_won: AmountWon
    points_used_won: AmountWonOrZero = Field(default=0, description=(
        "Points the buyer paid with, at most `amount_won` (else 422 `points_exceed_amount`)."))
    policy_version: PolicyVersion | None = None
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
    hold_seconds: HoldSeconds | None = None
    resident_id: UUID | None = Field(
        default=None, description="Required from a coordinator, who pays on this resident's "
                                  "behalf; not allowed from a resident, who pays as the "
                                  "token's subject (else 422 `invalid_field`).")


class FundSpendRequest(RequestBody):
    spend_id: Identifier
    purpose: FundPurpose
    amount_won: AmountWon
    proposal_id: Identifier | None = Field(default=None, description=(
        "The approved proposal of this complex the spend carries out, for its purpose and "
        "within what it has left. Omitted: a small spend within the complex's monthly "
        "allowance (else 409 `allowance_exceeded`)."))
    decision_ref: Text | None = Field(default=None, description=(
        "A free-text reference (minutes, an invoice number), kept with the spend. Optional "
        "since spends cite proposals."))


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
    remaining_won: int = Field(description="Points left in the wallet, moved lot by lot to "
                                           "`moved_to`.")
    owed_won: int
    moved_to: LapseDestination = "unclaimed"
    pending_cancelled_won: int = Field(default=0, description=(
        "Pending points (return windows still open) cancelled at the move-out."))


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
    pending_until: datetime | None = Field(default=None, description=(
        "When the accrued points become available (the return window's end); null: at once."))


class TradeRefunded(Written):
    trade_id: str
    points_returned_won: int
    personal_clawback_won: int
    common_clawback_won: int
    personal_cancelled_won: int = Field(default=0, description=(
        "Pending personal points cancelled: a refund inside the return window."))
    common_cancelled_won: int = 0


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
    proposal_id: str | None = None


# Read responses --------------------------------------------------------------------------

class ExpiringPoints(ResponseBody):
    expires_at: datetime
    amount_won: int


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
    pending_won: int = Field(default=0, description=(
        "Accrued points not yet spendable: their trades' return windows are open."))
    next_available_at: datetime | None = Field(default=None, description=(
        "When the next pending points become available."))
    expiring_soon_won: int = Field(default=0, description=(
        f"Points that expire within {limits.expiring_soon_days} days."))
    expiring_soon: list[ExpiringPoints] = Field(default_factory=list, description=(
        "What expires when, earliest first."))


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


class FundSpendView(ResponseBody):
    spend_id: str
    purpose: str
    amount_won: int
    decision_ref: str
    proposal_id: str | None = Field(description="The approved proposal the spend cites; null "
                                                "for a spend within the monthly allowance.")
    spent_at: datetime
    position: int


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
    pending_won: int = Field(default=0, description=(
        "Common points accrued by trades whose return windows are open: not spendable yet."))
    inflows: list[FundInflow]
    outflows: list[FundOutflow]
    spends: list[FundSpendView] = Field(default_factory=list, description=(
        f"The latest {limits.page_size_max} spends, newest first, each with its proposal."))


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


class GuardsView(ResponseBody):
    same_household_trades: Literal["refused", "allowed"]
    sharing_accrual_won_per_month_max: int | None = Field(description="null: no cap.")
    pair_trades_per_month_max: int | None = Field(description="null: no cap.")


class AccrualPolicyView(ResponseBody):
    version: int = Field(description="The version trades use now.")
    rates: list[PolicyRateView]
    rounding: str = Field(description="How each share is computed, in won.")
    lifecycle: dict[str, Any] = Field(default_factory=dict, description=(
        "The version's points lifecycle: return_window_days per market, expiry_months, "
        "expired_to, moved_out_to."))
    guards: GuardsView = Field(description="The wash-trade guards of this version.")
