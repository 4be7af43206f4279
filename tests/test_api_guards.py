"""Wash-trade guards over HTTP: the policy sets them, a refused trade is a 409 problem with the
guard's code, and the operator's metrics count each refusal by its code."""

# Fixtures come from test_api_fixtures by import, so tests "redefine" their names.
# ruff: noqa: F811
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from api.auth import Role
from test_api_fixtures import key_dir, make_settings  # noqa: F401  (fixture)
from test_metrics import bearer, scrape, serving, value
from world import DEFAULT_RATES, World

REFUSAL = "ledger_trades_refused_by_guard_total"


def trade(buyer: uuid.UUID, seller: uuid.UUID, amount_won: int) -> dict[str, Any]:
    return {"trade_id": f"T-{uuid.uuid4().hex[:10]}", "market": "sharing",
            "category": "childcare", "seller_id": str(seller), "seller_kind": "resident",
            "buyer_id": str(buyer), "amount_won": amount_won, "points_used_won": 0}


def test_guards_refuse_trades_over_http_and_are_counted(world: World, database_url: str,
                                                        schema: str, key_dir: Path) -> None:
    """Each guard answers 409 with its code, and its refusal counter rises by one."""
    settings = make_settings(database_url, schema, key_dir)
    operator, platform = bearer(settings, Role.OPERATOR), bearer(settings, Role.PLATFORM)
    complex_id = world.complex()
    home = world.household(complex_id, "101-101")
    first, second = world.resident(home), world.resident(home)
    neighbour = world.resident(world.household(complex_id, "101-102"))
    with serving(settings) as client:
        version = client.put("/v1/accrual-policy", headers={
            **operator, "Idempotency-Key": "policy-1"}, json={
            "rates": DEFAULT_RATES,
            "guards": {"pair_trades_per_month_max": 2, "sharing_accrual_won_per_month_max": 400}})
        assert version.status_code == 200, version.text
        shown = client.get("/v1/accrual-policy", headers=platform).json()["guards"]
        assert shown == {"same_household_trades": "refused", "pair_trades_per_month_max": 2,
                         "sharing_accrual_won_per_month_max": 400}
        before = scrape(client)

        def send(body: dict[str, Any]) -> Any:
            return client.post("/v1/trades", json=body, headers={
                **platform, "Idempotency-Key": body["trade_id"]})

        household = send(trade(first, second, 1_000))
        assert household.status_code == 409
        assert household.json()["code"] == "same_household_trade"
        assert send(trade(first, neighbour, 10_000)).status_code == 201  # accrues 300 of 400
        sharing = send(trade(first, neighbour, 10_000))
        assert (sharing.status_code, sharing.json()["code"]) == (
            409, "sharing_accrual_cap_reached")
        assert send(trade(neighbour, first, 1_000)).status_code == 201  # the pair's second
        pair = send(trade(first, neighbour, 100))
        assert (pair.status_code, pair.json()["code"]) == (409, "pair_trade_cap_reached")
        english = client.post("/v1/trades", json=trade(first, second, 1_000), headers={
            **platform, "Idempotency-Key": "english", "Accept-Language": "en"})
        assert "same household" in english.json()["title"]
        after = scrape(client)

    def increase(code: str) -> float:
        return value(after, REFUSAL, code=code) - value(before, REFUSAL, code=code)

    assert increase("same_household_trade") == 2
    assert increase("sharing_accrual_cap_reached") == 1
    assert increase("pair_trade_cap_reached") == 1


def test_bad_guard_settings_are_refused(world: World, database_url: str, schema: str,
                                        key_dir: Path) -> None:
    """A guard setting out of its range is a 422 and sets no version."""
    settings = make_settings(database_url, schema, key_dir)
    operator = bearer(settings, Role.OPERATOR)
    with serving(settings) as client:
        response = client.put("/v1/accrual-policy", headers={
            **operator, "Idempotency-Key": "policy-bad"}, json={
            "rates": DEFAULT_RATES, "guards": {"pair_trades_per_month_max": -1}})
        assert response.status_code == 422


def test_guard_settings_written_as_whole_floats_are_taken_as_integers(
        world: World, database_url: str, schema: str, key_dir: Path) -> None:
    """JSON does not tell 400 from 400.0: guard settings, like every other count of the API,
    take a whole float as its integer (a generated client may send one); 400.5 is a 422."""
    assert world
    settings = make_settings(database_url, schema, key_dir)
    operator = bearer(settings, Role.OPERATOR)
    with serving(settings) as client:
        response = client.put("/v1/accrual-policy", headers={
            **operator, "Idempotency-Key": "policy-floats"}, json={
            "rates": DEFAULT_RATES, "guards": {"pair_trades_per_month_max": 7.0,
                                               "sharing_accrual_won_per_month_max": 400.0}})
        assert response.status_code == 200, response.text
        shown = client.get("/v1/accrual-policy", headers=operator).json()["guards"]
        assert (shown["pair_trades_per_month_max"],
                shown["sharing_accrual_won_per_month_max"]) == (7, 400)
        fraction = client.put("/v1/accrual-policy", headers={
            **operator, "Idempotency-Key": "policy-fraction"}, json={
            "rates": DEFAULT_RATES, "guards": {"sharing_accrual_won_per_month_max": 400.5}})
        assert fraction.status_code == 422
