"""Points-lifecycle benchmark: a month's expiry sweep, and what lot bookkeeping costs a trade.

    .venv/bin/python bench/lots_bench.py [--database-url URL] [--residents 2000]
                                         [--trades 4000] [--baseline-ref 785ef01]

What it measures, in one run on one server, each part on a fresh schema:
  1. trades, against today's trade: the same workload (N residents, M trades, a fifth of
     them paying part with points, so spends take lots) sent in bulk through the engine
     (`execute_many`), once with this tree's code and once with the code of
     `--baseline-ref` (default 785ef01: int-try before issue 12, the last trade without
     lots; any commit or branch name works; its `src/` is exported with `git archive`
     to a temporary directory and run in a child process). Figures: trades/s and events
     per trade of each, and the ratio: the cost per trade of the lot bookkeeping (and of
     the lifecycle's bigger events);
  2. a month's expiry sweep: N residents, each with one lot past its expiry (a sharing
     trade back-dated 25 months), then one ExpirePoints per wallet, in bulk as the
     sweeper's commands would be batched by the engine, and a sample of 200 sent one at a
     time (`execute`, as the sweeper sends them today). Figures: wallets expired per
     second, and the time a sweep of 75,000 residents would take at that rate (a linear
     extrapolation from N, stated as such; the sweep's work is one command per wallet,
     each touching its wallet and its fund).
Without --database-url the embedded PostgreSQL is used (in var/bench-pgdata). Run it at a
small size on a shared machine; the 75,000 figure is scaled, not run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from datetime import timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
PILOT_RESIDENTS = 75_000
RATES = [
    {"market": "sharing", "seller_kind": "resident", "personal_bps": 300, "common_bps": 100},
    {"market": "shopping", "seller_kind": "small_firm", "personal_bps": 200, "common_bps": 50},
]


def fresh_schema(conninfo: str, tag: str) -> str:
    name = f"bench_lots_{tag}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    return name


def drop_schema(conninfo: str, name: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def trade_workload(url: str, schema: str, residents: int, trades: int) -> dict[str, Any]:
    """Enrol `residents` and send `trades` trades in bulk; the same code runs on both trees
    (it uses only commands both know)."""
    from ledger import commands as c  # noqa: PLC0415  (imported from the tree under test)
    from ledger.application import Ledger, now  # noqa: PLC0415
    from ledger.errors import DomainError  # noqa: PLC0415
    from ledger.events import Cause  # noqa: PLC0415

    operator = uuid.UUID("0b1e0000-0000-4000-8000-0000000000c1")

    def cause(role: str = "operator") -> Cause:
        return Cause(operator, role, uuid.uuid4().hex, now())

    ledger = Ledger.connect(url, schema)
    try:
        ledger.execute(c.SetAccrualPolicy.of(RATES), cause())
        complex_id = uuid.UUID(ledger.execute(c.RegisterComplex("B-1", "bench", "Hwaseong"),
                                              cause())["complex_id"])
        merchant = uuid.UUID(ledger.execute(c.RegisterMerchant("small_firm", "shop"),
                                            cause())["merchant_id"])
        households = [uuid.UUID(o["household_id"]) for o in ledger.execute_many(
            [(c.RegisterHousehold(complex_id, f"{i}"), cause()) for i in range(residents)])
            if not isinstance(o, DomainError)]
        people = [uuid.UUID(o["resident_id"]) for o in ledger.execute_many(
            [(c.EnrolResident(h, "consent"), cause("coordinator")) for h in households])
            if not isinstance(o, DomainError)]
        # Everyone earns first (sharing, available at once), so later trades can spend.
        earn = [(c.RecordTrade(f"E-{i}", "sharing", "x", people[(i + 1) % len(people)],
                               "resident", person, 30_000, 0), cause("platform"))
                for i, person in enumerate(people)]
        ledger.execute_many(earn)
        items = []
        for i in range(trades):
            buyer = people[i % len(people)]
            points = 300 if i % 5 == 0 else 0
            if i % 2:
                items.append((c.RecordTrade(f"T-{i}", "shopping", "x", merchant, "small_firm",
                                            buyer, 20_000, points), cause("platform")))
            else:
                items.append((c.RecordTrade(f"T-{i}", "sharing", "x",
                                            people[(i + 7) % len(people)], "resident", buyer,
                                            10_000, points), cause("platform")))
        before = ledger.position()
        started = time.perf_counter()
        outcomes = ledger.execute_many(items)
        seconds = time.perf_counter() - started
        refused = [o for o in outcomes if isinstance(o, DomainError)]
        assert not refused, refused[:3]
        with psycopg.connect(_conninfo(url), autocommit=True) as conn:
            events = conn.execute(
                f'SELECT count(*) FROM "{schema}".ledger_events WHERE notification_id > %s'
                " AND topic NOT LIKE %s", (before, "%RequestRecord%")).fetchone()
        return {"seconds": seconds, "trades": trades,
                "events": int(events[0]) if events else 0}
    finally:
        ledger.close()


def _conninfo(url: str) -> str:
    from ledger.database import ConnectionSettings  # noqa: PLC0415

    return ConnectionSettings.from_url(url).conninfo()


def baseline_src(ref: str, into: Path) -> Path:
    """The `src/` of `ref`, exported (no worktree, nothing of the repository changed)."""
    archive = subprocess.run(  # noqa: S603  (git, with our arguments)
        ["git", "-C", str(ROOT), "archive", ref, "src"],  # noqa: S607  (git from PATH)
        check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def expiry_sweep(url: str, schema: str, residents: int) -> dict[str, Any]:
    from ledger import commands as c  # noqa: PLC0415
    from ledger.application import Ledger, now  # noqa: PLC0415
    from ledger.errors import DomainError  # noqa: PLC0415
    from ledger.events import Cause  # noqa: PLC0415

    operator = uuid.UUID("0b1e0000-0000-4000-8000-0000000000c2")
    moment = now()
    long_ago = moment - timedelta(days=31 * 25)

    def cause(role: str = "operator", at: Any = None) -> Cause:
        return Cause(operator, role, uuid.uuid4().hex, at or moment)

    ledger = Ledger.connect(url, schema)
    try:
        ledger.execute(c.SetAccrualPolicy.of(RATES), cause())
        complex_id = uuid.UUID(ledger.execute(c.RegisterComplex("B-2", "bench", "Hwaseong"),
                                              cause())["complex_id"])
        households = [uuid.UUID(o["household_id"]) for o in ledger.execute_many(
            [(c.RegisterHousehold(complex_id, f"{i}"), cause()) for i in range(residents)])
            if not isinstance(o, DomainError)]
        people = [uuid.UUID(o["resident_id"]) for o in ledger.execute_many(
            [(c.EnrolResident(h, "consent"), cause("coordinator")) for h in households])
            if not isinstance(o, DomainError)]
        ledger.execute_many([(c.RecordTrade(f"OLD-{i}", "sharing", "x",
                                            people[(i + 1) % len(people)], "resident", person,
                                            10_000, 0), cause("platform", long_ago))
                             for i, person in enumerate(people)])
        sample = people[:200]
        started = time.perf_counter()
        for person in sample:
            ledger.execute(c.ExpirePoints(person, moment), cause())
        one_by_one_s = time.perf_counter() - started
        started = time.perf_counter()
        outcomes = ledger.execute_many([(c.ExpirePoints(person, moment), cause())
                                        for person in people[200:]])
        bulk_s = time.perf_counter() - started
        refused = [o for o in outcomes if isinstance(o, DomainError)]
        assert not refused, refused[:3]
        return {"residents": len(people), "one_by_one_per_s": len(sample) / one_by_one_s,
                "bulk_per_s": (len(people) - len(sample)) / bulk_s}
    finally:
        ledger.close()


def child(argv: list[str]) -> None:
    """`--child URL SCHEMA RESIDENTS TRADES`: run the trade workload, print JSON."""
    url, schema, residents, trades = argv
    print(json.dumps(trade_workload(url, schema, int(residents), int(trades))))


def run_child(src: Path, url: str, schema: str, residents: int, trades: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(  # noqa: S603  (our own interpreter and arguments)
        [sys.executable, __file__, "--child", url, schema, str(residents), str(trades)],
        check=True, capture_output=True, text=True, env=env)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--residents", type=int, default=2_000)
    parser.add_argument("--trades", type=int, default=4_000)
    parser.add_argument("--baseline-ref", default="785ef01")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from ledger.database import start_embedded  # noqa: PLC0415

    url = args.database_url or start_embedded("var/bench-pgdata")
    conninfo = _conninfo(url)
    print(f"points lifecycle: {args.residents:,} residents, {args.trades:,} trades; "
          f"baseline {args.baseline_ref}; one process per tree, one PostgreSQL")
    with tempfile.TemporaryDirectory(prefix="lots-bench-") as temporary:
        base_src = baseline_src(args.baseline_ref, Path(temporary))
        results: dict[str, dict[str, Any]] = {}
        for name, src in (("baseline", base_src), ("lots", ROOT / "src")):
            schema = fresh_schema(conninfo, name)
            try:
                results[name] = run_child(src, url, schema, args.residents, args.trades)
            finally:
                drop_schema(conninfo, schema)
    for name, result in results.items():
        print(f"  trades, {name:8}: {result['trades'] / result['seconds']:8,.0f} trades/s, "
              f"{result['events'] / result['trades']:.2f} events/trade")
    ratio = (results["lots"]["seconds"] / results["baseline"]["seconds"])
    print(f"  cost per trade with lots / today's trade: {ratio:.2f}x")
    schema = fresh_schema(conninfo, "sweep")
    try:
        sweep = expiry_sweep(url, schema, args.residents)
    finally:
        drop_schema(conninfo, schema)
    print(f"  expiry sweep: {sweep['residents']:,} wallets; one command at a time "
          f"{sweep['one_by_one_per_s']:,.0f} wallets/s, batched {sweep['bulk_per_s']:,.0f} "
          "wallets/s")
    for label, rate in (("one at a time", sweep["one_by_one_per_s"]),
                        ("batched", sweep["bulk_per_s"])):
        print(f"  a month's sweep of {PILOT_RESIDENTS:,} residents ({label}, extrapolated "
              f"linearly from {sweep['residents']:,}): {PILOT_RESIDENTS / rate:,.0f} s")


if __name__ == "__main__":
    main()
