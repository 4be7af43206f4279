"""Wash-trade guards: rules that keep residents from minting points by trading with each other.

Three guards, each a setting of the accrual policy version a trade uses (`guards` on
`AccrualPolicy.VersionSet`), each with its own rejection code:

- `same_household_trade`: a resident buys from a resident of the same household.
- `pair_trade_cap_reached`: the two residents already traded `pair_trades_per_month_max`
  times in the trade's KST month (both directions count together).
- `sharing_accrual_cap_reached`: the trade's personal accrual from the sharing market would
  take the buyer past `sharing_accrual_won_per_month_max` in the trade's KST month. The
  whole trade is refused (never accrued up to the cap): an accrual is always the policy's
  rate of the trade, so an auditor recomputes it from the trade alone.

The state each guard reads is part of what the trade reads or changes, so the commit engine's
version checks make the guards hold under concurrency and across writer processes: the
household is on both residents; a sharing accrual is counted on the buyer's wallet by the
`PointsAccrued` event that credits it; trades between two residents are counted on a
`TradePair` aggregate, one per pair and KST month, which every resident-to-resident trade
changes. The month of a trade is the KST month of its platform time (`occurred_at`).

Guards concern trades between residents: a group-buy order's trade (with a merchant, on the
shopping market) is never checked, so a group buy's close is never half-refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger import errors, limits
from ledger.errors import DomainError
from ledger.events import Cause, LedgerAggregate

SAME_HOUSEHOLD = "same_household_trades"
REFUSED, ALLOWED = "refused", "allowed"
"""The values of `same_household_trades` (events carry no booleans)."""
SHARING_CAP = "sharing_accrual_won_per_month_max"
PAIR_CAP = "pair_trades_per_month_max"
GUARD_FIELDS = (SAME_HOUSEHOLD, SHARING_CAP, PAIR_CAP)


@dataclass(frozen=True)
class Guards:
    """The guards of one policy version; a cap of None is no cap."""

    same_household_trades_refused: bool
    sharing_accrual_won_per_month_max: int | None
    pair_trades_per_month_max: int | None

    def as_dict(self) -> dict[str, Any]:
        return {SAME_HOUSEHOLD: REFUSED if self.same_household_trades_refused else ALLOWED,
                SHARING_CAP: self.sharing_accrual_won_per_month_max,
                PAIR_CAP: self.pair_trades_per_month_max}


DEFAULT_GUARDS = Guards(
    same_household_trades_refused=limits.guard_same_household_refused_default,
    sharing_accrual_won_per_month_max=limits.guard_sharing_accrual_won_per_month_default,
    pair_trades_per_month_max=limits.guard_pair_trades_per_month_default)
"""What a new policy version gets for every guard setting it does not state."""

NO_GUARDS = Guards(same_household_trades_refused=False,
                   sharing_accrual_won_per_month_max=None, pair_trades_per_month_max=None)
"""What a version stored before guards existed means: it guarded nothing (see docs/ledger.md)."""


def validate_guards(raw: dict[str, Any] | None) -> dict[str, Any]:
    """Check guard settings and fill in the defaults, to be stored with the version."""
    given = dict(raw or {})
    unknown = sorted(set(given) - set(GUARD_FIELDS))
    if unknown:
        raise DomainError(errors.invalid_field, f"guards: unknown setting {unknown[0]!r}")
    settings = DEFAULT_GUARDS.as_dict()
    settings.update(given)
    if settings[SAME_HOUSEHOLD] not in (REFUSED, ALLOWED):
        raise DomainError(errors.invalid_field, f"guards.{SAME_HOUSEHOLD}: {REFUSED} or {ALLOWED}")
    for name, largest in ((SHARING_CAP, limits.amount_won_max),
                          (PAIR_CAP, limits.guard_pair_trades_per_month_max)):
        value = settings[name]
        if value is not None and (type(value) is not int or not 0 <= value <= largest):
            raise DomainError(errors.invalid_field,
                              f"guards.{name}: null or a whole number from 0 to {largest}")
    return settings


def guards_of(stored: dict[str, Any] | None) -> Guards:
    """The guards a stored version means (None: stored before guards existed)."""
    if stored is None:
        return NO_GUARDS
    return Guards(same_household_trades_refused=stored[SAME_HOUSEHOLD] == REFUSED,
                  sharing_accrual_won_per_month_max=stored[SHARING_CAP],
                  pair_trades_per_month_max=stored[PAIR_CAP])


def check_households(guards: Guards, buyer_household_id: UUID,
                     seller_household_id: UUID, trade_id: str) -> None:
    """The household guard; spans buyer and seller, so it lives here, not in one of them."""
    if guards.same_household_trades_refused and buyer_household_id == seller_household_id:
        raise DomainError(errors.same_household_trade, trade_id)


def trade_pair_id(resident_id: UUID, other_id: UUID, month: str) -> UUID:
    """One counter per unordered pair of residents and KST month."""
    low, high = sorted((str(resident_id), str(other_id)))
    return uuid5(NAMESPACE_URL, f"ledger:trade-pair:{low}:{high}:{month}")


class TradePair(LedgerAggregate):
    """The trades two residents recorded with each other in one KST month (either way)."""

    if TYPE_CHECKING:  # state, declared for type checkers only: the library
        # would otherwise take annotations as constructor arguments.
        month: str
        trades_count: int

    class Opened(LedgerAggregate.Created):
        resident_id: UUID
        other_resident_id: UUID
        month: str

        def apply(self, pair: TradePair) -> None:
            pair.month = self.month
            pair.trades_count = 0

    class TradeCounted(LedgerAggregate.Event):
        """A trade between the two was recorded; `trades_count` is the month's count after it."""

        trade_id: str
        trades_count: int

        def apply(self, pair: TradePair) -> None:
            pair.trades_count = self.trades_count

    @classmethod
    def open(cls, resident_id: UUID, other_id: UUID, month: str, cause: Cause) -> TradePair:
        low, high = sorted((resident_id, other_id), key=str)
        return cls._create(cls.Opened, id=trade_pair_id(resident_id, other_id, month),
                           resident_id=low, other_resident_id=high, month=month,
                           **cause.fields(None))

    def check_room(self, cap: int | None, trade_id: str) -> None:
        if cap is not None and self.trades_count >= cap:
            raise DomainError(errors.pair_trade_cap_reached,
                              f"{trade_id}: {self.trades_count} trades this month")

    def count(self, trade_id: str, cap: int | None, cause: Cause) -> None:
        self.check_room(cap, trade_id)
        # After this point, the count must succeed.
        self.trigger_event(self.TradeCounted, trade_id=trade_id,
                           trades_count=self.trades_count + 1, **cause.fields(None))
        assert cap is None or self.trades_count <= cap
