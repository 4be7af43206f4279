"""Resident votes over HTTP: open, vote, see the tally (and only what the role may see),
decide, spend citing the proposal, and small spends within the monthly allowance."""

# Fixtures come from test_api_fixtures by import, so tests "redefine" their names.
# ruff: noqa: F811

from __future__ import annotations

import uuid

from api.auth import Role
from service.sweeper import ExpirySweeper
from test_api_fixtures import ApiWorld, api, key_dir  # noqa: F401  (fixtures)
from votes_api import open_proposal, past_proposal


def code_of(response: object) -> str:
    problem = response.json()  # type: ignore[attr-defined]
    return str(problem["code"])


def test_households_vote_and_see_the_tally(api: ApiWorld) -> None:
    """A resident votes for their household, a coordinator for another with consent; the
    tally counts both; each resident sees their own household's ballot, staff only tallies."""
    proposal_id = open_proposal(api, api.complex_a)
    a1 = api.callers["resident"]
    cast = api.send("POST", f"/v1/proposals/{proposal_id}/ballots", a1, {"choice": "yes"})
    assert cast.status_code == 201, cast.text
    assert cast.json()["household_id"] == str(api.households["a1"])
    by_coordinator = api.send("POST", f"/v1/proposals/{proposal_id}/ballots",
                              api.callers["coordinator"],
                              {"choice": "no", "resident_id": str(api.residents["a2"]),
                               "consent_ref": "phone-call-2026-12-05"})
    assert by_coordinator.status_code == 201, by_coordinator.text

    mine = api.get(f"/v1/proposals/{proposal_id}", a1).json()
    assert (mine["view"], mine["household_choice"], mine["state"], mine["households_count"],
            mine["ballots_count"], mine["yes_count"], mine["no_count"]) == (
        "resident", "yes", "open", 2, 2, 1, 1)
    theirs = api.get(f"/v1/proposals/{proposal_id}", api.callers["resident_a2"]).json()
    assert theirs["household_choice"] == "no"
    staff = api.get(f"/v1/proposals/{proposal_id}", api.callers["manager"]).json()
    assert staff["view"] == "tally" and "household_choice" not in staff
    listed = api.get(f"/v1/complexes/{api.complex_a}/proposals", a1).json()
    assert [p["proposal_id"] for p in listed["proposals"]] == [proposal_id]


def test_a_household_votes_once_over_http(api: ApiWorld) -> None:
    """A second ballot of the household is 409 already_voted, whoever casts it."""
    proposal_id = open_proposal(api, api.complex_a)
    path = f"/v1/proposals/{proposal_id}/ballots"
    assert api.send("POST", path, api.callers["resident"], {"choice": "yes"}).status_code == 201
    again = api.send("POST", path, api.callers["coordinator"],
                     {"choice": "no", "resident_id": str(api.residents["a1"]),
                      "consent_ref": "form-3"})
    assert (again.status_code, code_of(again)) == (409, "already_voted")


def test_ballot_bodies_by_role(api: ApiWorld) -> None:
    """A resident may not name a resident; a coordinator must name one and their consent."""
    proposal_id = open_proposal(api, api.complex_a)
    path = f"/v1/proposals/{proposal_id}/ballots"
    cases = [
        (api.callers["resident"], {"choice": "yes", "resident_id": str(api.residents["a2"])}),
        (api.callers["coordinator"], {"choice": "yes"}),
        (api.callers["coordinator"], {"choice": "yes", "resident_id": str(api.residents["a2"])}),
        (api.callers["resident"], {"choice": "maybe"}),
    ]
    before = api.log_position()
    for who, body in cases:
        response = api.send("POST", path, who, body)
        assert (response.status_code, code_of(response)) == (422, "invalid_field"), body
    assert api.log_position() == before


def test_who_voted_how_is_for_auditors_only(api: ApiWorld) -> None:
    """Auditors list the ballots with who cast them; every other role is refused."""
    proposal_id = open_proposal(api, api.complex_a)
    api.ok("POST", f"/v1/proposals/{proposal_id}/ballots", api.callers["resident"],
           {"choice": "yes"})
    path = f"/v1/proposals/{proposal_id}/ballots"
    ballots = api.get(path, api.callers["auditor"]).json()["ballots"]
    assert [(b["household_id"], b["choice"], b["actor_id"]) for b in ballots] == [
        (str(api.households["a1"]), "yes", str(api.residents["a1"]))]
    for role in ("resident", "coordinator", "manager", "operator", "platform"):
        assert api.get(path, api.callers[role]).status_code == 403, role
    assert api.get("/v1/proposals/V-none/ballots", api.callers["auditor"]).status_code == 404


def test_another_complexs_proposal_looks_missing(api: ApiWorld) -> None:
    """A resident or staff of complex B asking for, voting on or closing A's proposal gets
    exactly the answer a missing proposal gets."""
    proposal_id = open_proposal(api, api.complex_a)
    stand_in = f"V-{uuid.uuid4().hex[:10]}"
    for who in (api.callers["resident_b1"], api.callers["manager_b"],
                api.callers["coordinator_b"]):
        real = api.get(f"/v1/proposals/{proposal_id}", who)
        missing = api.get(f"/v1/proposals/{stand_in}", who)
        assert real.status_code == missing.status_code == 404
        assert real.text.replace(proposal_id, stand_in) == missing.text
    vote = api.send("POST", f"/v1/proposals/{proposal_id}/ballots",
                    api.callers["resident_b1"], {"choice": "yes"})
    close = api.send("POST", f"/v1/proposals/{proposal_id}/close", api.callers["manager_b"])
    assert [(r.status_code, code_of(r)) for r in (vote, close)] == [
        (404, "unknown_proposal"), (404, "unknown_proposal")]


