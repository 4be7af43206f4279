"""Group buys over HTTP: a merchant opens, residents order (a coordinator for them), cancel,
and the merchant or the sweeper closes; each caller sees only what they may."""

# Fixtures come from test_api_fixtures by import, so tests "redefine" their names.
# ruff: noqa: F811

from __future__ import annotations

from datetime import timedelta
from typing import Any

from api.auth import Role
from ledger.application import now
from service.sweeper import ExpirySweeper
from test_api_fixtures import ApiWorld, api, key_dir  # noqa: F401  (fixtures)


def open_body(api: ApiWorld, group_buy_id: str = "GB-1", **changes: Any) -> dict[str, Any]:
    body = {"group_buy_id": group_buy_id, "merchant_id": str(api.merchants["m1"]),
            "category": "ventilation_filter", "unit_price_won": 20_000, "quantity_min": 2,
            "quantity_max": 10, "deadline_at": (now() + timedelta(days=2)).isoformat(),
            "complex_ids": [str(api.complex_a)]}
    body.update(changes)
    return body


def test_a_group_buy_from_opening_to_completion(api: ApiWorld) -> None:
    """The merchant opens; a resident orders with points (held at once) and a coordinator
    orders for another; the merchant closes early; every order is a settled trade that
    refunds on its own."""
    merchant, resident = api.callers["merchant"], api.callers["resident"]
    opened = api.ok("POST", "/v1/group-buys", merchant, open_body(api))
    assert opened["state"] == "open"
    held_before = api.get("/v1/me/wallet", resident).json()["held_won"]
    ordered = api.ok("POST", "/v1/group-buys/GB-1/orders", resident,
                     {"order_id": "O-a1", "quantity": 2, "points_used_won": 5_000})
    assert (ordered["money_won"], ordered["quantity_ordered"]) == (35_000, 2)
    assert api.get("/v1/me/wallet", resident).json()["held_won"] == held_before + 5_000
    api.ok("POST", "/v1/group-buys/GB-1/orders", api.callers["coordinator"],
           {"order_id": "O-a2", "quantity": 1, "resident_id": str(api.residents["a2"])})
    view = api.get("/v1/group-buys/GB-1", merchant).json()
    assert (view["state"], view["quantity_ordered"], view["orders_count"]) == ("open", 3, 2)
    by_id = {order["order_id"]: order for order in view["orders"]}
    assert by_id["O-a2"]["on_behalf_of"] == str(api.residents["a2"])
    assert by_id["O-a2"]["actor_role"] == "coordinator"
    # A resident sees the group buy with their own order only.
    mine = api.get("/v1/group-buys/GB-1", resident).json()
    assert [order["order_id"] for order in mine["orders"]] == ["O-a1"]
    listed = api.get(f"/v1/complexes/{api.complex_a}/group-buys", resident).json()
    assert [g["group_buy_id"] for g in listed["group_buys"]] == ["GB-1"]
    closed = api.ok("POST", "/v1/group-buys/GB-1/close", merchant)
    assert (closed["state"], closed["orders_count"], closed["money_won_total"]) == (
        "completed", 2, 35_000 + 20_000)
    view = api.get("/v1/group-buys/GB-1", api.callers["platform"]).json()
    assert view["state"] == "completed" and view["closed"] == "early"
    assert view["next_cursor"] is None
    first = api.get("/v1/group-buys/GB-1/orders", merchant, limit=1).json()
    second = api.get("/v1/group-buys/GB-1/orders", merchant, limit=1,
                     cursor=first["next_cursor"]).json()
    assert [o["order_id"] for o in first["orders"] + second["orders"]] == ["O-a1", "O-a2"]
    assert second["next_cursor"] is None
    assert {order["status"] for order in view["orders"]} == {"settled"}
    assert {order["trade_id"] for order in view["orders"]} == {"group-buy:O-a1",
                                                                "group-buy:O-a2"}
    assert api.get("/v1/me/wallet", resident).json()["held_won"] == held_before
    # Closed: no longer listed for the complex, and its trades refund one by one.
    listed = api.get(f"/v1/complexes/{api.complex_a}/group-buys", resident).json()
    assert listed["group_buys"] == []
    refunded = api.ok("POST", "/v1/trades/group-buy:O-a1/refund", api.callers["platform"])
    assert refunded["points_returned_won"] == 5_000


def test_the_sweeper_cancels_a_group_buy_short_of_its_minimum(api: ApiWorld) -> None:
    """At the deadline below the minimum, the sweeper cancels it: every hold is released and
    the group buy reads cancelled; a second sweep does nothing."""
    resident = api.callers["resident"]
    api.ok("POST", "/v1/group-buys", api.callers["operator"], open_body(api, quantity_min=5))
    before = api.get("/v1/me/wallet", resident).json()
    api.ok("POST", "/v1/group-buys/GB-1/orders", resident,
           {"order_id": "O-1", "quantity": 1, "points_used_won": 2_000})
    sweeper = ExpirySweeper(api.services.ledger, api.services.pool, 60)
    api.services.wait_until_visible(api.log_position())
    assert sweeper.close_due_group_buys() == 0  # not due yet
    later = now() + timedelta(days=3)
    assert sweeper.close_due_group_buys(later) == 1
    api.position = api.log_position()
    assert sweeper.close_due_group_buys(later) == 0
    view = api.get("/v1/group-buys/GB-1", resident).json()
    assert view["state"] == "cancelled" and view["closed"] == "minimum_not_reached"
    assert [order["status"] for order in view["orders"]] == ["released"]
    after = api.get("/v1/me/wallet", resident).json()
    assert (after["available_won"], after["held_won"]) == (before["available_won"],
                                                            before["held_won"])


