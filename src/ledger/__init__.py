"""The points ledger for public rental housing: write side (domain and application)."""
