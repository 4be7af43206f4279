"""Request and response bodies of the group-buy routes (see api.routes_group_buys).

The same rules as api.models: requests forbid unknown fields and bound everything by the
ledger's limits; responses forbid extra fields, and each role gets only the orders it may
see.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BeforeValidator, Field

from api.models import (
    IDENTIFIER_PATTERN,
    WHOLE_NUMBER,
    AmountWon,
    AmountWonOrZero,
    Identifier,
    RequestBody,
    ResponseBody,
    Text,
    Written,
    _date_time_text,
)
from ledger import limits

GroupBuyState = Literal["open", "completed", "cancelled"]
OrderStatus = Literal["open", "cancelled", "settled", "released"]

Quantity = Annotated[int, Field(
    strict=True, ge=1, le=limits.group_buy_quantity_max,
    description=f"Units, 1–{limits.group_buy_quantity_max:,}."), WHOLE_NUMBER]
OrderId = Annotated[str, Field(
    min_length=1, max_length=limits.group_buy_order_id_length_max, pattern=IDENTIFIER_PATTERN,
    description=f"Client-chosen order id: 1–{limits.group_buy_order_id_length_max} printable "
                "ASCII characters, no spaces (unique across group buys). The order's trade, "
                f"once the group buy completes, is `{limits.group_buy_trade_prefix}<order_id>`.")]
DeadlineAt = Annotated[AwareDatetime, BeforeValidator(_date_time_text), Field(
    description="RFC 3339 with offset: after now and within "
                f"{limits.group_buy_open_days_max} days (else 409 `group_buy_deadline_passed` "
                "or 422 `invalid_field`).")]


# Requests --------------------------------------------------------------------------------

class GroupBuyRequest(RequestBody):
    group_buy_id: Identifier
    merchant_id: UUID = Field(description="The selling merchant (a merchant opens only its own).")
    category: Text = Field(examples=["ventilation_filter", "move_in_cleaning"])
    unit_price_won: AmountWon
    quantity_min: Quantity = Field(description="The group buy completes only if at least this "
                                               "many units are ordered by the deadline.")
    quantity_max: Quantity = Field(description="At most this many units are ever ordered "
                                               "(at least `quantity_min`, else 422).")
    deadline_at: DeadlineAt
    complex_ids: list[UUID] = Field(
        min_length=1, max_length=limits.group_buy_complexes_max,
        description="The complexes whose residents may order, 1–"
                    f"{limits.group_buy_complexes_max}, distinct.")


class GroupBuyOrderRequest(RequestBody):
    order_id: OrderId
    quantity: Quantity
    points_used_won: AmountWonOrZero = Field(default=0, description=(
        "Points paying part of the price, held at once until the outcome; at most quantity × "
        "unit_price_won (else 422 `points_exceed_amount`). The rest, the money part, is paid "
        "on the platform."))
    resident_id: UUID | None = Field(default=None, description=(
        "The resident a coordinator orders for (required of coordinators; a resident must not "
        "send it: they order as the token's subject)."))


# Write responses -------------------------------------------------------------------------

class GroupBuyOpened(Written):
    group_buy_id: str
    state: GroupBuyState
    deadline_at: datetime


class GroupBuyOrderChanged(Written):
    group_buy_id: str
    order_id: str
    status: OrderStatus
    quantity: int
    points_used_won: int
    money_won: int = Field(description="quantity × unit_price_won − points_used_won: what the "
                                       "platform captures if the group buy completes.")
    quantity_ordered: int = Field(description="The group buy's open ordered quantity now.")


class GroupBuyClosed(Written):
    group_buy_id: str
    state: GroupBuyState
    quantity_ordered: int
    orders_count: int
    points_used_won_total: int
    money_won_total: int
    reason: str | None = Field(default=None, examples=["minimum_not_reached"])


# Read responses --------------------------------------------------------------------------

class GroupBuyOrderView(ResponseBody):
    order_id: str
    group_buy_id: str
    resident_id: UUID
    complex_id: UUID
    quantity: int
    points_used_won: int
    money_won: int
    status: OrderStatus
    trade_id: str | None = Field(default=None, description="Set once settled: refund the "
                                                           "order by refunding this trade.")
    placed_at: datetime
    actor_role: str
    on_behalf_of: UUID | None = None
    resolved_at: datetime | None = None


class GroupBuySummary(ResponseBody):
    group_buy_id: str
    merchant_id: UUID
    seller_kind: str
    category: str
    unit_price_won: int
    quantity_min: int
    quantity_max: int
    deadline_at: datetime
    state: GroupBuyState
    quantity_ordered: int = Field(description="Units in open (or, once closed, in settled or "
                                              "released) orders.")
    orders_count: int
    opened_at: datetime
    closed_at: datetime | None = None
    closed: str | None = Field(default=None, description="`deadline` or `early` when "
                                                         "completed; `minimum_not_reached` when "
                                                         "cancelled.")
    points_used_won_total: int | None = None
    money_won_total: int | None = None


class GroupBuyView(GroupBuySummary):
    complex_ids: list[UUID]
    orders: list[GroupBuyOrderView] = Field(description=(
        f"The first {limits.page_size_max} orders the caller may see, in the order they were "
        "placed: a resident their own; a coordinator or manager those of their complex; the "
        "merchant, the operator, the platform and auditors every one. More: "
        "`GET /v1/group-buys/{group_buy_id}/orders?cursor=next_cursor`."))
    next_cursor: int | None = Field(default=None, description="Null when every order the "
                                                               "caller may see is listed.")


class GroupBuyOrdersPage(ResponseBody):
    orders: list[GroupBuyOrderView]
    next_cursor: int | None = Field(default=None, description="Pass as `cursor` for the "
                                                               "next page; null on the last.")


class ComplexGroupBuysView(ResponseBody):
    complex_id: UUID
    group_buys: list[GroupBuySummary]
