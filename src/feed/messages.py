"""What the feed sends: the Kafka records a route makes from a committed event, and the
stable id every delivery of an event carries."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from eventlog.log import StoredRow

# Header names the relay writes itself; a route may not set them.
reserved_header_names = frozenset({"event_id", "position", "event_type", "schema_version"})

# Namespace of the stable event ids: uuid5(namespace, "<originator_id>:<originator_version>").
event_id_namespace = uuid.uuid5(uuid.NAMESPACE_URL, "urn:ledger:event")


def event_id(originator_id: uuid.UUID, originator_version: int) -> uuid.UUID:
    """The stable id of one event, the same on every delivery of it."""
    return uuid.uuid5(event_id_namespace, f"{originator_id}:{originator_version}")


@dataclass(frozen=True)
class OutgoingMessage:
    """One Kafka record a route makes from an event.

    `event_type` and `schema_version` describe the payload and become headers;
    `headers` holds any further headers the route wants (not the reserved names).
    """

    topic: str
    key: str
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    event_type: str = field(kw_only=True)
    schema_version: int = field(kw_only=True)


Route = Callable[[StoredRow], list[OutgoingMessage]]
"""Which Kafka records one committed event becomes (none, one or several)."""
