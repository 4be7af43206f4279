"""Feeding projections from the event store: catch up, follow live, rebuild, fold in memory.

Exactly-once: a batch's rows and the projection's tracking position are committed in
one transaction, and the tracking rows are locked (`FOR UPDATE`) for its duration,
so two runners, or a runner and a rebuild's swap, never apply the same events twice.
Writers append under an EXCLUSIVE table lock, so reading `notification_id > position`
in order never skips a committed event; gaps in positions are aborted transactions.
"""

from __future__ import annotations

import gc
import json
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier, Literal

from eventlog.follower import Follower, Following, Stopped
from eventlog.log import COLUMNS, EVENTS_TABLE, Event, decode_rows
from ledger import limits
from ledger.database import ConnectionSettings
from ledger.trade import trade_aggregate_id
from projections.base import Key, Projection, Row, TradeFacts, merge_into, read_table
from projections.complex_funds import ComplexFunds
from projections.group_buys import GroupBuys
from projections.market_views import MarketViews
from projections.points_lifecycle import PointsLifecycle
from projections.proposals import Proposals
from projections.rent_payments import RentPayments
from projections.wallet_balances import WalletBalances

log = logging.getLogger(__name__)

ALL: tuple[Projection, ...] = (WalletBalances(), ComplexFunds(), RentPayments(), MarketViews(),
                               Proposals(), GroupBuys(), PointsLifecycle())

TRACKING_TABLE = "p_tracking"
SHADOW_SUFFIX = "__new"

REFUND_EVENT_NAMES = frozenset({
    "Trade.Refunded", "Resident.AccrualClawedBack", "Complex.CommonPointsClawedBack"})

_SELECT_EVENTS = ("SELECT " + COLUMNS + " FROM {events} WHERE notification_id > %s"
                  " ORDER BY notification_id")


