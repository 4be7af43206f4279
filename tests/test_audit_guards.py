"""`ledger audit verify` recomputes the wash-trade guards: a trade the guards should have refused
is a `guard_breached` finding; a log of guarded trades verifies clean."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from audit.chain import ChainFollower
from audit.guard_audit import GuardTally
from audit.verification import verify_ledger
from ledger.errors import DomainError
from world import World

GUARDS = {"same_household_trades": "refused", "sharing_accrual_won_per_month_max": 400,
          "pair_trades_per_month_max": 2}
AT = "2026-11-30T16:00:00+00:00"  # 2026-12-01 01:00 KST


def recorded(buyer: uuid.UUID, seller: uuid.UUID, household: uuid.UUID, personal_won: int,
             trade_id: str, version: int = 1) -> dict[str, Any]:
    return {"trade_id": trade_id, "buyer_id": {"_data_": str(buyer)},
            "seller_id": {"_data_": str(seller)}, "buyer_household_id": {"_data_": str(household)},
            "seller_kind": "resident", "market": "sharing", "personal_won": personal_won,
            "policy_version": version}


def test_each_guard_breach_is_named() -> None:
    """Within a household, past the pair cap and past the sharing cap: each is found."""
    tally = GuardTally()
    tally.version_set({"version": 1, "guards": GUARDS})
    buyer, seller, home, other_home = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert tally.trade_recorded(recorded(buyer, seller, home, 300, "T1"), AT,
                                str(home)) == [f"trade T1 within household {home}"]
    assert tally.trade_recorded(recorded(seller, buyer, other_home, 0, "T2"), AT,
                                str(home)) == []
    breaches = tally.trade_recorded(recorded(buyer, seller, home, 200, "T3"), AT, str(other_home))
    assert breaches == ["trade T3 is trade 3 of its pair in 2026-12, cap 2",
                        "trade T3 takes sharing accruals in 2026-12 to 500 won, cap 400"]


def test_versions_stored_before_guards_guarded_nothing() -> None:
    """A version without `guards` and a group-buy order's trade are never breaches."""
    tally = GuardTally()
    tally.version_set({"version": 1, "rates": []})
    buyer, home = uuid.uuid4(), uuid.uuid4()
    for number in range(5):
        assert tally.trade_recorded(recorded(buyer, uuid.uuid4(), home, 50_000, f"T{number}"),
                                    AT, str(home)) == []
    tally.version_set({"version": 2, "guards": GUARDS})
    assert tally.trade_recorded(recorded(buyer, buyer, home, 50_000, "group-buy:O-1", 2),
                                AT, str(home)) == []


def test_a_guarded_log_verifies_and_a_forged_count_is_found(world: World, tmp_path: Path
                                                             ) -> None:
    """Trades under the guards, some refused, verify clean; a pair counter whose count was
    rewritten around the rules is named by position as guard_breached."""
    world.policy(guards={"pair_trades_per_month_max": 2})
    complex_id = world.complex()
    home = world.household(complex_id)
    first, housemate = world.resident(home), world.resident(home)
    second = world.resident(world.household(complex_id))
    world.trade(first, second, 10_000)
    world.trade(second, first, 10_000)
    for buyer, seller in ((first, second), (housemate, first)):  # pair cap, household
        with pytest.raises(DomainError):
            world.trade(buyer, seller, 10_000)
    key_dir = tmp_path / "keys"
    ChainFollower(world.database_url, world.schema, key_dir=key_dir).catch_up()
    clean = verify_ledger(world.database_url, world.schema, key_dir=key_dir, parallel=False)
    assert clean.ok, clean.findings
    with world.connect() as conn:
        conn.execute("SET session_replication_role = replica")  # past the immutability trigger
        (position,) = conn.execute(
            "UPDATE ledger_events SET state = convert_to(replace(convert_from(state, 'UTF8'), "
            "'\"trades_count\":2', '\"trades_count\":1'), 'UTF8') "
            "WHERE topic LIKE %s AND convert_from(state, 'UTF8') LIKE %s "
            "RETURNING notification_id", ("%TradePair.TradeCounted", "%\"trades_count\":2%")
        ).fetchone() or (0,)
        conn.commit()
    result = verify_ledger(world.database_url, world.schema, key_dir=key_dir, parallel=False)
    assert any(item["code"] == "guard_breached" and item["position"] == position
               for item in result.findings), result.findings
