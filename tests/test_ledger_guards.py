"""Wash-trade guards: given what happened, when a trade between residents arrives, then it is
recorded, or refused with the guard's code and nothing changes."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from ledger import commands as c
from ledger import limits
from ledger.application import now
from ledger.errors import DomainError
from ledger.events import KST, Cause
from ledger.guards import DEFAULT_GUARDS, NO_GUARDS, TradePair, trade_pair_id
from ledger.policy import POLICY_ID, AccrualPolicy
from ledger.resident import Resident
from test_group_buys import Market, after_deadline
from world import DEFAULT_RATES, OPERATOR, PLATFORM, World


def rejected(world: World, code: str, command: c.Command, **cause_fields: Any) -> None:
    """Assert that the command is rejected with `code` and that nothing was recorded."""
    before = world.ledger.position()
    with pytest.raises(DomainError) as caught:
        world.run(command, **cause_fields)
    assert caught.value.code == code
    assert world.ledger.position() == before


def sharing(buyer: uuid.UUID, seller: uuid.UUID, amount_won: int,
            trade_id: str | None = None) -> c.RecordTrade:
    return c.RecordTrade(trade_id or f"T-{uuid.uuid4().hex[:10]}", "sharing", "childcare",
                         seller, "resident", buyer, amount_won, 0)


def last_month() -> datetime:
    """A moment in the KST month before this one."""
    first = now().astimezone(KST).replace(day=1, hour=12, minute=0, second=0, microsecond=0)
    return first - timedelta(days=2)


class Homes:
    """A complex with two households: a couple in one, a neighbour in the other."""

    def __init__(self, world: World) -> None:
        complex_id = world.complex()
        home = world.household(complex_id, "101-101")
        self.neighbour_home = world.household(complex_id, "101-102")
        self.first = world.resident(home)
        self.second = world.resident(home)
        self.neighbour = world.resident(self.neighbour_home)


def test_a_trade_within_one_household_is_refused(world: World) -> None:
    """Two residents of the same household cannot record a sale between them."""
    world.policy()
    homes = Homes(world)
    rejected(world, "same_household_trade", sharing(homes.first, homes.second, 10_000),
             actor=PLATFORM, role="platform")


def test_the_household_guard_can_be_turned_off(world: World) -> None:
    """A policy version that allows trades within a household records them."""
    world.policy(guards={"same_household_trades": "allowed"})
    homes = Homes(world)
    assert world.trade(homes.first, homes.second, 10_000)["personal_accrued_won"] == 300


def test_other_rejections_come_before_the_guards(world: World) -> None:
    """A guard only refuses a trade that would otherwise be recorded."""
    world.policy()
    homes = Homes(world)
    command = c.RecordTrade("T-1", "sharing", "x", homes.second, "resident", homes.first,
                            10_000, 5_000)
    rejected(world, "insufficient_points", command, actor=PLATFORM, role="platform")


def test_trades_between_two_residents_are_capped_per_month(world: World) -> None:
    """The pair cap counts both directions together; the next trade is refused."""
    world.policy(guards={"pair_trades_per_month_max": 2})
    homes = Homes(world)
    world.trade(homes.first, homes.neighbour, 1_000)
    world.trade(homes.neighbour, homes.first, 1_000)
    rejected(world, "pair_trade_cap_reached", sharing(homes.first, homes.neighbour, 1_000),
             actor=PLATFORM, role="platform")
    rejected(world, "pair_trade_cap_reached", sharing(homes.neighbour, homes.first, 1_000),
             actor=PLATFORM, role="platform")
    pair = world.ledger.snapshot(TradePair, trade_pair_id(
        homes.first, homes.neighbour, now().astimezone(KST).strftime("%Y-%m")))
    assert pair is not None and pair.trades_count == 2


def test_the_pair_cap_is_per_kst_month(world: World) -> None:
    """Trades of another KST month count on that month's counter."""
    world.policy(guards={"pair_trades_per_month_max": 1})
    homes = Homes(world)
    world.trade(homes.first, homes.neighbour, 1_000)
    world.trade(homes.first, homes.neighbour, 1_000, occurred_at=last_month())
    rejected(world, "pair_trade_cap_reached", sharing(homes.first, homes.neighbour, 1_000),
             actor=PLATFORM, role="platform", occurred_at=last_month())


def test_a_different_pair_has_its_own_count(world: World) -> None:
    """One resident at the cap with a neighbour still trades with someone else."""
    world.policy(guards={"pair_trades_per_month_max": 1,
                         "same_household_trades": "allowed"})
    homes = Homes(world)
    world.trade(homes.first, homes.neighbour, 1_000)
    world.trade(homes.first, homes.second, 1_000)


def test_sharing_accruals_are_capped_per_month(world: World) -> None:
    """A trade whose 3 % accrual would pass the month's cap is refused whole, not cut."""
    world.policy(guards={"sharing_accrual_won_per_month_max": 400})
    homes = Homes(world)
    world.trade(homes.first, homes.neighbour, 10_000)  # 300 accrued
    rejected(world, "sharing_accrual_cap_reached", sharing(homes.first, homes.neighbour, 10_000),
             actor=PLATFORM, role="platform")
    world.trade(homes.first, homes.neighbour, 3_300)  # 99: 399 of 400
    wallet = world.ledger.snapshot(Resident, homes.first)
    assert wallet is not None and wallet.available_won == 399


