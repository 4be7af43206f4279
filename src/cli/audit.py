"""`ledger audit …`: the auditor's commands.

    ledger audit verify [--json] [--checkpoints DIR] [--memory-budget-mib MIB] [--slices N]
    ledger audit balances --as-of TIME|POSITION [--as-of-occurred TIME]
                          [--resident ID | --complex ID | --household ID]
    ledger audit statement (--resident ID | --complex ID) --month YYYY-MM [--format csv|json]
    ledger audit accrual --trade TRADE_ID
    ledger audit chain                      (chain the log now, sign a checkpoint)
    ledger audit checkpoints export DIR

Exit status: 0 when all is well, 1 when verification (or an accrual check) fails,
2 for a usage error, 3 when the thing asked for does not exist.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from audit.signing import KEY_DIR_DEFAULT
from ledger import limits

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3


def _url(args: argparse.Namespace) -> str:
    from ledger.database import database_url  # noqa: PLC0415

    return str(args.database_url or database_url())


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False, default=str))


def cmd_verify(args: argparse.Namespace) -> int:
    from tqdm import tqdm  # noqa: PLC0415

    from audit.verification import verify_ledger  # noqa: PLC0415

    show = not (args.quiet or args.json)
    with tqdm(desc="replaying (chain checked alongside)", unit="event", disable=not show,
              file=sys.stderr) as bar:
        result = verify_ledger(_url(args), args.schema, checkpoint_files=args.checkpoints,
                               progress=bar.update, key_dir=args.key_dir,
                               memory_budget_bytes=args.memory_budget_mib * 1024**2,
                               slices=args.slices)
    if args.json:
        print(result.to_json())
    else:
        for line in result.lines():
            print(line)
    return 0 if result.ok else EXIT_FAILED


def cmd_balances(args: argparse.Namespace) -> int:
    from audit.history import AsOf, balances_as_of  # noqa: PLC0415

    if args.as_of is None and args.as_of_occurred is None:
        print("give --as-of TIME|POSITION and/or --as-of-occurred TIME", file=sys.stderr)
        return EXIT_USAGE
    try:
        as_of = AsOf.parse(args.as_of, args.as_of_occurred)
    except ValueError as error:
        print(error, file=sys.stderr)
        return EXIT_USAGE
    document = balances_as_of(_url(args), args.schema, as_of, resident=args.resident,
                              complex_id=args.complex, household=args.household)
    _print_json(document)
    if (args.resident and document["wallet"] is None) or (args.complex and
                                                          document["fund"] is None):
        return EXIT_NOT_FOUND
    return 0


def cmd_statement(args: argparse.Namespace) -> int:
    from audit.history import statement, statement_csv  # noqa: PLC0415

    try:
        document = statement(_url(args), args.schema, args.month, resident=args.resident,
                             complex_id=args.complex)
    except ValueError as error:
        print(error, file=sys.stderr)
        return EXIT_USAGE
    if document is None:
        print("no such wallet or common fund", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.format == "csv":
        sys.stdout.write(statement_csv(document))
    else:
        _print_json(document)
    return 0


def cmd_accrual(args: argparse.Namespace) -> int:
    from audit.history import trade_accrual  # noqa: PLC0415

    document = trade_accrual(_url(args), args.schema, args.trade)
    if document is None:
        print(f"no trade {args.trade!r} was recorded", file=sys.stderr)
        return EXIT_NOT_FOUND
    _print_json(document)
    return 0 if document["ok"] else EXIT_FAILED


def cmd_chain(args: argparse.Namespace) -> int:
    from audit.chain import ChainFollower  # noqa: PLC0415

    follower = ChainFollower(_url(args), args.schema, key_dir=args.key_dir)
    chained = follower.catch_up()
    position = follower.write_checkpoint()
    print(f"chained {chained:,} events"
          + (f"; signed a checkpoint at position {position:,}" if position else ""))
    return 0


def cmd_checkpoints_export(args: argparse.Namespace) -> int:
    from audit.export import export_checkpoints  # noqa: PLC0415

    written = export_checkpoints(_url(args), args.schema, args.directory, key_dir=args.key_dir)
    print(f"wrote {len(written):,} new checkpoint files to {args.directory}")
    return 0


def add_commands(commands: Any) -> None:
    """Add `audit` and its subcommands to the `ledger` command."""
    audit = commands.add_parser("audit", help="verify the ledger, balances at any moment, "
                                              "statements, accruals, checkpoints")
    sub = audit.add_subparsers(dest="audit_command", required=True, metavar="AUDIT_COMMAND")

    def with_key_dir(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--key-dir", default=str(KEY_DIR_DEFAULT),
                            help="where the development signing key lives (default "
                                 f"{KEY_DIR_DEFAULT}; LEDGER_AUDIT_SIGNING_KEY overrides)")
        return parser

    verify = with_key_dir(sub.add_parser(
        "verify", help="recompute the hash chain and checkpoint signatures, replay every event "
                       "and compare with every projection, check conservation and accruals"))
    verify.add_argument("--json", action="store_true", help="print the verdict as JSON")
    verify.add_argument("--checkpoints", metavar="DIR",
                        help="exported checkpoint files to hold the database to")
    verify.add_argument(
        "--memory-budget-mib", type=_positive, metavar="MIB",
        default=limits.verify_memory_budget_bytes_default // 1024**2,
        help="memory the auditor's fold may hold; a larger log is folded in hash slices, "
             "one pass over the log each (default %(default)s)")
    verify.add_argument("--slices", type=_positive, metavar="N",
                        help="fold in exactly N hash slices (overrides the budget)")
    verify.set_defaults(handler=cmd_verify)

    balances = sub.add_parser("balances", help="a wallet, fund or household at a past moment")
    balances.add_argument("--as-of", metavar="TIME|POSITION",
                          help="what the ledger had recorded by then: a log position, or a "
                               "recorded time (ISO 8601; no offset means KST)")
    balances.add_argument("--as-of-occurred", metavar="TIME",
                          help="what had happened by then (occurred_at), whenever recorded")
    chosen = balances.add_mutually_exclusive_group()
    chosen.add_argument("--resident", type=UUID)
    chosen.add_argument("--complex", type=UUID)
    chosen.add_argument("--household", type=UUID)
    balances.set_defaults(handler=cmd_balances)

    statement = sub.add_parser("statement", help="a month's statement of a wallet or a fund")
    owner = statement.add_mutually_exclusive_group(required=True)
    owner.add_argument("--resident", type=UUID)
    owner.add_argument("--complex", type=UUID)
    statement.add_argument("--month", required=True, metavar="YYYY-MM",
                           help="calendar month in KST, by when things happened")
    statement.add_argument("--format", choices=("json", "csv"), default="json")
    statement.set_defaults(handler=cmd_statement)

    accrual = sub.add_parser("accrual", help="recompute one trade's accrual and compare")
    accrual.add_argument("--trade", required=True, metavar="TRADE_ID")
    accrual.set_defaults(handler=cmd_accrual)

    chain = with_key_dir(sub.add_parser("chain", help="chain the log now and sign a "
                                                      "checkpoint at its head"))
    chain.set_defaults(handler=cmd_chain)

    checkpoints = sub.add_parser("checkpoints", help="signed checkpoints of the hash chain")
    checkpoint_commands = checkpoints.add_subparsers(dest="checkpoints_command", required=True)
    export = with_key_dir(checkpoint_commands.add_parser(
        "export", help="write checkpoints not yet exported, and the public key, to DIR"))
    export.add_argument("directory", metavar="DIR")
    export.set_defaults(handler=cmd_checkpoints_export)


def main(argv: Sequence[str] | None = None) -> int:
    """`ledger` itself (for tests: `main(["--schema", s, "audit", "verify"])`)."""
    from cli.main import main as ledger_main  # noqa: PLC0415

    return ledger_main(argv)
