"""What the seeder knows of the dataset it writes: ids, households, wallets and funds.

The seed writes its commands as import lines before any of them runs (seeding.importing
runs them, in parallel by complex), so it cannot read the ledger's answers as it goes.
Every id is deterministic from its command (complexes, households, merchants and
residents by uuid5 as the ledger derives them), and every decision that depends on
state -- how many points a resident can pay with, whether a vote passed, how much a fund
can spend, which trades' pending shares are due -- is taken from this model, which
follows the same rules as the ledger (accrual shares floored in basis points, shopping
pending for its return window, holds until they are settled or released).

The model is an estimate on the safe side where the ledger's rules are intricate (points
clawed back by a refund, caps on sharing accruals): a spend it allows that the ledger
refuses is a counted rejection in the seed's summary, as wash trades are.

State is held in flat arrays indexed by resident, household and complex number, so a
nationwide registry (1.09 M households, about 2 M residents) costs tens of bytes each.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from ledger.policy import LIFECYCLE_DEFAULTS, accrual_base_won, share_won


@dataclass(slots=True)
class Pending:
    """A trade's shares in their return window."""

    available_at: datetime
    buyer: int
    complex_number: int
    personal_won: int
    common_won: int


@dataclass
class Model:
    rates: dict[tuple[str, str], tuple[int, int]]
    """(market, seller kind) -> (personal, common) basis points."""
    complexes: list[UUID] = field(default_factory=list)
    complex_households: list[int] = field(default_factory=list)
    fund_won: list[int] = field(default_factory=list)
    """Each fund's available balance, as far as the seed can tell (a lower bound)."""
    households: list[UUID] = field(default_factory=list)
    household_complex: array[int] = field(default_factory=lambda: array("i"))
    residents: list[UUID] = field(default_factory=list)
    resident_household: array[int] = field(default_factory=lambda: array("i"))
    available_won: array[int] = field(default_factory=lambda: array("q"))
    holds: array[int] = field(default_factory=lambda: array("i"))
    closed: bytearray = field(default_factory=bytearray)
    merchants: list[tuple[UUID, str]] = field(default_factory=list)
    pending: dict[str, Pending] = field(default_factory=dict)

    # The registry ---------------------------------------------------------------------

    def add_complex(self, complex_id: UUID) -> int:
        self.complexes.append(complex_id)
        self.complex_households.append(0)
        self.fund_won.append(0)
        return len(self.complexes) - 1

    def add_household(self, household_id: UUID, complex_number: int) -> int:
        self.households.append(household_id)
        self.household_complex.append(complex_number)
        self.complex_households[complex_number] += 1
        return len(self.households) - 1

    def add_resident(self, resident_id: UUID, household: int) -> int:
        self.residents.append(resident_id)
        self.resident_household.append(household)
        self.available_won.append(0)
        self.holds.append(0)
        self.closed.append(0)
        return len(self.residents) - 1

    def complex_of(self, resident: int) -> int:
        return self.household_complex[self.resident_household[resident]]

    def open_residents(self) -> list[int]:
        return [r for r in range(len(self.residents)) if not self.closed[r]]

    # Points -----------------------------------------------------------------------------

    def shares(self, market: str, seller_kind: str, amount_won: int,
               points_used_won: int) -> tuple[int, int]:
        personal_bps, common_bps = self.rates[(market, seller_kind)]
        base_won = accrual_base_won(amount_won, points_used_won)
        return share_won(base_won, personal_bps), share_won(base_won, common_bps)

    def trade(self, trade_id: str, market: str, seller_kind: str, buyer: int,
              seller: int | None, amount_won: int, points_used_won: int,
              at: datetime) -> tuple[int, int]:
        """A trade the ledger records (`seller`: a resident's number, None for a
        merchant): points used move, shares accrue (pending in a return window).
        (personal, common) accrued."""
        self.available_won[buyer] -= points_used_won
        assert self.available_won[buyer] >= 0
        if seller is not None:
            self.available_won[seller] += points_used_won
        personal_won, common_won = self.shares(market, seller_kind, amount_won,
                                               points_used_won)
        self.accrue(trade_id, market, buyer, personal_won, common_won, at)
        return personal_won, common_won

    def accrue(self, trade_id: str, market: str, buyer: int, personal_won: int,
               common_won: int, at: datetime) -> None:
        days = int(LIFECYCLE_DEFAULTS["return_window_days"].get(market, 0))
        complex_number = self.complex_of(buyer)
        if days:
            self.pending[trade_id] = Pending(at + timedelta(days=days), buyer, complex_number,
                                             personal_won, common_won)
        else:
            self.available_won[buyer] += personal_won
            self.fund_won[complex_number] += common_won

    def refund(self, trade_id: str, buyer: int, seller: int | None, points_used_won: int,
               personal_won: int, common_won: int) -> None:
        """Points used go back to the buyer; shares in their window are cancelled, shares
        already available are clawed back (what is short becomes owed: nothing left)."""
        self.available_won[buyer] += points_used_won
        if seller is not None:
            self.available_won[seller] = max(0, self.available_won[seller] - points_used_won)
        if self.pending.pop(trade_id, None) is None:
            self.available_won[buyer] = max(0, self.available_won[buyer] - personal_won)
            complex_number = self.complex_of(buyer)
            self.fund_won[complex_number] = max(0, self.fund_won[complex_number] - common_won)

    def hold(self, resident: int, amount_won: int) -> None:
        assert 0 <= amount_won <= self.available_won[resident]
        self.available_won[resident] -= amount_won
        self.holds[resident] += 1

    def end_hold(self, resident: int, amount_won: int, *, returned: bool) -> None:
        """A hold settled (the points are gone) or released (`returned`)."""
        self.holds[resident] -= 1
        if returned:
            self.available_won[resident] += amount_won

    def due(self, moment: datetime) -> list[tuple[str, int]]:
        """Trades whose return window ended by `moment` (and their buyers' complexes),
        released in the model."""
        trade_ids = [trade_id for trade_id, pending in self.pending.items()
                     if pending.available_at <= moment]
        due: list[tuple[str, int]] = []
        for trade_id in trade_ids:
            pending = self.pending.pop(trade_id)
            if not self.closed[pending.buyer]:  # a move-out cancelled the personal share
                self.available_won[pending.buyer] += pending.personal_won
            self.fund_won[pending.complex_number] += pending.common_won
            due.append((trade_id, pending.complex_number))
        return due
