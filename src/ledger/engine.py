"""The commit engine: commands queued, run in groups, saved in one transaction each.

The invariant, which the structure below enforces:

    Every command taken off the queue is answered exactly once, with its own true
    outcome: committed (its result and log position), its own rejection evaluated
    against committed state, or `DatabaseUnavailable` (nothing was decided; retry
    with the same request id).

How:
- `execute` queues the command and waits, at most `command_wait_seconds_max`. A caller
  that finds no leader becomes the leader: it takes up to `batch_commands_max` commands
  off the queue, runs them, answers them, and hands over as soon as its own command is
  answered (at most `leader_batches_max` batches), so no caller serves others for long.
  A command still in the queue when its caller's wait ends is taken back out and
  answered unavailable; a command already taken is answered by its batch, whose every
  database wait is bounded.
- `_run` wraps each batch: whatever happens inside, every command of the batch that is
  still unanswered when it ends is answered (`_answer_rest`), so no path out of a batch
  leaves a caller waiting.
- A batch runs each command against the aggregates in memory (group commit), then saves
  all their events in one statement. The save also checks that every aggregate a command
  only read is still at the version it read (`read_versions`): the events table's
  primary key catches a concurrent change of what a command changes, this catches a
  concurrent change of what it merely read (a seller who moved out in another process).
  On either conflict the batch runs again in its order, what it read read anew, once;
  then every command alone, reading fresh.
- A rejection computed from memory may be stale (another process credited the wallet).
  So, before the batch saves, each rejection is checked against committed state in one
  round trip: if its request id was not accepted before and every aggregate it read from
  outside the batch is still at the version it read, it stands (and the save checks those
  versions again); otherwise the whole batch runs again in its order, what it read read
  anew, then each command alone, reading fresh (`fresh=True`). Commands sent together
  are so answered as if sent one by one, in order (see docs/ledger.md).
- A command that repeats the (actor, request id) of one before it in the same batch does
  not run: it gets its first's answer (`request_id_reused` if its content differs), as a
  retry sent after the first would (`split_repeats`).
- A database error answers `DatabaseUnavailable`; an error in the ledger's own code
  answers that command with the error and runs the rest of its batch again, alone.

What it does is reported to an `EngineObserver` (the API's metrics): the queue's depth
whenever it changes and each batch's size and duration. An observer that fails is
logged and otherwise ignored: reporting never changes an answer.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

import psycopg
from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError

from ledger import commands as c
from ledger import errors, limits
from ledger.errors import DatabaseUnavailable, DomainError
from ledger.events import Cause
from ledger.request import fingerprint

if TYPE_CHECKING:
    from ledger.application import Outcome

logger = logging.getLogger(__name__)

DATABASE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)
"""Errors that mean the database did not answer (the pool's timeout is one of them)."""


@dataclass
class Pending:
    """One command from taking to answer."""

    command: c.Command
    cause: Cause
    signal: threading.Event = field(default_factory=threading.Event, repr=False)
    """Set when the command is answered, or to nudge its waiting caller to lead."""
    finished: bool = False
    outcome: Outcome | None = None
    error: BaseException | None = None
    attempts: int = 0

    def answer(self, outcome: Outcome | None = None, error: BaseException | None = None) -> None:
        """Answer the command; exactly once."""
        assert not self.finished, f"{self.command.name} answered twice"
        assert (outcome is None) != (error is None)
        self.outcome = outcome
        self.error = error
        self.finished = True
        self.signal.set()


@dataclass
class Staged:
    """A command accepted in memory: its events, result and what it read."""

    pending: Pending
    events: list[Any]
    result: dict[str, Any]
    request: Any = None
    """Its request record (`ledger.request.RequestRow`), saved with its events."""


@dataclass
class Rejected:
    """A command rejected in memory, and the aggregates its rejection rests on."""

    pending: Pending
    error: DomainError
    read: dict[UUID, int]
    """The aggregates it read from outside its batch, and their versions (0: missing)."""


class Batch:
    """What one attempt at a group of commands stages before it saves."""

    def __init__(self) -> None:
        self.in_flight: dict[UUID, Any] = {}
        self.created: dict[UUID, Any] = {}
        self.read_versions: dict[UUID, int] = {}
        self.staged: list[Staged] = []
        self.rejected: list[Rejected] = []


class Ledgerlike(Protocol):
    """What the engine needs of the application (implemented by `ledger.Ledger`)."""

    def stage(self, pending: Pending, batch: Batch, *, fresh: bool) -> None:
        """Run the command against memory; add it to `batch.staged` or `batch.rejected`,
        or answer it (a replayed request). Raises on anything else."""

    def save_batch(self, batch: Batch, companion: Sequence[Any] = ()) -> list[int]:
        """Save the staged events in one transaction, with the `companion` statements;
        the position of each event. Raises IntegrityError when another writer changed
        what the batch changed or read."""

    def saved(self, batch: Batch) -> None:
        """After a successful save: cache what was created, take due snapshots."""

    def evict(self, aggregate_ids: list[UUID]) -> None:
        """Drop these aggregates from the cache (they may be stale or half-changed)."""

    def prefetch(self, items: list[tuple[c.Command, Cause]]) -> None:
        """Load into the cache, together, what the commands read and the cache lacks."""

    def rejection_stands(self, rejected: Rejected) -> bool:
        """Whether a rejection computed from memory holds against committed state: every
        aggregate it read is still at the version it read, and its request id was not
        accepted before (one round trip)."""

    def writing_alone(self) -> AbstractContextManager[bool]:
        """Hold the writers' cross-process lock for one batch, the cache first cleared of
        what other writers changed since this process last held it; yields whether the
        lock is held (False: it could not be had in time, and the batch runs without)."""


class EngineObserver(Protocol):
    """Told what the engine does, for metrics. Called on the callers' threads, the queue
    depth under the queue's lock: each call must be quick."""

    def queue_depth_changed(self, depth: int) -> None:
        """Commands now waiting to be taken into a batch."""

    def batch_ran(self, commands: int, seconds: float) -> None:
        """A batch of `commands` commands taken off the queue (or handed in by bulk
        loading) was run and answered in `seconds`; re-runs inside it are not counted
        again."""


class Unobserved:
    """The observer of an engine nobody watches."""

    def queue_depth_changed(self, depth: int) -> None:
        del depth

    def batch_ran(self, commands: int, seconds: float) -> None:
        del commands, seconds


def split_repeats(batch: list[Pending]) -> tuple[list[Pending], list[tuple[Pending, Pending]]]:
    """The commands of a batch whose (actor, request id) is the first of its kind, and
    each later one paired with that first. Only the first runs: two saves of one request
    id would conflict on its record again on every attempt."""
    first_of: dict[tuple[UUID, str], Pending] = {}
    unique: list[Pending] = []
    repeats: list[tuple[Pending, Pending]] = []
    for pending in batch:
        key = (pending.cause.actor_id, pending.cause.request_id)
        first = first_of.setdefault(key, pending)
        if first is pending:
            unique.append(pending)
        else:
            repeats.append((pending, first))
    return unique, repeats


def answer_repeats(repeats: list[tuple[Pending, Pending]]) -> None:
    """Answer each repeat that can be answered now as a retry sent after its first would
    be: `request_id_reused` when its content differs, else its first's answer (an
    outcome marked replayed) once the first has one."""
    for pending, first in repeats:
        if pending.finished:
            continue
        if (fingerprint(pending.command.name, pending.command.content())
                != fingerprint(first.command.name, first.command.content())):
            pending.answer(error=DomainError(errors.request_id_reused,
                                             pending.cause.request_id))
        elif first.outcome is not None:
            pending.answer(outcome=dataclasses.replace(first.outcome, replayed=True))
        elif first.error is not None:
            pending.answer(error=first.error)


class Engine:
    """The queue, the leader and the batches of one writer process."""

    def __init__(self, ledger: Ledgerlike, make_outcome: Callable[[dict[str, Any], int],
                                                                  Outcome]) -> None:
        self.ledger = ledger
        self.make_outcome = make_outcome
        self._write_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: deque[Pending] = deque()
        self._closing = False
        self._contended_until = 0.0
        self.batches = 0
        self.commands = 0
        self.observer: EngineObserver = Unobserved()

    @property
    def write_lock(self) -> threading.Lock:
        """Held while a batch runs (and by bulk loading)."""
        return self._write_lock

    def contended(self) -> bool:
        """Whether batches take the writers' cross-process lock now: a save was refused
        because another writer changed what this one read or changed, less than
        `limits.contended_seconds` ago."""
        return time.monotonic() < self._contended_until

    def queue_depth(self) -> int:
        with self._queue_lock:
            return len(self._queue)

    # Callers ---------------------------------------------------------------------------

    def execute(self, command: c.Command, cause: Cause,
                wait_seconds: float = limits.command_wait_seconds_max) -> Outcome:
        """Run one command; return its outcome, or raise its DomainError or
        DatabaseUnavailable. Returns within `wait_seconds` plus one batch's bounded work."""
        pending = Pending(command, cause)
        with self._queue_lock:
            if self._closing:
                raise DatabaseUnavailable("the ledger is shutting down")
            self._queue.append(pending)
            self._queue_depth_changed()
        deadline = time.monotonic() + wait_seconds
        while not pending.finished:
            if self._write_lock.acquire(blocking=False):
                try:
                    self._lead(pending)
                finally:
                    self._write_lock.release()
                self._nudge_next()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0 and self._withdraw(pending):
                pending.answer(error=DatabaseUnavailable(
                    f"no answer within {wait_seconds:g} s: the ledger is overloaded or "
                    "its database is slow"))
                break
            # Woken when answered, or nudged to lead by the caller that just let go of
            # the write lock; the timeout is only a safety net.
            pending.signal.wait(min(0.05, max(remaining, 0.005)))
            pending.signal.clear()
        if pending.error is not None:
            raise pending.error
        assert pending.outcome is not None
        return pending.outcome

    def execute_many(self, items: list[tuple[c.Command, Cause]],
                     ) -> list[Outcome | DomainError]:
        """Run many commands in order, sharing transactions (bulk loading).

        Each command still runs alone against the state the earlier ones left, and is
        accepted or rejected on its own; up to `bulk_commands_max` share one save.
        DatabaseUnavailable and programmer errors propagate.
        """
        results: list[Outcome | DomainError] = []
        with self._write_lock:
            for start in range(0, len(items), limits.bulk_commands_max):
                batch = [Pending(command, cause)
                         for command, cause in items[start:start + limits.bulk_commands_max]]
                self._run(batch)
                for pending in batch:
                    if isinstance(pending.error, DomainError):
                        results.append(pending.error)
                    elif pending.error is not None:
                        raise pending.error
                    else:
                        assert pending.outcome is not None
                        results.append(pending.outcome)
        return results

    def execute_atomically(
            self, items: list[tuple[c.Command, Cause]],
            companion_for: Callable[[list[tuple[int, DomainError]]], Sequence[Any]],
    ) -> list[Outcome | DomainError]:
        """Run the commands in order, as `execute_many` would answer them, and save every
        accepted one in ONE transaction together with the statements `companion_for`
        makes of the rejections ((index, error) pairs): all of it is committed, or
        nothing. For an import, whose progress and rejections must never be committed
        apart from the effects they go with (a resumed run would otherwise judge a
        refused line again, against state that lines after it already changed).

        A save refused because another writer changed what the commands read or changed
        runs the whole group again, what it read read anew (then fresh), up to
        `command_attempts_max` times; then, and when the database is away,
        DatabaseUnavailable: nothing was committed, and the caller may retry the group.
        """
        with self._write_lock:
            for attempt in range(limits.command_attempts_max):
                fresh = attempt >= 1  # after a conflict: everything read anew
                batch = [Pending(command, cause) for command, cause in items]
                unique, repeats = split_repeats(batch)
                staging = Batch()
                try:
                    if not fresh:
                        self.ledger.prefetch([(pending.command, pending.cause)
                                              for pending in unique])
                    for pending in unique:
                        self.ledger.stage(pending, staging, fresh=fresh)
                    if not fresh and not all(self.ledger.rejection_stands(rejected)
                                             for rejected in staging.rejected):
                        self.ledger.evict(list(staging.in_flight)
                                          + list(staging.read_versions))
                        continue
                    # Rejections stand now (this attempt's answers are dropped should its
                    # save fail): answered before the save, so that repeats share them.
                    for rejected in staging.rejected:
                        rejected.pending.answer(error=rejected.error)
                    answer_repeats(repeats)
                    rejections = [(index, pending.error) for index, pending in enumerate(batch)
                                  if isinstance(pending.error, DomainError)]
                    positions = self.ledger.save_batch(staging, companion_for(rejections))
                except IntegrityError:
                    self._contended_until = time.monotonic() + limits.contended_seconds
                    self.ledger.evict(list(staging.in_flight) + list(staging.read_versions))
                    continue
                except DATABASE_ERRORS as error:
                    self.ledger.evict(list(staging.in_flight) + list(staging.read_versions))
                    raise DatabaseUnavailable(str(error)) from error
                except BaseException:
                    self.ledger.evict(list(staging.in_flight) + list(staging.read_versions))
                    raise
                index = 0
                for stage in staging.staged:
                    index += len(stage.events)
                    stage.pending.answer(outcome=self.make_outcome(stage.result,
                                                                   positions[index - 1]))
                self.ledger.saved(staging)
                answer_repeats(repeats)
                results: list[Outcome | DomainError] = []
                for pending in batch:  # every one answered: staged, rejected or replayed
                    if pending.outcome is not None:
                        results.append(pending.outcome)
                    else:
                        assert isinstance(pending.error, DomainError), pending.error
                        results.append(pending.error)
                self.batches += 1
                self.commands += len(batch)
                return results
        raise DatabaseUnavailable("gave up after concurrent changes; retry the same group")

    def close(self, wait_seconds: float = limits.command_wait_seconds_max) -> None:
        """Stop taking commands; answer the queued ones unavailable; wait (bounded) for
        the batch in flight to finish."""
        with self._queue_lock:
            self._closing = True
            queued = list(self._queue)
            self._queue.clear()
            self._queue_depth_changed()
        for pending in queued:
            pending.answer(error=DatabaseUnavailable("the ledger is shutting down"))
        if self._write_lock.acquire(timeout=wait_seconds):
            self._write_lock.release()

    def _withdraw(self, pending: Pending) -> bool:
        """Take a command back out of the queue; False if a batch has it already."""
        with self._queue_lock:
            try:
                self._queue.remove(pending)
            except ValueError:
                return False
            self._queue_depth_changed()
            return True

    def _queue_depth_changed(self) -> None:
        """Report the queue's depth; the caller holds the queue's lock."""
        try:
            self.observer.queue_depth_changed(len(self._queue))
        except Exception:  # reporting never fails a command
            logger.exception("the engine's observer failed")

    def _nudge_next(self) -> None:
        """After letting go of the write lock: a command queued meanwhile gets a leader."""
        with self._queue_lock:
            head = self._queue[0] if self._queue else None
        if head is not None:
            head.signal.set()

    def _lead(self, own: Pending) -> None:
        """Serve batches until the leader's own command is answered, at most
        `leader_batches_max` of them; then hand over (the next caller is nudged)."""
        for _ in range(limits.leader_batches_max):
            with self._queue_lock:
                if not self._queue:
                    return
                batch = [self._queue.popleft()
                         for _ in range(min(len(self._queue), limits.batch_commands_max))]
                self._queue_depth_changed()
            self._run(batch)
            if own.finished:
                return

    # Batches ---------------------------------------------------------------------------

    def _run(self, batch: list[Pending], *, fresh: bool = False) -> None:
        """Run a batch; afterwards, every one of its commands is answered.

        While other writer processes change what this one reads (a conflict in the last
        `contended_seconds`), batches take the writers' cross-process lock, so that each
        stages against state no other writer can change before it saves; alone, a
        process writes without it. Correctness never rests on the lock: the save's
        checks stay."""
        began = time.monotonic()
        unique, repeats = split_repeats(batch)
        try:
            if began < self._contended_until:
                with self.ledger.writing_alone():
                    self._attempt(unique, fresh=fresh, again_together=not fresh)
            else:
                self._attempt(unique, fresh=fresh, again_together=not fresh)
        except Exception as error:  # answered below; the leader's caller gets its own answer
            logger.exception("a batch of %d commands failed", len(batch))
            self._answer_rest(unique, error)
        except BaseException as error:
            self._answer_rest(unique, error)
            answer_repeats(repeats)
            raise
        self._answer_rest(unique, None)
        answer_repeats(repeats)
        self.batches += 1
        self.commands += len(batch)
        try:
            self.observer.batch_ran(len(batch), time.monotonic() - began)
        except Exception:  # reporting never fails a batch
            logger.exception("the engine's observer failed")

    def _answer_rest(self, batch: list[Pending], error: BaseException | None) -> None:
        """The structure's guarantee: no command of a batch leaves it unanswered."""
        for pending in batch:
            if not pending.finished:
                logger.error("%s left its batch unanswered (%r); answering unavailable",
                             pending.command.name, error)
                pending.answer(error=DatabaseUnavailable("the command's batch failed"))

    def _attempt(self, batch: list[Pending], *, fresh: bool,
                 again_together: bool = False) -> None:
        """Stage, save and answer `batch`. With `again_together`, a save refused because
        another writer changed what the batch read runs the batch once more as a whole,
        with what it read evicted (so read anew), before each command is run alone."""
        staging = Batch()
        if not fresh and len(batch) > 1:
            try:
                self.ledger.prefetch([(pending.command, pending.cause) for pending in batch])
            except DATABASE_ERRORS as error:  # nothing decided: each may retry at once
                logger.warning("a batch of %d commands: database unavailable: %s",
                               len(batch), error)
                for pending in batch:
                    if not pending.finished:
                        pending.answer(error=DatabaseUnavailable(str(error)))
                return
        for index, pending in enumerate(batch):
            pending.attempts += 1
            try:
                self.ledger.stage(pending, staging, fresh=fresh)
            except BaseException as error:
                # Nothing of this batch is saved; its staged changes live in memory only.
                self.ledger.evict(list(staging.in_flight) + list(staging.read_versions))
                pending.answer(error=self._unexpected(pending, error))
                # Each of the others gets its own outcome, alone (and, should the
                # database be away, unavailable as soon as one of them finds it so).
                self._each_alone([*[s.pending for s in staging.staged],
                                  *[r.pending for r in staging.rejected], *batch[index + 1:]])
                if not isinstance(error, Exception):
                    raise
                return
        if not fresh and staging.rejected and self._stale_rejection(batch, staging,
                                                                    again_together):
            return
        if staging.staged:
            try:
                positions = self.ledger.save_batch(staging)
            except IntegrityError:
                self._contended_until = time.monotonic() + limits.contended_seconds
                # Another writer changed what these commands changed or read (rejections
                # too may rest on what was stale).
                self._again(batch, staging, again_together)
                return
            except BaseException as error:
                self.ledger.evict(list(staging.in_flight))
                for stage in staging.staged:
                    stage.pending.answer(error=self._unexpected(stage.pending, error))
                for rejected in staging.rejected:
                    rejected.pending.answer(error=DatabaseUnavailable(
                        "not checked: the database failed"))
                if not isinstance(error, Exception):
                    raise
                return
            index = 0
            for stage in staging.staged:
                index += len(stage.events)
                stage.pending.answer(outcome=self.make_outcome(stage.result,
                                                               positions[index - 1]))
            self.ledger.saved(staging)
        # Each rejection stood against committed state (checked above, or staged fresh),
        # and the save checked that nothing it read changed since.
        for rejected in staging.rejected:
            rejected.pending.answer(error=rejected.error)

    def _stale_rejection(self, batch: list[Pending], staging: Batch,
                         again_together: bool) -> bool:
        """Whether a rejection from memory does not stand against committed state (what it
        read was changed by another writer, or its request id was accepted elsewhere); if
        so the batch runs again, in its order, what it read read anew, and True.

        Checked before the save, so that a stale rejection runs again in its place in the
        order, never after the commands behind it (which `execute_many` keeps in order).
        """
        try:
            stale = [rejected for rejected in staging.rejected
                     if not self.ledger.rejection_stands(rejected)]
        except DATABASE_ERRORS as error:  # not checked: nothing is decided
            self.ledger.evict(list(staging.in_flight) + list(staging.read_versions))
            for pending in batch:
                if not pending.finished:
                    pending.answer(error=DatabaseUnavailable(str(error)))
            return True
        if not stale:
            return False
        self._again(batch, staging, again_together)
        return True

    def _again(self, batch: list[Pending], staging: Batch, again_together: bool) -> None:
        """Run the batch's unanswered commands again, in their order, with what it changed
        and read dropped from the cache (so read anew): as a batch once (usually one
        aggregate was stale), then each alone, reading fresh."""
        self.ledger.evict(list(staging.in_flight) + list(staging.read_versions))
        retry = [pending for pending in batch if not pending.finished]
        if again_together:
            self._attempt(retry, fresh=False)
        else:
            self._each_alone(retry)

    def _each_alone(self, batch: list[Pending]) -> None:
        """Run each command again by itself, every aggregate read fresh; once the database
        is found away, the rest are answered unavailable at once."""
        for index, pending in enumerate(batch):
            if pending.finished:
                continue
            if pending.attempts >= limits.command_attempts_max:
                pending.answer(error=DatabaseUnavailable(
                    "gave up after concurrent changes; retry with the same request id"))
                continue
            self._attempt([pending], fresh=True)
            if isinstance(pending.error, DatabaseUnavailable):
                for other in batch[index + 1:]:
                    if not other.finished:
                        other.answer(error=DatabaseUnavailable(str(pending.error)))
                return

    @staticmethod
    def _unexpected(pending: Pending, error: BaseException) -> BaseException:
        if isinstance(error, DatabaseUnavailable):
            return error
        if isinstance(error, DATABASE_ERRORS):
            logger.warning("%s: database unavailable: %s", pending.command.name, error)
            return DatabaseUnavailable(str(error))
        logger.error("%s failed: %r", pending.command.name, error, exc_info=error)
        return error
