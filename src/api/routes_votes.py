"""Resident votes that gate common-fund spending: proposals, ballots, decisions, and the
operator's monthly allowance for small spends without a vote.

Who sees what: the tally (households, ballots, yes, no) is for the complex's residents,
coordinators and manager, the operator and auditors; a resident also sees their own
household's ballot; who voted how is for auditors only. A proposal of a complex the
caller does not belong to answers exactly as a missing one (404 `unknown_proposal`).
"""

from __future__ import annotations

from typing import Annotated, Any, cast
from uuid import UUID

from fastapi import APIRouter, Depends, Path
from pydantic import Field

import projections
from api.auth import Principal, Role
from api.models_votes import (
    AllowanceRequest,
    AllowanceSet,
    BallotCast,
    BallotRequest,
    BallotView,
    Choice,
    ProposalBallotsView,
    ProposalDecided,
    ProposalOpened,
    ProposalRequest,
    ProposalResidentView,
    ProposalsPage,
    ProposalView,
)
from api.problems import problem_responses
from api.routes_common import IDEMPOTENCY_KEY_PATTERN, Read, Write, in_complex, reader, writer
from ledger import commands as c
from ledger import errors, limits
from ledger.application import Ledger
from ledger.errors import DomainError
from ledger.proposal import Proposal, proposal_aggregate_id
from ledger.resident import Resident

router = APIRouter(prefix="/v1")

WRITE_ERRORS = problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)
READ_ERRORS = problem_responses(401, 403, 404, 409, 413, 422, 503)

ProposalId = Annotated[str, Path(min_length=1, max_length=limits.identifier_length_max,
                                 pattern=IDEMPOTENCY_KEY_PATTERN)]
TALLY_READERS = (Role.RESIDENT, Role.COORDINATOR, Role.MANAGER, Role.OPERATOR, Role.AUDITOR)
ProposalAnyView = Annotated[ProposalView | ProposalResidentView, Field(discriminator="view")]


def _resident_complex(ledger: Ledger, resident_id: UUID) -> UUID | None:
    resident = ledger.snapshot(Resident, resident_id)
    return None if resident is None else resident.home_complex_id


def _may_see_complex(ledger: Ledger, principal: Principal, complex_id: UUID | str) -> bool:
    """Residents and staff see their own complex; the operator and auditors every one."""
    if principal.role == Role.RESIDENT:
        home = _resident_complex(ledger, principal.subject)
        return home is not None and str(home) == str(complex_id)
    if principal.role in (Role.COORDINATOR, Role.MANAGER):
        return in_complex(principal, complex_id)
    return principal.role in (Role.OPERATOR, Role.AUDITOR)


def _visible_proposal(ledger: Ledger, principal: Principal, proposal_id: str) -> Proposal:
    """The proposal as the write side has it, if this caller may see it; else 404."""
    proposal = ledger.snapshot(Proposal, proposal_aggregate_id(proposal_id))
    if proposal is None or not _may_see_complex(ledger, principal, proposal.home_complex_id):
        raise DomainError(errors.unknown_proposal, proposal_id)
    return proposal


# Writes ----------------------------------------------------------------------------------

@router.post("/complexes/{complex_id}/proposals", status_code=201,
             response_model=ProposalOpened, responses=WRITE_ERRORS, tags=["votes"],
             summary="Open a proposal to spend common points, for the households to vote on "
                     "(the complex's manager)")
def open_proposal(complex_id: Annotated[UUID, Path()], body: ProposalRequest,
                  write: Annotated[Write, Depends(writer(Role.MANAGER))]) -> ProposalOpened:
    if not in_complex(write.principal, complex_id):
        raise DomainError(errors.unknown_complex, str(complex_id))
    outcome = write.execute(c.OpenProposal(
        complex_id, body.proposal_id, body.purpose, body.title, body.amount_won,
        body.voting_closes_at, body.voting_opens_at, body.quorum_bps, body.approval_bps))
    return ProposalOpened(position=outcome.position, **outcome.result)


@router.post("/proposals/{proposal_id}/ballots", status_code=201, response_model=BallotCast,
             responses=WRITE_ERRORS, tags=["votes"],
             summary="Cast a household's one ballot, yes or no, while voting is open (a "
                     "resident of the complex, or a coordinator on their behalf)")
