"""`ledger audit verify` within a memory budget: the auditor's fold in hash slices finds
exactly what one unsliced pass finds, on a clean ledger and on a tampered one."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from audit.verification import Verification, verify_ledger, verify_slices_for
from cli.audit import main as audit_main
from ledger import limits
from test_audit_group_buys import group_buys
from test_audit_verify import chain, insert_fake_trade, project, superuser, workload
from test_points_lifecycle_audit import lifecycle_workload
from test_votes_audit import voting_workload
from world import World


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "audit-keys"


def tiny_budget(world: World) -> int:
    """A budget that the log's head outgrows many times over (about one slice per 20 events)."""
    return limits.verify_state_bytes_per_event * 20


def verdicts(world: World, key_dir: Path) -> tuple[Verification, Verification]:
    whole = verify_ledger(world.database_url, world.schema, key_dir=key_dir, slices=1,
                          store=False)
    sliced = verify_ledger(world.database_url, world.schema, key_dir=key_dir,
                           memory_budget_bytes=tiny_budget(world), store=False)
    return whole, sliced


def found(result: Verification) -> set[tuple[Any, ...]]:
    return {(item["position"], item["code"], item["detail"]) for item in result.findings}


def test_tiny_budget_means_many_slices(world: World) -> None:
    """The number of slices follows the log's size and the budget, and is at least one."""
    workload(world, random.Random(3), 60)
    assert verify_slices_for(world.database_url, world.schema,
                             limits.verify_memory_budget_bytes_default) == 1
    assert verify_slices_for(world.database_url, world.schema, tiny_budget(world)) >= 5


def test_sliced_verify_of_a_clean_ledger_equals_one_pass(world: World, key_dir: Path) -> None:
    """On a clean ledger the sliced verify is ok, with the same counts and totals."""
    workload(world, random.Random(21), 150)
    project(world)
    chain(world, key_dir)

    whole, sliced = verdicts(world, key_dir)

    assert whole.ok and sliced.ok, (whole.lines(), sliced.lines())
    assert any("slices" in note for note in sliced.notes)
    for name in ("events", "head", "chain_checked", "trades_recomputed", "rows_compared",
                 "tallies_recomputed", "group_buys_recomputed"):
        assert sliced.counts[name] == whole.counts[name], name
    assert sliced.points_by_kind == whole.points_by_kind


def test_sliced_verify_names_the_same_tampered_rows(world: World, key_dir: Path) -> None:
    """An edited wallet balance and an edited rent invoice are found at the same positions
    with the same codes and details, sliced or not."""
    workload(world, random.Random(22), 150)
    project(world)
    chain(world, key_dir)
    with world.connect() as conn:
        conn.execute("UPDATE p_wallet_balances SET available_won = available_won + 1"
                     " WHERE resident_id = (SELECT resident_id FROM p_wallet_balances"
                     " ORDER BY position DESC LIMIT 1)")
        conn.execute("UPDATE p_rent_invoices SET held_won = held_won + 7"
                     " WHERE (household_id, invoice_id) = (SELECT household_id, invoice_id"
                     " FROM p_rent_invoices ORDER BY household_id LIMIT 1)")
        conn.commit()

    whole, sliced = verdicts(world, key_dir)

    assert not whole.ok
    assert (sliced.first_bad_position, sliced.problem, sliced.detail) == (
        whole.first_bad_position, whole.problem, whole.detail)
    assert found(sliced) == found(whole)
    assert {"p_wallet_balances", "p_rent_invoices"} <= {
        detail.split(" ", 1)[0] for _, _, detail in found(whole)}


def test_sliced_verify_finds_a_fake_trade_and_its_broken_balances(
        world: World, key_dir: Path) -> None:
    """A trade written around the rules (wrong accrual, points spent that the buyer does not
    have, never credited to the seller) gives the same findings sliced or not, conservation
    and the trade clearing account included."""
    people = workload(world, random.Random(23), 80)
    project(world)
    chain(world, key_dir)
    buyer, _ = people.residents[0]
    seller, _ = people.residents[1]
    with superuser(world) as conn:
        insert_fake_trade(conn, world, buyer, seller)
    chain(world, key_dir)
    project(world)

    whole, sliced = verdicts(world, key_dir)

    assert whole.problem == "accrual_mismatch"
    assert (sliced.first_bad_position, sliced.problem, sliced.detail) == (
        whole.first_bad_position, whole.problem, whole.detail)
    assert found(sliced) == found(whole)
    assert {"negative_balance", "trade_clearing_not_empty"} <= {
        code for _, code, _ in found(sliced)}


def _lifecycle(world: World) -> None:
    lifecycle_workload(world)


def _votes(world: World) -> None:
    voting_workload(world, random.Random(5))


def _group_buys(world: World) -> None:
    group_buys(world)


@pytest.mark.parametrize("build", [_lifecycle, _votes, _group_buys])
def test_sliced_verify_equals_one_pass_on_lots_votes_and_group_buys(
        world: World, key_dir: Path, build: Any) -> None:
    """Lots and pending shares, ballots and decisions, group-buy orders: five slices find
    what one pass finds, before and after a lot and a tally are edited in the tables."""
    build(world)
    project(world)
    chain(world, key_dir)

    def both() -> tuple[Verification, Verification]:
        whole = verify_ledger(world.database_url, world.schema, key_dir=key_dir, slices=1,
                              store=False)
        return whole, verify_ledger(world.database_url, world.schema, key_dir=key_dir,
                                    slices=5, store=False)

    whole, sliced = both()
    assert whole.ok and sliced.ok, (whole.lines(), sliced.lines())
    assert whole.counts == sliced.counts
    with world.connect() as conn:
        conn.execute("UPDATE p_wallet_lots SET remaining_won = remaining_won + 1"
                     " WHERE (resident_id, lot_id) = (SELECT resident_id, lot_id"
                     " FROM p_wallet_lots WHERE remaining_won > 0 ORDER BY position LIMIT 1)")
        conn.execute("UPDATE p_proposals SET yes_count = yes_count + 1"
                     " WHERE proposal_key = (SELECT proposal_key FROM p_proposals"
                     " ORDER BY position LIMIT 1)")
        conn.commit()
    whole, sliced = both()
    assert not whole.ok
    assert (sliced.first_bad_position, sliced.problem, sliced.detail) == (
        whole.first_bad_position, whole.problem, whole.detail)
    assert found(sliced) == found(whole)


def test_the_command_takes_a_budget_and_a_number_of_slices(
        world: World, key_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`ledger audit verify --slices 3` verifies a clean ledger and says in the report that
    the replay ran in slices; a budget of 1 MiB (one slice for this small log) verifies it
    too; a budget of 0 is a usage error."""
    workload(world, random.Random(24), 60)
    project(world)
    chain(world, key_dir)
    base = ["--database-url", world.database_url, "--schema", world.schema, "--quiet",
            "audit", "verify", "--json", "--key-dir", str(key_dir)]
    assert audit_main([*base, "--slices", "3"]) == 0
    assert "the replay ran in 3 hash slices (memory budget)" in json.loads(
        capsys.readouterr().out)["notes"]
    assert audit_main([*base, "--memory-budget-mib", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    with pytest.raises(SystemExit) as exited:
        audit_main([*base, "--memory-budget-mib", "0"])
    assert exited.value.code == 2
