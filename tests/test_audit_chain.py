"""The audit hash chain: the follower chains the log, the verifier finds tampering.

Tampering is done the way an attacker with database superuser rights would do
it: with `session_replication_role = replica`, which silences the immutability
trigger on the events table whether or not it is installed.
"""

from __future__ import annotations

import json
import random
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from audit import (
    ChainFollower,
    SigningKey,
    chain_hashes,
    export_checkpoints,
    load_signing_key,
    verify_chain,
)
from ledger.database import connect, eventsourcing_env


class Note(Aggregate):
    """A tiny aggregate that stands in for the domain in these tests."""

    @event("Written")
    def __init__(self, text: str) -> None:
        self.text = text

    @event("Amended")
    def amend(self, text: str) -> None:
        self.text = text


class Ledger(Application):
    name = "Ledger"


@pytest.fixture
def ledger(database_url: str, schema: str) -> Iterator[Ledger]:
    app = Ledger(env=eventsourcing_env(database_url, schema, pool_size=2))
    yield app
    app.close()


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "audit-keys"


def append(app: Ledger, notes: int, amendments: int = 1, label: str = "") -> None:
    """Save `notes` new notes, each amended `amendments` times, in one transaction."""
    aggregates = []
    for number in range(notes):
        note = Note(text=f"note {label}{number} {uuid.uuid4()}")
        for amendment in range(amendments):
            note.amend(text=f"amendment {amendment} of {label}{number}")
        aggregates.append(note)
    app.save(*aggregates)


def burn_positions(database_url: str, schema: str, count: int) -> None:
    """Leave a gap in the log the way an aborted transaction does."""
    with cast("psycopg.Connection[Any]", connect(database_url, schema)) as conn:
        conn.execute(
            "SELECT nextval(pg_get_serial_sequence('ledger_events', 'notification_id'))"
            " FROM generate_series(1, %s)",
            (count,),
        )
        conn.commit()


def connection(database_url: str, schema: str) -> psycopg.Connection[Any]:
    return cast("psycopg.Connection[Any]", connect(database_url, schema))


def as_superuser_bypassing_triggers(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET LOCAL session_replication_role = replica")


def positions(conn: psycopg.Connection[Any]) -> list[int]:
    rows = conn.execute("SELECT notification_id FROM ledger_events ORDER BY 1").fetchall()
    return [row[0] for row in rows]


def tamper(database_url: str, schema: str, *statements: tuple[str, tuple[Any, ...]]) -> None:
    with connection(database_url, schema) as conn:
        as_superuser_bypassing_triggers(conn)
        for statement, parameters in statements:
            conn.execute(statement, parameters)
        conn.commit()


def test_clean_log_verifies(database_url: str, schema: str, ledger: Ledger, key_dir: Path) -> None:
    """A chained log that nobody touched verifies, and events not yet chained are only counted."""
    append(ledger, 20)
    assert ChainFollower(database_url, schema, key_dir=key_dir).catch_up() == 40
    append(ledger, 3)

    report = verify_chain(database_url, schema, key_dir=key_dir)

    assert report.ok, report
    assert (report.events_checked, report.unchained_tail, report.chain_head) == (40, 6, 40)
    assert json.loads(report.to_json())["ok"] is True


def test_chain_follows_incrementally(
    database_url: str, schema: str, ledger: Ledger, key_dir: Path
) -> None:
    """Catching up in small batches, twice, gives the same chain as computing it from scratch."""
    follower = ChainFollower(database_url, schema, key_dir=key_dir, batch_size_events=7)
    append(ledger, 10, amendments=2)
    counted: list[int] = []
    assert follower.catch_up(progress=counted.append) == 30
    append(ledger, 5)
    assert follower.catch_up() == 10
    assert follower.catch_up() == 0

    with connection(database_url, schema) as conn:
        events = conn.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state"
            " FROM ledger_events ORDER BY notification_id"
        ).fetchall()
        chain = conn.execute("SELECT position, hash FROM audit_chain ORDER BY position").fetchall()
    assert [row[0] for row in chain] == [row[0] for row in events]
    assert [bytes(row[1]) for row in chain] == chain_hashes(
        [(nid, oid, version, topic, bytes(state)) for nid, oid, version, topic, state in events]
    )
    assert sum(counted) == 30


