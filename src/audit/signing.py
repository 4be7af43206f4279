"""Ed25519 keys and signed checkpoints of the audit hash chain.

A checkpoint says "the chain hash after position P is H", signed at time T.
The signed message is the canonical JSON of exactly those three facts:

    {"created_at":"<ISO 8601, UTC, microseconds>","hash":"<64 hex>","position":<int>}

with keys sorted, no whitespace and ASCII only. The key id is the first 16 hex
digits of SHA-256 over the raw 32-byte public key, so a checkpoint names the
key that signed it without carrying the key.

The signing key is the PEM file named by `LEDGER_AUDIT_SIGNING_KEY`; without
it, a development key is generated once in a key directory (default
`var/audit-keys/`, file mode 0600).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

SIGNING_KEY_VARIABLE = "LEDGER_AUDIT_SIGNING_KEY"
KEY_DIR_DEFAULT = Path("var/audit-keys")
DEVELOPMENT_KEY_FILE = "signing-key.pem"
PUBLIC_KEY_FILE = "public-key.pem"

PublicKeySource: TypeAlias = Ed25519PublicKey | bytes | str | os.PathLike[str]


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of SHA-256 over the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(source: PublicKeySource) -> Ed25519PublicKey:
    """A public key from a key object, PEM bytes, or the path of a PEM file."""
    if isinstance(source, Ed25519PublicKey):
        return source
    pem = source if isinstance(source, bytes) else Path(source).read_bytes()
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        msg = "the audit public key must be an Ed25519 key"
        raise TypeError(msg)
    return key


@dataclass(frozen=True)
class SigningKey:
    """The private key that signs checkpoints, with its public half and key id."""

    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)


def _read_private_key(path: Path) -> SigningKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        msg = f"{path} is not an Ed25519 private key"
        raise TypeError(msg)
    return SigningKey(key)


def load_signing_key(
    key_dir: str | os.PathLike[str] = KEY_DIR_DEFAULT,
    environ: dict[str, str] | None = None,
    *,
    create: bool = True,
) -> SigningKey | None:
    """The configured signing key; a development key in `key_dir` when none is configured.

    Returns None only when `create` is false and no key exists yet.
    """
    env = os.environ if environ is None else environ
    configured = env.get(SIGNING_KEY_VARIABLE, "").strip()
    if configured:
        return _read_private_key(Path(configured))
    path = Path(key_dir) / DEVELOPMENT_KEY_FILE
    if path.exists():
        return _read_private_key(path)
    if not create:
        return None
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        # O_EXCL: when two processes race, the first key written wins for both.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_private_key(path)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    return _read_private_key(path)


def _iso_utc(moment: datetime) -> str:
    assert moment.tzinfo is not None, "checkpoint times are timezone-aware"
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement of the chain hash after one position."""

    position: int
    hash: bytes
    created_at: datetime
    key_id: str
    signature: bytes

    @staticmethod
    def signed_message(position: int, chain_hash: bytes, created_at: datetime) -> bytes:
        """Canonical JSON of (position, hash, created_at): the bytes that are signed."""
        document = {
            "created_at": _iso_utc(created_at),
            "hash": chain_hash.hex(),
            "position": position,
        }
        return json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")

    @classmethod
    def create(
        cls, position: int, chain_hash: bytes, created_at: datetime, key: SigningKey
    ) -> Checkpoint:
        # Microseconds are all PostgreSQL's timestamptz keeps: sign what is stored.
        signature = key.sign(cls.signed_message(position, chain_hash, created_at))
        return cls(position, chain_hash, created_at, key.key_id, signature)

    def signature_problem(self, public_key: Ed25519PublicKey) -> str | None:
        """Why the signature does not hold under `public_key`, or None when it does."""
        expected_key_id = key_id_of(public_key)
        if self.key_id != expected_key_id:
            return f"signed by key {self.key_id!r}, expected key {expected_key_id!r}"
        message = self.signed_message(self.position, self.hash, self.created_at)
        try:
            public_key.verify(self.signature, message)
        except InvalidSignature:
            return "signature does not match position, hash and created_at"
        return None

    def to_document(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "hash": self.hash.hex(),
            "created_at": _iso_utc(self.created_at),
            "key_id": self.key_id,
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Checkpoint:
        """A checkpoint from its exported JSON; raises ValueError when malformed."""
        try:
            position = document["position"]
            if not isinstance(position, int) or isinstance(position, bool):
                msg = "position is not an integer"
                raise ValueError(msg)
            created_at = datetime.fromisoformat(str(document["created_at"]))
            if created_at.tzinfo is None:
                msg = "created_at has no time zone"
                raise ValueError(msg)
            return cls(
                position=position,
                hash=bytes.fromhex(str(document["hash"])),
                created_at=created_at,
                key_id=str(document["key_id"]),
                signature=bytes.fromhex(str(document["signature"])),
            )
        except (KeyError, TypeError) as error:
            msg = f"malformed checkpoint document: {error}"
            raise ValueError(msg) from error

    def same_statement(self, other: Checkpoint) -> bool:
        return (
            self.position == other.position
            and self.hash == other.hash
            and _iso_utc(self.created_at) == _iso_utc(other.created_at)
            and self.key_id == other.key_id
            and self.signature == other.signature
        )


def checkpoint_file_name(position: int) -> str:
    return f"checkpoint-{position:020d}.json"
