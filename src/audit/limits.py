"""The audit chain's old names for its limits, which now live in `ledger.limits`.

Only `audit.chain` and `audit.follower` still read them; delete this module once they
import `ledger.limits`.
"""

from __future__ import annotations

from ledger.limits import (
    chain_batch_size_events as batch_size_events,
)
from ledger.limits import (
    chain_batch_size_events_max as batch_size_events_max,
)
from ledger.limits import (
    chain_poll_seconds_default as poll_interval_seconds_default,
)
from ledger.limits import (
    checkpoint_interval_events_default,
    checkpoint_interval_seconds_default,
)

__all__ = [
    "batch_size_events",
    "batch_size_events_max",
    "checkpoint_interval_events_default",
    "checkpoint_interval_seconds_default",
    "poll_interval_seconds_default",
]
