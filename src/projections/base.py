"""What every projection shares: the events it reads, the rows it changes, how it writes them.

A projection folds a batch of events into in-memory `Changes` (row deltas keyed by
primary key), then writes them in the caller's transaction: multi-row upserts for
small batches, COPY into a staging table and one upsert for large ones. Every
table is described once by a `Table`, which says how a change merges into a row:
`add` columns are summed (balances, totals, counts), the other columns take the
newest non-null value (names, statuses, times). The same merge rule applied in
memory gives `fold_all`, so a projection can be checked against a fold of the events.

Events come decoded by `eventlog.log.decode_rows`: straight from the stored JSON
(`orjson.loads`), not through the library's mapper, UUIDs as 32-digit hex strings and
times as ISO strings until a projection needs them, because decoding dominates the
cost of a rebuild.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any
from uuid import UUID

import psycopg
from psycopg.sql import SQL, Composed, Identifier

from eventlog.log import Event
from ledger import limits
from ledger.events import KST

Row = dict[str, Any]
Key = tuple[Any, ...]


@dataclass(frozen=True)
class Table:
    """One projection table: its columns, primary key, and how changes merge into rows."""

    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    add: tuple[str, ...] = ()
    append_only: bool = False
    indexes: tuple[tuple[str, str], ...] = ()
    """(suffix, column list) pairs; the index is named `<table>_<suffix>`."""

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    def sql_type(self, column: str) -> str:
        return dict(self.columns)[column]


def kst_day(moment: str) -> date:
    """The KST calendar day of an ISO time (any offset).

    The day depends only on the minute and the offset, so those are what is cached:
    times stored to the microsecond would otherwise never hit the cache.
    """
    if len(moment) > 22 and moment[-6] in "+-" and moment[-3] == ":":
        return _kst_day(moment[:16] + moment[-6:])
    return datetime.fromisoformat(moment).astimezone(KST).date()


@lru_cache(maxsize=65_536)
def _kst_day(minute: str) -> date:
    return datetime.fromisoformat(minute).astimezone(KST).date()


def kst_month(moment: str) -> str:
    """'YYYY-MM' in Korea Standard Time: months are reckoned in KST."""
    if len(moment) > 22 and moment[-6] in "+-" and moment[-3] == ":":
        return _kst_month(moment[:16] + moment[-6:])
    return kst_day(moment).strftime("%Y-%m")


@lru_cache(maxsize=65_536)
def _kst_month(minute: str) -> str:
    return _kst_day(minute).strftime("%Y-%m")


def iso_week(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


class Changes:
    """Row changes of one batch, per table, merged in memory by each table's rule."""

    def __init__(self, tables: Iterable[Table]) -> None:
        self.tables = {table.name: table for table in tables}
        self.rows: dict[str, dict[Key, Row]] = {name: {} for name in self.tables}
        self.appended: dict[str, list[Row]] = {name: [] for name in self.tables}

    def add(self, table: str, key: Key, **deltas: int) -> None:
        row = self.rows[table].get(key) or self._row(table, key)
        get = row.get
        for column, delta in deltas.items():
            row[column] = get(column, 0) + delta

    def set(self, table: str, key: Key, **values: Any) -> None:
        row = self.rows[table].get(key) or self._row(table, key)
        for column, value in values.items():
            if value is not None:
                row[column] = value

    def append(self, table: str, row: Row) -> None:
        assert self.tables[table].append_only
        self.appended[table].append(row)

    def row(self, table: str, key: Key) -> Row:
        """The change row of `key`, created holding only its key columns."""
        return self.rows[table].get(key) or self._row(table, key)

    def _row(self, table: str, key: Key) -> Row:
        rows = self.rows[table]
        row = rows.get(key)
        if row is None:
            row = dict(zip(self.tables[table].key, key, strict=True))
            rows[key] = row
        return row

    def count(self) -> int:
        return sum(len(r) for r in self.rows.values()) + sum(
            len(r) for r in self.appended.values())

    def merged_count(self) -> int:
        """Rows held for tables that merge (not append-only)."""
        return sum(len(r) for r in self.rows.values())


@dataclass
class TradeFacts:
    """Trade.Recorded data by trade id: what a refund needs to know about its trade."""

    by_trade_id: dict[str, dict[str, Any]] = field(default_factory=dict)

    def get(self, trade_id: str) -> dict[str, Any] | None:
        return self.by_trade_id.get(trade_id)


