"""Recompute the audit hash chain from the stored events and say where it breaks.

`verify_chain` reads the events and `audit_chain` in one streaming pass (two
server-side cursors in one snapshot, merged by position), recomputes every
hash, and compares it with the stored chain and with every signed checkpoint,
those in the database and those auditors exported. It stops at the first
problem and names its position with a stable code:

- `event_modified`: an event's bytes differ from what was chained.
- `event_missing`: a chained position no longer has its event.
- `event_inserted`: an event sits below the chain head at a position never chained.
- `event_reordered`: an event (or its payload) that was chained at one position
  now sits at another.
- `chain_row_modified`: `audit_chain` itself was edited, deleted from or added to.
- `checkpoint_signature_invalid`: a checkpoint's signature does not hold.
- `checkpoint_mismatch`: a validly signed checkpoint disagrees with the chain, or
  the database and an exported copy disagree.

Events after the chain head are not chained yet; they are counted as
`unchained_tail`, never reported as a problem. Gaps in positions are normal.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import uuid
from collections.abc import Generator, Iterable, Iterator
from contextlib import ExitStack, closing
from dataclasses import asdict, dataclass
from itertools import chain as chain_iterables
from itertools import count
from pathlib import Path
from typing import Any, cast

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg import sql

from audit.chain import (
    CHAIN_TABLE,
    CHECKPOINTS_TABLE,
    GENESIS_HASH,
    INTEGER_PREFIX,
    UUID_PREFIX,
    Progress,
    canonical_bytes,
    length_prefix,
    read_checkpoints,
    table_exists,
)
from audit.signing import (
    KEY_DIR_DEFAULT,
    PUBLIC_KEY_FILE,
    Checkpoint,
    PublicKeySource,
    load_public_key,
    load_signing_key,
)
from eventlog.log import EVENTS_TABLE
from ledger import limits
from ledger.database import connect

EVENT_MODIFIED = "event_modified"
EVENT_MISSING = "event_missing"
EVENT_INSERTED = "event_inserted"
EVENT_REORDERED = "event_reordered"
CHAIN_ROW_MODIFIED = "chain_row_modified"
CHECKPOINT_SIGNATURE_INVALID = "checkpoint_signature_invalid"
CHECKPOINT_MISMATCH = "checkpoint_mismatch"

PROBLEM_CODES = (
    EVENT_MISSING,
    EVENT_INSERTED,
    EVENT_REORDERED,
    EVENT_MODIFIED,
    CHAIN_ROW_MODIFIED,
    CHECKPOINT_SIGNATURE_INVALID,
    CHECKPOINT_MISMATCH,
)
"""Every problem code, in the order that breaks a tie at one position."""

_cursor_numbers = count()
_NEVER = 2**63

Event = tuple[int, uuid.UUID, int, str | None, bytes | None]
ChainRow = tuple[int, bytes]
"""(position, hash ‖ originator id bytes ‖ originator version as 8 bytes)."""
Merged = tuple[int, Event | None, ChainRow | None]


@dataclass(frozen=True)
class ChainReport:
    """The outcome of one verification: ok, or the first bad position and what is wrong there."""

    ok: bool
    first_bad_position: int | None
    problem: str | None
    detail: str
    events_checked: int
    chain_head: int | None
    unchained_tail: int
    checkpoints_verified: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class _Problem:
    position: int
    code: str
    detail: str

    def rank(self) -> tuple[int, int]:
        return (self.position, PROBLEM_CODES.index(self.code))


def _merge(events: Iterator[Event], chain: Iterator[ChainRow]) -> Iterator[Merged]:
    """Events and chain rows side by side by position; either may be absent at a position."""
    row = next(chain, None)
    for event in events:
        position = event[0]
        while row is not None and row[0] < position:
            yield row[0], None, row
            row = next(chain, None)
        if row is not None and row[0] == position:
            yield position, event, row
            row = next(chain, None)
        else:
            yield position, event, None
    while row is not None:
        yield row[0], None, row
        row = next(chain, None)


def _qualified(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def _sha256(previous: bytes, event: Event) -> bytes:
    return hashlib.sha256(previous + canonical_bytes(*event)).digest()


_fixed_fields = struct.Struct(">Iq I16s Iq I").pack
"""The fixed-width start of canonical_bytes, up to and including the topic length."""


def _identity(event: Event) -> bytes:
    """The originator id and version fields as canonical_bytes spells them."""
    return UUID_PREFIX + event[1].bytes + INTEGER_PREFIX + event[2].to_bytes(8, "big", signed=True)


def verify_chain(
    url: str | None,
    schema: str,
    *,
    checkpoint_files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None,
    public_key: PublicKeySource | None = None,
    progress: Progress | None = None,
    connection: psycopg.Connection[Any] | None = None,
    key_dir: str | os.PathLike[str] = KEY_DIR_DEFAULT,
    events_table: str = EVENTS_TABLE,
) -> ChainReport:
    """Recompute the chain and compare it with `audit_chain` and every checkpoint.

    `checkpoint_files` is a directory written by `export_checkpoints`, or a list
    of its files. The public key is `public_key`, else `public-key.pem` in that
    directory, else the public half of the local signing key. With `connection`
    the check runs inside that connection's current transaction and leaves it
    open (so a test can verify uncommitted changes); otherwise it opens its own
    read-only repeatable-read connection to `url`.
    """
    options: dict[str, Any] = {
        "checkpoint_files": checkpoint_files,
        "public_key_source": public_key,
        "progress": progress,
        "key_dir": key_dir,
        "events_table": events_table,
    }
    if connection is not None:
        if connection.autocommit:
            with connection.transaction():
                return _verify(connection, schema, **options)
        return _verify(connection, schema, **options)
    assert url is not None, "verify_chain needs a url or a connection"
    with cast("psycopg.Connection[Any]", connect(url, schema)) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        try:
            return _verify(conn, schema, **options)
        finally:
            conn.rollback()


def _checkpoint_paths(
    checkpoint_files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None,
) -> tuple[list[Path], Path | None]:
    if checkpoint_files is None:
        return [], None
    if isinstance(checkpoint_files, str | os.PathLike):
        directory = Path(checkpoint_files)
        if directory.is_dir():
            return sorted(directory.glob("checkpoint-*.json")), directory
        return [directory], None
    return [Path(item) for item in checkpoint_files], None


def _resolve_public_key(
    public_key: PublicKeySource | None, directory: Path | None, key_dir: str | os.PathLike[str]
) -> Ed25519PublicKey | None:
    if public_key is not None:
        return load_public_key(public_key)
    if directory is not None and (directory / PUBLIC_KEY_FILE).exists():
        return load_public_key(directory / PUBLIC_KEY_FILE)
    signing_key = load_signing_key(key_dir, create=False)
    return None if signing_key is None else signing_key.public_key


def _verify(
    conn: psycopg.Connection[Any],
    schema: str,
    *,
    checkpoint_files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None,
    public_key_source: PublicKeySource | None,
    progress: Progress | None,
    key_dir: str | os.PathLike[str],
    events_table: str,
) -> ChainReport:
    paths, directory = _checkpoint_paths(checkpoint_files)
    has_chain = table_exists(conn, schema, CHAIN_TABLE)
    stored = read_checkpoints(conn, schema) if table_exists(conn, schema, CHECKPOINTS_TABLE) else []
    exported = []
    for path in paths:
        try:
            exported.append((path, Checkpoint.from_document(json.loads(path.read_text()))))
        except ValueError as error:
            msg = f"{path}: {error}"
            raise ValueError(msg) from error

    public_key = _resolve_public_key(public_key_source, directory, key_dir)
    if public_key is None and (stored or exported):
        msg = "checkpoints exist but no public key was given or found to verify them"
        raise LookupError(msg)

    problems: list[_Problem] = []
    expected: dict[int, list[tuple[str, bytes]]] = {}
    stored_by_position = {item.position: item for item in stored}
    for label, checkpoint in [("database checkpoint", item) for item in stored] + [
        (f"exported checkpoint {path.name}", item) for path, item in exported
    ]:
        assert public_key is not None
        why = checkpoint.signature_problem(public_key)
        if why is not None:
            problems.append(
                _Problem(checkpoint.position, CHECKPOINT_SIGNATURE_INVALID, f"{label}: {why}")
            )
            continue
        expected.setdefault(checkpoint.position, []).append((label, checkpoint.hash))
    for path, checkpoint in exported:
        in_database = stored_by_position.get(checkpoint.position)
        if in_database is None or not in_database.same_statement(checkpoint):
            state = "is missing" if in_database is None else "differs"
            problems.append(
                _Problem(
                    checkpoint.position,
                    CHECKPOINT_MISMATCH,
                    f"the database checkpoint {state} from exported file {path.name}",
                )
            )

    scan = _Scan(
        conn,
        schema,
        events_table=events_table,
        has_chain=has_chain,
        expected=expected,
        progress=progress,
    )
    found = scan.run()
    if found is not None:
        problems.append(found)
    verified = sum(len(hashes) for hashes in expected.values())
    if not problems:
        return ChainReport(
            ok=True,
            first_bad_position=None,
            problem=None,
            detail="chain verified",
            events_checked=scan.events_checked,
            chain_head=scan.head,
            unchained_tail=scan.unchained_tail,
            checkpoints_verified=verified,
        )
    first = min(problems, key=_Problem.rank)
    return ChainReport(
        ok=False,
        first_bad_position=first.position,
        problem=first.code,
        detail=first.detail,
        events_checked=scan.events_checked,
        chain_head=scan.head,
        unchained_tail=scan.unchained_tail,
        checkpoints_verified=verified,
    )


class _Scan:
    """One pass over events and chain rows, merged by position; stops at the first problem."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        schema: str,
        *,
        events_table: str,
        has_chain: bool,
        expected: dict[int, list[tuple[str, bytes]]],
        progress: Progress | None,
    ) -> None:
        self.conn = conn
        self.schema = schema
        self.events_table = events_table
        self.has_chain = has_chain
        self.expected = expected
        self.progress = progress
        self.events_checked = 0
        self.unchained_tail = 0
        self.head: int | None = None
        self._checkpoint_positions = sorted(expected)
        self._checkpoint_index = 0

    def _rows(
        self, query: sql.Composed, params: tuple[Any, ...] = ()
    ) -> Generator[Any, None, None]:
        name = f"audit_verify_{next(_cursor_numbers)}"
        with self.conn.cursor(name=name, binary=True) as cursor:
            cursor.execute(query, params)
            while rows := cursor.fetchmany(limits.verify_fetch_size_rows):
                yield from rows

    def _drain(self, cursor: psycopg.ServerCursor[Any] | None, *, events: bool) -> Iterator[Any]:
        if cursor is None:
            return
        while rows := cursor.fetchmany(limits.verify_fetch_size_rows):
            if events and self.progress is not None:
                self.progress(len(rows))
            yield from rows

    def run(self) -> _Problem | None:
        if not table_exists(self.conn, self.schema, self.events_table):
            return None
        if self.has_chain:
            found = self.conn.execute(
                sql.SQL("SELECT max(position) FROM {}").format(_qualified(self.schema, CHAIN_TABLE))
            ).fetchone()
            self.head = None if found is None else found[0]
        with ExitStack() as stack:
            events_cursor = stack.enter_context(
                self.conn.cursor(name=f"audit_verify_{next(_cursor_numbers)}", binary=True)
            )
            events_cursor.execute(
                sql.SQL(
                    "SELECT notification_id, originator_id, originator_version, topic, state"
                    " FROM {} ORDER BY notification_id"
                ).format(_qualified(self.schema, self.events_table))
            )
            chain_cursor = None
            if self.has_chain:
                chain_cursor = stack.enter_context(
                    self.conn.cursor(name=f"audit_verify_{next(_cursor_numbers)}", binary=True)
                )
                # The hash and the chained identity travel as one value: one column to decode.
                chain_cursor.execute(
                    sql.SQL(
                        "SELECT position, hash || '\\x00000010'::bytea || uuid_send(originator_id)"
                        " || '\\x00000008'::bytea || int8send(originator_version)"
                        " FROM {} ORDER BY position"
                    ).format(_qualified(self.schema, CHAIN_TABLE))
                )
            return self._walk(events_cursor, chain_cursor)

    def _next_checkpoint(self) -> int:
        if self._checkpoint_index < len(self._checkpoint_positions):
            return self._checkpoint_positions[self._checkpoint_index]
        return _NEVER

    def _walk(
        self,
        events_cursor: psycopg.ServerCursor[Any],
        chain_cursor: psycopg.ServerCursor[Any] | None,
    ) -> _Problem | None:
        """The common case, written for speed: every event chained, in step with its chain row.

        Anything else (a gap between the two streams, a mismatch, the unchained tail, a
        NULL column, a skipped checkpoint) hands the rest of both streams to `_walk_slowly`.
        """
        sha256 = hashlib.sha256
        length = length_prefix
        fixed_fields = _fixed_fields
        checked = 0
        fetch_size = limits.verify_fetch_size_rows
        chain_hash = GENESIS_HASH
        chain_rows: list[ChainRow] = (
            [] if chain_cursor is None else chain_cursor.fetchmany(fetch_size)
        )
        chain_index = 0
        next_checkpoint = self._next_checkpoint()
        events: list[Event] = []
        index = 0
        while events := events_cursor.fetchmany(fetch_size):
            if self.progress is not None:
                self.progress(len(events))
            for index, event in enumerate(events):  # noqa: B007  (index is read after a break)
                if chain_index == len(chain_rows) and chain_rows:
                    assert chain_cursor is not None
                    chain_rows = chain_cursor.fetchmany(fetch_size)
                    chain_index = 0
                position, originator_id, originator_version, topic, state = event
                if (
                    chain_index == len(chain_rows)
                    or chain_rows[chain_index][0] != position
                    or position > next_checkpoint
                    or topic is None
                    or state is None
                ):
                    break
                topic_bytes = topic.encode("utf-8")
                fixed = fixed_fields(
                    8, position, 16, originator_id.bytes, 8, originator_version, len(topic_bytes)
                )
                candidate = sha256(
                    b"".join((chain_hash, fixed, topic_bytes, length(len(state)), state))
                ).digest()
                # fixed[12:44] is the identity as canonical_bytes spells it; so is the chain row's.
                if candidate + fixed[12:44] != chain_rows[chain_index][1]:
                    break
                chain_hash = candidate
                chain_index += 1
                checked += 1
                if position == next_checkpoint:
                    problem = self._check_checkpoint(position, candidate, chained=True)
                    if problem is not None:
                        self.events_checked += checked
                        return problem
                    self._checkpoint_index += 1
                    next_checkpoint = self._next_checkpoint()
            else:
                continue
            break
        else:
            index = len(events)
        self.events_checked += checked
        rest_events = chain_iterables(events[index:], self._drain(events_cursor, events=True))
        rest_chain = chain_iterables(
            chain_rows[chain_index:], self._drain(chain_cursor, events=False)
        )
        return self._walk_slowly(_merge(rest_events, rest_chain), chain_hash)

    def _walk_slowly(self, merged: Iterator[Merged], chain_hash: bytes) -> _Problem | None:
        head = -1 if self.head is None else self.head
        next_checkpoint = self._next_checkpoint()
        for position, event, chained in merged:
            if position > next_checkpoint:
                return _Problem(
                    next_checkpoint,
                    CHECKPOINT_MISMATCH,
                    "a signed checkpoint names a position that has neither event nor chain row",
                )
            if event is None:
                assert chained is not None
                return self._classify_missing(position, chain_hash, merged)
            candidate = _sha256(chain_hash, event)
            if chained is None:
                if position < head:
                    return self._classify_unchained(position, candidate, merged)
                self.unchained_tail += 1
            elif candidate + _identity(event) != chained[1]:
                return self._classify_mismatch(
                    position,
                    event,
                    chained,
                    previous=chain_hash,
                    candidate=candidate,
                    merged=merged,
                )
            else:
                self.events_checked += 1
            chain_hash = candidate
            if position == next_checkpoint:
                problem = self._check_checkpoint(position, candidate, chained=chained is not None)
                if problem is not None:
                    return problem
                self._checkpoint_index += 1
                next_checkpoint = self._next_checkpoint()
        if next_checkpoint != _NEVER:
            return _Problem(
                next_checkpoint,
                CHECKPOINT_MISMATCH,
                "a signed checkpoint names a position beyond the last event",
            )
        return None

    def _check_checkpoint(
        self, position: int, chain_hash: bytes, *, chained: bool
    ) -> _Problem | None:
        for label, expected_hash in self.expected[position]:
            if expected_hash != chain_hash:
                return _Problem(
                    position,
                    CHECKPOINT_MISMATCH,
                    f"{label} says hash {expected_hash.hex()}, the events give {chain_hash.hex()}",
                )
        if not chained:
            return _Problem(
                position,
                CHAIN_ROW_MODIFIED,
                "the chain row at a signed checkpoint's position was deleted",
            )
        return None

    def _classify_missing(
        self, position: int, chain_hash: bytes, merged: Iterator[Merged]
    ) -> _Problem:
        # Did the chain ever include this position? If the next chain row follows on
        # from the hash before it, the chain row was added, not the event removed.
        _, next_event, next_chained = next(merged, (0, None, None))
        if (
            next_event is not None
            and next_chained is not None
            and _sha256(chain_hash, next_event) == next_chained[1][:32]
        ):
            return _Problem(
                position, CHAIN_ROW_MODIFIED, "a chain row was added where no event was chained"
            )
        return _Problem(position, EVENT_MISSING, "the chained event at this position is gone")

    def _classify_unchained(
        self, position: int, candidate: bytes, merged: Iterator[Merged]
    ) -> _Problem:
        # If the next chain row follows on from this event, the event was chained
        # and its chain row deleted; otherwise the event was never chained.
        _, next_event, next_chained = next(merged, (0, None, None))
        if (
            next_event is not None
            and next_chained is not None
            and _sha256(candidate, next_event) == next_chained[1][:32]
        ):
            return _Problem(
                position, CHAIN_ROW_MODIFIED, "the chain row of this chained event was deleted"
            )
        return _Problem(
            position, EVENT_INSERTED, "an event below the chain head at a position never chained"
        )

    def _classify_mismatch(
        self,
        position: int,
        event: Event,
        chained: ChainRow,
        *,
        previous: bytes,
        candidate: bytes,
        merged: Iterator[Merged],
    ) -> _Problem:
        chained_hash = chained[1][:32]
        same_identity = _identity(event) == chained[1][32:]
        if candidate == chained_hash:
            assert not same_identity
            return _Problem(
                position,
                CHAIN_ROW_MODIFIED,
                "the chain row's originator differs from the chained event's",
            )
        if not same_identity:
            moved_from = self._chained_position_of(event[1], event[2])
            if moved_from is not None and moved_from != position:
                return _Problem(
                    position,
                    EVENT_REORDERED,
                    f"event {event[1]} v{event[2]} was chained at position {moved_from}",
                )
        _, next_event, next_chained = next(merged, (0, None, None))
        stored_chain_continues = edited_chain_row = False
        if next_event is not None and next_chained is not None:
            stored_chain_continues = _sha256(chained_hash, next_event) == next_chained[1][:32]
            edited_chain_row = _sha256(candidate, next_event) == next_chained[1][:32]
        else:
            signed = [expected for _, expected in self.expected.get(position, [])]
            edited_chain_row = candidate in signed and chained_hash not in signed
        if edited_chain_row and not stored_chain_continues:
            return _Problem(position, CHAIN_ROW_MODIFIED, "the chain row's hash was altered")
        if same_identity:
            swapped_with = self._payload_position(position, event, chained_hash, previous)
            if swapped_with is not None:
                return _Problem(
                    position,
                    EVENT_REORDERED,
                    f"the payload chained at this position is now at position {swapped_with}",
                )
        return _Problem(
            position,
            EVENT_MODIFIED,
            "the event's bytes differ from those chained"
            + ("" if same_identity else " (its originator id or version changed)"),
        )

    def _chained_position_of(self, originator_id: uuid.UUID, version: int) -> int | None:
        row = self.conn.execute(
            sql.SQL(
                "SELECT position FROM {} WHERE originator_id = %s AND originator_version = %s"
            ).format(_qualified(self.schema, CHAIN_TABLE)),
            (originator_id, version),
        ).fetchone()
        return None if row is None else int(row[0])

    def _payload_position(
        self, position: int, event: Event, chained_hash: bytes, previous: bytes
    ) -> int | None:
        """Where the payload that was chained at `position` now is, if anywhere later."""
        query = sql.SQL(
            "SELECT notification_id, topic, state FROM {} WHERE notification_id > %s"
            " ORDER BY notification_id"
        ).format(_qualified(self.schema, self.events_table))
        with closing(self._rows(query, (position,))) as rows:
            for other_position, topic, state in rows:
                if _sha256(previous, (position, event[1], event[2], topic, state)) == chained_hash:
                    return int(other_position)
        return None
