"""Wash-trade guard benchmark: what the guards cost a trade, against today's trade.

    .venv/bin/python bench/guards_bench.py [--database-url URL] [--trades 1000] [--repeat 3]

Every scenario records N sharing trades paid in money, each by its own buyer (so no two
trades touch one wallet), on a fresh schema of one server, in the same run:
  - baseline: the seller is a merchant (sharing-market rate as for residents). The guards
    leave such a trade alone: this is today's trade, the same events as before;
  - new pairs: the seller is a resident of another household, a new pair each trade: the
    household check, a read of the pair's counter that finds nothing (one round trip to
    the database, as the counter is not cached yet), and two more events
    (`TradePair.Opened`, `TradePair.TradeCounted`) in the same save;
  - repeat pairs: the same N pairs again in the month: the counter is cached and gains one
    event (`TradePair.TradeCounted`).
Each scenario runs one trade per `execute` (a caller waiting for each answer) and N
trades through `execute_many` (group commit). Figures: trades per second, and each as a
ratio to the baseline of the same run.
Without --database-url the embedded PostgreSQL is used (in var/bench-pgdata).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from typing import Any

import psycopg

from ledger import commands as c
from ledger.application import Ledger, now
from ledger.database import ConnectionSettings, start_embedded
from ledger.errors import DomainError
from ledger.events import Cause

OPERATOR = uuid.UUID("0b1e0000-0000-4000-8000-0000000000c1")
RATES = [
    {"market": "sharing", "seller_kind": "resident", "personal_bps": 300, "common_bps": 100},
    {"market": "sharing", "seller_kind": "small_firm", "personal_bps": 300, "common_bps": 100},
]


def cause(role: str = "operator") -> Cause:
    return Cause(OPERATOR, role, uuid.uuid4().hex, now())


class Scene:
    """A fresh schema: a complex, 2N households with a resident each, a merchant, a policy."""

    def __init__(self, conninfo: str, url: str, trades: int) -> None:
        self.conninfo = conninfo
        self.schema = f"bench_guards_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{self.schema}"')
        self.ledger = Ledger.connect(url, self.schema)
        run = self.ledger.execute
        run(c.SetAccrualPolicy.of(RATES), cause())
        complex_id = uuid.UUID(run(c.RegisterComplex("BG-1", "bench", "Hwaseong"),
                                   cause())["complex_id"])
        self.merchant = uuid.UUID(run(c.RegisterMerchant("small_firm", "shop"),
                                      cause())["merchant_id"])
        homes = self._all([(c.RegisterHousehold(complex_id, f"{n}"), cause())
                           for n in range(2 * trades)])
        people = self._all([(c.EnrolResident(uuid.UUID(h["household_id"]), "consent"),
                             cause("coordinator")) for h in homes])
        residents = [uuid.UUID(p["resident_id"]) for p in people]
        self.buyers, self.sellers = residents[:trades], residents[trades:]

    def _all(self, items: list[tuple[c.Command, Cause]]) -> list[Any]:
        results = self.ledger.execute_many(items)
        refused = [r for r in results if isinstance(r, DomainError)]
        assert not refused, refused[:3]
        return results

    def trades(self, merchant: bool) -> list[tuple[c.Command, Cause]]:
        return [(c.RecordTrade(f"B-{uuid.uuid4().hex[:12]}", "sharing", "lessons",
                               self.merchant if merchant else seller,
                               "small_firm" if merchant else "resident", buyer, 10_000, 0),
                 cause("platform")) for buyer, seller in zip(self.buyers, self.sellers,
                                                              strict=True)]

    def one_by_one(self, items: list[tuple[c.Command, Cause]]) -> float:
        started = time.perf_counter()
        for command, why in items:
            self.ledger.execute(command, why)
        return len(items) / (time.perf_counter() - started)

    def bulk(self, items: list[tuple[c.Command, Cause]]) -> float:
        started = time.perf_counter()
        self._all(items)
        return len(items) / (time.perf_counter() - started)

    def close(self) -> None:
        self.ledger.close()
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{self.schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--trades", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    url = args.database_url or start_embedded()
    conninfo = ConnectionSettings.from_url(url).conninfo()
    figures: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        for mode in ("one_by_one", "bulk"):
            scene = Scene(conninfo, url, args.trades)
            try:
                send = getattr(scene, mode)
                baseline = send(scene.trades(merchant=True))
                new_pairs = send(scene.trades(merchant=False))
                repeat_pairs = send(scene.trades(merchant=False))
            finally:
                scene.close()
            for name, value in (("baseline", baseline), ("new pairs", new_pairs),
                                ("repeat pairs", repeat_pairs)):
                figures.setdefault(f"{mode} {name}", []).append(value)
            figures.setdefault(f"{mode} new/baseline", []).append(new_pairs / baseline)
            figures.setdefault(f"{mode} repeat/baseline", []).append(repeat_pairs / baseline)
    for name, values in figures.items():
        median = statistics.median(values)
        shown = f"{median:.2f}" if "/" in name else f"{median:,.0f} trades/s"
        print(f"{name:28} {shown}   (runs: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
