"""`ledger seed` runs through the import path: the same dataset with one worker or two."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from conftest import fresh_schema
from ledger.application import Ledger
from ledger.complex import Complex
from ledger.conservation import fold
from ledger.merchant import Merchant
from ledger.resident import Resident
from seeding.seed import SeedSummary, seed


@pytest.fixture
def second_schema(database_url: str) -> Iterator[str]:
    with fresh_schema(database_url) as name:
        yield name


def _seed(database_url: str, schema: str, workers: int) -> tuple[SeedSummary, dict[str, Any]]:
    """Two months of three complexes; every wallet's, fund's and merchant's balances."""
    ledger = Ledger.connect(database_url, schema)
    try:
        summary = seed(ledger, complexes=3, households=90, months=2, progress=False,
                       start=date(2026, 1, 1), workers=workers)
        notifications = ledger.recorder.select_notifications(start=1, limit=1_000_000)
        events = [ledger.mapper.to_domain_event(n) for n in notifications]
        assert fold(events).problems() == []
        balances: dict[str, Any] = {"events": len(events)}
        for event in events:
            if isinstance(event, Resident.Enrolled):
                wallet = ledger.snapshot(Resident, event.originator_id)
                assert wallet is not None
                balances[f"wallet {wallet.id}"] = (wallet.available_won, wallet.pending_won,
                                                   wallet.owed_won, wallet.closed)
            elif isinstance(event, Complex.Registered):
                fund = ledger.snapshot(Complex, event.originator_id)
                assert fund is not None
                balances[f"fund {fund.id}"] = fund.balance_won
            elif isinstance(event, Merchant.Registered):
                merchant = ledger.snapshot(Merchant, event.originator_id)
                assert merchant is not None
                balances[f"merchant {merchant.id}"] = merchant.balance_won
        return summary, balances
    finally:
        ledger.close()


def test_a_seed_with_two_workers_gives_the_same_dataset_as_with_one(
        database_url: str, schema: str, second_schema: str) -> None:
    """The same seed value with one import worker and with two: the same commands accepted
    and refused (by code), the same events, and every balance the same."""
    one, balances_one = _seed(database_url, schema, workers=1)
    two, balances_two = _seed(database_url, second_schema, workers=2)
    assert one.commands == two.commands
    assert one.counts == two.counts
    assert one.rejected_by_code == two.rejected_by_code
    assert balances_one == balances_two
    wallets = [value for key, value in balances_one.items() if key.startswith("wallet")]
    assert sum(1 for available, *_ in wallets if available > 0) > len(wallets) // 2
    # Nothing but the wash trades is refused: the seed's own reckoning of points, votes
    # and holds matches the ledger's.
    assert set(one.rejected_by_code) <= {"same_household_trade", "pair_trade_cap_reached",
                                         "sharing_accrual_cap_reached"}
    for name in ("pay_rent", "settle_rent_payment", "place_group_buy_order",
                 "close_group_buy", "release_pending_points", "expire_points",
                 "close_proposal", "spend_fund"):
        assert one.counts.get(name, 0) > 0, name
