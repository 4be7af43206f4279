"""API benchmark: wallet reads against a trivial endpoint, and append-to-visible lag.

    .venv/bin/python bench/api_bench.py [--workers 1] [--households 2000] [--seconds 8]

Seeds a fresh schema, starts uvicorn on 127.0.0.1 (the API with its projection runner,
`--workers` processes), then measures in one run:
1. requests/s of GET /v1/health (no token, no database) and of GET /v1/wallets/{id}
   (auditor token, random real residents) on the same server: the ratio is the cost of
   authentication, authorisation and one projection read;
2. append-to-visible lag under read load: POST /v1/trades, then poll the buyer's wallet
   until the accrual is visible; p50 and p99 from the write's answer to visibility.
The database is LEDGER_DATABASE_URL, else the embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from api.auth import Role, mint_token
from api.settings import ApiSettings
from ledger.application import Ledger
from ledger.database import ConnectionSettings, database_url
from seeding.seed import PLATFORM, seed


async def throughput(base: str, paths: list[str], headers: dict[str, str], seconds: float,
                     concurrency: int) -> float:
    """Requests per second over `seconds`, `concurrency` requests in flight."""
    done = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:
        async def worker(seed_value: int) -> None:
            nonlocal done
            rng = random.Random(seed_value)
            while time.monotonic() < deadline:
                response = await client.get(rng.choice(paths))
                assert response.status_code == 200, response.text
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        return done / (time.monotonic() - started)


async def lag(base: str, residents: list[str], wallet_paths: list[str],
              auditor: dict[str, str], platform: dict[str, str], trades: int,
              background: int) -> list[float]:
    """Append-to-visible lag of `trades` trades, with `background` concurrent readers."""
    stop = asyncio.Event()
    lags: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        async def reader(seed_value: int) -> None:
            rng = random.Random(seed_value)
            while not stop.is_set():
                await client.get(rng.choice(wallet_paths), headers=auditor)

        readers = [asyncio.create_task(reader(n)) for n in range(background)]
        rng = random.Random(5)
        for number in range(trades):
            buyer, seller = rng.sample(residents, 2)
            before = (await client.get(f"/v1/wallets/{buyer}", headers=auditor)).json()
            written = await client.post("/v1/trades", headers={
                **platform, "Idempotency-Key": f"bench-{uuid.uuid4().hex}"}, json={
                "trade_id": f"BENCH-{uuid.uuid4().hex[:12]}", "market": "sharing",
                "category": "carpool", "seller_id": seller, "seller_kind": "resident",
                "buyer_id": buyer, "amount_won": 10_000 + number})
            acknowledged = time.monotonic()
            assert written.status_code == 201, written.text
            expected = before["accrued_total_won"] + written.json()["personal_accrued_won"]
            while True:
                wallet = (await client.get(f"/v1/wallets/{buyer}", headers=auditor)).json()
                if wallet["accrued_total_won"] >= expected:
                    lags.append(time.monotonic() - acknowledged)
                    break
                await asyncio.sleep(0.001)
        stop.set()
        await asyncio.gather(*readers)
    return lags


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--households", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--trades", type=int, default=200)
    parser.add_argument("--port", type=int, default=8799)
    args = parser.parse_args()

    url = database_url()
    schema = f"bench_api_{uuid.uuid4().hex[:8]}"
    conninfo = ConnectionSettings.from_url(url).conninfo()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    key_dir = tempfile.mkdtemp(prefix="api-bench-keys-")
    settings = ApiSettings(dev_key_dir=Path(key_dir), jwt_public_keys=())
    server = None
    try:
        ledger = Ledger.connect(url, schema)
        seed(ledger, complexes=2, households=args.households, months=1, progress=False)
        ledger.close()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            rows = conn.execute(
                f'SELECT originator_id FROM "{schema}".ledger_events'
                " WHERE topic LIKE %s AND originator_version = 1", ("%Resident.Enrolled",)
            ).fetchall()
        residents = [str(row[0]) for row in rows]
        environment = {
            **os.environ, "LEDGER_DATABASE_URL": url, "LEDGER_SCHEMA": schema,
            "LEDGER_DEV_KEY_DIR": key_dir, "LEDGER_JWT_PUBLIC_KEYS": "",
            "LEDGER_RATE_LIMIT_WRITES_PER_MINUTE": "1000000",
            "LEDGER_EXPIRY_SWEEP_SECONDS": "0",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
        }
        server = subprocess.Popen(  # noqa: S603  (our own interpreter and arguments)
            [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(args.port), "--workers", str(args.workers),
             "--log-level", "warning", "--no-access-log"], env=environment)
        base = f"http://127.0.0.1:{args.port}"
        auditor = {"Authorization": "Bearer " + mint_token(
            Role.AUDITOR, uuid.uuid4(), settings=settings)}
        platform = {"Authorization": "Bearer " + mint_token(
            Role.PLATFORM, PLATFORM, settings=settings)}
        deadline = time.monotonic() + 120
        wallet_paths = [f"/v1/wallets/{resident}" for resident in residents]
        while True:  # until the server is up and its projections have caught up
            try:
                if httpx.get(base + wallet_paths[-1], headers=auditor).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not come up")
            time.sleep(0.3)

        asyncio.run(throughput(base, ["/v1/health"], {}, 1.0, args.concurrency))  # warm up
        trivial = asyncio.run(throughput(base, ["/v1/health"], {}, args.seconds,
                                         args.concurrency))
        wallet = asyncio.run(throughput(base, wallet_paths, auditor, args.seconds,
                                        args.concurrency))
        lags = asyncio.run(lag(base, residents, wallet_paths, auditor, platform, args.trades,
                               background=max(1, args.concurrency // 2)))
        print(f"workers={args.workers} households={args.households} residents={len(residents)}"
              f" concurrency={args.concurrency} seconds={args.seconds}")
        print(f"GET /v1/health            {trivial:8.0f} requests/s")
        print(f"GET /v1/wallets/{{id}}      {wallet:8.0f} requests/s"
              f"   ratio {wallet / trivial:.2f}")
        print(f"append-to-visible lag     p50 {percentile(lags, 0.5) * 1000:.1f} ms"
              f"   p99 {percentile(lags, 0.99) * 1000:.1f} ms"
              f"   mean {statistics.fmean(lags) * 1000:.1f} ms  ({len(lags)} trades,"
              f" {max(1, args.concurrency // 2)} concurrent readers)")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return 0


if __name__ == "__main__":
    sys.exit(main())
