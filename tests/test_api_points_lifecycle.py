"""The points lifecycle through the HTTP API, as the app and the operator see it."""

# Fixtures come from test_api_fixtures by import, so tests "redefine" their names.
# ruff: noqa: F811

from __future__ import annotations

from datetime import timedelta

from ledger.application import now
from service.sweeper import ExpirySweeper
from test_api_fixtures import ApiWorld, api, key_dir  # noqa: F401  (fixtures)


def test_pending_points_show_in_the_wallet_and_fund_until_the_sweeper_releases_them(
        api: ApiWorld) -> None:
    """A shopping trade's points are pending (in the wallet and the fund, not spendable);
    the sweeper makes them available once the window has ended."""
    resident, manager = api.callers["resident"], api.callers["manager"]
    before = api.get("/v1/me/wallet", resident).json()
    recorded = api.trade("a1", api.merchants["m1"], 100_000, seller_kind="small_firm",
                         trade_id="T-pend")
    assert recorded["pending_until"] is not None
    api.position = recorded["position"]
    wallet = api.get("/v1/me/wallet", resident, consistent_with=recorded["position"]).json()
    assert wallet["pending_won"] == before["pending_won"] + recorded["personal_accrued_won"]
    assert wallet["available_won"] == before["available_won"]
    assert wallet["next_available_at"] is not None
    fund = api.get(f"/v1/complexes/{api.complex_a}/fund", manager,
                   consistent_with=recorded["position"]).json()
    assert fund["pending_won"] >= recorded["common_accrued_won"]
    sweeper = ExpirySweeper(api.services.ledger, api.services.pool, 60)
    assert sweeper.sweep_points(now() + timedelta(days=8))[0] >= 1
    after = api.get("/v1/me/wallet", resident, consistent_with=api.log_position()).json()
    assert after["pending_won"] == 0
    assert after["available_won"] == (before["available_won"] + before["pending_won"]
                                      + recorded["personal_accrued_won"])


def test_a_refund_inside_the_window_cancels_the_pending_points(api: ApiWorld) -> None:
    """Refunded inside its window, a trade's pending points are cancelled: nothing owed."""
    recorded = api.trade("a1", api.merchants["m1"], 100_000, seller_kind="small_firm",
                         trade_id="T-back")
    refunded = api.ok("POST", "/v1/trades/T-back/refund", api.callers["platform"])
    assert (refunded["personal_cancelled_won"], refunded["personal_clawback_won"]) == (
        recorded["personal_accrued_won"], 0)
    wallet = api.get("/v1/me/wallet", api.callers["resident"],
                     consistent_with=refunded["position"]).json()
    assert wallet["owed_won"] == 0


def test_the_operator_sets_a_lifecycle_with_the_policy(api: ApiWorld) -> None:
    """A policy version's lifecycle is set with its rates and shown with the policy."""
    operator = api.callers["operator"]
    rates = api.get("/v1/accrual-policy", operator).json()["rates"]
    api.ok("PUT", "/v1/accrual-policy", operator, {
        "rates": rates, "lifecycle": {"return_window_days": {"shopping": 14},
                                      "expired_to": "issuance"}})
    policy = api.get("/v1/accrual-policy", operator).json()
    assert policy["lifecycle"] == {"return_window_days": {"shopping": 14, "sharing": 0},
                                   "expiry_months": 24, "expired_to": "issuance",
                                   "moved_out_to": "fund"}
    refused = api.send("PUT", "/v1/accrual-policy", operator,
                       {"rates": rates, "lifecycle": {"expiry_months": 0}})
    assert refused.status_code == 422
