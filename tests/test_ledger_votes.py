"""Resident votes that gate common-fund spending: given what happened, when a command
arrives, then these events are recorded (or this rejection, and nothing changes)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from ledger import commands as c
from ledger import limits
from ledger.application import now
from ledger.codec import decode
from ledger.complex import Complex
from ledger.errors import DomainError
from ledger.proposal import Proposal, proposal_aggregate_id
from world import COORDINATOR, MANAGER, OPERATOR, World

HOUR = timedelta(hours=1)


def rejected(world: World, code: str, command: c.Command, **cause_fields: Any) -> None:
    """Assert that the command is rejected with `code` and that nothing was recorded."""
    before = world.ledger.position()
    with pytest.raises(DomainError) as caught:
        world.run(command, **cause_fields)
    assert caught.value.code == code, caught.value
    assert world.ledger.position() == before


def as_manager() -> dict[str, Any]:
    return {"actor": MANAGER, "role": "manager"}


@pytest.fixture
def town(world: World) -> dict[str, Any]:
    """Given a complex of four households (one resident each, the first two funded by a
    trade that accrued 1,000 won to the fund) and a complex next door."""
    world.policy()
    complex_id = world.complex("V-01")
    homes = [world.household(complex_id, f"101-{n}") for n in range(4)]
    seller = world.resident(homes[3])
    residents = [world.resident(home) for home in homes[:3]] + [seller]
    world.trade(residents[0], seller, 100_000)  # the fund accrues 1,000
    other_complex = world.complex("V-02")
    stranger = world.resident(world.household(other_complex, "201-1"))
    return {"complex": complex_id, "homes": homes, "residents": residents,
            "other_complex": other_complex, "stranger": stranger}


def open_proposal(world: World, town: dict[str, Any], proposal_id: str = "P-1",
                  amount_won: int = 800, purpose: str = "facility",
                  closes_in: timedelta = 2 * HOUR, **fields: Any) -> dict[str, Any]:
    return world.run(c.OpenProposal(town["complex"], proposal_id, purpose, "Playroom mats",
                                    amount_won, now() + closes_in, **fields),
                     **as_manager()).result


def vote(world: World, town: dict[str, Any], index: int, choice: str,
         proposal_id: str = "P-1") -> None:
    resident = town["residents"][index]
    world.run(c.CastBallot(proposal_id, resident, choice), actor=resident, role="resident")


def close(world: World, proposal_id: str = "P-1", after: timedelta = 3 * HOUR) -> dict[str, Any]:
    return world.run(c.CloseProposal(proposal_id), occurred_at=now() + after,
                     **as_manager()).result


def approved(world: World, town: dict[str, Any], proposal_id: str = "P-1",
             amount_won: int = 800, purpose: str = "facility") -> None:
    open_proposal(world, town, proposal_id, amount_won, purpose)
    vote(world, town, 0, "yes", proposal_id)
    vote(world, town, 1, "yes", proposal_id)
    assert close(world, proposal_id)["state"] == "approved"


def proposal(world: World, proposal_id: str = "P-1") -> Proposal:
    found = world.ledger.snapshot(Proposal, proposal_aggregate_id(proposal_id))
    assert found is not None
    return found


# Opening ---------------------------------------------------------------------------------

def test_a_manager_opens_a_proposal_with_the_default_rule(world: World, town: dict) -> None:
    """A proposal opens now, with the quorum and approval defaults of ledger.limits."""
    before = world.ledger.position()
    result = open_proposal(world, town)
    assert world.event_names_after(before) == ["Proposal.Opened"]
    assert (result["state"], result["quorum_bps"], result["approval_bps"]) == (
        "open", limits.quorum_bps_default, limits.approval_bps_default)
    assert proposal(world).home_complex_id == town["complex"]


def test_a_proposal_id_is_used_once(world: World, town: dict) -> None:
    """A second proposal with the same id is refused with proposal_exists."""
    open_proposal(world, town)
    rejected(world, "proposal_exists",
             c.OpenProposal(town["complex"], "P-1", "event", "Other", 1, now() + 2 * HOUR),
             **as_manager())


@pytest.mark.parametrize(("opens_in", "closes_in"), [
    (None, -HOUR),  # closes in the past
    (None, timedelta(minutes=10)),  # shorter than the minimum window
    (HOUR, HOUR),  # closes when it opens
    (None, timedelta(days=61)),  # longer than the maximum window
    (timedelta(days=70), timedelta(days=71)),  # opens too far ahead
])
def test_a_voting_window_must_be_sensible(world: World, town: dict,
                                          opens_in: timedelta | None,
                                          closes_in: timedelta) -> None:
    """Windows that close before they open, before now, or out of bounds are refused."""
    moment = now()
    rejected(world, "invalid_voting_window",
             c.OpenProposal(town["complex"], "P-w", "event", "Fair", 100, moment + closes_in,
                            None if opens_in is None else moment + opens_in),
             occurred_at=moment, **as_manager())


@pytest.mark.parametrize(("command_fields", "code"), [
    ({"purpose": "party"}, "invalid_purpose"),
    ({"title": ""}, "invalid_field"),
    ({"title": "x" * 101}, "invalid_field"),
    ({"amount_won": 0}, "invalid_amount"),
    ({"quorum_bps": 10_001}, "invalid_field"),
    ({"approval_bps": 10_000}, "invalid_field"),
    ({"complex_id": uuid.uuid4()}, "unknown_complex"),
])
def test_a_proposal_needs_well_formed_fields(world: World, town: dict,
                                             command_fields: dict, code: str) -> None:
    """Purpose, title, amount, quorum, approval and complex are checked."""
    fields: dict[str, Any] = {"complex_id": town["complex"], "proposal_id": "P-f",
                              "purpose": "event", "title": "Fair", "amount_won": 100,
                              "voting_closes_at": now() + 2 * HOUR}
    fields.update(command_fields)
    rejected(world, code, c.OpenProposal(**fields), **as_manager())


# Ballots ---------------------------------------------------------------------------------

def test_a_resident_casts_their_households_ballot(world: World, town: dict) -> None:
    """A ballot records the household and the choice, and no personal data."""
    open_proposal(world, town)
    before = world.ledger.position()
    vote(world, town, 0, "yes")
    [cast] = [e for e in world.events_after(before) if isinstance(e, Proposal.BallotCast)]
    assert (cast.household_id, cast.choice, cast.consent_ref) == (town["homes"][0], "yes", "")
    assert (proposal(world).yes_count, proposal(world).no_count) == (1, 0)


def test_a_household_votes_once(world: World, town: dict) -> None:
    """A second ballot of the same household, by another of its residents, is already_voted."""
    open_proposal(world, town)
    vote(world, town, 0, "yes")
    housemate = world.resident(town["homes"][0])
    rejected(world, "already_voted", c.CastBallot("P-1", housemate, "no"),
             actor=housemate, role="resident")
    rejected(world, "already_voted", c.CastBallot("P-1", town["residents"][0], "yes"),
             actor=town["residents"][0], role="resident")


def test_a_coordinator_votes_for_a_resident_with_consent(world: World, town: dict) -> None:
    """A coordinator's ballot records the consent reference and on whose behalf it was cast."""
    open_proposal(world, town)
    resident = town["residents"][1]
    rejected(world, "invalid_field", c.CastBallot("P-1", resident, "no"),
             actor=COORDINATOR, role="coordinator")
    before = world.ledger.position()
    world.run(c.CastBallot("P-1", resident, "no", "consent-form-17"), actor=COORDINATOR,
              role="coordinator")
    [cast] = [e for e in world.events_after(before) if isinstance(e, Proposal.BallotCast)]
    assert (cast.actor_id, cast.on_behalf_of, cast.consent_ref) == (
        COORDINATOR, resident, "consent-form-17")


