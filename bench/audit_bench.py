"""How fast `ledger audit verify` runs, against a plain SELECT scan of the same events.

Run: `.venv/bin/python bench/audit_bench.py --schema S [--seed-households 3000 --months 2]`.
Uses LEDGER_DATABASE_URL (else the embedded PostgreSQL). Prints figures; asserts nothing.

1. Prepare (not timed in the ratio): seed the schema through the ledger's commands
   if it has no events (`--seed-households`), build the projections
   (`projections.runner.rebuild`) and chain the log (`ChainFollower.catch_up`).
2. Scan: one server-side cursor reads every column verify reads
   (`notification_id, originator_id, originator_version, topic, state`) in
   20,000-row fetches, touching nothing: the floor any verifier pays.
3. Verify: `verify_ledger` end to end (chain pass, then the replay pass with every
   projection table compared, conservation and accruals), in the same run.
   The ratio is verify events/s over scan events/s; each pass is also shown.

`--verify-only` runs step 3 alone in this process and prints its time and peak
memory (resource.getrusage) as JSON: the pilot-year figure in docs/audit.md.

`--variants before=/work/main/src,default,4,16 --rounds 2` (with `--skip-prepare`)
scans once and then runs `--verify-only` in a fresh process per variant and round,
alternating: `before=SRC` with PYTHONPATH=SRC (the code of another checkout), `default`
with the default memory budget, a number with that many hash slices. Each line gives
the time, the ratio to the scan, and the peak memory of the main process and of the
largest worker.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from audit.chain import ChainFollower
from audit.replay import Replay, replay_slice
from audit.verification import FOLDED, verify_ledger
from audit.verify import verify_chain
from ledger.database import ConnectionSettings, database_url

FETCH_ROWS = 20_000


def connect(url: str, schema: str) -> psycopg.Connection[Any]:
    return psycopg.connect(ConnectionSettings.from_url(url).conninfo(),
                           options=f"-c search_path={schema}")


def event_count(url: str, schema: str) -> int:
    with connect(url, schema) as conn:
        exists = conn.execute("SELECT to_regclass('ledger_events') IS NOT NULL").fetchone()
        if not (exists and exists[0]):
            return 0
        row = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
        return int(row[0]) if row else 0


def prepare(url: str, schema: str, households: int, months: int, key_dir: str) -> None:
    if event_count(url, schema) == 0:
        with psycopg.connect(ConnectionSettings.from_url(url).conninfo(),
                             autocommit=True) as conn:
            conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(schema)))
        started = time.perf_counter()
        subprocess.run([  # noqa: S603  (our own interpreter and arguments)
                       sys.executable, "-m", "cli.main", "--database-url", url, "--schema",
                        schema, "--quiet", "seed", "--complexes", str(max(1, households // 900)),
                        "--households", str(households), "--months", str(months)], check=True)
        print(f"seeded {event_count(url, schema):,} events in "
              f"{time.perf_counter() - started:.1f} s")
    from projections.runner import rebuild  # noqa: PLC0415

    started = time.perf_counter()
    rebuild(url, schema, progress=False)
    print(f"projections rebuilt in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    chained = ChainFollower(url, schema, key_dir=key_dir).catch_up()
    print(f"chained {chained:,} events in {time.perf_counter() - started:.1f} s")


def scan(url: str, schema: str) -> tuple[int, float]:
    started = time.perf_counter()
    rows = 0
    with connect(url, schema) as conn, conn.transaction(), conn.cursor(
            name="bench_scan", binary=True) as cursor:
        cursor.execute("SELECT notification_id, originator_id, originator_version, topic, state"
                       " FROM ledger_events ORDER BY notification_id")
        while batch := cursor.fetchmany(FETCH_ROWS):
            rows += len(batch)
    return rows, time.perf_counter() - started


def verify_only(url: str, schema: str, key_dir: str, *, parallel: bool = True,
                slices: int | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    options = {} if slices is None else {"slices": slices}
    result = verify_ledger(url, schema, key_dir=key_dir, store=False, parallel=parallel,
                           **options)
    seconds = max(time.perf_counter() - started, 0.1)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # The chain pass and the projections' replay run in forked workers: their peak too.
    children_peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"ok": result.ok, "problem": result.problem, "seconds": round(seconds, 2),
            "events": result.counts["events"], "rows_compared": result.counts["rows_compared"],
            "trades_recomputed": result.counts["trades_recomputed"],
            "events_per_second": round(result.counts["events"] / seconds),
            "log_head": result.counts["head"], "parallel": parallel,
            "peak_memory_mib": round(peak_kib / 1024),
            "peak_memory_largest_worker_mib": round(children_peak_kib / 1024)}


def compare_variants(url: str, args: argparse.Namespace) -> int:
    """Each variant in a process of its own (a clean peak memory), alternating by round."""
    scan(url, args.schema)
    rows, scan_seconds = scan(url, args.schema)
    scan_rate = rows / scan_seconds
    print(f"events: {rows:,}; plain SELECT scan {scan_seconds:.2f} s, {scan_rate:,.0f} events/s;"
          f" load average {os.getloadavg()[0]:.1f}", flush=True)
    for round_number in range(args.rounds):
        for variant in args.variants.split(","):
            environment = dict(os.environ)
            command = [sys.executable, __file__, "--verify-only", "--database-url", url,
                       "--schema", args.schema, "--key-dir", args.key_dir]
            if variant.startswith("before="):
                environment["PYTHONPATH"] = variant.removeprefix("before=")
            elif variant != "default":
                command += ["--slices", variant]
            output = subprocess.run(command, env=environment, check=True,  # noqa: S603
                                    capture_output=True, text=True).stdout
            figures = json.loads(output.strip().splitlines()[-1])
            print(f"round {round_number + 1} {variant:>24}: {figures['seconds']:7.2f} s, ratio "
                  f"{rows / figures['seconds'] / scan_rate:.3f}, ok={figures['ok']}, peak "
                  f"{figures['peak_memory_mib']:,} MiB main / "
                  f"{figures['peak_memory_largest_worker_mib']:,} MiB largest worker; "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("LEDGER_DATABASE_URL", ""))
    parser.add_argument("--schema", default="audit_bench")
    parser.add_argument("--seed-households", type=int, default=3_000)
    parser.add_argument("--months", type=int, default=2)
    parser.add_argument("--key-dir", default="var/audit-keys")
    parser.add_argument("--verify-only", action="store_true")
    parser.add_argument("--skip-prepare", action="store_true")
    parser.add_argument("--end-to-end-only", action="store_true",
                        help="scan and verify only (no separate passes, no one-process run)")
    parser.add_argument("--slices", type=int, help="with --verify-only: this many slices")
    parser.add_argument("--variants", help="before=SRC, default or a number of slices, "
                                           "comma-separated (see above)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--replay-slice", metavar="I/K",
                        help="run slice I of K of the replay alone in this process and print "
                             "its time and peak memory (docs/scale.md, Memory)")
    args = parser.parse_args()
    url = args.database_url or database_url()

    if args.verify_only:
        print(json.dumps(verify_only(url, args.schema, args.key_dir, slices=args.slices)))
        return 0
    if args.variants:
        return compare_variants(url, args)
    if args.replay_slice:
        index, slices = map(int, args.replay_slice.split("/"))
        started = time.perf_counter()
        replay_slice(url, args.schema, index, slices, FOLDED)
        print(f"{args.schema} slice {index} of {slices}: {time.perf_counter() - started:.1f} s,"
              f" peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
        return 0
    if not args.skip_prepare:
        prepare(url, args.schema, args.seed_households, args.months, args.key_dir)

    scan(url, args.schema)  # warm the cache: both passes then read from memory
    rows, scan_seconds = scan(url, args.schema)
    scan_rate = rows / scan_seconds
    print(f"events: {rows:,}")
    print(f"plain SELECT scan:   {scan_seconds:6.2f} s  {scan_rate:10,.0f} events/s")
    if args.end_to_end_only:
        whole = verify_only(url, args.schema, args.key_dir)
        print(f"verify end to end:   {whole['seconds']:6.2f} s  {rows / whole['seconds']:10,.0f} "
              f"events/s  (ratio {rows / whole['seconds'] / scan_rate:.2f}; ok={whole['ok']})")
        print(f"peak memory: {whole['peak_memory_mib']:,} MiB (largest worker "
              f"{whole['peak_memory_largest_worker_mib']:,} MiB)")
        return 0
    started = time.perf_counter()
    chain = verify_chain(url, args.schema, key_dir=args.key_dir)
    chain_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with connect(url, args.schema) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        replay = Replay(conn).run()
        conn.rollback()
    replay_seconds = time.perf_counter() - started
    serial = verify_only(url, args.schema, args.key_dir, parallel=False)
    whole = verify_only(url, args.schema, args.key_dir)
    print(f"chain pass:          {chain_seconds:6.2f} s  {rows / chain_seconds:10,.0f} events/s"
          f"  (ratio {rows / chain_seconds / scan_rate:.2f}; ok={chain.ok})")
    print(f"replay pass:         {replay_seconds:6.2f} s  {rows / replay_seconds:10,.0f} events/s"
          f"  (ratio {rows / replay_seconds / scan_rate:.2f}; findings={len(replay.findings)})")
    print(f"verify, one process: {serial['seconds']:6.2f} s  {rows / serial['seconds']:10,.0f} "
          f"events/s  (ratio {rows / serial['seconds'] / scan_rate:.2f}; ok={serial['ok']})")
    print(f"verify end to end:   {whole['seconds']:6.2f} s  {rows / whole['seconds']:10,.0f} "
          f"events/s  (ratio {rows / whole['seconds'] / scan_rate:.2f}; ok={whole['ok']})")
    print(f"peak memory: {whole['peak_memory_mib']:,} MiB (largest worker "
          f"{whole['peak_memory_largest_worker_mib']:,} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
