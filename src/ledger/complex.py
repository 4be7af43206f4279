"""A complex (단지) and its common fund (공용포인트)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger import errors, limits
from ledger.errors import DomainError
from ledger.events import FUND_SPENDING, KST, Cause, LedgerAggregate, Posting, account
from ledger.owed import OwedAccount, accrual_postings, clawback_postings

if TYPE_CHECKING:
    from datetime import datetime

    from ledger.proposal import Proposal

FUND_PURPOSES = ("facility", "event", "upkeep")


def complex_id_for(code: str) -> UUID:
    """Complexes are known by their code; the id follows from it."""
    return uuid5(NAMESPACE_URL, f"ledger:complex:{code}")


class Complex(OwedAccount, LedgerAggregate):
    if TYPE_CHECKING:  # state, declared for type checkers only: the library
        # would otherwise take annotations as constructor arguments.
        code: str
        name: str
        region: str
        balance_won: int
        owed_won: int
        accrued_total_won: int
        spent_total_won: int
        spend_ids: set[str]
        households_count: int
        allowance_won: int | None
        allowance_month: str
        allowance_spent_won: int

    # State added with resident votes. Class attributes, so that complexes registered,
    # and snapshots taken, before it read as "no households counted, default allowance".
    households_count = 0
    """Households registered in the complex (Household.Registered counted by HouseholdCounted)."""
    allowance_won = None
    """The operator's monthly allowance for spends without a proposal; None: the default."""
    allowance_month = ""
    """The KST month ('YYYY-MM') of the latest spend without a proposal."""
    allowance_spent_won = 0
    """What spends without a proposal took in `allowance_month`."""

    balance_name = "balance_won"  # what OwedAccount credits and claws back

    class Registered(LedgerAggregate.Created):
        code: str
        name: str
        region: str

        def apply(self, fund: Complex) -> None:
            fund.code = self.code
            fund.name = self.name
            fund.region = self.region
            fund.balance_won = 0
            fund.owed_won = 0
            fund.accrued_total_won = 0
            fund.spent_total_won = 0
            fund.spend_ids = set()

    @classmethod
    def register(cls, code: str, name: str, region: str, cause: Cause) -> Complex:
        complex_id = complex_id_for(code)
        return cls._create(cls.Registered, id=complex_id, code=code, name=name, region=region,
                           **cause.fields(complex_id))

    class CommonPointsAccrued(LedgerAggregate.Event):
        trade_id: str
        market: str
        seller_kind: str
        policy_version: int
        common_bps: int
        accrual_base_won: int
        amount_won: int
        recovered_won: int

        def apply(self, fund: Complex) -> None:
            fund.apply_credit(self.amount_won, self.recovered_won)
            fund.accrued_total_won += self.amount_won

        def postings(self) -> list[Posting]:
            return accrual_postings(account("fund", self.originator_id), self.amount_won,
                                    self.recovered_won)

    def accrue(self, trade_id: str, market: str, seller_kind: str, policy_version: int,
               common_bps: int, base_won: int, amount_won: int, cause: Cause) -> None:
        self.trigger_event(
            self.CommonPointsAccrued, trade_id=trade_id, market=market, seller_kind=seller_kind,
            policy_version=policy_version, common_bps=common_bps, accrual_base_won=base_won,
            **self.credit_fields(amount_won), **cause.fields(self.id))
        self.check_not_negative()

    class CommonPointsClawedBack(LedgerAggregate.Event):
        trade_id: str
        amount_won: int
        taken_won: int
        owed_won: int

        def apply(self, fund: Complex) -> None:
            fund.apply_clawback(self.taken_won, self.owed_won)

        def postings(self) -> list[Posting]:
            return clawback_postings(account("fund", self.originator_id), self.taken_won)

    def claw_back(self, trade_id: str, amount_won: int, cause: Cause) -> None:
        # What cannot be taken is owed (OwedAccount): the clawback always succeeds.
        self.trigger_event(self.CommonPointsClawedBack, trade_id=trade_id,
                           **self.clawback_fields(amount_won), **cause.fields(self.id))
        self.check_not_negative()

    class HouseholdCounted(LedgerAggregate.Event):
        """A household was registered in the complex (saved with its Household.Registered):
        the count that a proposal's quorum is reckoned against."""

        household_id: UUID

        def apply(self, fund: Complex) -> None:
            fund.households_count += 1

    def count_household(self, household_id: UUID, cause: Cause) -> None:
        households_before = self.households_count
        self.trigger_event(self.HouseholdCounted, household_id=household_id,
                           **cause.fields(self.id))
        assert self.households_count == households_before + 1

    class FundAllowanceSet(LedgerAggregate.Event):
        """The operator set what the fund may spend per KST month without a proposal."""

        allowance_won: int

        def apply(self, fund: Complex) -> None:
            fund.allowance_won = self.allowance_won

    def set_allowance(self, allowance_won: int, cause: Cause) -> None:
        if (type(allowance_won) is not int
                or not 0 <= allowance_won <= limits.amount_won_max):
            raise DomainError(errors.invalid_amount, f"allowance {allowance_won!r}")
        self.trigger_event(self.FundAllowanceSet, allowance_won=allowance_won,
                           **cause.fields(self.id))

    def allowance_left_won(self, moment: datetime) -> int:
        """What spends without a proposal may still take in `moment`'s KST month."""
        allowance_won = (limits.fund_allowance_won_default if self.allowance_won is None
                         else self.allowance_won)
        spent_won = self.allowance_spent_won if self.allowance_month == kst_month(moment) else 0
        return max(0, allowance_won - spent_won)

    class FundSpent(LedgerAggregate.Event):
        """Points left the fund. `proposal_id` names the approved proposal the spend cites;
        empty for a spend within the monthly allowance (and for spends recorded before
        proposals existed, which cited only `decision_ref`)."""

        spend_id: str
        purpose: str
        amount_won: int
        decision_ref: str
        proposal_id: str = ""

        def apply(self, fund: Complex) -> None:
            fund.balance_won -= self.amount_won
            fund.spent_total_won += self.amount_won
            fund.spend_ids.add(self.spend_id)
            if not self.proposal_id:
                month = kst_month(self.occurred_at)
                if fund.allowance_month != month:
                    fund.allowance_month = month
                    fund.allowance_spent_won = 0
                fund.allowance_spent_won += self.amount_won

        def postings(self) -> list[Posting]:
            return [(account("fund", self.originator_id), -self.amount_won),
                    (FUND_SPENDING, self.amount_won)]

    def check_spend(self, spend_id: str, purpose: str, amount_won: int, decision_ref: str,
                    proposal: Proposal | None, moment: datetime) -> None:
        """A spend cites an approved proposal of this complex, within what the proposal has
        left, or stays within this KST month's allowance; and the fund covers it."""
        if purpose not in FUND_PURPOSES:
            raise DomainError(errors.invalid_purpose, purpose)
        if not isinstance(decision_ref, str) or len(decision_ref) > limits.string_length_max:
            raise DomainError(errors.invalid_field, "decision_ref")
        if spend_id in self.spend_ids:
            raise DomainError(errors.spend_exists, spend_id)
        if proposal is not None:
            proposal.check_spend(self.id, purpose, amount_won)
        elif amount_won > self.allowance_left_won(moment):
            raise DomainError(
                errors.allowance_exceeded,
                f"{self.allowance_left_won(moment)} left this month, spend asks {amount_won}")
        if amount_won > self.balance_won:
            raise DomainError(errors.insufficient_fund,
                              f"fund holds {self.balance_won}, spend asks {amount_won}")

    def spend(self, spend_id: str, purpose: str, amount_won: int, decision_ref: str,
              proposal: Proposal | None, cause: Cause) -> None:
        self.check_spend(spend_id, purpose, amount_won, decision_ref, proposal,
                         cause.occurred_at)
        # After this point, the debit (and the proposal's share of it) must succeed.
        self.trigger_event(self.FundSpent, spend_id=spend_id, purpose=purpose,
                           amount_won=amount_won, decision_ref=decision_ref,
                           proposal_id="" if proposal is None else proposal.proposal_id,
                           **cause.fields(self.id))
        if proposal is not None:
            proposal.cite_spend(spend_id, amount_won, cause)
        assert self.balance_won >= 0


def kst_month(moment: datetime) -> str:
    """'YYYY-MM' of a moment in Korea Standard Time: allowances are per KST month."""
    return moment.astimezone(KST).strftime("%Y-%m")
