"""Group-buy benchmark: a group buy of N orders settles (or is cancelled) in one save.

    .venv/bin/python bench/groupbuy_bench.py [--database-url URL] [--orders 2000] [--repeat 1]

What it measures, in one run on one server, each on a fresh schema:
  - baseline: N single shopping trades, each paying part with points, sent in bulk
    through the same engine (`execute_many`: up to 2,000 commands share one save); the
    work a completed group buy does, as separate commands;
  - placing N orders (bulk, as the baseline) and closing the group buy with its minimum
    reached: one CloseGroupBuy command records N trades with their holds spent, the
    merchant's credits and the accruals in one transaction;
  - the same close on a cold writer (a new process's ledger: nothing cached, every wallet
    read from the database);
  - N orders and the close at the deadline below the minimum: every hold released in one
    save.
Figures: seconds, events written, and the close's time as a ratio to the baseline's.
Without --database-url the embedded PostgreSQL is used (in var/bench-pgdata).
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import timedelta
from typing import Any

import psycopg

from ledger import commands as c
from ledger.application import Ledger, now
from ledger.database import ConnectionSettings, start_embedded
from ledger.errors import DomainError
from ledger.events import Cause

OPERATOR = uuid.UUID("0b1e0000-0000-4000-8000-0000000000b1")
UNIT_PRICE_WON = 25_000
POINTS_USED_WON = 300


def cause(actor: uuid.UUID = OPERATOR, role: str = "operator", **fields: Any) -> Cause:
    return Cause(actor, role, uuid.uuid4().hex, fields.get("at") or now())


def fresh_schema(conninfo: str) -> str:
    name = f"bench_groupbuy_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    return name


def drop_schema(conninfo: str, name: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def accepted(results: list[Any]) -> list[Any]:
    refused = [r for r in results if isinstance(r, DomainError)]
    assert not refused, refused[:3]
    return results


class Market:
    """A complex with N residents holding points, a seller and a merchant."""

    def __init__(self, ledger: Ledger, residents: int) -> None:
        self.ledger = ledger
        ledger.execute(c.SetAccrualPolicy.of([
            {"market": "sharing", "seller_kind": "resident", "personal_bps": 300,
             "common_bps": 100},
            {"market": "shopping", "seller_kind": "small_firm", "personal_bps": 200,
             "common_bps": 100}]), cause())
        self.complex_id = uuid.UUID(ledger.execute(
            c.RegisterComplex("GB-BENCH", "bench", "Hwaseong"), cause())["complex_id"])
        self.merchant = uuid.UUID(ledger.execute(
            c.RegisterMerchant("small_firm", "filters"), cause())["merchant_id"])
        households = [uuid.UUID(o["household_id"]) for o in accepted(ledger.execute_many(
            [(c.RegisterHousehold(self.complex_id, f"u-{i}"), cause())
             for i in range(residents + 1)]))]
        enrolled = [uuid.UUID(o["resident_id"]) for o in accepted(ledger.execute_many(
            [(c.EnrolResident(h, "consent"), cause()) for h in households]))]
        self.seller, self.residents = enrolled[0], enrolled[1:]
        accepted(ledger.execute_many([  # 3 % of 100,000 won: 3,000 points each
            (c.RecordTrade(f"fund-{i}", "sharing", "x", self.seller, "resident", r, 100_000, 0),
             cause()) for i, r in enumerate(self.residents)]))

    def baseline(self) -> tuple[float, int]:
        """N single shopping trades through the engine in bulk: seconds and events."""
        before = self.ledger.position()
        started = time.perf_counter()
        accepted(self.ledger.execute_many([
            (c.RecordTrade(f"single-{i}", "shopping", "filters", self.merchant, "small_firm",
                           r, UNIT_PRICE_WON, POINTS_USED_WON), cause())
            for i, r in enumerate(self.residents)]))
        return time.perf_counter() - started, self.ledger.position() - before

    def orders(self, group_buy_id: str, quantity_min: int) -> float:
        self.ledger.execute(c.OpenGroupBuy(
            group_buy_id, self.merchant, "filters", UNIT_PRICE_WON, quantity_min,
            max(quantity_min, len(self.residents)), now() + timedelta(days=1),
            (self.complex_id,)), cause())
        started = time.perf_counter()
        accepted(self.ledger.execute_many([
            (c.PlaceGroupBuyOrder(group_buy_id, f"{group_buy_id}-{i}", r, 1, POINTS_USED_WON),
             cause(r, "resident")) for i, r in enumerate(self.residents)]))
        return time.perf_counter() - started

    def close(self, ledger: Ledger, group_buy_id: str, *, at_deadline: bool
              ) -> tuple[float, int, str]:
        before = ledger.position()
        at = now() + timedelta(days=2) if at_deadline else now()
        started = time.perf_counter()
        outcome = ledger.execute(c.CloseGroupBuy(group_buy_id), cause(at=at))
        elapsed = time.perf_counter() - started
        return elapsed, ledger.position() - before, str(outcome["state"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--orders", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    url = args.database_url or start_embedded("var/bench-pgdata")
    conninfo = ConnectionSettings.from_url(url).conninfo()
    n = args.orders
    print(f"group buy of {n:,} orders; one process, one PostgreSQL")
    for run in range(args.repeat):
        schema = fresh_schema(conninfo)
        ledger = Ledger.connect(url, schema)
        try:
            market = Market(ledger, n)
            base_s, base_events = market.baseline()
            place_s = market.orders("GB-done", quantity_min=n)
            done_s, done_events, done_state = market.close(ledger, "GB-done", at_deadline=False)
            market.orders("GB-cold", quantity_min=n)
            cold = Ledger.connect(url, schema)  # a new process's writer: nothing cached
            try:
                cold_s, cold_events, cold_state = market.close(cold, "GB-cold",
                                                               at_deadline=False)
            finally:
                cold.close()
            ledger.close()
            ledger = Ledger.connect(url, schema)
            market.ledger = ledger
            market.orders("GB-short", quantity_min=n + 1)
            short_s, short_events, short_state = market.close(ledger, "GB-short",
                                                              at_deadline=True)
        finally:
            ledger.close()
            drop_schema(conninfo, schema)
        assert (done_state, cold_state, short_state) == ("completed", "completed", "cancelled")
        print(f"run {run + 1}:")
        print(f"  baseline: {n:,} single trades, bulk      {base_s:7.3f} s  "
              f"{base_events:6,} events  {base_events / base_s:8,.0f} events/s")
        print(f"  placing {n:,} orders, bulk              {place_s:7.3f} s")
        print(f"  close, completed (warm writer)          {done_s:7.3f} s  "
              f"{done_events:6,} events  {done_events / done_s:8,.0f} events/s  "
              f"ratio to baseline {done_s / base_s:.2f}")
        print(f"  close, completed (cold writer)          {cold_s:7.3f} s  "
              f"{cold_events:6,} events  {cold_events / cold_s:8,.0f} events/s  "
              f"ratio to baseline {cold_s / base_s:.2f}")
        print(f"  close, cancelled (minimum not reached)  {short_s:7.3f} s  "
              f"{short_events:6,} events  {short_events / short_s:8,.0f} events/s  "
              f"ratio to baseline {short_s / base_s:.2f}")


if __name__ == "__main__":
    main()
