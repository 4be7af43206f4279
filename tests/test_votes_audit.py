"""`ledger audit verify` over resident votes: every tally recomputed, every spend within its
proposal; a wrong tally, an overspent proposal or an edited projection row is found."""

from __future__ import annotations

import contextlib
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from audit.chain import ChainFollower
from audit.scratch import PROPOSAL_OVERSPENT, TALLY_MISMATCH, Scratch
from audit.verification import verify_ledger
from eventlog.log import Event
from ledger import commands as c
from ledger.application import now
from ledger.errors import DomainError
from ledger.proposal import proposal_aggregate_id
from projections.runner import ProjectionRunner
from world import MANAGER, World

HOUR = timedelta(hours=1)


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "audit-keys"


def voting_workload(world: World, rng: random.Random) -> None:
    world.policy()
    complex_id = world.complex("AV-01")
    residents = [world.resident(world.household(complex_id, f"u{n}")) for n in range(6)]
    for buyer in residents[:5]:
        world.trade(buyer, residents[5], 200_000)  # the fund accrues 10,000
    for number in range(8):
        proposal_id = f"P-{number}"
        world.run(c.OpenProposal(complex_id, proposal_id, "facility", "Shelves",
                                 rng.randrange(500, 3_000), now() + 2 * HOUR),
                  actor=MANAGER, role="manager")
        for resident in rng.sample(residents, rng.randrange(0, 6)):
            world.run(c.CastBallot(proposal_id, resident, rng.choice(["yes", "yes", "no"])),
                      actor=resident, role="resident")
        world.run(c.CloseProposal(proposal_id, now() + 3 * HOUR))
        for spend in range(3):
            with contextlib.suppress(DomainError):
                world.run(c.SpendFund(complex_id, f"S-{number}-{spend}", "facility",
                                      rng.randrange(200, 1_500), proposal_id=proposal_id),
                          actor=MANAGER, role="manager")


def test_verify_recomputes_every_tally(world: World, key_dir: Path) -> None:
    """A clean voting workload verifies, with every decision recomputed; an edited tally
    in the projection is then named at the proposal's position."""
    voting_workload(world, random.Random(5))
    with ProjectionRunner(world.database_url, world.schema, start=False) as runner:
        runner.catch_up()
    ChainFollower(world.database_url, world.schema, key_dir=key_dir,
                  checkpoint_interval_events=50).catch_up()
    result = verify_ledger(world.database_url, world.schema, key_dir=key_dir)
    assert result.ok, result.lines()
    assert result.counts["tallies_recomputed"] == 8

    with world.connect() as conn:
        row = conn.execute("SELECT position FROM p_proposals WHERE proposal_key = %s",
                           (proposal_aggregate_id("P-3"),)).fetchone()
        assert row is not None
        conn.execute("UPDATE p_proposals SET yes_count = yes_count + 1"
                     " WHERE proposal_key = %s", (proposal_aggregate_id("P-3"),))
        conn.commit()
    result = verify_ledger(world.database_url, world.schema, key_dir=key_dir)
    assert not result.ok
    assert (result.first_bad_position, result.problem) == (row[0], "projection_mismatch")


def _event(position: int, originator: str, event_name: str, **data: Any) -> Event:
    return Event(position, originator, position, event_name, data)


def _uuid(hex_digits: str) -> dict[str, str]:
    return {"_type_": "uuid_hex", "_data_": hex_digits}


COMPLEX = "c" * 32
PROPOSAL = proposal_aggregate_id("P-x").hex


def _opened_and_counted(households: int) -> list[Event]:
    events = [_event(1, COMPLEX, "Complex.Registered", code="X", name="X", region="R")]
    events += [_event(2 + n, COMPLEX, "Complex.HouseholdCounted",
                      household_id=_uuid(f"{n:032x}")) for n in range(households)]
    events.append(_event(10, PROPOSAL, "Proposal.Opened", complex_id=_uuid(COMPLEX),
                         amount_won=100, quorum_bps=5_000, approval_bps=5_000))
    return events


def _fold(events: list[Event]) -> Scratch:
    scratch = Scratch()
    for event in events:
        scratch.apply(event)
    scratch.finish()
    return scratch


def test_a_decision_that_does_not_follow_from_its_ballots_is_found() -> None:
    """One yes of four households misses a 50 % quorum: a recorded approval is wrong."""
    events = [*_opened_and_counted(4),
              _event(11, PROPOSAL, "Proposal.BallotCast", household_id=_uuid("0" * 32),
                     choice="yes"),
              _event(12, PROPOSAL, "Proposal.Decided", outcome="approved", households_count=4,
                     ballots_count=1, yes_count=1, no_count=0, quorum_bps=5_000,
                     approval_bps=5_000)]
    findings = _fold(events).findings
    assert [(f.position, f.code) for f in findings] == [(12, TALLY_MISMATCH)]


def test_a_second_ballot_of_a_household_is_found() -> None:
    """Two ballots of one household on one proposal break the one-ballot rule."""
    ballot = {"household_id": _uuid("0" * 32), "choice": "yes"}
    events = [*_opened_and_counted(2), _event(11, PROPOSAL, "Proposal.BallotCast", **ballot),
              _event(12, PROPOSAL, "Proposal.BallotCast", **ballot)]
    assert [(f.position, f.code) for f in _fold(events).findings] == [(12, TALLY_MISMATCH)]


def test_spends_beyond_the_proposal_are_found() -> None:
    """Spends citing an approved proposal of 100 won that add up to 120 are found."""
    events = [*_opened_and_counted(1),
              _event(11, PROPOSAL, "Proposal.BallotCast", household_id=_uuid("0" * 32),
                     choice="yes"),
              _event(12, PROPOSAL, "Proposal.Decided", outcome="approved", households_count=1,
                     ballots_count=1, yes_count=1, no_count=0, quorum_bps=5_000,
                     approval_bps=5_000),
              _event(13, PROPOSAL, "Proposal.SpendCited", spend_id="S1", amount_won=70),
              _event(14, PROPOSAL, "Proposal.SpendCited", spend_id="S2", amount_won=50)]
    findings = _fold(events).findings
    overspent = [f for f in findings if f.position == 14 and "cited for 120 won" in f.detail]
    assert [f.code for f in overspent] == [PROPOSAL_OVERSPENT]
    # Neither citation has its Complex.FundSpent: each is found at the end, too.
    assert sorted(f.position for f in findings if "names proposal None" in f.detail) == [13, 14]
