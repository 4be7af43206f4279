"""A trade: a completed sale on a market, with the accrual it earned, and its refund."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger import errors
from ledger.errors import DomainError
from ledger.events import Cause, LedgerAggregate


def trade_aggregate_id(trade_id: str) -> UUID:
    """Trades are known by the platform's trade id; the aggregate id follows from it."""
    return uuid5(NAMESPACE_URL, f"ledger:trade:{trade_id}")


class Trade(LedgerAggregate):
    if TYPE_CHECKING:  # state, declared for type checkers only: the library
        # would otherwise take annotations as constructor arguments.
        trade_id: str
        market: str
        category: str
        seller_id: UUID
        seller_kind: str
        buyer_id: UUID
        amount_won: int
        points_used_won: int
        personal_won: int
        common_won: int
        buyer_complex_id: UUID
        refunded: bool
        available_at: datetime | None
        policy_version: int

    available_at = None
    """When the accrual's return window ends (None: trades stored before windows, whose
    accruals were available at once). A class attribute, for trades stored before it."""
    policy_version = 0

    class Recorded(LedgerAggregate.Created):
        """The sale, and every input an auditor needs to recompute its accrual."""

        trade_id: str
        market: str
        category: str
        seller_id: UUID
        seller_kind: str
        buyer_id: UUID
        buyer_household_id: UUID
        amount_won: int
        points_used_won: int
        policy_version: int
        personal_bps: int
        common_bps: int
        accrual_base_won: int
        personal_won: int
        common_won: int
        available_at: datetime | None = None
        """When the return window ends; the shares are pending until then (None in trades
        stored before return windows, and when the window is 0 days)."""

        def apply(self, trade: Trade) -> None:
            trade.available_at = self.available_at
            trade.policy_version = self.policy_version
            trade.trade_id = self.trade_id
            trade.market = self.market
            trade.category = self.category
            trade.seller_id = self.seller_id
            trade.seller_kind = self.seller_kind
            trade.buyer_id = self.buyer_id
            trade.amount_won = self.amount_won
            trade.points_used_won = self.points_used_won
            trade.personal_won = self.personal_won
            trade.common_won = self.common_won
            assert self.complex_id is not None
            trade.buyer_complex_id = self.complex_id
            trade.refunded = False

    @classmethod
    def record(cls, trade_id: str, buyer_household_id: UUID, buyer_complex_id: UUID,
               cause: Cause, **sale: object) -> Trade:
        """The sale as recorded: `sale` holds the rest of `Recorded`'s fields."""
        return cls._create(cls.Recorded, id=trade_aggregate_id(trade_id), trade_id=trade_id,
                           buyer_household_id=buyer_household_id, **sale,
                           **cause.fields(buyer_complex_id))

    class Refunded(LedgerAggregate.Event):
        trade_id: str
        amount_won: int
        points_returned_won: int
        personal_clawback_won: int
        common_clawback_won: int
        personal_cancelled_won: int = 0
        """Pending personal share cancelled (refund inside the return window)."""
        common_cancelled_won: int = 0

        def apply(self, trade: Trade) -> None:
            trade.refunded = True

    def check_refundable(self) -> None:
        if self.refunded:
            raise DomainError(errors.trade_already_refunded, self.trade_id)

    def refund(self, cause: Cause, personal_cancelled_won: int = 0,
               common_cancelled_won: int = 0) -> None:
        self.check_refundable()
        self.trigger_event(self.Refunded, trade_id=self.trade_id, amount_won=self.amount_won,
                           points_returned_won=self.points_used_won,
                           personal_clawback_won=self.personal_won - personal_cancelled_won,
                           common_clawback_won=self.common_won - common_cancelled_won,
                           personal_cancelled_won=personal_cancelled_won,
                           common_cancelled_won=common_cancelled_won,
                           **cause.fields(self.buyer_complex_id))
