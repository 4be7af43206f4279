"""Realistic datasets loaded through the ledger's own commands (`ledger seed`, the demo,
benchmarks)."""