class Projection(ABC):
    """Answers one question from the events; subclasses give tables, fold and reads."""

    name: str = ""
    tables: tuple[Table, ...] = ()
    reads: tuple[str, ...] = ()
    """Prefixes of the event names this projection folds (e.g. "Resident.")."""
    rebuild_cost: float = 1.0
    """Expected share of a rebuild's work (measured: see docs/projections.md), used to
    share projections out among the rebuild's processes."""

    def topic_patterns(self) -> list[str]:
        """LIKE patterns matching the stored topics of the events this projection reads."""
        return [f"%:{prefix}%" for prefix in self.reads]

    def fold(self, events: Sequence[Event], trades: TradeFacts) -> Changes:
        """One batch's changes."""
        return self.fold_into(self.changes(), events, trades)

    @abstractmethod
    def fold_into(self, changes: Changes, events: Sequence[Event],
                  trades: TradeFacts) -> Changes:
        """Fold events into `changes` (a rebuild keeps one across batches) and return it."""

    def changes(self) -> Changes:
        return Changes(self.tables)

    # Schema ------------------------------------------------------------------------------

    def create_tables(self, conn: psycopg.Connection[Any], suffix: str = "", *,
                      deferred: bool = False) -> None:
        """Create the tables; `deferred` leaves out what a bulk load is faster without
        (the primary key of append-only tables, secondary indexes) for `create_deferred`."""
        for table in self.tables:
            create_table(conn, table, suffix, deferred=deferred)

    def create_deferred(self, conn: psycopg.Connection[Any], suffix: str = "") -> None:
        for table in self.tables:
            if table.append_only:
                conn.execute(SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                    Identifier(table.name + suffix), SQL(", ").join(map(Identifier, table.key))))
            create_indexes(conn, table, suffix)

    def drop_tables(self, conn: psycopg.Connection[Any], suffix: str = "") -> None:
        for table in self.tables:
            conn.execute(SQL("DROP TABLE IF EXISTS {}").format(Identifier(table.name + suffix)))

    # Writing -----------------------------------------------------------------------------

    def write(self, conn: psycopg.Connection[Any], changes: Changes, suffix: str = "") -> None:
        """Write one batch's changes in the caller's transaction."""
        for table in self.tables:
            if table.append_only:
                copy_rows(conn, table.name + suffix, table.column_names,
                          changes.appended[table.name])
            else:
                upsert_rows(conn, table, list(changes.rows[table.name].values()), suffix)

    def write_appended(self, conn: psycopg.Connection[Any], changes: Changes,
                       suffix: str = "") -> None:
        """Write the append-only rows held in `changes` and forget them."""
        for table in self.tables:
            if table.append_only and changes.appended[table.name]:
                copy_rows(conn, table.name + suffix, table.column_names,
                          changes.appended[table.name])
                changes.appended[table.name] = []

    def write_merged(self, conn: psycopg.Connection[Any], changes: Changes, suffix: str,
                     written: set[str]) -> None:
        """Write the merged rows held in `changes` and forget them. A table not in
        `written` is still empty, so its rows go in by plain COPY; it is then added."""
        for table in self.tables:
            rows = changes.rows[table.name]
            if table.append_only or not rows:
                continue
            if table.name in written:
                upsert_rows(conn, table, list(rows.values()), suffix)
            else:
                copy_tuples(conn, table.name + suffix, table.column_names,
                            _full_rows(table, list(rows.values())))
                written.add(table.name)
            changes.rows[table.name] = {}


def create_table(conn: psycopg.Connection[Any], table: Table, suffix: str = "", *,
                 deferred: bool = False) -> None:
    name = table.name + suffix
    columns = SQL(", ").join(
        SQL("{} {}").format(Identifier(column), SQL(sql_type))
        for column, sql_type in table.columns)
    if deferred and table.append_only:
        conn.execute(SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(Identifier(name), columns))
    else:
        conn.execute(SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))").format(
            Identifier(name), columns, SQL(", ").join(map(Identifier, table.key))))
    if not deferred:
        create_indexes(conn, table, suffix)


def create_indexes(conn: psycopg.Connection[Any], table: Table, suffix: str = "") -> None:
    name = table.name + suffix
    for index_suffix, index_columns in table.indexes:
        conn.execute(SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
            Identifier(f"{name}_{index_suffix}"), Identifier(name),
            SQL(index_columns)))


def _conflict_clause(table: Table, columns: Sequence[str]) -> Composed:
    updates = []
    for column in columns:
        if column in table.key:
            continue
        if column in table.add:
            updates.append(SQL("{c} = {t}.{c} + EXCLUDED.{c}").format(
                c=Identifier(column), t=Identifier("t")))
        else:
            updates.append(SQL("{c} = COALESCE(EXCLUDED.{c}, {t}.{c})").format(
                c=Identifier(column), t=Identifier("t")))
    keys = SQL(", ").join(map(Identifier, table.key))
    if not updates:
        return SQL(" ON CONFLICT ({}) DO NOTHING").format(keys)
    return SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(keys, SQL(", ").join(updates))


def _full_rows(table: Table, rows: list[Row]) -> list[tuple[Any, ...]]:
    """Rows as tuples over every column: missing add columns are 0, missing others NULL."""
    names = table.column_names
    adds = set(table.add)
    return [tuple(row.get(c, 0 if c in adds else None) for c in names) for row in rows]


_UPSERT_STATEMENTS: dict[tuple[Table, str, int, str], bytes] = {}
_UPSERT_STATEMENTS_MAX = 256


