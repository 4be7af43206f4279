"""`ledger audit verify` recomputes every group buy's outcome: a clean ledger passes, and an
outcome that does not follow from the orders, or an order left half-settled, is found."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path

import pytest

from audit.history import statement
from audit.scratch import GROUP_BUY_MISMATCH, Scratch
from audit.verification import verify_ledger
from eventlog.log import Event, decode_rows
from ledger import commands as c
from ledger.application import now
from ledger.events import KST
from ledger.groupbuy import GroupBuy, group_buy_aggregate_id
from test_audit_verify import chain, project
from world import OPERATOR, World, cause


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "audit-keys"


def group_buys(world: World) -> None:
    """A completed group buy (with a cancelled order and a refunded order trade) and a
    cancelled one."""
    world.policy()
    complex_id = world.complex("AU-GB")
    seller = world.resident(world.household(complex_id))
    merchant = world.merchant("local_food")
    buyers = [world.funded_resident(world.household(complex_id), seller, 3_000)
              for _ in range(3)]
    for group_buy_id, quantity_min in (("GB-yes", 3), ("GB-no", 10)):
        world.run(c.OpenGroupBuy(group_buy_id, merchant, "filters", 5_000, quantity_min, 20,
                                 now() + timedelta(days=1), (complex_id,)))
    for index, buyer in enumerate(buyers):
        world.run(c.PlaceGroupBuyOrder("GB-yes", f"Y-{index}", buyer, 1 + index, 1_000),
                  actor=buyer, role="resident")
        world.run(c.PlaceGroupBuyOrder("GB-no", f"N-{index}", buyer, 1, 500),
                  actor=buyer, role="resident")
    world.run(c.CancelGroupBuyOrder("Y-0"), actor=buyers[0], role="resident")
    world.run(c.CloseGroupBuy("GB-yes"))
    world.run(c.RefundTrade("group-buy:Y-1"))
    world.ledger.execute(c.CloseGroupBuy("GB-no"),
                         cause(OPERATOR, "operator", occurred_at=now() + timedelta(days=2)))


def test_verify_recomputes_every_group_buy(world: World, key_dir: Path) -> None:
    """A ledger with group buys verifies clean, each outcome recomputed."""
    group_buys(world)
    project(world)
    chain(world, key_dir)
    result = verify_ledger(world.database_url, world.schema, key_dir=key_dir)
    assert result.ok, result.lines()
    assert result.counts["group_buys_recomputed"] == 2
    assert "group-buy outcomes recomputed: 2" in result.lines()


def _events(world: World) -> list[Event]:
    with world.connect() as conn:
        rows = conn.execute("SELECT notification_id, originator_id, originator_version, topic,"
                            " state FROM ledger_events ORDER BY notification_id").fetchall()
    return decode_rows(rows)


def _fold(events: list[Event]) -> list[str]:
    scratch = Scratch()
    for event in events:
        scratch.apply(event)
    scratch.finish()
    return [f"{finding.code}: {finding.detail}" for finding in scratch.findings]


def test_an_outcome_that_does_not_follow_from_the_orders_is_found(world: World) -> None:
    """A group buy recorded as completed below its minimum, or with other totals than its
    orders, is a group_buy_mismatch at its outcome."""
    group_buys(world)
    events = _events(world)
    assert _fold(events) == []
    below = copy.deepcopy(events)
    opened = next(e for e in below if e.name == "GroupBuy.Opened"
                  and e.data["group_buy_id"] == "GB-yes")
    opened.data["quantity_min"] = 99
    found = _fold(below)
    assert any(f.startswith(GROUP_BUY_MISMATCH) and "completed with 5 ordered of minimum 99"
               in f for f in found), found
    totals = copy.deepcopy(events)
    outcome = next(e for e in totals if e.name == "GroupBuy.Completed")
    outcome.data["money_won_total"] += 1
    found = _fold(totals)
    assert any(f.startswith(GROUP_BUY_MISMATCH) and "outcome records" in f
               for f in found), found


def test_an_order_left_unsettled_is_found(world: World) -> None:
    """An order of a completed group buy whose hold was never spent (its events missing) is
    a group_buy_mismatch."""
    group_buys(world)
    events = _events(world)
    spent = next(e for e in events if e.name == "Resident.OrderHoldSpent")
    found = _fold([e for e in events if e is not spent])
    assert any(f.startswith(GROUP_BUY_MISMATCH) and "never spent" in f for f in found), found


def test_a_wallet_statement_explains_order_holds(world: World) -> None:
    """A buyer's monthly statement has a line for each order hold, its release and its
    payment, saying which group buy and order."""
    group_buys(world)
    buyer = world.ledger.snapshot(GroupBuy, group_buy_aggregate_id("GB-yes"))
    assert buyer is not None
    resident = buyer.orders["Y-1"]["resident_id"]
    month = now().astimezone(KST).strftime("%Y-%m")
    document = statement(world.database_url, world.schema, month, resident=resident)
    assert document is not None
    texts = [line["explanation"] for line in document["lines"]]
    assert any("group buy GB-yes order Y-1: 1,000 won held for the order" in t for t in texts)
    assert any("group buy GB-yes order Y-1: 1,000 won paid trade group-buy:Y-1" in t
               for t in texts)
    later = (now() + timedelta(days=2)).astimezone(KST).strftime("%Y-%m")
    released = statement(world.database_url, world.schema, later, resident=resident)
    assert released is not None
    assert any("group buy GB-no order N-1: 500 won released (group_buy_cancelled)"
               in line["explanation"] for line in released["lines"])
