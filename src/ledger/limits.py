"""Every limit in one place, the unit last in the name.

Limits protect the ledger from mistakes and abuse: a trade of ten billion won is
a typo, not a sale. Raising one is a deliberate change made here.
"""

from __future__ import annotations

amount_won_max = 100_000_000
"""Largest single trade, rent invoice, payment, spend or payout: 100 million won."""

rate_bps_max = 10_000
"""A rate is at most 100 % (10,000 basis points) per share."""

string_length_max = 200
"""Names, purposes, decision references and categories."""

identifier_length_max = 64
"""Client-generated identifiers: request ids, trade ids, invoice ids, payment ids."""

policy_rates_count_max = 200
"""Rows in one accrual policy version."""

hold_seconds_default = 3 * 24 * 3600
"""A rent hold not settled or released within three days is released automatically."""

hold_seconds_max = 31 * 24 * 3600
"""No hold may last longer than a month."""

batch_commands_max = 512
"""Commands that share one transaction in the group commit."""

bulk_commands_max = 2_000
"""Commands that share one transaction when loading in bulk (seeding)."""

command_attempts_max = 5
"""Times a command is retried after a concurrent writer changed the same aggregate."""

aggregate_cache_size_default = 200_000
"""Aggregates kept in memory by one writer process."""

policy_reload_seconds = 5.0
"""How stale a process's cached accrual policy may get before it is read again."""

page_size_max = 500
"""Rows in one page of any listing."""

page_size_default = 50
