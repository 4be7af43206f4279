"""A proposal (안건): a manager's request to spend common points, decided by the households.

A complex manager opens a proposal for a purpose and an amount, with a voting window,
a quorum (a share of the complex's registered households) and an approval threshold (a
share of the ballots cast). Each household casts at most one ballot, yes or no, while
the window is open: the proposal holds the set of households that voted, so two ballots
of one household race on the proposal's version and the second is refused
(`already_voted`). When the window has closed, the proposal is decided by the rule it
was opened with, and the decision records the tally it was made from:

    quorum met  <=>  ballots * 10,000 >= quorum_bps * registered households
    approved    <=>  quorum met and yes * 10,000 > approval_bps * ballots

An approved proposal is what a fund spend cites; the spends citing one proposal never
add up to more than its amount (`SpendCited`, saved with the `Complex.FundSpent`).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger import errors, limits
from ledger.complex import FUND_PURPOSES
from ledger.errors import DomainError
from ledger.events import Cause, LedgerAggregate

OPEN = "open"
APPROVED = "approved"
REJECTED = "rejected"
CHOICES = ("yes", "no")
CLOSED_BY_SWEEPER = "window_closed"
CLOSED_BY_MANAGER = "closed_by_manager"


def proposal_aggregate_id(proposal_id: str) -> UUID:
    """Proposals are named by the client's id, unique across complexes."""
    return uuid5(NAMESPACE_URL, f"ledger:proposal:{proposal_id}")


def decide(households_count: int, ballots_count: int, yes_count: int, quorum_bps: int,
           approval_bps: int) -> str:
    """The decision rule, written once (the auditor recomputes it with this function)."""
    quorum_met = ballots_count * limits.rate_bps_max >= quorum_bps * households_count
    approved = quorum_met and yes_count * limits.rate_bps_max > approval_bps * ballots_count
    return APPROVED if approved else REJECTED


