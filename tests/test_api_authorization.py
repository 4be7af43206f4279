"""Who may do what: every route for every role, own / same complex / other complex;
a resident probing other residents' ids learns nothing; bodies cannot smuggle fields."""

# Fixtures come from test_api_fixtures by import, so tests "redefine" their names.
# ruff: noqa: F811

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from api.auth import Role
from ledger.application import now
from test_api_fixtures import ApiWorld, Caller, api, key_dir  # noqa: F401  (fixtures)
from votes_api import open_proposal, past_proposal
from world import GUARDS_OFF

OWN, SAME, OTHER = "own", "same complex", "other complex"
RELATIONS = (OWN, SAME, OTHER)
ROLES = ("resident", "coordinator", "manager", "merchant", "auditor", "billing", "platform",
         "operator")


def _group_buy_body(api: ApiWorld, group_buy_id: str, merchant: str, complex_id: uuid.UUID,
                   quantity_min: int = 5) -> dict[str, Any]:
    return {"group_buy_id": group_buy_id, "merchant_id": str(api.merchants[merchant]),
            "category": "filters", "unit_price_won": 1_000, "quantity_min": quantity_min,
            "quantity_max": 100, "deadline_at": (now() + timedelta(days=2)).isoformat(),
            "complex_ids": [str(complex_id)]}


def group_buys(api: ApiWorld) -> dict[str, str]:
    """Group buys by relation to the callers of complex A and merchant m1 (made once): one
    of m1 open to A with an order of a1, one of m1 open to A, one of m2 open to B."""
    if "GB-own" not in api.invoices:  # marks that they exist (the fixture is per test)
        operator = api.callers["operator"]
        api.ok("POST", "/v1/group-buys", operator,
               _group_buy_body(api, "GB-own", "m1", api.complex_a))
        api.ok("POST", "/v1/group-buys", operator,
               _group_buy_body(api, "GB-same", "m1", api.complex_a))
        api.ok("POST", "/v1/group-buys", operator,
               _group_buy_body(api, "GB-other", "m2", api.complex_b))
        api.ok("POST", "/v1/group-buys/GB-own/orders", api.callers["resident"],
               {"order_id": "O-own", "quantity": 1, "points_used_won": 10})
        api.invoices["GB-own"] = "made"
    return {OWN: "GB-own", SAME: "GB-same", OTHER: "GB-other"}


def read_targets(api: ApiWorld) -> dict[str, Callable[[str], str]]:
    """Each read route, as a function from relation to the path of such a target."""
    residents = {OWN: "a1", SAME: "a2", OTHER: "b1"}
    offers = group_buys(api)
    merchants = {OWN: "m1", SAME: "m2", OTHER: "m2"}
    complexes = {OWN: api.complex_a, SAME: api.complex_a, OTHER: api.complex_b}
    proposal_a = open_proposal(api, api.complex_a)
    proposals = {OWN: proposal_a, SAME: proposal_a,
                 OTHER: open_proposal(api, api.complex_b, "manager_b")}
    return {
        "proposal": lambda r: f"/v1/proposals/{proposals[r]}",
        "proposals": lambda r: f"/v1/complexes/{complexes[r]}/proposals",
        "ballots": lambda r: f"/v1/proposals/{proposals[r]}/ballots",
        "wallet": lambda r: f"/v1/wallets/{api.residents[residents[r]]}",
        "entries": lambda r: f"/v1/wallets/{api.residents[residents[r]]}/entries",
        "rent": lambda r: f"/v1/households/{api.households[residents[r]]}/rent",
        "payment": lambda r: f"/v1/rent-payments/{api.payments[residents[r]]}",
        "fund": lambda r: f"/v1/complexes/{complexes[r]}/fund",
        "settlement": lambda r: f"/v1/merchants/{api.merchants[merchants[r]]}/settlement",
        "stats": lambda r: f"/v1/markets/stats?complex_id={complexes[r]}",
        "me": lambda _relation: "/v1/me/wallet",
        "me_entries": lambda _relation: "/v1/me/wallet/entries",
        "policy": lambda _relation: "/v1/accrual-policy",
        "group_buy": lambda r: f"/v1/group-buys/{offers[r]}",
        "group_buy_orders": lambda r: f"/v1/group-buys/{offers[r]}/orders",
        "complex_group_buys": lambda r: f"/v1/complexes/{complexes[r]}/group-buys",
    }


