"""The one loop that follows the committed log, for every reader of it.

A `Follower` says what to do with an ordered batch of stored rows and where its
position is kept; `Following` runs it:

1. In one transaction: lock and read the follower's position, read the rows after
   it (at most one batch, in log order), let the follower write the batch's effects,
   save the new position, commit. Effects and position commit together, so a replay
   after any crash is exactly once in effect; the lock makes two processes that follow
   under one name take turns instead of applying a batch twice.
2. A follower whose effect is not in the database (the Kafka relay) returns a waiter
   from `handle`: the loop reads and prepares the next batch while the effect
   completes, waits, and only then saves the position. At most one batch is ever
   effected and not yet recorded.
3. Between batches it waits for a NOTIFY on the log's channel, at most
   `poll_seconds`, so a lost notification delays a batch, never loses one.
4. A transient failure (the database or the broker unreachable: `transient` errors)
   closes the connection and backs off, doubling from `backoff_seconds_min` up to
   `backoff_seconds_max`, with jitter, for as long as it lasts.
5. Any other failure is the follower's own. The batch is rolled back and tried again
   one event at a time, so the failing event is found. An event that fails
   `poison_attempts_max` times in a row is poison: the follower stops at it, logs one
   error line naming its position and the error, records the stop in `log_followers`
   (read by the readiness endpoint and `ledger project`), and waits to be restarted;
   every other follower keeps going. Skipping the event would leave the follower's
   tables silently wrong, which is worse than stale.
"""

from __future__ import annotations

import logging
import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from eventlog.log import NOTIFY_CHANNEL, head_position, read_after
from ledger import limits
from ledger.database import ConnectionSettings

log = logging.getLogger(__name__)

STATUS_TABLE = "log_followers"
"""Where each follower's stop at a poison event is recorded, for every process to see."""

TRANSIENT_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError, psycopg.InterfaceError, OSError)
"""Failures of the database (or the network), not of a follower: retried with backoff."""

Waiter = Callable[[], None]
"""Returned by `Follower.handle` when the batch's effect completes after it returns."""


class Follower(ABC):
    """One reader of the committed log.

    `handle` writes the batch's effects in the loop's transaction; `locked_position`
    and `save_position` keep the follower's position, in the same transaction.
    """

    name: str
    """Unique among the followers of one schema; names the follower in logs and status."""

    transient: tuple[type[BaseException], ...] = TRANSIENT_DATABASE_ERRORS
    """Errors that mean a dependency is away: back off and retry, never poison."""

    listens: bool = True
    """Wake on every commit's notification; False: look every poll interval only (a
    follower that batches better than it needs to be prompt, like the audit chain)."""

    def connected(self, conn: psycopg.Connection[Any]) -> bool:
        """Prepare a new connection (tables, session settings); False to stand by."""
        del conn
        return True

    @abstractmethod
    def locked_position(self, conn: psycopg.Connection[Any]) -> int:
        """The follower's position, locked until the transaction ends."""

    def prepare(self, rows: list[tuple[Any, ...]]) -> Any:
        """Work on a batch that needs no database (decoding); may run ahead of `handle`."""
        return rows

    @abstractmethod
    def handle(self, conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]],
               prepared: Any) -> Waiter | None:
        """Write the effects of `rows` (after `prepare`) in the current transaction."""

    @abstractmethod
    def save_position(self, conn: psycopg.Connection[Any], before: int, after: int) -> None:
        """Record that every event up to `after` is handled (the position was `before`)."""

    def committed(self, position: int) -> None:
        """Called after the transaction that reached `position` committed."""
        del position

    def recover(self, error: BaseException) -> None:
        """Called after a transient failure, before backing off: drop clients that may be
        broken (the loop reconnects to the database itself)."""
        del error

    def idle(self, conn: psycopg.Connection[Any]) -> None:
        """Called in a transaction of its own when the follower has caught up (timers)."""
        del conn


@dataclass(frozen=True)
class Stopped:
    """A follower stopped at a poison event."""

    name: str
    position: int
    error: str


@dataclass(slots=True)
class _Batch:
    after: int
    rows: list[tuple[Any, ...]]
    prepared: Any

    @property
    def last(self) -> int:
        return int(self.rows[-1][0])


