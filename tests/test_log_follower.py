"""The one follower of the event log: a poison event stops its follower there, loudly,
and only that follower; a failure that passes is retried, not called poison."""
# The fixtures imported from test_projections are pytest's to pass in.
# ruff: noqa: F811

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

import projections as p
from api.app import create_app
from audit.chain import CHAIN_TABLE, ChainFollower
from eventlog.follower import stopped_followers
from eventlog.log import Event
from ledger.application import Ledger
from ledger.database import ConnectionSettings
from ledger.errors import DatabaseUnavailable
from private_postgres import PrivatePostgres
from projections.base import TradeFacts
from projections.runner import ProjectionRunner, WalletBalances
from test_api_fixtures import make_settings
from test_projections import World, conn, ledger, world  # noqa: F401  (fixtures)


class Poisoned(WalletBalances):
    """Wallet balances whose fold fails on the trade `poison` (a bug, not an outage)."""

    def __init__(self, poison: str, failures_max: int = 1_000_000) -> None:
        self.poison = poison
        self.failures_max = failures_max
        self.failures = 0

    def fold_into(self, changes: Any, events: Sequence[Event], trades: TradeFacts) -> Any:
        if self.failures < self.failures_max and any(
                event.data.get("trade_id") == self.poison for event in events):
            self.failures += 1
            raise RuntimeError(f"cannot fold trade {self.poison}")
        return super().fold_into(changes, events, trades)


def wait_until(predicate: Callable[[], bool], timeout_seconds: float, what: str) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def first_position_naming(conn: psycopg.Connection[Any], trade_id: str) -> int:
    row = conn.execute(
        "SELECT min(notification_id) FROM ledger_events"
        " WHERE strpos(convert_from(state, 'UTF8'), %s) > 0",
        (f'"trade_id":"{trade_id}"',)).fetchone()
    assert row is not None
    assert row[0] is not None
    return int(row[0])


