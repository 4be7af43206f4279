"""Limits of the audit hash chain, the unit last in the name.

They sit apart from `ledger.limits` only because the audit package is owned
separately; they may move there when the two are merged.
"""

from __future__ import annotations

batch_size_events = 5_000
"""Events the chain follower reads, hashes and commits in one transaction."""

batch_size_events_max = 100_000
"""A larger batch holds one transaction open for too long."""

fetch_size_rows = 20_000
"""Rows the verifier takes from its server-side cursors per round trip."""

checkpoint_interval_events_default = 10_000
"""A signed checkpoint at least every this many chained events."""

checkpoint_interval_seconds_default = 10 * 60
"""A signed checkpoint at least this often while new events are chained."""

poll_interval_seconds_default = 1.0
"""How long an idle follower sleeps before looking for new events."""

findings_max = 100
"""Problems one verification keeps; the first (lowest position) is the one reported."""

statement_lines_max = 100_000
"""Lines in one monthly statement; a wallet or fund with more is refused, not cut short."""

events_page_size_max = 1_000
"""Events in one page of the auditor's event log (GET /v1/audit/events)."""

events_page_size_default = 100