class Proposal(LedgerAggregate):
    if TYPE_CHECKING:  # state, declared for type checkers only: the library
        # would otherwise take annotations as constructor arguments.
        proposal_id: str
        home_complex_id: UUID
        purpose: str
        title: str
        amount_won: int
        voting_opens_at: datetime
        voting_closes_at: datetime
        quorum_bps: int
        approval_bps: int
        state: str
        ballots: dict[str, str]
        yes_count: int
        no_count: int
        households_count: int
        spent_won: int

    class Opened(LedgerAggregate.Created):
        proposal_id: str
        purpose: str
        title: str
        amount_won: int
        voting_opens_at: datetime
        voting_closes_at: datetime
        quorum_bps: int
        approval_bps: int

        def apply(self, proposal: Proposal) -> None:
            assert self.complex_id is not None
            proposal.proposal_id = self.proposal_id
            proposal.home_complex_id = self.complex_id
            proposal.purpose = self.purpose
            proposal.title = self.title
            proposal.amount_won = self.amount_won
            proposal.voting_opens_at = self.voting_opens_at
            proposal.voting_closes_at = self.voting_closes_at
            proposal.quorum_bps = self.quorum_bps
            proposal.approval_bps = self.approval_bps
            proposal.state = OPEN
            proposal.ballots = {}
            proposal.yes_count = 0
            proposal.no_count = 0
            proposal.households_count = 0
            proposal.spent_won = 0

    @classmethod
    def open(cls, proposal_id: str, complex_id: UUID, purpose: str, title: str,
             amount_won: int, voting_opens_at: datetime | None, voting_closes_at: datetime,
             quorum_bps: int | None, approval_bps: int | None, cause: Cause) -> Proposal:
        if purpose not in FUND_PURPOSES:
            raise DomainError(errors.invalid_purpose, purpose)
        quorum_bps = limits.quorum_bps_default if quorum_bps is None else quorum_bps
        approval_bps = limits.approval_bps_default if approval_bps is None else approval_bps
        if type(quorum_bps) is not int or not 0 <= quorum_bps <= limits.rate_bps_max:
            raise DomainError(errors.invalid_field, f"quorum_bps: 0 to {limits.rate_bps_max}")
        if type(approval_bps) is not int or not 0 <= approval_bps <= limits.approval_bps_max:
            raise DomainError(errors.invalid_field,
                              f"approval_bps: 0 to {limits.approval_bps_max}")
        now = cause.occurred_at
        opens_at = voting_opens_at or now
        window_seconds = (voting_closes_at - opens_at).total_seconds()
        if (voting_closes_at <= now
                or not limits.voting_window_seconds_min <= window_seconds
                <= limits.voting_window_seconds_max
                or (opens_at - now).total_seconds() > limits.voting_opens_within_seconds_max):
            raise DomainError(errors.invalid_voting_window,
                              f"{opens_at.isoformat()} to {voting_closes_at.isoformat()}")
        return cls._create(cls.Opened, id=proposal_aggregate_id(proposal_id),
                           proposal_id=proposal_id, purpose=purpose, title=title,
                           amount_won=amount_won, voting_opens_at=opens_at,
                           voting_closes_at=voting_closes_at, quorum_bps=quorum_bps,
                           approval_bps=approval_bps, **cause.fields(complex_id))

    # Ballots -----------------------------------------------------------------------------

    class BallotCast(LedgerAggregate.Event):
        """One household's ballot. Who voted how is for auditors only: never published."""

        household_id: UUID
        choice: str
        consent_ref: str

        def apply(self, proposal: Proposal) -> None:
            proposal.ballots[self.household_id.hex] = self.choice
            if self.choice == "yes":
                proposal.yes_count += 1
            else:
                proposal.no_count += 1

    def check_ballot(self, resident_complex_id: UUID, household_id: UUID, choice: str,
                     now: datetime) -> None:
        if choice not in CHOICES:
            raise DomainError(errors.invalid_field, "choice: yes or no")
        if resident_complex_id != self.home_complex_id:
            raise DomainError(errors.resident_not_in_complex, self.proposal_id)
        if self.state != OPEN or now >= self.voting_closes_at:
            raise DomainError(errors.voting_closed, self.proposal_id)
        if now < self.voting_opens_at:
            raise DomainError(errors.voting_not_open, self.proposal_id)
        if household_id.hex in self.ballots:
            raise DomainError(errors.already_voted, self.proposal_id)

    def cast_ballot(self, resident_complex_id: UUID, household_id: UUID, choice: str,
                    consent_ref: str, cause: Cause) -> None:
        self.check_ballot(resident_complex_id, household_id, choice, cause.occurred_at)
        ballots_before = len(self.ballots)
        self.trigger_event(self.BallotCast, household_id=household_id, choice=choice,
                           consent_ref=consent_ref, **cause.fields(self.home_complex_id))
        assert len(self.ballots) == ballots_before + 1 == self.yes_count + self.no_count

    # Deciding ----------------------------------------------------------------------------

    class Decided(LedgerAggregate.Event):
        """The voting window closed and the proposal was decided by its recorded rule.

        The tally is recorded whole, so that anyone can recompute the outcome:
        approved <=> ballots * 10,000 >= quorum_bps * households and
        yes * 10,000 > approval_bps * ballots. `households_count` is the complex's
        registered households when the proposal was decided.
        """

        outcome: str
        households_count: int
        ballots_count: int
        yes_count: int
        no_count: int
        quorum_bps: int
        approval_bps: int
        amount_won: int
        purpose: str
        reason: str

        def apply(self, proposal: Proposal) -> None:
            proposal.state = self.outcome
            proposal.households_count = self.households_count

    def close(self, households_count: int, reason: str, now: datetime, cause: Cause) -> str:
        assert reason in (CLOSED_BY_SWEEPER, CLOSED_BY_MANAGER)
        assert households_count >= 0
        if self.state != OPEN:
            raise DomainError(errors.proposal_decided, self.proposal_id)
        if now < self.voting_closes_at:
            raise DomainError(errors.voting_not_over, self.proposal_id)
        ballots_count = self.yes_count + self.no_count
        outcome = decide(households_count, ballots_count, self.yes_count, self.quorum_bps,
                         self.approval_bps)
        self.trigger_event(self.Decided, outcome=outcome, households_count=households_count,
                           ballots_count=ballots_count, yes_count=self.yes_count,
                           no_count=self.no_count, quorum_bps=self.quorum_bps,
                           approval_bps=self.approval_bps, amount_won=self.amount_won,
                           purpose=self.purpose, reason=reason,
                           **cause.fields(self.home_complex_id))
        return outcome

    # Spends citing the proposal ------------------------------------------------------------

    class SpendCited(LedgerAggregate.Event):
        """A fund spend cited this approved proposal (saved with its Complex.FundSpent)."""

        spend_id: str
        amount_won: int

        def apply(self, proposal: Proposal) -> None:
            proposal.spent_won += self.amount_won

    def check_spend(self, complex_id: UUID, purpose: str, amount_won: int) -> None:
        if complex_id != self.home_complex_id:
            raise DomainError(errors.unknown_proposal, self.proposal_id)
        if self.state != APPROVED:
            raise DomainError(errors.proposal_not_approved, f"{self.proposal_id}: {self.state}")
        if purpose != self.purpose:
            raise DomainError(errors.proposal_purpose_mismatch,
                              f"proposal for {self.purpose}, spend for {purpose}")
        if self.spent_won + amount_won > self.amount_won:
            raise DomainError(
                errors.proposal_amount_exceeded,
                f"approved {self.amount_won}, spent {self.spent_won}, asked {amount_won}")

    def cite_spend(self, spend_id: str, amount_won: int, cause: Cause) -> None:
        """Record a spend already checked by `check_spend` (called by Complex.spend)."""
        self.trigger_event(self.SpendCited, spend_id=spend_id, amount_won=amount_won,
                           **cause.fields(self.home_complex_id))
        assert 0 <= self.spent_won <= self.amount_won
