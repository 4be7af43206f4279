"""Every limit in one place, the unit last in the name.

Limits protect the ledger from mistakes and abuse: a trade of ten billion won is
a typo, not a sale. Raising one is a deliberate change made here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

# Write side (ledger) -----------------------------------------------------------------------

amount_won_max = 100_000_000
"""Largest single trade, rent invoice, payment, spend or payout: 100 million won."""

rate_bps_max = 10_000
"""A rate is at most 100 % (10,000 basis points) per share."""

string_length_max = 200
"""Names, purposes, decision references and categories."""

calendar_year_earliest = 2000
"""The earliest year a billing period, a statement month or a day of market statistics names."""

calendar_year_latest = 2100
"""The latest year a billing period, a statement month or a day of market statistics names."""

identifier_length_max = 64
"""Client-generated identifiers: request ids, trade ids, invoice ids, payment ids."""

policy_rates_count_max = 200
"""Rows in one accrual policy version."""

guard_same_household_refused_default = True
"""Wash-trade guard: a trade between two residents of one household is refused."""

guard_sharing_accrual_won_per_month_default = 30_000
"""Wash-trade guard: personal points one resident may accrue from the sharing market per KST
month (at the seeded 3 % personal rate, a million won of sharing trades)."""

guard_pair_trades_per_month_default = 31
"""Wash-trade guard: trades between the same two residents per KST month, both directions
counted together (one a day: a daily carpool or school walk fits)."""

guard_pair_trades_per_month_max = 10_000
"""The largest pair cap a policy version may set."""

hold_seconds_default = 3 * 24 * 3600
"""A rent hold not settled or released within three days is released automatically."""

hold_seconds_min = 60
"""A rent hold gives billing at least a minute to settle or release it."""

hold_seconds_max = 31 * 24 * 3600
"""No hold may last longer than a month."""

# Resident votes on common-fund spending (ledger.proposal): the defaults and bounds.

quorum_bps_default = 3_000
"""A proposal is decided only if ballots came from at least 30 % of the complex's
registered households (ballots x 10,000 >= quorum_bps x households)."""

approval_bps_default = 5_000
"""A proposal is approved if yes ballots are more than 50 % of the ballots cast
(yes x 10,000 > approval_bps x ballots): a simple majority."""

approval_bps_max = 9_999
"""The strictest approval threshold: more than 99.99 % yes, i.e. no household against."""

voting_window_seconds_min = 3600
"""A voting window is open for at least an hour."""

voting_window_seconds_max = 60 * 24 * 3600
"""A voting window is open for at most 60 days."""

voting_opens_within_seconds_max = 60 * 24 * 3600
"""A proposal's voting opens at most 60 days after it is proposed."""

title_length_max = 100
"""A proposal's title: short, and no personal data."""

fund_allowance_won_default = 300_000
"""What a complex's fund may spend per KST month without citing an approved proposal,
until the operator sets the complex's own allowance."""
group_buy_quantity_max = 100_000
"""Largest total quantity one group buy may offer (its maximum)."""

group_buy_orders_max = 5_000
"""Orders one group buy may take: its close saves a trade for each in one transaction."""

group_buy_complexes_max = 100
"""Complexes one group buy may be open to."""

group_buy_open_days_max = 92
"""A group buy's deadline is at most about three months after it opens."""

group_buy_trade_prefix = "group-buy:"
"""The trade of a group-buy order is `group-buy:<order_id>`; platform trades may not use it."""

group_buy_order_id_length_max = identifier_length_max - len(group_buy_trade_prefix)
"""An order id leaves room for its trade id's prefix."""

batch_commands_max = 512
"""Commands that share one transaction in the group commit."""

bulk_commands_max = 2_000
"""Commands that share one transaction when loading in bulk (seeding)."""

command_wait_seconds_max = 3.0
"""Longest a command waits in the queue for a batch to take it; then it is answered
unavailable (a command already taken is answered by its batch, whose waits are bounded)."""

leader_batches_max = 4
"""Batches a leader runs for others before it hands the write lock over."""

database_connect_seconds_max = 2
"""Longest wait to open a connection to PostgreSQL for the write side."""

