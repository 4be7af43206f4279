"""A resident and their personal wallet (개인 포인트).

Available points can be spent or held for rent; held points are reserved until
billing settles or releases the hold. Owed points are what a refund could not
take back; later credits pay them back first (see ledger.owed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from ledger import errors
from ledger.complex import kst_month
from ledger.errors import DomainError
from ledger.events import (
    RENT_CLEARING,
    TRADE_CLEARING,
    UNCLAIMED,
    Cause,
    LedgerAggregate,
    Posting,
    account,
)
from ledger.owed import (
    OwedAccount,
    accrual_postings,
    clawback_postings,
    credit_postings,
    returned_payment_postings,
)


def order_hold_key(order_id: str) -> str:
    """Where a group-buy order's hold sits in a wallet's `holds` (beside rent payments')."""
    return f"group-buy-order:{order_id}"


class Resident(OwedAccount, LedgerAggregate):
    if TYPE_CHECKING:  # state, declared for type checkers only: the library
        # would otherwise take annotations as constructor arguments.
        household_id: UUID
        home_complex_id: UUID
        consent_ref: str
        available_won: int
        held_won: int
        owed_won: int
        accrued_total_won: int
        spent_total_won: int
        holds: dict[str, int]
        closed: bool
        sharing_accrued_won_by_month: dict[str, int]

    balance_name = "available_won"  # what OwedAccount credits and claws back

    class Enrolled(LedgerAggregate.Created):
        household_id: UUID
        consent_ref: str

        def apply(self, wallet: Resident) -> None:
            assert self.complex_id is not None
            wallet.household_id = self.household_id
            wallet.home_complex_id = self.complex_id
            wallet.consent_ref = self.consent_ref
            wallet.available_won = 0
            wallet.held_won = 0
            wallet.owed_won = 0
            wallet.accrued_total_won = 0
            wallet.spent_total_won = 0
            wallet.holds = {}
            wallet.closed = False
            wallet.sharing_accrued_won_by_month = {}

    @classmethod
    def enrol(cls, resident_id: UUID, household_id: UUID, complex_id: UUID, consent_ref: str,
              cause: Cause) -> Resident:
        if not consent_ref or len(consent_ref) > 200:
            raise DomainError(errors.invalid_field, "consent_ref")
        return cls._create(cls.Enrolled, id=resident_id, household_id=household_id,
                           consent_ref=consent_ref, **cause.fields(complex_id))

    def check_open(self) -> None:
        if self.closed:
            raise DomainError(errors.wallet_closed, str(self.id))

    def check_can_spend(self, amount_won: int) -> None:
        self.check_open()
        if amount_won > self.available_won:
            raise DomainError(errors.insufficient_points,
                              f"available {self.available_won}, asked {amount_won}")

    # Credits -----------------------------------------------------------------------------

    def _trigger_credit(self, event_class: type[LedgerAggregate.Event], amount_won: int,
                        cause: Cause, **fields: object) -> None:
        """Record a credit (what pays back owed points first: see OwedAccount)."""
        self.trigger_event(event_class, **self.credit_fields(amount_won),
                           **fields, **cause.fields(self.home_complex_id))
        self.check_not_negative()

    class PointsAccrued(LedgerAggregate.Event):
        trade_id: str
        market: str
        seller_kind: str
        policy_version: int
        personal_bps: int
        accrual_base_won: int
        amount_won: int
        recovered_won: int

        def apply(self, wallet: Resident) -> None:
            wallet.apply_credit(self.amount_won, self.recovered_won)
            wallet.accrued_total_won += self.amount_won
            if self.market == "sharing":  # what the sharing accrual guard reads
                month = kst_month(self.occurred_at)
                # A snapshot taken before the guard existed has no such attribute.
                by_month = getattr(wallet, "sharing_accrued_won_by_month", {})
                wallet.sharing_accrued_won_by_month = {
                    **by_month, month: by_month.get(month, 0) + self.amount_won}

        def postings(self) -> list[Posting]:
            return accrual_postings(account("wallet", self.originator_id), self.amount_won,
                                    self.recovered_won)

    def accrue(self, trade_id: str, market: str, seller_kind: str, policy_version: int,
               personal_bps: int, base_won: int, amount_won: int, cause: Cause) -> None:
        assert not self.closed
        self._trigger_credit(self.PointsAccrued, amount_won, cause, trade_id=trade_id,
                             market=market, seller_kind=seller_kind,
                             policy_version=policy_version, personal_bps=personal_bps,
                             accrual_base_won=base_won)

    def sharing_accrued_won(self, month: str) -> int:
        """Personal points accrued from the sharing market in a KST month ('YYYY-MM')."""
        by_month: dict[str, int] = getattr(self, "sharing_accrued_won_by_month", {})
        return by_month.get(month, 0)

    def check_sharing_accrual(self, month: str, amount_won: int, cap_won: int | None,
                              trade_id: str) -> None:
        """The sharing accrual guard (ledger.guards): a trade whose accrual would pass the
        month's cap is refused whole."""
        if cap_won is None or amount_won == 0:
            return
        accrued_won = self.sharing_accrued_won(month)
        if accrued_won + amount_won > cap_won:
            raise DomainError(errors.sharing_accrual_cap_reached,
                              f"{trade_id}: {accrued_won} of {cap_won} accrued in {month}")

    class PointsReceived(LedgerAggregate.Event):
        """As a seller: a buyer paid with points."""

        trade_id: str
        buyer_id: UUID
        amount_won: int
        recovered_won: int

        def apply(self, wallet: Resident) -> None:
            wallet.apply_credit(self.amount_won, self.recovered_won)

        def postings(self) -> list[Posting]:
            return credit_postings(account("wallet", self.originator_id), TRADE_CLEARING,
                                   self.amount_won, self.recovered_won)

    def receive(self, trade_id: str, buyer_id: UUID, amount_won: int, cause: Cause) -> None:
        assert not self.closed
        self._trigger_credit(self.PointsReceived, amount_won, cause, trade_id=trade_id,
                             buyer_id=buyer_id)

    class PointsRefunded(LedgerAggregate.Event):
        """As a buyer: the points used on a refunded trade come back."""

        trade_id: str
        amount_won: int
        recovered_won: int

        def apply(self, wallet: Resident) -> None:
            wallet.apply_credit(self.amount_won, self.recovered_won)
            wallet.spent_total_won -= self.amount_won

        def postings(self) -> list[Posting]:
            return credit_postings(account("wallet", self.originator_id), TRADE_CLEARING,
                                   self.amount_won, self.recovered_won)

    def refund_points(self, trade_id: str, amount_won: int, cause: Cause) -> None:
        self._trigger_credit(self.PointsRefunded, amount_won, cause, trade_id=trade_id)

    # Debits ------------------------------------------------------------------------------

    class PointsSpent(LedgerAggregate.Event):
        """As a buyer: points used to pay for a trade."""

        trade_id: str
        seller_id: UUID
        amount_won: int

        def apply(self, wallet: Resident) -> None:
            wallet.available_won -= self.amount_won
            wallet.spent_total_won += self.amount_won

        def postings(self) -> list[Posting]:
            return [(account("wallet", self.originator_id), -self.amount_won),
                    (TRADE_CLEARING, self.amount_won)]

    def spend(self, trade_id: str, seller_id: UUID, amount_won: int, cause: Cause) -> None:
        self.check_can_spend(amount_won)
        # After this point, the debit must succeed.
        self.trigger_event(self.PointsSpent, trade_id=trade_id, seller_id=seller_id,
                           amount_won=amount_won, **cause.fields(self.home_complex_id))
        assert self.available_won >= 0

    class AccrualClawedBack(LedgerAggregate.Event):
        trade_id: str
        amount_won: int
        taken_won: int
        owed_won: int

        def apply(self, wallet: Resident) -> None:
            wallet.apply_clawback(self.taken_won, self.owed_won)
            wallet.accrued_total_won -= self.amount_won

        def postings(self) -> list[Posting]:
            return clawback_postings(account("wallet", self.originator_id), self.taken_won)

    def claw_back(self, trade_id: str, amount_won: int, cause: Cause) -> None:
        # What cannot be taken is owed (OwedAccount): the clawback always succeeds.
        self.trigger_event(self.AccrualClawedBack, trade_id=trade_id,
                           **self.clawback_fields(amount_won),
                           **cause.fields(self.home_complex_id))
        self.check_not_negative()

    class PaymentReturned(LedgerAggregate.Event):
        """As a seller: points received for a refunded trade go back to the buyer.

        What the seller no longer has is fronted by the issuance account and owed.
        """

        trade_id: str
        amount_won: int
        taken_won: int
        owed_won: int

        def apply(self, wallet: Resident) -> None:
            wallet.apply_clawback(self.taken_won, self.owed_won)

        def postings(self) -> list[Posting]:
            return returned_payment_postings(account("wallet", self.originator_id),
                                             self.amount_won, self.taken_won, self.owed_won)

    def return_payment(self, trade_id: str, amount_won: int, cause: Cause) -> None:
        self.trigger_event(self.PaymentReturned, trade_id=trade_id,
                           **self.clawback_fields(amount_won),
                           **cause.fields(self.home_complex_id))
        self.check_not_negative()

    # Rent holds --------------------------------------------------------------------------

    class PointsHeld(LedgerAggregate.Event):
        payment_id: str
        household_id: UUID
        invoice_id: str
        amount_won: int

        def apply(self, wallet: Resident) -> None:
            wallet.available_won -= self.amount_won
            wallet.held_won += self.amount_won
            wallet.holds[self.payment_id] = self.amount_won

        def postings(self) -> list[Posting]:
            return [(account("wallet", self.originator_id), -self.amount_won),
                    (account("held", self.originator_id), self.amount_won)]

    def hold(self, payment_id: str, household_id: UUID, invoice_id: str, amount_won: int,
             cause: Cause) -> None:
        self.check_can_spend(amount_won)
        # After this point, the hold must succeed.
        self.trigger_event(self.PointsHeld, payment_id=payment_id, household_id=household_id,
                           invoice_id=invoice_id, amount_won=amount_won,
                           **cause.fields(self.home_complex_id))
        assert self.available_won >= 0 and self.held_won >= 0

    class HoldSettled(LedgerAggregate.Event):
        payment_id: str
        amount_won: int

        def apply(self, wallet: Resident) -> None:
            wallet.held_won -= self.amount_won
            wallet.spent_total_won += self.amount_won
            del wallet.holds[self.payment_id]

        def postings(self) -> list[Posting]:
            return [(account("held", self.originator_id), -self.amount_won),
                    (RENT_CLEARING, self.amount_won)]

    def settle_hold(self, payment_id: str, cause: Cause) -> None:
        amount_won = self.holds[payment_id]
        self.trigger_event(self.HoldSettled, payment_id=payment_id, amount_won=amount_won,
                           **cause.fields(self.home_complex_id))
        assert self.held_won >= 0

    class HoldReleased(LedgerAggregate.Event):
        payment_id: str
        amount_won: int
        reason: str

        def apply(self, wallet: Resident) -> None:
            wallet.held_won -= self.amount_won
            wallet.available_won += self.amount_won
            del wallet.holds[self.payment_id]

        def postings(self) -> list[Posting]:
            return [(account("held", self.originator_id), -self.amount_won),
                    (account("wallet", self.originator_id), self.amount_won)]

    def release_hold(self, payment_id: str, reason: str, cause: Cause) -> None:
        amount_won = self.holds[payment_id]
        self.trigger_event(self.HoldReleased, payment_id=payment_id, amount_won=amount_won,
                           reason=reason, **cause.fields(self.home_complex_id))
        assert self.held_won >= 0

    # Group-buy order holds -----------------------------------------------------------------
    # An order's points are held like a rent hold, under the key `order_hold_key(order_id)`
    # in the same `holds` (so held_won is rent holds plus open orders, and an open order,
    # even one paid wholly in money, keeps the wallet from closing). When the group buy
    # completes the hold pays the order's trade; when it is cancelled, or the order is, the
    # hold is released.

    class OrderPointsHeld(LedgerAggregate.Event):
        group_buy_id: str
        order_id: str
        amount_won: int

        def apply(self, wallet: Resident) -> None:
            wallet.available_won -= self.amount_won
            wallet.held_won += self.amount_won
            wallet.holds[order_hold_key(self.order_id)] = self.amount_won

        def postings(self) -> list[Posting]:
            return [(account("wallet", self.originator_id), -self.amount_won),
                    (account("held", self.originator_id), self.amount_won)]

    def check_can_hold_order(self, order_id: str, amount_won: int) -> None:
        self.check_can_spend(amount_won)
        if order_hold_key(order_id) in self.holds:
            raise DomainError(errors.order_exists, order_id)

    def hold_for_order(self, group_buy_id: str, order_id: str, amount_won: int,
                       cause: Cause) -> None:
        self.check_can_hold_order(order_id, amount_won)
        # After this point, the hold must succeed.
        self.trigger_event(self.OrderPointsHeld, group_buy_id=group_buy_id, order_id=order_id,
                           amount_won=amount_won, **cause.fields(self.home_complex_id))
        assert self.available_won >= 0 and self.held_won >= 0

    class OrderHoldReleased(LedgerAggregate.Event):
        """The order was cancelled, or its group buy was: the points are available again."""

        group_buy_id: str
        order_id: str
        amount_won: int
        reason: str

        def apply(self, wallet: Resident) -> None:
            wallet.held_won -= self.amount_won
            wallet.available_won += self.amount_won
            del wallet.holds[order_hold_key(self.order_id)]

        def postings(self) -> list[Posting]:
            return [(account("held", self.originator_id), -self.amount_won),
                    (account("wallet", self.originator_id), self.amount_won)]

    def release_order_hold(self, group_buy_id: str, order_id: str, reason: str,
                           cause: Cause) -> None:
        amount_won = self.holds[order_hold_key(order_id)]
        self.trigger_event(self.OrderHoldReleased, group_buy_id=group_buy_id,
                           order_id=order_id, amount_won=amount_won, reason=reason,
                           **cause.fields(self.home_complex_id))
        assert self.held_won >= 0

    class OrderHoldSpent(LedgerAggregate.Event):
        """The group buy completed: the held points pay the order's trade."""

        group_buy_id: str
        order_id: str
        trade_id: str
        seller_id: UUID
        amount_won: int

        def apply(self, wallet: Resident) -> None:
            wallet.held_won -= self.amount_won
            wallet.spent_total_won += self.amount_won
            del wallet.holds[order_hold_key(self.order_id)]

        def postings(self) -> list[Posting]:
            return [(account("held", self.originator_id), -self.amount_won),
                    (TRADE_CLEARING, self.amount_won)]

    def check_order_hold(self, order_id: str, amount_won: int) -> None:
        """Whether the wallet holds what the order says. In committed state it always does;
        a wallet cached by a writer behind another's commits may not, and the rejection
        then makes the engine read it again (see ledger.engine)."""
        if self.holds.get(order_hold_key(order_id)) != amount_won:
            raise DomainError(errors.hold_already_released, f"order {order_id}")

    def spend_order_hold(self, group_buy_id: str, order_id: str, trade_id: str,
                         seller_id: UUID, cause: Cause) -> None:
        amount_won = self.holds[order_hold_key(order_id)]
        self.trigger_event(self.OrderHoldSpent, group_buy_id=group_buy_id, order_id=order_id,
                           trade_id=trade_id, seller_id=seller_id, amount_won=amount_won,
                           **cause.fields(self.home_complex_id))
        assert self.held_won >= 0

    # Moving out --------------------------------------------------------------------------

    class MovedOut(LedgerAggregate.Event):
        """The wallet closes; what remains is moved to the unclaimed account, on record."""

        remaining_won: int
        owed_won: int

        def apply(self, wallet: Resident) -> None:
            wallet.available_won -= self.remaining_won
            wallet.closed = True

        def postings(self) -> list[Posting]:
            return [(account("wallet", self.originator_id), -self.remaining_won),
                    (UNCLAIMED, self.remaining_won)]

    def move_out(self, cause: Cause) -> int:
        self.check_open()
        if self.holds:
            raise DomainError(errors.holds_pending, ", ".join(sorted(self.holds)))
        remaining_won = self.available_won
        self.trigger_event(self.MovedOut, remaining_won=remaining_won, owed_won=self.owed_won,
                           **cause.fields(self.home_complex_id))
        assert self.available_won == 0 and self.held_won == 0
        return remaining_won
