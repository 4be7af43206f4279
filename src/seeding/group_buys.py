"""Group buys in a seeded month: merchants open them, residents order, the sweeper closes.

Rates, modelled on the pilot's shopping market: each complex sees about two group buys a
month (move-in cleaning, ventilation filters, local food boxes), each open for a week to
its complex and sometimes a neighbour; about 8 % of the households it is open to order
one to three units, a fifth of them paying part with points; one order in twenty is
cancelled before the deadline. Minimums are set around the expected demand, so some group
buys reach theirs and complete and others are cancelled at the deadline.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID, uuid5

from ledger import commands as c
from ledger.application import Ledger, Outcome
from ledger.events import KST, Cause
from ledger.resident import Resident

GROUP_BUYS_PER_COMPLEX_MONTH = 2
ORDER_RATE = 0.08
POINTS_ORDER_RATE = 0.2
ORDER_CANCEL_RATE = 0.05
QUANTITIES = (1, 1, 1, 2, 3)
MEAN_QUANTITY = sum(QUANTITIES) / len(QUANTITIES)
OPEN_DAYS = 7
OFFERS: tuple[tuple[str, str, int], ...] = (
    ("small_firm", "move_in_cleaning", 150_000),
    ("small_firm", "ventilation_filters", 25_000),
    ("local_food", "vegetables", 18_000),
    ("social_enterprise", "household_goods", 12_000),
)
"""(merchant kind, category, unit price in won) of the offers group buys are made of."""


class SeedingRandom(Protocol):
    def random(self) -> float: ...

    def randrange(self, start: int, stop: int = ..., step: int = ...) -> int: ...

    def choice(self, seq: Any) -> Any: ...

    def uniform(self, a: float, b: float) -> float: ...


Run = Callable[[list[tuple[c.Command, Cause]]], list[Outcome | None]]
MakeCause = Callable[[UUID, str, datetime], Cause]


def seed_group_buys(ledger: Ledger, rng: SeedingRandom, run: Run, make_cause: MakeCause,
                    run_tag: str, first: date, complexes: list[UUID],
                    merchants: list[tuple[UUID, str]],
                    residents_by_complex: dict[UUID, list[UUID]],
                    operator: UUID) -> None:
    """One month of group buys, from their opening to their outcome."""
    by_kind: dict[str, list[UUID]] = {}
    for merchant_id, kind in merchants:
        by_kind.setdefault(kind, []).append(merchant_id)
    offers = [offer for offer in OFFERS if offer[0] in by_kind]
    if not offers or not complexes:
        return
    opened: list[tuple[str, datetime, list[UUID], int]] = []
    items: list[tuple[c.Command, Cause]] = []
    for number in range(len(complexes) * GROUP_BUYS_PER_COMPLEX_MONTH):
        kind, category, unit_price_won = rng.choice(offers)
        merchant = rng.choice(by_kind[kind])
        home = complexes[number % len(complexes)]
        targets = [home]
        if len(complexes) > 1 and rng.random() < 0.3:
            targets.append(rng.choice([cid for cid in complexes if cid != home]))
        opened_at = datetime(first.year, first.month, first.day, 10, tzinfo=KST) + timedelta(
            days=rng.randrange(0, 20), minutes=rng.randrange(0, 480))
        deadline_at = opened_at + timedelta(days=OPEN_DAYS)
        residents = sum(len(residents_by_complex.get(cid, ())) for cid in targets)
        expected_units = residents * ORDER_RATE * MEAN_QUANTITY * (1 - ORDER_CANCEL_RATE)
        quantity_min = max(2, int(expected_units * rng.uniform(0.5, 1.4)))
        group_buy_id = f"GB-{run_tag}-{first:%Y%m}-{number + 1}"
        items.append((c.OpenGroupBuy(group_buy_id, merchant, category, unit_price_won,
                                     quantity_min, quantity_min * 4, deadline_at,
                                     tuple(targets)),
                      make_cause(merchant, "merchant", opened_at)))
        opened.append((group_buy_id, opened_at, targets, unit_price_won))
    outcomes = run(items)
    orders: list[tuple[c.Command, Cause]] = []
    for (group_buy_id, opened_at, targets, unit_price_won), outcome in zip(
            opened, outcomes, strict=True):
        if outcome is None:
            continue
        for complex_id in targets:
            for resident_id in residents_by_complex.get(complex_id, ()):
                if rng.random() >= ORDER_RATE:
                    continue
                quantity = rng.choice(QUANTITIES)
                points_used_won = 0
                if rng.random() < POINTS_ORDER_RATE:
                    wallet = ledger.load(resident_id)
                    if isinstance(wallet, Resident):
                        points_used_won = min(wallet.available_won,
                                              quantity * unit_price_won // 2)
                at = opened_at + timedelta(minutes=rng.randrange(1, OPEN_DAYS * 24 * 60 - 60))
                order_id = f"O-{run_tag}-{uuid5(resident_id, group_buy_id).hex[:16]}"
                orders.append((c.PlaceGroupBuyOrder(group_buy_id, order_id, resident_id,
                                                    quantity, points_used_won),
                               make_cause(resident_id, "resident", at)))
    placed = run(orders)
    cancels: list[tuple[c.Command, Cause]] = []
    for (command, cause), outcome in zip(orders, placed, strict=True):
        if outcome is None or rng.random() >= ORDER_CANCEL_RATE:
            continue
        assert isinstance(command, c.PlaceGroupBuyOrder)
        cancels.append((c.CancelGroupBuyOrder(command.order_id),
                        make_cause(command.resident_id, "resident",
                                   cause.occurred_at + timedelta(minutes=30))))
    run(cancels)
    closes: list[tuple[c.Command, Cause]] = [(c.CloseGroupBuy(group_buy_id),
               make_cause(operator, "operator", opened_at + timedelta(days=OPEN_DAYS,
                                                                      minutes=1)))
              for (group_buy_id, opened_at, _, _), outcome in zip(opened, outcomes, strict=True)
              if outcome is not None]
    run(closes)
