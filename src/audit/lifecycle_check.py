"""The auditor's own lot book: every wallet's expiry lots and pending shares, recomputed
from the events apart from the domain code (`ledger.lots`), to check what each event
recorded lot by lot.

Rules written again here, from docs/ledger.md:
- a credit available at once (accrual, received payment) opens a lot `accrual:<trade>` or
  `received:<trade>`; its expiry is the event's `expires_at`, or, for events stored before
  lots, 24 months after the event happened;
- a debit of available points (spend, hold, clawback, returned payment, move-out) takes the
  earliest-expiring lots first (ties by lot id); the event's `lots` must say exactly that;
- a released hold gives its taking back; a refund of points used gives back (part of) the
  spend's taking, latest-expiring parts first when owed points keep some;
- an expiry takes lots whose expiry has passed, each with all it still holds;
- a pending share is released only once its window has ended, and cancelled only by a
  refund inside the window or a move-out.
"""

from __future__ import annotations

import calendar
from datetime import datetime
from typing import Any

LEGACY_EXPIRY_MONTHS = 24

Lot = list[Any]  # [expires_at (datetime), remaining_won]


def moment(value: Any) -> datetime:
    """A datetime from the events' JSON ({"_type_": "datetime_iso", "_data_": …})."""
    return datetime.fromisoformat(value["_data_"] if isinstance(value, dict) else value)


def months_later(when: datetime, months: int) -> datetime:
    index = when.month - 1 + months
    year, month = when.year + index // 12, index % 12 + 1
    return when.replace(year=year, month=month,
                        day=min(when.day, calendar.monthrange(year, month)[1]))


class LotBook:
    """One wallet's lots, holds' takings, spends' takings and pending shares."""

    __slots__ = ("hold_lots", "lots", "pending", "spent_lots")

    def __init__(self) -> None:
        self.lots: dict[str, Lot] = {}
        self.hold_lots: dict[str, list[tuple[str, datetime, int]]] = {}
        self.spent_lots: dict[str, list[tuple[str, datetime, int]]] = {}
        self.pending: dict[str, tuple[datetime, int]] = {}

    def total_won(self) -> int:
        return sum(lot[1] for lot in self.lots.values())

    def credit(self, lot_id: str, expires_at: datetime, amount_won: int) -> None:
        if amount_won <= 0:
            return
        lot = self.lots.setdefault(lot_id, [expires_at, 0])
        lot[1] += amount_won

    def take(self, amount_won: int) -> list[tuple[str, datetime, int]]:
        """Earliest-expiring first; returns the taking (and applies it)."""
        taking = []
        left = amount_won
        for lot_id in sorted(self.lots, key=lambda k: (self.lots[k][0], k)):
            if left == 0:
                break
            part = min(left, self.lots[lot_id][1])
            if part:
                taking.append((lot_id, self.lots[lot_id][0], part))
                left -= part
        for lot_id, _, part in taking:
            self.lots[lot_id][1] -= part
            if self.lots[lot_id][1] == 0:
                del self.lots[lot_id]
        return taking

    def give_back(self, taking: list[tuple[str, datetime, int]]) -> None:
        for lot_id, expires_at, part in taking:
            self.credit(lot_id, expires_at, part)


def recorded_taking(data: dict[str, Any]) -> list[tuple[str, datetime, int]] | None:
    recorded = data.get("lots")
    if recorded is None:
        return None
    return [(part["lot_id"], moment(part["expires_at"]), part["amount_won"])
            for part in recorded]


def latest_back(taking: list[tuple[str, datetime, int]],
                amount_won: int) -> list[tuple[str, datetime, int]]:
    back = []
    left = amount_won
    for lot_id, expires_at, part in sorted(taking, key=lambda p: (p[1], p[0]), reverse=True):
        if left == 0:
            break
        share = min(left, part)
        back.append((lot_id, expires_at, share))
        left -= share
    return back


def same(a: list[tuple[str, datetime, int]], b: list[tuple[str, datetime, int]]) -> bool:
    return sorted(a) == sorted(b)