def test_ballots_only_while_the_window_is_open(world: World, town: dict) -> None:
    """Before the window opens: voting_not_open; from its close on: voting_closed."""
    resident = town["residents"][0]
    open_proposal(world, town, voting_opens_at=now() + HOUR, closes_in=3 * HOUR)
    rejected(world, "voting_not_open", c.CastBallot("P-1", resident, "yes"),
             actor=resident, role="resident")
    rejected(world, "voting_closed", c.CastBallot("P-1", resident, "yes"),
             actor=resident, role="resident", occurred_at=now() + 3 * HOUR)
    world.run(c.CastBallot("P-1", resident, "yes"), actor=resident, role="resident",
              occurred_at=now() + 2 * HOUR)


def test_a_decided_proposal_takes_no_ballots(world: World, town: dict) -> None:
    """Once decided, a proposal refuses ballots with voting_closed."""
    open_proposal(world, town)
    close(world)
    rejected(world, "voting_closed", c.CastBallot("P-1", town["residents"][0], "yes"),
             actor=town["residents"][0], role="resident")


def test_ballot_refusals(world: World, town: dict) -> None:
    """Unknown proposal, unknown resident, bad choice, another complex, moved out."""
    open_proposal(world, town)
    resident = town["residents"][0]
    rejected(world, "unknown_proposal", c.CastBallot("P-none", resident, "yes"),
             actor=resident, role="resident")
    rejected(world, "unknown_resident", c.CastBallot("P-1", uuid.uuid4(), "yes"),
             actor=COORDINATOR, role="coordinator")
    rejected(world, "invalid_field", c.CastBallot("P-1", resident, "maybe"),
             actor=resident, role="resident")
    rejected(world, "resident_not_in_complex", c.CastBallot("P-1", town["stranger"], "yes"),
             actor=town["stranger"], role="resident")
    leaver = town["residents"][2]
    world.run(c.MoveOut(leaver), actor=COORDINATOR, role="coordinator")
    rejected(world, "wallet_closed", c.CastBallot("P-1", leaver, "yes"),
             actor=leaver, role="resident")