def test_a_poison_event_stops_its_follower_there_and_the_others_go_on(
        database_url: str, schema: str, world: World, conn: psycopg.Connection[Any],
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A fold that keeps failing on one event stops the projections at that event, says so
    in the log, the readiness endpoint and the status table, while the audit chain
    follows on; fixed and restarted, the projections resume from there."""
    caplog.set_level(logging.WARNING, logger="eventlog.follower")
    world.trade(10_000, trade_id="T-before")
    world.trade(20_000, trade_id="T-poison")
    world.trade(30_000, trade_id="T-after")
    poison_position = first_position_naming(conn, "T-poison")
    head = int(conn.execute("SELECT max(notification_id) FROM ledger_events").fetchone()[0])
    before = int(conn.execute("SELECT max(notification_id) FROM ledger_events"
                              " WHERE notification_id < %s", (poison_position,)).fetchone()[0])

    with ProjectionRunner(database_url, schema, [Poisoned("T-poison")]) as runner:
        wait_until(lambda: runner.stopped is not None, 30, "the runner to stop")
        stopped = runner.stopped
        assert stopped is not None
        assert (stopped.name, stopped.position) == ("projections", poison_position)
        assert "cannot fold trade T-poison" in stopped.error
        # Everything before the poison event is applied, nothing at or after it.
        assert p.positions(conn)["wallet_balances"] == before
        assert runner.wait_for(before, timeout=0)
        assert not runner.wait_for(poison_position, timeout=0.2)

        # The other followers go on: the audit chain reaches the head.
        ChainFollower(database_url, schema, key_dir=tmp_path / "keys").catch_up()
        chained = conn.execute(f"SELECT max(position) FROM {CHAIN_TABLE}").fetchone()
        assert chained == (head,)

        # It says so: one error line naming the position and the error ...
        lines = [r.getMessage() for r in caplog.records
                 if r.levelno >= logging.ERROR and r.name == "eventlog.follower"]
        assert len(lines) == 1
        assert f"position {poison_position}" in lines[0]
        assert "cannot fold trade T-poison" in lines[0]
        # ... the status every process reads ...
        assert [(s.name, s.position) for s in stopped_followers(conn)] == [
            ("projections", poison_position)]
        # ... and the readiness endpoint, while liveness stays up.
        settings = make_settings(database_url, schema, tmp_path / "keys",
                                 run_projections=False)
        with TestClient(create_app(settings, ledger=world.ledger, runner=runner)) as client:
            assert client.get("/v1/health").status_code == 200
            answer = client.get("/v1/ready")
            assert answer.status_code == 503
            assert answer.headers["Retry-After"] == "5"
            assert answer.headers["Content-Type"] == "application/problem+json"
            problem = answer.json()
            assert problem["code"] == "not_ready"
            assert problem["stopped_followers"] == [{
                "name": "projections", "position": poison_position}]
            assert f"projections stopped at position {poison_position}" in problem["detail"]

    # Fixed (the fold no longer fails) and restarted: it resumes at the poison event.
    with ProjectionRunner(database_url, schema) as fixed:
        assert fixed.wait_for(head, timeout=20)
        assert fixed.stopped is None
        assert stopped_followers(conn) == []
    assert p.positions(conn)["wallet_balances"] == head
    assert p.read_all(conn) == p.fold_all(database_url, schema)
    settings = make_settings(database_url, schema, tmp_path / "keys", run_projections=False)
    with TestClient(create_app(settings, ledger=world.ledger)) as client:
        ready = client.get("/v1/ready")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "database": "ok", "stopped_followers": []}


def test_a_failure_that_passes_is_retried_not_called_poison(
        database_url: str, schema: str, world: World, conn: psycopg.Connection[Any]) -> None:
    """A fold that fails twice on an event and then succeeds delays the projections a
    little; they do not stop, and end equal to a fold of the log."""
    world.trade(10_000, trade_id="T-1")
    world.trade(20_000, trade_id="T-2")
    head = int(conn.execute("SELECT max(notification_id) FROM ledger_events").fetchone()[0])
    flaky = Poisoned("T-2", failures_max=2)
    with ProjectionRunner(database_url, schema, [flaky]) as runner:
        assert runner.wait_for(head, timeout=20)
        assert runner.stopped is None
    assert flaky.failures == 2
    assert stopped_followers(conn) == []
    assert p.read_all(conn, "wallet_balances") == p.fold_all(database_url, schema,
                                                             "wallet_balances")


def test_a_follower_started_before_the_log_exists_waits_for_it(
        database_url: str, schema: str) -> None:
    """A runner on a schema with no events table yet is neither stopped nor failing; it
    follows the log once the ledger creates it."""
    with ProjectionRunner(database_url, schema) as runner:
        time.sleep(0.5)
        assert runner.stopped is None
        assert runner.error is None
        ledger = Ledger.connect(database_url, schema)
        try:
            world = World(ledger)
            world.trade(10_000, trade_id=f"T-{uuid.uuid4().hex[:6]}")
            assert runner.wait_for(ledger.position(), timeout=20)
        finally:
            ledger.close()


@pytest.mark.slow
def test_a_follower_idling_on_listen_follows_again_after_a_database_crash() -> None:
    """The projection runner waits on LISTEN; PostgreSQL crashes and comes back: the runner
    reconnects by itself and projects what is written afterwards (its thread must not die
    with the listening connection)."""
    with PrivatePostgres() as server:
        ledger = Ledger.connect(server.url, "public")
        try:
            world = World(ledger)
            with ProjectionRunner(server.url, "public") as runner:
                world.trade(10_000, trade_id="T-before")
                assert runner.wait_for(ledger.position(), timeout=20)
                time.sleep(0.5)  # idle on LISTEN
                server.crash()
                time.sleep(2)
                server.start()
                deadline = time.monotonic() + 20
                while True:  # the ledger's own pool recovers too; retry while it does
                    try:
                        world.trade(10_000, trade_id="T-after")
                        break
                    except DatabaseUnavailable:
                        assert time.monotonic() < deadline
                        time.sleep(0.2)
                assert runner.wait_for(ledger.position(), timeout=20), (
                    runner.error, runner.stopped)
                assert runner.stopped is None
        finally:
            ledger.close()


def test_a_notification_due_while_the_database_is_away_is_sent_once_it_is_back() -> None:
    """The notifier's connection dies with the database; a commit's notification that
    fell due meanwhile is sent when the database is back, without another commit, and
    later ones reach listeners (the notifier's thread survives the outage)."""
    from ledger.persistence import Notifier  # noqa: PLC0415

    with PrivatePostgres() as server:
        conninfo = ConnectionSettings.from_url(server.url).conninfo()
        notifier = Notifier(conninfo, "ledger_test_channel")
        try:
            notifier.poke()
            wait_until(lambda: notifier.sent == 1, 10, "the first notification")
            server.crash()
            notifier.poke()  # falls due while the database is away
            wait_until(lambda: notifier.failed >= 1, 10, "a failed attempt")
            server.start()
            wait_until(lambda: notifier.sent == 2, 15, "the due notification, sent")
            with psycopg.connect(conninfo, autocommit=True) as listener:  # and it still works
                listener.execute("LISTEN ledger_test_channel")
                notifier.poke()
                heard = next(listener.notifies(timeout=10), None)
            assert heard is not None and heard.channel == "ledger_test_channel"
        finally:
            notifier.close()
