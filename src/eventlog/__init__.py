"""The committed event log and the one loop that follows it.

`eventlog.log` names the table and the channel and decodes stored rows;
`eventlog.follower` runs every reader of the log (the projections, the Kafka relay,
the audit hash chain) the same way: ordered batches, the reader's effects and its
position in one transaction, LISTEN plus polling, bounded backoff, and a stated
policy for an event that keeps failing. This package imports only the write side.
"""
