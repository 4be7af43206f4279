"""Tamper evidence for the event log: a hash chain, signed checkpoints, a verifier.

See `audit.chain` for the chain rule and the follower that maintains
`audit_chain`, `audit.signing` for checkpoint signatures, and
`audit.verify` for the problem codes `verify_chain` reports.
"""

from __future__ import annotations

from audit.chain import (
    GENESIS_HASH,
    ChainFollower,
    canonical_bytes,
    chain_hashes,
    create_tables,
    next_hash,
)
from audit.export import export_checkpoints
from audit.signing import Checkpoint, SigningKey, load_public_key, load_signing_key
from audit.verify import PROBLEM_CODES, ChainReport, verify_chain

__all__ = [
    "GENESIS_HASH",
    "PROBLEM_CODES",
    "ChainFollower",
    "ChainReport",
    "Checkpoint",
    "SigningKey",
    "canonical_bytes",
    "chain_hashes",
    "create_tables",
    "export_checkpoints",
    "load_public_key",
    "load_signing_key",
    "next_hash",
    "verify_chain",
]
