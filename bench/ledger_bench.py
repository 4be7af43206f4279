"""Write-path benchmark: the ledger's commands against raw PostgreSQL baselines, one run.

    .venv/bin/python bench/ledger_bench.py [--database-url URL] [--commands 2000]

Each figure is a ratio to a baseline measured in the same run on the same server:
  1. single commands, one at a time      vs raw single-row INSERT+COMMIT (one connection)
  2. 16 threads sending a command mix    vs raw single-row INSERT+COMMIT from 8 connections
  3. bulk seeding through the commands   vs COPY of the very rows the seeding wrote
and 1 and 2 again with two writer processes on the same schema (each sends half the
commands, with half the threads), in two deployments: both processes taking commands for
every complex ("shared"), and each process taking the commands of its own half of the
complexes ("by complex", the routing docs/ledger.md recommends: buyer, seller, fund and
rent all in that process's complexes). The price of staying right under many processes
(stale reads caught by the save, rejections re-checked, the writers' lock while they
contend) shows as the ratio of the two-process figure to the one-process figure. Raw rows
go into a table of the same shape as the events table. Without --database-url the
embedded PostgreSQL is used (in var/bench-pgdata).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import random
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg

from ledger import commands as c
from ledger.application import Ledger, now
from ledger.database import ConnectionSettings, start_embedded
from ledger.errors import DatabaseUnavailable, DomainError
from ledger.events import Cause
from seeding.seed import seed

RAW_TABLE = (
    "CREATE TABLE {name} (originator_id uuid NOT NULL, originator_version bigint NOT NULL, "
    "topic text, state bytea, notification_id bigserial, "
    "PRIMARY KEY (originator_id, originator_version))"
)


def fresh_schema(conninfo: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    return name


def drop_schema(conninfo: str, name: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def sample_rows(conninfo: str, schema: str, count: int) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(
            f'SELECT originator_id, originator_version, topic, state FROM "{schema}".ledger_events '
            "ORDER BY notification_id LIMIT %s", (count,)).fetchall()


def raw_single_inserts(conninfo: str, schema: str, rows: list[tuple[Any, ...]],
                       connections: int) -> float:
    """Rows per second, each row its own INSERT + COMMIT, spread over `connections`."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(RAW_TABLE.format(name=f'"{schema}".raw_{connections}'))
    per_thread = [rows[i::connections] for i in range(connections)]

    def insert(part: list[tuple[Any, ...]]) -> None:
        with psycopg.connect(conninfo) as conn:
            for _, version, topic, state in part:
                conn.execute(
                    f'INSERT INTO "{schema}".raw_{connections} '
                    "(originator_id, originator_version, topic, state) VALUES (%s, %s, %s, %s)",
                    (uuid.uuid4(), version, topic, state), prepare=True)
                conn.commit()

    started = time.perf_counter()
    threads = [threading.Thread(target=insert, args=(part,)) for part in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(rows) / (time.perf_counter() - started)


def raw_copy(conninfo: str, schema: str, source_schema: str) -> tuple[int, float]:
    """Rows per second for COPY of the rows the seeding wrote, into a same-shaped table."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            f'SELECT originator_id, originator_version, topic, state FROM "{source_schema}".'
            "ledger_events ORDER BY notification_id").fetchall()
        conn.execute(RAW_TABLE.format(name=f'"{schema}".raw_copy'))
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cursor, cursor.copy(
                f'COPY "{schema}".raw_copy (originator_id, originator_version, topic, state) '
                "FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["uuid", "int8", "text", "bytea"])
            for row in rows:
                copy.write_row(row)
        conn.commit()
        return len(rows), len(rows) / (time.perf_counter() - started)


class Scenario:
    """A small populated ledger to send commands to (populated once; another writer
    process reads the same population)."""

    def __init__(self, ledger: Ledger, *, populate: bool = True, prefix: str = "B",
                 share: tuple[int, int] | None = None) -> None:
        """`share` (n, of): keep to the n-th of `of` parts of the complexes (routed by
        complex); None: every complex."""
        self.ledger = ledger
        self.random = random.Random(11 if populate else os.getpid())
        self.prefix = prefix
        if populate:
            seed(ledger, complexes=4, households=400, months=1, progress=False)
        with psycopg.connect(ConnectionSettings.from_url(ledger_url).conninfo(),
                             options=f"-c search_path={ledger.schema}") as conn:
            enrolled = conn.execute(
                "SELECT originator_id, (convert_from(state, 'UTF8')::json"
                "->'household_id'->>'_data_')::uuid, (convert_from(state, 'UTF8')::json"
                "->'complex_id'->>'_data_')::uuid FROM ledger_events "
                "WHERE topic LIKE %s ORDER BY notification_id",
                ("%Resident.Enrolled",)).fetchall()
            self.complexes = [row[0] for row in conn.execute(
                "SELECT originator_id FROM ledger_events WHERE topic LIKE %s "
                "ORDER BY notification_id", ("%Complex.Registered",))]
        if share is not None:
            self.complexes = self.complexes[share[0]::share[1]]
        mine = set(self.complexes)
        self.residents = [(row[0], row[1]) for row in enrolled if row[2] in mine]
        self.count = 0
        self.lock = threading.Lock()
        # One open invoice per household, large enough for every rent payment of the run.
        self.invoices = {}
        items = []
        for household in {household for _, household in self.residents}:
            invoice = f"BI-{household.hex[:12]}"
            self.invoices[household] = invoice
            items.append((c.IssueRentInvoice(household, invoice, "2026-12", 100_000_000,
                                             now() + timedelta(days=9)),
                          self.cause(uuid.uuid4(), "billing")))
        if populate:
            ledger.execute_many(items)

    def _next(self) -> int:
        with self.lock:
            self.count += 1
            return self.count

    def cause(self, actor: uuid.UUID, role: str) -> Cause:
        return Cause(actor, role, f"bench-{uuid.uuid4().hex}", now())

    def trade(self) -> tuple[c.Command, Cause]:
        buyer, _ = self.random.choice(self.residents)
        seller, _ = self.random.choice(self.residents)
        while seller == buyer:
            seller, _ = self.random.choice(self.residents)
        return (c.RecordTrade(f"{self.prefix}-{self._next()}", "sharing", "childcare", seller,
                              "resident", buyer, 10_000, 0),
                self.cause(uuid.uuid4(), "platform"))

    def mix(self) -> tuple[c.Command, Cause]:
        """Mostly trades, some rent holds and fund spends, as at a group-buy deadline."""
        roll = self.random.random()
        if roll < 0.8:
            return self.trade()
        if roll < 0.9:
            complex_id = self.random.choice(self.complexes)
            return (c.SpendFund(complex_id, f"{self.prefix}S-{self._next()}", "event", 1, "bench"),
                    self.cause(uuid.uuid4(), "manager"))
        resident, household = self.random.choice(self.residents)
        return (c.PayRent(f"{self.prefix}P-{self._next()}", household,
                          self.invoices[household], "2026-12", 10, resident),
                self.cause(resident, "resident"))


ledger_url = ""


def commands_per_second(count: int, make: Callable[[], tuple[c.Command, Cause]],
                        ledger: Ledger, threads: int) -> tuple[float, float]:
    """Accepted commands per second, and events per second, with `threads` senders."""
    start_position = ledger.position()
    per_thread = count // threads
    accepted = [0] * threads
    unavailable = [0] * threads
    refused: dict[str, int] = {}

    def send(index: int) -> None:
        for _ in range(per_thread):
            command, cause = make()
            try:
                ledger.execute(command, cause)
                accepted[index] += 1
            except DomainError as error:
                refused[error.code] = refused.get(error.code, 0) + 1
            except DatabaseUnavailable:  # a client would retry; counted, not accepted
                unavailable[index] += 1

    started = time.perf_counter()
    workers = [threading.Thread(target=send, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    if sum(unavailable):
        print(f"   ({sum(unavailable)} of {per_thread * threads} answered unavailable)")
    if refused:  # refused commands are not counted as done
        print(f"   (refused, not counted: {refused})")
    return sum(accepted) / elapsed, (ledger.position() - start_position) / elapsed


def _writer_process(job: tuple[str, str, str, int, int, int, bool]
                    ) -> tuple[int, int, float, float]:
    """One of two writer processes: its own Ledger on the shared schema (with `by_complex`,
    only the commands of its half of the complexes); returns accepted commands, events,
    and its start and end times (wall clock)."""
    url, schema, kind, count, threads, number, by_complex = job
    global ledger_url  # noqa: PLW0603
    ledger_url = url
    ledger = Ledger.connect(url, schema)
    try:
        scenario = Scenario(ledger, populate=False, prefix=f"W{number}-{uuid.uuid4().hex[:6]}",
                            share=(number, 2) if by_complex else None)
        make = scenario.trade if kind == "trade" else scenario.mix
        for resident, _ in scenario.residents:  # a warm cache, as in a process that has
            ledger.load(resident)                # been serving for a while
        for complex_id in scenario.complexes:
            ledger.load(complex_id)
        for _ in range(50):
            command, cause = make()
            with contextlib.suppress(DomainError, DatabaseUnavailable):
                ledger.execute(command, cause)
        start_position = ledger.position()
        started = time.time()
        rate, _ = commands_per_second(count, make, ledger, threads)
        ended = time.time()
        return round(rate * (ended - started)), ledger.position() - start_position, started, ended
    finally:
        ledger.close()


def two_writers(schema: str, kind: str, count: int, threads: int,
                by_complex: bool) -> tuple[float, float]:
    """Commands/s and events/s of two writer processes sharing the work, over the span
    from the first start to the last end."""
    context = multiprocessing.get_context("spawn")
    jobs = [(ledger_url, schema, kind, count // 2, max(1, threads // 2), n, by_complex)
            for n in range(2)]
    with context.Pool(2) as pool:
        results = pool.map(_writer_process, jobs)
    span = max(r[3] for r in results) - min(r[2] for r in results)
    return sum(r[0] for r in results) / span, sum(r[1] for r in results) / span


def main() -> None:
    global ledger_url  # noqa: PLW0603
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--commands", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ledger_url = args.database_url or start_embedded("var/bench-pgdata")
    conninfo = ConnectionSettings.from_url(ledger_url).conninfo()

    schema = fresh_schema(conninfo, "bench_ledger")
    raw_schema = fresh_schema(conninfo, "bench_raw")
    ledger = Ledger.connect(ledger_url, schema)
    try:
        scenario = Scenario(ledger)
        rows = sample_rows(conninfo, schema, args.commands)
        single, single_raw, mixed, mixed_raw = [], [], [], []
        single_two, mixed_two, single_routed, mixed_routed = [], [], [], []
        for _ in range(args.repeat):
            single.append(commands_per_second(args.commands, scenario.trade, ledger, 1))
            single_raw.append(raw_single_inserts(conninfo, raw_schema, rows, 1))
            mixed.append(commands_per_second(args.commands * 2, scenario.mix, ledger, 16))
            mixed_raw.append(raw_single_inserts(conninfo, raw_schema, rows, 8))
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f'DROP TABLE "{raw_schema}".raw_1, "{raw_schema}".raw_8')
        # Two writer processes last: afterwards this process's cache is stale, and each
        # aggregate it touches again costs one conflict and a fresh read.
        for _ in range(args.repeat):
            single_routed.append(two_writers(schema, "trade", args.commands, 2, True))
            mixed_routed.append(two_writers(schema, "mix", args.commands * 2, 16, True))
            single_two.append(two_writers(schema, "trade", args.commands, 2, False))
            mixed_two.append(two_writers(schema, "mix", args.commands * 2, 16, False))
    finally:
        ledger.close()

    bulk_schema = fresh_schema(conninfo, "bench_bulk")
    bulk_ledger = Ledger.connect(ledger_url, bulk_schema)
    started = time.perf_counter()
    summary = seed(bulk_ledger, complexes=5, households=3_000, months=1, progress=False)
    bulk_elapsed = time.perf_counter() - started
    bulk_ledger.close()
    bulk_events = summary.events_after - summary.events_before
    copied, copy_rate = raw_copy(conninfo, raw_schema, bulk_schema)
    assert copied == bulk_events

    def median(pairs: list[tuple[float, float]], index: int) -> float:
        return statistics.median(pair[index] for pair in pairs)

    single_cmd, single_events = median(single, 0), median(single, 1)
    mixed_cmd, mixed_events = median(mixed, 0), median(mixed, 1)
    raw1, raw8 = statistics.median(single_raw), statistics.median(mixed_raw)
    bulk_rate = bulk_events / bulk_elapsed
    print(f"server: {ledger_url.split('@')[-1]}  (medians of {args.repeat} runs)")
    print(f"1. single trades, one at a time: {single_cmd:,.0f} commands/s "
          f"({single_events:,.0f} events/s); raw INSERT+COMMIT {raw1:,.0f} rows/s; "
          f"ratio {single_cmd / raw1:.2f}x (events {single_events / raw1:.2f}x)")
    print(f"2. 16-thread command mix: {mixed_cmd:,.0f} commands/s ({mixed_events:,.0f} "
          f"events/s); raw 8 connections {raw8:,.0f} rows/s; ratio {mixed_cmd / raw8:.2f}x "
          f"(events {mixed_events / raw8:.2f}x)")
    for label, single_pairs, mixed_pairs in (
            ("b", single_routed, mixed_routed), ("c", single_two, mixed_two)):
        how = "by complex" if label == "b" else "shared complexes"
        single_two_cmd, mixed_two_cmd = median(single_pairs, 0), median(mixed_pairs, 0)
        print(f"1{label}. two writer processes, {how}, one thread each: {single_two_cmd:,.0f} "
              f"commands/s; ratio to raw {single_two_cmd / raw1:.2f}x; to one process "
              f"{single_two_cmd / single_cmd:.2f}x")
        print(f"2{label}. two writer processes, {how}, 8 threads each: {mixed_two_cmd:,.0f} "
              f"commands/s; ratio to raw 8 connections {mixed_two_cmd / raw8:.2f}x; to one "
              f"process {mixed_two_cmd / mixed_cmd:.2f}x")
    print(f"3. bulk seeding: {bulk_events:,} events in {bulk_elapsed:.1f} s = "
          f"{bulk_rate:,.0f} events/s ({summary.commands / bulk_elapsed:,.0f} commands/s); "
          f"COPY of the same rows {copy_rate:,.0f} rows/s; ratio {bulk_rate / copy_rate:.2f}x")
    for name in (schema, raw_schema, bulk_schema):
        drop_schema(conninfo, name)


if __name__ == "__main__":
    main()
