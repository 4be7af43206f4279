"""Shared fixtures: a real PostgreSQL for every integration test.

`LEDGER_TEST_DATABASE_URL` points the suite at a server (on development
machines: postgresql://postgres@127.0.0.1:5432/test). Without it the suite
starts the embedded PostgreSQL once, in a temporary directory. Each test that
asks for `schema` gets a fresh PostgreSQL schema, dropped afterwards, so tests
never see each other's events.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, settings

from ledger.application import Ledger
from ledger.database import ConnectionSettings, start_embedded, stop_embedded
from world import World

settings.register_profile(
    "ledger",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("ledger")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("LEDGER_TEST_DATABASE_URL", "").strip()
    if url:
        yield url
        return
    # Not under pytest's basetemp: pytest prunes old basetemps, and a concurrent run
    # could delete the data directory under a running server.
    data_dir = Path(tempfile.mkdtemp(prefix="ledger-test-pgdata-"))
    yield start_embedded(data_dir)
    stop_embedded(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def fresh_schema(database_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL schema, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conninfo = ConnectionSettings.from_url(database_url).conninfo()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL schema for one test."""
    with fresh_schema(database_url) as name:
        yield name


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A Kafka-protocol broker: KAFKA_BOOTSTRAP_SERVERS, else a Tansu started for the session."""
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if servers:
        yield servers
        return
    from kafka_broker import TansuBroker  # noqa: PLC0415  (only when a test needs Kafka)

    with TansuBroker() as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def world(database_url: str, schema: str) -> Iterator[World]:
    """A ledger on a fresh schema, with helpers to populate it."""
    ledger = Ledger.connect(database_url, schema)
    yield World(ledger, database_url, schema)
    ledger.close()
