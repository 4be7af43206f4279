"""HTTP throughput benchmark: the API's routes against its own health check, with wrk.

    .venv/bin/python bench/http_bench.py [--seconds 10] [--connections 16] [--threads 2]

Needs `wrk` (Debian: `apt-get install -y wrk`): a Python load generator on this machine
measures itself (an httpx async client tops out near 500 requests/s), wrk does not.

One run:
1. for each server (below), seeds a small ledger (`ledger seed --households 400`) into a
   fresh schema of its own and builds its projections (`ledger projections rebuild`);
2. signs development tokens, as `ledger token` does: the platform's, and one for each of
   64 residents whose wallets are open;
3. twice, once as `ledger serve` runs by default (the projection runner and the audit
   chain follower in the API's process) and once with `--no-projections`: starts
   `ledger serve` on a free loopback port, warms up, and runs wrk for each route
   (`--seconds` each, `--connections`, `--threads`):
   - `GET /v1/health`: no token, no database, the baseline;
   - `GET /v1/me/wallet`: a resident's token drawn at random per request
     (bench/wrk/wallet.lua), a projection read;
   - `POST /v1/trades`: the platform's token, a fresh Idempotency-Key and trade id per
     request, two open wallets of different households at random (bench/wrk/trades.lua),
     a command through the commit engine;
   then stops the server;
4. prints requests/s, p50 and p99 latency (wrk's `--latency`), and each route's ratio to
   the health check of the same server in the same run; drops the schema.

A response other than 2xx fails the run (wrk counts them). The database is
LEDGER_DATABASE_URL (or --database-url), else the embedded PostgreSQL. Measure on a quiet
machine (the 1-minute load average is printed before each server's runs).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

from api.auth import Role, mint_token
from api.settings import ApiSettings
from ledger.database import ConnectionSettings, database_url
from seeding.seed import PLATFORM

WRK_SCRIPTS = Path(__file__).resolve().parent / "wrk"
LEDGER = Path(sys.executable).parent / "ledger"
RESIDENT_TOKENS = 64


@dataclass(frozen=True)
class Figures:
    """What wrk measured on one route."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def milliseconds(text: str) -> float:
    """wrk's latency ("812.00us", "3.41ms", "1.02s") in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    assert match is not None, text
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[match[2]]
    return float(match[1]) * scale


def wrk(url: str, seconds: float, connections: int, threads: int,
        script: Path | None = None, environment: dict[str, str] | None = None) -> Figures:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
               "--timeout", "10s"]
    if script is not None:
        command += ["-s", str(script)]
    finished = subprocess.run(  # noqa: S603  (wrk, with our arguments)
        [*command, url], capture_output=True, text=True, check=True,
        env={**os.environ, **(environment or {})})
    out = finished.stdout
    wrong = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if wrong is not None or "Socket errors" in out:
        raise RuntimeError(f"wrk saw failures on {url}:\n{out}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    assert rate and total and p50 and p99, out
    return Figures(float(rate[1]), milliseconds(p50[1]), milliseconds(p99[1]), int(total[1]))


def wait_until_serving(base: str, token: str, deadline_seconds: float = 120) -> None:
    """Until the server answers and its projections hold the wallets (a resident's 200)."""
    deadline = time.monotonic() + deadline_seconds
    request = urllib.request.Request(  # noqa: S310  (http on loopback, our own URL)
        base + "/v1/me/wallet", headers={"Authorization": f"Bearer {token}"})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not come up")
        time.sleep(0.3)


def measure_server(arguments: list[str], environment: dict[str, str], args: argparse.Namespace,
                   files: dict[str, str], resident_token: str, platform_token: str,
                   ) -> dict[str, Figures]:
    """Start `ledger serve` with `arguments`, run wrk on each route, stop it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # uvicorn logs every request: to a file, never to a pipe nobody reads.
    with Path(files["log"]).open("ab") as log:
        server = subprocess.Popen(  # noqa: S603  (our own command line)
            [str(LEDGER), "--quiet", "serve", "--host", "127.0.0.1", "--port", str(port),
             *arguments], env=environment, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_serving(base, resident_token)
            wrk(base + "/v1/health", 2, args.connections, args.threads)  # warm up
            return {
                "GET /v1/health": wrk(base + "/v1/health", args.seconds, args.connections,
                                      args.threads),
                "GET /v1/me/wallet": wrk(base, args.seconds, args.connections, args.threads,
                                         WRK_SCRIPTS / "wallet.lua",
                                         {"BENCH_TOKENS": files["tokens"]}),
                "POST /v1/trades": wrk(base, args.seconds, args.connections, args.threads,
                                       WRK_SCRIPTS / "trades.lua",
                                       {"BENCH_TOKEN": platform_token,
                                        "BENCH_RESIDENTS": files["residents"],
                                        "BENCH_RUN": uuid.uuid4().hex[:8]}),
            }
        except Exception:
            log.flush()
            print(Path(files["log"]).read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def prepare_clients(conninfo: str, schema: str, work: Path
                    ) -> tuple[dict[str, str], list[str], str, list[str]]:
    """Tokens and files for wrk's scripts: the open wallets of the seeded `schema`, a token
    for each of the first RESIDENT_TOKENS of them, and the platform's token (keys in `work`)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT resident_id, household_id FROM "{schema}".p_wallet_balances'
            " WHERE NOT closed ORDER BY resident_id").fetchall()
    residents = [str(resident) for resident, _ in rows]
    settings = ApiSettings(dev_key_dir=work / "keys", jwt_public_keys=())
    tokens = [mint_token(Role.RESIDENT, uuid.UUID(resident), settings=settings)
              for resident in residents[:RESIDENT_TOKENS]]
    platform_token = mint_token(Role.PLATFORM, PLATFORM, settings=settings)
    files = {"residents": str(work / "residents"), "tokens": str(work / "tokens"),
             "log": str(work / "serve.log")}
    # "resident household" a line: trades.lua pairs residents of different households (the
    # same_household_trade guard refuses the others with a 409).
    Path(files["residents"]).write_text(
        "".join(f"{resident} {household}\n" for resident, household in rows))
    Path(files["tokens"]).write_text("\n".join(tokens) + "\n")
    return files, tokens, platform_token, residents