ALL_OK = (200, 200, 200)
FORBIDDEN = (403, 403, 403)
OWN_ONLY = (200, 404, 404)
COMPLEX_ONLY = (200, 200, 404)

# route -> role -> expected status for (own, same complex, other complex).
READ_MATRIX: dict[str, dict[str, tuple[int, int, int]]] = {
    "wallet": {"resident": OWN_ONLY, "coordinator": COMPLEX_ONLY, "manager": COMPLEX_ONLY,
               "auditor": ALL_OK},
    "entries": {"resident": OWN_ONLY, "coordinator": COMPLEX_ONLY, "auditor": ALL_OK},
    "rent": {"resident": OWN_ONLY, "coordinator": COMPLEX_ONLY, "billing": ALL_OK,
             "auditor": ALL_OK},
    "payment": {"resident": OWN_ONLY, "coordinator": COMPLEX_ONLY, "billing": ALL_OK,
                "auditor": ALL_OK},
    "fund": {"manager": COMPLEX_ONLY, "coordinator": COMPLEX_ONLY, "operator": ALL_OK,
             "auditor": ALL_OK},
    "settlement": {"merchant": (200, 404, 404), "operator": ALL_OK, "auditor": ALL_OK},
    "stats": {"manager": COMPLEX_ONLY, "coordinator": COMPLEX_ONLY, "operator": ALL_OK,
              "platform": ALL_OK, "auditor": ALL_OK},
    "proposal": {"resident": COMPLEX_ONLY, "coordinator": COMPLEX_ONLY,
                 "manager": COMPLEX_ONLY, "operator": ALL_OK, "auditor": ALL_OK},
    "proposals": {"resident": COMPLEX_ONLY, "coordinator": COMPLEX_ONLY,
                  "manager": COMPLEX_ONLY, "operator": ALL_OK, "auditor": ALL_OK},
    "ballots": {"auditor": ALL_OK},
    "me": {"resident": ALL_OK},
    "me_entries": {"resident": ALL_OK},
    "policy": dict.fromkeys(("resident", "coordinator", "manager", "merchant", "auditor",
                             "billing", "platform", "operator"), ALL_OK),
    "group_buy": {"resident": COMPLEX_ONLY, "coordinator": COMPLEX_ONLY,
                  "manager": COMPLEX_ONLY, "merchant": COMPLEX_ONLY, "operator": ALL_OK,
                  "platform": ALL_OK, "auditor": ALL_OK},
    "group_buy_orders": {"resident": COMPLEX_ONLY, "coordinator": COMPLEX_ONLY,
                         "manager": COMPLEX_ONLY, "merchant": COMPLEX_ONLY, "operator": ALL_OK,
                         "platform": ALL_OK, "auditor": ALL_OK},
    "complex_group_buys": {"resident": COMPLEX_ONLY, "coordinator": COMPLEX_ONLY,
                           "manager": COMPLEX_ONLY, "operator": ALL_OK, "platform": ALL_OK,
                           "auditor": ALL_OK},
}


def test_read_authorisation_matrix(api: ApiWorld) -> None:
    """Every read route answers each role, for its own, same-complex and other-complex
    objects, exactly as the matrix says (and 401 without a token)."""
    targets = read_targets(api)
    failures = []
    for route, expected_by_role in READ_MATRIX.items():
        for role in ROLES:
            expected = expected_by_role.get(role, FORBIDDEN)
            for relation, status in zip(RELATIONS, expected, strict=True):
                path = targets[route](relation)
                response = api.get(path, api.callers[role])
                if response.status_code != status:
                    failures.append((route, role, relation, status, response.status_code,
                                     response.text[:200]))
                if response.status_code >= 400:
                    assert response.headers["content-type"] == "application/problem+json"
            unauthenticated = api.client.get(targets[route](OWN))
            assert unauthenticated.status_code == 401
    assert failures == []


