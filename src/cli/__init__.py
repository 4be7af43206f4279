"""The `ledger` command line: it composes the write side, the read side, the feed, the audit
and the HTTP service."""
