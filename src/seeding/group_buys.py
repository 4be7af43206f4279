"""Group buys in a seeded month: merchants open them, residents order, the sweeper closes.

Rates, modelled on the pilot's shopping market: each complex sees about two group buys a
month (move-in cleaning, ventilation filters, local food boxes), each open for a week to
its complex and sometimes a neighbour; about 8 % of the households it is open to order
one to three units, a fifth of them paying part with points; one order in twenty is
cancelled before the deadline. Minimums are set around the expected demand, so some group
buys reach theirs and complete and others are cancelled at the deadline.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID, uuid5

from ledger import commands as c
from ledger.events import KST
from ledger.groupbuy import order_trade_id

if TYPE_CHECKING:
    from seeding.seed import Seeder

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


def seed_group_buys(seeder: Seeder, first: date, members: list[list[int]],
                    operator: UUID) -> None:
    """One month of group buys, from their opening to their outcome. Opening and closing
    a group buy are barriers of the import (a group buy may be open to two complexes, and
    its close settles the orders of both); orders and cancellations run with their
    residents' complexes."""
    model, rng = seeder.model, seeder.random
    by_kind: dict[str, list[UUID]] = {}
    for merchant_id, kind in model.merchants:
        by_kind.setdefault(kind, []).append(merchant_id)
    offers = [offer for offer in OFFERS if offer[0] in by_kind]
    complexes = len(model.complexes)
    if not offers or not complexes:
        return
    opened: list[tuple[str, str, str, datetime, list[int], int, int, int]] = []
    for number in range(complexes * GROUP_BUYS_PER_COMPLEX_MONTH):
        kind, category, unit_price_won = rng.choice(offers)
        merchant = rng.choice(by_kind[kind])
        home = number % complexes
        targets = [home]
        if complexes > 1 and rng.random() < 0.3:
            targets.append(rng.choice([n for n in range(complexes) if n != home]))
        opened_at = datetime(first.year, first.month, first.day, 10, tzinfo=KST) + \
            timedelta(days=rng.randrange(0, 20), minutes=rng.randrange(0, 480))
        deadline_at = opened_at + timedelta(days=OPEN_DAYS)
        residents = sum(len(members[n]) for n in targets)
        expected_units = residents * ORDER_RATE * MEAN_QUANTITY * (1 - ORDER_CANCEL_RATE)
        quantity_min = max(2, int(expected_units * rng.uniform(0.5, 1.4)))
        group_buy_id = f"GB-{seeder.run_tag}-{first:%Y%m}-{number + 1}"
        seeder.write(c.OpenGroupBuy(group_buy_id, merchant, category, unit_price_won,
                                    quantity_min, quantity_min * 4, deadline_at,
                                    tuple(model.complexes[n] for n in targets)),
                     seeder._cause(merchant, "merchant", opened_at), None)
        opened.append((group_buy_id, kind, category, opened_at, targets, unit_price_won,
                       quantity_min, quantity_min * 4))
    ordered: dict[str, int] = {}
    orders: list[tuple[str, str, int, int, int, datetime]] = []
    for group_buy_id, _, _, opened_at, targets, unit_price_won, _, quantity_max in opened:
        for complex_number in targets:
            for resident in members[complex_number]:
                if rng.random() >= ORDER_RATE:
                    continue
                quantity = rng.choice(QUANTITIES)
                points_used_won = 0
                if rng.random() < POINTS_ORDER_RATE:
                    points_used_won = min(model.available_won[resident],
                                          quantity * unit_price_won // 2)
                at = opened_at + timedelta(minutes=rng.randrange(1, OPEN_DAYS * 24 * 60 - 60))
                if ordered.get(group_buy_id, 0) + quantity > quantity_max:
                    continue
                resident_id = model.residents[resident]
                order_id = f"O-{seeder.run_tag}-{uuid5(resident_id, group_buy_id).hex[:16]}"
                seeder.write(c.PlaceGroupBuyOrder(group_buy_id, order_id, resident_id,
                                                  quantity, points_used_won),
                             seeder._cause(resident_id, "resident", at), complex_number)
                model.hold(resident, points_used_won)
                ordered[group_buy_id] = ordered.get(group_buy_id, 0) + quantity
                orders.append((group_buy_id, order_id, resident, quantity, points_used_won,
                               at))
    still_open: list[tuple[str, str, int, int, int, datetime]] = []
    for order in orders:
        group_buy_id, order_id, resident, quantity, points_used_won, at = order
        if rng.random() >= ORDER_CANCEL_RATE:
            still_open.append(order)
            continue
        resident_id = model.residents[resident]
        seeder.write(c.CancelGroupBuyOrder(order_id),
                     seeder._cause(resident_id, "resident", at + timedelta(minutes=30)),
                     model.complex_of(resident))
        model.end_hold(resident, points_used_won, returned=True)
        ordered[group_buy_id] -= quantity
    by_group_buy: dict[str, list[tuple[str, int, int, int]]] = {}
    for group_buy_id, order_id, resident, quantity, points_used_won, _ in still_open:
        by_group_buy.setdefault(group_buy_id, []).append(
            (order_id, resident, quantity, points_used_won))
    for group_buy_id, kind, _, opened_at, _, unit_price_won, quantity_min, _ in opened:
        closed_at = opened_at + timedelta(days=OPEN_DAYS, minutes=1)
        seeder.write(c.CloseGroupBuy(group_buy_id),
                     seeder._cause(operator, "operator", closed_at), None)
        completed = ordered.get(group_buy_id, 0) >= quantity_min
        for order_id, resident, quantity, points_used_won in by_group_buy.get(group_buy_id,
                                                                               []):
            model.end_hold(resident, points_used_won, returned=not completed)
            if completed:  # each order a trade, its shares pending for the return window
                personal_won, common_won = model.shares(
                    "shopping", kind, quantity * unit_price_won, points_used_won)
                model.accrue(order_trade_id(order_id), "shopping", resident, personal_won,
                             common_won, closed_at)