def test_the_sharing_cap_is_per_buyer_and_kst_month(world: World) -> None:
    """The cap counts what the buyer accrued in the trade's KST month only."""
    world.policy(guards={"sharing_accrual_won_per_month_max": 300})
    homes = Homes(world)
    world.trade(homes.first, homes.neighbour, 10_000)
    world.trade(homes.first, homes.neighbour, 10_000, occurred_at=last_month())
    world.trade(homes.neighbour, homes.first, 10_000)  # the seller's own cap is untouched


def test_a_refund_does_not_give_the_cap_back(world: World) -> None:
    """A refunded trade's accrual is clawed back, and it still counted towards the cap."""
    world.policy(guards={"sharing_accrual_won_per_month_max": 300})
    homes = Homes(world)
    world.trade(homes.first, homes.neighbour, 10_000, trade_id="T-refunded")
    world.run(c.RefundTrade("T-refunded"), actor=PLATFORM, role="platform")
    rejected(world, "sharing_accrual_cap_reached", sharing(homes.first, homes.neighbour, 100),
             actor=PLATFORM, role="platform")


def test_a_trade_accruing_nothing_passes_the_sharing_cap(world: World) -> None:
    """Paid wholly in points, a sharing trade accrues nothing and is not refused."""
    world.policy(guards={"sharing_accrual_won_per_month_max": 300})
    homes = Homes(world)
    world.trade(homes.first, homes.neighbour, 10_000)
    world.trade(homes.first, homes.neighbour, 300, points_used_won=300)


def test_shopping_accruals_do_not_count_towards_the_sharing_cap(world: World) -> None:
    """The cap concerns the sharing market; a shop's sale accrues as before."""
    world.policy(guards={"sharing_accrual_won_per_month_max": 0})
    homes = Homes(world)
    merchant = world.merchant("local_food")
    assert world.trade(homes.first, merchant, 10_000, seller_kind="local_food")[
        "personal_accrued_won"] == 500
    rejected(world, "sharing_accrual_cap_reached", sharing(homes.first, homes.neighbour, 100),
             actor=PLATFORM, role="platform")


def test_the_guards_of_the_trades_policy_version_apply(world: World) -> None:
    """A new version's guards apply to the trades recorded under it."""
    world.policy(guards={"pair_trades_per_month_max": 1})
    homes = Homes(world)
    world.trade(homes.first, homes.neighbour, 1_000)
    world.policy(guards={"pair_trades_per_month_max": 2})
    world.trade(homes.first, homes.neighbour, 1_000)
    rejected(world, "pair_trade_cap_reached", sharing(homes.first, homes.neighbour, 1_000),
             actor=PLATFORM, role="platform")


def test_a_version_without_guard_settings_gets_the_defaults(world: World) -> None:
    """Guards left out of a new policy version are stored with their defaults."""
    world.policy()
    policy = world.ledger.snapshot(AccrualPolicy, POLICY_ID)
    assert policy is not None and policy.guards_for(1) == DEFAULT_GUARDS


def test_a_version_stored_before_guards_guards_nothing() -> None:
    """A VersionSet stored without `guards` keeps its meaning: no guards."""
    cause = Cause(OPERATOR, "operator", "req-1", now())
    policy = AccrualPolicy.create(cause)
    policy.trigger_event(AccrualPolicy.VersionSet, version=1, rates=[],
                         **cause.fields(None))
    assert policy.guards_for(1) == NO_GUARDS


@pytest.mark.parametrize("guards", [
    {"unknown": 1},
    {"same_household_trades": True},
    {"pair_trades_per_month_max": -1},
    {"pair_trades_per_month_max": limits.guard_pair_trades_per_month_max + 1},
    {"sharing_accrual_won_per_month_max": 1.5},
    {"sharing_accrual_won_per_month_max": limits.amount_won_max + 1},
])
def test_guard_settings_are_validated(world: World, guards: dict[str, Any]) -> None:
    """A bad guard setting refuses the whole policy version."""
    rejected(world, "invalid_field", c.SetAccrualPolicy.of(DEFAULT_RATES, guards=guards))


def test_a_group_buy_close_is_never_refused_by_a_guard(world: World) -> None:
    """Residents of one household, at every cap, all get their group-buy trades recorded."""
    market = Market(world)
    world.policy(guards={"sharing_accrual_won_per_month_max": 0,
                         "pair_trades_per_month_max": 0})
    household = world.household(market.complex)
    buyers = [world.resident(household) for _ in range(3)]
    market.open()
    for number, buyer in enumerate(buyers):
        market.order(buyer, f"O-{number}")
    before = world.ledger.position()
    market.close(at=after_deadline())
    names = world.event_names_after(before)
    assert names[0] == "GroupBuy.Completed"
    assert names.count("Trade.Recorded") == 3
    for buyer in buyers:
        assert market.wallet(buyer).accrued_total_won == 500  # 5 % of 10,000 won