def test_follower_thread_chains_new_events(
    database_url: str, schema: str, ledger: Ledger, key_dir: Path
) -> None:
    """A follower running in a thread chains events appended while it runs."""
    follower = ChainFollower(database_url, schema, key_dir=key_dir)
    stop = threading.Event()
    thread = threading.Thread(target=follower.run, args=(stop, 0.05))
    thread.start()
    try:
        append(ledger, 5)
        for _ in range(200):
            if verify_chain(database_url, schema, key_dir=key_dir).chain_head == 10:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(timeout=10)
    report = verify_chain(database_url, schema, key_dir=key_dir)
    assert report.ok
    assert report.chain_head == 10


def test_gap_in_positions_is_not_reported(
    database_url: str, schema: str, ledger: Ledger, key_dir: Path
) -> None:
    """Positions burnt by aborted transactions leave gaps that verify as normal."""
    append(ledger, 5)
    burn_positions(database_url, schema, 3)
    with connection(database_url, schema) as conn:
        conn.execute(
            "INSERT INTO ledger_events (originator_id, originator_version, topic, state)"
            " VALUES (%s, 1, 'aborted', '\\x7b7d')",
            (uuid.uuid4(),),
        )
        conn.rollback()
    append(ledger, 5)
    ChainFollower(database_url, schema, key_dir=key_dir).catch_up()

    report = verify_chain(database_url, schema, key_dir=key_dir)

    assert report.ok, report
    assert report.events_checked == 20
    assert report.chain_head == 24


def test_development_signing_key_is_private(key_dir: Path) -> None:
    """Without a configured key, one development key is generated, readable by its owner only."""
    first = load_signing_key(key_dir, environ={})
    second = load_signing_key(key_dir, environ={})

    assert first is not None
    assert second is not None
    assert first.key_id == second.key_id
    assert stat.S_IMODE((key_dir / "signing-key.pem").stat().st_mode) == 0o600


def test_checkpoints_are_signed_and_a_forged_file_is_detected(
    database_url: str, schema: str, ledger: Ledger, key_dir: Path, tmp_path: Path
) -> None:
    """Exported checkpoints verify; an altered or re-signed exported file is named by position."""
    follower = ChainFollower(database_url, schema, key_dir=key_dir, checkpoint_interval_events=10)
    append(ledger, 18)
    follower.catch_up()
    out = tmp_path / "exported"
    written = export_checkpoints(database_url, schema, out, key_dir=key_dir)
    assert [path.name for path in written] == [
        f"checkpoint-{position:020d}.json" for position in (10, 20, 30)
    ]
    assert verify_chain(database_url, schema, checkpoint_files=out).checkpoints_verified == 6

    altered = json.loads(written[1].read_text())
    altered["hash"] = "00" * 32
    written[1].write_text(json.dumps(altered))
    report = verify_chain(database_url, schema, checkpoint_files=out)
    assert (report.ok, report.first_bad_position, report.problem) == (
        False,
        20,
        "checkpoint_signature_invalid",
    )

    forger = SigningKey(Ed25519PrivateKey.generate())
    forged = json.loads(written[2].read_text())
    forged["signature"] = forger.sign(b"anything").hex()
    written[2].write_text(json.dumps(forged))
    report = verify_chain(
        database_url, schema, checkpoint_files=written[2:], public_key=out / "public-key.pem"
    )
    assert (report.first_bad_position, report.problem) == (30, "checkpoint_signature_invalid")


def test_time_based_checkpoint_and_export_never_overwrites(
    database_url: str, schema: str, ledger: Ledger, key_dir: Path, tmp_path: Path
) -> None:
    """When the checkpoint interval has passed, the chain head is signed; exports only add files."""
    follower = ChainFollower(
        database_url, schema, key_dir=key_dir, checkpoint_interval_seconds=1e-6
    )
    append(ledger, 2)
    follower.catch_up()
    out = tmp_path / "exported"
    assert len(export_checkpoints(database_url, schema, out, key_dir=key_dir)) == 1
    assert export_checkpoints(database_url, schema, out, key_dir=key_dir) == []
    assert verify_chain(database_url, schema, checkpoint_files=out).checkpoints_verified == 2


def test_database_checkpoint_rewritten_with_the_chain_is_caught_by_the_exported_copy(
    database_url: str, schema: str, ledger: Ledger, key_dir: Path, tmp_path: Path
) -> None:
    """Rewriting an event and recomputing the whole chain is caught by the exported checkpoint."""
    follower = ChainFollower(database_url, schema, key_dir=key_dir, checkpoint_interval_events=8)
    append(ledger, 6)
    follower.catch_up()
    out = tmp_path / "exported"
    export_checkpoints(database_url, schema, out, key_dir=key_dir)
    tamper(
        database_url,
        schema,
        ("UPDATE ledger_events SET state = state || '\\x20'::bytea WHERE notification_id = 3", ()),
        ("DELETE FROM audit_chain", ()),
        ("DELETE FROM audit_checkpoints", ()),
    )
    follower.catch_up()

    report = verify_chain(database_url, schema, checkpoint_files=out)

    assert (report.first_bad_position, report.problem) == (8, "checkpoint_mismatch")


