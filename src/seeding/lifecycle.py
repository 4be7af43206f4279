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

from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from ledger import commands as c
from ledger.application import now
from ledger.events import KST
from ledger.resident import LEGACY_EXPIRY_MONTHS

if TYPE_CHECKING:
    from seeding.seed import Seeder

SELLER_PICKS_MAX = 8
VETERAN_RATE = 0.03
"""Share of residents given an old lot (every 33rd; half about to expire, half already
expired)."""


def sweep_moment(start: date, months: int) -> datetime:
    """The end of the seeded months (KST midnight), or now if that is earlier."""
    index = start.month - 1 + months
    end = date(start.year + index // 12, index % 12 + 1, 1)
    return min(datetime.combine(end, time(), KST), now())


def seed_lifecycle(seeder: Seeder, start: date, months: int, actor: UUID) -> None:
    moment = sweep_moment(start, months)
    expired = _old_lots(seeder, moment, actor)
    release_ended_windows(seeder, moment, actor)
    for resident in expired:
        seeder.write(c.ExpirePoints(seeder.model.residents[resident], moment),
                     seeder._cause(actor, "operator", moment),
                     seeder.model.complex_of(resident))


def _old_lots(seeder: Seeder, moment: datetime, actor: UUID) -> list[int]:
    """Old sharing trades (their sellers: the next neighbour of another household); the
    residents whose old lot has expired by `moment`."""
    model = seeder.model
    residents = model.open_residents()
    members: list[list[int]] = [[] for _ in model.complexes]
    for resident in residents:
        members[model.complex_of(resident)].append(resident)
    expired: list[int] = []
    every = round(1 / VETERAN_RATE)
    veterans = 0
    for index in range(every - 1, len(residents), every):
        buyer = residents[index]
        neighbours = members[model.complex_of(buyer)]
        seller = next((other for other in (seeder.random.choice(neighbours)
                                           for _ in range(SELLER_PICKS_MAX))
                       if model.resident_household[other] != model.resident_household[buyer]),
                      None)
        about_to_expire = veterans % 2 == 0  # half and half, from a few residents on
        veterans += 1
        days_left = seeder.random.randrange(3, 28) if about_to_expire else -5
        amount_won = seeder.random.choice((10_000, 20_000, 30_000))
        if seller is None:
            continue
        expires = moment + timedelta(days=days_left)
        at = _months_before(expires, LEGACY_EXPIRY_MONTHS)
        trade_id = f"OLD-{seeder.run_tag}-{index}"
        seeder.write(c.RecordTrade(trade_id, "sharing", "childcare", model.residents[seller],
                                   "resident", model.residents[buyer], amount_won, 0),
                     seeder._cause(actor, "platform", at), model.complex_of(buyer))
        personal_won, _ = model.trade(trade_id, "sharing", "resident", buyer, seller,
                                      amount_won, 0, at)
        if not about_to_expire:
            model.available_won[buyer] -= personal_won
            expired.append(buyer)
    return expired


def _months_before(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    return moment.replace(year=year, month=month + 1, day=min(moment.day, 28))


def release_ended_windows(seeder: Seeder, moment: datetime, actor: UUID) -> None:
    """Release every seeded trade's pending shares whose window ended by `moment` (the
    seed calls it before each month's fund spends, as the sweeper would have run)."""
    for trade_id, complex_number in seeder.model.due(moment):
        seeder.write(c.ReleasePendingPoints(trade_id, moment),
                     seeder._cause(actor, "operator", moment), complex_number)
