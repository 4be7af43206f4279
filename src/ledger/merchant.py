"""A merchant: a small firm, social enterprise, local food producer or public body that
sells on the platform, with a settlement account the operator pays out in cash."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from ledger import errors
from ledger.errors import DomainError
from ledger.events import PAYOUTS, TRADE_CLEARING, Cause, LedgerAggregate, Posting, account
from ledger.owed import OwedAccount, credit_postings, returned_payment_postings


class Merchant(OwedAccount, LedgerAggregate):
    if TYPE_CHECKING:  # state, declared for type checkers only: the library
        # would otherwise take annotations as constructor arguments.
        kind: str
        name: str
        balance_won: int
        owed_won: int
        paid_out_total_won: int
        payout_ids: set[str]

    balance_name = "balance_won"  # what OwedAccount credits and claws back

    class Registered(LedgerAggregate.Created):
        kind: str
        name: str

        def apply(self, merchant: Merchant) -> None:
            merchant.kind = self.kind
            merchant.name = self.name
            merchant.balance_won = 0
            merchant.owed_won = 0
            merchant.paid_out_total_won = 0
            merchant.payout_ids = set()

    class SettlementCredited(LedgerAggregate.Event):
        trade_id: str
        buyer_id: UUID
        amount_won: int
        recovered_won: int

        def apply(self, merchant: Merchant) -> None:
            merchant.apply_credit(self.amount_won, self.recovered_won)

        def postings(self) -> list[Posting]:
            return credit_postings(account("merchant", self.originator_id), TRADE_CLEARING,
                                   self.amount_won, self.recovered_won)

    def receive(self, trade_id: str, buyer_id: UUID, amount_won: int, cause: Cause) -> None:
        self.trigger_event(self.SettlementCredited, trade_id=trade_id, buyer_id=buyer_id,
                           **self.credit_fields(amount_won), **cause.fields(None))
        self.check_not_negative()

    class SettlementReturned(LedgerAggregate.Event):
        """A refunded trade's points go back to the buyer; a shortfall is owed."""

        trade_id: str
        amount_won: int
        taken_won: int
        owed_won: int

        def apply(self, merchant: Merchant) -> None:
            merchant.apply_clawback(self.taken_won, self.owed_won)

        def postings(self) -> list[Posting]:
            return returned_payment_postings(account("merchant", self.originator_id),
                                             self.amount_won, self.taken_won, self.owed_won)

    def return_payment(self, trade_id: str, amount_won: int, cause: Cause) -> None:
        self.trigger_event(self.SettlementReturned, trade_id=trade_id,
                           **self.clawback_fields(amount_won), **cause.fields(None))
        self.check_not_negative()

    class PaidOut(LedgerAggregate.Event):
        payout_id: str
        amount_won: int

        def apply(self, merchant: Merchant) -> None:
            merchant.balance_won -= self.amount_won
            merchant.paid_out_total_won += self.amount_won
            merchant.payout_ids.add(self.payout_id)

        def postings(self) -> list[Posting]:
            return [(account("merchant", self.originator_id), -self.amount_won),
                    (PAYOUTS, self.amount_won)]

    def pay_out(self, payout_id: str, cause: Cause) -> int:
        """Empty the settlement account into a recorded cash payout."""
        if payout_id in self.payout_ids:
            raise DomainError(errors.payout_exists, payout_id)
        if self.balance_won == 0:
            raise DomainError(errors.nothing_to_pay_out, str(self.id))
        amount_won = self.balance_won
        # After this point, the payout must succeed.
        self.trigger_event(self.PaidOut, payout_id=payout_id, amount_won=amount_won,
                           **cause.fields(None))
        assert self.balance_won == 0
        return amount_won
