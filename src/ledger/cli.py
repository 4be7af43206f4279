"""The `ledger` command.

Every subcommand reads the database from `--database-url` or LEDGER_DATABASE_URL;
with neither, it starts the embedded PostgreSQL in LEDGER_DATA_DIR (./var/pgdata).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ledger.database import database_url

Command = Callable[[argparse.Namespace], int]

# Feature modules add their subcommands here: each exposes add_commands(subparsers).
FEATURE_MODULES = (
    "projections.cli",
    "api.cli",
    "ledger.relay_cli",
    "ledger.audit.cli",
)


def _url(args: argparse.Namespace) -> str:
    return str(args.database_url or database_url())


def cmd_seed(args: argparse.Namespace) -> int:
    from ledger.application import Ledger  # noqa: PLC0415
    from ledger.seed import seed  # noqa: PLC0415
    from ledger.summary import summarise  # noqa: PLC0415

    url = _url(args)
    ledger = Ledger.connect(url, args.schema)
    try:
        result = seed(ledger, complexes=args.complexes, households=args.households,
                      months=args.months, seed_value=args.seed, progress=not args.quiet)
    finally:
        ledger.close()
    print(f"commands: {result.commands:,} accepted {result.commands - result.rejected:,}, "
          f"rejected {result.rejected:,} (e.g. points spent before a refund arrived)")
    print(f"events written: {result.events_after - result.events_before:,}")
    summary = summarise(url, args.schema, progress=not args.quiet)
    for line in summary.lines():
        print(line)
    return 0 if summary.conserved else 1


def cmd_summary(args: argparse.Namespace) -> int:
    from ledger.summary import summarise  # noqa: PLC0415

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
    seed.add_argument("--complexes", type=bounded_int(1, 10_000), default=2)
    seed.add_argument("--households", type=bounded_int(1, 2_000_000), default=40)
    seed.add_argument("--months", type=bounded_int(0, 120), default=1,
                      help="months of activity after enrolment (default 1)")
    seed.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    seed.set_defaults(handler=cmd_seed)

    summary = commands.add_parser("summary", help="events, points per account kind, "
                                                  "conservation check")
    summary.set_defaults(handler=cmd_summary)

    for module_name in FEATURE_MODULES:
        try:
            module = __import__(module_name, fromlist=["add_commands"])
        except ModuleNotFoundError as error:
            if error.name and module_name.startswith(error.name):
                continue
            raise
        module.add_commands(commands)
    return parser


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high`, with a clear message."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


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
