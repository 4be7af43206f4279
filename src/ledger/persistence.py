"""The event store's write path and its guards, on top of the library's recorder.

What this adds to `eventsourcing.postgres.PostgresApplicationRecorder`:

* One network round trip per save: a single call of the `<table>_append` function,
  which takes the table lock, notifies listeners and inserts, committed as one
  statement. The EXCLUSIVE table lock is kept, so positions commit in order and a reader that
  tails by position never skips a late commit.
* COPY for large saves (bulk seeding): positions are reserved from the sequence
  under the same table lock and written explicitly, so they stay ordered.
* Immutability enforced by the database: a trigger rejects UPDATE, DELETE and
  TRUNCATE on the events table, and every write runs as the `ledger_app` role,
  which has no UPDATE or DELETE privilege there (SELECT, INSERT, and TRUNCATE,
  which PostgreSQL requires for the EXCLUSIVE lock and the trigger refuses).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier, Literal

APP_ROLE = "ledger_app"
"""The role writes run as: SELECT and INSERT on the events table, nothing else."""

COPY_THRESHOLD_EVENTS = 2_000
"""Saves at least this large go through COPY instead of INSERT."""


class LedgerRecorder(PostgresApplicationRecorder):
    """The library's recorder, with a one-round-trip save, COPY for bulk, and guards."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.append_function_name = f"{self.events_table_name}_append"
        schema = Identifier(self.datastore.schema)
        table = Identifier(self.events_table_name)
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
            SQL("GRANT USAGE, SELECT, UPDATE ON SEQUENCE {sequence} TO {role}").format(
                sequence=Identifier(self.datastore.schema,
                                    f"{self.events_table_name}_notification_id_seq"),
                role=Identifier(APP_ROLE)),
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{append}(ids uuid[], versions bigint[], "
                "topics text[], states bytea[]) "
                "RETURNS SETOF bigint LANGUAGE plpgsql SECURITY DEFINER "
                "SET search_path = pg_catalog, pg_temp AS $$ BEGIN "
                "PERFORM set_config('lock_timeout', {lock_timeout}, true); "
                "LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
                "PERFORM pg_notify({channel}, ''); "
                "RETURN QUERY INSERT INTO {schema}.{table} "
                "(originator_id, originator_version, topic, state) "
                "SELECT * FROM unnest(ids, versions, topics, states) "
                "RETURNING notification_id; "
                "END $$"
            ).format(schema=schema, append=Identifier(self.append_function_name), table=table,
                     lock_timeout=Literal(f"{self.datastore.lock_timeout}s"),
                     channel=Literal(self.channel_name)),
            # The function runs with its owner's rights: the write path is `ledger_app`.
            SQL("ALTER FUNCTION {schema}.{append}(uuid[], bigint[], text[], bytea[]) "
                "OWNER TO {role}").format(
                schema=schema, append=Identifier(self.append_function_name),
                role=Identifier(APP_ROLE)),
        ])
        self.append_statement = SQL(
            "SELECT {schema}.{append}(%b, %b, %b, %b) AS notification_id").format(
            schema=schema, append=Identifier(self.append_function_name))
        self.set_role_statement = SQL("SET LOCAL ROLE {0}").format(Identifier(APP_ROLE))
        self.sequence_name = f"{qualified}_notification_id_seq"
        self.reserve_positions_statement = SQL(
            "SELECT setval({sequence}, nextval({sequence}) + %s - 1) AS last"
        ).format(sequence=Literal(self.sequence_name))
        self.copy_statement = SQL(
            "COPY {schema}.{table} (originator_id, originator_version, topic, state, "
            "notification_id) FROM STDIN (FORMAT BINARY)"
        ).format(schema=schema, table=table)
        self.notify_statement = SQL("NOTIFY {0}").format(Identifier(self.channel_name))

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **_: Any
    ) -> Sequence[int] | None:
        if not stored_events:
            return []
        if len(stored_events) >= COPY_THRESHOLD_EVENTS:
            return self._copy_events(stored_events)
        return self._pipelined_insert(stored_events)

    def _pipelined_insert(self, stored_events: Sequence[StoredEvent]) -> list[int]:
        """One statement, one round trip: the append function locks, notifies, inserts."""
        columns = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
        )
        try:
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(self.append_statement, columns, prepare=True)
                notification_ids = [row["notification_id"] for row in curs.fetchall()]
        except psycopg.errors.UniqueViolation as e:
            raise IntegrityError(str(e)) from e
        assert len(notification_ids) == len(stored_events)
        return notification_ids

    def _copy_events(self, stored_events: Sequence[StoredEvent]) -> list[int]:
        count = len(stored_events)
        try:
            with self.datastore.get_connection() as conn, conn.transaction(), \
                    conn.cursor() as curs:
                curs.execute(self.set_role_statement)
                for statement in self.lock_table_statements:
                    curs.execute(statement)
                curs.execute(self.notify_statement)
                curs.execute(self.reserve_positions_statement, (count,))
                row = curs.fetchone()
                assert row is not None
                first = int(row["last"]) - count + 1
                with curs.copy(self.copy_statement) as copy:
                    copy.set_types(["uuid", "int8", "text", "bytea", "int8"])
                    for offset, event in enumerate(stored_events):
                        copy.write_row((event.originator_id, event.originator_version,
                                        event.topic, event.state, first + offset))
        except psycopg.errors.UniqueViolation as e:
            raise IntegrityError(str(e)) from e
        return list(range(first, first + count))