def test_decide_then_spend_within_the_proposal(api: ApiWorld) -> None:
    """After the window, the manager's close approves by the recorded rule; spends cite the
    proposal up to its amount, and the fund view shows each spend with its proposal."""
    proposal_id = past_proposal(api, api.complex_a, (api.residents["a1"],), amount_won=700)
    manager = api.callers["manager"]
    decided = api.send("POST", f"/v1/proposals/{proposal_id}/close", manager)
    assert decided.status_code == 200, decided.text
    assert {k: decided.json()[k] for k in ("state", "households_count", "ballots_count",
                                           "yes_count", "no_count")} == {
        "state": "approved", "households_count": 2, "ballots_count": 1, "yes_count": 1,
        "no_count": 0}
    spends = f"/v1/complexes/{api.complex_a}/fund/spends"
    first = api.send("POST", spends, manager, {"spend_id": "S-1", "purpose": "event",
                                               "amount_won": 600, "proposal_id": proposal_id})
    assert (first.status_code, first.json()["proposal_id"]) == (201, proposal_id)
    over = api.send("POST", spends, manager, {"spend_id": "S-2", "purpose": "event",
                                              "amount_won": 101, "proposal_id": proposal_id})
    assert (over.status_code, code_of(over)) == (409, "proposal_amount_exceeded")
    fund = api.get(f"/v1/complexes/{api.complex_a}/fund", manager).json()
    assert [(s["spend_id"], s["proposal_id"], s["amount_won"]) for s in fund["spends"]] == [
        ("S-1", proposal_id, 600)]
    view = api.get(f"/v1/proposals/{proposal_id}", manager).json()
    assert (view["state"], view["spent_won"], view["unspent_won"]) == ("approved", 600, 100)
    again = api.send("POST", f"/v1/proposals/{proposal_id}/close", manager)
    assert (again.status_code, code_of(again)) == (409, "proposal_decided")


def test_closing_early_and_spending_on_an_open_proposal_are_refused(api: ApiWorld) -> None:
    """Before its window closes a proposal cannot be decided, nor cited by a spend."""
    proposal_id = open_proposal(api, api.complex_a)
    manager = api.callers["manager"]
    early = api.send("POST", f"/v1/proposals/{proposal_id}/close", manager)
    spend = api.send("POST", f"/v1/complexes/{api.complex_a}/fund/spends", manager,
                     {"spend_id": "S-o", "purpose": "event", "amount_won": 1,
                      "proposal_id": proposal_id})
    assert [(r.status_code, code_of(r)) for r in (early, spend)] == [
        (409, "voting_not_over"), (409, "proposal_not_approved")]


def test_small_spends_need_no_vote_up_to_the_operators_allowance(api: ApiWorld) -> None:
    """Without a proposal, spends stay within the month's allowance the operator sets."""
    manager = api.callers["manager"]
    spends = f"/v1/complexes/{api.complex_a}/fund/spends"
    assert api.send("POST", spends, manager, {"spend_id": "S-a", "purpose": "upkeep",
                                              "amount_won": 100}).status_code == 201
    set_allowance = api.send("POST", f"/v1/complexes/{api.complex_a}/fund/allowance",
                             api.callers["operator"], {"allowance_won": 150})
    assert set_allowance.status_code == 200, set_allowance.text
    over = api.send("POST", spends, manager, {"spend_id": "S-b", "purpose": "upkeep",
                                              "amount_won": 51, "decision_ref": "invoice-9"})
    assert (over.status_code, code_of(over)) == (409, "allowance_exceeded")
    assert api.send("POST", spends, manager, {"spend_id": "S-c", "purpose": "upkeep",
                                              "amount_won": 50}).status_code == 201


def test_the_sweeper_decides_proposals_whose_window_closed(api: ApiWorld) -> None:
    """The service's sweeper decides a due proposal once; a repeat decides nothing."""
    proposal_id = past_proposal(api, api.complex_a, (api.residents["a1"], api.residents["a2"]))
    assert api.get(f"/v1/proposals/{proposal_id}", api.callers["auditor"]).json()[
        "state"] == "open"
    sweeper = ExpirySweeper(api.services.ledger, api.services.pool, 60)
    assert sweeper.decide_due_proposals() == 1
    assert sweeper.decide_due_proposals() == 0  # a repeat, even before the projection caught up
    api.position = api.log_position()
    view = api.get(f"/v1/proposals/{proposal_id}", api.callers["auditor"]).json()
    assert (view["state"], view["yes_count"]) == ("approved", 2)


def test_opening_needs_a_sensible_window(api: ApiWorld) -> None:
    """A window that closes in the past is 422 invalid_voting_window; a manager of another
    complex gets 404."""
    body = {"proposal_id": "V-w", "purpose": "event", "title": "Fair", "amount_won": 1,
            "voting_closes_at": "2026-01-01T00:00:00+09:00"}
    past = api.send("POST", f"/v1/complexes/{api.complex_a}/proposals",
                    api.callers["manager"], body)
    assert (past.status_code, code_of(past)) == (422, "invalid_voting_window")
    other = api.send("POST", f"/v1/complexes/{api.complex_a}/proposals",
                     api.caller(Role.MANAGER, complex_id=api.complex_b), body)
    assert (other.status_code, code_of(other)) == (404, "unknown_complex")