@pytest.fixture
def chained_log(database_url: str, schema: str, ledger: Ledger, key_dir: Path) -> list[int]:
    """A chained log of 60 events with gaps, checkpointed at its head; returns its positions."""
    for round_number in range(3):
        append(ledger, 10, label=f"r{round_number}-")
        burn_positions(database_url, schema, 2)
    follower = ChainFollower(database_url, schema, key_dir=key_dir, checkpoint_interval_events=25)
    follower.catch_up()
    follower.write_checkpoint()
    with connection(database_url, schema) as conn:
        return positions(conn)


def assert_found(
    database_url: str, schema: str, key_dir: Path, position: int, problem: str
) -> None:
    report = verify_chain(database_url, schema, key_dir=key_dir)
    assert (report.ok, report.first_bad_position, report.problem) == (False, position, problem)


def test_single_byte_edit_of_state_is_located(
    database_url: str, schema: str, chained_log: list[int], key_dir: Path
) -> None:
    """Flipping one byte of one event's state is reported as event_modified at that position."""
    target = chained_log[17]
    tamper(
        database_url,
        schema,
        (
            "UPDATE ledger_events SET state = set_byte(state, 5, get_byte(state, 5) # 1)"
            " WHERE notification_id = %s",
            (target,),
        ),
    )
    assert_found(database_url, schema, key_dir, target, "event_modified")


def test_deleted_event_is_located(
    database_url: str, schema: str, chained_log: list[int], key_dir: Path
) -> None:
    """Deleting a chained event is reported as event_missing at its position."""
    target = chained_log[30]
    tamper(
        database_url, schema, ("DELETE FROM ledger_events WHERE notification_id = %s", (target,))
    )
    assert_found(database_url, schema, key_dir, target, "event_missing")


def test_swapped_payloads_are_located(
    database_url: str, schema: str, chained_log: list[int], key_dir: Path
) -> None:
    """Swapping two events' payloads is reported at the earlier position, naming the swap."""
    first, second = chained_log[12], chained_log[40]
    tamper(
        database_url,
        schema,
        (
            "UPDATE ledger_events AS e SET topic = o.topic, state = o.state"
            " FROM ledger_events AS o"
            " WHERE (e.notification_id, o.notification_id) IN ((%s, %s), (%s, %s))",
            (first, second, second, first),
        ),
    )
    report = verify_chain(database_url, schema, key_dir=key_dir)
    assert (report.first_bad_position, report.problem) == (first, "event_reordered")
    assert str(second) in report.detail


def test_event_inserted_into_a_gap_is_located(
    database_url: str, schema: str, chained_log: list[int], key_dir: Path
) -> None:
    """An event written into a gap below the chain head is reported as event_inserted."""
    gap = next(p for p in range(1, chained_log[-1]) if p not in set(chained_log))
    tamper(
        database_url,
        schema,
        (
            "INSERT INTO ledger_events"
            " (originator_id, originator_version, topic, state, notification_id)"
            " VALUES (%s, 1, 'forged', '\\x7b7d', %s)",
            (uuid.uuid4(), gap),
        ),
    )
    assert_found(database_url, schema, key_dir, gap, "event_inserted")


def test_edit_of_the_chain_table_is_located(
    database_url: str, schema: str, chained_log: list[int], key_dir: Path
) -> None:
    """Altering a hash stored in audit_chain is reported as chain_row_modified at that row."""
    target = chained_log[22]
    tamper(
        database_url,
        schema,
        (
            "UPDATE audit_chain SET hash = set_byte(hash, 0, get_byte(hash, 0) # 1)"
            " WHERE position = %s",
            (target,),
        ),
    )
    assert_found(database_url, schema, key_dir, target, "chain_row_modified")


