"""Turning stored rows of the events table back into domain events, without a database.

Projections, the relay and the auditors read rows themselves (in large batches)
and decode them here with the same mapper and transcoder the ledger writes with.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any
from uuid import UUID

import orjson
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


class FastJSONTranscoder(JSONTranscoder):
    """The library's JSON format, encoded with orjson.

    The stored state is the same JSON the library writes (UUIDs and datetimes as
    `{"_type_": …, "_data_": …}` objects, compact, UTF-8), so the library's decoder and
    every reader of the events table read it unchanged; only encoding is faster.
    """

    def encode(self, obj: Any) -> bytes:
        try:
            return orjson.dumps(self._with_markers(obj))
        except TypeError:  # a type only a registered transcoding knows: the library's way
            return super().encode(obj)

    def _with_markers(self, value: Any) -> Any:
        kind = type(value)
        if kind is str or kind is int or value is None or kind is bool:
            return value
        if kind is dict:
            return {key: self._with_markers(item) for key, item in value.items()}
        if kind is UUID:
            return {"_type_": "uuid_hex", "_data_": value.hex}
        if kind is datetime:
            return {"_type_": "datetime_iso", "_data_": value.isoformat()}
        if kind is list or kind is tuple:
            return [self._with_markers(item) for item in value]
        transcoding = self.types.get(kind)
        if transcoding is None:
            raise TypeError(kind)
        return {"_type_": transcoding.name,
                "_data_": self._with_markers(transcoding.encode(value))}
