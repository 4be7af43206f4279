"""The group_buys projection: group buys with their orders and state, equal to a fold of
the events, and a rebuild equal to what the live runner built."""

from __future__ import annotations

from datetime import timedelta

import psycopg

import projections as p
from ledger import commands as c
from ledger.application import now
from projections.runner import ProjectionRunner, rebuild
from test_projections import World, cause, conn, ledger, runner, world  # noqa: F401

# Fixtures come from test_projections by import, so tests "redefine" their names.
# ruff: noqa: F811


def _group_buys(world: World) -> None:
    """One group buy completed (one order cancelled before), one cancelled at its deadline,
    one still open with an order."""
    world.trade(100_000)  # the buyer accrues 3,000 points
    later = now() + timedelta(days=2)
    for group_buy_id, quantity_min in (("GB-done", 1), ("GB-short", 5), ("GB-open", 1)):
        world.run(c.OpenGroupBuy(group_buy_id, world.merchant, "filters", 10_000,
                                 quantity_min, 10, now() + timedelta(days=1),
                                 (world.complex_id,)), cause("merchant", world.merchant))
    buyer = cause("resident", world.buyer)
    world.run(c.PlaceGroupBuyOrder("GB-done", "O-1", world.buyer, 2, 1_000), buyer)
    world.run(c.PlaceGroupBuyOrder("GB-done", "O-2", world.seller, 1, 0),
              cause("coordinator", on_behalf_of=world.seller))
    world.run(c.PlaceGroupBuyOrder("GB-done", "O-3", world.buyer, 1, 500),
              cause("resident", world.buyer))
    world.run(c.CancelGroupBuyOrder("O-3"), cause("resident", world.buyer))
    world.run(c.CloseGroupBuy("GB-done"), cause("merchant", world.merchant))
    world.run(c.PlaceGroupBuyOrder("GB-short", "O-4", world.buyer, 1, 700),
              cause("resident", world.buyer))
    world.run(c.CloseGroupBuy("GB-short"), cause(at=later))
    world.run(c.PlaceGroupBuyOrder("GB-open", "O-5", world.buyer, 1, 100),
              cause("resident", world.buyer))


def test_group_buys_with_orders_and_states(world: World, runner: ProjectionRunner,
                                           conn: psycopg.Connection) -> None:
    """Each group buy reads with its state and quantity; each order with its status, and a
    settled order with its trade id; only the open one is listed for the complex, and only
    the past-deadline open ones are due."""
    _group_buys(world)
    runner.catch_up()
    done = p.group_buy(conn, "GB-done")
    assert done is not None
    assert (done["state"], done["quantity_ordered"], done["orders_count"], done["closed"],
            done["money_won_total"], done["complex_ids"]) == (
        "completed", 3, 2, "early", 19_000 + 10_000, [world.complex_id])
    statuses = {o["order_id"]: (o["status"], o["trade_id"])
                for o in p.group_buy_orders(conn, "GB-done")["orders"]}
    assert statuses == {"O-1": ("settled", "group-buy:O-1"),
                        "O-2": ("settled", "group-buy:O-2"), "O-3": ("cancelled", None)}
    short = p.group_buy(conn, "GB-short")
    assert short is not None and (short["state"], short["closed"]) == (
        "cancelled", "minimum_not_reached")
    assert [o["status"] for o in p.group_buy_orders(conn, "GB-short")["orders"]] == [
        "released"]
    first = p.group_buy_orders(conn, "GB-done", limit=2)
    assert [o["order_id"] for o in first["orders"]] == ["O-1", "O-2"]
    rest = p.group_buy_orders(conn, "GB-done", after=first["next_cursor"], limit=2)
    assert ([o["order_id"] for o in rest["orders"]], rest["next_cursor"]) == (["O-3"], None)
    assert [g["group_buy_id"] for g in p.open_group_buys(conn, world.complex_id, now())] == [
        "GB-open"]
    assert p.due_group_buys(conn, now()) == []
    assert p.due_group_buys(conn, now() + timedelta(days=2)) == ["GB-open"]
    wallet = p.wallet(conn, world.buyer)
    assert wallet is not None and wallet["held_won"] == 100


def test_group_buys_rebuild_equals_live_and_fold(database_url: str, schema: str, world: World,
                                                 runner: ProjectionRunner,
                                                 conn: psycopg.Connection) -> None:
    """A rebuild from position 0 gives the tables the live runner built, and every
    projection equals a fold of the events."""
    _group_buys(world)
    runner.catch_up()
    live_state = p.read_all(conn)
    rebuild(database_url, schema, progress=False, batch_size=5)
    assert p.read_all(conn) == live_state
    assert p.read_all(conn) == p.fold_all(database_url, schema)