def connect(url: str, schema: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A connection whose search_path is the ledger's schema (projection tables live there)."""
    return psycopg.connect(ConnectionSettings.from_url(url).conninfo(), autocommit=autocommit,
                           options=f"-c search_path={schema}")


def select(names: str | Sequence[str] | None) -> tuple[Projection, ...]:
    if names is None:
        return ALL
    wanted = {names} if isinstance(names, str) else set(names)
    chosen = tuple(p for p in ALL if p.name in wanted)
    unknown = wanted - {p.name for p in chosen}
    if unknown:
        msg = f"unknown projections: {sorted(unknown)}"
        raise ValueError(msg)
    return chosen


def create_tracking(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"CREATE TABLE IF NOT EXISTS {TRACKING_TABLE}"
                 " (name text PRIMARY KEY, position bigint NOT NULL)")


def setup(conn: psycopg.Connection[Any], projections: Iterable[Projection]) -> None:
    """Create tracking and projection tables if missing (idempotent, serialised)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':projections'))")
        create_tracking(conn)
        for projection in projections:
            projection.create_tables(conn)
            conn.execute(f"INSERT INTO {TRACKING_TABLE} (name, position) VALUES (%s, 0)"
                         " ON CONFLICT (name) DO NOTHING", (projection.name,))


def positions(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Committed position of every projection."""
    rows = conn.execute(f"SELECT name, position FROM {TRACKING_TABLE}").fetchall()
    return dict(rows)


def trade_facts(conn: psycopg.Connection[Any], events: Sequence[Event],
                known: TradeFacts | None = None) -> TradeFacts:
    """Trade.Recorded data for the trades this batch records or refunds.

    A refund may come batches after its trade; the recorded trade is then read back from
    the events table by its aggregate id (version 1), so no projection table is needed.
    """
    facts = known if known is not None else TradeFacts()
    wanted: set[str] = set()
    for event in events:
        if event.name == "Trade.Recorded":
            facts.by_trade_id[event.data["trade_id"]] = event.data
        elif event.name in REFUND_EVENT_NAMES:
            wanted.add(event.data["trade_id"])
    missing = [trade_id for trade_id in wanted if trade_id not in facts.by_trade_id]
    if missing:
        rows = conn.execute(
            SQL("SELECT state FROM {} WHERE originator_id = ANY(%s) AND originator_version = 1")
            .format(Identifier(EVENTS_TABLE)),
            ([trade_aggregate_id(trade_id) for trade_id in missing],)).fetchall()
        for (state,) in rows:
            data = json.loads(state)
            facts.by_trade_id[data["trade_id"]] = data
    return facts


@contextmanager
def garbage_collection_paused() -> Iterator[None]:
    """Pause the cycle collector while a batch is folded.

    A batch allocates hundreds of thousands of small dicts; the collector would scan them
    again and again (measured: decoding took 2.5 times as long). They hold no cycles, so
    reference counting frees them anyway.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def apply_batch(conn: psycopg.Connection[Any], projections: Sequence[Projection],
                tracked: dict[str, int], rows: Sequence[Sequence[Any]],
                suffix: str = "") -> dict[str, int]:
    """Fold and write one ordered batch of rows for each projection; return new positions.

    Runs in the caller's transaction; the caller commits rows and positions together.
    """
    if not rows:
        return dict(tracked)
    last = rows[-1][0]
    advanced = dict(tracked)
    with garbage_collection_paused():
        events = decode_rows(rows)
        trades = trade_facts(conn, events)
        for projection in projections:
            after = tracked[projection.name]
            if after >= last:
                continue
            mine = events if after < rows[0][0] else [e for e in events if e.position > after]
            projection.write(conn, projection.fold(mine, trades), suffix)
            advanced[projection.name] = last
    return advanced


def save_positions(conn: psycopg.Connection[Any], advanced: dict[str, int]) -> None:
    with conn.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {TRACKING_TABLE} (name, position) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position",
            list(advanced.items()))


class _Projections(Follower):
    """The projections as one follower of the log: each keeps its own tracking row, and a
    batch starts at the lowest of them (a rebuilt projection may stand further on)."""

    name = "projections"

    def __init__(self, projections: Sequence[Projection], runner: ProjectionRunner) -> None:
        self.projections = tuple(projections)
        self.names = [p.name for p in self.projections]
        self.runner = runner
        self.tracked: dict[str, int] = {}
        self.advanced: dict[str, int] = {}

    def connected(self, conn: psycopg.Connection[Any]) -> bool:
        setup(conn, self.projections)
        return True

    def locked_position(self, conn: psycopg.Connection[Any]) -> int:
        self.tracked = dict(conn.execute(
            f"SELECT name, position FROM {TRACKING_TABLE} WHERE name = ANY(%s)"
            " ORDER BY name FOR UPDATE", (self.names,)).fetchall())
        self.advanced = dict(self.tracked)
        return min(self.tracked.values())

    def handle(self, conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]],
               _prepared: Any) -> None:
        self.advanced = apply_batch(conn, self.projections, self.tracked, rows)

    def save_position(self, conn: psycopg.Connection[Any], _before: int, _after: int) -> None:
        changed = {n: self.advanced[n] for n in self.names
                   if self.advanced[n] != self.tracked[n]}
        if changed:
            save_positions(conn, changed)

    def committed(self, _position: int) -> None:
        self.runner.publish(dict(self.advanced))


class ProjectionRunner:
    """Keeps projections up to date: catch up in large batches, then follow live.

    It is one `eventlog.follower.Following`: a projection whose fold keeps failing on one
    event stops the runner there (`stopped` says where and why) instead of retrying
    forever. `wait_for(position)` gives read-your-writes: it returns once every
    projection has committed that log position (or False after the timeout).
    """

    def __init__(self, url: str, schema: str,
                 projections: Sequence[Projection] = ALL, *, start: bool = True,
                 batch_size: int = limits.projection_batch_size_events) -> None:
        self.url = url
        self.schema = schema
        self.projections = tuple(projections)
        self.batch_size = batch_size
        names = {p.name for p in self.projections}
        with connect(url, schema) as conn:
            setup(conn, self.projections)
            self._positions = {name: position for name, position in positions(conn).items()
                               if name in names}
        self._condition = threading.Condition()
        self._following = Following(url, schema, _Projections(self.projections, self),
                                    batch_size=batch_size,
                                    poll_seconds=limits.projection_poll_seconds)
        if start:
            self.start()

    @property
    def error(self) -> BaseException | None:
        """The last failure of a batch, until one succeeds again."""
        return self._following.error

    @property
    def stopped(self) -> Stopped | None:
        """Where the runner stopped at a poison event, if it did."""
        return self._following.stopped

    # Synchronous use ---------------------------------------------------------------------

    def run_batch(self) -> int:
        """Read, fold and commit one batch; return the number of rows read."""
        conn = self._following.connection()
        assert conn is not None
        return self._following.run_batches(conn, once=True)

    def catch_up(self) -> int:
        """Run batches until the log is exhausted; return the number of rows read."""
        return self._following.catch_up()

    def publish(self, advanced: dict[str, int]) -> None:
        with self._condition:
            self._positions = advanced
            self._condition.notify_all()

    # Live following ----------------------------------------------------------------------

    def start(self) -> None:
        with suppress(psycopg.Error):  # a stop recorded by an earlier run is tried again
            self._following.clear_stop()
        self._following.start()

    def wait_for(self, position: int, timeout: float = 5.0) -> bool:
        """Whether every projection has committed `position` within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while min(self._positions.values(), default=0) < position:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
        return True

    def positions(self) -> dict[str, int]:
        with self._condition:
            return dict(self._positions)

    def stop(self) -> None:
        self._following.stop(timeout=limits.projection_poll_seconds * 5)

    def __enter__(self) -> ProjectionRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Rebuild ---------------------------------------------------------------------------------

def rebuild(url: str, schema: str, name: str | Sequence[str] | None = None,
            progress: bool = True, *, batch_size: int = limits.rebuild_batch_size_events,
            workers: int | None = None) -> dict[str, int]:
    """Rebuild projections from position 0 into shadow tables, then swap them in.

    The projections are shared out among `workers` processes (default one per core) by
    their expected cost; each process reads the events of its projections in one stream,
    folds in memory and writes with COPY. The swap (drop old tables, rename the shadow
    tables and their indexes, set the tracking rows) is one transaction, taken after
    catching up the last events under the tracking rows' lock: readers see the old
    tables or the new ones, never half.
    """
    projections = select(name)
    names = [p.name for p in projections]
    workers = max(1, min(workers or os.cpu_count() or 1, len(projections)))
    writer = connect(url, schema)
    try:
        setup(writer, projections)
        with writer.transaction():
            for projection in projections:
                projection.drop_tables(writer, SHADOW_SUFFIX)
                projection.create_tables(writer, SHADOW_SUFFIX, deferred=True)
        groups = _groups(projections, workers)
        jobs = [(url, schema, group, batch_size, progress, slot)
                for slot, group in enumerate(groups)]
        if len(jobs) == 1:
            heads = [_build_shadow(job) for job in jobs]
        else:
            # Fork, not spawn: the children only open connections of their own, and spawn
            # would demand an `if __name__ == "__main__"` guard of every caller.
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                heads = list(pool.map(_build_shadow, jobs))
        built = {n: head for group, head in zip(groups, heads, strict=True) for n in group}
        with writer.transaction():
            writer.execute(f"SELECT position FROM {TRACKING_TABLE} WHERE name = ANY(%s)"
                           " FOR UPDATE", (names,))
            while True:  # the events appended while the shadow tables were being built
                with writer.cursor(binary=True) as tail:
                    tail.execute(SQL(_SELECT_EVENTS + " LIMIT %s").format(
                        events=Identifier(EVENTS_TABLE)), (min(built.values()), batch_size))
                    rows = tail.fetchall()
                if not rows:
                    break
                built = apply_batch(writer, projections, built, rows, SHADOW_SUFFIX)
            for projection in projections:
                _swap_in(writer, projection)
            save_positions(writer, built)
        return built
    finally:
        writer.close()


def _groups(projections: Sequence[Projection], workers: int) -> list[tuple[str, ...]]:
    """Projections shared out among `workers` builders, most expensive first, each to the
    builder with the least expected work (one scan of the events per builder)."""
    groups: list[list[Projection]] = [[] for _ in range(min(workers, len(projections)))]
    for projection in sorted(projections, key=lambda p: -p.rebuild_cost):
        min(groups, key=lambda g: sum(p.rebuild_cost for p in g)).append(projection)
    return [tuple(p.name for p in group) for group in groups if group]


def _build_shadow(job: tuple[str, str, tuple[str, ...], int, bool, int]) -> int:
    """Fold every event of some projections up to the head of a snapshot into their shadow
    tables; return that head (the position the shadow tables now reflect).

    A reader thread streams the projections' events (binary COPY, only its topics) into a
    bounded queue while this thread folds and writes, so the server's reading and sending
    overlaps with folding. Merged rows (balances, totals) stay in memory across batches,
    up to `limits.rebuild_merged_rows_max`, and go into the still empty tables by plain COPY;
    append-only rows are copied batch by batch into a table without indexes. Keys and
    indexes are built once at the end: faster than maintaining them row by row.
    """
    from tqdm import tqdm  # noqa: PLC0415  (only rebuilds show progress)

    url, schema, names, batch_size, progress, slot = job
    projections = select(names)
    reader = connect(url, schema)
    writer = connect(url, schema)
    try:
        # The shadow rows become durable with the swap's (synchronous) commit.
        writer.execute("SET synchronous_commit = off")
        writer.commit()
        reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with reader.transaction():
            # The projections are built side by side already; a parallel scan would only
            # take their cores. Enough memory to sort a projection's events without disk.
            reader.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            reader.execute(f"SET LOCAL work_mem = '{limits.rebuild_sort_memory_mb}MB'")
            row = reader.execute(SQL("SELECT COALESCE(MAX(notification_id), 0) FROM {}")
                                 .format(Identifier(EVENTS_TABLE))).fetchone()
            head = row[0] if row else 0
            changes = [projection.changes() for projection in projections]
            written: set[str] = set()
            with (_EventStream(reader, projections, head, batch_size) as stream,
                  tqdm(total=head, disable=not progress, unit="ev", desc="+".join(names),
                       position=slot) as bar):
                for rows in stream:
                    with writer.transaction(), garbage_collection_paused():
                        events = decode_rows(rows)
                        trades = trade_facts(writer, events)
                        for projection, mine in zip(projections, changes, strict=True):
                            projection.fold_into(mine, events, trades)
                            projection.write_appended(writer, mine, SHADOW_SUFFIX)
                            if mine.merged_count() >= limits.rebuild_merged_rows_max:
                                projection.write_merged(writer, mine, SHADOW_SUFFIX, written)
                    bar.update(rows[-1][0] - bar.n)
                bar.update(head - bar.n)
        with writer.transaction():
            for projection, mine in zip(projections, changes, strict=True):
                projection.write_merged(writer, mine, SHADOW_SUFFIX, written)
                projection.create_deferred(writer, SHADOW_SUFFIX)
        return head
    finally:
        reader.close()
        writer.close()


class _EventStream:
    """Batches of some projections' event rows up to `head`, read by a thread of its own.

    The thread owns `conn` (in the caller's snapshot transaction) until the stream is
    closed; at most `limits.rebuild_batches_queued_max` batches wait in memory.
    """

    def __init__(self, conn: psycopg.Connection[Any], projections: Sequence[Projection],
                 head: int, batch_size: int) -> None:
        self.conn = conn
        self.patterns = [pattern for p in projections for pattern in p.topic_patterns()]
        self.head = head
        self.batch_size = batch_size
        self.batches: queue.Queue[list[Any] | BaseException | None] = queue.Queue(
            maxsize=limits.rebuild_batches_queued_max)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._read, name="projection-rebuild-reader",
                                       daemon=True)

    def __enter__(self) -> _EventStream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        while self.thread.is_alive():  # unblock a reader waiting on a full queue
            with suppress(queue.Empty):
                self.batches.get(timeout=0.05)
        self.thread.join()

    def __iter__(self) -> Iterator[list[Any]]:
        while True:
            item = self.batches.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _put(self, item: list[Any] | BaseException | None) -> bool:
        while not self.stopping.is_set():
            try:
                self.batches.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def _read(self) -> None:
        statement = SQL(
            "COPY (SELECT notification_id, replace(originator_id::text, '-', ''),"
            " originator_version, topic, convert_from(state, 'UTF8') FROM {events}"
            " WHERE topic LIKE ANY({patterns}) AND notification_id <= {head}"
            " ORDER BY notification_id) TO STDOUT (FORMAT BINARY)").format(
                events=Identifier(EVENTS_TABLE), patterns=Literal(self.patterns),
                head=Literal(self.head))
        try:
            with self.conn.cursor() as cursor, cursor.copy(statement) as copy:
                # The state as text: decoded once, by the server, not copied as bytes first.
                copy.set_types(["bigint", "text", "bigint", "text", "text"])
                batch: list[Any] = []
                for row in copy.rows():
                    batch.append(row)
                    if len(batch) >= self.batch_size:
                        if not self._put(batch):
                            return
                        batch = []
                if batch and not self._put(batch):
                    return
            self._put(None)
        except BaseException as error:  # handed to the folding thread, which raises it
            self._put(error)


