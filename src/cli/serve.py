"""`ledger serve`, `ledger project`, `ledger projections rebuild`, `ledger token`, `ledger demo`.

`ledger demo` is the one command to try the service: it starts the embedded PostgreSQL
when no database URL is set, seeds the Hwaseong pilot (29 complexes, 25,000
households, one month of activity) into an empty ledger, builds the projections,
prints development tokens for a real resident, their complex's manager and an
auditor with example curl lines, and serves the API on 127.0.0.1:8000 (/docs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from cli.arguments import bounded_int
from ledger import limits
from ledger.database import database_url
from ledger.events import KST

DEMO_HOST = "127.0.0.1"
DEMO_PORT = 8000
PILOT_COMPLEXES = 29
PILOT_HOUSEHOLDS = 25_000


def _url(args: argparse.Namespace) -> str:
    return str(args.database_url or database_url())


def _export(args: argparse.Namespace, url: str, *, run_projections: bool) -> None:
    """Hand the resolved settings to the API (and to uvicorn's worker processes)."""
    os.environ["LEDGER_DATABASE_URL"] = url
    os.environ["LEDGER_SCHEMA"] = args.schema
    os.environ["LEDGER_RUN_PROJECTIONS"] = "true" if run_projections else "false"
    from api.settings import get_settings  # noqa: PLC0415

    get_settings.cache_clear()


def _serve(host: str, port: int, workers: int, app: Any = None) -> None:
    import uvicorn  # noqa: PLC0415

    if workers > 1:
        uvicorn.run("service.app:create_app", factory=True, host=host, port=port,
                    workers=workers, log_level="info")
    else:
        from service.app import create_app  # noqa: PLC0415

        uvicorn.run(app or create_app(), host=host, port=port, log_level="info")


@contextmanager
def _metrics_directory() -> Iterator[Path]:
    """A directory, fresh for this run, where every worker process writes its metrics
    (prometheus-client's multi-process mode), removed when the run ends.

    Set before anything imports prometheus_client: the library picks its mode once, at
    import. Fresh, so no counter of an earlier run (or of another service) is added in.
    """
    directory = Path(tempfile.mkdtemp(prefix="ledger-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)

    def remove_then_end(number: int, _frame: FrameType | None) -> None:
        # A single uvicorn process, after its graceful shutdown, raises the SIGTERM it
        # caught again, to end by it: `finally` would never run.
        shutil.rmtree(directory, ignore_errors=True)
        signal.signal(number, signal.SIG_DFL)
        signal.raise_signal(number)

    previous = signal.signal(signal.SIGTERM, remove_then_end)
    try:
        yield directory
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(directory, ignore_errors=True)


def cmd_serve(args: argparse.Namespace) -> int:
    with _metrics_directory():
        _export(args, _url(args), run_projections=not args.no_projections)
        _serve(args.host, args.port, args.workers)
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from audit.follower import start_audit_follower  # noqa: PLC0415
    from eventlog.follower import Stopped, connect, stopped_followers  # noqa: PLC0415
    from projections.runner import ProjectionRunner  # noqa: PLC0415

    reported: set[Stopped] = set()

    def report_stops() -> None:
        """Say once, on standard error, which follower stopped at which event and why."""
        try:
            with connect(url, args.schema) as conn:
                stops = set(stopped_followers(conn))
        except Exception as error:  # the database is away: the followers say so themselves
            print(f"status unavailable: {error}", file=sys.stderr)
            return
        for stop in sorted(stops - reported, key=lambda s: s.name):
            print(f"follower {stop.name} STOPPED at position {stop.position}: {stop.error}; "
                  "the others go on; fix the cause and restart", file=sys.stderr, flush=True)
        reported.update(stops)

    stopping = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stopping.set())
    url = _url(args)
    with ProjectionRunner(url, args.schema) as runner:
        audit_thread = start_audit_follower(url, args.schema, stopping)
        print(f"following the event log into the projections and the audit hash chain of "
              f"schema {args.schema!r}; stop with SIGTERM or Ctrl-C", flush=True)
        while not stopping.wait(5):
            if runner.error is not None and runner.stopped is None:
                print(f"projection batch failed, retrying: {runner.error}", file=sys.stderr)
            report_stops()
        audit_thread.join(timeout=5)
        print(f"stopped at positions {runner.positions()}")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    import projections  # noqa: PLC0415

    built = projections.rebuild(_url(args), args.schema, args.name, progress=not args.quiet)
    for name, position in sorted(built.items()):
        print(f"{name}: rebuilt up to position {position:,}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from api.auth import Role, mint_token  # noqa: PLC0415

    try:
        complex_id = uuid.UUID(args.complex) if args.complex else None
        household_id = uuid.UUID(args.household) if args.household else None
        token = mint_token(Role(args.role), uuid.UUID(args.subject), complex_id,
                           ttl_seconds=args.ttl, household_id=household_id)
    except ValueError as error:
        print(f"ledger token: {error}", file=sys.stderr)
        return 2
    print(token)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import projections  # noqa: PLC0415
    from api.auth import Role, mint_token  # noqa: PLC0415
    from ledger.application import Ledger  # noqa: PLC0415
    from seeding.seed import seed  # noqa: PLC0415
    from service.app import create_app  # noqa: PLC0415

    url = _url(args)
    ledger = Ledger.connect(url, args.schema)
    if ledger.position() == 0:
        print(f"seeding the pilot: {args.complexes} complexes, {args.households:,} households, "
              "one month of activity", flush=True)
        seed(ledger, complexes=args.complexes, households=args.households, months=1,
             progress=not args.quiet)
        print("building the projections", flush=True)
        projections.rebuild(url, args.schema, progress=not args.quiet)
    else:
        print(f"the ledger already holds {ledger.position():,} events; "
              "the projections catch up as the service starts", flush=True)
    _export(args, url, run_projections=True)
    with projections.connect(url, args.schema) as conn:
        projections.runner.setup(conn, projections.ALL)
        conn.commit()
        row = conn.execute(
            "SELECT resident_id, household_id, complex_id FROM p_wallet_balances"
            " WHERE NOT closed ORDER BY available_won DESC, resident_id LIMIT 1").fetchone()
    if row is None:
        print("no resident in the projections yet; try again in a moment", file=sys.stderr)
        ledger.close()
        return 1
    resident_id, household_id, complex_id = row
    manager_id = uuid.uuid5(complex_id, "manager")
    tokens = {
        "RESIDENT": mint_token(Role.RESIDENT, resident_id, ttl_seconds=86_400),
        "MANAGER": mint_token(Role.MANAGER, manager_id, complex_id, ttl_seconds=86_400),
        "AUDITOR": mint_token(Role.AUDITOR, uuid.uuid4(), ttl_seconds=86_400),
    }
    base = f"http://{args.host}:{args.port}"
    print("\nDevelopment tokens (valid 24 hours, signed with the local development key):")
    for name, token in tokens.items():
        print(f"  export {name}_TOKEN={token}")
    print(f"\nResident {resident_id} (household {household_id}, complex {complex_id}):")
    print(f'  curl -s -H "Authorization: Bearer $RESIDENT_TOKEN" {base}/v1/me/wallet')
    print(f'  curl -s -H "Authorization: Bearer $RESIDENT_TOKEN" '
          f'"{base}/v1/me/wallet/entries?limit=5"')
    print(f'  curl -s -H "Authorization: Bearer $RESIDENT_TOKEN" '
          f"{base}/v1/households/{household_id}/rent")
    print(f'  curl -s -H "Authorization: Bearer $RESIDENT_TOKEN" '
          f"{base}/v1/complexes/{complex_id}/group-buys   # open group buys")
    print("Their complex's manager:")
    print(f'  curl -s -H "Authorization: Bearer $MANAGER_TOKEN" '
          f"{base}/v1/complexes/{complex_id}/fund")
    print(f'  curl -s -H "Authorization: Bearer $MANAGER_TOKEN" '
          f"{base}/v1/complexes/{complex_id}/proposals   # votes on spending, with tallies")
    print("An auditor:")
    today = datetime.now(KST).date()  # the seeded months end today
    print(f'  curl -s -H "Authorization: Bearer $AUDITOR_TOKEN" '
          f'"{base}/v1/markets/stats?from={today - timedelta(days=30)}&to={today}"')
    print(f'  curl -s -H "Authorization: Bearer $AUDITOR_TOKEN" -H "Accept-Language: en" '
          f"{base}/v1/wallets/{uuid.uuid4()}   # a problem+json 404")
    print(f"\nInteractive docs: {base}/docs\n", flush=True)
    try:
        _serve(args.host, args.port, 1, create_app(ledger=ledger))
    finally:
        ledger.close()
    return 0


def add_commands(commands: Any) -> None:
    serve = commands.add_parser(
        "serve", help="serve the HTTP API (and, unless --no-projections, the projections)")
    serve.add_argument("--host", default=os.environ.get("LEDGER_HOST", DEMO_HOST))
    serve.add_argument("--port", type=bounded_int(1, limits.port_number_max),
                       default=int(os.environ.get("LEDGER_PORT", DEMO_PORT)))
    serve.add_argument("--workers", type=bounded_int(1, limits.serve_workers_max), default=1,
                       help="uvicorn worker processes (each runs the projection runner "
                            "unless --no-projections; they share the work safely)")
    serve.add_argument("--no-projections", action="store_true",
                       help="do not run the projection runner here (`ledger project` "
                            "runs it elsewhere)")
    serve.set_defaults(handler=cmd_serve)

    project = commands.add_parser("project",
                                  help="keep the projections up to date, until SIGTERM")
    project.set_defaults(handler=cmd_project)

    if "projections" not in commands.choices:  # unless the projections module added it
        group = commands.add_parser("projections", help="manage the read-side projections")
        actions = group.add_subparsers(dest="projections_command", required=True,
                                       metavar="ACTION")
        rebuild = actions.add_parser(
            "rebuild", help="rebuild projections from the event log, beside the live "
                            "tables, then swap them in")
        rebuild.add_argument("name", nargs="?", default=None,
                             help="one projection (wallet_balances, complex_funds, "
                                  "rent_payments, market_views); default: all")
        rebuild.set_defaults(handler=cmd_rebuild)

    token = commands.add_parser("token", help="print a development access token")
    token.add_argument("--role", required=True,
                       choices=["resident", "coordinator", "manager", "merchant", "auditor",
                                "billing", "platform", "operator"])
    token.add_argument("--subject", required=True, help="the caller's id (a UUID)")
    token.add_argument("--complex", default=None,
                       help="complex id (required for coordinators and managers)")
    token.add_argument("--household", default=None,
                       help="for residents: the household the identity provider verified "
                            "(needed to enrol oneself)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    token.set_defaults(handler=cmd_token)

    demo = commands.add_parser(
        "demo", help="embedded database, the seeded pilot, projections and the API on "
                     f"{DEMO_HOST}:{DEMO_PORT}, with ready development tokens")
    demo.add_argument("--households", type=bounded_int(1, limits.seed_households_max),
                      default=PILOT_HOUSEHOLDS,
                      help=f"households to seed into an empty ledger "
                           f"(default {PILOT_HOUSEHOLDS:,}, the pilot)")
    demo.add_argument("--complexes", type=bounded_int(1, limits.seed_complexes_max),
                      default=PILOT_COMPLEXES)
    demo.add_argument("--host", default=DEMO_HOST)
    demo.add_argument("--port", type=bounded_int(1, limits.port_number_max), default=DEMO_PORT)
    demo.set_defaults(handler=cmd_demo)
