"""The auditor's routes: the event log, checkpoints, the last verification and statements,
each visible to exactly the callers who may see it."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.auth import Role, mint_token
from api.settings import ApiSettings
from audit.chain import ChainFollower
from audit.verification import verify_ledger
from service.app import create_app
from test_audit_verify import Population, project, workload
from world import World

AUDITOR = uuid.UUID("00000000-0000-4000-8000-0000000000a1")


@pytest.fixture
def settings(world: World, tmp_path: Path) -> ApiSettings:
    return ApiSettings(database_url=world.database_url, schema_name=world.schema,
                       dev_key_dir=tmp_path / "dev-keys", jwt_public_keys=(),
                       run_projections=False, expiry_sweep_seconds=0)


@pytest.fixture
def people(world: World) -> Population:
    found = workload(world, random.Random(21), 120)
    project(world)
    return found


@pytest.fixture
def client(world: World, settings: ApiSettings, people: Population) -> Iterator[TestClient]:
    assert people
    with TestClient(create_app(settings, ledger=world.ledger)) as test_client:
        yield test_client


def bearer(settings: ApiSettings, role: Role, subject: uuid.UUID,
           complex_id: uuid.UUID | None = None) -> dict[str, str]:
    token = mint_token(role, subject, complex_id, settings=settings)
    return {"Authorization": f"Bearer {token}"}


def test_auditor_pages_through_the_whole_event_log(client: TestClient, settings: ApiSettings,
                                                   world: World) -> None:
    """Pages of public events follow each other by position up to the end of the log."""
    headers = bearer(settings, Role.AUDITOR, AUDITOR)
    seen: list[int] = []
    after = 0
    while True:
        page = client.get("/v1/audit/events", params={"after": after, "limit": 50},
                          headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [event["position"] for event in body["events"]]
        if body["next_after"] is None:
            break
        after = body["next_after"]
    assert seen == sorted(seen) and len(seen) == len(set(seen)) > 100
    assert seen[-1] <= world.ledger.position()
    assert {"event_type", "actor_role", "occurred_at", "recorded_at"} <= set(
        client.get("/v1/audit/events", headers=headers).json()["events"][0])


@pytest.mark.parametrize("role", [Role.RESIDENT, Role.MANAGER, Role.OPERATOR, Role.BILLING])
def test_only_auditors_read_the_log_checkpoints_and_verification(
        client: TestClient, settings: ApiSettings, people: Population, role: Role) -> None:
    """Every other role is refused the auditor's routes."""
    headers = bearer(settings, role, people.residents[0][0], people.complexes[0])
    for path in ("/v1/audit/events", "/v1/audit/checkpoints", "/v1/audit/verification"):
        assert client.get(path, headers=headers).status_code == 403
    assert client.get("/v1/audit/events").status_code == 401


def test_checkpoints_and_last_verification(client: TestClient, settings: ApiSettings,
                                           world: World, tmp_path: Path) -> None:
    """The auditor sees the signed checkpoints and the last stored verification verdict."""
    headers = bearer(settings, Role.AUDITOR, AUDITOR)
    assert client.get("/v1/audit/verification", headers=headers).status_code == 404
    # Every 50 events: since shopping accruals pend for their return window, fewer of the
    # workload's spends go through and it writes fewer events than 200.
    ChainFollower(world.database_url, world.schema, key_dir=tmp_path,
                  checkpoint_interval_events=50).catch_up()
    result = verify_ledger(world.database_url, world.schema, key_dir=tmp_path)
    assert result.ok, result.lines()

    checkpoints = client.get("/v1/audit/checkpoints", headers=headers).json()["checkpoints"]
    verification = client.get("/v1/audit/verification", headers=headers).json()

    assert len(checkpoints) >= 2 and len(checkpoints[0]["signature"]) == 128
    assert verification["ok"] is True and verification["first_bad_position"] is None
    assert verification["counts"]["events"] == result.counts["events"]


def test_statements_auditor_anyone_resident_self_manager_own_complex(
        client: TestClient, settings: ApiSettings, people: Population) -> None:
    """Auditors read any statement; a resident only their own and a manager only their own
    complex's, and anything else answers like a statement that does not exist."""
    me, other = people.residents[0][0], people.residents[1][0]
    mine, theirs = people.complexes
    month = {"month": "2026-02"}
    auditor = bearer(settings, Role.AUDITOR, AUDITOR)
    resident = bearer(settings, Role.RESIDENT, me)
    manager = bearer(settings, Role.MANAGER, uuid.uuid4(), mine)

    for path in (f"/v1/statements/residents/{me}", f"/v1/statements/residents/{other}",
                 f"/v1/statements/complexes/{mine}", f"/v1/statements/complexes/{theirs}"):
        response = client.get(path, params=month, headers=auditor)
        assert response.status_code == 200, response.text
        body = response.json()
        key = "available_won" if "/residents/" in path else "balance_won"
        assert body["opening"][key] + sum(line["amount_won"] for line in body["lines"]) == (
            body["closing"][key])

    assert client.get(f"/v1/statements/residents/{me}", params=month,
                      headers=resident).status_code == 200
    hidden = client.get(f"/v1/statements/residents/{other}", params=month, headers=resident)
    missing = client.get(f"/v1/statements/residents/{uuid.uuid4()}", params=month,
                         headers=auditor)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["code"] == missing.json()["code"]
    assert client.get(f"/v1/statements/complexes/{mine}", params=month,
                      headers=manager).status_code == 200
    assert client.get(f"/v1/statements/complexes/{theirs}", params=month,
                      headers=manager).status_code == 404
    assert client.get(f"/v1/statements/complexes/{mine}", params=month,
                      headers=resident).status_code == 403
    assert client.get(f"/v1/statements/residents/{me}", params={"month": "2026-13"},
                      headers=resident).status_code == 422