database_checkout_seconds_max = 2.0
"""Longest wait for a free pooled connection (the write side's and the API's read pool)."""

database_statement_seconds_max = 5
"""Longest one SQL statement may run on the write side or the API's read pool."""

database_reconnect_seconds_max = 24 * 3600.0
"""How long a pool keeps trying to reconnect to a database that went away (it retries
with backoff meanwhile; requests get 503 until it is back)."""

pooled_connection_idle_check_seconds = 1.0
"""A pooled connection idle this long is checked before use (a restart may have cut it)."""

database_lock_seconds_max = 2
"""Longest a writer waits for the events table's lock."""

writers_catch_up_events_max = 10_000
"""Other writers' events a process applies to its cache on taking the writers' lock;
further behind, it drops its cache instead."""

contended_seconds = 10.0
"""After a conflict with another writer process, batches take the writers' lock this long."""

command_attempts_max = 5
"""Times a command is retried after a concurrent writer changed the same aggregate."""

aggregate_cache_memory_fraction = 8
"""By default a writer process's aggregate cache may take 1/8 of the machine's memory
(LEDGER_AGGREGATE_CACHE_SIZE sets the number of aggregates instead)."""

aggregate_bytes_estimate = 4096
"""Memory one cached aggregate is reckoned to take: measured at about 0.4 KiB for a new
wallet and 2.2 KiB for a household with its command, doubled for growth."""

aggregate_cache_size_min = 10_000
aggregate_cache_size_max = 4_000_000
"""Bounds of the default cache size (a nationwide registry is about 3.2 M aggregates)."""

notify_coalesce_seconds = 0.003
"""A writer tells the log's followers about its commits at most this often (one NOTIFY
covers every commit since the last)."""

notify_retry_seconds = 1.0
"""After a failed NOTIFY (the database away), the notifier waits this long before trying."""

import_chunk_lines = 500
"""Lines of an import a worker sends to the ledger together (and then records as done)."""

import_lookup_ids_max = 10_000
"""Ids an import looks up in the ledger in one statement, to place lines by complex."""

import_unavailable_seconds_max = 60
"""How long an import waits for an unavailable database before it stops (resumable)."""

import_workers_max = 64
"""Worker processes of one import."""

import_workers_default_max = 4
"""The default number of import workers is the machine's cores but one, at most this."""

prefetch_ids_min = 2
"""A batch loads the aggregates its commands name in one round trip when at least this
many are missing from the cache (one alone is loaded when first read, at the same cost)."""

policy_reload_seconds = 5.0
"""How stale a process's cached accrual policy may get before it is read again."""

page_size_max = 500
"""Rows in one page of any listing."""

page_size_default = 50
"""Rows in one page of a listing when the caller does not say how many."""

position_max = 2**63 - 1
"""The largest event log position (a PostgreSQL bigint); also bounds cursors that are positions."""

# Followers of the event log (eventlog.follower) -----------------------------------------

log_batch_size_events_default = 5_000
"""Events a follower reads, handles and commits in one transaction, unless it says otherwise."""

log_batch_size_events_max = 100_000
"""A larger batch holds one transaction open for too long."""

log_poll_seconds_default = 1.0
"""How long an idle follower waits for a notification before reading anyway."""

log_backoff_seconds_min = 0.1
"""First wait after a follower lost the database (or the broker); doubles on each failure."""

log_backoff_seconds_max = 10.0
"""Longest wait between a follower's retries while a dependency is away."""

poison_attempts_max = 3
"""Times in a row one event may fail a follower before it stops there (a poison event)."""

follower_stop_seconds_max = 10.0
"""How long stopping waits for a follower's thread to finish its batch."""

connect_timeout_seconds = 5
"""Longest wait to open a database connection."""

# Projections (projections) -----------------------------------------------------------------

projection_stage_rows_min = 500
"""Changes to one table at least this large are written through COPY and a staging table."""

projection_batch_size_events = 5_000
"""Events the projection runner reads, folds and commits in one catch-up transaction."""

projection_poll_seconds = 1.0
"""How long the projection runner waits for a notification before reading anyway."""

