"""A small community reached only through the HTTP API, for the API's tests.

Two complexes (A and B), households in each, residents who enrolled themselves or
were enrolled by a coordinator, two merchants, an accrual policy, trades that gave
everyone points, a rent invoice per household and a rent payment held by one
resident of each. Tokens for every role, with the right complex where one is needed.
(This module holds fixtures and helpers only; pytest finds no tests in it.)
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.auth import Role, mint_token
from api.routes_common import Services
from api.settings import ApiSettings
from ledger.application import now
from service.app import create_app
from world import GUARDS_OFF

RATES = [
    {"market": "sharing", "seller_kind": "resident", "personal_bps": 300, "common_bps": 100},
    {"market": "shopping", "seller_kind": "small_firm", "personal_bps": 200, "common_bps": 100},
]

_keys = itertools.count(1)


def make_settings(database_url: str, schema: str, key_dir: Path, **changes: Any) -> ApiSettings:
    values: dict[str, Any] = {
        "database_url": database_url, "schema_name": schema, "dev_key_dir": key_dir,
        "jwt_public_keys": (), "rate_limit_writes_per_minute": 100_000,
        "read_wait_seconds_max": 5.0, "expiry_sweep_seconds": 0.0,
    }
    values.update(changes)
    return ApiSettings(**values)


def fresh_key() -> str:
    return f"key-{next(_keys)}-{uuid.uuid4().hex[:8]}"


@dataclass
class Caller:
    """One principal: its role, subject, complex and bearer header."""

    role: Role
    subject: UUID
    complex_id: UUID | None
    headers: dict[str, str]


@dataclass
class ApiWorld:
    client: TestClient
    app: FastAPI
    settings: ApiSettings
    complex_a: UUID = field(default_factory=uuid.uuid4)
    complex_b: UUID = field(default_factory=uuid.uuid4)
    households: dict[str, UUID] = field(default_factory=dict)
    residents: dict[str, UUID] = field(default_factory=dict)
    merchants: dict[str, UUID] = field(default_factory=dict)
    payments: dict[str, str] = field(default_factory=dict)
    invoices: dict[str, str] = field(default_factory=dict)
    callers: dict[str, Caller] = field(default_factory=dict)
    position: int = 0

    @property
    def services(self) -> Services:
        found: Services = self.app.state.services
        return found

    def caller(self, role: Role | str, subject: UUID | None = None,
               complex_id: UUID | None = None, household_id: UUID | None = None) -> Caller:
        role = Role(role)
        subject = subject or uuid.uuid4()
        token = mint_token(role, subject, complex_id, settings=self.settings,
                           household_id=household_id)
        return Caller(role, subject, complex_id, {"Authorization": f"Bearer {token}"})

    def send(self, method: str, path: str, who: Caller, body: Any = None, *,
             key: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
        all_headers = dict(who.headers)
        if method != "GET":
            all_headers["Idempotency-Key"] = key or fresh_key()
        all_headers.update(headers or {})
        response = self.client.request(method, path, json=body, headers=all_headers)
        if response.status_code < 300 and method != "GET":
            self.position = max(self.position, response.json()["position"])
        return response

    def ok(self, method: str, path: str, who: Caller, body: Any = None) -> dict[str, Any]:
        response = self.send(method, path, who, body)
        assert response.status_code in (200, 201), (path, response.text)
        result: dict[str, Any] = response.json()
        return result

    def get(self, path: str, who: Caller, **params: Any) -> httpx.Response:
        url = httpx.URL(path)
        merged: dict[str, Any] = dict(url.params)
        merged.update(params)
        merged.setdefault("consistent_with", self.position)
        return self.client.get(url.path, headers=who.headers, params=merged)

    def log_position(self) -> int:
        return self.services.ledger.position()

    # Building the community --------------------------------------------------------------

    def populate(self) -> None:
        operator = self.callers["operator"] = self.caller(Role.OPERATOR)
        platform = self.callers["platform"] = self.caller(Role.PLATFORM)
        self.callers["billing"] = self.caller(Role.BILLING)
        self.callers["auditor"] = self.caller(Role.AUDITOR)
        # Residents here are funded by large trades, some within a household: guards off.
        self.ok("PUT", "/v1/accrual-policy", operator, {"rates": RATES, "guards": GUARDS_OFF})
        self.complex_a = UUID(self.ok("POST", "/v1/complexes", operator,
                                      {"code": "HS-A", "name": "A", "region": "Hwaseong"})
                              ["complex_id"])
        self.complex_b = UUID(self.ok("POST", "/v1/complexes", operator,
                                      {"code": "HS-B", "name": "B", "region": "Hwaseong"})
                              ["complex_id"])
        self.callers["coordinator"] = self.caller(Role.COORDINATOR, complex_id=self.complex_a)
        self.callers["manager"] = self.caller(Role.MANAGER, complex_id=self.complex_a)
        self.callers["coordinator_b"] = self.caller(Role.COORDINATOR, complex_id=self.complex_b)
        self.callers["manager_b"] = self.caller(Role.MANAGER, complex_id=self.complex_b)
        for name, complex_id in (("a1", self.complex_a), ("a2", self.complex_a),
                                 ("b1", self.complex_b)):
            self.households[name] = UUID(self.ok(
                "POST", "/v1/households", operator,
                {"complex_id": str(complex_id), "unit": f"101-{name}"})["household_id"])
        # a1 enrols themself; a2 is enrolled by A's coordinator; b1 by the platform.
        a1 = self.caller(Role.RESIDENT, household_id=self.households["a1"])
        self.ok("POST", "/v1/residents", a1,
                {"household_id": str(self.households["a1"]), "consent_ref": "in-app"})
        self.residents["a1"] = a1.subject
        self.callers["resident"] = a1
        self.residents["a2"] = UUID(self.ok(
            "POST", "/v1/residents", self.callers["coordinator"],
            {"household_id": str(self.households["a2"]), "consent_ref": "paper"})
            ["resident_id"])
        self.residents["b1"] = UUID(self.ok(
            "POST", "/v1/residents", platform,
            {"household_id": str(self.households["b1"]), "consent_ref": "app"})["resident_id"])
        self.callers["resident_a2"] = self.caller(Role.RESIDENT, self.residents["a2"])
        self.callers["resident_b1"] = self.caller(Role.RESIDENT, self.residents["b1"])
        for name in ("m1", "m2"):
            self.merchants[name] = UUID(self.ok("POST", "/v1/merchants", operator,
                                                {"kind": "small_firm", "name": name})
                                        ["merchant_id"])
        self.callers["merchant"] = self.caller(Role.MERCHANT, self.merchants["m1"])
        # Everyone earns points: 3 % of 1,000,000 won = 30,000 points each.
        names = ["a1", "a2", "b1"]
        for buyer, seller in zip(names, names[1:] + names[:1], strict=True):
            self.trade(buyer, self.residents[seller], 1_000_000)
        self.trade("a1", self.merchants["m1"], 50_000, points_used_won=5_000,
                   seller_kind="small_firm")
        billing = self.callers["billing"]
        for name in names:
            invoice_id = f"INV-{name}"
            self.ok("POST", "/v1/rent-invoices", billing, {
                "household_id": str(self.households[name]), "invoice_id": invoice_id,
                "billing_period": "2026-11", "amount_won": 500_000,
                "due_at": (now() + timedelta(days=10)).isoformat()})
            self.invoices[name] = invoice_id
            payer = self.callers["resident" if name == "a1" else f"resident_{name}"]
            self.payments[name] = f"PAY-{name}"
            self.ok("POST", "/v1/rent-payments", payer, {
                "payment_id": f"PAY-{name}", "household_id": str(self.households[name]),
                "invoice_id": invoice_id, "billing_period": "2026-11", "amount_won": 1_000})

    def trade(self, buyer: str, seller_id: UUID, amount_won: int, *, points_used_won: int = 0,
              seller_kind: str = "resident", trade_id: str | None = None) -> dict[str, Any]:
        market = "sharing" if seller_kind == "resident" else "shopping"
        return self.ok("POST", "/v1/trades", self.callers["platform"], {
            "trade_id": trade_id or f"T-{uuid.uuid4().hex[:10]}", "market": market,
            "category": "childcare" if market == "sharing" else "repairs",
            "seller_id": str(seller_id), "seller_kind": seller_kind,
            "buyer_id": str(self.residents[buyer]), "amount_won": amount_won,
            "points_used_won": points_used_won})


@pytest.fixture
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "api-dev-keys"


@pytest.fixture
def api(database_url: str, schema: str, key_dir: Path) -> Iterator[ApiWorld]:
    """The API on a fresh schema, populated with the community above."""
    settings = make_settings(database_url, schema, key_dir)
    app = create_app(settings)
    with TestClient(app) as client:
        world = ApiWorld(client, app, settings)
        world.populate()
        yield world
