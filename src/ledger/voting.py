"""Command handlers for resident votes on common-fund spending (see ledger.proposal).

The rules live in the aggregates (`Proposal`, `Complex`); these handlers check the
commands' own fields, find the aggregates, and route. A spend citing a proposal is
handled by the application's `_spend_fund` (it changes the fund and the proposal in
one save).
"""

from __future__ import annotations

from ledger import commands as c
from ledger import errors, limits
from ledger.checks import check_amount, check_aware, check_identifier, check_text
from ledger.complex import Complex
from ledger.errors import DomainError
from ledger.events import Cause
from ledger.proposal import CLOSED_BY_MANAGER, CLOSED_BY_SWEEPER, Proposal, proposal_aggregate_id
from ledger.resident import Resident
from ledger.unit import Result, UnitOfWork


def find_proposal(proposal_id: str, unit: UnitOfWork) -> Proposal:
    check_identifier("proposal_id", proposal_id)
    return unit.get(Proposal, proposal_aggregate_id(proposal_id), errors.unknown_proposal)


def open_proposal(command: c.OpenProposal, cause: Cause, unit: UnitOfWork) -> Result:
    proposal_id = check_identifier("proposal_id", command.proposal_id)
    title = check_text("title", command.title, limits.title_length_max)
    amount_won = check_amount(command.amount_won)
    closes_at = check_aware("voting_closes_at", command.voting_closes_at)
    opens_at = (None if command.voting_opens_at is None
                else check_aware("voting_opens_at", command.voting_opens_at))
    fund = unit.get(Complex, command.complex_id, errors.unknown_complex)
    if unit.exists(proposal_aggregate_id(proposal_id)):
        raise DomainError(errors.proposal_exists, proposal_id)
    proposal = Proposal.open(proposal_id, fund.id, command.purpose, title, amount_won,
                             opens_at, closes_at, command.quorum_bps, command.approval_bps,
                             cause)
    unit.change(proposal)
    return ({"proposal_id": proposal_id, "complex_id": str(fund.id), "state": proposal.state,
             "voting_opens_at": proposal.voting_opens_at.isoformat(),
             "voting_closes_at": proposal.voting_closes_at.isoformat(),
             "quorum_bps": proposal.quorum_bps, "approval_bps": proposal.approval_bps},
            fund.id)


def cast_ballot(command: c.CastBallot, cause: Cause, unit: UnitOfWork) -> Result:
    proposal = find_proposal(command.proposal_id, unit)
    wallet = unit.get(Resident, command.resident_id, errors.unknown_resident)
    wallet.check_open()
    consent_ref = command.consent_ref or ""
    if cause.actor_id != wallet.id:  # a coordinator votes for the resident's household
        consent_ref = check_text("consent_ref", command.consent_ref)
        cause = Cause(cause.actor_id, cause.actor_role, cause.request_id, cause.occurred_at,
                      on_behalf_of=wallet.id)
    elif consent_ref:
        check_text("consent_ref", consent_ref)
    unit.change(proposal)
    proposal.cast_ballot(wallet.home_complex_id, wallet.household_id, command.choice,
                         consent_ref, cause)
    return ({"proposal_id": proposal.proposal_id, "household_id": str(wallet.household_id),
             "choice": command.choice}, proposal.home_complex_id)


def close_proposal(command: c.CloseProposal, cause: Cause, unit: UnitOfWork) -> Result:
    proposal = find_proposal(command.proposal_id, unit)
    now = cause.occurred_at if command.now is None else check_aware("now", command.now)
    fund = unit.get(Complex, proposal.home_complex_id, errors.unknown_complex)
    reason = CLOSED_BY_MANAGER if cause.actor_role == "manager" else CLOSED_BY_SWEEPER
    unit.change(proposal)
    outcome = proposal.close(fund.households_count, reason, now, cause)
    return ({"proposal_id": proposal.proposal_id, "state": outcome,
             "households_count": proposal.households_count,
             "ballots_count": proposal.yes_count + proposal.no_count,
             "yes_count": proposal.yes_count, "no_count": proposal.no_count},
            proposal.home_complex_id)


def set_fund_allowance(command: c.SetFundAllowance, cause: Cause, unit: UnitOfWork) -> Result:
    fund = unit.get(Complex, command.complex_id, errors.unknown_complex)
    unit.change(fund)
    fund.set_allowance(command.allowance_won, cause)
    return {"complex_id": str(fund.id), "allowance_won": command.allowance_won}, fund.id


def spend_fund(command: c.SpendFund, cause: Cause, unit: UnitOfWork) -> Result:
    """A fund spend, citing an approved proposal (changed in the same save) or not."""
    spend_id = check_identifier("spend_id", command.spend_id)
    amount_won = check_amount(command.amount_won)
    fund = unit.get(Complex, command.complex_id, errors.unknown_complex)
    proposal = None if command.proposal_id is None else find_proposal(command.proposal_id, unit)
    unit.change(fund)
    if proposal is not None:
        unit.change(proposal)
    fund.spend(spend_id, command.purpose, amount_won, command.decision_ref, proposal, cause)
    return ({"complex_id": str(fund.id), "spend_id": spend_id, "amount_won": amount_won,
             "balance_won": fund.balance_won, "proposal_id": command.proposal_id},
            fund.id)
