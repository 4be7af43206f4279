"""Group buys on the shopping market: merchants open and close them, residents (or a
coordinator for them) order and cancel, and everyone reads what they may see.

Who may see a group buy: residents of a complex it is open to (or who ordered from it),
coordinators and managers of such a complex, its merchant, the operator, the platform
and auditors; anyone else gets exactly the 404 a missing one gets.
"""

from __future__ import annotations

from typing import Annotated, Any, Final
from uuid import UUID

from fastapi import APIRouter, Depends, Path

import projections
from api.auth import Principal, Role
from api.group_buy_models import (
    ComplexGroupBuysView,
    GroupBuyClosed,
    GroupBuyOpened,
    GroupBuyOrderChanged,
    GroupBuyOrderRequest,
    GroupBuyOrdersPage,
    GroupBuyOrderView,
    GroupBuyRequest,
    GroupBuySummary,
    GroupBuyView,
)
from api.problems import problem_responses
from api.routes_common import IDEMPOTENCY_KEY_PATTERN, Read, Write, in_complex, reader, writer
from api.routes_reads import Cursor, Limit
from ledger import commands as c
from ledger import errors, limits
from ledger.application import now
from ledger.errors import DomainError
from ledger.groupbuy import (
    GroupBuy,
    GroupBuyOrderLocator,
    group_buy_aggregate_id,
    order_locator_id,
)
from ledger.resident import Resident

router = APIRouter(prefix="/v1")

WRITE_ERRORS = problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)
READ_ERRORS = problem_responses(401, 403, 404, 409, 413, 422, 503)
STAFF_ROLES: Final = (Role.COORDINATOR, Role.MANAGER)
SEE_EVERY_ORDER: Final = (Role.OPERATOR, Role.PLATFORM, Role.AUDITOR, Role.MERCHANT)

GroupBuyId = Annotated[str, Path(min_length=1, max_length=limits.identifier_length_max,
                                 pattern=IDEMPOTENCY_KEY_PATTERN)]
OrderIdPath = Annotated[str, Path(min_length=1, max_length=limits.identifier_length_max,
                                  pattern=IDEMPOTENCY_KEY_PATTERN)]


def _home_complex(write_or_read: Write | Read, resident_id: UUID) -> UUID | None:
    resident = write_or_read.services.ledger.snapshot(Resident, resident_id)
    return None if resident is None else resident.home_complex_id


# Writes ----------------------------------------------------------------------------------

@router.post("/group-buys", status_code=201, response_model=GroupBuyOpened,
             responses=WRITE_ERRORS, tags=["group buys"],
             summary="Open a group buy (the merchant, or the operator for it)")
def open_group_buy(body: GroupBuyRequest,
                   write: Annotated[Write, Depends(writer(Role.MERCHANT, Role.OPERATOR))]
                   ) -> GroupBuyOpened:
    if write.principal.role == Role.MERCHANT and write.principal.subject != body.merchant_id:
        raise DomainError(errors.unknown_merchant, str(body.merchant_id))
    outcome = write.execute(c.OpenGroupBuy(
        body.group_buy_id, body.merchant_id, body.category, body.unit_price_won,
        body.quantity_min, body.quantity_max, body.deadline_at, tuple(body.complex_ids)))
    return GroupBuyOpened(position=outcome.position, **outcome.result)


@router.post("/group-buys/{group_buy_id}/orders", status_code=201,
             response_model=GroupBuyOrderChanged, responses=WRITE_ERRORS, tags=["group buys"],
             summary="Order from a group buy; the points used are held at once (a resident, "
                     "or a coordinator on their behalf)")
