"""Settings of the HTTP API, read from the environment once.

Every field is read from `LEDGER_<FIELD NAME>` (case-insensitive), except
`kafka_bootstrap_servers`, which is read from `KAFKA_BOOTSTRAP_SERVERS` so the
API shares that variable with the other Kafka clients. To add a setting, add a
field with its default and its limits; the environment name follows from it.

`LEDGER_JWT_PUBLIC_KEYS` lists the keys that may sign access tokens. Each key
is either inline PEM text (starting with `-----BEGIN`; a literal `\\n` may stand
for a line break, for environments that cannot hold multi-line values) or the
path of a PEM file. Write the list as a JSON array of strings, or as one string
with the keys separated by commas:

    LEDGER_JWT_PUBLIC_KEYS=/etc/ledger/idp-2024.pem,/etc/ledger/idp-2025.pem
    LEDGER_JWT_PUBLIC_KEYS='["/etc/ledger/idp-2025.pem"]'

`LEDGER_JWT_JWKS_URL` is the identity provider's JWKS endpoint (https; plain
http only to a loopback address). Its keys are matched to tokens by `kid` and
cached for `LEDGER_JWT_JWKS_CACHE_SECONDS`; an unknown `kid` or stale keys cause
a refetch, never sooner than `LEDGER_JWT_JWKS_REFETCH_SECONDS_MIN` after the
previous attempt, each bounded by `LEDGER_JWT_JWKS_FETCH_TIMEOUT_SECONDS` (see
`api.jwks`). Static keys and the JWKS URL may be used together.

When neither is set, the API trusts only the development key pair in
`LEDGER_DEV_KEY_DIR` (see `api.auth.ensure_dev_keypair`). That is the demo and
test mode; production sets `LEDGER_JWT_DEV_KEY_ALLOWED=false`, and the API then
refuses to start without `LEDGER_JWT_JWKS_URL` or `LEDGER_JWT_PUBLIC_KEYS`.
"""

from __future__ import annotations

import functools
import json
import urllib.parse
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ledger import limits


class ApiSettings(BaseSettings):
    """What the API needs to know about its surroundings."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_", frozen=True, extra="ignore")

    jwt_issuer: str = Field(default="https://idp.naechingu.example/", min_length=1)
    jwt_audience: str = Field(default="ledger-api", min_length=1)
    jwt_algorithm: Literal["EdDSA", "RS256"] = "EdDSA"
    # NoDecode: the raw string reaches the validator below, which accepts both list forms.
    jwt_public_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), max_length=limits.jwt_public_keys_count_max
    )
    jwt_jwks_url: str = Field(default="", max_length=limits.jwks_url_length_max)
    # How long fetched JWKS keys are used before a refetch is due.
    jwt_jwks_cache_seconds: float = Field(default=300.0, ge=1.0, le=86_400.0)
    # No JWKS fetch starts sooner than this after the previous one, whatever asks for it.
    jwt_jwks_refetch_seconds_min: float = Field(default=30.0, ge=1.0, le=3600.0)
    jwt_jwks_fetch_timeout_seconds: float = Field(default=3.0, gt=0.0, le=10.0)
    # False in production: without a JWKS URL or public keys the API then refuses to start
    # instead of trusting the development key pair.
    jwt_dev_key_allowed: bool = True
    dev_key_dir: Path = Path("var/dev-keys")

    # The URL may carry a password, so it stays out of the settings' repr.
    database_url: str = Field(default="", repr=False)
    data_dir: Path = Path("var/pgdata")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=limits.port_number_max)

    kafka_bootstrap_servers: str = Field(
        default="",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
    )

    # Writes per minute per caller: residents and staff, and service principals (the
    # shopping platform's trade feed, billing), which write for every complex at once.
    rate_limit_writes_per_minute: int = Field(
        default=limits.rate_limit_writes_per_minute_default, ge=1, le=1_000_000)
    rate_limit_service_writes_per_minute: int = Field(
        default=limits.rate_limit_service_writes_per_minute_default, ge=1, le=10_000_000)
    read_wait_seconds_max: float = Field(default=5.0, ge=0.0, le=60.0)

    # The PostgreSQL schema holding the ledger's events and the projection tables.
    # (Named `schema_name` because BaseSettings has a `schema` attribute; the
    # environment variable is LEDGER_SCHEMA, as for the `ledger` command.)
    schema_name: str = Field(
        default="public", min_length=1, max_length=63, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        validation_alias=AliasChoices("LEDGER_SCHEMA", "schema_name"))
    # Largest request body accepted; larger ones are refused with 413 before parsing.
    body_bytes_max: int = Field(default=limits.body_bytes_max_default, ge=1024,
                                le=16 * 1024 * 1024)
    # Connections the read pool may open (reads run on the server's thread pool).
    read_pool_size_max: int = Field(default=8, ge=1, le=200)
    # Run the projection runner inside the API process (`ledger serve --no-projections`
    # turns it off when `ledger project` runs the projections elsewhere).
    run_projections: bool = True
    # How often the sweeper releases rent holds whose deadline passed; 0 turns it off.
    expiry_sweep_seconds: float = Field(default=30.0, ge=0.0, le=3600.0)
    # Count requests and serve GET /metrics (no token: see docs/api.md, "Metrics");
    # false removes both, for a deployment that cannot keep /metrics off the public side.
    metrics_enabled: bool = True

    @field_validator("jwt_public_keys", mode="before")
    @classmethod
    def _split_public_keys(cls, value: object) -> object:
        """Accept a JSON array or a comma-separated string; drop blank entries."""
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else text.split(",")
        if isinstance(value, list | tuple):
            # Non-strings pass through unchanged so that validation names them.
            entries = (entry.strip() if isinstance(entry, str) else entry for entry in value)
            return tuple(entry for entry in entries if entry != "")
        return value

    @field_validator("jwt_jwks_url")
    @classmethod
    def _check_jwks_url(cls, value: str) -> str:
        """https, or plain http to a loopback address: whoever serves the keys can sign
        any token, so the keys never travel unauthenticated over a network."""
        value = value.strip()
        if not value:
            return value
        parts = urllib.parse.urlsplit(value)
        if not parts.hostname:
            msg = "LEDGER_JWT_JWKS_URL must be an absolute https URL"
            raise ValueError(msg)
        if parts.scheme == "https":
            return value
        if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
            return value
        msg = "LEDGER_JWT_JWKS_URL must use https (plain http only to a loopback address)"
        raise ValueError(msg)


_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


@functools.lru_cache(maxsize=1)
def get_settings() -> ApiSettings:
    """The settings, read from the environment on the first call and reused after."""
    return ApiSettings()
