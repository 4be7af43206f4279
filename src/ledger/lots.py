"""Expiry lots: every credit of personal points is a lot with its own expiry.

A wallet's available points are the sum of its open lots; its held points are the
sum of what its holds took from lots. Spending and holding take the earliest-expiring
lots first (ties by lot id, so the choice is the same on every replay); a released
hold, or a refunded spend, gives each part back to the lot it came from, with that
lot's original expiry.

A *taking* is what one debit took: a list of `{"lot_id", "expires_at", "amount_won"}`
dicts, in the order taken. Events record their takings, so an auditor sees lot by lot
what moved, and `apply` only assigns (it never decides).

State is `lots: dict[lot_id, [expires_at, remaining_won]]` (lists, not tuples: the
JSON snapshot reads lists back).
"""

from __future__ import annotations

import calendar
from datetime import datetime
from typing import Any

Lots = dict[str, list[Any]]
Taking = list[dict[str, Any]]


def add_months(moment: datetime, months: int) -> datetime:
    """The same wall-clock moment `months` later; the 31st becomes the month's last day."""
    assert months >= 0
    month_index = moment.month - 1 + months
    year = moment.year + month_index // 12
    month = month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def order(lots: Lots) -> list[str]:
    """Lot ids, earliest-expiring first (then by id)."""
    return sorted(lots, key=lambda lot_id: (lots[lot_id][0], lot_id))


def total_won(lots: Lots) -> int:
    return sum(int(lot[1]) for lot in lots.values())


def take_earliest(lots: Lots, amount_won: int) -> Taking:
    """What a debit of `amount_won` takes, earliest-expiring first. A decision: called by
    command methods (and, for events stored before lots, by `apply`, the one mapping of
    old events onto lots)."""
    assert 0 <= amount_won <= total_won(lots), (amount_won, total_won(lots))
    taking: Taking = []
    left_won = amount_won
    for lot_id in order(lots):
        if left_won == 0:
            break
        expires_at, remaining_won = lots[lot_id]
        part_won = min(left_won, remaining_won)
        if part_won:
            taking.append({"lot_id": lot_id, "expires_at": expires_at, "amount_won": part_won})
            left_won -= part_won
    assert left_won == 0
    return taking


def take_latest_back(taking: Taking, amount_won: int) -> Taking:
    """The part of `taking` worth `amount_won` that goes back to its lots when less than
    all of it returns: the latest-expiring parts first (the resident keeps the longest)."""
    assert 0 <= amount_won <= taking_won(taking)
    back: Taking = []
    left_won = amount_won
    for part in sorted(taking, key=lambda p: (p["expires_at"], p["lot_id"]), reverse=True):
        if left_won == 0:
            break
        part_won = min(left_won, part["amount_won"])
        back.append({**part, "amount_won": part_won})
        left_won -= part_won
    return back


def taking_won(taking: Taking) -> int:
    return sum(int(part["amount_won"]) for part in taking)


def remove(lots: Lots, taking: Taking) -> None:
    """Apply a taking: each part leaves its lot; an emptied lot closes."""
    for part in taking:
        lot = lots[part["lot_id"]]
        lot[1] -= part["amount_won"]
        assert lot[1] >= 0
        if lot[1] == 0:
            del lots[part["lot_id"]]


def give_back(lots: Lots, taking: Taking) -> None:
    """Apply a return: each part goes back to its lot, with the lot's original expiry."""
    for part in taking:
        lot = lots.get(part["lot_id"])
        if lot is None:
            lots[part["lot_id"]] = [part["expires_at"], part["amount_won"]]
        else:
            lot[1] += part["amount_won"]


def add(lots: Lots, lot_id: str, expires_at: datetime, amount_won: int) -> None:
    """A new credit. A lot id is unique per credit; a second credit under the same id
    (say, two accruals of one trade id, which the ledger refuses) would add to it."""
    if amount_won <= 0:
        return
    lot = lots.get(lot_id)
    if lot is None:
        lots[lot_id] = [expires_at, amount_won]
    else:
        lot[1] += amount_won


def due(lots: Lots, moment: datetime) -> Taking:
    """Every lot that has reached its expiry at `moment`, with what it still holds."""
    return [{"lot_id": lot_id, "expires_at": lots[lot_id][0], "amount_won": lots[lot_id][1]}
            for lot_id in order(lots) if lots[lot_id][0] <= moment and lots[lot_id][1] > 0]


def expiring_within(lots: Lots, moment: datetime, until: datetime) -> Taking:
    """Lots that expire after `moment` and by `until` (what the wallet view warns of)."""
    return [{"lot_id": lot_id, "expires_at": lots[lot_id][0], "amount_won": lots[lot_id][1]}
            for lot_id in order(lots) if moment < lots[lot_id][0] <= until]
