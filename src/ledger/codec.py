"""Turning stored rows of the events table back into domain events, without a database.

Projections, the relay and the auditors read rows themselves (in large batches)
and decode them here with the same mapper and transcoder the ledger writes with.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent


@lru_cache(maxsize=1)
def mapper() -> Mapper[UUID]:
    transcoder = JSONTranscoder()
    Application.register_transcodings(None, transcoder)  # type: ignore[arg-type]
    return Mapper(transcoder=transcoder)


def decode(originator_id: UUID, originator_version: int, topic: str, state: bytes) -> Any:
    """The domain event stored in one row of the events table."""
    return mapper().to_domain_event(
        StoredEvent(originator_id=originator_id, originator_version=originator_version,
                    topic=topic, state=bytes(state)))


def event_name(topic: str) -> str:
    """'ledger.resident:Resident.PointsAccrued' -> 'Resident.PointsAccrued'."""
    return topic.split(":", 1)[1]
