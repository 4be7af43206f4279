"""Per-principal limits on writes: one token bucket per caller.

A bucket holds up to a minute's allowance and refills continuously, so a caller may
burst up to `writes_per_minute` and then write at that steady rate. Buckets live in
this process only: with several workers each enforces its own share, which is the
right failure direction (a caller gets at most `workers` times the rate).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from ledger import limits


@dataclass
class _Bucket:
    tokens: float
    refilled_at: float


class WriteRateLimiter:
    """Thread-safe token buckets keyed by caller."""

    def __init__(self, writes_per_minute: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        assert writes_per_minute >= 1
        self.capacity = float(writes_per_minute)
        self.refill_per_second = writes_per_minute / 60.0
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    def take(self, caller: Hashable) -> float:
        """Take one write from the caller's bucket: 0.0 if allowed, else the seconds
        until one write is available again (nothing is taken then)."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(caller)
            if bucket is None:
                bucket = _Bucket(self.capacity, now)
                self._buckets[caller] = bucket
                if len(self._buckets) > limits.rate_limit_buckets_count_max:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(caller)
                elapsed = max(0.0, now - bucket.refilled_at)
                bucket.tokens = min(self.capacity,
                                    bucket.tokens + elapsed * self.refill_per_second)
                bucket.refilled_at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.refill_per_second