rebuild_batch_size_events = 50_000
"""Events fetched from the server-side cursor per rebuild batch."""

rebuild_merged_rows_max = 1_000_000
"""Merged rows (balances, totals, payments) a rebuild holds in memory before writing them."""

rebuild_sort_memory_mb = 128
"""work_mem of a rebuild's reading session (PostgreSQL sorts a projection's events)."""

rebuild_batches_queued_max = 4
"""Batches a rebuild's reader thread may read ahead of the folding."""

topic_names_cached_max = 4_096
"""Stored topics whose event names are remembered while decoding (topics are few)."""

# The Kafka feed (feed) ---------------------------------------------------------------------

topic_partitions_max = 1024
"""Partitions of a topic the relay creates."""

topic_partitions_default = 3
"""Partitions of a topic the relay creates, unless told otherwise."""

relay_batch_size_events_default = 1_000
"""Events the relay publishes, waits for the broker to acknowledge, and records at once."""

relay_batch_size_events_max = 10_000
"""At most this many messages are sent again after a crash (one unrecorded batch)."""

relay_poll_seconds_default = 1.0
"""How long an idle relay waits for a notification before reading anyway."""

relay_send_timeout_seconds_default = 30.0
"""Longest the relay waits for the broker to acknowledge a batch before backing off."""

relay_linger_ms = 5
"""How long the producer waits to fill a request with more messages."""

relay_status_log_seconds_default = 60.0
"""How often a running relay logs its status line, unless told otherwise."""

# Audit (audit) -----------------------------------------------------------------------------

chain_batch_size_events = 5_000
"""Events the chain follower reads, hashes and commits in one transaction."""

chain_batch_size_events_max = 100_000
"""A larger chain batch holds one transaction open for too long."""

chain_poll_seconds_default = 1.0
"""How long an idle chain follower sleeps before looking for new events."""

checkpoint_interval_events_default = 10_000
"""A signed checkpoint at least every this many chained events."""

checkpoint_interval_seconds_default = 10 * 60
"""A signed checkpoint at least this often while new events are chained."""

verify_fetch_size_rows = 20_000
"""Rows the verifier takes from its server-side cursors per round trip."""

verify_memory_budget_bytes_default = 2 * 1024**3
"""What `ledger audit verify` may hold of the auditor's fold in one process (the wallets,
trades and households it keeps): the fold is split into as many hash slices as this
needs (`verify_slices_for`), each replayed in a pass of its own."""

verify_state_bytes_per_event = 512
"""The auditor's fold's memory per event of the log, measured on the pilot month (about
1 KiB per wallet, trade and invoice, about 400 bytes per event), rounded up: the log's
head position times this is what an unsliced fold would hold."""

verify_slices_max = 256
"""Hash slices of the auditor's fold at most (each is a full read of the log)."""

findings_kept_max = 100
"""Problems one verification keeps; the first (lowest position) is the one reported."""

findings_reported_max = 20
"""Problems of one verification that are recorded and shown with its result."""

statement_lines_max = 100_000
"""Lines in one monthly statement; a wallet or fund with more is refused, not cut short."""

audit_events_page_size_max = 1_000
"""Events in one page of the auditor's event log (GET /v1/audit/events)."""

audit_events_page_size_default = 100
"""Events in one page of the auditor's event log when the caller does not say how many."""

# HTTP API (api, service) -------------------------------------------------------------------

retry_after_unavailable_seconds = 2
"""What a 503 `database_unavailable` tells the caller to wait before retrying."""

retry_after_unready_seconds = 5
"""What a 503 `not_ready` from the readiness check tells the caller to wait."""

body_bytes_max_default = 64 * 1024
"""Largest request body the API reads, unless LEDGER_BODY_BYTES_MAX says otherwise (413)."""

rate_limit_writes_per_minute_default = 600
"""Writes a resident or a member of staff may make per minute (a burst of as many)."""

rate_limit_service_writes_per_minute_default = 60 * 1_000
"""Writes a service principal (the shopping platform, billing) may make per minute:
1,000 a second, above a nationwide peak of trades or rent payments."""

