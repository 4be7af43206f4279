"""`ledger audit verify` recomputes the wash-trade guards: a trade the guards should have refused
is a `guard_breached` finding; a log of guarded trades verifies clean."""

from __future__ import annotations

import uuid
from typing import Any

from audit.guard_audit import GuardTally

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
