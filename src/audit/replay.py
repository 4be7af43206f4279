"""Replay every event into scratch state and compare it with every live projection table.

One pass over the log in one repeatable-read snapshot:

- the auditor's own fold (`audit.scratch`) checks conservation, recomputes
  every trade's accrual, and gives wallets, common funds, merchant accounts and
  rent invoices and payments independently of the projections' code;
- each projection's own fold (`Projection.fold`, merged in memory as `fold_all`
  does) gives every column of every projection table;
- the live tables are read in the same snapshot and compared with both, each
  projection only up to the position it has committed (`p_tracking`), so a
  projection that lags behind the log is not mistaken for a wrong one.

A difference names the table, the key, the columns and the position of the
last event that changed the row.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
import psycopg
from psycopg.sql import SQL, Composable, Identifier

from audit.scratch import SKIPPED as SCRATCH_SKIPPED
from audit.scratch import Finding, Scratch
from eventlog.log import EVENTS_TABLE, Event, decode_row, event_name
from ledger import limits
from ledger.database import ConnectionSettings
from ledger.events import LAPSE_CLEARING
from projections.base import Changes, Key, Projection, Row, Table, TradeFacts, typed
from projections.complex_funds import FUNDS
from projections.group_buys import GROUP_BUYS
from projections.market_views import MERCHANTS
from projections.points_lifecycle import LEGACY_LOT, LOTS
from projections.proposals import PROPOSALS
from projections.rent_payments import INVOICES, PAYMENTS
from projections.runner import ALL, TRACKING_TABLE
from projections.wallet_balances import BALANCES, ENTRIES

SCRATCH_TABLES = (BALANCES, FUNDS, MERCHANTS, INVOICES, PAYMENTS, PROPOSALS, GROUP_BUYS, LOTS)
"""The live tables the auditor's own fold is compared with."""
SLICED_BY = {BALANCES.name: "resident_id", LOTS.name: "resident_id",
             INVOICES.name: "household_id", PAYMENTS.name: "household_id"}
"""The column whose wallet or household owns a row, for tables the auditor's fold keeps
in slices (`Scratch.owns_uuid`); the other tables are compared by slice 0 alone."""
FOLD_SLICED_BY = {BALANCES.name: "resident_id", ENTRIES.name: "resident_id",
                  INVOICES.name: "household_id"}
"""The same for the projections' own folds: the rows they keep of these tables are the
slice's (the first key column owns the row); the other tables are folded by slice 0."""

PROJECTION_MISMATCH = "projection_mismatch"
PROJECTION_ROW_MISSING = "projection_row_missing"
PROJECTION_ROW_EXTRA = "projection_row_extra"
COMPARISON_CODES = frozenset({PROJECTION_MISMATCH, PROJECTION_ROW_MISSING, PROJECTION_ROW_EXTRA})

REQUEST_RECORD_NAME = "RequestRecord.Accepted"
TRADE_RECORDED_PATTERN = "%:Trade.Recorded"
TRADE_FACT_FIELDS = ("market", "category", "seller_kind", "seller_id", "policy_version",
                     "personal_bps", "common_bps")
"""What projections need to know about a trade when its refund comes (kept small: a year
of the pilot holds about a million trades)."""

Progress = Callable[[int], None]


@dataclass
class ReplayReport:
    """Findings of the replay, the first one first, and what was compared."""

    findings: list[Finding]
    events: int
    head: int
    trades_recomputed: int
    rows_compared: int
    projection_positions: dict[str, int]
    notes: list[str] = field(default_factory=list)
    points_by_kind: dict[str, int] = field(default_factory=dict)
    tallies_recomputed: int = 0
    """Proposal decisions recomputed from their ballots and the households counted."""
    group_buys_recomputed: int = 0
    lapse_clearing_won: int = 0
    accounts_total_won: int = 0
    """What the auditor's fold holds in the lapse clearing account and in all accounts
    together: for a slice, its share, which `merge_slices` adds up to check conservation."""
    folded_position: int = 0
    """The last event the auditor's fold applied (conservation is found wrong there)."""

    def merged_with(self, other: ReplayReport) -> ReplayReport:
        """This report (the auditor's fold) with another half's findings and comparisons."""
        return ReplayReport(
            findings=sorted([*self.findings, *other.findings], key=lambda item: item.position),
            events=self.events, head=self.head, trades_recomputed=self.trades_recomputed,
            rows_compared=self.rows_compared + other.rows_compared,
            projection_positions=self.projection_positions,
            notes=[*self.notes, *(n for n in other.notes if n not in self.notes)],
            points_by_kind=self.points_by_kind, tallies_recomputed=self.tallies_recomputed,
            group_buys_recomputed=self.group_buys_recomputed)

    @property
    def first(self) -> Finding | None:
        return min(self.findings, key=lambda item: item.position, default=None)


