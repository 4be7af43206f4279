"""The `ledger` command: composes the write side, the read side, the feed, the audit and the API.

Every subcommand reads the database from `--database-url` or LEDGER_DATABASE_URL;
with neither, it starts the embedded PostgreSQL in LEDGER_DATA_DIR (./var/pgdata).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from cli import audit, relay, serve
from cli.arguments import bounded_int
from ledger import limits
from ledger.database import database_url

Command = Callable[[argparse.Namespace], int]



def _url(args: argparse.Namespace) -> str:
    return str(args.database_url or database_url())


def cmd_seed(args: argparse.Namespace) -> int:
    from audit.summary import summarise  # noqa: PLC0415
    from ledger.errors import GUARD_CODES  # noqa: PLC0415
    from seeding.seed import Seeder  # noqa: PLC0415

    url = _url(args)
    result = Seeder(url, args.schema, complexes=args.complexes, households=args.households,
                    months=args.months, seed=args.seed, progress=not args.quiet,
                    workers=args.workers).run()
    print(f"commands: {result.commands:,} accepted {result.commands - result.rejected:,}, "
          f"rejected {result.rejected:,} (wash trades, and points the seed's own reckoning "
          "allowed but the ledger did not)")
    refused = ", ".join(f"{code} {result.rejected_by_code.get(code, 0):,}"
                        for code in GUARD_CODES)
    print(f"wash trades refused by the guards: {refused}")
    others = sorted((code, count) for code, count in result.rejected_by_code.items()
                    if code not in GUARD_CODES)
    if others:
        print("other refusals: " + ", ".join(f"{code} {count:,}" for code, count in others))
    print(f"events written: {result.events_after - result.events_before:,} "
          f"(lines written in {result.seconds_writing:.1f} s, imported in "
          f"{result.seconds_importing:.1f} s)")
    summary = summarise(url, args.schema, progress=not args.quiet)
    for line in summary.lines():
        print(line)
    return 0 if summary.conserved else 1


def cmd_import(args: argparse.Namespace) -> int:
    from pathlib import Path  # noqa: PLC0415

    from seeding.importing import ImportRunning, import_file  # noqa: PLC0415

    path = Path(args.file)
    if not path.is_file():
        print(f"ledger import: {path}: no such file", file=sys.stderr)
        return 2
    try:
        report = import_file(_url(args), args.schema, path, workers=args.workers,
                             rejects_path=Path(args.rejects) if args.rejects else None,
                             show_progress=not args.quiet)
    except ImportRunning as error:
        print(f"ledger import: {path}: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.rejected == 0 else 1


def cmd_summary(args: argparse.Namespace) -> int:
    from audit.summary import summarise  # noqa: PLC0415

    summary = summarise(_url(args), args.schema, progress=not args.quiet)
    for line in summary.lines():
        print(line)
    return 0 if summary.conserved else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ledger", description="Points ledger for public rental housing.")
    parser.add_argument("--database-url", default=os.environ.get("LEDGER_DATABASE_URL", ""),
                        help="PostgreSQL URL (default: LEDGER_DATABASE_URL, else an "
                             "embedded server in LEDGER_DATA_DIR)")
    parser.add_argument("--schema", default=os.environ.get("LEDGER_SCHEMA", "public"),
                        help="PostgreSQL schema holding the ledger's tables")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    seed = commands.add_parser("seed", help="load a realistic dataset through the commands")
    seed.add_argument("--complexes", type=bounded_int(1, limits.seed_complexes_max), default=2)
    seed.add_argument("--households", type=bounded_int(1, limits.seed_households_max),
                      default=40)
    seed.add_argument("--months", type=bounded_int(0, limits.seed_months_max), default=1,
                      help="months of activity after enrolment (default 1)")
    seed.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    # seeding.seed.default_workers, without loading the seeder to build the parser
    seed_workers = max(1, min(limits.import_workers_default_max, os.cpu_count() or 1))
    seed.add_argument("--workers", type=bounded_int(1, limits.import_workers_max),
                      default=seed_workers,
                      help=f"import worker processes (default {seed_workers}: one per core, "
                           f"at most {limits.import_workers_default_max})")
    seed.set_defaults(handler=cmd_seed)

    importing = commands.add_parser(
        "import", help="commands from a JSON Lines file, one per line with its request id",
        description="Load commands from a JSON Lines file through the ledger's commands: "
                    "idempotent (each line's request id), resumable after a crash, in "
                    "parallel processes by complex; every refused line goes to the rejects "
                    "file with its code and reason. Exit status 1 when any line was refused.")
    importing.add_argument("file", help="the JSON Lines file (see docs/import.md)")
    workers_default = max(1, min(limits.import_workers_default_max, (os.cpu_count() or 1) - 1))
    importing.add_argument("--workers", type=bounded_int(1, limits.import_workers_max),
                           default=workers_default,
                           help=f"worker processes (default {workers_default}: the cores but "
                                "one, which PostgreSQL needs, at most "
                                f"{limits.import_workers_default_max})")
    importing.add_argument("--rejects", default="",
                           help="where refused lines go (default FILE.rejects.jsonl)")
    importing.set_defaults(handler=cmd_import)

    summary = commands.add_parser("summary", help="events, points per account kind, "
                                                  "conservation check")
    summary.set_defaults(handler=cmd_summary)

    # Each area adds its own subcommands; their handlers import what they run lazily,
    # so `ledger relay status` does not load the API.
    serve.add_commands(commands)
    relay.add_commands(commands)
    audit.add_commands(commands)
    return parser




def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Any = args.handler
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
