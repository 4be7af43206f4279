"""A resident and their personal wallet (개인 포인트).

Available points can be spent or held for rent; held points are reserved until
billing settles or releases the hold. Owed points are what a refund could not
take back; later credits pay them back first (see ledger.owed).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from ledger import errors
from ledger import lots as lot_book
from ledger.complex import kst_month
from ledger.errors import DomainError
from ledger.events import (
    ISSUANCE,
    LAPSE_CLEARING,
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

LEGACY_EXPIRY_MONTHS = 24
"""Lots of credits stored before lots existed expire this many months after the credit
was recorded (the default lifecycle's expiry; a constant, so replay never changes)."""
OPENING_LOT = "opening"
"""The one lot of a wallet loaded from a snapshot taken before lots existed."""


def lapse_account(destination: str) -> str:
    """Where expired or moved-out points of a wallet go (see policy.LAPSE_DESTINATIONS):
    to the fund through lapse clearing (the fund's own event credits it), or straight to
    issuance or unclaimed."""
    if destination == "fund":
        return LAPSE_CLEARING
    if destination == "issuance":
        return ISSUANCE
    assert destination == "unclaimed", destination
    return UNCLAIMED


def legacy_expiry(moment: datetime) -> datetime:
    return lot_book.add_months(moment, LEGACY_EXPIRY_MONTHS)


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
        lots: lot_book.Lots | None
        hold_lots: dict[str, lot_book.Taking]
        spent_lots: dict[str, lot_book.Taking]
        pending: dict[str, list[Any]]
        pending_won: int
        expired_total_won: int
        forfeited_pending: list[str]
        sharing_accrued_won_by_month: dict[str, int]

    # State added with points lifecycles. Class attributes, so that wallets snapshotted
    # before it load: `lots` None means "not yet known", and the first event applied
    # makes the wallet's available points one opening lot (see `lot_state`).
    lots = None
    """Open lots: lot id -> [expires_at, remaining_won]."""
    hold_lots = {}  # noqa: RUF012  (replaced in lot_state)
    """What each hold took from which lot (to give back when it is released)."""
    spent_lots = {}  # noqa: RUF012  (replaced in lot_state)
    """What each trade's spend took from which lot (to give back on a refund)."""
    pending = {}  # noqa: RUF012  (replaced in lot_state)
    """Pending personal shares: trade id -> [available_at, amount_won]."""
    pending_won = 0
    expired_total_won = 0
    forfeited_pending = []  # noqa: RUF012  (replaced, never mutated)
    """Trades whose pending personal share was cancelled at move-out."""

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
            wallet.lot_state()
            wallet.sharing_accrued_won_by_month = {}

    @classmethod
    def enrol(cls, resident_id: UUID, household_id: UUID, complex_id: UUID, consent_ref: str,
              cause: Cause) -> Resident:
        if not consent_ref or len(consent_ref) > 200:
            raise DomainError(errors.invalid_field, "consent_ref")
        return cls._create(cls.Enrolled, id=resident_id, household_id=household_id,
                           consent_ref=consent_ref, **cause.fields(complex_id))

    def lot_state(self) -> lot_book.Lots:
        """The wallet's lots, made its own on first use (see the class attributes)."""
        if self.lots is None:
            self.lots = {}
            if self.available_won:
                self.lots[OPENING_LOT] = [legacy_expiry(self.created_on), self.available_won]
            self.hold_lots = {}
            self.spent_lots = {}
            self.pending = {}
        return self.lots

    def held_taking(self, key: str, amount_won: int) -> lot_book.Taking:
        """What a hold took, to give back; a hold taken before lots (known only from an old
        snapshot) goes back to the opening lot."""
        self.lot_state()
        taking = self.hold_lots.pop(key, None)
        if taking is None:
            taking = [{"lot_id": OPENING_LOT, "expires_at": legacy_expiry(self.created_on),
                       "amount_won": amount_won}]
        return taking

    def hold_taking(self, key: str, amount_won: int) -> lot_book.Taking:
        """What a hold took (a copy, to record on its release)."""
        self.lot_state()
        taking = self.hold_lots.get(key)
        if taking is None:
            return [{"lot_id": OPENING_LOT, "expires_at": legacy_expiry(self.created_on),
                     "amount_won": amount_won}]
        return [dict(part) for part in taking]

    def take(self, recorded: lot_book.Taking | None, amount_won: int) -> lot_book.Taking:
        """Apply a debit of available points to the lots: as the event recorded it, or, for
        an event stored before lots, earliest-expiring first."""
        lots = self.lot_state()
        taking = (lot_book.take_earliest(lots, amount_won) if recorded is None
                  else [dict(part) for part in recorded])
        lot_book.remove(lots, taking)
        return taking

    def check_open(self) -> None:
        if self.closed:
            raise DomainError(errors.wallet_closed, str(self.id))

    def earliest(self, amount_won: int) -> lot_book.Taking:
        """The lots a debit of available points takes: earliest-expiring first."""
        return lot_book.take_earliest(self.lot_state(), amount_won)

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
        pending_until: datetime | None = None
        """Set when the trade's return window is open: the points are pending until then
        (PendingPointsReleased makes them available). None: available at once."""
        expires_at: datetime | None = None
        """The expiry of the lot of points available at once (None in events stored before
        lots: their lot expires LEGACY_EXPIRY_MONTHS after the event)."""

        def apply(self, wallet: Resident) -> None:
            lots = wallet.lot_state()
            wallet.accrued_total_won += self.amount_won
            if self.market == "sharing":  # what the sharing accrual guard reads
                month = kst_month(self.occurred_at)
                # A snapshot taken before the guard existed has no such attribute.
                by_month = getattr(wallet, "sharing_accrued_won_by_month", {})
                wallet.sharing_accrued_won_by_month = {
                    **by_month, month: by_month.get(month, 0) + self.amount_won}
            if self.pending_until is not None:
                wallet.pending[self.trade_id] = [self.pending_until, self.amount_won]
                wallet.pending_won += self.amount_won
                return
            wallet.apply_credit(self.amount_won, self.recovered_won)
            lot_book.add(lots, f"accrual:{self.trade_id}",
                         self.expires_at or legacy_expiry(self.occurred_at),
                         self.amount_won - self.recovered_won)

        def postings(self) -> list[Posting]:
            if self.pending_until is not None:
                return [(ISSUANCE, -self.amount_won),
                        (account("pending", self.originator_id), self.amount_won)]
            return accrual_postings(account("wallet", self.originator_id), self.amount_won,
                                    self.recovered_won)

    def accrue(self, trade_id: str, market: str, seller_kind: str, policy_version: int,
               personal_bps: int, base_won: int, amount_won: int, cause: Cause,
               pending_until: datetime | None, expires_at: datetime) -> None:
        """Accrue a trade's personal share: pending until `pending_until` when the trade's
        return window is open, else available at once as a lot expiring at `expires_at`."""
        assert not self.closed
        if pending_until is not None:
            assert trade_id not in self.pending
            self.trigger_event(self.PointsAccrued, trade_id=trade_id, market=market,
                               seller_kind=seller_kind, policy_version=policy_version,
                               personal_bps=personal_bps, accrual_base_won=base_won,
                               amount_won=amount_won, recovered_won=0,
                               pending_until=pending_until, expires_at=None,
                               **cause.fields(self.home_complex_id))
            assert self.pending_won >= 0
            return
        self._trigger_credit(self.PointsAccrued, amount_won, cause, trade_id=trade_id,
                             market=market, seller_kind=seller_kind,
                             policy_version=policy_version, personal_bps=personal_bps,
                             accrual_base_won=base_won, expires_at=expires_at)

    class PendingPointsReleased(LedgerAggregate.Event):
        """A trade's return window ended: its pending personal share is available, as a lot
        expiring `expires_at` (by `policy_version`'s expiry months)."""

        trade_id: str
        amount_won: int
        recovered_won: int
        policy_version: int
        expires_at: datetime

        def apply(self, wallet: Resident) -> None:
            lots = wallet.lot_state()
            del wallet.pending[self.trade_id]
            wallet.pending_won -= self.amount_won
            wallet.apply_credit(self.amount_won, self.recovered_won)
            lot_book.add(lots, f"accrual:{self.trade_id}", self.expires_at,
                         self.amount_won - self.recovered_won)

        def postings(self) -> list[Posting]:
            return [(account("pending", self.originator_id), -self.amount_won),
                    (ISSUANCE, self.recovered_won),
                    (account("wallet", self.originator_id),
                     self.amount_won - self.recovered_won)]

    def pending_until(self, trade_id: str) -> datetime | None:
        """When a trade's pending personal share becomes available; None if none pends."""
        self.lot_state()
        found = self.pending.get(trade_id)
        return None if found is None else found[0]

    def release_pending(self, trade_id: str, policy_version: int, expires_at: datetime,
                        cause: Cause) -> None:
        amount_won = self.pending[trade_id][1]
        self.trigger_event(self.PendingPointsReleased, trade_id=trade_id,
                           policy_version=policy_version, expires_at=expires_at,
                           **self.credit_fields(amount_won),
                           **cause.fields(self.home_complex_id))
        self.check_not_negative()
        assert self.pending_won >= 0

    class PendingPointsCancelled(LedgerAggregate.Event):
        """The trade was refunded inside its return window: its pending personal share is
        cancelled (back to issuance). Nothing is clawed back, nothing owed."""

        trade_id: str
        amount_won: int

        def apply(self, wallet: Resident) -> None:
            wallet.lot_state()
            del wallet.pending[self.trade_id]
            wallet.pending_won -= self.amount_won
            wallet.accrued_total_won -= self.amount_won

        def postings(self) -> list[Posting]:
            return [(account("pending", self.originator_id), -self.amount_won),
                    (ISSUANCE, self.amount_won)]

    def cancel_pending(self, trade_id: str, cause: Cause) -> None:
        amount_won = self.pending[trade_id][1]
        self.trigger_event(self.PendingPointsCancelled, trade_id=trade_id,
                           amount_won=amount_won, **cause.fields(self.home_complex_id))
        assert self.pending_won >= 0

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
        expires_at: datetime | None = None
        """The expiry of the lot (None in events stored before lots: see PointsAccrued)."""

        def apply(self, wallet: Resident) -> None:
            lots = wallet.lot_state()
            wallet.apply_credit(self.amount_won, self.recovered_won)
            lot_book.add(lots, f"received:{self.trade_id}",
                         self.expires_at or legacy_expiry(self.occurred_at),
                         self.amount_won - self.recovered_won)

        def postings(self) -> list[Posting]:
            return credit_postings(account("wallet", self.originator_id), TRADE_CLEARING,
                                   self.amount_won, self.recovered_won)

    def receive(self, trade_id: str, buyer_id: UUID, amount_won: int, cause: Cause,
                expires_at: datetime) -> None:
        assert not self.closed
        self._trigger_credit(self.PointsReceived, amount_won, cause, trade_id=trade_id,
                             buyer_id=buyer_id, expires_at=expires_at)

    class PointsRefunded(LedgerAggregate.Event):
        """As a buyer: the points used on a refunded trade come back."""

        trade_id: str
        amount_won: int
        recovered_won: int
        lots: list[dict[str, Any]] | None = None
        """What goes back to which lot, with the lots' original expiry (None in events
        stored before lots: then worked out as `refund_taking` does now)."""

        def apply(self, wallet: Resident) -> None:
            lots = wallet.lot_state()
            back = (wallet.refund_taking(self.trade_id, self.amount_won - self.recovered_won,
                                         self.occurred_at)
                    if self.lots is None else [dict(part) for part in self.lots])
            wallet.spent_lots.pop(self.trade_id, None)
            wallet.apply_credit(self.amount_won, self.recovered_won)
            lot_book.give_back(lots, back)
            wallet.spent_total_won -= self.amount_won

        def postings(self) -> list[Posting]:
            return credit_postings(account("wallet", self.originator_id), TRADE_CLEARING,
                                   self.amount_won, self.recovered_won)

    def refund_taking(self, trade_id: str, kept_won: int,
                      moment: datetime) -> lot_book.Taking:
        """The lots a refunded spend's points go back to: those it took (the latest-expiring
        parts first when owed points keep some); a spend not known lot by lot (old snapshot)
        comes back as a new lot."""
        self.lot_state()
        taking = self.spent_lots.get(trade_id)
        if taking is None:
            return ([{"lot_id": f"refund:{trade_id}", "expires_at": legacy_expiry(moment),
                      "amount_won": kept_won}] if kept_won else [])
        return lot_book.take_latest_back(taking, kept_won)

    def refund_points(self, trade_id: str, amount_won: int, cause: Cause) -> None:
        fields = self.credit_fields(amount_won)
        back = self.refund_taking(trade_id, amount_won - fields["recovered_won"],
                                  cause.occurred_at)
        self.trigger_event(self.PointsRefunded, trade_id=trade_id, lots=back, **fields,
                           **cause.fields(self.home_complex_id))
        self.check_not_negative()

    # Debits ------------------------------------------------------------------------------

    class PointsSpent(LedgerAggregate.Event):
        """As a buyer: points used to pay for a trade."""

        trade_id: str
        seller_id: UUID
        amount_won: int
        lots: list[dict[str, Any]] | None = None
        """What the spend took from which lot (None in events stored before lots: taken
        earliest-expiring first on replay)."""

        def apply(self, wallet: Resident) -> None:
            taking = wallet.take(self.lots, self.amount_won)  # makes the lot state its own
            wallet.spent_lots[self.trade_id] = taking
            wallet.available_won -= self.amount_won
            wallet.spent_total_won += self.amount_won

        def postings(self) -> list[Posting]:
            return [(account("wallet", self.originator_id), -self.amount_won),
                    (TRADE_CLEARING, self.amount_won)]

    def spend(self, trade_id: str, seller_id: UUID, amount_won: int, cause: Cause) -> None:
        self.check_can_spend(amount_won)
        # After this point, the debit must succeed.
        self.trigger_event(self.PointsSpent, trade_id=trade_id, seller_id=seller_id,
                           amount_won=amount_won, lots=self.earliest(amount_won),
                           **cause.fields(self.home_complex_id))
        assert self.available_won >= 0

    class AccrualClawedBack(LedgerAggregate.Event):
        trade_id: str
        amount_won: int
        taken_won: int
        owed_won: int
        lots: list[dict[str, Any]] | None = None
        """The lots the taken points left (None before lots: earliest-expiring first)."""

        def apply(self, wallet: Resident) -> None:
            wallet.take(self.lots, self.taken_won)
            wallet.apply_clawback(self.taken_won, self.owed_won)
            wallet.accrued_total_won -= self.amount_won

        def postings(self) -> list[Posting]:
            return clawback_postings(account("wallet", self.originator_id), self.taken_won)

    def claw_back(self, trade_id: str, amount_won: int, cause: Cause) -> None:
        # What cannot be taken is owed (OwedAccount): the clawback always succeeds.
        fields = self.clawback_fields(amount_won)
        self.trigger_event(self.AccrualClawedBack, trade_id=trade_id, **fields,
                           lots=self.earliest(fields["taken_won"]),
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
        lots: list[dict[str, Any]] | None = None
        """The lots the taken points left (None before lots: earliest-expiring first)."""

        def apply(self, wallet: Resident) -> None:
            wallet.take(self.lots, self.taken_won)
            wallet.apply_clawback(self.taken_won, self.owed_won)

        def postings(self) -> list[Posting]:
            return returned_payment_postings(account("wallet", self.originator_id),
                                             self.amount_won, self.taken_won, self.owed_won)

    def return_payment(self, trade_id: str, amount_won: int, cause: Cause) -> None:
        fields = self.clawback_fields(amount_won)
        self.trigger_event(self.PaymentReturned, trade_id=trade_id, **fields,
                           lots=self.earliest(fields["taken_won"]),
                           **cause.fields(self.home_complex_id))
        self.check_not_negative()

    # Rent holds --------------------------------------------------------------------------

    class PointsHeld(LedgerAggregate.Event):
        payment_id: str
        household_id: UUID
        invoice_id: str
        amount_won: int
        lots: list[dict[str, Any]] | None = None
        """What the hold took from which lot (None before lots: earliest-expiring first)."""

        def apply(self, wallet: Resident) -> None:
            taking = wallet.take(self.lots, self.amount_won)  # makes the lot state its own
            wallet.hold_lots[self.payment_id] = taking
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
                           lots=self.earliest(amount_won), **cause.fields(self.home_complex_id))
        assert self.available_won >= 0 and self.held_won >= 0

    class HoldSettled(LedgerAggregate.Event):
        payment_id: str
        amount_won: int

        def apply(self, wallet: Resident) -> None:
            wallet.held_taking(self.payment_id, self.amount_won)  # paid: the lots are gone
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
        lots: list[dict[str, Any]] | None = None
        """What goes back to which lot: what the hold took (None before lots)."""

        def apply(self, wallet: Resident) -> None:
            taking = wallet.held_taking(self.payment_id, self.amount_won)
            lot_book.give_back(wallet.lot_state(),
                               taking if self.lots is None else [dict(p) for p in self.lots])
            wallet.held_won -= self.amount_won
            wallet.available_won += self.amount_won
            del wallet.holds[self.payment_id]

        def postings(self) -> list[Posting]:
            return [(account("held", self.originator_id), -self.amount_won),
                    (account("wallet", self.originator_id), self.amount_won)]

    def release_hold(self, payment_id: str, reason: str, cause: Cause) -> None:
        amount_won = self.holds[payment_id]
        self.trigger_event(self.HoldReleased, payment_id=payment_id, amount_won=amount_won,
                           reason=reason, lots=self.hold_taking(payment_id, amount_won),
                           **cause.fields(self.home_complex_id))
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
        lots: list[dict[str, Any]] | None = None
        """What the hold took from which lot (None before lots: earliest-expiring first)."""

        def apply(self, wallet: Resident) -> None:
            key = order_hold_key(self.order_id)
            taking = wallet.take(self.lots, self.amount_won)  # makes the lot state its own
            wallet.hold_lots[key] = taking
            wallet.available_won -= self.amount_won
            wallet.held_won += self.amount_won
            wallet.holds[key] = self.amount_won

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
                           amount_won=amount_won, lots=self.earliest(amount_won),
                           **cause.fields(self.home_complex_id))
        assert self.available_won >= 0 and self.held_won >= 0

    class OrderHoldReleased(LedgerAggregate.Event):
        """The order was cancelled, or its group buy was: the points are available again."""

        group_buy_id: str
        order_id: str
        amount_won: int
        reason: str
        lots: list[dict[str, Any]] | None = None
        """What goes back to which lot: what the hold took (None before lots)."""

        def apply(self, wallet: Resident) -> None:
            key = order_hold_key(self.order_id)
            taking = wallet.held_taking(key, self.amount_won)
            lot_book.give_back(wallet.lot_state(),
                               taking if self.lots is None else [dict(p) for p in self.lots])
            wallet.held_won -= self.amount_won
            wallet.available_won += self.amount_won
            del wallet.holds[key]

        def postings(self) -> list[Posting]:
            return [(account("held", self.originator_id), -self.amount_won),
                    (account("wallet", self.originator_id), self.amount_won)]

    def release_order_hold(self, group_buy_id: str, order_id: str, reason: str,
                           cause: Cause) -> None:
        amount_won = self.holds[order_hold_key(order_id)]
        self.trigger_event(self.OrderHoldReleased, group_buy_id=group_buy_id,
                           order_id=order_id, amount_won=amount_won, reason=reason,
                           lots=self.hold_taking(order_hold_key(order_id), amount_won),
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
            key = order_hold_key(self.order_id)
            taking = wallet.held_taking(key, self.amount_won)  # makes the lot state its own
            wallet.spent_lots[self.trade_id] = taking
            wallet.held_won -= self.amount_won
            wallet.spent_total_won += self.amount_won
            del wallet.holds[key]

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

    # Expiry ------------------------------------------------------------------------------

    class PointsExpired(LedgerAggregate.Event):
        """Lots reached their expiry with points left: those points leave the wallet, lot by
        lot, to `expired_to` (the complex's fund, issuance or unclaimed), as the policy
        version in force said."""

        lots: list[dict[str, Any]]
        amount_won: int
        expired_to: str
        policy_version: int

        def apply(self, wallet: Resident) -> None:
            wallet.take(self.lots, self.amount_won)
            wallet.available_won -= self.amount_won
            wallet.expired_total_won += self.amount_won

        def postings(self) -> list[Posting]:
            return [(account("wallet", self.originator_id), -self.amount_won),
                    (lapse_account(self.expired_to), self.amount_won)]

    def due_lots(self, moment: datetime) -> lot_book.Taking:
        return lot_book.due(self.lot_state(), moment)

    def expire_lots(self, moment: datetime, expired_to: str, policy_version: int,
                    cause: Cause) -> int:
        """Expire every lot due at `moment`; return the points expired."""
        due = self.due_lots(moment)
        if not due:
            raise DomainError(errors.nothing_to_expire, str(self.id))
        amount_won = lot_book.taking_won(due)
        assert amount_won <= self.available_won
        # After this point, the expiry must succeed.
        self.trigger_event(self.PointsExpired, lots=due, amount_won=amount_won,
                           expired_to=expired_to, policy_version=policy_version,
                           **cause.fields(self.home_complex_id))
        assert self.available_won >= 0
        return amount_won

    # Moving out --------------------------------------------------------------------------

    class MovedOut(LedgerAggregate.Event):
        """The wallet closes; what remains is moved to the unclaimed account, on record."""

        remaining_won: int
        owed_won: int
        moved_to: str = "unclaimed"
        """Where the remaining points went: the complex's fund, issuance or unclaimed (by
        `policy_version`); events stored before lots moved them to unclaimed."""
        lots: list[dict[str, Any]] | None = None
        """The remaining lots, lot by lot (None before lots)."""
        pending_cancelled_won: int = 0
        """Pending personal shares cancelled at move-out (back to issuance)."""
        policy_version: int = 0

        def apply(self, wallet: Resident) -> None:
            wallet.take(self.lots, self.remaining_won)
            wallet.available_won -= self.remaining_won
            wallet.forfeited_pending = sorted(wallet.pending)
            wallet.pending = {}
            wallet.pending_won -= self.pending_cancelled_won
            wallet.closed = True

        def postings(self) -> list[Posting]:
            postings: list[Posting] = [
                (account("wallet", self.originator_id), -self.remaining_won),
                (lapse_account(self.moved_to), self.remaining_won)]
            if self.pending_cancelled_won:
                postings += [(account("pending", self.originator_id),
                              -self.pending_cancelled_won),
                             (ISSUANCE, self.pending_cancelled_won)]
            return postings

    def move_out(self, cause: Cause, moved_to: str = "unclaimed",
                 policy_version: int = 0) -> int:
        """Close the wallet: the remaining lots go to `moved_to`, lot by lot; pending shares
        (return windows still open) are cancelled, since they never became the resident's."""
        self.check_open()
        if self.holds:
            raise DomainError(errors.holds_pending, ", ".join(sorted(self.holds)))
        remaining_won = self.available_won
        lots = self.earliest(remaining_won)
        self.trigger_event(self.MovedOut, remaining_won=remaining_won, owed_won=self.owed_won,
                           moved_to=moved_to, lots=lots, pending_cancelled_won=self.pending_won,
                           policy_version=policy_version,
                           **cause.fields(self.home_complex_id))
        assert self.available_won == 0 and self.held_won == 0 and self.pending_won == 0
        assert not self.lot_state()
        return remaining_won