def _random_tampering(
    conn: psycopg.Connection[Any], rng: random.Random, chained: list[int], checkpoints: list[int]
) -> tuple[int, set[str]]:
    """Apply one random tampering; return the position and the codes that describe it."""
    kind = rng.choice(
        [
            "state_byte",
            "topic",
            "event_version",
            "delete_event",
            "swap_payloads",
            "swap_positions",
            "insert_event",
            "chain_hash",
            "chain_identity",
            "delete_chain_row",
            "insert_chain_row",
            "checkpoint_hash",
        ]
    )
    position = rng.choice(chained)
    gaps = [p for p in range(1, chained[-1]) if p not in set(chained)]
    if kind == "state_byte":
        conn.execute(
            "UPDATE ledger_events SET state = set_byte(state, %s, get_byte(state, %s) # %s)"
            " WHERE notification_id = %s",
            (i := rng.randrange(20), i, rng.randrange(1, 256), position),
        )
        return position, {"event_modified"}
    if kind == "topic":
        conn.execute(
            "UPDATE ledger_events SET topic = topic || 'x' WHERE notification_id = %s", (position,)
        )
        return position, {"event_modified"}
    if kind == "event_version":
        conn.execute(
            "UPDATE ledger_events SET originator_version = originator_version + 1000"
            " WHERE notification_id = %s",
            (position,),
        )
        return position, {"event_modified"}
    if kind == "delete_event":
        conn.execute("DELETE FROM ledger_events WHERE notification_id = %s", (position,))
        return position, {"event_missing"}
    if kind in ("swap_payloads", "swap_positions"):
        first, second = sorted(rng.sample(chained, 2))
        if kind == "swap_payloads":
            conn.execute(
                "UPDATE ledger_events AS e SET topic = o.topic, state = o.state"
                " FROM ledger_events AS o"
                " WHERE (e.notification_id, o.notification_id) IN ((%s, %s), (%s, %s))",
                (first, second, second, first),
            )
        else:
            for old, new in ((first, -1), (second, first), (-1, second)):
                conn.execute(
                    "UPDATE ledger_events SET notification_id = %s WHERE notification_id = %s",
                    (new, old),
                )
        return first, {"event_reordered"}
    if kind == "insert_event":
        gap = rng.choice(gaps)
        conn.execute(
            "INSERT INTO ledger_events"
            " (originator_id, originator_version, topic, state, notification_id)"
            " VALUES (%s, 1, 'forged', '\\x7b7d', %s)",
            (uuid.uuid4(), gap),
        )
        return gap, {"event_inserted"}
    if kind == "chain_hash":
        conn.execute(
            "UPDATE audit_chain SET hash = set_byte(hash, %s, get_byte(hash, %s) # %s)"
            " WHERE position = %s",
            (i := rng.randrange(32), i, rng.randrange(1, 256), position),
        )
        return position, {"chain_row_modified"}
    if kind == "chain_identity":
        conn.execute(
            "UPDATE audit_chain SET originator_version = originator_version + 1"
            " WHERE position = %s",
            (position,),
        )
        return position, {"chain_row_modified"}
    if kind == "delete_chain_row":
        conn.execute("DELETE FROM audit_chain WHERE position = %s", (position,))
        return position, {"chain_row_modified"}
    if kind == "insert_chain_row":
        gap = rng.choice(gaps)
        conn.execute(
            "INSERT INTO audit_chain VALUES (%s, %s, 1, %s)", (gap, uuid.uuid4(), rng.randbytes(32))
        )
        return gap, {"chain_row_modified"}
    checkpoint = rng.choice(checkpoints)
    conn.execute(
        "UPDATE audit_checkpoints SET hash = %s WHERE position = %s",
        (rng.randbytes(32), checkpoint),
    )
    return checkpoint, {"checkpoint_signature_invalid"}


def test_random_tampering_is_always_detected_and_located(
    database_url: str, schema: str, ledger: Ledger, key_dir: Path
) -> None:
    """A thousand random tamperings of a 200-event log are each found at the right position."""
    for round_number in range(10):
        append(ledger, 10, label=f"r{round_number}-")
        burn_positions(database_url, schema, 1 + round_number % 3)
    follower = ChainFollower(database_url, schema, key_dir=key_dir, checkpoint_interval_events=37)
    follower.catch_up()
    follower.write_checkpoint()
    rng = random.Random(20240611)
    with connection(database_url, schema) as conn:
        chained = positions(conn)
        checkpoints = [
            row[0] for row in conn.execute("SELECT position FROM audit_checkpoints").fetchall()
        ]
        conn.rollback()
        assert len(chained) == 200
        misses = []
        for attempt in range(1_000):
            as_superuser_bypassing_triggers(conn)
            position, codes = _random_tampering(conn, rng, chained, checkpoints)
            report = verify_chain(database_url, schema, connection=conn, key_dir=key_dir)
            conn.rollback()
            if report.first_bad_position != position or report.problem not in codes:
                misses.append((attempt, position, codes, report))
        assert misses == []
        assert verify_chain(database_url, schema, connection=conn, key_dir=key_dir).ok
