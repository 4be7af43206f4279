"""Double-entry checks over the event log: points are conserved, nothing owned is negative.

Every event lists its postings; folding them gives each account's balance. After
every committed command: all balances sum to zero, no owned account (wallet,
held, fund, merchant) is below zero, and the trade clearing account is empty.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ledger.events import LAPSE_CLEARING, OWNED_ACCOUNT_KINDS, TRADE_CLEARING, account_kind


@dataclass
class Balances:
    accounts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    events: int = 0

    def apply(self, event: Any) -> None:
        postings = event.postings()
        assert sum(amount for _, amount in postings) == 0, f"unbalanced {event!r}"
        for name, amount in postings:
            self.accounts[name] += amount
        self.events += 1

    def by_kind(self) -> dict[str, int]:
        totals: dict[str, int] = defaultdict(int)
        for name, amount in self.accounts.items():
            totals[account_kind(name)] += amount
        return dict(sorted(totals.items()))

    def problems(self) -> list[str]:
        """What is wrong with these balances; empty when the ledger is sound."""
        found = []
        total = sum(self.accounts.values())
        if total != 0:
            found.append(f"accounts sum to {total}, not 0")
        for name, amount in self.accounts.items():
            if account_kind(name) in OWNED_ACCOUNT_KINDS and amount < 0:
                found.append(f"{name} is {amount}")
        if self.accounts.get(TRADE_CLEARING, 0) != 0:
            found.append(f"trade clearing holds {self.accounts[TRADE_CLEARING]}")
        if self.accounts.get(LAPSE_CLEARING, 0) != 0:
            found.append(f"lapse clearing holds {self.accounts[LAPSE_CLEARING]}")
        return found


def fold(events: Iterable[Any]) -> Balances:
    balances = Balances()
    for event in events:
        balances.apply(event)
    return balances
