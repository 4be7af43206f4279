"""`ledger audit verify` on the points lifecycle: it recomputes every lot and every pending
share from the log, and names a projection row or an event that disagrees."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from audit.chain import ChainFollower
from audit.verification import verify_ledger
from ledger import commands as c
from ledger.application import now
from projections.runner import ProjectionRunner
from world import DEFAULT_RATES, World

DAY = timedelta(days=1)


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


def lifecycle_workload(world: World) -> None:
    """Pending, released, cancelled and expired shares, lots taken by spends and holds."""
    world.run(c.SetAccrualPolicy.of(DEFAULT_RATES))
    complex_id = world.complex()
    home = world.household(complex_id, "1-1")
    seller = world.resident(world.household(complex_id, "1-2"))
    buyer = world.resident(home)
    merchant = world.merchant("small_firm")
    world.trade(buyer, seller, 30_000, trade_id="T-old", occurred_at=now() - 800 * DAY)
    world.trade(buyer, seller, 20_000, trade_id="T-mid", occurred_at=now() - 300 * DAY)
    world.trade(buyer, merchant, 50_000, seller_kind="small_firm", trade_id="T-due",
                occurred_at=now() - 9 * DAY)
    world.trade(buyer, merchant, 50_000, seller_kind="small_firm", trade_id="T-open")
    world.trade(buyer, merchant, 50_000, seller_kind="small_firm", trade_id="T-back")
    world.run(c.RefundTrade("T-back"))
    world.run(c.ReleasePendingPoints("T-due", now()))
    world.trade(buyer, seller, 5_000, 200, trade_id="T-spend")
    payment = world.pay_rent(buyer, home, world.invoice(home), 300)
    world.run(c.ExpirePoints(buyer, now()))
    world.run(c.ReleaseRentPayment(payment), actor=world.complexes[0], role="billing")
    world.run(c.MoveOut(seller))


def verified(world: World, key_dir: Path) -> list[str]:
    with ProjectionRunner(world.database_url, world.schema, start=False) as runner:
        runner.catch_up()
    ChainFollower(world.database_url, world.schema, key_dir=key_dir,
                  checkpoint_interval_events=50).catch_up()
    result = verify_ledger(world.database_url, world.schema, key_dir=key_dir)
    return [] if result.ok else result.lines()


def test_verify_finds_nothing_wrong_in_a_lifecycle_workload(world: World, key_dir: Path) -> None:
    """Releases, cancellations, expiries and move-outs verify clean, lot by lot."""
    lifecycle_workload(world)
    assert verified(world, key_dir) == []


def test_verify_names_an_altered_lot(world: World, key_dir: Path) -> None:
    """A lot row changed in the projection is found by the audit's own lot book."""
    lifecycle_workload(world)
    assert verified(world, key_dir) == []
    with world.connect() as conn:
        row = conn.execute("SELECT resident_id, lot_id FROM p_wallet_lots"
                           " WHERE remaining_won > 0 ORDER BY position LIMIT 1").fetchone()
        assert row is not None
        conn.execute("UPDATE p_wallet_lots SET remaining_won = remaining_won + 1"
                     " WHERE resident_id = %s AND lot_id = %s", row)
        conn.commit()
    result = verify_ledger(world.database_url, world.schema, key_dir=key_dir)
    assert not result.ok
    assert result.problem == "projection_mismatch"
    assert "p_wallet_lots" in result.detail and row[1] in result.detail