def place_order(group_buy_id: GroupBuyId, body: GroupBuyOrderRequest,
                write: Annotated[Write, Depends(writer(Role.RESIDENT, Role.COORDINATOR))]
                ) -> GroupBuyOrderChanged:
    principal = write.principal
    on_behalf_of = None
    if principal.role == Role.RESIDENT:
        if body.resident_id is not None:
            raise DomainError(errors.invalid_field,
                              "resident_id: a resident orders as the token's subject")
        resident_id = principal.subject
    else:
        if body.resident_id is None:
            raise DomainError(errors.invalid_field,
                              "resident_id: a coordinator names the resident they act for")
        resident_id = body.resident_id
        if not in_complex(principal, _home_complex(write, resident_id)):
            raise DomainError(errors.unknown_resident, str(resident_id))
        on_behalf_of = resident_id
    outcome = write.execute(
        c.PlaceGroupBuyOrder(group_buy_id, body.order_id, resident_id, body.quantity,
                             body.points_used_won), on_behalf_of=on_behalf_of)
    return GroupBuyOrderChanged(position=outcome.position, **outcome.result)


@router.post("/group-buy-orders/{order_id}/cancel", response_model=GroupBuyOrderChanged,
             responses=WRITE_ERRORS, tags=["group buys"],
             summary="Cancel an order before the deadline; its hold is released (the resident "
                     "who ordered, or a coordinator of their complex on their behalf)")
def cancel_order(order_id: OrderIdPath,
                 write: Annotated[Write, Depends(writer(Role.RESIDENT, Role.COORDINATOR))]
                 ) -> GroupBuyOrderChanged:
    principal = write.principal
    missing = DomainError(errors.unknown_group_buy_order, order_id)
    locator = write.services.ledger.snapshot(GroupBuyOrderLocator, order_locator_id(order_id))
    if locator is None:
        raise missing
    on_behalf_of = None
    if principal.role == Role.RESIDENT:
        if locator.resident_id != principal.subject:
            raise missing
    else:
        if not in_complex(principal, _home_complex(write, locator.resident_id)):
            raise missing
        on_behalf_of = locator.resident_id
    outcome = write.execute(c.CancelGroupBuyOrder(order_id), on_behalf_of=on_behalf_of)
    return GroupBuyOrderChanged(position=outcome.position, **outcome.result)


@router.post("/group-buys/{group_buy_id}/close", response_model=GroupBuyClosed,
             responses=WRITE_ERRORS, tags=["group buys"],
             summary="Close a group buy: before its deadline once the minimum is reached, or "
                     "after it; every order settles as a trade, or every hold is released "
                     "(the merchant, or the operator)")
def close_group_buy(group_buy_id: GroupBuyId,
                    write: Annotated[Write, Depends(writer(Role.MERCHANT, Role.OPERATOR))]
                    ) -> GroupBuyClosed:
    if write.principal.role == Role.MERCHANT:
        found = write.services.ledger.snapshot(GroupBuy, group_buy_aggregate_id(group_buy_id))
        if found is None or found.merchant_id != write.principal.subject:
            raise DomainError(errors.unknown_group_buy, group_buy_id)
    outcome = write.execute(c.CloseGroupBuy(group_buy_id))
    return GroupBuyClosed(position=outcome.position, **outcome.result)


# Reads -----------------------------------------------------------------------------------

def _visible_orders(read: Read, principal: Principal, row: dict[str, Any], conn: Any,
                    cursor: int | None, limit: int) -> dict[str, Any] | None:
    """The page of orders this caller may see, or None if they may not see the group buy."""
    group_buy_id = row["group_buy_id"]
    complex_ids = {str(complex_id) for complex_id in row["complex_ids"]}
    after = cursor or 0
    if principal.role == Role.MERCHANT:
        if row["merchant_id"] != principal.subject:
            return None
        return projections.group_buy_orders(conn, group_buy_id, after=after, limit=limit)
    if principal.role in SEE_EVERY_ORDER:
        return projections.group_buy_orders(conn, group_buy_id, after=after, limit=limit)
    if principal.role in STAFF_ROLES:
        if str(principal.complex_id) not in complex_ids:
            return None
        return projections.group_buy_orders(conn, group_buy_id, complex_id=principal.complex_id,
                                            after=after, limit=limit)
    assert principal.role == Role.RESIDENT
    own = projections.group_buy_orders(conn, group_buy_id, resident_id=principal.subject,
                                       after=after, limit=limit)
    if own["orders"] or str(_home_complex(read, principal.subject)) in complex_ids:
        return own
    return None


