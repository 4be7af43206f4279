"""A household (세대): a rented home in a complex, its rent invoices and rent payments.

Billing issues an invoice; a resident of the household pays all or part of it with
points (a rent payment, held at once); billing settles or releases the hold; a hold
not settled by its deadline is released automatically, recorded as expired. The
holds and settlements on one invoice never exceed the invoice amount.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger import errors
from ledger.errors import DomainError
from ledger.events import Cause, LedgerAggregate

HELD = "held"
SETTLED = "settled"
RELEASED = "released"
EXPIRED = "expired"


def household_id_for(complex_id: UUID, unit: str) -> UUID:
    """A household is known by its complex and unit; the id follows from them."""
    return uuid5(NAMESPACE_URL, f"ledger:household:{complex_id}:{unit}")


class Household(LedgerAggregate):
    if TYPE_CHECKING:  # state, declared for type checkers only: the library
        # would otherwise take annotations as constructor arguments.
        home_complex_id: UUID
        unit: str
        invoices: dict[str, dict[str, Any]]
        payments: dict[str, dict[str, Any]]

    class Registered(LedgerAggregate.Created):
        unit: str

        def apply(self, household: Household) -> None:
            assert self.complex_id is not None
            household.home_complex_id = self.complex_id
            household.unit = self.unit
            household.invoices = {}
            household.payments = {}

    @classmethod
    def register(cls, complex_id: UUID, unit: str, cause: Cause) -> Household:
        return cls._create(cls.Registered, id=household_id_for(complex_id, unit), unit=unit,
                           **cause.fields(complex_id))

    class RentInvoiceIssued(LedgerAggregate.Event):
        invoice_id: str
        billing_period: str
        amount_won: int
        due_at: datetime

        def apply(self, household: Household) -> None:
            household.invoices[self.invoice_id] = {
                "billing_period": self.billing_period, "amount_won": self.amount_won,
                "committed_won": 0, "due_at": self.due_at,
            }

    def same_invoice(self, invoice_id: str, billing_period: str, amount_won: int) -> bool:
        invoice = self.invoices.get(invoice_id)
        return (invoice is not None and invoice["billing_period"] == billing_period
                and invoice["amount_won"] == amount_won)

    def issue_invoice(self, invoice_id: str, billing_period: str, amount_won: int,
                      due_at: datetime, cause: Cause) -> None:
        if invoice_id in self.invoices:
            raise DomainError(errors.invoice_exists, invoice_id)
        self.trigger_event(self.RentInvoiceIssued, invoice_id=invoice_id,
                           billing_period=billing_period, amount_won=amount_won, due_at=due_at,
                           **cause.fields(self.home_complex_id))

    def check_payment(self, payment_id: str, invoice_id: str, billing_period: str,
                      amount_won: int) -> None:
        if payment_id in self.payments:
            raise DomainError(errors.rent_payment_exists, payment_id)
        invoice = self.invoices.get(invoice_id)
        if invoice is None or invoice["billing_period"] != billing_period:
            raise DomainError(errors.unknown_invoice, f"{invoice_id} for {billing_period}")
        if invoice["committed_won"] + amount_won > invoice["amount_won"]:
            raise DomainError(
                errors.invoice_exceeded,
                f"invoice {invoice['amount_won']}, already {invoice['committed_won']}, "
                f"asked {amount_won}")

    class RentPaymentHeld(LedgerAggregate.Event):
        payment_id: str
        invoice_id: str
        billing_period: str
        resident_id: UUID
        amount_won: int
        deadline_at: datetime

        def apply(self, household: Household) -> None:
            household.invoices[self.invoice_id]["committed_won"] += self.amount_won
            household.payments[self.payment_id] = {
                "invoice_id": self.invoice_id, "resident_id": self.resident_id,
                "amount_won": self.amount_won, "status": HELD, "deadline_at": self.deadline_at,
            }

    def hold_payment(self, payment_id: str, invoice_id: str, billing_period: str,
                     resident_id: UUID, amount_won: int, deadline_at: datetime,
                     cause: Cause) -> None:
        self.check_payment(payment_id, invoice_id, billing_period, amount_won)
        self.trigger_event(self.RentPaymentHeld, payment_id=payment_id, invoice_id=invoice_id,
                           billing_period=billing_period, resident_id=resident_id,
                           amount_won=amount_won, deadline_at=deadline_at,
                           **cause.fields(self.home_complex_id))
        invoice = self.invoices[invoice_id]
        assert invoice["committed_won"] <= invoice["amount_won"]

    def open_payment(self, payment_id: str) -> dict[str, Any]:
        """The payment if its hold is still open; the rejection that says why otherwise."""
        payment = self.payments.get(payment_id)
        if payment is None:
            raise DomainError(errors.unknown_rent_payment, payment_id)
        if payment["status"] == SETTLED:
            raise DomainError(errors.hold_already_settled, payment_id)
        if payment["status"] in (RELEASED, EXPIRED):
            raise DomainError(errors.hold_already_released, payment_id)
        return payment

    class RentPaymentSettled(LedgerAggregate.Event):
        payment_id: str
        invoice_id: str
        resident_id: UUID
        amount_won: int

        def apply(self, household: Household) -> None:
            household.payments[self.payment_id]["status"] = SETTLED

    def settle_payment(self, payment_id: str, cause: Cause) -> dict[str, Any]:
        payment = self.open_payment(payment_id)
        self.trigger_event(self.RentPaymentSettled, payment_id=payment_id,
                           invoice_id=payment["invoice_id"], resident_id=payment["resident_id"],
                           amount_won=payment["amount_won"],
                           **cause.fields(self.home_complex_id))
        return payment

    class RentPaymentReleased(LedgerAggregate.Event):
        """Billing released the hold, or its deadline passed (`reason` says which)."""

        payment_id: str
        invoice_id: str
        resident_id: UUID
        amount_won: int
        reason: str

        def apply(self, household: Household) -> None:
            payment = household.payments[self.payment_id]
            payment["status"] = EXPIRED if self.reason == EXPIRED else RELEASED
            household.invoices[self.invoice_id]["committed_won"] -= self.amount_won

    def release_payment(self, payment_id: str, reason: str, now: datetime,
                        cause: Cause) -> dict[str, Any]:
        assert reason in (RELEASED, EXPIRED)
        payment = self.open_payment(payment_id)
        if reason == EXPIRED and now < payment["deadline_at"]:
            raise DomainError(errors.hold_not_due, payment_id)
        self.trigger_event(self.RentPaymentReleased, payment_id=payment_id,
                           invoice_id=payment["invoice_id"], resident_id=payment["resident_id"],
                           amount_won=payment["amount_won"], reason=reason,
                           **cause.fields(self.home_complex_id))
        assert self.invoices[payment["invoice_id"]]["committed_won"] >= 0
        return payment


def rent_payment_locator_id(payment_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"ledger:rent-payment:{payment_id}")


class RentPaymentLocator(LedgerAggregate):
    """Where a rent payment lives: billing names payments by id alone.

    Saved once, with the hold; it also makes payment ids unique across households.
    """

    if TYPE_CHECKING:  # state, declared for type checkers only: the library
        # would otherwise take annotations as constructor arguments.
        household_id: UUID
        home_complex_id: UUID

    class Registered(LedgerAggregate.Created):
        payment_id: str
        household_id: UUID

        def apply(self, locator: RentPaymentLocator) -> None:
            assert self.complex_id is not None
            locator.household_id = self.household_id
            locator.home_complex_id = self.complex_id

    @classmethod
    def register(cls, payment_id: str, household_id: UUID, complex_id: UUID,
                 cause: Cause) -> RentPaymentLocator:
        return cls._create(cls.Registered, id=rent_payment_locator_id(payment_id),
                           payment_id=payment_id, household_id=household_id,
                           **cause.fields(complex_id))
