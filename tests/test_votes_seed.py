"""`ledger seed --months N` includes proposals, ballots at realistic turnouts, decisions and
the spends they approve; the seeded ledger verifies."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from audit.chain import ChainFollower
from audit.verification import verify_ledger
from cli.main import main
from ledger.complex import Complex
from ledger.proposal import Proposal
from projections.runner import ProjectionRunner
from world import World


def test_seeded_months_vote_and_spend_what_was_approved(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Three months of two complexes: one proposal per complex and month, turnout between
    a quarter and a half of the households, spends citing only approved proposals."""
    assert main(["--database-url", world.database_url, "--schema", world.schema, "--quiet",
                 "seed", "--complexes", "2", "--households", "80", "--months", "3"]) == 0
    capsys.readouterr()
    events = world.all_events()
    names = Counter(type(event).__qualname__ for event in events)
    assert names["Proposal.Opened"] == names["Proposal.Decided"] == 6
    decided = [e for e in events if isinstance(e, Proposal.Decided)]
    for decision in decided:
        assert decision.households_count == 40
        assert 0.1 <= decision.ballots_count / decision.households_count <= 0.7
    approved = {e.originator_id for e in decided if e.outcome == "approved"}
    assert approved, "some proposals pass"
    cited = [e for e in events if isinstance(e, Complex.FundSpent) and e.proposal_id]
    assert cited and len(cited) <= len(approved)
    assert any(isinstance(e, Complex.FundSpent) and not e.proposal_id for e in events)
    assert any(isinstance(e, Proposal.BallotCast) and e.actor_role == "coordinator"
               for e in events)

    with ProjectionRunner(world.database_url, world.schema, start=False) as runner:
        runner.catch_up()
    ChainFollower(world.database_url, world.schema, key_dir=tmp_path / "keys").catch_up()
    result = verify_ledger(world.database_url, world.schema, key_dir=tmp_path / "keys")
    assert result.ok, result.lines()
    assert result.counts["tallies_recomputed"] == 6
