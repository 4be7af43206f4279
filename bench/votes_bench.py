"""Resident votes benchmark: a whole complex voting on one proposal at once, one run.

    .venv/bin/python bench/votes_bench.py --database-url URL [--households 1000]

Every household of one complex casts its ballot on one proposal, from 16 threads: every
ballot changes that one Proposal aggregate (it holds the households that voted), so
the ballots queue on it. The baseline, measured in the same run on the same server, is
the same number of trades between residents of that complex from the same threads:
every trade changes the complex's fund, so trades queue on one aggregate too. Both are
run again with two ledgers on the schema (as two writer processes would, 8 threads each),
where a ballot saved against a stale proposal conflicts and runs again. Figures are
commands per second and ratios to the baseline of the same shape.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import psycopg

from ledger import commands as c
from ledger.application import Ledger, now
from ledger.database import ConnectionSettings
from ledger.errors import DatabaseUnavailable
from ledger.events import Cause

THREADS = 16
RETRIES_MAX = 50
RATES = [{"market": "sharing", "seller_kind": "resident", "personal_bps": 300,
          "common_bps": 100}]


def _cause(actor: uuid.UUID, role: str) -> Cause:
    return Cause(actor, role, uuid.uuid4().hex, now())


def _timed(ledgers: list[Ledger], count: int,
           command_of: Callable[[int], tuple[c.Command, Cause]]) -> tuple[float, int]:
    """Commands per second, `count` commands from THREADS threads spread over the ledgers,
    and how many times a command was sent again: as a client does when it is answered
    unavailable (the engine gave up after concurrent changes), with the same request id."""
    barrier = threading.Barrier(THREADS + 1)
    failures: list[BaseException] = []
    retries = [0] * THREADS

    def worker(index: int) -> None:
        ledger = ledgers[index % len(ledgers)]
        barrier.wait()
        for number in range(index, count, THREADS):
            command, cause = command_of(number)
            for _ in range(RETRIES_MAX):
                try:
                    ledger.execute(command, cause)
                    break
                except DatabaseUnavailable:
                    retries[index] += 1
                except BaseException as error:  # reported after the run
                    failures.append(error)
                    break
            else:
                failures.append(RuntimeError(f"{command} still unavailable"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    assert not failures, failures[:3]
    return count / seconds, sum(retries)


def run(url: str, households: int) -> None:
    conninfo = ConnectionSettings.from_url(url).conninfo()
    schema = f"bench_votes_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    first = Ledger.connect(url, schema)
    second = Ledger.connect(url, schema)
    try:
        operator = uuid.uuid4()
        first.execute(c.SetAccrualPolicy.of(RATES), _cause(operator, "operator"))
        complex_id = uuid.UUID(first.execute(c.RegisterComplex("BV-1", "bench", "Hwaseong"),
                                             _cause(operator, "operator"))["complex_id"])
        homes = [(c.RegisterHousehold(complex_id, f"u-{n}"), _cause(operator, "operator"))
                 for n in range(households)]
        home_ids = [uuid.UUID(o["household_id"]) for o in first.execute_many(homes)
                    if not isinstance(o, Exception)]
        enrol = [(c.EnrolResident(home, "consent"), _cause(operator, "coordinator"))
                 for home in home_ids]
        residents = [uuid.UUID(o["resident_id"]) for o in first.execute_many(enrol)
                     if not isinstance(o, Exception)]
        manager = uuid.uuid4()
        results: dict[str, tuple[float, int]] = {}
        for label, ledgers in (("one ledger", [first]), ("two ledgers", [first, second])):
            tag = uuid.uuid4().hex[:6]

            def trade(number: int, tag: str = tag) -> tuple[c.Command, Cause]:
                buyer = residents[number]
                seller = residents[(number + 1) % len(residents)]
                return (c.RecordTrade(f"T-{tag}-{number}", "sharing", "childcare", seller,
                                      "resident", buyer, 10_000, 0),
                        _cause(uuid.uuid4(), "platform"))

            proposal_id = f"P-{tag}"
            first.execute(c.OpenProposal(complex_id, proposal_id, "event", "Fair", 100_000,
                                         now() + timedelta(hours=2)),
                          _cause(manager, "manager"))

            def ballot(number: int, proposal_id: str = proposal_id
                       ) -> tuple[c.Command, Cause]:
                resident = residents[number]
                return (c.CastBallot(proposal_id, resident, "yes" if number % 3 else "no"),
                        _cause(resident, "resident"))

            for ledger in ledgers:  # both caches hold the complex and the proposal
                ledger.load(complex_id)
            results[f"trades, {label}"] = _timed(ledgers, len(residents), trade)
            results[f"ballots, {label}"] = _timed(ledgers, len(residents), ballot)
        print(f"{len(residents)} households of one complex, {THREADS} threads")
        for label in ("one ledger", "two ledgers"):
            trades, trade_retries = results[f"trades, {label}"]
            ballots, ballot_retries = results[f"ballots, {label}"]
            print(f"{label}: trades {trades:,.0f}/s (baseline, {trade_retries} sent again), "
                  f"ballots {ballots:,.0f}/s ({ballot_retries} sent again), "
                  f"ratio {ballots / trades:.2f}")
    finally:
        first.close()
        second.close()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--households", type=int, default=1_000)
    args = parser.parse_args()
    run(args.database_url, args.households)


if __name__ == "__main__":
    main()
