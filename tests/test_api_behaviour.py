"""The API's behaviour around the routes: idempotent retries, problem details and their
language, reading your writes, limits, hold expiry, and projections that stay equal
to a fold of the events after a random workload driven through the API."""

# Fixtures come from test_api_fixtures by import, so tests "redefine" their names.
# ruff: noqa: F811

from __future__ import annotations

import random
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

import projections
from api.auth import Role, mint_token
from api.problems import preferred_language
from ledger import commands as c
from ledger.application import now
from ledger.database import ConnectionSettings
from ledger.events import Cause
from service.app import create_app
from service.sweeper import ExpirySweeper
from test_api_fixtures import ApiWorld, api, key_dir, make_settings  # noqa: F401  (fixtures)

PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "instance"}


def trade_body(api: ApiWorld, trade_id: str, amount_won: int = 10_000) -> dict[str, Any]:
    return {"trade_id": trade_id, "market": "sharing", "category": "childcare",
            "seller_id": str(api.residents["a2"]), "seller_kind": "resident",
            "buyer_id": str(api.residents["a1"]), "amount_won": amount_won}


def test_retry_returns_the_first_response(api: ApiWorld) -> None:
    """The same Idempotency-Key and body give the first response again and change nothing;
    the same key with another body is refused with request_id_reused."""
    platform = api.callers["platform"]
    first = api.send("POST", "/v1/trades", platform, trade_body(api, "IDEM-1"), key="k-idem")
    assert first.status_code == 201
    before = api.log_position()
    again = api.send("POST", "/v1/trades", platform, trade_body(api, "IDEM-1"), key="k-idem")
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["Idempotent-Replayed"] == "true"
    assert api.log_position() == before
    other = api.send("POST", "/v1/trades", platform, trade_body(api, "IDEM-2"), key="k-idem")
    assert other.status_code == 409
    assert other.json()["code"] == "request_id_reused"
    assert api.log_position() == before


