"""The unit of work: the aggregates one command reads and changes.

A command handler finds aggregates through it (from the batch in flight, the cache,
or, when asked, the database), declares what it is about to change, and so lets the
commit engine check the save against the versions of everything the command read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from ledger.engine import Batch
from ledger.errors import DomainError
from ledger.events import Cause

A = TypeVar("A", bound=Aggregate)


class AggregateSource(Protocol):
    """Where a unit of work reads aggregates from (the ledger application)."""

    def load(self, aggregate_id: UUID) -> Aggregate | None: ...

    def load_fresh(self, aggregate_id: UUID) -> Aggregate | None: ...

    def cached(self, aggregate_id: UUID) -> bool: ...

    def warm(self, aggregate_ids: list[UUID]) -> None: ...

    def load_many(self, aggregate_ids: list[UUID]) -> dict[UUID, Aggregate]: ...


class UnitOfWork:
    """The aggregates one command reads and changes, seen through the batch in flight.

    Every aggregate it reads from outside the batch is noted with the version it had
    (0: it did not exist), so that the save can check nobody changed it meanwhile.
    With `fresh`, those reads come from the database, never from the cache.
    """

    def __init__(self, ledger: AggregateSource, batch: Batch, *, fresh: bool) -> None:
        self.ledger = ledger
        self.batch = batch
        self.fresh = fresh
        self.touched: dict[UUID, Aggregate] = {}
        self.versions_before: dict[UUID, int] = {}
        self.read: dict[UUID, int] = {}
        self.read_fresh_ahead: dict[UUID, Aggregate] = {}

    def find(self, cls: type[A], aggregate_id: UUID) -> A | None:
        aggregate = self.batch.in_flight.get(aggregate_id) or self.touched.get(aggregate_id)
        if aggregate is None:
            aggregate = self._read(aggregate_id)
        if aggregate is None:
            return None
        if not isinstance(aggregate, cls):
            return None
        return aggregate

    def _read(self, aggregate_id: UUID) -> Aggregate | None:
        if self.fresh:
            aggregate = (self.read_fresh_ahead.pop(aggregate_id, None)
                         or self.ledger.load_fresh(aggregate_id))
        else:
            aggregate = self.ledger.load(aggregate_id)
        version = 0 if aggregate is None else aggregate.version
        self.read.setdefault(aggregate_id, version)
        seen = self.batch.read_versions.get(aggregate_id)
        if seen is None or version < seen:
            self.batch.read_versions[aggregate_id] = version
        return aggregate

    def read_ahead(self, aggregate_ids: list[UUID]) -> None:
        """About to read many aggregates: load those not in flight nor yet read together,
        in one round trip (into the cache; a fresh unit keeps them for its own reads)."""
        wanted = [aggregate_id for aggregate_id in aggregate_ids
                  if aggregate_id not in self.batch.in_flight
                  and aggregate_id not in self.touched and aggregate_id not in self.read]
        if not self.fresh:
            self.ledger.warm(wanted)
        elif wanted:
            self.read_fresh_ahead.update(self.ledger.load_many(wanted))

    def find_known(self, cls: type[A], aggregate_id: UUID) -> A | None:
        """`find`, optimistic unless fresh, as `exists` is: an aggregate neither in flight nor
        cached is taken as absent (read at version 0, no round trip), and the save has the
        last word: creating it then breaks the events table's key, a rejection resting on
        its absence is checked against committed state, and either runs again reading fresh.
        For aggregates that are mostly new and then cached (a pair's monthly counter)."""
        if (self.fresh or aggregate_id in self.batch.in_flight or aggregate_id in self.touched
                or self.ledger.cached(aggregate_id)):
            return self.find(cls, aggregate_id)
        self.read.setdefault(aggregate_id, 0)
        self.batch.read_versions.setdefault(aggregate_id, 0)
        return None

    def get(self, cls: type[A], aggregate_id: UUID, missing_code: str) -> A:
        aggregate = self.find(cls, aggregate_id)
        if aggregate is None:
            raise DomainError(missing_code, str(aggregate_id))
        return aggregate

    def exists(self, aggregate_id: UUID) -> bool:
        """Whether an aggregate exists. Optimistic unless fresh: an id that is neither in
        flight nor cached is taken as new, and the primary key has the last word."""
        if aggregate_id in self.batch.in_flight or aggregate_id in self.touched:
            return True
        if not self.fresh and self.ledger.cached(aggregate_id):
            return True
        if self.fresh:
            return self._read(aggregate_id) is not None
        return False

    def change(self, *aggregates: Aggregate) -> None:
        """Declare aggregates this command is about to change (before changing them)."""
        for aggregate in aggregates:
            if aggregate.id not in self.touched:
                self.touched[aggregate.id] = aggregate
                self.versions_before[aggregate.id] = aggregate.version

    def changed_anything(self) -> bool:
        return any(
            aggregate.version != self.versions_before[aggregate_id]
            for aggregate_id, aggregate in self.touched.items()
        )


Result = tuple[dict[str, Any], UUID | None]
"""A handler's result fields, and the complex its request record is filed under."""
Handler = Callable[[Any, Cause, UnitOfWork], Result]
"""Runs one command in a unit of work: reads, checks, then changes (see ledger.application)."""