def _hex(value: Any) -> str | None:
    if value is None:
        return None
    return value.hex if isinstance(value, UUID) else str(value).replace("-", "")


def _table_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


class Replay:
    """The pass itself; `run()` returns the report. The connection's search_path is the schema."""

    def __init__(self, conn: psycopg.Connection[Any], *, progress: Progress | None = None,
                 projections: tuple[Projection, ...] = ALL,
                 batch_size: int = limits.verify_fetch_size_rows, part: str = "all",
                 fold: tuple[str, ...] | None = None, slice_index: int = 0,
                 slices: int = 1) -> None:
        """`part`: "scratch" (the auditor's fold only), "projections" (the projections' folds
        only) or "all". `fold` names the projections whose folds this pass runs (default:
        every one tracked; none for "scratch"), so their work can be shared out between
        processes; the auditor's fold is always compared with every tracked table.
        `slice_index` of `slices`: the auditor's fold keeps one hash slice of wallets,
        trades and households (`Scratch.owns_uuid`), the projections' folds the rows of
        `FOLD_SLICED_BY` of the same wallets and households (slice 0 also every other
        table), and each is compared with those rows; `merge_slices` makes one report of
        all the slices' reports."""
        assert part in ("all", "scratch", "projections")
        assert 0 <= slice_index < slices
        self.part = part
        self.conn = conn
        self.progress = progress
        self.batch_size = batch_size
        self.scratch = Scratch(slice_index=slice_index, slices=slices)
        self.findings: list[Finding] = []
        self.notes: list[str] = []
        self.rows_compared = 0
        self.cutoffs: dict[str, int] = {}
        self.projections: tuple[Projection, ...] = ()
        if _table_exists(conn, TRACKING_TABLE):
            tracked = dict(conn.execute(f"SELECT name, position FROM {TRACKING_TABLE}").fetchall())
            self.projections = tuple(p for p in projections if p.name in tracked)
            self.cutoffs = {p.name: int(tracked[p.name]) for p in self.projections}
            for projection in projections:
                if projection.name not in tracked:
                    self.notes.append(f"projection {projection.name} has no tables: not compared")
        else:
            self.notes.append("no projection tables in this schema: projections not compared")
        self.folding: tuple[Projection, ...] = () if part == "scratch" else tuple(
            p for p in self.projections if (fold is None or p.name in fold) and (
                slice_index == 0 or any(t.name in FOLD_SLICED_BY for t in p.tables)))
        self.raw: dict[str, dict[Key, Row]] = {
            t.name: {} for p in self.folding for t in p.tables if not t.append_only}
        self.folded: dict[str, dict[Key, Row]] = {}
        self.trades = CompactTradeFacts()
        self.tables = {t.name: t for p in self.projections for t in p.tables}

    # The pass -----------------------------------------------------------------------------

    def run(self) -> ReplayReport:
        if not _table_exists(self.conn, EVENTS_TABLE):
            return ReplayReport(findings=[], events=0, head=0, trades_recomputed=0,
                                rows_compared=0, projection_positions={},
                                notes=["no events table in this schema"])
        head_row = self.conn.execute(SQL("SELECT COALESCE(MAX(notification_id), 0) FROM {}")
                                     .format(Identifier(EVENTS_TABLE))).fetchone()
        head = int(head_row[0]) if head_row else 0
        for name, cutoff in self.cutoffs.items():
            if cutoff < head and self.part != "scratch":
                self.notes.append(f"projection {name} is at position {cutoff:,} of {head:,}: "
                                  "compared up to its position")
        with_projections = bool(self.folding)
        with_scratch = self.part != "projections"
        entries = (self._live_entries() if with_projections and self._compares(ENTRIES)
                   else None)
        scratch = self.scratch
        apply = scratch.apply
        fold_projections = self._fold_projections
        progress = self.progress
        was_enabled = gc.isenabled()
        # The pass allocates millions of small acyclic dicts; the cycle collector would
        # rescan them again and again (see projections.runner.garbage_collection_paused).
        gc.disable()
        try:
            with self.conn.cursor(name="audit_replay", binary=True) as cursor:
                # Only the events this part folds leave the server (request records, which
                # move nothing, never do: the chain pass still covers them). Originator ids
                # come as 32 hex digits, the form the folds use: no UUID object per row.
                where, patterns = self._topic_filter()
                cursor.execute(SQL(
                    "SELECT notification_id, replace(originator_id::text, '-', ''),"
                    " originator_version, topic, state"
                    " FROM {} WHERE notification_id <= %s AND " + where +
                    " ORDER BY notification_id")
                    .format(Identifier(EVENTS_TABLE)), (head, patterns))
                fetch = cursor.fetchmany
                batch_size = self.batch_size
                while rows := fetch(batch_size):
                    events = _decode(rows)
                    if with_scratch:
                        for event in events:
                            apply(event)
                    if with_projections:
                        fold_projections(events, entries)
                    if progress is not None:
                        progress(len(rows))
        finally:
            if was_enabled:
                gc.enable()
        if with_scratch:
            scratch.finish()
        sliced = with_scratch and scratch.slices > 1
        self.folded = {name: typed_rows(self.tables[name], rows) for name, rows in self.raw.items()}
        self.raw = {}
        if entries is not None:
            self._finish_entries(entries)
        self._compare_tables()
        findings = [*scratch.findings, *self.findings]
        return ReplayReport(findings=sorted(findings, key=lambda item: item.position),
                            events=scratch.events, head=head,
                            trades_recomputed=scratch.trades_recomputed,
                            rows_compared=self.rows_compared,
                            projection_positions=dict(self.cutoffs), notes=self.notes,
                            points_by_kind=scratch.totals_by_kind(),
                            tallies_recomputed=scratch.tallies_recomputed,
                            group_buys_recomputed=scratch.group_buys_recomputed,
                            lapse_clearing_won=scratch.system[LAPSE_CLEARING],
                            accounts_total_won=sum(scratch.accounts().values()) if sliced else 0,
                            folded_position=scratch.position)

    def _topic_filter(self) -> tuple[str, list[str]]:
        """The WHERE clause on topics for this part, and its LIKE patterns."""
        if self.part == "projections":
            # Each projection's own events, and every recorded trade (refunds look it up).
            patterns = sorted({pattern for p in self.folding
                               for pattern in p.topic_patterns()} | {TRADE_RECORDED_PATTERN})
            return "topic LIKE ANY(%s)", patterns
        skipped = SCRATCH_SKIPPED if self.part == "scratch" else (REQUEST_RECORD_NAME,)
        return "topic NOT LIKE ALL(%s)", sorted(f"%:{name}" for name in skipped)

    def _compares(self, table: Table) -> bool:
        return any(table in p.tables for p in self.folding)

    def _fold_projections(self, events: list[Any], entries: Iterator[Row] | None) -> None:
        if not self.folding or not events:
            return
        sliced = self.scratch.slices > 1
        owns = self.scratch.owns_uuid
        for event in events:
            if event.name == "Trade.Recorded":
                data = event.data
                # A slice's wallets look up only their own trades, as buyer or seller.
                if (not sliced or self.scratch.owns_shared
                        or owns(_hex(data["buyer_id"]["_data_"]) or "0")
                        or owns(_hex(data["seller_id"]["_data_"]) or "0")):
                    self.trades.remember(data)
        last = events[-1].position
        for projection in self.folding:
            cutoff = self.cutoffs[projection.name]
            if events[0].position > cutoff:
                continue
            mine = events if last <= cutoff else [e for e in events if e.position <= cutoff]
            changes = projection.fold(mine, self.trades)
            if sliced:
                self._keep_slice(changes)
            if entries is not None and ENTRIES in projection.tables:
                self._compare_entries(changes.appended[ENTRIES.name], entries)
            merge_raw(self.raw, changes)

    def _keep_slice(self, changes: Changes) -> None:
        """Drop the changed rows that other slices keep."""
        owns = self.scratch.owns_uuid
        shared = self.scratch.owns_shared
        for name in changes.tables:
            if name not in FOLD_SLICED_BY:
                if not shared:
                    changes.rows[name].clear()
                    changes.appended[name].clear()
                continue
            owner = FOLD_SLICED_BY[name]
            appended = changes.appended[name]
            if appended:
                appended[:] = [row for row in appended if owns(_hex(row[owner]) or "0")]
            rows = changes.rows[name]
            for key in [key for key in rows if not owns(_hex(key[0]) or "0")]:
                del rows[key]

    # Wallet entries: compared as they are folded, in position order -------------------------

    def _live_entries(self) -> Iterator[Row]:
        cutoff = self.cutoffs["wallet_balances"]
        # UUIDs come back as 32 hex digits, the form the fold produces: rows then compare
        # as whole tuples, and only a differing row is looked at column by column.
        columns = SQL(", ").join(
            SQL("replace({}::text, '-', '')").format(Identifier(name)) if sql_type == "uuid"
            else Identifier(name) for name, sql_type in ENTRIES.columns)
        # A second named cursor in the same snapshot, read in step with the events.
        with self.conn.cursor(name="audit_replay_entries") as cursor:
            cursor.execute(SQL("SELECT {} FROM {} WHERE position <= %s{} ORDER BY position")
                           .format(columns, Identifier(ENTRIES.name),
                                   self._slice_filter(ENTRIES, FOLD_SLICED_BY, " AND ")),
                           (cutoff,))
            while rows := cursor.fetchmany(self.batch_size):
                yield from rows

    def _compare_entries(self, expected_rows: list[Row], live: Iterator[Any]) -> None:
        names = ENTRIES.column_names
        times = [index for index, (_, sql_type) in enumerate(ENTRIES.columns)
                 if sql_type == "timestamptz"]
        parse = datetime.fromisoformat
        self.rows_compared += len(expected_rows)
        for expected in expected_rows:
            want: list[Any] = list(map(expected.get, names))
            for index in times:
                if want[index] is not None:
                    want[index] = parse(want[index])
            position: int = want[0]
            while True:
                got = self._peek_entry(live)
                if got is None or got[0] > position:
                    self._find(position, PROJECTION_ROW_MISSING,
                               f"{ENTRIES.name}: no entry for this wallet event")
                    break
                self._next_entry = None
                if got[0] < position:
                    self._find(got[0], PROJECTION_ROW_EXTRA,
                               f"{ENTRIES.name}: an entry at a position with no wallet event")
                    continue
                if tuple(want) != got:
                    differing = [name for name, a, b in zip(names, got, want, strict=True)
                                 if a != b]
                    self._find(position, PROJECTION_MISMATCH, f"{ENTRIES.name} entry: " + _diff(
                        differing, dict(zip(names, got, strict=True)),
                        dict(zip(names, want, strict=True))))
                break

    _next_entry: Any = None

    def _peek_entry(self, live: Iterator[Any]) -> Any:
        if self._next_entry is None:
            self._next_entry = next(live, None)
        return self._next_entry

    def _finish_entries(self, live: Iterator[Any]) -> None:
        extra = self._peek_entry(live)
        if extra is not None:
            self._find(extra[0], PROJECTION_ROW_EXTRA,
                       f"{ENTRIES.name}: an entry at a position with no wallet event")
        self._next_entry = None
        for _ in live:  # drain the cursor before it closes
            pass

    # Keyed tables: compared after the pass ------------------------------------------------

    def _compare_tables(self) -> None:
        shared = self.scratch.owns_shared
        for projection in self.projections:
            for table in projection.tables:
                with_fold = projection in self.folding and (table.name in FOLD_SLICED_BY
                                                            or shared)
                with_scratch = (self.part != "projections" and table in SCRATCH_TABLES
                                and (table.name in SLICED_BY or shared))
                if table.append_only or not (with_fold or with_scratch):
                    continue
                # One read serves both: where their slices differ (rent payments, folded
                # by slice 0 whole) the auditor's rows are looked up among the fold's.
                live = _read_table(self.conn, table, self._slice_filter(
                    table, FOLD_SLICED_BY if with_fold else SLICED_BY))
                if with_fold:
                    self._compare_with_fold(projection, table, live, self.folded[table.name])
                if with_scratch:
                    self._compare_with_scratch(table, live)

    def _slice_filter(self, table: Table, owners: dict[str, str],
                      prefix: str = "") -> Composable:
        """The condition on the rows of `table` this slice compares (`owners`: the owning
        column of each sliced table), after `prefix`; empty when the table is not sliced."""
        slices = self.scratch.slices
        if slices == 1 or table.name not in owners:
            return SQL("")
        return SQL(prefix) + slice_sql(owners[table.name], self.scratch.slice_index, slices)

    def _compare_with_fold(self, projection: Projection, table: Table, live: dict[Key, Row],
                           folded: dict[Key, Row]) -> None:
        """Every column of every row against the projection's own fold of the events."""
        wrong: list[tuple[Key, str, str]] = []
        for key, want in folded.items():
            self.rows_compared += 1
            got = live.get(key)
            if got is None:
                wrong.append((key, PROJECTION_ROW_MISSING, f"{table.name} row {_key(key)} is "
                              "missing"))
                continue
            differing = [c for c in table.column_names if got[c] != want[c]]
            if differing:
                wrong.append((key, PROJECTION_MISMATCH, f"{table.name} row {_key(key)}: "
                              + _diff(differing, got, want)))
        wrong.extend((key, PROJECTION_ROW_EXTRA,
                      f"{table.name} row {_key(key)} has no events behind it")
                     for key in live.keys() - folded.keys())
        wrong = wrong[:limits.findings_kept_max]
        if not wrong:
            return
        positions = self._last_positions(projection, table, [key for key, _, _ in wrong])
        cutoff = self.cutoffs[projection.name]
        for key, code, detail in wrong:
            self._find(positions.get(key, cutoff), code, detail)

    def _last_positions(self, projection: Projection, table: Table,
                        keys: list[Key]) -> dict[Key, int]:
        """The last event position behind each of a few rows: a second pass, only on failure.

        Rows with a `position` column say it themselves; the others are found by folding
        the projection's events one at a time.
        """
        folded = self.folded[table.name]
        found = {key: int(folded[key]["position"]) for key in keys
                 if key in folded and folded[key].get("position") is not None}
        wanted = set(keys) - found.keys()
        if not wanted:
            return found
        cutoff = self.cutoffs[projection.name]
        with self.conn.cursor(name="audit_replay_locate", binary=True) as cursor:
            cursor.execute(SQL(
                "SELECT notification_id, originator_id, originator_version, topic, state"
                " FROM {} WHERE notification_id <= %s ORDER BY notification_id")
                .format(Identifier(EVENTS_TABLE)), (cutoff,))
            while rows := cursor.fetchmany(self.batch_size):
                for row in rows:
                    event = decode_row(*row)
                    if event is None:
                        continue
                    changes = projection.fold([event], self.trades)
                    for raw in changes.rows[table.name]:
                        key = tuple(typed(table.sql_type(column), value)
                                    for column, value in zip(table.key, raw, strict=True))
                        if key in wanted:
                            found[key] = event.position
        return found

    def _compare_with_scratch(self, table: Table, live: dict[Key, Row]) -> None:
        """The auditor's own fold against the balances the projections serve."""
        if table is BALANCES:
            for resident, wallet in self.scratch.wallets.items():
                if wallet.position > self.cutoffs["wallet_balances"]:
                    continue
                self._check_row(table, live, (UUID(resident),), wallet.position, {
                    "available_won": wallet.available_won, "held_won": wallet.held_won,
                    "owed_won": wallet.owed_won, "accrued_total_won": wallet.accrued_total_won,
                    "spent_total_won": wallet.spent_total_won, "closed": wallet.closed,
                    "position": wallet.position})
        elif table is FUNDS:
            for complex_id, fund in self.scratch.funds.items():
                if fund.position > self.cutoffs["complex_funds"]:
                    continue
                self._check_row(table, live, (UUID(complex_id),), fund.position, {
                    "balance_won": fund.balance_won, "owed_won": fund.owed_won,
                    "accrued_total_won": fund.accrued_total_won,
                    "clawed_back_total_won": fund.clawed_back_total_won,
                    "spent_total_won": fund.spent_total_won, "position": fund.position})
        elif table is MERCHANTS:
            for merchant, account in self.scratch.merchants.items():
                if account.position > self.cutoffs["market_views"]:
                    continue
                self._check_row(table, live, (UUID(merchant),), account.position, {
                    "balance_won": account.balance_won, "owed_won": account.owed_won,
                    "points_received_won": account.points_received_won,
                    "paid_out_won": account.paid_out_won,
                    "payouts_count": account.payouts_count, "position": account.position})
        elif table is INVOICES:
            for (household, invoice_id), invoice in self.scratch.invoices.items():
                if invoice[3] > self.cutoffs["rent_payments"]:
                    continue
                self._check_row(table, live, (UUID(household), invoice_id), invoice[3], {
                    "amount_won": invoice[0], "held_won": invoice[1], "settled_won": invoice[2]})
        elif table is PAYMENTS:
            for payment_id, payment in self.scratch.payments.items():
                if payment[4] > self.cutoffs["rent_payments"]:
                    continue
                self._check_row(table, live, (payment_id,), payment[4], {
                    "household_id": UUID(payment[0]), "invoice_id": payment[1],
                    "amount_won": payment[2], "status": payment[3]})

        elif table is PROPOSALS:
            for proposal_key, tally in self.scratch.proposals.items():
                if tally.position > self.cutoffs["proposals"]:
                    continue
                ballots = tally.yes_count + tally.no_count
                self._check_row(table, live, (UUID(proposal_key),), tally.position, {
                    "state": tally.state, "ballots_count": ballots,
                    "yes_count": tally.yes_count, "no_count": tally.no_count,
                    "spent_won": tally.spent_won, "amount_won": tally.amount_won,
                    "position": tally.position})
        elif table is LOTS:
            self._compare_lots(table, live)
        elif table is GROUP_BUYS:
            for group_buy_id, group_buy in self.scratch.group_buys.items():
                if group_buy.position > self.cutoffs["group_buys"]:
                    continue
                self._check_row(table, live, (group_buy_id,), group_buy.position, {
                    "state": group_buy.state, "quantity_ordered": group_buy.quantity_ordered,
                    "position": group_buy.position})

    def _compare_lots(self, table: Table, live: dict[Key, Row]) -> None:
        """Every open lot the auditor recomputed, with its expiry and what it holds, against
        the wallet lots the projection serves, and no open lot the auditor has closed.
        Wallets with debits stored before lots (the projection's `legacy` lot) are left out:
        the projection cannot place those debits lot by lot (docs/projections.md)."""
        cutoff = self.cutoffs["points_lifecycle"]
        legacy = {key[0] for key in live if key[1] == LEGACY_LOT}
        unchecked: set[UUID] = set()
        open_live: dict[Key, Row] = {key: row for key, row in live.items()
                                     if row["remaining_won"] and key[0] not in legacy}
        for resident, wallet in self.scratch.wallets.items():
            resident_id = UUID(resident)
            checked = wallet.position <= cutoff and resident_id not in legacy
            for lot_id, (expires_at, remaining_won) in wallet.book.lots.items():
                key = (resident_id, lot_id)
                open_live.pop(key, None)
                if checked:
                    self._check_row(table, live, key, wallet.position, {
                        "expires_at": expires_at, "remaining_won": remaining_won})
            if not checked:
                unchecked.add(resident_id)
        extra = [(key, row) for key, row in open_live.items() if key[0] not in unchecked]
        for key, row in extra[:limits.findings_kept_max]:
            self._find(int(row.get("position") or cutoff), PROJECTION_ROW_EXTRA,
                       f"{table.name} row {_key(key)} holds {row['remaining_won']:,} won "
                       "in a lot the audit replay has closed")

    def _check_row(self, table: Table, live: dict[Key, Row], key: Key, position: int,
                   want: dict[str, Any]) -> None:
        self.rows_compared += 1
        got = live.get(key)
        if got is None:
            self._find(position, PROJECTION_ROW_MISSING,
                       f"{table.name} row {_key(key)} is missing (audit replay)")
            return
        differing = [c for c in want if got[c] != want[c]]
        if differing:
            self._find(position, PROJECTION_MISMATCH,
                       f"{table.name} row {_key(key)} (audit replay): "
                       + _diff(differing, got, want))

    def _find(self, position: int, code: str, detail: str) -> None:
        if len(self.findings) < limits.findings_kept_max:
            self.findings.append(Finding(position, code, detail))


