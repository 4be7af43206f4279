"""A complex (단지) and its common fund (공용포인트)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger import errors, limits
from ledger.errors import DomainError
from ledger.events import FUND_SPENDING, Cause, LedgerAggregate, Posting, account
from ledger.owed import OwedAccount, accrual_postings, clawback_postings

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

    class FundSpent(LedgerAggregate.Event):
        spend_id: str
        purpose: str
        amount_won: int
        decision_ref: str

        def apply(self, fund: Complex) -> None:
            fund.balance_won -= self.amount_won
            fund.spent_total_won += self.amount_won
            fund.spend_ids.add(self.spend_id)

        def postings(self) -> list[Posting]:
            return [(account("fund", self.originator_id), -self.amount_won),
                    (FUND_SPENDING, self.amount_won)]

    def check_spend(self, spend_id: str, purpose: str, amount_won: int,
                    decision_ref: str) -> None:
        if purpose not in FUND_PURPOSES:
            raise DomainError(errors.invalid_purpose, purpose)
        if not decision_ref or len(decision_ref) > limits.string_length_max:
            raise DomainError(errors.invalid_field, "decision_ref")
        if spend_id in self.spend_ids:
            raise DomainError(errors.spend_exists, spend_id)
        if amount_won > self.balance_won:
            raise DomainError(errors.insufficient_fund,
                              f"fund holds {self.balance_won}, spend asks {amount_won}")

    def spend(self, spend_id: str, purpose: str, amount_won: int, decision_ref: str,
              cause: Cause) -> None:
        self.check_spend(spend_id, purpose, amount_won, decision_ref)
        # After this point, the debit must succeed.
        self.trigger_event(self.FundSpent, spend_id=spend_id, purpose=purpose,
                           amount_won=amount_won, decision_ref=decision_ref,
                           **cause.fields(self.id))
        assert self.balance_won >= 0
