"""The audit hash chain over the event log, and the follower that extends it.

The rule, written down once:

    h(before the first event) = 32 zero bytes
    h(n) = SHA-256( h(previous position) ‖ canonical(event n) )

    canonical(event) = field(notification_id) ‖ field(originator_id)
                       ‖ field(originator_version) ‖ field(topic) ‖ field(state)
    field(x)         = uint32 big-endian length of x ‖ x
    field(NULL)      = FF FF FF FF  (no bytes follow)

where notification_id and originator_version are 8-byte big-endian two's
complement integers, originator_id is the 16 bytes of the UUID in RFC 4122
order, topic is UTF-8 and state is the stored bytes as they are. Every field is
length-prefixed, so no two different events share an encoding. "Previous" is
the previous event in log (notification_id) order: gaps left by aborted
transactions are simply not part of the chain.

`ChainFollower` is a tracked follower of the committed log. It reads events
after its last chained position in large ordered batches and commits each
batch's chain rows (and any checkpoints due) in one transaction; its position
is the largest position in `audit_chain`, so the rows and the position can
never disagree. Writers take a table lock on the events table, so positions
commit in order and `WHERE notification_id > last ORDER BY notification_id`
never skips a committed event.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import psycopg
from psycopg import sql

from audit.signing import KEY_DIR_DEFAULT, Checkpoint, SigningKey, load_signing_key
from eventlog.follower import Follower, Following
from ledger import limits
from ledger.database import connect

logger = logging.getLogger(__name__)

CHAIN_TABLE = "audit_chain"
CHECKPOINTS_TABLE = "audit_checkpoints"

GENESIS_HASH = bytes(32)
"""h(before the first event)."""

Progress = Callable[[int], None]
"""Called with the number of events just processed, e.g. `tqdm(...).update`."""

NULL_FIELD = b"\xff\xff\xff\xff"
INTEGER_PREFIX = b"\x00\x00\x00\x08"
UUID_PREFIX = b"\x00\x00\x00\x10"
length_prefix = struct.Struct(">I").pack


def canonical_bytes(
    notification_id: int,
    originator_id: uuid.UUID,
    originator_version: int,
    topic: str | None,
    state: bytes | None,
) -> bytes:
    """The unambiguous encoding of one event that the chain hashes (see the module docstring)."""
    topic_field = NULL_FIELD if topic is None else _text_field(topic)
    state_field = NULL_FIELD if state is None else length_prefix(len(state)) + state
    return b"".join(
        (
            INTEGER_PREFIX,
            notification_id.to_bytes(8, "big", signed=True),
            UUID_PREFIX,
            originator_id.bytes,
            INTEGER_PREFIX,
            originator_version.to_bytes(8, "big", signed=True),
            topic_field,
            state_field,
        )
    )


def _text_field(text: str) -> bytes:
    encoded = text.encode("utf-8")
    return length_prefix(len(encoded)) + encoded


def next_hash(previous: bytes, canonical: bytes) -> bytes:
    """h(n) from h(previous) and canonical(event n)."""
    return hashlib.sha256(previous + canonical).digest()


def chain_hashes(
    events: list[tuple[int, uuid.UUID, int, str | None, bytes | None]],
    previous: bytes = GENESIS_HASH,
) -> list[bytes]:
    """The chain hashes of `events` (in log order) from scratch: the reference computation."""
    hashes = []
    for event in events:
        previous = next_hash(previous, canonical_bytes(*event))
        hashes.append(previous)
    return hashes


def _qualified(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def create_tables(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create the chain and checkpoint tables if they do not exist (no commit)."""
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " position bigint PRIMARY KEY,"
            " originator_id uuid NOT NULL,"
            " originator_version bigint NOT NULL,"
            " hash bytea NOT NULL)"
        ).format(_qualified(schema, CHAIN_TABLE))
    )
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " position bigint PRIMARY KEY,"
            " hash bytea NOT NULL,"
            " created_at timestamptz NOT NULL,"
            " key_id text NOT NULL,"
            " signature bytea NOT NULL)"
        ).format(_qualified(schema, CHECKPOINTS_TABLE))
    )


def table_exists(conn: psycopg.Connection[Any], schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier(schema, table).as_string(conn),)
    ).fetchone()
    return bool(row and row[0])