def _decode(rows: list[Any]) -> list[Event]:
    """`decode_rows` for rows whose originator ids are already hex text: one Event per row,
    no per-row type checks. Rows of events no projection reads (none are selected) raise."""
    names = _names_by_topic
    loads = orjson.loads
    try:
        return [Event(position, oid, version, names[topic], loads(state))
                for position, oid, version, topic, state in rows]
    except KeyError:
        for row in rows:
            if row[3] not in names:
                name = event_name(row[3])
                assert name is not None, f"unexpected event {row[3]} in the replay"
                names[row[3]] = name
        return _decode(rows)


_names_by_topic: dict[str, str] = {}


def replay_projections(url: str, schema: str,
                       names: tuple[str, ...] | None = None) -> ReplayReport:
    """The projections' half of the replay (or the named projections' share of it) on a
    connection of its own (for a worker process)."""
    chosen = ALL if names is None else tuple(p for p in ALL if p.name in names)
    with _snapshot(url, schema) as conn:
        return Replay(conn, part="projections", projections=chosen).run()


def replay_slice(url: str, schema: str, slice_index: int, slices: int,
                 fold: tuple[str, ...] | None = None) -> ReplayReport:
    """One slice of the whole replay (the auditor's fold and the named projections') on a
    connection of its own (for a worker process)."""
    with _snapshot(url, schema) as conn:
        return Replay(conn, fold=fold, slice_index=slice_index, slices=slices).run()