def connect(url: str, schema: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A connection for following: search_path is the ledger's schema, connecting is
    bounded by `limits.connect_timeout_seconds`."""
    return psycopg.connect(ConnectionSettings.from_url(url).conninfo(), autocommit=autocommit,
                           options=f"-c search_path={schema}",
                           connect_timeout=limits.connect_timeout_seconds)


def create_status_table(conn: psycopg.Connection[Any]) -> None:
    conn.execute(SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY,"
                     " stopped_at_position bigint NOT NULL, error text NOT NULL,"
                     " stopped_at timestamptz NOT NULL DEFAULT now())")
                 .format(Identifier(STATUS_TABLE)))


def stopped_followers(conn: psycopg.Connection[Any]) -> list[Stopped]:
    """Followers of this schema stopped at a poison event (in any process)."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (STATUS_TABLE,)).fetchone()
    if not (exists and exists[0]):
        return []
    rows = conn.execute(SQL("SELECT name, stopped_at_position, error FROM {} ORDER BY name")
                        .format(Identifier(STATUS_TABLE))).fetchall()
    return [Stopped(name, int(position), error) for name, position, error in rows]


class Following:
    """Runs one `Follower`: synchronously (`catch_up`) or in a thread (`start`)."""

    def __init__(self, url: str, schema: str, follower: Follower, *,
                 batch_size: int = limits.log_batch_size_events_default,
                 poll_seconds: float = limits.log_poll_seconds_default,
                 backoff_seconds_min: float = limits.log_backoff_seconds_min,
                 backoff_seconds_max: float = limits.log_backoff_seconds_max,
                 poison_attempts_max: int = limits.poison_attempts_max) -> None:
        assert 0 < batch_size <= limits.log_batch_size_events_max, batch_size
        assert poll_seconds > 0
        assert 0 < backoff_seconds_min <= backoff_seconds_max
        assert poison_attempts_max >= 1
        self.url = url
        self.schema = schema
        self.follower = follower
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.backoff_seconds_min = backoff_seconds_min
        self.backoff_seconds_max = backoff_seconds_max
        self.poison_attempts_max = poison_attempts_max
        self.error: BaseException | None = None
        """The last failure, until a batch succeeds again."""
        self.stopped: Stopped | None = None
        """Set when the follower stopped at a poison event."""
        self._conn: psycopg.Connection[Any] | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # While a failure is being narrowed down (one event per batch): the position
        # the failing event follows, and how many times in a row it failed.
        self._log_exists = False
        self._narrowing = False
        self._suspect = -1
        self._suspect_failures = 0

    # Synchronous use -------------------------------------------------------------------

    def run_batches(self, conn: psycopg.Connection[Any], *, single: bool = False,
                    once: bool = False,
                    progress: Callable[[int], None] | None = None) -> int:
        """Handle batches on `conn` until the log is exhausted; return the rows handled.

        Failures propagate (the failed batch rolled back). `once` stops after one batch;
        `single` handles one event, to find the one that fails.
        """
        once = once or single
        limit = 1 if single else self.batch_size
        follower = self.follower
        ahead: _Batch | None = None
        total = 0
        while not self._stopping.is_set():
            with conn.transaction():
                position = follower.locked_position(conn)
                batch = ahead if ahead is not None and ahead.after == position else None
                ahead = None
                if batch is None:
                    batch = self._read(conn, position, limit)
                if batch is None:
                    return total
                waiter = follower.handle(conn, batch.rows, batch.prepared)
                if waiter is not None:
                    if len(batch.rows) == limit:
                        # The effect completes meanwhile; the next batch waits, prepared.
                        ahead = self._read_ahead(conn, batch.last, limit)
                    waiter()
                # After this point, every effect of the batch is done: record its position.
                follower.save_position(conn, position, batch.last)
            follower.committed(batch.last)
            total += len(batch.rows)
            if progress is not None:
                progress(len(batch.rows))
            if once or len(batch.rows) < limit:
                return total
        return total

    def _read(self, conn: psycopg.Connection[Any], position: int, limit: int) -> _Batch | None:
        if not self._log_exists:
            # A follower may start before the ledger created its log: nothing to read yet.
            self._log_exists = head_position(conn) > 0
            if not self._log_exists:
                return None
        rows = read_after(conn, position, limit)
        if not rows:
            return None
        assert rows[0][0] > position, (rows[0][0], position)
        return _Batch(position, rows, self.follower.prepare(rows))

    def _read_ahead(self, conn: psycopg.Connection[Any], position: int,
                    limit: int) -> _Batch | None:
        """The next batch, read while the current one completes; a failure to prepare it
        is left for the next turn, which reads it again and fails there, in order."""
        try:
            return self._read(conn, position, limit)
        except Exception:  # raised again, in its turn
            return None

    def catch_up(self, progress: Callable[[int], None] | None = None) -> int:
        """Handle every event committed so far on the follower's own connection; failures
        propagate. Returns the rows handled."""
        conn = self.connection()
        if conn is None:
            return 0
        return self.run_batches(conn, progress=progress)

    def connection(self) -> psycopg.Connection[Any] | None:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = connect(self.url, self.schema)
        try:
            with conn.transaction():
                ready = self.follower.connected(conn)
        except BaseException:
            conn.close()
            raise
        if not ready:
            conn.close()
            return None
        self._conn = conn
        return conn

    # Following in a thread -------------------------------------------------------------

    def start(self) -> None:
        assert self._thread is None
        self._thread = threading.Thread(target=self.run, name=f"follower-{self.follower.name}",
                                        daemon=True)
        self._thread.start()

    def run(self) -> None:
        """Follow until `stop()`; the body of the follower's thread."""
        backoff = self.backoff_seconds_min
        listener: psycopg.Connection[Any] | None = None
        try:
            while not self._stopping.is_set() and self.stopped is None:
                try:
                    if self.follower.listens and (listener is None or listener.closed):
                        listener = connect(self.url, self.schema, autocommit=True)
                        listener.execute(SQL("LISTEN {}").format(Identifier(NOTIFY_CHANNEL)))
                    conn = self.connection()
                    if conn is None:  # another process follows under this name
                        self._stopping.wait(self.poll_seconds)
                        continue
                    self._turn(conn)
                    if type(self.follower).idle is not Follower.idle:
                        with conn.transaction():
                            self.follower.idle(conn)
                    self.error = None
                    backoff = self.backoff_seconds_min
                except self.follower.transient as error:
                    self.error = error
                    log.warning("follower %s: %s unavailable, retrying in at most %.1f s: %s",
                                self.follower.name, _dependency(error), backoff, error)
                    self._close()
                    self.follower.recover(error)
                    if listener is not None:
                        listener.close()
                    self._stopping.wait(backoff * random.uniform(0.5, 1.0))  # noqa: S311
                    backoff = min(backoff * 2, self.backoff_seconds_max)
                    continue
                except Exception as error:  # the follower's own failure
                    self.error = error
                    self._failed(error)
                    if self.stopped is None:
                        self._stopping.wait(self.backoff_seconds_min)
                    continue
                if listener is None:  # a follower that does not listen: polls
                    self._stopping.wait(self.poll_seconds)
                    continue
                try:
                    for _ in listener.notifies(timeout=self.poll_seconds, stop_after=1):
                        pass
                    for _ in listener.notifies(timeout=0):  # the next read covers them all
                        pass
                except psycopg.Error as error:  # the database went away while we idled
                    log.warning("follower %s: listening connection lost, reconnecting: %s",
                                self.follower.name, error)
                    listener.close()  # reopened (with backoff, if still away) next turn
        finally:
            if listener is not None:
                listener.close()
            self._close()

    def _turn(self, conn: psycopg.Connection[Any]) -> None:
        """Catch up once. After a failed batch, one event per batch until a batch's worth
        went through (the failure was passing, or the failing event is found)."""
        if self._narrowing:
            for _ in range(self.batch_size):
                if self._stopping.is_set() or not self.run_batches(conn, single=True):
                    break
            self._narrowing = False
            self._suspect_failures = 0
        self.run_batches(conn)

    def _failed(self, error: Exception) -> None:
        conn = self._conn
        if conn is not None and not conn.closed:
            conn.rollback()
        try:
            position = self._position()
        except Exception:  # the connection broke too: retried as transient
            self._close()
            return
        if not self._narrowing:
            self._narrowing = True
            self._suspect = position
            self._suspect_failures = 0
            log.warning("follower %s: a batch after position %d failed, retrying event by "
                        "event: %r", self.follower.name, position, error)
            return
        if self._suspect != position:
            self._suspect = position
            self._suspect_failures = 0
        self._suspect_failures += 1
        if self._suspect_failures < self.poison_attempts_max:
            return
        event_position = self._next_position(position)
        self.stopped = Stopped(self.follower.name, event_position, repr(error)[:2000])
        log.error("follower %s stopped at position %d: that event failed %d times in a row: "
                  "%r; the other followers go on; fix the cause and restart",
                  self.follower.name, event_position, self._suspect_failures, error)
        self._record_stop(self.stopped)

    def _position(self) -> int:
        conn = self.connection()
        assert conn is not None
        with conn.transaction():
            return self.follower.locked_position(conn)

    def _next_position(self, position: int) -> int:
        """The position of the first event after `position` (the one that fails)."""
        conn = self.connection()
        assert conn is not None
        with conn.transaction():
            rows = read_after(conn, position, 1)
        return int(rows[0][0]) if rows else position + 1

    def _record_stop(self, stopped: Stopped) -> None:
        try:
            with connect(self.url, self.schema) as conn:
                create_status_table(conn)
                conn.execute(SQL("INSERT INTO {} (name, stopped_at_position, error)"
                                 " VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
                                 " stopped_at_position = EXCLUDED.stopped_at_position,"
                                 " error = EXCLUDED.error, stopped_at = now()")
                             .format(Identifier(STATUS_TABLE)),
                             (stopped.name, stopped.position, stopped.error))
        except psycopg.Error:
            log.exception("follower %s: could not record its stop", self.follower.name)

    def clear_stop(self) -> None:
        """Forget a recorded stop of this follower (at start: it is tried again)."""
        with connect(self.url, self.schema) as conn:
            create_status_table(conn)
            conn.execute(SQL("DELETE FROM {} WHERE name = %s").format(Identifier(STATUS_TABLE)),
                         (self.follower.name,))

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except (psycopg.Error, OSError):
                log.debug("closing a broken connection failed", exc_info=True)

    def stop(self, timeout: float = limits.follower_stop_seconds_max) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
        self._close()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()


def _dependency(error: BaseException) -> str:
    return "the database" if isinstance(error, psycopg.Error) else "a dependency"
