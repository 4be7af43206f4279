"""`ledger import` against COPY of the same rows, in one run.

    .venv/bin/python bench/import_bench.py [--database-url URL] [--households 5000]

Writes a JSON Lines file (the accrual policy, complexes, households, one resident each,
then trades within each complex, a tenth of them paying with points), imports it with
1 and with 2 worker processes into fresh schemas, then COPYs the very rows the import
wrote (events and request records) into same-shaped tables. Printed: lines/s and rows/s
of each import, COPY's rows/s, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from ledger.complex import complex_id_for
from ledger.database import ConnectionSettings, start_embedded
from ledger.household import household_id_for
from seeding.importing import import_file

AT = "2026-03-02T10:00:00+09:00"
PLATFORM = "00000000-0000-4000-8000-00000000000b"


def write_file(path: Path, complexes: int, households: int, trades_per_household: int,
               seed: int = 3) -> int:
    pick = random.Random(seed)
    count = 0
    with path.open("w", encoding="utf-8") as out:
        def line(request_id: str, command: str, body: dict[str, object],
                 **extra: object) -> None:
            nonlocal count
            count += 1
            out.write(json.dumps({"request_id": request_id, "command": command,
                                  "occurred_at": AT, "body": body, **extra}) + "\n")

        line("policy", "set_accrual_policy", {"rates": [
            {"market": "sharing", "seller_kind": "resident", "personal_bps": 300,
             "common_bps": 100}]})
        residents: list[list[str]] = []
        for number in range(complexes):
            code = f"IB-{number}"
            line(f"complex-{number}", "register_complex",
                 {"code": code, "complex_name": code, "region": "Hwaseong"})
            residents.append([])
        for index in range(households):
            number = index % complexes
            complex_id = complex_id_for(f"IB-{number}")
            unit = f"u-{index}"
            line(f"household-{index}", "register_household",
                 {"complex_id": str(complex_id), "unit": unit})
            resident = str(uuid.UUID(int=pick.getrandbits(128), version=4))
            residents[number].append(resident)
            line(f"enrol-{index}", "enrol_resident",
                 {"household_id": str(household_id_for(complex_id, unit)),
                  "consent_ref": "paper", "resident_id": resident},
                 actor_id=resident, role="resident")
        for index in range(households * trades_per_household):
            buyer, seller = pick.sample(pick.choice(residents), 2)
            amount = pick.randrange(1_000, 50_000)
            line(f"trade-{index}", "record_trade",
                 {"trade_id": f"T-{index}", "market": "sharing", "category": "childcare",
                  "seller_id": seller, "seller_kind": "resident", "buyer_id": buyer,
                  "amount_won": amount,
                  "points_used_won": amount // 100 if index % 10 == 0 else 0},
                 actor_id=PLATFORM, role="platform")
    return count


def copy_rate(conninfo: str, source: str) -> tuple[int, float]:
    """COPY of the rows `source` holds (events and request records) into fresh tables."""
    with psycopg.connect(conninfo) as conn:
        events = conn.execute(f'SELECT originator_id, originator_version, topic, state FROM '
                              f'"{source}".ledger_events ORDER BY notification_id').fetchall()
        requests = conn.execute(f'SELECT actor_id, request_id, command, fingerprint, '
                                f'outcome::text, position FROM "{source}".ledger_requests'
                                ).fetchall()
        conn.execute(f'CREATE TABLE "{source}".raw_events (originator_id uuid, '
                     "originator_version bigint, topic text, state bytea, notification_id "
                     "bigserial, PRIMARY KEY (originator_id, originator_version))")
        conn.execute(f'CREATE TABLE "{source}".raw_requests (actor_id uuid, request_id text, '
                     "command text, fingerprint text, outcome json, position bigint, "
                     "PRIMARY KEY (actor_id, request_id))")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cursor:
            with cursor.copy(f'COPY "{source}".raw_events (originator_id, originator_version, '
                             "topic, state) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["uuid", "int8", "text", "bytea"])
                for row in events:
                    copy.write_row(row)
            with cursor.copy(f'COPY "{source}".raw_requests FROM STDIN') as copy:
                for row in requests:
                    copy.write_row(row)
        conn.commit()
        rows = len(events) + len(requests)
        return rows, rows / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--households", type=int, default=5_000)
    parser.add_argument("--complexes", type=int, default=10)
    parser.add_argument("--trades-per-household", type=int, default=4)
    args = parser.parse_args()
    url = args.database_url or start_embedded("var/bench-pgdata")
    conninfo = ConnectionSettings.from_url(url).conninfo()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "commands.jsonl"
        lines = write_file(path, args.complexes, args.households, args.trades_per_household)
        print(f"file: {lines:,} lines")
        schemas = []
        rates: dict[int, tuple[float, float]] = {}
        try:
            for workers in (1, 2):
                schema = f"ib_{uuid.uuid4().hex[:8]}"
                schemas.append(schema)
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    conn.execute(f'CREATE SCHEMA "{schema}"')
                report = import_file(url, schema, path, workers=workers, show_progress=False)
                with psycopg.connect(conninfo) as conn:
                    row = conn.execute(f'SELECT (SELECT count(*) FROM "{schema}".ledger_events)'
                                       f' + (SELECT count(*) FROM "{schema}".ledger_requests)'
                                       ).fetchone()
                rows = int(row[0]) if row else 0
                rates[workers] = (lines / report.seconds, rows / report.seconds)
                print(f"import, {workers} worker(s): {report.summary()}")
                print(f"  {rates[workers][0]:,.0f} lines/s, {rates[workers][1]:,.0f} rows/s "
                      f"({rows:,} rows: events and request records)")
            copied, copy_rows_per_second = copy_rate(conninfo, schemas[-1])
            print(f"COPY of the same {copied:,} rows: {copy_rows_per_second:,.0f} rows/s")
            for workers, (_, rows_per_second) in rates.items():
                print(f"ratio import ({workers} worker(s)) / COPY: "
                      f"{rows_per_second / copy_rows_per_second:.2f}x")
            print(f"ratio 2 workers / 1 worker: {rates[2][1] / rates[1][1]:.2f}x")
        finally:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                for schema in schemas:
                    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