GROUP_BUY_READERS: Final = (Role.RESIDENT, Role.COORDINATOR, Role.MANAGER, Role.MERCHANT,
                            Role.OPERATOR, Role.PLATFORM, Role.AUDITOR)


def _group_buy_page(read: Read, group_buy_id: str, cursor: int | None, limit: int
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The group buy and a page of the orders this caller may see, or the 404 of a
    missing group buy."""
    missing = DomainError(errors.unknown_group_buy, group_buy_id)
    with read.connection() as conn:
        row = projections.group_buy(conn, group_buy_id)
        if row is None:
            raise missing
        page = _visible_orders(read, read.principal, row, conn, cursor, limit)
    if page is None:
        raise missing
    return row, page


@router.get("/group-buys/{group_buy_id}", response_model=GroupBuyView, responses=READ_ERRORS,
            tags=["group buys"],
            summary="A group buy: its terms, state and ordered quantity, with the first "
                    f"{limits.page_size_max} orders the caller may see (residents and staff "
                    "of a complex it is open to, its merchant, the operator, the platform, "
                    "auditors)")
def get_group_buy(group_buy_id: GroupBuyId,
                  read: Annotated[Read, Depends(reader(*GROUP_BUY_READERS))]) -> GroupBuyView:
    row, page = _group_buy_page(read, group_buy_id, None, limits.page_size_max)
    return GroupBuyView(**row, orders=[GroupBuyOrderView(**order) for order in page["orders"]],
                        next_cursor=page["next_cursor"])


@router.get("/group-buys/{group_buy_id}/orders", response_model=GroupBuyOrdersPage,
            responses=READ_ERRORS, tags=["group buys"],
            summary="A page of a group buy's orders the caller may see, in the order they "
                    "were placed (who may see the group buy)")
def get_group_buy_orders(group_buy_id: GroupBuyId,
                         read: Annotated[Read, Depends(reader(*GROUP_BUY_READERS))],
                         cursor: Cursor = None,
                         limit: Limit = limits.page_size_default) -> GroupBuyOrdersPage:
    _, page = _group_buy_page(read, group_buy_id, cursor, limit)
    return GroupBuyOrdersPage(orders=[GroupBuyOrderView(**order) for order in page["orders"]],
                              next_cursor=page["next_cursor"])


@router.get("/complexes/{complex_id}/group-buys", response_model=ComplexGroupBuysView,
            responses=READ_ERRORS, tags=["group buys"],
            summary="The group buys open to a complex's residents now, earliest deadline first "
                    "(its residents, coordinators and managers; the operator, the platform, "
                    "auditors)")
def get_complex_group_buys(complex_id: Annotated[UUID, Path()],
                           read: Annotated[Read, Depends(reader(
                               Role.RESIDENT, Role.COORDINATOR, Role.MANAGER, Role.OPERATOR,
                               Role.PLATFORM, Role.AUDITOR))]) -> ComplexGroupBuysView:
    principal = read.principal
    missing = DomainError(errors.unknown_complex, str(complex_id))
    if principal.role in STAFF_ROLES and not in_complex(principal, complex_id):
        raise missing
    if principal.role == Role.RESIDENT and _home_complex(read, principal.subject) != complex_id:
        raise missing
    with read.connection() as conn:
        exists = conn.execute("SELECT 1 FROM p_complex_funds WHERE complex_id = %s",
                              (complex_id,)).fetchone()
        if exists is None:
            raise missing
        rows = projections.open_group_buys(conn, complex_id, now())
    return ComplexGroupBuysView(complex_id=complex_id,
                                group_buys=[GroupBuySummary(**row) for row in rows])