def read_checkpoints(conn: psycopg.Connection[Any], schema: str) -> list[Checkpoint]:
    """All checkpoints stored in the database, by position."""
    rows = conn.execute(
        sql.SQL(
            "SELECT position, hash, created_at, key_id, signature FROM {} ORDER BY position"
        ).format(_qualified(schema, CHECKPOINTS_TABLE))
    ).fetchall()
    return [Checkpoint(row[0], bytes(row[1]), row[2], row[3], bytes(row[4])) for row in rows]


@dataclass
class _Head:
    position: int
    hash: bytes
    checkpoint_position: int
    checkpoint_created_at: datetime | None
    events_since_checkpoint: int


class ChainFollower(Follower):
    """Extends `audit_chain` with the events committed since its last position.

    A follower of the log (`eventlog.follower`): `catch_up()` runs until the log is
    chained; `run(stop_event)` keeps doing so in a thread. Several followers on one
    schema are safe: each batch locks the chain table, so they take turns.
    """

    name = "audit_chain"
    listens = False  # chained in batches every poll interval: auditors need no lag of ms

    def __init__(
        self,
        url: str,
        schema: str,
        *,
        signing_key: SigningKey | None = None,
        key_dir: str | os.PathLike[str] = KEY_DIR_DEFAULT,
        checkpoint_interval_events: int = limits.checkpoint_interval_events_default,
        checkpoint_interval_seconds: float = limits.checkpoint_interval_seconds_default,
        batch_size_events: int = limits.chain_batch_size_events,
    ) -> None:
        assert 0 < batch_size_events <= limits.chain_batch_size_events_max
        assert checkpoint_interval_events > 0
        assert checkpoint_interval_seconds > 0
        self.url = url
        self.schema = schema
        self._signing_key = signing_key
        self._key_dir = key_dir
        self.checkpoint_interval_events = checkpoint_interval_events
        self.checkpoint_interval_seconds = checkpoint_interval_seconds
        self.batch_size_events = batch_size_events
        self._started_at = datetime.now(UTC)
        self._head: _Head | None = None

    @property
    def signing_key(self) -> SigningKey:
        if self._signing_key is None:
            self._signing_key = load_signing_key(self._key_dir)
            assert self._signing_key is not None
        return self._signing_key

    def connect(self) -> psycopg.Connection[Any]:
        return cast("psycopg.Connection[Any]", connect(self.url, self.schema))

    def following(self, poll_interval: float = limits.chain_poll_seconds_default
                  ) -> Following:
        return Following(self.url, self.schema, self, batch_size=self.batch_size_events,
                         poll_seconds=poll_interval)

    def catch_up(
        self, progress: Progress | None = None, *, connection: psycopg.Connection[Any] | None = None
    ) -> int:
        """Chain every event committed so far; returns how many events were chained."""
        following = self.following()
        if connection is None:
            try:
                return following.catch_up(progress)
            finally:
                following.stop()
        with connection.transaction():
            self.connected(connection)
        return following.run_batches(connection, progress=progress)

    def write_checkpoint(self, *, connection: psycopg.Connection[Any] | None = None) -> int | None:
        """Sign a checkpoint at the chain head now, unless one is there; returns its position."""
        if connection is None:
            with self.connect() as conn:
                return self._write_checkpoint_now(conn)
        return self._write_checkpoint_now(connection)

    def run(
        self,
        stop_event: threading.Event,
        poll_interval: float = limits.chain_poll_seconds_default,
    ) -> None:
        """Follow the log until `stop_event` is set; meant as a thread's target."""
        following = self.following(poll_interval)
        following.start()
        try:
            stop_event.wait()
        finally:
            following.stop()

    # The follower's side of the loop -----------------------------------------------------

    def connected(self, conn: psycopg.Connection[Any]) -> bool:
        create_tables(conn, self.schema)
        return True

    def locked_position(self, conn: psycopg.Connection[Any]) -> int:
        self._head = self._lock_and_read_head(conn)
        return self._head.position

    def handle(self, conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]],
               _prepared: Any) -> None:
        head = self._head
        assert head is not None, "locked_position comes first"
        self._chain(conn, head, rows)

    def save_position(self, conn: psycopg.Connection[Any], _before: int, _after: int) -> None:
        """The chain's position is its last row, written by `handle`: nothing more to save."""

    def idle(self, conn: psycopg.Connection[Any]) -> None:
        """Sign the chain head when the checkpoint interval passed while no events came."""
        self._chain(conn, self._lock_and_read_head(conn), [])

    def _lock_and_read_head(self, conn: psycopg.Connection[Any]) -> _Head:
        # SHARE ROW EXCLUSIVE conflicts with itself: one follower per batch, readers unaffected.
        conn.execute(
            sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(
                _qualified(self.schema, CHAIN_TABLE)
            )
        )
        row = conn.execute(
            sql.SQL("SELECT position, hash FROM {} ORDER BY position DESC LIMIT 1").format(
                _qualified(self.schema, CHAIN_TABLE)
            )
        ).fetchone()
        position, chain_hash = (0, GENESIS_HASH) if row is None else (row[0], bytes(row[1]))
        checkpoint = conn.execute(
            sql.SQL("SELECT position, created_at FROM {} ORDER BY position DESC LIMIT 1").format(
                _qualified(self.schema, CHECKPOINTS_TABLE)
            )
        ).fetchone()
        checkpoint_position, checkpoint_created_at = (0, None) if checkpoint is None else checkpoint
        counted = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE position > %s").format(
                _qualified(self.schema, CHAIN_TABLE)
            ),
            (checkpoint_position,),
        ).fetchone()
        assert counted is not None
        return _Head(position, chain_hash, checkpoint_position, checkpoint_created_at, counted[0])

    def _chain(self, conn: psycopg.Connection[Any], head: _Head,
               events: list[tuple[Any, ...]]) -> int:
        chain_rows: list[tuple[int, uuid.UUID, int, bytes]] = []
        checkpoints: list[Checkpoint] = []
        chain_hash = head.hash
        since_checkpoint = head.events_since_checkpoint
        for notification_id, originator_id, originator_version, topic, state in events:
            assert notification_id > head.position, "events are read in log order"
            chain_hash = next_hash(
                chain_hash,
                canonical_bytes(notification_id, originator_id, originator_version, topic, state),
            )
            chain_rows.append((notification_id, originator_id, originator_version, chain_hash))
            since_checkpoint += 1
            if since_checkpoint >= self.checkpoint_interval_events:
                checkpoints.append(self._checkpoint(notification_id, chain_hash))
                since_checkpoint = 0

        last_position = chain_rows[-1][0] if chain_rows else head.position
        last_checkpoint = checkpoints[-1].position if checkpoints else head.checkpoint_position
        last_checkpoint_at = (
            checkpoints[-1].created_at if checkpoints else head.checkpoint_created_at
        ) or self._started_at
        elapsed_seconds = (datetime.now(UTC) - last_checkpoint_at).total_seconds()
        if last_position > last_checkpoint and elapsed_seconds >= self.checkpoint_interval_seconds:
            checkpoints.append(self._checkpoint(last_position, chain_hash))

        if chain_rows:
            with (
                conn.cursor() as cursor,
                cursor.copy(
                    sql.SQL(
                        "COPY {} (position, originator_id, originator_version, hash) FROM STDIN"
                    ).format(_qualified(self.schema, CHAIN_TABLE))
                ) as copy,
            ):
                for row in chain_rows:
                    copy.write_row(row)
        self._insert_checkpoints(conn, checkpoints)
        return len(chain_rows)

    def _checkpoint(self, position: int, chain_hash: bytes) -> Checkpoint:
        return Checkpoint.create(position, chain_hash, datetime.now(UTC), self.signing_key)

    def _insert_checkpoints(
        self, conn: psycopg.Connection[Any], checkpoints: list[Checkpoint]
    ) -> None:
        if not checkpoints:
            return
        with conn.cursor() as cursor:
            cursor.executemany(
                sql.SQL(
                    "INSERT INTO {} (position, hash, created_at, key_id, signature)"
                    " VALUES (%s, %s, %s, %s, %s)"
                ).format(_qualified(self.schema, CHECKPOINTS_TABLE)),
                [
                    (item.position, item.hash, item.created_at, item.key_id, item.signature)
                    for item in checkpoints
                ],
            )

    def _write_checkpoint_now(self, conn: psycopg.Connection[Any]) -> int | None:
        create_tables(conn, self.schema)
        head = self._lock_and_read_head(conn)
        if head.position in (0, head.checkpoint_position):
            conn.rollback()
            return None
        self._insert_checkpoints(conn, [self._checkpoint(head.position, head.hash)])
        conn.commit()
        return head.position
