"""The proposals projection: tallies, ballots, spends with their proposal, due proposals;
a rebuild gives the live tables, and the tables equal a fold of the events."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

import projections as p
from ledger import commands as c
from ledger.application import now
from ledger.errors import DomainError
from projections.runner import ProjectionRunner, rebuild
from world import MANAGER, OPERATOR, World

HOUR = timedelta(hours=1)


@pytest.fixture
def conn(database_url: str, schema: str, world: World) -> Iterator[psycopg.Connection[Any]]:
    assert world  # the ledger creates the events table first
    with p.connect(database_url, schema, autocommit=True) as connection:
        yield connection


@pytest.fixture
def runner(database_url: str, schema: str, world: World) -> Iterator[ProjectionRunner]:
    assert world
    projection_runner = ProjectionRunner(database_url, schema, start=False)
    yield projection_runner
    projection_runner.stop()


def voting_complex(world: World) -> dict[str, Any]:
    world.policy()
    complex_id = world.complex("VP-01")
    homes = [world.household(complex_id, f"10{n}") for n in range(5)]
    residents = [world.resident(home) for home in homes]
    for buyer in residents[:4]:
        world.trade(buyer, residents[4], 100_000)  # the fund accrues 4,000
    return {"complex": complex_id, "homes": homes, "residents": residents}


def test_tallies_ballots_and_cited_spends(world: World, runner: ProjectionRunner,
                                          conn: psycopg.Connection[Any]) -> None:
    """The view counts ballots as cast, records the decision and each spend's proposal."""
    town = voting_complex(world)
    residents = town["residents"]
    world.run(c.OpenProposal(town["complex"], "P-1", "facility", "Study room desks", 3_000,
                             now() + 2 * HOUR), actor=MANAGER, role="manager")
    for resident, choice in zip(residents[:3], ("yes", "yes", "no"), strict=True):
        world.run(c.CastBallot("P-1", resident, choice), actor=resident, role="resident")
    runner.catch_up()
    row = p.proposal(conn, "P-1")
    assert row is not None
    assert (row["state"], row["households_count"], row["ballots_count"], row["yes_count"],
            row["no_count"]) == ("open", 5, 3, 2, 1)
    assert p.household_ballot(conn, "P-1", town["homes"][2]) == "no"
    assert p.household_ballot(conn, "P-1", town["homes"][3]) is None
    assert p.due_proposals(conn, now()) == []
    assert p.due_proposals(conn, now() + 3 * HOUR) == ["P-1"]

    world.run(c.CloseProposal("P-1", now() + 3 * HOUR))
    world.household(town["complex"], "999")  # counted now, not in the decided tally
    world.run(c.SpendFund(town["complex"], "S-1", "facility", 2_500, proposal_id="P-1"),
              actor=MANAGER, role="manager")
    world.run(c.SpendFund(town["complex"], "S-2", "upkeep", 100, "cleaning"),
              actor=MANAGER, role="manager")
    runner.catch_up()
    row = p.proposal(conn, "P-1")
    assert row is not None
    assert (row["state"], row["households_count"], row["spent_won"], row["unspent_won"]) == (
        "approved", 5, 2_500, 500)
    assert [(s["spend_id"], s["proposal_id"], s["amount_won"])
            for s in p.fund_spends(conn, town["complex"])] == [
        ("S-2", None, 100), ("S-1", "P-1", 2_500)]
    assert [b["choice"] for b in p.ballots(conn, "P-1")] == ["yes", "yes", "no"]
    assert p.due_proposals(conn, now() + 3 * HOUR) == []


def test_rebuild_and_fold_equal_live(database_url: str, schema: str, world: World,
                                     runner: ProjectionRunner,
                                     conn: psycopg.Connection[Any]) -> None:
    """After a random voting workload, a rebuild and a fold both give the live tables."""
    town = voting_complex(world)
    rng = random.Random(11)
    world.run(c.SetFundAllowance(town["complex"], 1_000), actor=OPERATOR, role="operator")
    proposal_ids: list[str] = []
    for step in range(120):
        choice = rng.random()
        try:
            if choice < 0.15:
                proposal_id = f"P-{step}"
                world.run(c.OpenProposal(town["complex"], proposal_id,
                                         rng.choice(["facility", "event"]), "Item",
                                         rng.randrange(100, 2_000), now() + 2 * HOUR),
                          actor=MANAGER, role="manager")
                proposal_ids.append(proposal_id)
            elif choice < 0.6 and proposal_ids:
                resident = rng.choice(town["residents"])
                world.run(c.CastBallot(rng.choice(proposal_ids), resident,
                                       rng.choice(["yes", "yes", "no"])),
                          actor=resident, role="resident")
            elif choice < 0.75 and proposal_ids:
                world.run(c.CloseProposal(rng.choice(proposal_ids), now() + 3 * HOUR))
            elif choice < 0.9 and proposal_ids:
                world.run(c.SpendFund(town["complex"], f"S-{step}",
                                      rng.choice(["facility", "event"]), rng.randrange(1, 800),
                                      proposal_id=rng.choice(proposal_ids)),
                          actor=MANAGER, role="manager")
            else:
                world.run(c.SpendFund(town["complex"], f"S-{step}", "upkeep",
                                      rng.randrange(1, 300)), actor=MANAGER, role="manager")
        except DomainError:
            pass
        if step % 25 == 0:
            runner.catch_up()
    runner.catch_up()
    live = p.read_all(conn)
    assert live == p.fold_all(database_url, schema)
    rebuild(database_url, schema, name="proposals", progress=False, batch_size=13)
    assert p.read_all(conn) == live
