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

When the list is empty, the API trusts only the development key pair in
`LEDGER_DEV_KEY_DIR` (see `api.auth.ensure_dev_keypair`). That is the demo and
test mode; production must set `LEDGER_JWT_PUBLIC_KEYS`.
"""

from __future__ import annotations

import functools
import json
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


@functools.lru_cache(maxsize=1)
def get_settings() -> ApiSettings:
    """The settings, read from the environment on the first call and reused after."""
    return ApiSettings()
