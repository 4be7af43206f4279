"""The event store's write path and its guards, on top of the library's recorder.

What this adds to `eventsourcing.postgres.PostgresApplicationRecorder`:

* One network round trip per save: a single call of the `<table>_append` function,
  which takes the table lock, checks what was read and inserts the events and the
  request records, committed as one statement. Followers are notified after the
  commit, off the write path (`Notifier`). The EXCLUSIVE table lock is kept, so
  positions commit in order and a reader that tails by position never skips a late
  commit.
* COPY for large saves (bulk seeding): positions are reserved from the sequence
  under the same table lock and written explicitly, so they stay ordered.
* Immutability enforced by the database: a trigger rejects UPDATE, DELETE and
  TRUNCATE on the events table, and every write runs as the `ledger_app` role,
  which has no UPDATE or DELETE privilege there (SELECT, INSERT, and TRUNCATE,
  which PostgreSQL requires for the EXCLUSIVE lock and the trigger refuses).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import IntegrityError, PersistenceError, StoredEvent
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresFactory,
    PostgresRecorder,
)
from psycopg import Cursor
from psycopg.conninfo import make_conninfo
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier, Literal

from ledger import limits
from ledger.database import IdleCheck
from ledger.request import RequestRow, request_record_id

APP_ROLE = "ledger_app"
"""The role writes run as: SELECT and INSERT on the events table, nothing else."""

COPY_THRESHOLD_EVENTS = 2_000
"""Saves at least this large go through COPY instead of INSERT."""

STALE_READ = "ledger_stale_read"
"""The message of the append function's refusal: an aggregate a command read has changed."""


def _setting_up_alone(recorder: PostgresRecorder, curs: Cursor[DictRow]) -> None:
    """Serialise the recorders' set-up (tables, triggers, functions, grants) across
    processes: two writer processes starting together otherwise deadlock on their DDL."""
    curs.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                 (f"ledger:set-up:{recorder.datastore.schema}",))


def _without_retry(method: Any) -> Any:
    """The library's method without its retry decorator.

    The library retries reads and writes ten times, 0.2 s apart, each attempt waiting for
    a pooled connection: twenty seconds and more before a caller hears that the database
    is away. Here an attempt fails once, within the pool's bounded checkout, and the
    caller answers 503 at once; the client's retry of the same request is safe.
    """
    return method.__wrapped__


STALE_ALL = StoredEvent(originator_id=UUID(int=0), originator_version=0, topic="*", state=b"")
"""Stands for "everything may be stale" in `WritersLock.acquire`'s answer."""


