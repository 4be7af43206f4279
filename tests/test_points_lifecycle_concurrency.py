"""Spends racing an expiry on the same wallet: through one writer's threads and through two
writers (two processes' ledgers). Whatever the order, nothing is spent twice, nothing
expires twice, points are conserved and the stored events replay to the live wallet."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from ledger import commands as c
from ledger.application import Ledger, now
from ledger.conservation import fold
from ledger.errors import DomainError
from ledger.resident import Resident
from test_ledger_concurrency import run_together
from world import PLATFORM, World, cause

SPENDERS = 8


@pytest.fixture
def wallet(world: World) -> dict[str, uuid.UUID]:
    """A buyer with an expired lot of 600 points and a fresh lot of 300."""
    world.policy()
    complex_id = world.complex()
    seller = world.resident(world.household(complex_id))
    buyer = world.resident(world.household(complex_id))
    world.trade(buyer, seller, 20_000, trade_id="T-old", occurred_at=now() - timedelta(days=800))
    world.trade(buyer, seller, 10_000, trade_id="T-new")
    found = world.ledger.snapshot(Resident, buyer)
    assert found is not None and found.available_won == 900
    return {"buyer": buyer, "seller": seller}


def _race(world: World, spender: Ledger, expirer: Ledger, ids: dict[str, uuid.UUID]) -> None:
    buyer, seller = ids["buyer"], ids["seller"]
    moment = now()

    def act(index: int) -> Any:
        if index == SPENDERS:
            return expirer.execute(c.ExpirePoints(buyer, moment),
                                   cause(request_id="expire-race", occurred_at=moment))
        return spender.execute(
            c.RecordTrade(f"T-race-{index}", "sharing", "x", seller, "resident", buyer, 100,
                          100), cause(PLATFORM, "platform", occurred_at=moment))

    results = run_together(SPENDERS + 1, act)
    unexpected = [r for r in results if isinstance(r, Exception)
                  and not (isinstance(r, DomainError)
                           and r.code in ("insufficient_points", "nothing_to_expire"))]
    assert unexpected == []
    spent = sum(100 for r in results[:SPENDERS] if not isinstance(r, Exception))
    expiry = results[SPENDERS]
    expired = 0 if isinstance(expiry, Exception) else expiry["expired_won"]
    live = world.ledger.snapshot(Resident, buyer)
    assert live is not None
    # Spends take the expired lot first (earliest-expiring), so what expires is what the
    # spends left of it; the fresh lot's 300 stays, less what spends took beyond 600.
    assert spent + expired + live.available_won == 900
    assert live.available_won == sum(lot[1] for lot in (live.lots or {}).values())
    assert all(lot[0] > moment for lot in (live.lots or {}).values())
    assert live.expired_total_won == expired
    events = world.all_events()
    assert fold(events).problems() == []
    replayed = world.ledger.repository.get(buyer)
    assert (replayed.available_won, replayed.lots) == (live.available_won, live.lots)


def test_spends_racing_an_expiry_in_one_writer(world: World, wallet: dict) -> None:
    """Eight threads spend while the sweeper expires the old lot, all through one ledger."""
    _race(world, world.ledger, world.ledger, wallet)


def test_spends_racing_an_expiry_in_two_writers(world: World, wallet: dict,
                                                database_url: str, schema: str) -> None:
    """Spends through one writer, the expiry through another: neither overdraws the other."""
    other = Ledger.connect(database_url, schema)
    try:
        _race(world, world.ledger, other, wallet)
    finally:
        other.close()
