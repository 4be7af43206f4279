"""Stored event state: the fast encoder writes exactly what the library's encoder writes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, UUIDAsHex
from hypothesis import given
from hypothesis import strategies as st

from ledger.codec import FastJSONTranscoder

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**62), 2**62) | st.text(max_size=20)
    | st.uuids() | st.datetimes(timezones=st.just(timezone(timedelta(hours=9)))),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


def transcoders() -> tuple[JSONTranscoder, JSONTranscoder]:
    fast, library = FastJSONTranscoder(), JSONTranscoder()
    for transcoder in (fast, library):
        transcoder.register(UUIDAsHex())
        transcoder.register(DatetimeAsISO())
    return fast, library


@given(st.dictionaries(st.text(max_size=12), values, max_size=8))
def test_fast_encoding_is_byte_identical_to_the_library(state: dict) -> None:
    """Any event state encodes to the very bytes the library would store, and decodes back."""
    fast, library = transcoders()
    encoded = fast.encode(state)
    assert encoded == library.encode(state)
    assert library.decode(encoded) == state


def test_an_event_state_round_trips() -> None:
    """A typical state with ids, times and Korean text survives the round trip."""
    fast, _ = transcoders()
    state = {"resident_id": uuid.uuid4(), "occurred_at": datetime.now(UTC),
             "name": "화성 1단지", "amount_won": 12_345, "on_behalf_of": None}
    assert fast.decode(fast.encode(state)) == state
