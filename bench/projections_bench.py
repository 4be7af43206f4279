"""Read-side benchmark: projection rebuild against a plain SELECT of the same events, one run.

    .venv/bin/python bench/projections_bench.py --database-url URL \
        [--complexes 8 --households 12000 --months 1] [--repeat 5] [--schema EXISTING]

Seeds a fresh schema through `seeding.seed.seed` (about 310k events with the defaults;
`--schema` reuses an already seeded one and leaves it in place), then alternates, `--repeat`
times, between
  1. the baseline: a plain server-side-cursor `SELECT notification_id, originator_id,
     originator_version, topic, state FROM ledger_events ORDER BY notification_id` of every
     event, fetched in batches until exhausted, in text and in binary format (the faster
     of the two is the baseline), and
  2. `projections.rebuild` of all four projections from position 0 (shadow tables, swap).
Both are reported in events/s over *all* events of the log (a rebuild skips the events no
projection reads; that is part of what it is measured on). The ratio printed is the median
rebuild rate over the median baseline rate. After the last rebuild the tables are checked
against `fold_all`. Without --database-url the embedded PostgreSQL is used (in
var/bench-pgdata). A seeded schema is dropped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid

import psycopg

import projections as p
from ledger.application import Ledger
from ledger.database import ConnectionSettings, start_embedded
from seeding.seed import seed

BASELINE_SELECT = (
    "SELECT notification_id, originator_id, originator_version, topic, state"
    " FROM ledger_events ORDER BY notification_id")
BASELINE_BATCH_ROWS = 50_000


def baseline(url: str, schema: str, *, binary: bool) -> tuple[int, float]:
    """Rows fetched and seconds taken by a plain server-side cursor over every event."""
    with p.connect(url, schema) as conn:
        started = time.perf_counter()
        count = 0
        with conn.transaction(), conn.cursor(name="baseline", binary=binary) as cursor:
            cursor.itersize = BASELINE_BATCH_ROWS
            cursor.execute(BASELINE_SELECT)
            while rows := cursor.fetchmany(BASELINE_BATCH_ROWS):
                count += len(rows)
        return count, time.perf_counter() - started


def timed_rebuild(url: str, schema: str) -> float:
    started = time.perf_counter()
    p.rebuild(url, schema, progress=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--schema", default="", help="reuse this seeded schema")
    parser.add_argument("--complexes", type=int, default=8)
    parser.add_argument("--households", type=int, default=12_000)
    parser.add_argument("--months", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-check", action="store_true", help="skip the fold_all check")
    args = parser.parse_args()
    url = args.database_url or start_embedded("var/bench-pgdata")
    conninfo = ConnectionSettings.from_url(url).conninfo()
    schema = args.schema or f"bench_projections_{uuid.uuid4().hex[:8]}"
    try:
        if not args.schema:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
            ledger = Ledger.connect(url, schema)
            started = time.perf_counter()
            summary = seed(ledger, complexes=args.complexes, households=args.households,
                           months=args.months, progress=False)
            ledger.close()
            print(f"seeded {summary.events_after:,} events in "
                  f"{time.perf_counter() - started:.1f} s into {schema}")
        with p.connect(url, schema) as conn:
            row = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
        events = row[0] if row else 0
        print(f"{events:,} events; {args.repeat} repeats, alternating baseline and rebuild")
        p.rebuild(url, schema, progress=False)  # warm the cache and create the tables
        text_rates, binary_rates, rebuild_rates = [], [], []
        for repeat in range(args.repeat):
            count, seconds = baseline(url, schema, binary=False)
            assert count == events
            text_rates.append(count / seconds)
            count, seconds = baseline(url, schema, binary=True)
            binary_rates.append(count / seconds)
            seconds = timed_rebuild(url, schema)
            rebuild_rates.append(events / seconds)
            print(f"  run {repeat + 1}: SELECT text {text_rates[-1]:>9,.0f} ev/s, "
                  f"binary {binary_rates[-1]:>9,.0f} ev/s; rebuild {rebuild_rates[-1]:>9,.0f} "
                  f"ev/s ({seconds:.2f} s)", flush=True)
        base = max(statistics.median(text_rates), statistics.median(binary_rates))
        rebuilt = statistics.median(rebuild_rates)
        print(f"median SELECT (text)   {statistics.median(text_rates):>9,.0f} events/s")
        print(f"median SELECT (binary) {statistics.median(binary_rates):>9,.0f} events/s")
        print(f"median rebuild         {rebuilt:>9,.0f} events/s")
        print(f"ratio rebuild / faster SELECT = {rebuilt / base:.2f}  (goal >= 0.5)")
        if not args.no_check:
            with p.connect(url, schema) as conn:
                equal = p.read_all(conn) == p.fold_all(url, schema)
            print(f"rebuilt tables equal fold_all: {equal}")
            if not equal:
                sys.exit(1)
    finally:
        if not args.schema:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