def server_environment(url: str, schema: str, work: Path) -> dict[str, str]:
    """`ledger serve`'s environment for a benchmark: development keys in `work`, no outside
    identity provider, and no write limit for the platform (one writer as fast as it can)."""
    return {
        **os.environ, "LEDGER_DATABASE_URL": url, "LEDGER_SCHEMA": schema,
        "LEDGER_DEV_KEY_DIR": str(work / "keys"), "LEDGER_JWT_PUBLIC_KEYS": "",
        "LEDGER_JWT_JWKS_URL": "",
        "LEDGER_RATE_LIMIT_SERVICE_WRITES_PER_MINUTE": "10000000",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default="")
    parser.add_argument("--households", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("projections", "no-projections"), default=None,
                        help="measure one of the two servers only")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install -y wrk", file=sys.stderr)
        return 2

    url = args.database_url or database_url()
    conninfo = ConnectionSettings.from_url(url).conninfo()
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.seconds:g}s per route",
          flush=True)
    servers = {"projections": [], "no-projections": ["--no-projections"]}
    for name, arguments in servers.items():
        if args.only not in (None, name):
            continue
        # Each server gets a ledger of its own, seeded afresh: the second server does not
        # run on the first one's trades (a larger log, and the trades' pending shares).
        schema = f"bench_http_{uuid.uuid4().hex[:8]}"
        work = Path(tempfile.mkdtemp(prefix="http-bench-"))
        environment = server_environment(url, schema, work)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            ledger = [str(LEDGER), "--database-url", url, "--schema", schema, "--quiet"]
            subprocess.run(  # noqa: S603  (our own command line)
                [*ledger, "seed", "--households", str(args.households)],
                check=True, env=environment, stdout=subprocess.DEVNULL)
            subprocess.run([*ledger, "projections", "rebuild"],  # noqa: S603
                           check=True, env=environment, stdout=subprocess.DEVNULL)
            files, tokens, platform_token, residents = prepare_clients(conninfo, schema, work)
            load = os.getloadavg()[0]
            figures = measure_server(arguments, environment, args, files, tokens[0],
                                     platform_token)
        finally:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            shutil.rmtree(work, ignore_errors=True)
        health = figures["GET /v1/health"].requests_per_second
        print(f"\nledger serve {' '.join(arguments)}  ({len(residents)} open wallets, "
              f"{len(tokens)} resident tokens; 1-minute load before: {load:.2f})")
        print(f"{'route':<20}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}")
        for route, figure in figures.items():
            print(f"{route:<20}{figure.requests_per_second:>9,.0f}{figure.p50_ms:>9.2f}"
                  f"{figure.p99_ms:>9.2f}{figure.requests_per_second / health:>8.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