readiness_check_seconds_max = 2.0
"""Longest the readiness endpoint waits for a database connection before answering 503."""

token_length_max = 8192
"""Characters in one bearer token; a longer one is refused before it is decoded."""

token_id_length_max = 256
"""Characters in a token's `jti` claim, which becomes the principal's token id."""

verified_tokens_max = 10_000
"""Tokens each API process remembers as verified (each at most `token_length_max`
characters, so at most about 80 MiB, typically 5 MiB); the oldest are forgotten first and
are verified again, in full, when they come back."""

token_ttl_seconds_max = 24 * 60 * 60
"""Longest lifetime of a development token: one day."""

clock_leeway_seconds = 10
"""Clock difference tolerated between the identity provider and the API when checking times."""

rsa_key_bits_min = 2048
"""Smallest RSA key accepted to verify RS256 tokens."""

jwt_public_keys_count_max = 16
"""Identity provider keys that may be trusted at once (LEDGER_JWT_PUBLIC_KEYS)."""

jwks_bytes_max = 64 * 1024
"""Bytes of one JWKS document; a larger answer is a failed fetch (a few keys take ~1 KiB)."""

jwks_fetch_waiters_max = 8
"""Requests that may wait for one JWKS fetch at once (each at most the fetch timeout); the
others answer from the cached keys at once, so a flood of unknown `kid`s cannot take the
whole thread pool while the identity provider is slow."""

jwks_url_length_max = 2048
"""Characters in LEDGER_JWT_JWKS_URL."""

rate_limit_buckets_count_max = 100_000
"""Callers the write rate limiter tracks at once; the least recently seen are forgotten first
(a forgotten caller starts again with a full bucket, which only ever errs towards allowing)."""

consistency_poll_seconds = 0.02
"""How often a read waiting for its `X-Consistent-With` position looks at the projections."""

retry_after_not_consistent_seconds = 1
"""Retry-After of the 503 a read answers when the projections did not reach its position."""

stats_days_max = 366
"""Days one market statistics request may span."""

stats_days_default = 7
"""Days of market statistics when the caller gives no start date."""

stats_date_earliest = date(calendar_year_earliest, 1, 1)
"""The earliest day market statistics may be asked for."""

stats_date_latest = date(calendar_year_latest, 12, 31)
"""The latest day market statistics may be asked for."""

validation_errors_listed_max = 20
"""Field problems one 422 answer lists."""

accept_language_length_max = 512
"""Characters of an Accept-Language header that is read; a longer one gets the default."""

occurred_at_earliest = datetime(2020, 1, 1, tzinfo=UTC)
"""A platform time before the platform existed is a mistake."""

occurred_at_ahead_seconds_max = 10 * 60
"""How far in the future a platform time may be (clocks differ a little, never much)."""

due_at_earliest = datetime(2020, 1, 1, tzinfo=UTC)
"""The earliest due time of a rent invoice."""

due_at_latest = datetime(2100, 1, 1, tzinfo=UTC)
"""Rent invoices fall due before this time (month arithmetic breaks at the calendar's end)."""

policy_version_max = 1_000_000
"""The largest accrual policy version a trade may name."""

# Command line (cli) ------------------------------------------------------------------------

port_number_max = 65_535
"""The largest TCP port number (the API's and the relay's metrics endpoint)."""

serve_workers_max = 64
"""Worker processes `ledger serve --workers` may start."""

seed_complexes_max = 10_000
"""Complexes `ledger seed` and `ledger demo` may create."""

seed_households_max = 2_000_000
"""Households `ledger seed` and `ledger demo` may create."""

seed_months_max = 120
"""Months of activity `ledger seed` may simulate."""

# Points lifecycle (pending accruals, expiry lots) ---------------------------------------
return_window_days_max = 90
"""The longest return window a policy version may set for a market."""
expiry_months_max = 120
"""The longest life of a lot a policy version may set (months after availability)."""
expiring_soon_days = 30
"""The wallet view shows what expires within this many days."""

sweep_round_seconds_max = 20
"""How long one round of the sweeper's points work (releases, expiries) may go on taking
pages of what is due, before it leaves the rest to the next round."""
