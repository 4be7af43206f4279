"""A complex (단지) and its common fund (공용포인트)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger import errors, limits
from ledger.errors import DomainError
from ledger.events import FUND_SPENDING, ISSUANCE, Cause, LedgerAggregate, Posting, account
from ledger.owed import split_clawback, split_credit

FUND_PURPOSES = ("facility", "event", "upkeep")


def complex_id_for(code: str) -> UUID:
    """Complexes are known by their code; the id follows from it."""
    return uuid5(NAMESPACE_URL, f"ledger:complex:{code}")


class Complex(LedgerAggregate):
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
            fund.owed_won -= self.recovered_won
            fund.balance_won += self.amount_won - self.recovered_won
            fund.accrued_total_won += self.amount_won

        def postings(self) -> list[Posting]:
            kept_won = self.amount_won - self.recovered_won
            return [(ISSUANCE, -kept_won), (account("fund", self.originator_id), kept_won)]

    def accrue(self, trade_id: str, market: str, seller_kind: str, policy_version: int,
               common_bps: int, base_won: int, amount_won: int, cause: Cause) -> None:
        assert amount_won > 0
        recovered_won, _ = split_credit(amount_won, self.owed_won)
        self.trigger_event(
            self.CommonPointsAccrued, trade_id=trade_id, market=market, seller_kind=seller_kind,
            policy_version=policy_version, common_bps=common_bps, accrual_base_won=base_won,
            amount_won=amount_won, recovered_won=recovered_won, **cause.fields(self.id))
        assert self.balance_won >= 0 and self.owed_won >= 0

    class CommonPointsClawedBack(LedgerAggregate.Event):
        trade_id: str
        amount_won: int
        taken_won: int
        owed_won: int

        def apply(self, fund: Complex) -> None:
            fund.balance_won -= self.taken_won
            fund.owed_won += self.owed_won

        def postings(self) -> list[Posting]:
            return [(account("fund", self.originator_id), -self.taken_won),
                    (ISSUANCE, self.taken_won)]

    def claw_back(self, trade_id: str, amount_won: int, cause: Cause) -> None:
        assert amount_won > 0
        taken_won, owed_won = split_clawback(amount_won, self.balance_won)
        # After this point, the clawback must succeed (what cannot be taken is owed).
        self.trigger_event(self.CommonPointsClawedBack, trade_id=trade_id, amount_won=amount_won,
                           taken_won=taken_won, owed_won=owed_won, **cause.fields(self.id))
        assert self.balance_won >= 0

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