# Deciding --------------------------------------------------------------------------------

def test_closing_records_the_tally_and_the_rule(world: World, town: dict) -> None:
    """Two yes of five households (40 % turnout, quorum 30 %) is approved, tally recorded."""
    open_proposal(world, town)
    vote(world, town, 0, "yes")
    vote(world, town, 1, "yes")
    before = world.ledger.position()
    result = close(world)
    [decided] = [e for e in world.events_after(before) if isinstance(e, Proposal.Decided)]
    assert (decided.outcome, decided.households_count, decided.ballots_count,
            decided.yes_count, decided.no_count, decided.quorum_bps, decided.approval_bps,
            decided.reason) == ("approved", 4, 2, 2, 0, 3_000, 5_000, "closed_by_manager")
    assert result["state"] == "approved"


def test_without_quorum_a_proposal_is_rejected(world: World, town: dict) -> None:
    """One ballot of four households (25 %) misses a 30 % quorum: rejected, even if yes."""
    open_proposal(world, town)
    vote(world, town, 0, "yes")
    assert close(world)["state"] == "rejected"


def test_a_tie_is_not_a_majority(world: World, town: dict) -> None:
    """Approval needs more than approval_bps of the ballots: one yes, one no is rejected."""
    open_proposal(world, town)
    vote(world, town, 0, "yes")
    vote(world, town, 1, "no")
    assert close(world)["state"] == "rejected"


def test_the_recorded_rule_decides(world: World, town: dict) -> None:
    """A proposal opened with quorum 0 and approval 0 is approved by one yes."""
    open_proposal(world, town, quorum_bps=0, approval_bps=0)
    vote(world, town, 2, "yes")
    assert close(world)["state"] == "approved"


def test_closing_waits_for_the_window(world: World, town: dict) -> None:
    """Closing before the window's close is voting_not_over; closing twice proposal_decided."""
    open_proposal(world, town)
    rejected(world, "voting_not_over", c.CloseProposal("P-1"), **as_manager())
    close(world)
    rejected(world, "proposal_decided", c.CloseProposal("P-1"), occurred_at=now() + 4 * HOUR,
             **as_manager())
    rejected(world, "unknown_proposal", c.CloseProposal("P-none"), **as_manager())


def test_the_sweeper_closes_with_its_clock(world: World, town: dict) -> None:
    """A close with the sweeper's clock records window_closed as its reason."""
    open_proposal(world, town)
    result = world.run(c.CloseProposal("P-1", now() + 3 * HOUR))
    assert result["state"] == "rejected"
    assert proposal(world).state == "rejected"
    decided = [e for e in world.all_events() if isinstance(e, Proposal.Decided)]
    assert decided[0].reason == "window_closed"


def test_households_are_counted_in_their_complex(world: World, town: dict) -> None:
    """Every registered household counts, with or without residents."""
    assert world.ledger.snapshot(Complex, town["complex"]).households_count == 4
    world.household(town["complex"], "101-9")
    assert world.ledger.snapshot(Complex, town["complex"]).households_count == 5


# Spends ----------------------------------------------------------------------------------

def test_a_spend_cites_an_approved_proposal(world: World, town: dict) -> None:
    """The spend and the proposal's spent total are saved together."""
    approved(world, town)
    before = world.ledger.position()
    world.run(c.SpendFund(town["complex"], "S-1", "facility", 500, proposal_id="P-1"),
              **as_manager())
    assert world.event_names_after(before) == ["Complex.FundSpent", "Proposal.SpendCited"]
    spent = [e for e in world.events_after(before) if isinstance(e, Complex.FundSpent)]
    assert (spent[0].proposal_id, spent[0].decision_ref) == ("P-1", "")
    assert proposal(world).spent_won == 500


