"""The committed event log: where it is, how to read it in order, how to decode its rows.

The log is the table the `eventsourcing` library creates for the application named
"Ledger": `ledger_events` in the ledger's schema, with writers notifying the channel
`ledger_events` on every commit. Writers append under an EXCLUSIVE table lock, so
positions (`notification_id`) commit in order and reading `notification_id > position
ORDER BY notification_id` never passes over an event that commits later. Positions may
have gaps, left by transactions that took a position and rolled back: a gap is never a
loss.

Every reader of the log reads and decodes rows here, in one of three depths:
- `StoredRow`: the row as stored (the relay publishes it, the audit chain hashes it);
- `Event` (`decode_row`, `decode_rows`): the state parsed as JSON with orjson, UUIDs as
  32 hex digits and times as ISO strings (projections and the auditor's fold, where
  decoding dominates the cost);
- `to_domain_event`: the library's own domain event object (the public event contract,
  summaries), through the same mapper and transcoder the ledger writes with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
import psycopg
from psycopg.sql import SQL, Composed, Identifier

from ledger import limits
from ledger.codec import decode

EVENTS_TABLE = "ledger_events"
"""The events table, in the ledger's schema."""

NOTIFY_CHANNEL = "ledger_events"
"""The channel writers NOTIFY on every commit."""

COLUMNS = "notification_id, originator_id, originator_version, topic, state"
"""The columns of a stored row, in the order `StoredRow` and `decode_row` take them."""

SKIPPED_NAMES = frozenset({"RequestRecord.Accepted"})
"""Events no fold reads; their state is never parsed."""


def events_table(schema: str | None = None) -> Composed:
    """The events table as an SQL identifier, qualified by `schema` when one is given."""
    if schema is None:
        return Composed([Identifier(EVENTS_TABLE)])
    return SQL("{}.{}").format(Identifier(schema), Identifier(EVENTS_TABLE))


def select_after(schema: str | None = None) -> Composed:
    """`SELECT` of the stored rows after position %s, in log order, at most %s of them."""
    return SQL("SELECT " + COLUMNS + " FROM {} WHERE notification_id > %s"
               " ORDER BY notification_id LIMIT %s").format(events_table(schema))


def read_after(conn: psycopg.Connection[Any], position: int, limit: int,
               schema: str | None = None) -> list[tuple[Any, ...]]:
    """At most `limit` stored rows after `position`, in log order, as
    (position, originator_id: UUID, originator_version, topic, state: bytes) tuples."""
    assert 0 < limit <= limits.log_batch_size_events_max, limit
    with conn.cursor(binary=True) as cursor:
        cursor.execute(select_after(schema), (position, limit))
        return cursor.fetchall()


def head_position(conn: psycopg.Connection[Any], schema: str | None = None) -> int:
    """The largest committed position (0 for an empty or missing log)."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (
        events_table(schema).as_string(conn),)).fetchone()
    if not (exists and exists[0]):
        return 0
    row = conn.execute(SQL("SELECT coalesce(max(notification_id), 0) FROM {}").format(
        events_table(schema))).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class StoredRow:
    """One committed event as stored: `state` is the UTF-8 JSON of the event's fields."""

    position: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes

    @property
    def event_class_name(self) -> str:
        """`Resident.PointsAccrued` for the topic `ledger.resident:Resident.PointsAccrued`."""
        return self.topic.rpartition(":")[2]


def to_domain_event(row: StoredRow) -> Any:
    """The library's domain event stored in `row`."""
    return decode(row.originator_id, row.originator_version, row.topic, row.state)


@dataclass(slots=True)
class Event:
    """One row of the events table, decoded just enough for folding (projections, audit)."""

    position: int
    originator_id: str  # 32 hex digits
    originator_version: int
    name: str  # e.g. "Resident.PointsAccrued"
    data: dict[str, Any]

    @property
    def occurred_at(self) -> str:
        return str(self.data["occurred_at"]["_data_"])

    @property
    def recorded_at(self) -> str:
        return str(self.data["timestamp"]["_data_"])

    def uuid(self, field_name: str) -> str | None:
        """A UUID field as 32 hex digits, or None."""
        value = self.data.get(field_name)
        return None if value is None else str(value["_data_"])

    def time(self, field_name: str) -> str | None:
        value = self.data.get(field_name)
        return None if value is None else str(value["_data_"])


_names_by_topic: dict[str, str | None] = {}
"""Topic -> event name, or None for skipped events; topics are few and repeat."""


def event_name(topic: str) -> str | None:
    """'ledger.resident:Resident.PointsAccrued' -> 'Resident.PointsAccrued' (None if skipped)."""
    try:
        return _names_by_topic[topic]
    except KeyError:
        name: str | None = topic[topic.index(":") + 1:]
        if name in SKIPPED_NAMES:
            name = None
        if len(_names_by_topic) < limits.topic_names_cached_max:
            _names_by_topic[topic] = name
        return name




def decode_row(position: int, originator_id: Any, originator_version: int, topic: str,
               state: str | bytes) -> Event | None:
    """The event in one stored row, or None for events no fold reads (request records)."""
    name = event_name(topic)
    if name is None:
        return None
    if isinstance(originator_id, str):
        oid = originator_id if len(originator_id) == 32 else originator_id.replace("-", "")
    else:
        oid = originator_id.hex if isinstance(originator_id, UUID) else str(
            originator_id).replace("-", "")
    document = orjson.loads(state if isinstance(state, (str, bytes)) else bytes(state))
    return Event(position, oid, originator_version, name, document)


def decode_rows(rows: Iterable[Sequence[Any]]) -> list[Event]:
    """Rows of (notification_id, originator_id, originator_version, topic, state)."""
    events: list[Event] = []
    append = events.append
    for position, originator_id, version, topic, state in rows:
        event = decode_row(position, originator_id, version, topic, state)
        if event is not None:
            append(event)
    return events