@contextmanager
def _snapshot(url: str, schema: str) -> Iterator[psycopg.Connection[Any]]:
    """A read-only REPEATABLE READ connection of its own (a worker process's), rolled back
    when done."""
    with psycopg.connect(ConnectionSettings.from_url(url).conninfo(),
                         options=f"-c search_path={schema}") as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        try:
            yield conn
        finally:
            conn.rollback()


class CompactTradeFacts(TradeFacts):
    """`TradeFacts` holding a tuple per trade instead of the whole event's dict."""

    def __init__(self) -> None:
        super().__init__()
        self.compact: dict[str, tuple[Any, ...]] = {}

    def remember(self, data: dict[str, Any]) -> None:
        self.compact[data["trade_id"]] = (
            *(data[name] for name in TRADE_FACT_FIELDS[:3]), data["seller_id"]["_data_"],
            *(data[name] for name in TRADE_FACT_FIELDS[4:]))

    def get(self, trade_id: str) -> dict[str, Any] | None:
        found = self.compact.get(trade_id)
        if found is None:
            return None
        facts = dict(zip(TRADE_FACT_FIELDS, found, strict=True))
        facts["seller_id"] = {"_data_": facts["seller_id"]}
        return facts


def merge_raw(state: dict[str, dict[Key, Row]], changes: Changes) -> None:
    """`merge_into` without typing each value on every batch: rows stay as folded (hex
    strings, ISO strings) until the pass ends, and are typed once by `typed_rows`.
    Append-only tables are compared as they go and never held."""
    for name, table in changes.tables.items():
        if table.append_only:
            continue
        rows = state[name]
        adds = table.add
        for key, change in changes.rows[name].items():
            old = rows.get(key)
            if old is None:
                rows[key] = dict(change)
                continue
            for column, value in change.items():
                if column in adds:
                    old[column] = old.get(column, 0) + value
                elif value is not None:
                    old[column] = value


