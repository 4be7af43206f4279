"""The event store itself: immutable rows, ordered positions, bulk saves, embedded server."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import psycopg
import pytest

from ledger import commands as c
from ledger.application import Ledger
from ledger.complex import Complex
from ledger.conservation import fold
from ledger.database import ConnectionSettings, start_embedded, stop_embedded
from ledger.persistence import APP_ROLE, COPY_THRESHOLD_EVENTS
from ledger.resident import Resident
from world import World, cause


@pytest.fixture
def populated(world: World) -> World:
    world.policy()
    complex_id = world.complex()
    seller = world.resident(world.household(complex_id))
    world.funded_resident(world.household(complex_id), seller, 300)
    return world


@pytest.mark.parametrize(("table", "statement"), [
    ("ledger_events", "UPDATE ledger_events SET state = 'x'"),
    ("ledger_events", "DELETE FROM ledger_events"),
    ("ledger_events", "TRUNCATE ledger_events"),
    ("ledger_requests", "UPDATE ledger_requests SET outcome = '{}'"),
    ("ledger_requests", "DELETE FROM ledger_requests"),
    ("ledger_requests", "TRUNCATE ledger_requests"),
])
def test_events_and_request_records_cannot_be_changed_even_by_the_owner(
        populated: World, table: str, statement: str) -> None:
    """The immutability trigger refuses UPDATE, DELETE and TRUNCATE, whoever asks."""
    with populated.connect() as conn:
        before = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert before is not None and before[0] > 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="immutable"):
            conn.execute(statement)
        conn.rollback()
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == before


@pytest.mark.parametrize("statement", [
    "UPDATE ledger_events SET state = 'x'",
    "DELETE FROM ledger_events",
    "UPDATE ledger_requests SET outcome = '{}'",
    "DELETE FROM ledger_requests",
])
def test_the_application_role_has_no_update_or_delete_privilege(populated: World,
                                                                statement: str) -> None:
    """The role the ledger writes as may insert and read events, never change them."""
    with populated.connect() as conn:
        conn.execute(f"SET ROLE {APP_ROLE}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            conn.execute(statement)


def test_writes_run_as_the_application_role(populated: World) -> None:
    """Rows are inserted through the append function, which runs as ledger_app."""
    with populated.connect() as conn:
        owner = conn.execute(
            "SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = 'ledger_events_append' "
            "AND pronamespace = %s::regnamespace", (populated.schema,)).fetchone()
    assert owner == (APP_ROLE,)


def test_positions_are_dense_for_one_writer(populated: World) -> None:
    """Positions follow the order of saves, one after another."""
    with populated.connect() as conn:
        positions = [row[0] for row in conn.execute(
            "SELECT notification_id FROM ledger_events ORDER BY notification_id")]
    assert positions == list(range(1, len(positions) + 1))


def test_large_saves_use_copy_and_keep_positions_ordered(world: World) -> None:
    """A save of thousands of events (bulk seeding) goes through COPY, in order, and the
    next ordinary save continues after it."""
    world.policy()
    complex_id = world.complex()
    household = world.household(complex_id)
    residents = [Resident.enrol(uuid.uuid4(), household, complex_id, "bulk", cause())
                 for _ in range(COPY_THRESHOLD_EVENTS + 10)]
    recordings = world.ledger.save(*residents)
    positions = [r.notification.id for r in recordings]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(residents)
    after = world.run(c.RegisterHousehold(complex_id, "after-bulk"))
    assert after.position > positions[-1]
    assert world.ledger.snapshot(Resident, residents[-1].id) is not None


def test_replayed_events_match_live_state(populated: World) -> None:
    """A fresh ledger instance, rebuilding every aggregate from stored events, agrees with
    the live one, and the log conserves points."""
    fresh = Ledger.connect(populated.database_url, populated.schema)
    try:
        for event in populated.all_events():
            if isinstance(event, Resident.Enrolled):
                live = populated.ledger.snapshot(Resident, event.originator_id)
                again = fresh.snapshot(Resident, event.originator_id)
                assert live is not None and again is not None
                assert (live.available_won, live.version) == (again.available_won,
                                                             again.version)
    finally:
        fresh.close()
    assert fold(populated.all_events()).problems() == []


def test_embedded_postgresql_starts_in_a_data_directory() -> None:
    """Without a database URL the ledger starts an embedded PostgreSQL and writes to it."""
    # Not pytest's tmp_path: as root the server runs as its own user, which cannot enter
    # pytest's private temporary directory.
    data_dir = tempfile.mkdtemp(prefix="ledger-embedded-test-")
    code = (
        "import uuid, sys\n"
        "from ledger.application import Ledger, now\n"
        "from ledger.database import start_embedded\n"
        "from ledger import commands as c\n"
        "from ledger.events import Cause\n"
        f"url = start_embedded({data_dir!r})\n"
        "ledger = Ledger.connect(url)\n"
        "out = ledger.execute(c.RegisterComplex('E-1', 'e', 'r'), "
        "Cause(uuid.uuid4(), 'operator', 'r1', now()))\n"
        "print(out.position)\n"
        "ledger.close()\n"
    )
    try:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "1"
        url = start_embedded(data_dir)
        with psycopg.connect(ConnectionSettings.from_url(url).conninfo()) as conn:
            count = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
            requests = conn.execute("SELECT count(*) FROM ledger_requests").fetchone()
        assert (count, requests) == ((1,), (1,))
    finally:
        stop_embedded(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def test_long_streams_load_from_snapshots(world: World) -> None:
    """A fund with 500 events is saved as a snapshot and a fresh ledger loads it
    from the snapshot plus later events, with the same balance."""
    world.policy(guards={"pair_trades_per_month_max": None})  # 520 trades of one pair
    complex_id = world.complex()
    seller = world.resident(world.household(complex_id))
    buyer = world.resident(world.household(complex_id))
    items = [(c.RecordTrade(f"S-{i}", "sharing", "x", seller, "resident", buyer, 1_000, 0),
              cause()) for i in range(520)]
    world.ledger.execute_many(items)
    with world.connect() as conn:
        snapshots = conn.execute(
            "SELECT originator_version FROM ledger_snapshots WHERE originator_id = %s",
            (complex_id,)).fetchall()
    assert len(snapshots) == 1
    assert snapshots[0][0] >= 500  # taken after the batch that crossed version 500
    fresh = Ledger.connect(world.database_url, world.schema)
    try:
        live = world.ledger.snapshot(Complex, complex_id)
        again = fresh.snapshot(Complex, complex_id)
        assert live is not None and again is not None
        assert (again.balance_won, again.version) == (live.balance_won, live.version)
    finally:
        fresh.close()



def test_followers_are_notified_soon_after_a_commit_once_for_many(populated: World) -> None:
    """A LISTENing follower is woken by a notification after a commit (it need not wait for
    its poll); commits in quick succession share notifications."""
    from eventlog.log import NOTIFY_CHANNEL  # noqa: PLC0415

    recorder = populated.ledger.recorder
    with psycopg.connect(ConnectionSettings.from_url(populated.database_url).conninfo(),
                         autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        complex_id = populated.complexes[0]
        populated.household(complex_id)
        assert list(listener.notifies(timeout=2, stop_after=1))
        notifier = recorder.notifier  # type: ignore[attr-defined]
        time.sleep(0.1)
        sent_before = notifier.sent
        for _ in range(200):  # as many commits as come in a few milliseconds
            notifier.poke()
        time.sleep(0.2)
        assert 1 <= notifier.sent - sent_before <= 3