def test_spends_never_exceed_the_proposal(world: World, town: dict) -> None:
    """Spends citing one proposal add up to at most its amount."""
    approved(world, town, amount_won=800)
    world.run(c.SpendFund(town["complex"], "S-1", "facility", 500, proposal_id="P-1"),
              **as_manager())
    rejected(world, "proposal_amount_exceeded",
             c.SpendFund(town["complex"], "S-2", "facility", 301, proposal_id="P-1"),
             **as_manager())
    world.run(c.SpendFund(town["complex"], "S-3", "facility", 300, proposal_id="P-1"),
              **as_manager())
    assert proposal(world).spent_won == 800


def test_the_fund_still_bounds_an_approved_spend(world: World, town: dict) -> None:
    """An approved amount beyond the fund's balance is refused with insufficient_fund."""
    approved(world, town, amount_won=5_000)
    rejected(world, "insufficient_fund",
             c.SpendFund(town["complex"], "S-1", "facility", 1_001, proposal_id="P-1"),
             **as_manager())


def test_a_spend_cites_only_an_approved_proposal_of_its_complex(world: World,
                                                                town: dict) -> None:
    """Open or rejected: proposal_not_approved; other purpose, complex, or none: refused."""
    open_proposal(world, town, "P-open")
    rejected(world, "proposal_not_approved",
             c.SpendFund(town["complex"], "S-1", "facility", 1, proposal_id="P-open"),
             **as_manager())
    open_proposal(world, town, "P-no")
    close(world, "P-no")
    rejected(world, "proposal_not_approved",
             c.SpendFund(town["complex"], "S-1", "facility", 1, proposal_id="P-no"),
             **as_manager())
    approved(world, town, "P-yes")
    rejected(world, "proposal_purpose_mismatch",
             c.SpendFund(town["complex"], "S-1", "event", 1, proposal_id="P-yes"),
             **as_manager())
    rejected(world, "unknown_proposal",
             c.SpendFund(town["other_complex"], "S-1", "facility", 1, proposal_id="P-yes"),
             **as_manager())
    rejected(world, "unknown_proposal",
             c.SpendFund(town["complex"], "S-1", "facility", 1, proposal_id="P-none"),
             **as_manager())


def test_small_spends_without_a_vote_stay_within_the_monthly_allowance(
        world: World, town: dict) -> None:
    """Spends without a proposal share the allowance of their KST month."""
    world.run(c.SetFundAllowance(town["complex"], 600), actor=OPERATOR, role="operator")
    world.run(c.SpendFund(town["complex"], "S-1", "upkeep", 400, "cleaning-invoice-3"),
              **as_manager())
    rejected(world, "allowance_exceeded",
             c.SpendFund(town["complex"], "S-2", "upkeep", 201, "cleaning-invoice-4"),
             **as_manager())
    world.run(c.SpendFund(town["complex"], "S-3", "upkeep", 200), **as_manager())
    next_month = now() + timedelta(days=32)
    world.run(c.SpendFund(town["complex"], "S-4", "upkeep", 300), occurred_at=next_month,
              **as_manager())


def test_the_default_allowance_applies_until_set(world: World, town: dict) -> None:
    """Without an operator's allowance, the default of ledger.limits applies."""
    fund = world.ledger.snapshot(Complex, town["complex"])
    assert fund.allowance_left_won(now()) == limits.fund_allowance_won_default
    rejected(world, "invalid_amount", c.SetFundAllowance(town["complex"], -1),
             actor=OPERATOR, role="operator")
    world.run(c.SetFundAllowance(town["complex"], 0), actor=OPERATOR, role="operator")
    rejected(world, "allowance_exceeded", c.SpendFund(town["complex"], "S-1", "upkeep", 1),
             **as_manager())


def test_spends_citing_a_proposal_leave_the_allowance_alone(world: World, town: dict) -> None:
    """A spend citing a proposal does not use up the month's allowance."""
    world.run(c.SetFundAllowance(town["complex"], 100), actor=OPERATOR, role="operator")
    approved(world, town)
    world.run(c.SpendFund(town["complex"], "S-1", "facility", 800, proposal_id="P-1"),
              **as_manager())
    fund = world.ledger.snapshot(Complex, town["complex"])
    assert fund.allowance_left_won(now()) == 100


