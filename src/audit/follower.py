"""Running the chain follower next to the projections.

`ledger serve` and `ledger project` start it with the projection runner:

    stop = threading.Event()
    audit_thread = start_audit_follower(url, schema, stop)
    ...
    stop.set(); audit_thread.join(timeout=5)

It is a daemon thread with its own connection; a failed batch is rolled back and
retried (see `ChainFollower.run`), so it never takes the process down.
"""

from __future__ import annotations

import os
import threading

from audit.chain import ChainFollower
from audit.signing import KEY_DIR_DEFAULT
from ledger import limits


def start_audit_follower(
    url: str,
    schema: str,
    stop_event: threading.Event,
    *,
    key_dir: str | os.PathLike[str] = KEY_DIR_DEFAULT,
    poll_interval: float = limits.chain_poll_seconds_default,
    checkpoint_interval_events: int = limits.checkpoint_interval_events_default,
    checkpoint_interval_seconds: float = limits.checkpoint_interval_seconds_default,
) -> threading.Thread:
    """Start a daemon thread that chains the log until `stop_event` is set; return it."""
    follower = ChainFollower(url, schema, key_dir=key_dir,
                             checkpoint_interval_events=checkpoint_interval_events,
                             checkpoint_interval_seconds=checkpoint_interval_seconds)
    follower.signing_key  # noqa: B018  (load or create the key now: fail at start, not later)
    thread = threading.Thread(target=follower.run, args=(stop_event, poll_interval),
                              name="audit-chain-follower", daemon=True)
    thread.start()
    return thread
