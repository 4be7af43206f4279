"""One ballot per household and spends within a proposal, under concurrent writers."""

from __future__ import annotations

import multiprocessing
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from ledger import commands as c
from ledger.application import Ledger, Outcome, now
from ledger.conservation import fold
from ledger.errors import DomainError
from ledger.proposal import Proposal, proposal_aggregate_id
from test_ledger_concurrency import run_together
from world import GUARDS_OFF, MANAGER, World, cause

HOUSEMATES = 8


@pytest.fixture
def household_vote(world: World) -> dict[str, Any]:
    """A complex whose household 101 has eight residents, and an open proposal."""
    world.policy(guards=GUARDS_OFF)  # housemates fund the fund by trading with each other
    complex_id = world.complex("VC-01")
    home = world.household(complex_id, "101")
    world.household(complex_id, "102")
    residents = [world.resident(home) for _ in range(HOUSEMATES)]
    world.run(c.OpenProposal(complex_id, "P-race", "event", "Harvest fair", 1_000,
                             now() + timedelta(hours=2), quorum_bps=0),
              actor=MANAGER, role="manager")
    return {"complex": complex_id, "home": home, "residents": residents}


def ballot(ledger: Ledger, resident: uuid.UUID, index: int) -> Outcome:
    return ledger.execute(c.CastBallot("P-race", resident, "yes" if index % 2 else "no"),
                          cause(resident, "resident"))


def exactly_one_accepted(results: list[Any]) -> None:
    accepted = [r for r in results if isinstance(r, Outcome)]
    codes = Counter(r.code for r in results if isinstance(r, DomainError))
    assert len(accepted) == 1, results
    assert codes == {"already_voted": len(results) - 1}, results


def tally(world: World) -> tuple[int, int]:
    proposal = world.ledger.snapshot(Proposal, proposal_aggregate_id("P-race"))
    assert proposal is not None
    return len(proposal.ballots), proposal.yes_count + proposal.no_count


def test_housemates_voting_at_once_cast_one_ballot(world: World,
                                                   household_vote: dict) -> None:
    """Eight residents of one household vote at the same moment: one ballot counts."""
    residents = household_vote["residents"]
    results = run_together(HOUSEMATES,
                           lambda index: ballot(world.ledger, residents[index], index))
    exactly_one_accepted(results)
    assert tally(world) == (1, 1)


def test_two_writers_accept_one_ballot_per_household(world: World,
                                                     household_vote: dict) -> None:
    """Two ledgers (as two processes), both with the proposal cached: the loser of the
    save re-checks against the stored proposal and answers already_voted."""
    second = Ledger.connect(world.database_url, world.schema)
    try:
        second.snapshot(Proposal, proposal_aggregate_id("P-race"))
        ledgers = [world.ledger, second]
        residents = household_vote["residents"]
        results = run_together(HOUSEMATES, lambda index: ballot(
            ledgers[index % 2], residents[index], index))
    finally:
        second.close()
    exactly_one_accepted(results)
    assert tally(world) == (1, 1)


def _vote_in_a_process(database_url: str, schema: str, resident: str, index: int,
                       start: Any, answers: Any) -> None:
    ledger = Ledger.connect(database_url, schema)
    try:
        ledger.snapshot(Proposal, proposal_aggregate_id("P-race"))  # warm the cache
        start.wait(timeout=30)
        try:
            ballot(ledger, uuid.UUID(resident), index)
            answers.put("accepted")
        except DomainError as error:
            answers.put(error.code)
    finally:
        ledger.close()


def test_two_writer_processes_accept_one_ballot_per_household(world: World,
                                                              household_vote: dict) -> None:
    """Two OS processes, each its own writer, cast the same household's ballot at once."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    answers = context.Queue()
    processes = [context.Process(target=_vote_in_a_process, args=(
        world.database_url, world.schema, str(household_vote["residents"][index]), index,
        start, answers)) for index in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0, 0]
    assert sorted(answers.get(timeout=5) for _ in range(2)) == ["accepted", "already_voted"]
    assert tally(world) == (1, 1)


def test_concurrent_spends_never_exceed_the_proposal(world: World,
                                                     household_vote: dict) -> None:
    """Sixteen spends of 100 citing a proposal of 1,000 at once: ten succeed."""
    complex_id = household_vote["complex"]
    world.run(c.CastBallot("P-race", household_vote["residents"][0], "yes"),
              actor=household_vote["residents"][0], role="resident")
    world.run(c.CloseProposal("P-race"), actor=MANAGER, role="manager",
              occurred_at=now() + timedelta(hours=3))
    for index in range(10):  # the fund accrues 2,000: 1 % of each sale
        world.trade(household_vote["residents"][index % 2 + 1],
                    household_vote["residents"][3], 20_000)

    def spend(index: int) -> Outcome:
        return world.ledger.execute(
            c.SpendFund(complex_id, f"S-{index}", "event", 100, proposal_id="P-race"),
            cause(MANAGER, "manager"))

    results = run_together(16, spend)
    codes = Counter(r.code for r in results if isinstance(r, DomainError))
    assert sum(isinstance(r, Outcome) for r in results) == 10
    assert codes == {"proposal_amount_exceeded": 6}
    proposal = world.ledger.snapshot(Proposal, proposal_aggregate_id("P-race"))
    assert proposal is not None
    assert proposal.spent_won == 1_000
    assert fold(world.all_events()).problems() == []


def test_ballots_racing_the_close_are_counted_or_refused(world: World) -> None:
    """Twelve households vote while the sweeper decides on another writer: each ballot is
    in the decided tally or refused voting_closed, never lost and never counted late."""
    world.policy()
    complex_id = world.complex("VC-02")
    residents = [world.resident(world.household(complex_id, f"2{n:02d}")) for n in range(12)]
    opened_at = now() - timedelta(hours=2)
    closes_at = opened_at + timedelta(hours=1, minutes=30)
    world.run(c.OpenProposal(complex_id, "P-close", "event", "Fair", 100, closes_at,
                             quorum_bps=0), actor=MANAGER, role="manager",
              occurred_at=opened_at)
    second = Ledger.connect(world.database_url, world.schema)
    try:
        second.snapshot(Proposal, proposal_aggregate_id("P-close"))

        def act(index: int) -> Outcome:
            if index == 12:
                return second.execute(c.CloseProposal("P-close", closes_at),
                                      cause(uuid.uuid4(), "operator"))
            resident = residents[index]
            # Cast a moment before the close, as a ballot in flight would be.
            return world.ledger.execute(
                c.CastBallot("P-close", resident, "yes"),
                cause(resident, "resident", occurred_at=closes_at - timedelta(seconds=1)))

        results = run_together(13, act)
    finally:
        second.close()
    decided = results[12]
    assert isinstance(decided, Outcome), decided
    accepted = [r for r in results[:12] if isinstance(r, Outcome)]
    refused = Counter(r.code for r in results[:12] if isinstance(r, DomainError))
    assert len(accepted) + refused["voting_closed"] == 12, results
    assert decided["ballots_count"] == decided["yes_count"] == len(accepted)
    proposal = world.ledger.snapshot(Proposal, proposal_aggregate_id("P-close"))
    assert proposal is not None
    assert (proposal.state, proposal.yes_count) == ("approved" if accepted else "rejected",
                                                    len(accepted))