def _upsert_statement(conn: psycopg.Connection[Any], table: Table, suffix: str,
                      count: int) -> bytes:
    """The multi-row upsert of `count` rows into `table`, as the bytes psycopg sends.

    Composing it cost more than a small batch's database work (profiled under a stream of
    single trades); it depends only on the table, the row count and the connection's
    encoding, so it is composed once per such key (at most `_UPSERT_STATEMENTS_MAX` kept;
    when full, the cache starts again)."""
    key = (table, suffix, count, conn.info.encoding)
    statement = _UPSERT_STATEMENTS.get(key)
    if statement is None:
        names = table.column_names
        placeholders = SQL("({})").format(SQL(", ").join(
            SQL("%s::{}").format(SQL(table.sql_type(c).split(maxsplit=1)[0]))
            for c in names))
        statement = (SQL("INSERT INTO {} AS t ({}) VALUES {}").format(
            Identifier(table.name + suffix), SQL(", ").join(map(Identifier, names)),
            SQL(", ").join([placeholders] * count)) + _conflict_clause(table, names)
                     ).as_bytes(conn)
        if len(_UPSERT_STATEMENTS) >= _UPSERT_STATEMENTS_MAX:
            _UPSERT_STATEMENTS.clear()
        _UPSERT_STATEMENTS[key] = statement
    return statement


def upsert_rows(conn: psycopg.Connection[Any], table: Table, rows: list[Row],
                suffix: str = "") -> None:
    if not rows:
        return
    values = _full_rows(table, rows)
    if len(values) < limits.projection_stage_rows_min:
        statement = _upsert_statement(conn, table, suffix, len(values))
        conn.execute(statement, [v for row in values for v in row])
        return
    target = Identifier(table.name + suffix)
    names = table.column_names
    column_list = SQL(", ").join(map(Identifier, names))
    conflict = _conflict_clause(table, names)
    stage = Identifier(f"_stage_{table.name}")
    conn.execute(SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS")
                 .format(stage, target))
    copy_tuples(conn, f"_stage_{table.name}", names, values)
    conn.execute(SQL("INSERT INTO {} AS t ({}) SELECT {} FROM {}").format(
        target, column_list, column_list, stage) + conflict)
    conn.execute(SQL("TRUNCATE {}").format(stage))


def copy_rows(conn: psycopg.Connection[Any], table_name: str, names: Sequence[str],
              rows: list[Row]) -> None:
    if not rows:
        return
    try:  # rows holding every column
        values = list(map(itemgetter(*names), rows)) if len(names) > 1 else [
            (row[names[0]],) for row in rows]
    except KeyError:
        values = [tuple(row.get(c) for c in names) for row in rows]
    copy_tuples(conn, table_name, names, values)


def copy_tuples(conn: psycopg.Connection[Any], table_name: str, names: Sequence[str],
                rows: list[tuple[Any, ...]]) -> None:
    statement = SQL("COPY {} ({}) FROM STDIN").format(
        Identifier(table_name), SQL(", ").join(map(Identifier, names)))
    with conn.cursor().copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


# Reading back, typed the way psycopg returns rows, for fold_all and its comparisons. -----

def typed(sql_type: str, value: Any) -> Any:
    """A value as psycopg would return it from a column of `sql_type`."""
    if value is None:
        return None
    base = sql_type.split(maxsplit=1)[0].lower()
    if base == "uuid":
        return value if isinstance(value, UUID) else UUID(str(value))
    if base == "timestamptz":
        return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if base == "date":
        return value if isinstance(value, date) else date.fromisoformat(str(value))
    return value


def merge_into(state: dict[str, dict[Key, Row]], changes: Changes) -> None:
    """Apply a batch's changes to in-memory tables by the same rule the upsert uses."""
    for name, table in changes.tables.items():
        rows = state.setdefault(name, {})
        if table.append_only:
            for row in changes.appended[name]:
                full = {c: typed(t, row.get(c)) for c, t in table.columns}
                rows[tuple(full[c] for c in table.key)] = full
            continue
        adds = set(table.add)
        for row in changes.rows[name].values():
            full = {c: typed(t, row.get(c, 0 if c in adds else None)) for c, t in table.columns}
            key = tuple(full[c] for c in table.key)
            old = rows.get(key)
            if old is None:
                rows[key] = full
                continue
            for column in table.column_names:
                if column in table.key:
                    continue
                if column in adds:
                    old[column] += full[column]
                elif full[column] is not None:
                    old[column] = full[column]


def read_table(conn: psycopg.Connection[Any], table: Table,
               suffix: str = "") -> dict[Key, Row]:
    """Every row of a projection table, keyed by primary key (for tests and audits)."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        cursor.execute(SQL("SELECT {} FROM {}").format(
            SQL(", ").join(map(Identifier, table.column_names)),
            Identifier(table.name + suffix)))
        return {tuple(row[c] for c in table.key): row for row in cursor}


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def as_mapping(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(value)
