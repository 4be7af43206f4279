"""Points moving: trades and refunds (the platform), rent invoices and rent payments
(billing and residents), and common-fund spends (the complex's manager).

The routes whose only blocking work is the command itself are async and hand just the
command to the thread pool (`Write.execute_async`): a sync route costs a second trip
there, for FastAPI's check of its return value (docs/api.md, "HTTP throughput").
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Body, Depends, Path

from api.auth import Role
from api.models import (
    FundSpendRequest,
    FundSpent,
    RefundRequest,
    RentInvoiceIssued,
    RentInvoiceRequest,
    RentPaymentChanged,
    RentPaymentRequest,
    TradeRecorded,
    TradeRefunded,
    TradeRequest,
)
from api.problems import problem_responses
from api.routes_common import IDEMPOTENCY_KEY_PATTERN, Write, in_complex, writer
from ledger import commands as c
from ledger import errors, limits
from ledger.errors import DomainError
from ledger.household import Household
from ledger.resident import Resident

router = APIRouter(prefix="/v1")

WRITE_ERRORS = problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)

ClientId = Annotated[str, Path(min_length=1, max_length=limits.identifier_length_max,
                               pattern=IDEMPOTENCY_KEY_PATTERN)]


@router.post("/trades", status_code=201, response_model=TradeRecorded, responses=WRITE_ERRORS,
             tags=["trades"], summary="Record a completed sale and its accrual (platform)")
async def record_trade(body: TradeRequest,
                 write: Annotated[Write, Depends(writer(Role.PLATFORM))]) -> TradeRecorded:
    outcome = await write.execute_async(
        c.RecordTrade(body.trade_id, body.market, body.category, body.seller_id,
                      body.seller_kind, body.buyer_id, body.amount_won, body.points_used_won,
                      body.policy_version),
        occurred_at=body.occurred_at)
    return TradeRecorded(position=outcome.position, **outcome.result)


@router.post("/trades/{trade_id}/refund", response_model=TradeRefunded,
             responses=WRITE_ERRORS, tags=["trades"],
             summary="Refund a trade: points used go back, accruals are clawed back (platform)")
async def refund_trade(trade_id: ClientId,
                 write: Annotated[Write, Depends(writer(Role.PLATFORM))],
                 body: Annotated[RefundRequest | None, Body()] = None) -> TradeRefunded:
    outcome = await write.execute_async(c.RefundTrade(trade_id),
                            occurred_at=body.occurred_at if body else None)
    return TradeRefunded(position=outcome.position, **outcome.result)


@router.post("/rent-invoices", status_code=201, response_model=RentInvoiceIssued,
             responses=WRITE_ERRORS, tags=["rent"],
             summary="Issue a household's rent invoice (billing)")
async def issue_rent_invoice(body: RentInvoiceRequest,
                       write: Annotated[Write, Depends(writer(Role.BILLING))]
                       ) -> RentInvoiceIssued:
    outcome = await write.execute_async(
        c.IssueRentInvoice(body.household_id, body.invoice_id, body.billing_period,
                           body.amount_won, body.due_at),
        occurred_at=body.occurred_at)
    return RentInvoiceIssued(position=outcome.position, **outcome.result)


@router.post("/rent-payments", status_code=201, response_model=RentPaymentChanged,
             responses=WRITE_ERRORS, tags=["rent"],
             summary="Pay rent with points: the points are held until billing settles or "
                     "releases the payment (a resident of the household, or a coordinator "
                     "on their behalf)")
def pay_rent(body: RentPaymentRequest,
             write: Annotated[Write, Depends(writer(Role.RESIDENT, Role.COORDINATOR))]
             ) -> RentPaymentChanged:
    principal = write.principal
    ledger = write.services.ledger
    on_behalf_of = None
    if principal.role == Role.RESIDENT:
        if body.resident_id is not None:
            raise DomainError(errors.invalid_field,
                              "resident_id: a resident pays as the token's subject")
        resident_id = principal.subject
        resident = ledger.snapshot(Resident, resident_id)
        if resident is None or resident.household_id != body.household_id:
            raise DomainError(errors.unknown_household, str(body.household_id))
    else:
        if body.resident_id is None:
            raise DomainError(errors.invalid_field,
                              "resident_id: a coordinator names the resident they act for")
        resident_id = body.resident_id
        household = ledger.snapshot(Household, body.household_id)
        if household is None or not in_complex(principal, household.home_complex_id):
            raise DomainError(errors.unknown_household, str(body.household_id))
        resident = ledger.snapshot(Resident, resident_id)
        if resident is None or not in_complex(principal, resident.home_complex_id):
            raise DomainError(errors.unknown_resident, str(resident_id))
        on_behalf_of = resident_id
    outcome = write.execute(
        c.PayRent(body.payment_id, body.household_id, body.invoice_id, body.billing_period,
                  body.amount_won, resident_id, body.hold_seconds),
        on_behalf_of=on_behalf_of)
    return RentPaymentChanged(position=outcome.position, **outcome.result)


@router.post("/rent-payments/{payment_id}/settle", response_model=RentPaymentChanged,
             responses=WRITE_ERRORS, tags=["rent"],
             summary="Settle a held rent payment: the points paid the rent (billing)")
async def settle_rent_payment(payment_id: ClientId,
                        write: Annotated[Write, Depends(writer(Role.BILLING))]
                        ) -> RentPaymentChanged:
    outcome = await write.execute_async(c.SettleRentPayment(payment_id))
    return RentPaymentChanged(position=outcome.position, **outcome.result)


@router.post("/rent-payments/{payment_id}/release", response_model=RentPaymentChanged,
             responses=WRITE_ERRORS, tags=["rent"],
             summary="Release a held rent payment: the points are available again (billing)")
async def release_rent_payment(payment_id: ClientId,
                         write: Annotated[Write, Depends(writer(Role.BILLING))]
                         ) -> RentPaymentChanged:
    outcome = await write.execute_async(c.ReleaseRentPayment(payment_id))
    return RentPaymentChanged(position=outcome.position, **outcome.result)


@router.post("/complexes/{complex_id}/fund/spends", status_code=201, response_model=FundSpent,
             responses=WRITE_ERRORS, tags=["funds"],
             summary="Spend from the complex's common fund (the complex's manager)")
async def spend_fund(complex_id: Annotated[UUID, Path()], body: FundSpendRequest,
               write: Annotated[Write, Depends(writer(Role.MANAGER))]) -> FundSpent:
    if not in_complex(write.principal, complex_id):
        raise DomainError(errors.unknown_complex, str(complex_id))
    outcome = await write.execute_async(c.SpendFund(complex_id, body.spend_id, body.purpose,
                                        body.amount_won, body.decision_ref or "",
                                        body.proposal_id))
    return FundSpent(position=outcome.position, **outcome.result)