def typed_rows(table: Table, rows: dict[Key, Row]) -> dict[Key, Row]:
    """Raw folded rows as psycopg would return them, keyed by typed primary key."""
    adds = set(table.add)
    typed_by_key = {}
    for row in rows.values():
        full = {c: typed(t, row.get(c, 0 if c in adds else None)) for c, t in table.columns}
        typed_by_key[tuple(full[c] for c in table.key)] = full
    return typed_by_key


def slice_sql(column: str, slice_index: int, slices: int) -> Composable:
    """`Scratch.owns_uuid` in SQL: the uuid column's last 32 bits modulo `slices`."""
    return SQL("mod(('x' || right({}::text, 8))::bit(32)::bigint, {}) = {}").format(
        Identifier(column), slices, slice_index)


def _read_table(conn: psycopg.Connection[Any], table: Table,
                where: Composable | None = None) -> dict[Key, Row]:
    """The live rows, keyed; `where` (empty for all) picks a slice of them."""
    if where is not None and where.as_string(conn):
        where = SQL(" WHERE ") + where
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        cursor.execute(SQL("SELECT {} FROM {}{}").format(
            SQL(", ").join(map(Identifier, table.column_names)), Identifier(table.name),
            where or SQL("")))
        return {tuple(row[c] for c in table.key): row for row in cursor}