def test_staff_see_balances_only(api: ApiWorld) -> None:
    """A coordinator or manager gets the staff view of a wallet; the resident and auditors
    get the whole wallet."""
    path = f"/v1/wallets/{api.residents['a1']}"
    staff = api.get(path, api.callers["manager"]).json()
    assert staff["view"] == "staff"
    assert "owed_won" not in staff and "accrued_total_won" not in staff
    for who in ("resident", "auditor"):
        full = api.get(path, api.callers[who]).json()
        assert full["view"] == "owner"
        assert full["accrued_total_won"] == 30_000 + 900  # 2 % of 45,000 won paid in money


def _write_cases(api: ApiWorld) -> list[tuple[str, str, str, Callable[[], Any], int]]:
    """(role, method, path, body factory, expected status) for every write route.

    Allowed roles are tried on their own object and on another complex's; every other
    role gets 403 whatever it sends.
    """
    hh, res, merchants = api.households, api.residents, api.merchants

    def new_id(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    def trade() -> dict[str, Any]:
        return {"trade_id": new_id("T"), "market": "sharing", "category": "childcare",
                "seller_id": str(res["a2"]), "seller_kind": "resident",
                "buyer_id": str(res["a1"]), "amount_won": 1_000}

    def payment(household: str, resident: str | None = None) -> Callable[[], Any]:
        def body() -> dict[str, Any]:
            result = {"payment_id": new_id("P"), "household_id": str(hh[household]),
                      "invoice_id": api.invoices[household], "billing_period": "2026-11",
                      "amount_won": 10}
            if resident is not None:
                result["resident_id"] = str(res[resident])
            return result
        return body

    def spend() -> dict[str, Any]:
        return {"spend_id": new_id("S"), "purpose": "event", "amount_won": 10,
                "decision_ref": "minutes"}

    def enrol(household: str) -> Callable[[], Any]:
        return lambda: {"household_id": str(hh[household]), "consent_ref": "paper"}

    def moving_resident(household: str) -> str:
        return api.ok("POST", "/v1/residents", api.callers["platform"],
                      enrol(household)())["resident_id"]

    def proposal_body() -> dict[str, Any]:
        return {"proposal_id": new_id("V"), "purpose": "event", "title": "Fair",
                "amount_won": 100,
                "voting_closes_at": (now() + timedelta(hours=2)).isoformat()}

    def coordinator_ballot(resident: str) -> Callable[[], Any]:
        return lambda: {"choice": "no", "resident_id": str(res[resident]),
                        "consent_ref": "paper-form"}

    def held_payment() -> str:
        return api.ok("POST", "/v1/rent-payments", api.callers["resident"],
                      payment("a1")())["payment_id"]

    def recorded_trade() -> str:
        return str(api.ok("POST", "/v1/trades", api.callers["platform"], trade())["trade_id"])

    def offer(merchant: str, complex_id: uuid.UUID, quantity_min: int = 5) -> str:
        group_buy_id = new_id("GB")
        api.ok("POST", "/v1/group-buys", api.callers["operator"],
               _group_buy_body(api, group_buy_id, merchant, complex_id, quantity_min))
        return group_buy_id

    def order(group_buy_id: str, who: str) -> str:
        return str(api.ok("POST", f"/v1/group-buys/{group_buy_id}/orders", api.callers[who],
                          {"order_id": new_id("O"), "quantity": 1})["order_id"])

    def order_body(resident: str | None = None) -> Callable[[], Any]:
        def body() -> dict[str, Any]:
            result: dict[str, Any] = {"order_id": new_id("O"), "quantity": 1,
                                      "points_used_won": 10}
            if resident is not None:
                result["resident_id"] = str(res[resident])
            return result
        return body

    def reached(merchant: str) -> str:
        group_buy_id = offer(merchant, api.complex_a, quantity_min=1)
        order(group_buy_id, "resident")
        return group_buy_id

    a, b = api.complex_a, api.complex_b
    allowed: list[tuple[str, str, Callable[[], str], Callable[[], Any], int]] = [
        ("merchant", "POST", lambda: "/v1/group-buys",
         lambda: _group_buy_body(api, new_id("GB"), "m1", a), 201),
        ("merchant", "POST", lambda: "/v1/group-buys",
         lambda: _group_buy_body(api, new_id("GB"), "m2", a), 404),
        ("operator", "POST", lambda: "/v1/group-buys",
         lambda: _group_buy_body(api, new_id("GB"), "m2", b), 201),
        ("resident", "POST", lambda: f"/v1/group-buys/{offer('m1', a)}/orders", order_body(),
         201),
        ("resident", "POST", lambda: f"/v1/group-buys/{offer('m2', b)}/orders", order_body(),
         403),
        ("coordinator", "POST", lambda: f"/v1/group-buys/{offer('m1', a)}/orders",
         order_body("a2"), 201),
        ("coordinator", "POST", lambda: f"/v1/group-buys/{offer('m2', b)}/orders",
         order_body("b1"), 404),
        ("resident", "POST",
         lambda: f"/v1/group-buy-orders/{order(offer('m1', a), 'resident')}/cancel",
         lambda: None, 200),
        ("resident", "POST",
         lambda: f"/v1/group-buy-orders/{order(offer('m1', a), 'resident_a2')}/cancel",
         lambda: None, 404),
        ("coordinator", "POST",
         lambda: f"/v1/group-buy-orders/{order(offer('m1', a), 'resident_a2')}/cancel",
         lambda: None, 200),
        ("coordinator", "POST",
         lambda: f"/v1/group-buy-orders/{order(offer('m2', b), 'resident_b1')}/cancel",
         lambda: None, 404),
        ("merchant", "POST", lambda: f"/v1/group-buys/{reached('m1')}/close", lambda: None,
         200),
        ("merchant", "POST", lambda: f"/v1/group-buys/{reached('m2')}/close", lambda: None,
         404),
        ("operator", "POST", lambda: f"/v1/group-buys/{reached('m2')}/close", lambda: None,
         200),
        ("operator", "POST", lambda: "/v1/complexes",
         lambda: {"code": new_id("C"), "name": "n", "region": "r"}, 201),
        ("operator", "POST", lambda: "/v1/households",
         lambda: {"complex_id": str(a), "unit": new_id("U")}, 201),
        ("operator", "POST", lambda: "/v1/merchants",
         lambda: {"kind": "local_food", "name": "farm"}, 201),
        ("operator", "PUT", lambda: "/v1/accrual-policy", lambda: {"rates": [
            {"market": "sharing", "seller_kind": "resident", "personal_bps": 300,
             "common_bps": 100},
            {"market": "shopping", "seller_kind": "small_firm", "personal_bps": 200,
             "common_bps": 100}], "guards": GUARDS_OFF}, 200),
        ("operator", "POST", lambda: f"/v1/merchants/{merchants['m1']}/payouts",
         lambda: {"payout_id": new_id("PO")}, 201),
        ("operator", "POST", lambda: f"/v1/residents/{moving_resident('b1')}/move-out",
         lambda: None, 200),
        ("coordinator", "POST", lambda: f"/v1/residents/{moving_resident('a2')}/move-out",
         lambda: None, 200),
        ("coordinator", "POST", lambda: f"/v1/residents/{moving_resident('b1')}/move-out",
         lambda: None, 404),
        ("new_resident", "POST", lambda: "/v1/residents", enrol("a1"), 201),
        ("coordinator", "POST", lambda: "/v1/residents", enrol("a1"), 201),
        ("coordinator", "POST", lambda: "/v1/residents", enrol("b1"), 404),
        ("platform", "POST", lambda: "/v1/residents", enrol("b1"), 201),
        ("platform", "POST", lambda: "/v1/trades", trade, 201),
        ("platform", "POST", lambda: f"/v1/trades/{recorded_trade()}/refund", lambda: None,
         200),
        ("billing", "POST", lambda: "/v1/rent-invoices", lambda: {
            "household_id": str(hh["a1"]), "invoice_id": new_id("I"),
            "billing_period": "2026-12", "amount_won": 1000,
            "due_at": "2026-12-25T00:00:00+09:00"}, 201),
        ("resident", "POST", lambda: "/v1/rent-payments", payment("a1"), 201),
        ("resident", "POST", lambda: "/v1/rent-payments", payment("a2"), 404),
        ("resident", "POST", lambda: "/v1/rent-payments", payment("b1"), 404),
        ("coordinator", "POST", lambda: "/v1/rent-payments", payment("a1", "a1"), 201),
        ("coordinator", "POST", lambda: "/v1/rent-payments", payment("b1", "b1"), 404),
        ("billing", "POST", lambda: f"/v1/rent-payments/{held_payment()}/settle",
         lambda: None, 200),
        ("billing", "POST", lambda: f"/v1/rent-payments/{held_payment()}/release",
         lambda: None, 200),
        ("manager", "POST", lambda: f"/v1/complexes/{a}/fund/spends", spend, 201),
        ("manager", "POST", lambda: f"/v1/complexes/{b}/fund/spends", spend, 404),
        ("manager", "POST", lambda: f"/v1/complexes/{a}/proposals", proposal_body, 201),
        ("manager", "POST", lambda: f"/v1/complexes/{b}/proposals", proposal_body, 404),
        ("resident", "POST", lambda: f"/v1/proposals/{open_proposal(api, a)}/ballots",
         lambda: {"choice": "yes"}, 201),
        ("resident", "POST",
         lambda: f"/v1/proposals/{open_proposal(api, b, 'manager_b')}/ballots",
         lambda: {"choice": "yes"}, 404),
        ("coordinator", "POST", lambda: f"/v1/proposals/{open_proposal(api, a)}/ballots",
         coordinator_ballot("a2"), 201),
        ("coordinator", "POST",
         lambda: f"/v1/proposals/{open_proposal(api, b, 'manager_b')}/ballots",
         coordinator_ballot("b1"), 404),
        ("manager", "POST", lambda: f"/v1/proposals/{past_proposal(api, a)}/close",
         lambda: None, 200),
        ("manager", "POST", lambda: f"/v1/proposals/{past_proposal(api, b)}/close",
         lambda: None, 404),
        ("operator", "POST", lambda: f"/v1/complexes/{a}/fund/allowance",
         lambda: {"allowance_won": 500_000}, 200),
        ("operator", "POST", lambda: f"/v1/complexes/{b}/fund/allowance",
         lambda: {"allowance_won": 500_000}, 200),
    ]
    cases: list[tuple[str, str, str, Callable[[], Any], int]] = []
    routes: dict[tuple[str, str], set[str]] = {}
    for role, method, path_of, body, status in allowed:
        path = path_of()
        template = (method, _template(path, api))
        routes.setdefault(template, set()).add(role.removeprefix("new_"))
        cases.append((role, method, path, body, status))
    for (method, template), roles in routes.items():
        for role in ROLES:
            if role not in roles:
                cases.append((role, method, _fill(template, api), lambda: {}, 403))
    return cases


def _template(path: str, api: ApiWorld) -> str:
    parts = path.split("/")
    return "/".join("{id}" if index == 3 and len(parts) > 4 else part
                    for index, part in enumerate(parts))


def _fill(template: str, api: ApiWorld) -> str:
    return template.replace("{id}", str(api.complex_a))


def test_write_authorisation_matrix(api: ApiWorld) -> None:
    """Every write route: allowed roles succeed on their own objects and get 404 on other
    complexes' objects; every other role gets 403 and changes nothing."""
    failures = []
    for role, method, path, body, status in _write_cases(api):
        before = api.log_position()
        who = (api.caller(Role.RESIDENT, household_id=api.households["a1"])
               if role == "new_resident" else api.callers[role])
        response = api.send(method, path, who, body())
        if response.status_code != status:
            failures.append((role, method, path, status, response.status_code,
                             response.text[:200]))
        if status >= 400:
            assert api.log_position() == before, (role, path)
            assert response.headers["content-type"] == "application/problem+json"
    assert failures == []


def _normalised(response: Any, probed: str, stand_in: str) -> tuple[int, str, str]:
    return (response.status_code, response.headers["content-type"],
            response.text.replace(probed, stand_in))


def test_resident_probing_other_residents_learns_nothing(api: ApiWorld) -> None:
    """1,000 random requests by one resident for other residents' real wallets, histories,
    households and rent payments: every answer is byte for byte the answer for an id
    that does not exist."""
    rng = random.Random(3)
    extra = [api.ok("POST", "/v1/residents", api.callers["platform"],
                    {"household_id": str(api.households[h]), "consent_ref": "x"})["resident_id"]
             for h in ("a1", "a2", "b1", "a2", "b1")]
    others = [str(api.residents["a2"]), str(api.residents["b1"]), *extra]
    households = [str(api.households["a2"]), str(api.households["b1"])]
    payments = [api.payments["a2"], api.payments["b1"]]
    kinds: list[tuple[str, list[str], Callable[[], str]]] = [
        ("/v1/wallets/{}", others, lambda: str(uuid.uuid4())),
        ("/v1/wallets/{}/entries", others, lambda: str(uuid.uuid4())),
        ("/v1/households/{}/rent", households, lambda: str(uuid.uuid4())),
        ("/v1/rent-payments/{}", payments, lambda: f"PAY-{uuid.uuid4().hex[:4]}"),
    ]
    resident = api.callers["resident"]
    leaks = []
    for _ in range(1_000):
        template, real_ids, missing_id = rng.choice(kinds)
        probed = rng.choice(real_ids)
        stand_in = missing_id()
        real = api.client.get(template.format(probed), headers=resident.headers)
        missing = api.client.get(template.format(stand_in), headers=resident.headers)
        if _normalised(real, probed, stand_in) != _normalised(missing, stand_in, stand_in):
            leaks.append((template, probed, real.status_code, real.text[:200]))
        assert real.status_code == 404
    assert leaks == []
    # ... while the resident's own objects are all there.
    own = api.callers["resident"]
    assert api.get(f"/v1/wallets/{own.subject}", own).status_code == 200
    assert api.get(f"/v1/households/{api.households['a1']}/rent", own).status_code == 200


def _valid_bodies(api: ApiWorld) -> list[tuple[Caller, str, str, dict[str, Any]]]:
    hh, res = api.households, api.residents
    return [
        (api.callers["operator"], "POST", "/v1/complexes",
         {"code": "MA-1", "name": "n", "region": "r"}),
        (api.callers["operator"], "POST", "/v1/households",
         {"complex_id": str(api.complex_a), "unit": "MA-1"}),
        (api.caller(Role.RESIDENT, household_id=hh["a2"]), "POST", "/v1/residents",
         {"household_id": str(hh["a2"]), "consent_ref": "c"}),
        (api.callers["operator"], "POST", "/v1/merchants", {"kind": "small_firm", "name": "n"}),
        (api.callers["operator"], "POST", f"/v1/merchants/{api.merchants['m1']}/payouts",
         {"payout_id": "MA-PO"}),
        (api.callers["operator"], "PUT", "/v1/accrual-policy", {"rates": [
            {"market": "sharing", "seller_kind": "resident", "personal_bps": 1,
             "common_bps": 1}], "guards": GUARDS_OFF}),
        (api.callers["platform"], "POST", "/v1/trades",
         {"trade_id": "MA-T", "market": "sharing", "category": "c",
          "seller_id": str(res["a2"]), "seller_kind": "resident",
          "buyer_id": str(res["a1"]), "amount_won": 100, "points_used_won": 0}),
        (api.callers["billing"], "POST", "/v1/rent-invoices",
         {"household_id": str(hh["a1"]), "invoice_id": "MA-I", "billing_period": "2026-12",
          "amount_won": 100, "due_at": "2026-12-25T00:00:00+09:00"}),
        (api.callers["resident"], "POST", "/v1/rent-payments",
         {"payment_id": "MA-P", "household_id": str(hh["a1"]),
          "invoice_id": api.invoices["a1"], "billing_period": "2026-11", "amount_won": 1}),
        (api.callers["manager"], "POST", f"/v1/complexes/{api.complex_a}/fund/spends",
         {"spend_id": "MA-S", "purpose": "event", "amount_won": 1, "decision_ref": "d"}),
        (api.callers["manager"], "POST", f"/v1/complexes/{api.complex_a}/proposals",
         {"proposal_id": "MA-V", "purpose": "event", "title": "t", "amount_won": 1,
          "voting_closes_at": (now() + timedelta(hours=2)).isoformat()}),
        (api.callers["resident"], "POST", f"/v1/proposals/{open_proposal(api, api.complex_a)}"
         "/ballots", {"choice": "yes"}),
        (api.callers["operator"], "POST", f"/v1/complexes/{api.complex_a}/fund/allowance",
         {"allowance_won": 1_000}),
        (api.callers["merchant"], "POST", "/v1/group-buys",
         _group_buy_body(api, "MA-GB", "m1", api.complex_a)),
        (api.callers["resident"], "POST", "/v1/group-buys/MA-GB/orders",
         {"order_id": "MA-O", "quantity": 1, "points_used_won": 0}),
    ]


SMUGGLED = [{"position": 1}, {"actor_id": str(uuid.uuid4())}, {"actor_role": "operator"},
            {"on_behalf_of": str(uuid.uuid4())}, {"balance_won": 10**6},
            {"request_id": "x"}, {"complex_id": str(uuid.uuid4())}, {"role": "operator"},
            {"is_admin": True}]


def test_mass_assignment_is_refused_and_changes_nothing(api: ApiWorld) -> None:
    """Any unknown field in any write body, or a field the caller's role may not set, is
    refused with 422 invalid_field and the log does not move."""
    cases = []
    for who, method, path, body in _valid_bodies(api):
        for extra in SMUGGLED:
            if set(extra) <= set(body):
                continue
            cases.append((who, method, path, {**body, **extra}))
    # Fields that exist but not for this role: a resident cannot name another resident.
    cases.append((api.callers["resident"], "POST", "/v1/residents",
                  {"household_id": str(api.households["a1"]), "consent_ref": "c",
                   "resident_id": str(api.residents["a2"])}))
    cases.append((api.callers["resident"], "POST", "/v1/rent-payments",
                  {"payment_id": "MA-P2", "household_id": str(api.households["a1"]),
                   "invoice_id": api.invoices["a1"], "billing_period": "2026-11",
                   "amount_won": 1, "resident_id": str(api.residents["a1"])}))
    cases.append((api.callers["platform"], "POST", "/v1/trades/X/refund",
                  {"occurred_at": None, "trade_id": "Y"}))
    before = api.log_position()
    for who, method, path, body in cases:
        response = api.send(method, path, who, body)
        assert response.status_code == 422, (path, body, response.text)
        problem = response.json()
        assert problem["code"] == "invalid_field"
    assert api.log_position() == before
    # The same bodies without the smuggled fields are accepted.
    for who, method, path, body in _valid_bodies(api):
        assert api.send(method, path, who, body).status_code in (200, 201), path


@pytest.mark.parametrize("role", [Role.COORDINATOR, Role.MANAGER])
def test_staff_of_another_complex_see_nothing_of_this_one(api: ApiWorld, role: Role) -> None:
    """Staff of complex B asking for complex A's wallets and fund get the missing answers."""
    staff = api.callers[f"{role.value}_b"]
    assert api.get(f"/v1/wallets/{api.residents['a1']}", staff).status_code == 404
    assert api.get(f"/v1/complexes/{api.complex_a}/fund", staff).status_code == 404
    assert api.get(f"/v1/wallets/{api.residents['b1']}", staff).status_code == 200