def cast_ballot(proposal_id: ProposalId, body: BallotRequest,
                write: Annotated[Write, Depends(writer(Role.RESIDENT, Role.COORDINATOR))]
                ) -> BallotCast:
    principal = write.principal
    ledger = write.services.ledger
    _visible_proposal(ledger, principal, proposal_id)
    on_behalf_of = None
    if principal.role == Role.RESIDENT:
        if body.resident_id is not None:
            raise DomainError(errors.invalid_field,
                              "resident_id: a resident votes as the token's subject")
        resident_id = principal.subject
    else:
        if body.resident_id is None or body.consent_ref is None:
            raise DomainError(errors.invalid_field, "resident_id and consent_ref: a "
                              "coordinator names the resident and their consent")
        resident_id = body.resident_id
        home = _resident_complex(ledger, resident_id)
        if home is None or not in_complex(principal, home):
            raise DomainError(errors.unknown_resident, str(resident_id))
        on_behalf_of = resident_id
    outcome = write.execute(c.CastBallot(proposal_id, resident_id, body.choice,
                                         body.consent_ref or ""), on_behalf_of=on_behalf_of)
    return BallotCast(position=outcome.position, **outcome.result)


@router.post("/proposals/{proposal_id}/close", response_model=ProposalDecided,
             responses=WRITE_ERRORS, tags=["votes"],
             summary="Decide a proposal whose voting window has closed, by its recorded rule "
                     "(the complex's manager; the service's sweeper does it otherwise)")
def close_proposal(proposal_id: ProposalId,
                   write: Annotated[Write, Depends(writer(Role.MANAGER))]) -> ProposalDecided:
    _visible_proposal(write.services.ledger, write.principal, proposal_id)
    outcome = write.execute(c.CloseProposal(proposal_id))
    return ProposalDecided(position=outcome.position, **outcome.result)


@router.post("/complexes/{complex_id}/fund/allowance", response_model=AllowanceSet,
             responses=WRITE_ERRORS, tags=["funds"],
             summary="Set what the fund may spend per KST month without a vote (the operator)")
def set_allowance(complex_id: Annotated[UUID, Path()], body: AllowanceRequest,
                  write: Annotated[Write, Depends(writer(Role.OPERATOR))]) -> AllowanceSet:
    outcome = write.execute(c.SetFundAllowance(complex_id, body.allowance_won))
    return AllowanceSet(position=outcome.position, **outcome.result)


# Reads -----------------------------------------------------------------------------------

def _tally_view(read: Read, row: dict[str, Any]) -> ProposalView | ProposalResidentView:
    fields = {name: row[name] for name in ProposalView.model_fields if name in row}
    if read.principal.role != Role.RESIDENT:
        return ProposalView(**fields)
    resident = read.services.ledger.snapshot(Resident, read.principal.subject)
    assert resident is not None  # seen by _may_see_complex
    with read.statement_connection() as conn:
        choice = projections.household_ballot(conn, row["proposal_id"], resident.household_id)
    return ProposalResidentView(**fields, household_choice=cast(Choice | None, choice))


@router.get("/proposals/{proposal_id}", response_model=ProposalAnyView,
            responses=READ_ERRORS, tags=["votes"],
            summary="A proposal and its tally (residents of its complex, with their "
                    "household's ballot; its coordinators and manager; the operator; "
                    "auditors)")
def get_proposal(proposal_id: ProposalId,
                 read: Annotated[Read, Depends(reader(*TALLY_READERS))]
                 ) -> ProposalView | ProposalResidentView:
    with read.statement_connection() as conn:
        row = projections.proposal(conn, proposal_id)
    ledger = read.services.ledger
    if row is None or not _may_see_complex(ledger, read.principal, row["complex_id"]):
        raise DomainError(errors.unknown_proposal, proposal_id)
    return _tally_view(read, row)


@router.get("/complexes/{complex_id}/proposals", response_model=ProposalsPage,
            responses=READ_ERRORS, tags=["votes"],
            summary=f"A complex's latest {limits.page_size_max} proposals with their tallies, "
                    "newest first (its residents, coordinators and manager; the operator; "
                    "auditors)")
def list_proposals(complex_id: Annotated[UUID, Path()],
                   read: Annotated[Read, Depends(reader(*TALLY_READERS))]) -> ProposalsPage:
    if not _may_see_complex(read.services.ledger, read.principal, complex_id):
        raise DomainError(errors.unknown_complex, str(complex_id))
    with read.statement_connection() as conn:
        rows = projections.complex_proposals(conn, complex_id)
    return ProposalsPage(complex_id=complex_id, proposals=[
        ProposalView(**{name: row[name] for name in ProposalView.model_fields if name in row})
        for row in rows])


@router.get("/proposals/{proposal_id}/ballots", response_model=ProposalBallotsView,
            responses=READ_ERRORS, tags=["votes"],
            summary="Who voted how on a proposal (auditors only)")
def get_ballots(proposal_id: ProposalId,
                read: Annotated[Read, Depends(reader(Role.AUDITOR))]) -> ProposalBallotsView:
    with read.connection() as conn:
        if projections.proposal(conn, proposal_id) is None:
            raise DomainError(errors.unknown_proposal, proposal_id)
        rows = projections.ballots(conn, proposal_id)
    return ProposalBallotsView(proposal_id=proposal_id,
                               ballots=[BallotView(**row) for row in rows])