def test_write_without_idempotency_key_is_refused(api: ApiWorld) -> None:
    """A write without an Idempotency-Key is a 422 problem naming the header."""
    response = api.client.post("/v1/trades", json=trade_body(api, "NOKEY"),
                               headers=api.callers["platform"].headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["location"] == "header.Idempotency-Key"


def test_problem_details_shape_and_language(api: ApiWorld) -> None:
    """Errors are problem+json with type/title/status/detail/code/instance, in Korean by
    default and in English when Accept-Language prefers it."""
    resident = api.callers["resident"]
    path = f"/v1/wallets/{uuid.uuid4()}"
    korean = api.client.get(path, headers=resident.headers)
    english = api.client.get(path, headers={**resident.headers,
                                             "Accept-Language": "en-US,en;q=0.9,ko;q=0.5"})
    for response in (korean, english):
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert set(body) >= PROBLEM_KEYS
        assert body["code"] == "unknown_resident"
        assert body["type"] == "/problems/unknown_resident"
        assert body["instance"] == path
        assert body["status"] == 404
    assert korean.json()["title"] == "해당 입주민이 없습니다."
    assert korean.headers["content-language"] == "ko"
    assert english.json()["title"] == "No such resident."
    assert english.headers["content-language"] == "en"
    # 401, 403, 409, 422 as well.
    unauthenticated = api.client.get("/v1/me/wallet", headers={"Accept-Language": "en"})
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["code"] == "token_missing"
    assert unauthenticated.headers["www-authenticate"] == "Bearer"
    forged = api.client.get("/v1/me/wallet", headers={"Authorization": "Bearer x.y.z"})
    assert forged.status_code == 401
    assert forged.json()["code"] == "token_invalid"
    forbidden = api.send("POST", "/v1/trades", resident, {})
    assert forbidden.status_code == 403
    assert forbidden.json()["code"] == "forbidden"
    poor = api.send("POST", "/v1/trades", api.callers["platform"],
                    {**trade_body(api, "POOR"), "points_used_won": 9_000_000,
                     "amount_won": 10_000_000})
    assert poor.status_code == 409
    assert poor.json()["code"] == "insufficient_points"
    invalid = api.send("POST", "/v1/trades", api.callers["platform"],
                       {**trade_body(api, "BAD"), "amount_won": 0})
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["location"] == "body.amount_won"
    for response in (unauthenticated, forged, forbidden, poor, invalid):
        assert response.headers["content-type"] == "application/problem+json"
        assert set(response.json()) >= PROBLEM_KEYS


def test_language_negotiation() -> None:
    """Korean unless the header prefers English; malformed headers fall back to Korean."""
    assert preferred_language(None) == "ko"
    assert preferred_language("en") == "en"
    assert preferred_language("en-GB, ko;q=0.3") == "en"
    assert preferred_language("en;q=0.5, ko") == "ko"
    assert preferred_language("fr, en;q=0.1") == "en"
    assert preferred_language("fr") == "ko"
    assert preferred_language("en;q=nan, ko;q=0.2") == "ko"
    assert preferred_language("*") == "ko"


def test_read_your_writes(api: ApiWorld) -> None:
    """A read with consistent_with (query or header) sees the write that returned it; a
    position beyond the log's head is refused with 409 position_beyond_log."""
    written = api.ok("POST", "/v1/trades", api.callers["platform"],
                     trade_body(api, "RYW-1", 100_000))
    resident = api.callers["resident"]
    by_query = api.client.get("/v1/me/wallet", headers=resident.headers,
                              params={"consistent_with": written["position"]})
    assert by_query.json()["accrued_total_won"] == 30_900 + 3_000
    written = api.ok("POST", "/v1/trades", api.callers["platform"],
                     trade_body(api, "RYW-2", 100_000))
    by_header = api.client.get("/v1/me/wallet", headers={
        **resident.headers, "X-Consistent-With": str(written["position"])})
    assert by_header.json()["accrued_total_won"] == 30_900 + 6_000
    # A position no write has reached answers at once: 409, the log's head in the detail.
    head = api.log_position()
    for beyond in (api.client.get("/v1/me/wallet", headers=resident.headers,
                                  params={"consistent_with": head + 1}),
                   api.client.get("/v1/me/wallet", headers={
                       **resident.headers, "X-Consistent-With": str(2**63 - 1)})):
        assert beyond.status_code == 409
        assert beyond.json()["code"] == "position_beyond_log"
        assert f"the log's head is {head}" in beyond.json()["detail"]


def test_not_yet_consistent_answers_503(database_url: str, schema: str,
                                        tmp_path: Path) -> None:
    """With no projection running, a read that asks for a newer position waits, bounded,
    then answers 503 not_yet_consistent with Retry-After."""
    settings = make_settings(database_url, schema, tmp_path / "keys", run_projections=False,
                             read_wait_seconds_max=0.3)
    with TestClient(create_app(settings)) as client:
        operator = {"Authorization": "Bearer " + mint_token(
            Role.OPERATOR, uuid.uuid4(), settings=settings)}
        written = client.post("/v1/complexes", json={"code": "X", "name": "x", "region": "r"},
                              headers={**operator, "Idempotency-Key": "k1"}).json()
        started = time.monotonic()
        response = client.get(f"/v1/complexes/{written['complex_id']}/fund",
                              headers=operator,
                              params={"consistent_with": written["position"]})
        assert time.monotonic() - started < 3
        assert response.status_code == 503
        assert response.json()["code"] == "not_yet_consistent"
        assert int(response.headers["retry-after"]) >= 1


def test_service_principals_have_a_write_limit_of_their_own(database_url: str, schema: str,
                                                            tmp_path: Path) -> None:
    """The platform's trade feed writes for every complex: it is limited by the service
    limit, not by a person's; people keep theirs."""
    settings = make_settings(database_url, schema, tmp_path / "keys",
                             rate_limit_writes_per_minute=1,
                             rate_limit_service_writes_per_minute=3)
    with TestClient(create_app(settings)) as client:
        def post(role: Role, subject: uuid.UUID, number: int) -> int:
            token = mint_token(role, subject, settings=settings)
            if role is Role.OPERATOR:
                path, body = "/v1/complexes", {"code": f"S{number}", "name": "x",
                                               "region": "r"}
            else:  # a trade between nobody: refused (404), but it counts against the budget
                path, body = "/v1/trades", {
                    "trade_id": f"S{number}", "market": "sharing", "category": "childcare",
                    "seller_id": str(uuid.uuid4()), "seller_kind": "resident",
                    "buyer_id": str(uuid.uuid4()), "amount_won": 1_000}
            return client.post(path, json=body, headers={
                "Authorization": f"Bearer {token}", "Idempotency-Key": f"s{number}"}).status_code

        platform = uuid.UUID(int=7)
        assert [post(Role.PLATFORM, platform, n) for n in range(4)] == [404, 404, 404, 429]
        operator = uuid.UUID(int=8)
        assert [post(Role.OPERATOR, operator, n) for n in range(10, 12)] == [201, 429]


def test_write_rate_limit(database_url: str, schema: str, tmp_path: Path) -> None:
    """Writes over the caller's budget get 429 with Retry-After; other callers are
    unaffected; reads are not limited."""
    settings = make_settings(database_url, schema, tmp_path / "keys",
                             rate_limit_writes_per_minute=3)
    with TestClient(create_app(settings)) as client:
        def operator() -> dict[str, str]:
            return {"Authorization": "Bearer " + mint_token(
                Role.OPERATOR, uuid.UUID(int=1), settings=settings)}

        statuses = []
        for number in range(4):
            response = client.post(
                "/v1/complexes", json={"code": f"R{number}", "name": "x", "region": "r"},
                headers={**operator(), "Idempotency-Key": f"k{number}"})
            statuses.append(response.status_code)
        assert statuses == [201, 201, 201, 429]
        assert response.json()["code"] == "rate_limited"
        assert int(response.headers["retry-after"]) >= 1
        another = {"Authorization": "Bearer " + mint_token(
            Role.OPERATOR, uuid.uuid4(), settings=settings)}
        assert client.post("/v1/complexes", json={"code": "R9", "name": "x", "region": "r"},
                           headers={**another, "Idempotency-Key": "k9"}).status_code == 201


def test_body_and_page_limits(api: ApiWorld) -> None:
    """Bodies over the limit are refused with 413 before parsing; page sizes are bounded."""
    operator = api.callers["operator"]
    huge = b'{"code": "' + b"x" * 70_000 + b'"}'
    response = api.client.post("/v1/complexes", content=huge, headers={
        **operator.headers, "Idempotency-Key": "big", "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"

    def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 4096

    chunked = api.client.post("/v1/complexes", content=chunks(), headers={
        **operator.headers, "Idempotency-Key": "big2", "Content-Type": "application/json"})
    assert chunked.status_code == 413
    resident = api.callers["resident"]
    assert api.get("/v1/me/wallet/entries", resident, limit=501).status_code == 422
    page = api.get("/v1/me/wallet/entries", resident, limit=2).json()
    assert len(page["entries"]) == 2
    rest = api.get("/v1/me/wallet/entries", resident, limit=500,
                   cursor=page["next_cursor"]).json()
    positions = [e["position"] for e in page["entries"] + rest["entries"]]
    assert positions == sorted(positions, reverse=True)
    assert len(set(positions)) == len(positions)


def test_body_that_is_not_utf8_is_refused_with_400_invalid_encoding(api: ApiWorld) -> None:
    """A write whose body is not UTF-8 (a stray byte, or JSON in UTF-16) answers 400
    invalid_encoding, in the caller's language, and stores nothing."""
    platform = api.callers["platform"]
    before = api.log_position()
    bodies = [b'{"x": "\xff"}',
              # A valid trade, apart from one byte that cannot start a UTF-8 sequence.
              b'{"trade_id": "ENC-1", "market": "sharing", "category": "\xc0", '
              b'"seller_id": "%s", "seller_kind": "resident", "buyer_id": "%s", '
              b'"amount_won": 1000}' % (str(api.residents["a2"]).encode(),
                                        str(api.residents["a1"]).encode()),
              '{"trade_id": "ENC-2"}'.encode("utf-16")]
    for number, body in enumerate(bodies):
        for language, title in (
                ("ko", "요청 본문이 UTF-8 텍스트가 아닙니다. JSON 본문은 UTF-8이어야 합니다."),
                ("en", "The request body is not UTF-8 text; JSON bodies must be UTF-8.")):
            response = api.client.post("/v1/trades", content=body, headers={
                **platform.headers, "Idempotency-Key": f"enc-{number}-{language}",
                "Content-Type": "application/json", "Accept-Language": language})
            assert response.status_code == 400, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["content-language"] == language
            problem = response.json()
            assert set(problem) >= PROBLEM_KEYS
            assert (problem["code"], problem["type"], problem["status"], problem["title"]) == (
                "invalid_encoding", "/problems/invalid_encoding", 400, title)
    assert api.log_position() == before
    missing = api.get("/v1/me/wallet/entries", api.callers["resident"], limit=500).json()
    assert not any(entry["trade_id"] == "ENC-1" for entry in missing["entries"])


def test_method_not_allowed_lists_every_method_of_the_path(api: ApiWorld) -> None:
    """OPTIONS, HEAD, or another method a path does not serve answers 405
    method_not_allowed with an Allow header naming every method the path serves, also
    where two routes share the path."""
    operator = api.callers["operator"]
    expected = {"/v1/accrual-policy": "GET, PUT", "/v1/trades": "POST",
                f"/v1/wallets/{api.residents['a1']}": "GET"}
    for path, allow in expected.items():
        for method in ("OPTIONS", "DELETE", "PATCH", "HEAD"):
            response = api.client.request(method, path, headers=operator.headers)
            assert response.status_code == 405, (method, path)
            assert response.headers["allow"] == allow, (method, path)
            if method != "HEAD":  # a HEAD answer has no body
                assert response.json()["code"] == "method_not_allowed"


def test_json_the_parser_cannot_read_is_a_422_not_a_server_error(api: ApiWorld) -> None:
    """UTF-8 JSON nested deeper than the parser goes answers 422 invalid_field at `body`,
    like any body that is not acceptable JSON, and stores nothing."""
    before = api.log_position()
    deep = b"[" * 30_000 + b"]" * 30_000
    response = api.client.post("/v1/trades", content=deep, headers={
        **api.callers["platform"].headers, "Idempotency-Key": "deep",
        "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_field"
    assert response.json()["errors"][0]["location"] == "body"
    assert api.log_position() == before


def test_sweeper_expires_holds_past_their_deadline(api: ApiWorld) -> None:
    """A hold whose deadline passed is expired by the sweeper; its points are available
    again and the payment reads as expired."""
    resident = api.callers["resident"]
    before = api.get("/v1/me/wallet", resident).json()
    # Held two minutes ago for one minute: already due.
    api.services.ledger.execute(
        c.PayRent("PAY-OLD", api.households["a1"], api.invoices["a1"], "2026-11", 2_000,
                  resident.subject, 60),
        Cause(resident.subject, "resident", "old-hold", now() - timedelta(minutes=2)))
    api.position = api.log_position()
    assert api.get("/v1/rent-payments/PAY-OLD", resident).json()["status"] == "held"
    sweeper = ExpirySweeper(api.services.ledger, api.services.pool, 60)
    assert sweeper.sweep_once() == 1
    assert sweeper.sweep_once() == 0  # a repeat, even before the projection caught up
    api.position = api.log_position()
    assert api.get("/v1/rent-payments/PAY-OLD", resident).json()["status"] == "expired"
    after = api.get("/v1/me/wallet", resident).json()
    assert after["available_won"] == before["available_won"]
    assert after["held_won"] == before["held_won"]


def test_running_service_sweeps_by_itself(database_url: str, schema: str,
                                          tmp_path: Path) -> None:
    """The lifespan starts the sweeper: a due hold expires with no request at all."""
    settings = make_settings(database_url, schema, tmp_path / "keys",
                             expiry_sweep_seconds=0.2)
    app = create_app(settings)
    with TestClient(app) as client:
        world = ApiWorld(client, app, settings)
        ledger = app.state.services.ledger
        world.populate()
        resident = world.callers["resident"]
        ledger.execute(
            c.PayRent("PAY-DUE", world.households["a1"], world.invoices["a1"], "2026-11", 500,
                      resident.subject, 60),
            Cause(resident.subject, "resident", "due-hold", now() - timedelta(minutes=5)))
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline:
            world.position = ledger.position()
            status = world.get("/v1/rent-payments/PAY-DUE", resident).json()["status"]
            if status == "expired":
                break
            time.sleep(0.1)
        assert status == "expired"


def test_random_workload_through_the_api_keeps_projections_equal_to_the_fold(
        api: ApiWorld, database_url: str, schema: str) -> None:
    """After a random workload through the API (some of it rejected), every projection
    equals fold_all, and a rebuild equals the live state."""
    rng = random.Random(1126)
    platform, billing = api.callers["platform"], api.callers["billing"]
    names = ["a1", "a2", "b1"]
    trades: list[str] = []
    held: list[str] = []
    for step in range(150):
        action = rng.choice(["trade", "trade", "trade", "refund", "pay", "resolve", "spend",
                             "enrol"])
        if action == "trade":
            buyer, seller = rng.sample(names, 2)
            merchant = rng.random() < 0.3
            body = {"trade_id": f"W-{step}", "market": "shopping" if merchant else "sharing",
                    "category": "repairs" if merchant else "carpool",
                    "seller_id": str(api.merchants["m1"] if merchant else api.residents[seller]),
                    "seller_kind": "small_firm" if merchant else "resident",
                    "buyer_id": str(api.residents[buyer]),
                    "amount_won": rng.randrange(1_000, 200_000),
                    "points_used_won": rng.choice([0, 0, rng.randrange(0, 20_000)])}
            body["points_used_won"] = min(body["points_used_won"], body["amount_won"])
            if api.send("POST", "/v1/trades", platform, body).status_code == 201:
                trades.append(body["trade_id"])
        elif action == "refund" and trades:
            api.send("POST", f"/v1/trades/{rng.choice(trades)}/refund", platform)
        elif action == "pay":
            name = rng.choice(names)
            payer = api.callers["resident" if name == "a1" else f"resident_{name}"]
            response = api.send("POST", "/v1/rent-payments", payer, {
                "payment_id": f"WP-{step}", "household_id": str(api.households[name]),
                "invoice_id": api.invoices[name], "billing_period": "2026-11",
                "amount_won": rng.randrange(1, 5_000)})
            if response.status_code == 201:
                held.append(f"WP-{step}")
        elif action == "resolve" and held:
            payment_id = held.pop(rng.randrange(len(held)))
            verb = rng.choice(["settle", "release"])
            api.send("POST", f"/v1/rent-payments/{payment_id}/{verb}", billing)
        elif action == "spend":
            manager = api.callers[rng.choice(["manager", "manager_b"])]
            assert manager.complex_id is not None
            api.send("POST", f"/v1/complexes/{manager.complex_id}/fund/spends", manager, {
                "spend_id": f"WS-{step}", "purpose": rng.choice(["facility", "event"]),
                "amount_won": rng.randrange(1, 3_000), "decision_ref": "vote"})
        elif action == "enrol":
            api.send("POST", "/v1/residents", api.callers["coordinator"], {
                "household_id": str(api.households["a2"]), "consent_ref": "paper"})
    runner = api.services.runner
    assert runner is not None
    assert runner.wait_for(api.log_position(), timeout=10)
    conninfo = ConnectionSettings.from_url(database_url).conninfo()
    # Autocommit: a reader holding a transaction open would block the rebuild's swap.
    with psycopg.connect(conninfo, options=f"-c search_path={schema}",
                         autocommit=True) as conn:
        live = projections.read_all(conn)
        assert live == projections.fold_all(database_url, schema)
        runner.stop()  # the rebuild swaps tables: no live batch in between
        projections.rebuild(database_url, schema, progress=False, workers=1)
        assert projections.read_all(conn) == live


@pytest.mark.parametrize("path", ["/v1/health"])
def test_trivial_endpoint_needs_nothing(api: ApiWorld, path: str) -> None:
    """The health endpoint answers without a token or the database."""
    assert api.client.get(path).json() == {"status": "ok"}


def test_running_service_keeps_the_audit_hash_chain(api: ApiWorld) -> None:
    """With the projections, the service runs the auditors' hash chain follower: every
    event written through the API is chained without anyone asking."""
    position = api.log_position()
    deadline = time.monotonic() + 15
    chained = 0
    while time.monotonic() < deadline:
        with api.services.pool.connection() as conn:
            row = conn.execute("SELECT coalesce(max(position), 0) FROM audit_chain").fetchone()
        chained = int(row[0]) if row else 0
        if chained >= position:
            break
        time.sleep(0.1)
    assert chained >= position > 0


def test_everyone_can_read_the_accrual_policy_in_force(api: ApiWorld) -> None:
    """The policy trades use now, with its version, rates and rounding rule, for any role."""
    policy = api.get("/v1/accrual-policy", api.callers["resident"]).json()
    assert policy["version"] == 1
    assert {(r["market"], r["seller_kind"], r["personal_bps"], r["common_bps"])
            for r in policy["rates"]} == {("sharing", "resident", 300, 100),
                                          ("shopping", "small_firm", 200, 100)}
    assert "floor" in policy["rounding"]


def test_residents_enrol_themselves_only_into_their_verified_household(api: ApiWorld) -> None:
    """Self-enrolment needs the household the identity provider put in the token; any other
    household, or none, answers as a missing household and records nothing."""
    target = str(api.households["a2"])
    for token_household in (None, api.households["b1"]):
        stranger = api.caller(Role.RESIDENT, household_id=token_household)
        before = api.log_position()
        response = api.send("POST", "/v1/residents", stranger,
                            {"household_id": target, "consent_ref": "in-app"})
        assert (response.status_code, response.json()["code"]) == (404, "unknown_household")
        assert api.log_position() == before
    verified = api.caller(Role.RESIDENT, household_id=api.households["a2"])
    response = api.send("POST", "/v1/residents", verified,
                        {"household_id": target, "consent_ref": "in-app"})
    assert response.status_code == 201
    assert response.json()["resident_id"] == str(verified.subject)


def test_enrolling_an_enrolled_resident_again_is_a_conflict(api: ApiWorld) -> None:
    """A resident already enrolled, enrolling again under a new Idempotency-Key or named
    again by the platform, is refused with 409 resident_exists and records nothing."""
    before = api.log_position()
    again = api.send("POST", "/v1/residents", api.callers["resident"],
                     {"household_id": str(api.households["a1"]), "consent_ref": "again"})
    named = api.send("POST", "/v1/residents", api.callers["platform"],
                     {"household_id": str(api.households["b1"]), "consent_ref": "again",
                      "resident_id": str(api.residents["b1"])})
    for response in (again, named):
        assert (response.status_code, response.json()["code"]) == (409, "resident_exists")
    assert api.log_position() == before