def test_a_spend_recorded_before_proposals_still_replays(world: World, town: dict) -> None:
    """A FundSpent stored without proposal_id decodes with an empty proposal_id."""
    state = (b'{"actor_id":{"_type_":"uuid_hex","_data_":"' + MANAGER.hex.encode() +
             b'"},"actor_role":"manager","on_behalf_of":null,"request_id":"r",'
             b'"complex_id":null,"occurred_at":{"_type_":"datetime_iso",'
             b'"_data_":"2026-01-02T03:04:05+09:00"},"timestamp":{"_type_":"datetime_iso",'
             b'"_data_":"2026-01-02T03:04:05+09:00"},"spend_id":"S-old","purpose":"event",'
             b'"amount_won":5,"decision_ref":"minutes-1"}')
    event = decode(town["complex"], 99, "ledger.complex:Complex.FundSpent", state)
    assert (event.proposal_id, event.decision_ref, event.amount_won) == ("", "minutes-1", 5)
    assert isinstance(event.occurred_at, datetime)


def test_a_retried_spend_without_proposal_keeps_its_fingerprint(world: World,
                                                                town: dict) -> None:
    """A spend request without proposal_id fingerprints as spends did before proposals."""
    assert "proposal_id" not in c.SpendFund(town["complex"], "S", "event", 1, "d").content()
    assert c.SpendFund(town["complex"], "S", "event", 1, proposal_id="P").content()[
        "proposal_id"] == "P"


def test_snapshots_keep_the_vote_and_the_allowance(world: World, town: dict) -> None:
    """A proposal with ballots and spends, and a fund with its household count, allowance
    and month's allowance use, load from snapshots as they were."""
    world.run(c.SetFundAllowance(town["complex"], 700), actor=OPERATOR, role="operator")
    world.run(c.SpendFund(town["complex"], "S-0", "upkeep", 50), **as_manager())
    approved(world, town)
    world.run(c.SpendFund(town["complex"], "S-1", "facility", 300, proposal_id="P-1"),
              **as_manager())
    aggregate_ids = (town["complex"], proposal_aggregate_id("P-1"))
    before = {aggregate_id: world.ledger.load_fresh(aggregate_id)
              for aggregate_id in aggregate_ids}
    for aggregate_id in aggregate_ids:
        world.ledger.take_snapshot(aggregate_id)
    snapshots = world.ledger.snapshots
    assert snapshots is not None
    for aggregate_id in aggregate_ids:
        [snapshot] = list(snapshots.get(aggregate_id))
        restored = snapshot.mutate(None)
        assert vars(restored) == vars(before[aggregate_id])
    fund = world.ledger.load_fresh(town["complex"])
    assert isinstance(fund, Complex)
    assert (fund.households_count, fund.allowance_won, fund.allowance_left_won(now())) == (
        4, 700, 650)


def test_a_fund_snapshot_from_before_votes_still_loads(world: World, town: dict) -> None:
    """A snapshot taken before funds counted households and kept allowances (no such state)
    restores with no households counted and the default allowance."""
    world.ledger.take_snapshot(town["complex"])
    snapshots = world.ledger.snapshots
    assert snapshots is not None
    [snapshot] = list(snapshots.get(town["complex"]))
    old_state = {name: value for name, value in snapshot.state.items()
                 if name not in ("households_count", "allowance_won", "allowance_month",
                                 "allowance_spent_won")}
    old = type(snapshot)(originator_id=snapshot.originator_id,
                         originator_version=snapshot.originator_version,
                         timestamp=snapshot.timestamp, topic=snapshot.topic, state=old_state)
    fund = old.mutate(None)
    assert isinstance(fund, Complex)
    assert (fund.households_count, fund.allowance_left_won(now())) == (
        0, limits.fund_allowance_won_default)
    assert fund.balance_won == 1_000


def test_ballots_never_reach_the_feed(world: World, town: dict) -> None:
    """Who voted how stays in the ledger: a ballot has no public message; the decision does."""
    from feed.public_events import to_public  # noqa: PLC0415  (only this test needs the feed)

    open_proposal(world, town)
    vote(world, town, 0, "yes")
    close(world)
    with world.connect() as conn:
        rows = conn.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state"
            " FROM ledger_events WHERE topic LIKE '%Proposal.%' ORDER BY notification_id"
        ).fetchall()
    published = [to_public(*row) for row in rows]
    assert [None if m is None else m.event_type for m in published] == [
        "vote.proposal_opened.v1", None, "vote.proposal_decided.v1"]
    decided = published[2]
    assert decided is not None
    assert "household_id" not in decided.payload and decided.payload["yes_count"] == 1