class WritersLock:
    """The writer processes' lock on one schema, for batches while writers contend.

    `acquire` takes a session advisory lock (waiting at most the lock bound) and, in the
    same round trip, lists the aggregates other writers changed since this process last
    held it: the caller drops them from its cache, so the batch stages against current
    state and no other lock holder can change it before the save. `release` lets go and
    notes the position this process reached. Correctness never rests on the lock (the
    save checks versions anyway); it keeps contending writers from refusing each other's
    batches over and over.
    """

    def __init__(self, conninfo: str, schema: str, events_table: str) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self.key = f"ledger:writers:{schema}"
        self.seen: int | None = None
        """Every commit up to here is reflected in this process's cache (None: unknown)."""
        self._conn: psycopg.Connection[Any] | None = None
        self._changed = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state"
            " FROM {schema}.{table} WHERE notification_id > %s ORDER BY notification_id"
            " LIMIT %s").format(
            schema=Identifier(schema), table=Identifier(events_table))
        self._head = SQL("SELECT coalesce(max(notification_id), 0) FROM {schema}.{table}"
                         ).format(schema=Identifier(schema), table=Identifier(events_table))

    def acquire(self) -> list[StoredEvent] | None:
        """The events other writers committed since this process last held the lock, in
        log order (the caller brings its cache up to date with them), or None when the
        lock was not had in time. Far behind, or the first time, a single `STALE_ALL`
        stands for "drop the whole cache"."""
        try:
            conn = self._connection()
            with conn.pipeline():
                conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (self.key,))
                if self.seen is None:
                    rows = conn.execute(self._head).fetchall()
                else:
                    rows = conn.execute(self._changed, (
                        self.seen, limits.writers_catch_up_events_max + 1),
                        binary=True).fetchall()
        except psycopg.Error:
            self._discard()  # the lock, if taken, goes with the session
            return None
        if self.seen is None or len(rows) > limits.writers_catch_up_events_max:
            if self.seen is None:
                self.seen = int(rows[0][0]) if rows else 0
            else:
                self.seen = int(rows[-1][0])
            return [STALE_ALL]
        if rows:
            self.seen = int(rows[-1][0])
        return [StoredEvent(originator_id=row[1], originator_version=row[2], topic=row[3],
                            state=bytes(row[4])) for row in rows]

    def release(self, saved_position: int | None) -> None:
        """Let go; `saved_position`: the last position this process saved meanwhile."""
        if saved_position is not None and self.seen is not None:
            self.seen = max(self.seen, saved_position)
        try:
            if self._conn is not None:
                self._conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (self.key,))
        except psycopg.Error:
            self._discard()  # the session, and so its lock, is gone

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            lock_ms = limits.database_lock_seconds_max * 1000
            self._conn = psycopg.connect(
                self.conninfo, autocommit=True,
                connect_timeout=limits.database_connect_seconds_max,
                options=f"-c lock_timeout={lock_ms}"
                        f" -c statement_timeout={limits.database_statement_seconds_max * 1000}")
        return self._conn

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        self.seen = None  # commits may have been missed meanwhile
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def close(self) -> None:
        self._discard()


class Notifier:
    """Tells the log's followers that new events were committed: a NOTIFY on the log's
    channel, sent off the write path by a thread of its own, at most once per
    `limits.notify_coalesce_seconds` for however many commits happened meanwhile.

    A NOTIFY in the committing transaction halved the rate of single commands (each
    commit then queues a notification under a global lock and signals every listening
    backend). Followers read everything after their position when woken, so one
    notification covers any number of commits; they also poll, so a notification lost
    while the database is away only delays them by their poll interval.
    """

    def __init__(self, conninfo: str, channel: str) -> None:
        self.conninfo = conninfo
        self.statement = SQL("NOTIFY {0}").format(Identifier(channel))
        self._due = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        """Attempts that found the database away (each retried after
        `limits.notify_retry_seconds`)."""

    def poke(self) -> None:
        """New events are committed: notify soon (never blocks, never raises)."""
        self._due.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stopping.is_set():
                    self._thread = threading.Thread(target=self._run, name="ledger-notifier",
                                                    daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stopping.is_set():
            self._due.wait()
            if self._stopping.is_set():
                break
            self._stopping.wait(limits.notify_coalesce_seconds)
            self._due.clear()
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(
                        self.conninfo, autocommit=True,
                        connect_timeout=limits.database_connect_seconds_max)
                conn.execute(self.statement)
                self.sent += 1
            except psycopg.Error:  # the database is away: followers poll meanwhile
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                conn = None
                self.failed += 1
                # Still due: sent once the database is back, waking the followers then
                # rather than at their next poll.
                self._due.set()
                self._stopping.wait(limits.notify_retry_seconds)
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def close(self) -> None:
        self._stopping.set()
        self._due.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=limits.database_connect_seconds_max + 1)


class LedgerSnapshotRecorder(PostgresAggregateRecorder):
    """The library's snapshot recorder, its waits bounded (no retries)."""

    select_events = _without_retry(PostgresAggregateRecorder.select_events)
    insert_events = _without_retry(PostgresAggregateRecorder.insert_events)

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        _setting_up_alone(self, curs)
        super()._create_table(curs)