def _swap_in(conn: psycopg.Connection[Any], projection: Projection) -> None:
    for table in projection.tables:
        shadow = table.name + SHADOW_SUFFIX
        indexes = [row[0] for row in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            " AND tablename = %s", (shadow,)).fetchall()]
        conn.execute(SQL("DROP TABLE IF EXISTS {}").format(Identifier(table.name)))
        conn.execute(SQL("ALTER TABLE {} RENAME TO {}").format(
            Identifier(shadow), Identifier(table.name)))
        for index in indexes:
            conn.execute(SQL("ALTER INDEX {} RENAME TO {}").format(
                Identifier(index), Identifier(index.replace(shadow, table.name, 1))))


# Folding in memory -----------------------------------------------------------------------

def fold_all(url: str, schema: str, name: str | Sequence[str] | None = None,
             batch_size: int = limits.rebuild_batch_size_events) -> dict[str, dict[Key, Row]]:
    """Every projection table computed purely in memory from all events.

    For tests and auditors: a projection is right when its tables equal this fold.
    """
    projections = select(name)
    state: dict[str, dict[Key, Row]] = {t.name: {} for p in projections for t in p.tables}
    trades = TradeFacts()
    with (connect(url, schema) as conn, conn.transaction(),
          conn.cursor(name="fold_all", binary=True) as cursor):
        cursor.execute(SQL(_SELECT_EVENTS).format(events=Identifier(EVENTS_TABLE)), (0,))
        while rows := cursor.fetchmany(batch_size):
            with garbage_collection_paused():
                events = decode_rows(rows)
                for event in events:
                    if event.name == "Trade.Recorded":
                        trades.by_trade_id[event.data["trade_id"]] = event.data
                for projection in projections:
                    merge_into(state, projection.fold(events, trades))
    return state


def read_all(conn: psycopg.Connection[Any],
             name: str | Sequence[str] | None = None) -> dict[str, dict[Key, Row]]:
    """Every projection table as stored, in the shape `fold_all` returns."""
    return {t.name: read_table(conn, t) for p in select(name) for t in p.tables}