def test_orders_are_refused_with_stable_codes(api: ApiWorld) -> None:
    """A resident of another complex, an order beyond the maximum, and more points than the
    price are refused with their codes; a resident naming another resident is refused."""
    api.ok("POST", "/v1/group-buys", api.callers["merchant"], open_body(api))
    outsider = api.send("POST", "/v1/group-buys/GB-1/orders", api.callers["resident_b1"],
                        {"order_id": "O-b", "quantity": 1})
    assert (outsider.status_code, outsider.json()["code"]) == (
        403, "group_buy_not_open_to_complex")
    beyond = api.send("POST", "/v1/group-buys/GB-1/orders", api.callers["resident"],
                      {"order_id": "O-x", "quantity": 11})
    assert (beyond.status_code, beyond.json()["code"]) == (422, "invalid_quantity")
    api.ok("POST", "/v1/group-buys/GB-1/orders", api.callers["resident"],
           {"order_id": "O-9", "quantity": 9})
    exceeded = api.send("POST", "/v1/group-buys/GB-1/orders", api.callers["resident_a2"],
                        {"order_id": "O-y", "quantity": 2})
    assert (exceeded.status_code, exceeded.json()["code"]) == (
        409, "group_buy_quantity_exceeded")
    too_many_points = api.send("POST", "/v1/group-buys/GB-1/orders", api.callers["resident_a2"],
                               {"order_id": "O-z", "quantity": 1, "points_used_won": 20_001})
    assert too_many_points.json()["code"] == "points_exceed_amount"
    naming = api.send("POST", "/v1/group-buys/GB-1/orders", api.callers["resident"],
                      {"order_id": "O-n", "quantity": 1,
                       "resident_id": str(api.residents["a2"])})
    assert (naming.status_code, naming.json()["code"]) == (422, "invalid_field")
    api.ok("POST", "/v1/group-buys", api.callers["merchant"], open_body(api, "GB-2"))
    early = api.send("POST", "/v1/group-buys/GB-2/close", api.callers["operator"])
    assert (early.status_code, early.json()["code"]) == (409, "group_buy_minimum_not_reached")


def test_only_the_owner_cancels_an_order(api: ApiWorld) -> None:
    """Another resident cancelling an order gets the 404 of a missing order; the resident,
    or a coordinator of their complex, cancels it and the hold is released."""
    api.ok("POST", "/v1/group-buys", api.callers["merchant"], open_body(api))
    api.ok("POST", "/v1/group-buys/GB-1/orders", api.callers["resident"],
           {"order_id": "O-1", "quantity": 1, "points_used_won": 100})
    api.ok("POST", "/v1/group-buys/GB-1/orders", api.callers["resident"],
           {"order_id": "O-2", "quantity": 1})
    other = api.send("POST", "/v1/group-buy-orders/O-1/cancel", api.callers["resident_a2"])
    missing = api.send("POST", "/v1/group-buy-orders/O-none/cancel", api.callers["resident_a2"])
    assert (other.status_code, other.json()["code"]) == (missing.status_code,
                                                         missing.json()["code"])
    assert other.status_code == 404
    outsider = api.send("POST", "/v1/group-buy-orders/O-1/cancel", api.callers["coordinator_b"])
    assert outsider.status_code == 404
    cancelled = api.ok("POST", "/v1/group-buy-orders/O-1/cancel", api.callers["resident"])
    assert (cancelled["status"], cancelled["quantity_ordered"]) == ("cancelled", 1)
    by_coordinator = api.ok("POST", "/v1/group-buy-orders/O-2/cancel",
                            api.callers["coordinator"])
    assert by_coordinator["quantity_ordered"] == 0
    again = api.send("POST", "/v1/group-buy-orders/O-1/cancel", api.callers["resident"])
    assert (again.status_code, again.json()["code"]) == (409, "order_already_cancelled")


def test_a_merchant_acts_only_for_itself(api: ApiWorld) -> None:
    """A merchant cannot open a group buy for another merchant, nor close or see another
    merchant's group buy: the 404 of a missing one."""
    other = api.caller(Role.MERCHANT, api.merchants["m2"])
    refused = api.send("POST", "/v1/group-buys", other, open_body(api))
    assert (refused.status_code, refused.json()["code"]) == (404, "unknown_merchant")
    api.ok("POST", "/v1/group-buys", api.callers["merchant"], open_body(api, quantity_min=1))
    assert api.send("POST", "/v1/group-buys/GB-1/close", other).status_code == 404
    assert api.get("/v1/group-buys/GB-1", other).status_code == 404
    assert api.get("/v1/group-buys/GB-1", api.callers["merchant"]).status_code == 200