class LedgerRecorder(PostgresApplicationRecorder):
    """The library's recorder, with a one-round-trip save, COPY for bulk, guards, and
    bounded waits (no retries)."""

    select_events = _without_retry(PostgresApplicationRecorder.select_events)
    select_notifications = _without_retry(PostgresApplicationRecorder.select_notifications)
    max_notification_id = _without_retry(PostgresApplicationRecorder.max_notification_id)

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        _setting_up_alone(self, curs)
        super()._create_table(curs)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Every wait on the database is bounded: opening a connection and each statement
        # (the pool's checkout and the table lock are bounded by the library's settings,
        # see ledger.database.eventsourcing_env).
        # Broken connections (a database restart) are replaced before use when they sat
        # idle; the library offers only a check on every checkout (a round trip each), so
        # its pool gets ours (psycopg_pool keeps the callback in this attribute). No
        # `reset`: with one, the pool hands every returned connection to a worker thread.
        self.datastore.pool._check = IdleCheck().check
        pool_kwargs = self.datastore.pool.kwargs
        assert isinstance(pool_kwargs, dict), "the library passes connection keywords"
        self.writers_lock = WritersLock(
            make_conninfo("", **{key: value for key, value in pool_kwargs.items()
                                 if key in ("dbname", "host", "port", "user", "password")
                                 and value}),
            self.datastore.schema, self.events_table_name)
        pool_kwargs.update(
            connect_timeout=limits.database_connect_seconds_max,
            options=f"-c statement_timeout={limits.database_statement_seconds_max * 1000}")
        self.append_function_name = f"{self.events_table_name}_append"
        self.requests_table_name = requests_table_name(self.events_table_name)
        schema = Identifier(self.datastore.schema)
        table = Identifier(self.events_table_name)
        requests = Identifier(self.requests_table_name)
        qualified = f"{self.datastore.schema}.{self.events_table_name}"
        trigger_function = Identifier(f"{self.events_table_name}_immutable")
        self.sql_create_statements.extend([
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{function}() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'ledger events are immutable: % refused on %', "
                "TG_OP, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege'; "
                "END $$"
            ).format(schema=schema, function=trigger_function),
            SQL(
                "CREATE OR REPLACE TRIGGER {trigger} BEFORE UPDATE OR DELETE ON {schema}.{table} "
                "FOR EACH ROW EXECUTE FUNCTION {schema}.{function}()"
            ).format(trigger=Identifier(f"{self.events_table_name}_no_change"), schema=schema,
                     table=table, function=trigger_function),
            SQL(
                "CREATE OR REPLACE TRIGGER {trigger} BEFORE TRUNCATE ON {schema}.{table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{function}()"
            ).format(trigger=Identifier(f"{self.events_table_name}_no_truncate"), schema=schema,
                     table=table, function=trigger_function),
            # Request records: one row per accepted command, forever, immutable like the log.
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{requests} ("
                "actor_id uuid NOT NULL, request_id text NOT NULL, command text NOT NULL, "
                "fingerprint text NOT NULL, outcome json NOT NULL, position bigint NOT NULL, "
                "complex_id uuid, recorded_at timestamptz NOT NULL DEFAULT now(), "
                "PRIMARY KEY (actor_id, request_id))"
            ).format(schema=schema, requests=requests),
            SQL(
                "CREATE OR REPLACE TRIGGER {trigger} BEFORE UPDATE OR DELETE ON "
                "{schema}.{requests} FOR EACH ROW EXECUTE FUNCTION {schema}.{function}()"
            ).format(trigger=Identifier(f"{self.requests_table_name}_no_change"),
                     schema=schema, requests=requests, function=trigger_function),
            SQL(
                "CREATE OR REPLACE TRIGGER {trigger} BEFORE TRUNCATE ON {schema}.{requests} "
                "FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{function}()"
            ).format(trigger=Identifier(f"{self.requests_table_name}_no_truncate"),
                     schema=schema, requests=requests, function=trigger_function),
            SQL(
                "DO $$ BEGIN CREATE ROLE {role} NOLOGIN; "
                "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            ).format(role=Identifier(APP_ROLE)),
            SQL("GRANT USAGE ON SCHEMA {schema} TO {role}").format(
                schema=schema, role=Identifier(APP_ROLE)),
            SQL("REVOKE ALL ON {schema}.{table} FROM {role}").format(
                schema=schema, table=table, role=Identifier(APP_ROLE)),
            # TRUNCATE only because LOCK … IN EXCLUSIVE MODE requires UPDATE, DELETE or
            # TRUNCATE; the trigger refuses TRUNCATE itself. Never UPDATE or DELETE.
            SQL("GRANT SELECT, INSERT, TRUNCATE ON {schema}.{table} TO {role}").format(
                schema=schema, table=table, role=Identifier(APP_ROLE)),
            SQL("REVOKE ALL ON {schema}.{requests} FROM {role}").format(
                schema=schema, requests=requests, role=Identifier(APP_ROLE)),
            SQL("GRANT SELECT, INSERT ON {schema}.{requests} TO {role}").format(
                schema=schema, requests=requests, role=Identifier(APP_ROLE)),
            SQL("GRANT USAGE, SELECT, UPDATE ON SEQUENCE {sequence} TO {role}").format(
                sequence=Identifier(self.datastore.schema,
                                    f"{self.events_table_name}_notification_id_seq"),
                role=Identifier(APP_ROLE)),
            # One statement, one round trip: lock, check that every aggregate the commands
            # only read is still at the version they read (0: it did not exist),
            # insert. It runs with its owner's rights: the write path is `ledger_app`.
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{append}(ids uuid[], versions bigint[], "
                "topics text[], states bytea[], read_ids uuid[], read_versions bigint[], "
                "request_actors uuid[], request_ids text[], request_commands text[], "
                "request_fingerprints text[], request_outcomes text[], "
                "request_complexes uuid[], request_last_events int[]) "
                "RETURNS SETOF bigint LANGUAGE plpgsql SECURITY DEFINER "
                "SET search_path = pg_catalog, pg_temp AS $$ DECLARE positions bigint[]; BEGIN "
                "PERFORM set_config('lock_timeout', {lock_timeout}, true); "
                "LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
                # One primary-key probe per aggregate read (a join could scan the table).
                "FOR i IN 1 .. coalesce(array_length(read_ids, 1), 0) LOOP "
                "IF EXISTS (SELECT 1 FROM {schema}.{table} WHERE originator_id = read_ids[i] "
                "AND originator_version > read_versions[i]) THEN "
                "RAISE EXCEPTION {stale} USING ERRCODE = 'serialization_failure'; END IF; "
                "END LOOP; "
                # Positions come from the sequence in the order of the rows (the table is
                # locked), so sorted they are the events' positions in order.
                "WITH inserted AS (INSERT INTO {schema}.{table} "
                "(originator_id, originator_version, topic, state) "
                "SELECT * FROM unnest(ids, versions, topics, states) "
                "RETURNING notification_id) "
                "SELECT array_agg(notification_id ORDER BY notification_id) INTO positions "
                "FROM inserted; "
                "INSERT INTO {schema}.{requests} (actor_id, request_id, command, fingerprint, "
                "outcome, position, complex_id) "
                "SELECT r.actor, r.request, r.command, r.fingerprint, r.outcome::json, "
                "positions[r.last_event + 1], r.complex "
                "FROM unnest(request_actors, request_ids, request_commands, "
                "request_fingerprints, request_outcomes, request_complexes, "
                "request_last_events) AS r(actor, request, command, fingerprint, outcome, "
                "complex, last_event); "
                "RETURN QUERY SELECT unnest(positions); "
                "END $$"
            ).format(schema=schema, append=Identifier(self.append_function_name), table=table,
                     requests=requests,
                     lock_timeout=Literal(f"{self.datastore.lock_timeout}s"),
                     stale=Literal(STALE_READ)),
            SQL("ALTER FUNCTION {schema}.{append}(uuid[], bigint[], text[], bytea[], uuid[], "
                "bigint[], uuid[], text[], text[], text[], text[], uuid[], int[]) "
                "OWNER TO {role}").format(
                schema=schema, append=Identifier(self.append_function_name),
                role=Identifier(APP_ROLE)),
        ])
        self.append_statement = SQL(
            "SELECT {schema}.{append}(%b, %b, %b, %b, %s::uuid[], %s::bigint[], "
            "%s::uuid[], %s::text[], %s::text[], %s::text[], %s::text[], %s::uuid[], "
            "%s::int[]) AS notification_id").format(
            schema=schema, append=Identifier(self.append_function_name))
        self.insert_requests_statement = SQL(
            "INSERT INTO {schema}.{requests} (actor_id, request_id, command, fingerprint, "
            "outcome, position, complex_id) SELECT * FROM unnest(%s::uuid[], %s::text[], "
            "%s::text[], %s::text[], %s::json[], %s::bigint[], %s::uuid[])").format(
            schema=schema, requests=requests)
        # A request's record: in its table, else (logs written before it) in the log.
        self.find_request_statement = SQL(
            "(SELECT position, fingerprint, outcome::text AS outcome, NULL::bytea AS state "
            "FROM {schema}.{requests} WHERE actor_id = %(actor)s AND request_id = %(request)s) "
            "UNION ALL (SELECT notification_id, NULL, NULL, state FROM {schema}.{table} "
            "WHERE originator_id = %(record)s AND originator_version = 1) LIMIT 1").format(
            schema=schema, requests=requests, table=table)
        self.request_exists_statement = SQL(
            "SELECT 1 FROM {schema}.{requests} WHERE actor_id = %s AND request_id = %s"
        ).format(schema=schema, requests=requests)
        self.changed_statement = SQL(
            "SELECT 1 FROM unnest(%s::uuid[], %s::bigint[]) AS r(id, version), LATERAL "
            "(SELECT 1 FROM {schema}.{table} e WHERE e.originator_id = r.id "
            "AND e.originator_version > r.version LIMIT 1) AS newer LIMIT 1").format(
            schema=schema, table=table)
        self.check_reads_statement = SQL(
            "SELECT 1 FROM unnest(%s::uuid[], %s::bigint[]) AS r(id, version) "
            "JOIN {schema}.{table} e ON e.originator_id = r.id "
            "AND e.originator_version > r.version LIMIT 1").format(schema=schema, table=table)
        self.set_role_statement = SQL("SET LOCAL ROLE {0}").format(Identifier(APP_ROLE))
        self.sequence_name = f"{qualified}_notification_id_seq"
        self.reserve_positions_statement = SQL(
            "SELECT setval({sequence}, nextval({sequence}) + %s - 1) AS last"
        ).format(sequence=Literal(self.sequence_name))
        self.copy_statement = SQL(
            "COPY {schema}.{table} (originator_id, originator_version, topic, state, "
            "notification_id) FROM STDIN (FORMAT BINARY)"
        ).format(schema=schema, table=table)
        self.notifier = Notifier(self.writers_lock.conninfo, self.channel_name)

    def select_aggregates(self, ids: Sequence[UUID], snapshots_table: str | None
                          ) -> list[tuple[bool, StoredEvent]]:
        """Each aggregate's latest snapshot (if any) and its events after it, for many
        aggregates in one statement: (is_snapshot, stored event) ordered by aggregate,
        the snapshot first, then the events by version."""
        if not ids:
            return []
        schema = Identifier(self.datastore.schema)
        events = Identifier(self.events_table_name)
        if snapshots_table is None:
            statement = SQL(
                "SELECT false AS snapshot, originator_id, originator_version, topic, state "
                "FROM {schema}.{events} WHERE originator_id = ANY(%(ids)s) "
                "ORDER BY originator_id, originator_version"
            ).format(schema=schema, events=events)
        else:
            statement = SQL(
                "WITH latest AS ("
                " SELECT DISTINCT ON (originator_id) originator_id, originator_version, topic,"
                " state FROM {schema}.{snapshots} WHERE originator_id = ANY(%(ids)s)"
                " ORDER BY originator_id, originator_version DESC) "
                "SELECT true AS snapshot, originator_id, originator_version, topic, state "
                "FROM latest "
                "UNION ALL "
                "SELECT false, e.originator_id, e.originator_version, e.topic, e.state "
                "FROM {schema}.{events} e LEFT JOIN latest s USING (originator_id) "
                "WHERE e.originator_id = ANY(%(ids)s) "
                "AND e.originator_version > COALESCE(s.originator_version, 0) "
                "ORDER BY originator_id, snapshot DESC, originator_version"
            ).format(schema=schema, events=events, snapshots=Identifier(snapshots_table))
        with self.datastore.get_connection() as conn:
            rows = conn.execute(statement, {"ids": list(ids)}, prepare=True).fetchall()
        return [(row["snapshot"], StoredEvent(
            originator_id=row["originator_id"], originator_version=row["originator_version"],
            topic=row["topic"], state=bytes(row["state"]))) for row in rows]

    def unchanged(self, versions: Mapping[UUID, int],
                  request: tuple[UUID, str] | None = None) -> bool:
        """Whether every aggregate is still at the given version (0: does not exist) and,
        given `request` (actor, request id), no command was accepted with that request id
        (one round trip)."""
        statement = self.changed_statement
        params: tuple[Any, ...] = (list(versions), list(versions.values()))
        if request is not None:
            statement = SQL("({0}) UNION ALL ({1}) LIMIT 1").format(
                self.changed_statement, self.request_exists_statement)
            params = (*params, *request)
        with self.datastore.get_connection() as conn:
            row = conn.execute(statement, params, prepare=True).fetchone()
        return row is None

    def find_request(self, actor_id: UUID, request_id: str
                     ) -> tuple[int, str, dict[str, Any]] | None:
        """(position, fingerprint, outcome) of the command accepted with this request id:
        from the requests table, else from a request-record event of an older log."""
        with self.datastore.get_connection() as conn:
            row = conn.execute(self.find_request_statement, {
                "actor": actor_id, "request": request_id,
                "record": request_record_id(actor_id, request_id)}, prepare=True).fetchone()
        if row is None:
            return None
        if row["state"] is None:
            return int(row["position"]), str(row["fingerprint"]), json.loads(row["outcome"])
        state = json.loads(bytes(row["state"]))
        return int(row["position"]), str(state["fingerprint"]), dict(state["outcome"])

    def insert_events(
        self, stored_events: Sequence[StoredEvent], *,
        read_versions: Mapping[UUID, int] | None = None,
        requests: Sequence[RequestRow] = (), companion: Sequence[Statement] = (), **_: Any
    ) -> Sequence[int] | None:
        """Insert the events in one transaction, after checking that each aggregate of
        `read_versions` is still at that version (IntegrityError if not, as for a
        concurrent change of a written aggregate). `companion` statements run in the same
        transaction (an import's rejections and progress), also when there are no events.
        Never retried here: a failure is the caller's to answer, and a retry of the same
        request is safe."""
        reads = read_versions or {}
        if not stored_events:
            if companion:
                self._companion_alone(reads, companion)
            return []
        if companion or len(stored_events) >= COPY_THRESHOLD_EVENTS:
            positions = self._copy_events(stored_events, reads, requests, companion)
        else:
            positions = self._pipelined_insert(stored_events, reads, requests)
        self.notifier.poke()  # committed: the followers may read
        return positions

    def _companion_alone(self, reads: Mapping[UUID, int], companion: Sequence[Statement]
                         ) -> None:
        """The companion statements of a save without events, under the same lock and the
        same check of what was read as a save with events."""
        try:
            with self.datastore.get_connection() as conn, conn.transaction(), \
                    conn.cursor() as curs:
                self._lock_and_check(curs, reads)
                for statement, parameters in companion:
                    curs.execute(statement, parameters)
        except psycopg.errors.UniqueViolation as e:
            raise IntegrityError(str(e)) from e

    def _lock_and_check(self, curs: Cursor[DictRow], reads: Mapping[UUID, int]) -> None:
        """As the ledger's role: the events table's lock, then the versions read."""
        curs.execute(self.set_role_statement)
        for statement in self.lock_table_statements:
            curs.execute(statement)
        if reads:
            # A nested loop of primary-key probes, never a scan of the table.
            curs.execute("SET LOCAL enable_seqscan = off")
            curs.execute("SET LOCAL enable_hashjoin = off")
            curs.execute(self.check_reads_statement, (list(reads), list(reads.values())))
            if curs.fetchone() is not None:
                msg = f"{STALE_READ}: an aggregate read changed meanwhile"
                raise IntegrityError(msg)

    def _pipelined_insert(self, stored_events: Sequence[StoredEvent],
                          reads: Mapping[UUID, int],
                          requests: Sequence[RequestRow]) -> list[int]:
        """One statement, one round trip: the append function locks, checks what was read,
        inserts the events and the request records."""
        columns = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
            list(reads),
            list(reads.values()),
            [r.actor_id for r in requests],
            [r.request_id for r in requests],
            [r.command for r in requests],
            [r.fingerprint for r in requests],
            [_outcome_json(r) for r in requests],
            [r.complex_id for r in requests],
            [r.last_event for r in requests],
        )
        try:
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(self.append_statement, columns, prepare=True)
                notification_ids = [row["notification_id"] for row in curs.fetchall()]
        except (psycopg.errors.UniqueViolation, psycopg.errors.SerializationFailure) as e:
            raise IntegrityError(str(e)) from e
        except PersistenceError as e:
            if isinstance(e.__cause__, psycopg.errors.SerializationFailure):
                raise IntegrityError(str(e)) from e
            raise
        assert len(notification_ids) == len(stored_events)
        return notification_ids

    def _copy_events(self, stored_events: Sequence[StoredEvent],
                     reads: Mapping[UUID, int], requests: Sequence[RequestRow],
                     companion: Sequence[Statement] = ()) -> list[int]:
        count = len(stored_events)
        try:
            with self.datastore.get_connection() as conn, conn.transaction(), \
                    conn.cursor() as curs:
                self._lock_and_check(curs, reads)
                curs.execute(self.reserve_positions_statement, (count,))
                row = curs.fetchone()
                assert row is not None
                first = int(row["last"]) - count + 1
                with curs.copy(self.copy_statement) as copy:
                    copy.set_types(["uuid", "int8", "text", "bytea", "int8"])
                    for offset, event in enumerate(stored_events):
                        copy.write_row((event.originator_id, event.originator_version,
                                        event.topic, event.state, first + offset))
                if requests:
                    curs.execute(self.insert_requests_statement, (
                        [r.actor_id for r in requests], [r.request_id for r in requests],
                        [r.command for r in requests], [r.fingerprint for r in requests],
                        [_outcome_json(r) for r in requests],
                        [first + r.last_event for r in requests],
                        [r.complex_id for r in requests]))
                for statement, parameters in companion:
                    curs.execute(statement, parameters)
        except psycopg.errors.UniqueViolation as e:
            raise IntegrityError(str(e)) from e
        return list(range(first, first + count))


Statement = tuple[Composed | SQL | str, Sequence[Any]]
"""A statement and its parameters, run in a save's transaction (`companion`)."""


def requests_table_name(events_table_name: str) -> str:
    """The request records' table beside an events table (`ledger_requests`)."""
    return f"{events_table_name.removesuffix('_events')}_requests"


def _outcome_json(request: RequestRow) -> str:
    return json.dumps(request.outcome, separators=(",", ":"), ensure_ascii=False)


class LedgerFactory(PostgresFactory):
    """The library's PostgreSQL factory, building the recorders above
    (`PERSISTENCE_MODULE=ledger.persistence:LedgerFactory`)."""

    aggregate_recorder_class = LedgerSnapshotRecorder
    application_recorder_class = LedgerRecorder
