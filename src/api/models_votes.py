"""Request and response bodies of resident votes on common-fund spending (routes_votes)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field

from api.models import (
    TEXT_PATTERN,
    WHOLE_NUMBER,
    AmountWon,
    AmountWonOrZero,
    Bps,
    FundPurpose,
    Identifier,
    RequestBody,
    ResponseBody,
    Text,
    Written,
    _date_time_text,
    _no_control_characters,
)
from ledger import limits

Choice = Literal["yes", "no"]
ProposalState = Literal["open", "approved", "rejected"]

Title = Annotated[str, Field(
    min_length=1, max_length=limits.title_length_max, pattern=TEXT_PATTERN,
    description=f"1–{limits.title_length_max} characters: what the points would pay for, "
                "with no personal data."), AfterValidator(_no_control_characters)]
VotingTime = Annotated[AwareDatetime, BeforeValidator(_date_time_text)]
ApprovalBps = Annotated[int, Field(
    strict=True, ge=0, le=limits.approval_bps_max,
    description="Approved if yes ballots are more than this share of the ballots cast, "
                f"in basis points, 0–{limits.approval_bps_max:,}; default "
                f"{limits.approval_bps_default} (a simple majority)."), WHOLE_NUMBER]


class ProposalRequest(RequestBody):
    proposal_id: Identifier
    purpose: FundPurpose
    title: Title
    amount_won: AmountWon
    voting_closes_at: VotingTime = Field(description=(
        "RFC 3339 with offset; after now and after `voting_opens_at`, the window "
        f"{limits.voting_window_seconds_min}–{limits.voting_window_seconds_max} seconds long "
        "(else 422 `invalid_voting_window`)."))
    voting_opens_at: VotingTime | None = Field(default=None, description=(
        "Default: now. At most "
        f"{limits.voting_opens_within_seconds_max} seconds ahead."))
    quorum_bps: Bps | None = Field(default=None, description=(
        "Decided only if ballots came from at least this share of the complex's registered "
        f"households, in basis points; default {limits.quorum_bps_default}."))
    approval_bps: ApprovalBps | None = None


class ProposalOpened(Written):
    proposal_id: str
    complex_id: UUID
    state: ProposalState
    voting_opens_at: datetime
    voting_closes_at: datetime
    quorum_bps: int
    approval_bps: int


class BallotRequest(RequestBody):
    choice: Choice
    resident_id: UUID | None = Field(default=None, description=(
        "Required from a coordinator, who votes for this resident's household; not allowed "
        "from a resident, who votes as the token's subject (else 422 `invalid_field`)."))
    consent_ref: Text | None = Field(default=None, description=(
        "Required from a coordinator: the reference of the resident's consent to this vote."))


class BallotCast(Written):
    proposal_id: str
    household_id: UUID
    choice: Choice


class ProposalDecided(Written):
    proposal_id: str
    state: ProposalState
    households_count: int
    ballots_count: int
    yes_count: int
    no_count: int


class ProposalTally(ResponseBody):
    proposal_id: str
    complex_id: UUID
    purpose: str
    title: str
    amount_won: int
    voting_opens_at: datetime
    voting_closes_at: datetime
    quorum_bps: int
    approval_bps: int
    state: ProposalState
    households_count: int = Field(description=(
        "Registered households of the complex: now while open, at the decision once decided."))
    ballots_count: int
    yes_count: int
    no_count: int
    spent_won: int = Field(description="What fund spends citing the proposal took.")
    unspent_won: int
    opened_at: datetime
    decided_at: datetime | None = None
    position: int


class ProposalView(ProposalTally):
    """The tally, as managers, coordinators, the operator and auditors see it."""

    view: Literal["tally"] = "tally"


class ProposalResidentView(ProposalTally):
    """The tally and the caller's own household's ballot (null: not voted yet)."""

    view: Literal["resident"] = "resident"
    household_choice: Choice | None = None


class ProposalsPage(ResponseBody):
    complex_id: UUID
    proposals: list[ProposalView]


class BallotView(ResponseBody):
    household_id: UUID
    choice: Choice
    actor_id: UUID
    actor_role: str
    on_behalf_of: UUID | None = None
    consent_ref: str
    cast_at: datetime
    position: int


class ProposalBallotsView(ResponseBody):
    """Who voted how: for auditors only."""

    proposal_id: str
    ballots: list[BallotView]


class AllowanceRequest(RequestBody):
    allowance_won: AmountWonOrZero = Field(description=(
        "What the fund may spend per KST month without citing an approved proposal; default "
        f"{limits.fund_allowance_won_default:,} until set."))


class AllowanceSet(Written):
    complex_id: UUID
    allowance_won: int
