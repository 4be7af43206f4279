"""When the data outgrows the aggregate cache: enrolling residents of households that are
not cached, against the same commands with every household cached, in one run.

    .venv/bin/python bench/cache_bench.py [--database-url URL] [--households 20000]

Households are registered first (through the commands, several complexes). Then residents
are enrolled, one per household, twice over, by two ledgers on the same schema:
  cached    a ledger whose cache holds every household (warmed by reading each once)
  uncached  a ledger whose cache holds `--cache-size` aggregates (default: a tenth of the
            households), so nearly every enrolment loads its household from PostgreSQL
Both run the commands through `execute_many` in chunks, the way `ledger seed` and bulk
loads do. Printed: commands/s of each and the ratio uncached / cached.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import datetime

import psycopg

from ledger import commands as c
from ledger.application import Ledger
from ledger.database import ConnectionSettings, start_embedded
from ledger.events import KST, Cause
from ledger.household import household_id_for

OPERATOR = uuid.UUID(int=1)
CHUNK_COMMANDS = 500
AT = datetime(2026, 1, 1, 9, tzinfo=KST)


def _cause(request_id: str) -> Cause:
    return Cause(OPERATOR, "operator", request_id, AT)


def _run(ledger: Ledger, items: list[tuple[c.Command, Cause]]) -> float:
    started = time.perf_counter()
    for start in range(0, len(items), CHUNK_COMMANDS):
        results = ledger.execute_many(items[start:start + CHUNK_COMMANDS])
        refused = [r for r in results if isinstance(r, Exception)]
        assert not refused, refused[:3]
    return len(items) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--households", type=int, default=20_000)
    parser.add_argument("--complexes", type=int, default=20)
    parser.add_argument("--cache-size", type=int, default=0,
                        help="the uncached ledger's cache (default: a tenth of the households)")
    args = parser.parse_args()
    url = args.database_url or start_embedded("var/bench-pgdata")
    schema = f"cache_{uuid.uuid4().hex[:8]}"
    conninfo = ConnectionSettings.from_url(url).conninfo()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    tag = uuid.uuid4().hex[:6]
    try:
        writer = Ledger.connect(url, schema, AGGREGATE_CACHE_MAXSIZE=str(args.households * 4))
        complexes = [uuid.UUID(writer.execute(c.RegisterComplex(f"CB-{n}", f"complex {n}", "X"),
                                              _cause(f"{tag}-c{n}"))["complex_id"])
                     for n in range(args.complexes)]
        registrations: list[tuple[c.RegisterHousehold, Cause]] = [
            (c.RegisterHousehold(complexes[n % len(complexes)], f"u-{n}"), _cause(f"{tag}-h{n}"))
            for n in range(args.households)]
        rate = _run(writer, list(registrations))
        print(f"registered {args.households:,} households: {rate:,.0f} commands/s")
        households = [household_id_for(command.complex_id, command.unit)
                      for command, _ in registrations]
        half = len(households) // 2

        def enrolments(part: list[uuid.UUID], label: str) -> list[tuple[c.Command, Cause]]:
            return [(c.EnrolResident(household_id, "consent-bench"), _cause(f"{tag}-{label}{i}"))
                    for i, household_id in enumerate(part)]

        # Same commands on the same data: each ledger enrols one half of the households.
        cached_rate = _run(writer, enrolments(households[:half], "a"))
        cache_size = args.cache_size or max(1, args.households // 10)
        small = Ledger.connect(url, schema, AGGREGATE_CACHE_MAXSIZE=str(cache_size))
        uncached_rate = _run(small, enrolments(households[half:], "b"))
        print(f"enrolment, every household cached:        {cached_rate:,.0f} commands/s")
        print(f"enrolment, cache of {cache_size:,} aggregates:  {uncached_rate:,.0f} commands/s")
        print(f"ratio uncached / cached: {uncached_rate / cached_rate:.2f}x")
        small.close()
        writer.close()
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
