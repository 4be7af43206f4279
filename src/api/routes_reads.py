"""Reads, served from the projections.

Each route first checks the caller's role (403 for a role that may never read this),
then whether this caller may see this object; an object they may not see answers
with exactly the 404 a missing one gets.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any, Final
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

import projections
from api.auth import Principal, Role
from api.models import (
    CALENDAR_YEARS,
    DAY_PATTERN,
    AccrualPolicyView,
    FundView,
    GuardsView,
    HouseholdRentView,
    Market,
    MarketStatsView,
    MerchantSettlementView,
    PolicyRateView,
    RentPaymentView,
    WalletEntriesPage,
    WalletStaffView,
    WalletView,
)
from api.problems import problem_responses
from api.routes_common import IDEMPOTENCY_KEY_PATTERN, Read, in_complex, reader
from ledger import errors, limits
from ledger.errors import DomainError
from ledger.events import KST
from ledger.policy import POLICY_ID, AccrualPolicy

router = APIRouter(prefix="/v1")

READ_ERRORS = problem_responses(401, 403, 404, 409, 413, 422, 503)

WalletAnyView = Annotated[WalletView | WalletStaffView, Field(discriminator="view")]
Limit = Annotated[int, Query(ge=1, le=limits.page_size_max,
                             description=f"Page size, 1–{limits.page_size_max} (default "
                                         f"{limits.page_size_default}).")]
Cursor = Annotated[int | None, Query(ge=1, le=limits.position_max,
                                     description="`next_cursor` of the previous page.")]

STAFF_ROLES: Final = (Role.COORDINATOR, Role.MANAGER)


def _pick(model: type[BaseModel], row: dict[str, Any]) -> Any:
    return model(**{name: row[name] for name in model.model_fields if name in row})


async def _wallet_row(read: Read, resident_id: UUID, *, staff_roles: tuple[Role, ...]
                      ) -> dict[str, Any]:
    """The wallet row if this caller may see it, else the error a missing one gets."""
    principal = read.principal
    missing = DomainError(errors.unknown_resident, str(resident_id))
    if principal.role == Role.RESIDENT and principal.subject != resident_id:
        raise missing
    async with read.statement_connection_async() as conn:
        row = await projections.wallet_view_async(conn, resident_id, datetime.now(KST))
    if row is None:
        raise missing
    if principal.role in STAFF_ROLES and (
            principal.role not in staff_roles or not in_complex(principal, row["complex_id"])):
        raise missing
    return row


def _wallet_view(principal: Principal, row: dict[str, Any]) -> WalletView | WalletStaffView:
    if principal.role in STAFF_ROLES:
        return _pick(WalletStaffView, row)  # type: ignore[no-any-return]
    return _pick(WalletView, row)  # type: ignore[no-any-return]


async def _entries(read: Read, resident_id: UUID, cursor: int | None, limit: int
                   ) -> WalletEntriesPage:
    async with read.statement_connection_async() as conn:
        page = await projections.wallet_entries_async(conn, resident_id, cursor, limit)
    return WalletEntriesPage(**page)


# The wallet routes read on the event loop (the async pool): the hottest reads, and a
# read handed to a worker thread and back cost a fifth of their time (docs/api.md).

@router.get("/me/wallet", response_model=WalletView, responses=READ_ERRORS,
            tags=["wallets"], summary="The caller's own wallet (resident)")
async def my_wallet(read: Annotated[Read, Depends(reader(Role.RESIDENT))]) -> WalletView:
    row = await _wallet_row(read, read.principal.subject, staff_roles=())
    return _pick(WalletView, row)  # type: ignore[no-any-return]


@router.get("/me/wallet/entries", response_model=WalletEntriesPage, responses=READ_ERRORS,
            tags=["wallets"], summary="The caller's wallet history, newest first (resident)")
async def my_wallet_entries(read: Annotated[Read, Depends(reader(Role.RESIDENT))],
                            cursor: Cursor = None,
                            limit: Limit = limits.page_size_default) -> WalletEntriesPage:
    await _wallet_row(read, read.principal.subject, staff_roles=())
    return await _entries(read, read.principal.subject, cursor, limit)


@router.get("/wallets/{resident_id}", response_model=WalletAnyView, responses=READ_ERRORS,
            tags=["wallets"],
            summary="A resident's wallet (the resident; coordinators and managers of their "
                    "complex see balances only; auditors)")
async def get_wallet(resident_id: Annotated[UUID, Path()],
                     read: Annotated[Read, Depends(reader(
                         Role.RESIDENT, Role.COORDINATOR, Role.MANAGER, Role.AUDITOR))]
                     ) -> WalletView | WalletStaffView:
    row = await _wallet_row(read, resident_id, staff_roles=STAFF_ROLES)
    return _wallet_view(read.principal, row)


@router.get("/wallets/{resident_id}/entries", response_model=WalletEntriesPage,
            responses=READ_ERRORS, tags=["wallets"],
            summary="A wallet's history, newest first (the resident, a coordinator of their "
                    "complex, auditors)")
async def get_wallet_entries(resident_id: Annotated[UUID, Path()],
                             read: Annotated[Read, Depends(reader(
                                 Role.RESIDENT, Role.COORDINATOR, Role.AUDITOR))],
                             cursor: Cursor = None,
                             limit: Limit = limits.page_size_default) -> WalletEntriesPage:
    await _wallet_row(read, resident_id, staff_roles=(Role.COORDINATOR,))
    return await _entries(read, resident_id, cursor, limit)


@router.get("/households/{household_id}/rent", response_model=HouseholdRentView,
            responses=READ_ERRORS, tags=["rent"],
            summary="A household's rent invoices and payments (its residents, a coordinator "
                    "of the complex, billing, auditors)")
def get_household_rent(household_id: Annotated[UUID, Path()],
                       read: Annotated[Read, Depends(reader(
                           Role.RESIDENT, Role.COORDINATOR, Role.BILLING, Role.AUDITOR))]
                       ) -> HouseholdRentView:
    principal = read.principal
    missing = DomainError(errors.unknown_household, str(household_id))
    if principal.role == Role.RESIDENT:
        resident = read.resident_home(principal.subject)
        if resident is None or resident.household_id != household_id:
            raise missing
    else:
        complex_id = read.household_complex(household_id)
        if complex_id is None:
            raise missing
        if principal.role == Role.COORDINATOR and not in_complex(principal, complex_id):
            raise missing
    with read.connection() as conn:
        rent = projections.household_rent(conn, household_id)
    return HouseholdRentView(**rent)


@router.get("/rent-payments/{payment_id}", response_model=RentPaymentView,
            responses=READ_ERRORS, tags=["rent"],
            summary="One rent payment (billing, auditors, residents of the household, a "
                    "coordinator of the complex)")
def get_rent_payment(payment_id: Annotated[str, Path(
                         min_length=1, max_length=limits.identifier_length_max,
                         pattern=IDEMPOTENCY_KEY_PATTERN)],
                     read: Annotated[Read, Depends(reader(
                         Role.BILLING, Role.AUDITOR, Role.RESIDENT, Role.COORDINATOR))]
                     ) -> RentPaymentView:
    principal = read.principal
    missing = DomainError(errors.unknown_rent_payment, payment_id)
    with read.connection() as conn:
        row = projections.rent_payment(conn, payment_id)
    if row is None:
        raise missing
    if principal.role == Role.RESIDENT:
        resident = read.resident_home(principal.subject)
        if resident is None or resident.household_id != row["household_id"]:
            raise missing
    elif principal.role == Role.COORDINATOR and not in_complex(principal, row["complex_id"]):
        raise missing
    return RentPaymentView(**row)


@router.get("/complexes/{complex_id}/fund", response_model=FundView, responses=READ_ERRORS,
            tags=["funds"],
            summary="A complex's common fund: balance, inflows by month and market, outflows "
                    "by purpose, the latest spends with their proposals (its manager and "
                    "coordinators, the operator, auditors)")
def get_fund(complex_id: Annotated[UUID, Path()],
             read: Annotated[Read, Depends(reader(
                 Role.MANAGER, Role.COORDINATOR, Role.OPERATOR, Role.AUDITOR))]) -> FundView:
    missing = DomainError(errors.unknown_complex, str(complex_id))
    if read.principal.role in STAFF_ROLES and not in_complex(read.principal, complex_id):
        raise missing
    with read.connection() as conn:
        row = projections.fund(conn, complex_id)
        if row is None:
            raise missing
        row["spends"] = projections.fund_spends(conn, complex_id)
        row["pending_won"] = projections.fund_pending_won(conn, complex_id)
    return FundView(**row)


@router.get("/merchants/{merchant_id}/settlement", response_model=MerchantSettlementView,
            responses=READ_ERRORS, tags=["merchants"],
            summary="A merchant's sales and settlement account (the merchant, the operator, "
                    "auditors)")
def get_settlement(merchant_id: Annotated[UUID, Path()],
                   read: Annotated[Read, Depends(reader(
                       Role.MERCHANT, Role.OPERATOR, Role.AUDITOR))]) -> MerchantSettlementView:
    missing = DomainError(errors.unknown_merchant, str(merchant_id))
    if read.principal.role == Role.MERCHANT and read.principal.subject != merchant_id:
        raise missing
    with read.connection() as conn:
        row = projections.merchant_settlement(conn, merchant_id)
    if row is None:
        raise missing
    return MerchantSettlementView(**row)


def _day(name: str, text: str | None) -> date | None:
    """A calendar day; its pattern let through only YYYY-MM-DD, so a day that does not
    exist (February 30th) is all that can fail here."""
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise DomainError(errors.invalid_field, f"{name}: no such day") from None


@router.get("/markets/stats", response_model=MarketStatsView, responses=READ_ERRORS,
            tags=["markets"],
            summary="Trades and accrued points between two KST dates, with breakdowns by "
                    "week, month, market, category, seller kind and complex (the operator, "
                    "the platform, auditors; managers and coordinators for their complex)")
def get_market_stats(
    read: Annotated[Read, Depends(reader(
        Role.OPERATOR, Role.PLATFORM, Role.AUDITOR, Role.MANAGER, Role.COORDINATOR))],
    from_text: Annotated[str | None, Query(
        alias="from", pattern=DAY_PATTERN, json_schema_extra={"format": "date"},
        description=f"First KST day, YYYY-MM-DD in {CALENDAR_YEARS} (default: "
                    f"{limits.stats_days_default - 1} days before `to`, or the first day of "
                    f"{limits.calendar_year_earliest}, whichever is later). At most "
                    f"{limits.stats_days_max} days from `from` to `to`, both included, and "
                    "`from` not after `to` (a rule JSON Schema cannot state; else 422).")] = None,
    to_text: Annotated[str | None, Query(
        alias="to", pattern=DAY_PATTERN, json_schema_extra={"format": "date"},
        description=f"Last KST day, included, YYYY-MM-DD in {CALENDAR_YEARS} "
                    "(default: today).")] = None,
    complex_id: Annotated[UUID | None, Query(
        description="Only this complex (managers and coordinators: their own, the "
                    "default).")] = None,
    market: Annotated[Market | None, Query()] = None,
) -> MarketStatsView:
    principal = read.principal
    if principal.role in STAFF_ROLES:
        if complex_id is None:
            complex_id = principal.complex_id
        elif not in_complex(principal, complex_id):
            raise DomainError(errors.unknown_complex, str(complex_id))
    to_date = _day("to", to_text) or datetime.now(KST).date()
    # By default the week up to `to`, but not before the first day statistics cover.
    from_date = _day("from", from_text) or max(
        limits.stats_date_earliest, to_date - timedelta(days=limits.stats_days_default - 1))
    for name, day in (("to", to_date), ("from", from_date)):
        if not limits.stats_date_earliest <= day <= limits.stats_date_latest:
            raise DomainError(errors.invalid_field, f"{name}: a day in {CALENDAR_YEARS}")
    if not 0 <= (to_date - from_date).days < limits.stats_days_max:
        raise DomainError(errors.invalid_field,
                          f"from..to: at most {limits.stats_days_max} days, from not after to")
    with read.connection() as conn:
        stats = projections.market_stats(conn, from_date, to_date, complex_id, market)
    return MarketStatsView(**stats)


@router.get("/accrual-policy", response_model=AccrualPolicyView, responses=READ_ERRORS,
            tags=["registry"],
            summary="The accrual policy trades use now: rates per market, seller kind and "
                    "category (every role)")
def get_accrual_policy(read: Annotated[Read, Depends(reader(*Role))]) -> AccrualPolicyView:
    policy = read.services.ledger.snapshot(AccrualPolicy, POLICY_ID)
    if policy is None or policy.current_version == 0:
        raise DomainError(errors.unknown_policy, "no accrual policy has been set")
    return AccrualPolicyView(
        version=policy.current_version,
        rates=[PolicyRateView(**row) for row in policy.rates()],
        rounding="share_won = floor((amount_won - points_used_won) * share_bps / 10000), "
                 "for the personal and the common share separately",
        lifecycle=policy.lifecycle(),
        guards=GuardsView(**policy.guards_for(policy.current_version).as_dict()))