def _key(key: Key) -> str:
    return "(" + ", ".join(str(part) for part in key) + ")"


def _diff(columns: list[str], got: Row, want: Row) -> str:
    return "; ".join(f"{c} is {got[c]!r}, the events give {want[c]!r}" for c in columns)


def merge_slices(reports: list[ReplayReport]) -> ReplayReport:
    """One report of the auditor's fold from the reports of all its slices.

    A finding about state every slice keeps (the shared accounts, group buys, guards,
    the trade clearing account) is found by each slice and kept once; conservation is
    checked here over the accounts of every slice together, as the unsliced fold does.
    """
    first = reports[0]
    if len(reports) == 1:
        return first
    seen: set[Finding] = set()
    findings: list[Finding] = []
    for report in reports:
        for item in report.findings:
            if item not in seen:
                seen.add(item)
                findings.append(item)
    conservation = Scratch()
    conservation.check_conserved(first.folded_position,
                                 [r.accounts_total_won for r in reports],
                                 sum(r.lapse_clearing_won for r in reports))
    points_by_kind: dict[str, int] = {}
    for report in reports:
        for kind, amount in report.points_by_kind.items():
            points_by_kind[kind] = points_by_kind.get(kind, 0) + amount
    return ReplayReport(
        findings=sorted([*findings, *conservation.findings], key=lambda item: item.position),
        events=first.events, head=first.head,
        trades_recomputed=sum(r.trades_recomputed for r in reports),
        rows_compared=sum(r.rows_compared for r in reports),
        projection_positions=first.projection_positions, notes=first.notes,
        points_by_kind=dict(sorted(points_by_kind.items())),
        tallies_recomputed=first.tallies_recomputed,
        group_buys_recomputed=first.group_buys_recomputed,
        lapse_clearing_won=sum(r.lapse_clearing_won for r in reports),
        accounts_total_won=sum(r.accounts_total_won for r in reports),
        folded_position=first.folded_position)
