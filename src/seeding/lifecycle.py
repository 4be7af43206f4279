"""Demo data for the points lifecycle: pending points, lots about to expire, and expiries.

Run once at the end of a seed, at the *sweep moment*: the end of the seeded months, or now
if that is earlier. It
- releases the pending shares of every seeded trade whose return window ended by then,
  as the service's sweeper would (trades of the last week stay pending);
- gives a few residents (`VETERAN_RATE`) a sharing trade from just under two years ago,
  whose lot expires within the wallet view's 30 days, and a few others one from over two
  years ago, whose lot the sweep then expires into the complex's fund.
"""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta
from typing import Any, Protocol
from uuid import UUID

from ledger import commands as c
from ledger.application import Ledger, Outcome, now
from ledger.complex import Complex
from ledger.errors import DomainError
from ledger.events import KST, Cause
from ledger.resident import LEGACY_EXPIRY_MONTHS, Resident
from ledger.trade import Trade

VETERAN_RATE = 0.03
"""Share of residents given an old lot (half about to expire, half already expired)."""
PAGE_EVENTS = 5_000


class SeedRunner(Protocol):
    """What the lifecycle seed needs of the seeder (seeding.seed.Seeder)."""

    ledger: Ledger
    random: random.Random
    run_tag: str
    summary: Any

    def _cause(self, actor: UUID, role: str, at: datetime,
               on_behalf_of: UUID | None = None) -> Cause: ...

    def _run(self, items: list[tuple[c.Command, Cause]], bar: Any) -> list[Outcome | None]: ...


def sweep_moment(start: date, months: int) -> datetime:
    """The end of the seeded months (KST midnight), or now if that is earlier."""
    index = start.month - 1 + months
    end = date(start.year + index // 12, index % 12 + 1, 1)
    return min(datetime.combine(end, time(), KST), now())


def seed_lifecycle(seeder: SeedRunner, residents: list[tuple[UUID, UUID]], start: date,
                   months: int, actor: UUID, bar: Any) -> None:
    moment = sweep_moment(start, months)
    _old_lots(seeder, residents, moment, actor, bar)
    release_ended_windows(seeder, moment, actor, bar)
    _expire(seeder, residents, moment, actor, bar)


def _old_lots(seeder: SeedRunner, residents: list[tuple[UUID, UUID]], moment: datetime,
              actor: UUID, bar: Any) -> None:
    if len(residents) < 2:
        return
    items: list[tuple[c.Command, Cause]] = []
    for index, (buyer, _) in enumerate(residents):
        if seeder.random.random() >= VETERAN_RATE:
            continue
        seller = residents[(index + 1) % len(residents)][0]
        about_to_expire = seeder.random.random() < 0.5
        days_left = seeder.random.randrange(3, 28) if about_to_expire else -5
        expires = moment + timedelta(days=days_left)
        at = _months_before(expires, LEGACY_EXPIRY_MONTHS)
        trade_id = f"OLD-{seeder.run_tag}-{index}"
        items.append((c.RecordTrade(trade_id, "sharing", "childcare", seller, "resident", buyer,
                                    seeder.random.choice((10_000, 20_000, 30_000)), 0),
                      seeder._cause(actor, "platform", at)))
    seeder._run(items, bar)


def _months_before(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    return moment.replace(year=year, month=month + 1, day=min(moment.day, 28))


def release_ended_windows(seeder: SeedRunner, moment: datetime, actor: UUID,
                           bar: Any) -> None:
    """Release every seeded trade's pending shares whose window ended by `moment` (the
    seed calls it before each month's fund spends, as the sweeper would have run). Trades
    released already are skipped; the scan reads the seed's Trade.Recorded events again each
    time, which is fine at seed sizes."""
    ledger = seeder.ledger
    due: list[str] = []
    start = seeder.summary.events_before + 1
    topic = f"{Trade.__module__}:{Trade.Recorded.__qualname__}"
    while True:
        page = ledger.recorder.select_notifications(start=start, limit=PAGE_EVENTS,
                                                    topics=[topic])
        for notification in page:
            event = ledger.mapper.to_domain_event(notification)
            assert isinstance(event, Trade.Recorded)
            if event.available_at is None or event.available_at > moment:
                continue
            assert event.complex_id is not None
            buyer, fund = ledger.load(event.buyer_id), ledger.load(event.complex_id)
            if (isinstance(buyer, Resident) and buyer.pending_until(event.trade_id)) or (
                    isinstance(fund, Complex) and fund.pending_until(event.trade_id)):
                due.append(event.trade_id)
        if len(page) < PAGE_EVENTS:
            break
        start = page[-1].id + 1
    seeder._run([(c.ReleasePendingPoints(trade_id, moment),
                  seeder._cause(actor, "operator", moment)) for trade_id in due], bar)


def _expire(seeder: SeedRunner, residents: list[tuple[UUID, UUID]], moment: datetime,
            actor: UUID, bar: Any) -> None:
    items: list[tuple[c.Command, Cause]] = []
    for resident_id, _ in residents:
        wallet = seeder.ledger.load(resident_id)
        if wallet is None or getattr(wallet, "closed", True):
            continue
        try:
            due = wallet.due_lots(moment)  # type: ignore[attr-defined]
        except DomainError:
            continue
        if due:
            items.append((c.ExpirePoints(resident_id, moment),
                          seeder._cause(actor, "operator", moment)))
    seeder._run(items, bar)
