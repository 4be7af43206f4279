"""The demo data shows the points lifecycle: pending points, lots about to expire, and
expiries, in a seed small enough to stay fast."""

from __future__ import annotations

from datetime import date, timedelta

from ledger.application import Ledger
from ledger.conservation import fold
from ledger.resident import Resident
from seeding.lifecycle import sweep_moment
from seeding.seed import seed


def test_a_small_seed_has_pending_points_expiring_lots_and_expiries(
        database_url: str, schema: str) -> None:
    """After a one-month seed: windows that ended were released, the last week's trades
    are still pending, some lots expire within 30 days, and some already expired."""
    ledger = Ledger.connect(database_url, schema)
    try:
        summary = seed(ledger, complexes=1, households=60, months=1, progress=False,
                       start=date(2026, 1, 1))
        assert summary.counts.get("release_pending_points", 0) > 0
        assert summary.counts.get("expire_points", 0) > 0
        moment = sweep_moment(date(2026, 1, 1), 1)
        notifications = ledger.recorder.select_notifications(start=1, limit=1_000_000)
        events = [ledger.mapper.to_domain_event(n) for n in notifications]
        assert fold(events).problems() == []
        wallets = [ledger.snapshot(Resident, e.originator_id) for e in events
                   if isinstance(e, Resident.Enrolled)]
        assert any(w is not None and w.pending_won > 0 for w in wallets)
        assert any(w is not None and w.expired_total_won > 0 for w in wallets)
        soon = moment + timedelta(days=30)
        assert any(w is not None and any(moment < lot[0] <= soon
                                         for lot in (w.lots or {}).values())
                   for w in wallets)
    finally:
        ledger.close()
