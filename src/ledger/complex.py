"""A complex (단지) and its common fund (공용포인트)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger import errors, limits
from ledger.errors import DomainError
from ledger.events import (
    FUND_SPENDING,
    ISSUANCE,
    KST,
    LAPSE_CLEARING,
    Cause,
    LedgerAggregate,
    Posting,
    account,
)
from ledger.owed import OwedAccount, accrual_postings, clawback_postings, credit_postings

if TYPE_CHECKING:
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
        pending: dict[str, list[Any]]
        pending_won: int
        lapsed_total_won: int

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

    # State added with points lifecycles (class attributes, as above).
    pending = {}  # noqa: RUF012  (replaced on write, never mutated)
    """Pending common shares: trade id -> [available_at, amount_won]."""
    pending_won = 0
    lapsed_total_won = 0
    """Personal points that came to the fund by expiry or move-out."""

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
        pending_until: datetime | None = None
        """Set when the trade's return window is open (see Resident.PointsAccrued)."""

        def apply(self, fund: Complex) -> None:
            fund.accrued_total_won += self.amount_won
            if self.pending_until is not None:
                fund.pending = {**fund.pending,
                                self.trade_id: [self.pending_until, self.amount_won]}
                fund.pending_won += self.amount_won
                return
            fund.apply_credit(self.amount_won, self.recovered_won)

        def postings(self) -> list[Posting]:
            if self.pending_until is not None:
                return [(ISSUANCE, -self.amount_won),
                        (account("pending", self.originator_id), self.amount_won)]
            return accrual_postings(account("fund", self.originator_id), self.amount_won,
                                    self.recovered_won)

    def accrue(self, trade_id: str, market: str, seller_kind: str, policy_version: int,
               common_bps: int, base_won: int, amount_won: int, cause: Cause,
               pending_until: datetime | None = None) -> None:
        fields = ({"amount_won": amount_won, "recovered_won": 0} if pending_until is not None
                  else self.credit_fields(amount_won))
        self.trigger_event(
            self.CommonPointsAccrued, trade_id=trade_id, market=market, seller_kind=seller_kind,
            policy_version=policy_version, common_bps=common_bps, accrual_base_won=base_won,
            pending_until=pending_until, **fields, **cause.fields(self.id))
        self.check_not_negative()

    class PendingCommonPointsReleased(LedgerAggregate.Event):
        """A trade's return window ended: its pending common share is in the fund."""

        trade_id: str
        amount_won: int
        recovered_won: int

        def apply(self, fund: Complex) -> None:
            fund.pending = {key: value for key, value in fund.pending.items()
                            if key != self.trade_id}
            fund.pending_won -= self.amount_won
            fund.apply_credit(self.amount_won, self.recovered_won)

        def postings(self) -> list[Posting]:
            return [(account("pending", self.originator_id), -self.amount_won),
                    (ISSUANCE, self.recovered_won),
                    (account("fund", self.originator_id), self.amount_won - self.recovered_won)]

    def pending_until(self, trade_id: str) -> datetime | None:
        found = self.pending.get(trade_id)
        return None if found is None else found[0]

    def release_pending(self, trade_id: str, cause: Cause) -> None:
        amount_won = self.pending[trade_id][1]
        self.trigger_event(self.PendingCommonPointsReleased, trade_id=trade_id,
                           **self.credit_fields(amount_won), **cause.fields(self.id))
        self.check_not_negative()

    class PendingCommonPointsCancelled(LedgerAggregate.Event):
        """The trade was refunded inside its return window: its pending common share is
        cancelled. Nothing is clawed back, nothing owed."""

        trade_id: str
        amount_won: int

        def apply(self, fund: Complex) -> None:
            fund.pending = {key: value for key, value in fund.pending.items()
                            if key != self.trade_id}
            fund.pending_won -= self.amount_won
            fund.accrued_total_won -= self.amount_won

        def postings(self) -> list[Posting]:
            return [(account("pending", self.originator_id), -self.amount_won),
                    (ISSUANCE, self.amount_won)]

    def cancel_pending(self, trade_id: str, cause: Cause) -> None:
        amount_won = self.pending[trade_id][1]
        self.trigger_event(self.PendingCommonPointsCancelled, trade_id=trade_id,
                           amount_won=amount_won, **cause.fields(self.id))
        assert self.pending_won >= 0

    class LapsedPointsReceived(LedgerAggregate.Event):
        """A resident's personal points came to the fund: lots that expired (`reason`
        "expired") or remained at move-out ("moved_out"). Like any credit, it first pays
        back what the fund owes."""

        resident_id: UUID
        reason: str
        amount_won: int
        recovered_won: int

        def apply(self, fund: Complex) -> None:
            fund.apply_credit(self.amount_won, self.recovered_won)
            fund.lapsed_total_won += self.amount_won

        def postings(self) -> list[Posting]:
            return credit_postings(account("fund", self.originator_id), LAPSE_CLEARING,
                                   self.amount_won, self.recovered_won)

    def receive_lapsed(self, resident_id: UUID, reason: str, amount_won: int,
                       cause: Cause) -> None:
        assert reason in ("expired", "moved_out")
        self.trigger_event(self.LapsedPointsReceived, resident_id=resident_id, reason=reason,
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
