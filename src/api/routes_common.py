"""What every route shares: the services built at start-up, who is calling, the gates
a request passes (role, rate limit, idempotency key, read consistency) and the
object-level checks that make a forbidden object look exactly like a missing one.
"""


import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final
from uuid import UUID

import psycopg
from fastapi import Depends, Header, Query, Request, Response, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import pq
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, Role, get_principal_async
from api.models import IDENTIFIER_PATTERN
from api.problems import ApiProblemError
from api.ratelimit import WriteRateLimiter
from api.settings import ApiSettings
from ledger import commands as c
from ledger import errors, limits
from ledger.application import Ledger, Outcome, now
from ledger.errors import DomainError
from ledger.events import Cause
from ledger.household import Household
from ledger.resident import Resident
from projections.runner import ProjectionRunner

bearer = HTTPBearer(
    auto_error=False, bearerFormat="JWT",
    description="An access token from the platform's identity provider (EdDSA or RS256). "
                "For development: `ledger token --role ROLE --subject ID [--complex ID]`.")


@dataclass
class Services:
    """What the API is built on, created once at start-up and closed at shutdown."""

    settings: ApiSettings
    ledger: Ledger
    pool: ConnectionPool[psycopg.Connection[Any]]
    async_pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]
    """The read connections of the routes that read on the event loop (autocommit)."""
    runner: ProjectionRunner | None
    limiter: WriteRateLimiter
    service_limiter: WriteRateLimiter
    """The write limit of service principals (platform, billing), set apart from people's."""

    def wait_until_visible(self, position: int) -> None:
        """Return once every projection has committed `position`, or raise a problem."""
        if position <= 0:
            return
        timeout = self.settings.read_wait_seconds_max
        if self.runner is not None and self.runner.wait_for(position, timeout=0):
            return
        head = self.ledger.position()
        if position > head:
            # No write ever answered with this position (it may come from another ledger,
            # or from before a restore): waiting would not help. The request is well
            # formed; it conflicts with the log as it stands, hence 409, not 422.
            raise ApiProblemError("position_beyond_log",
                                  f"consistent_with {position}, the log's head is {head}")
        if self.runner is not None:
            if self.runner.wait_for(position, timeout=timeout):
                return
        else:
            deadline = time.monotonic() + timeout
            while True:
                with self.pool.connection() as conn:
                    row = conn.execute("SELECT min(position) FROM p_tracking").fetchone()
                if row is not None and row[0] is not None and row[0] >= position:
                    return
                if time.monotonic() >= deadline:
                    break
                time.sleep(limits.consistency_poll_seconds)
        raise ApiProblemError("not_yet_consistent", f"position {position}",
                         retry_after_seconds=limits.retry_after_not_consistent_seconds)


def services(request: Request) -> Services:
    found = getattr(request.app.state, "services", None)
    assert isinstance(found, Services), "the API's lifespan did not run"
    return found


def forbid_unless(principal: Principal, roles: tuple[Role, ...]) -> None:
    if principal.role not in roles:
        raise DomainError(errors.forbidden, principal.role.value)


ROLES_OF: dict[Callable[..., Any], tuple[Role, ...]] = {}
"""The roles each `writer` and `reader` dependency lets through, for the OpenAPI document."""


# Writes ----------------------------------------------------------------------------------

IDEMPOTENCY_KEY_PATTERN: Final = IDENTIFIER_PATTERN
SERVICE_ROLES: Final = frozenset({Role.PLATFORM, Role.BILLING})
"""Service principals: one caller writes for every complex, so it has a limit of its own."""


@dataclass
class Write:
    """One write request: who, with which idempotency key, on which services."""

    principal: Principal
    request_id: str
    services: Services
    response: Response

    def execute(self, command: c.Command, *, occurred_at: datetime | None = None,
                on_behalf_of: UUID | None = None) -> Outcome:
        cause = Cause(actor_id=self.principal.subject, actor_role=self.principal.role.value,
                      request_id=self.request_id, occurred_at=occurred_at or now(),
                      on_behalf_of=on_behalf_of)
        outcome = self.services.ledger.execute(command, cause)
        if outcome.replayed:
            self.response.headers["Idempotent-Replayed"] = "true"
        return outcome

    async def execute_async(self, command: c.Command, *, occurred_at: datetime | None = None,
                            on_behalf_of: UUID | None = None) -> Outcome:
        """`execute` from an async route: the wait for the commit engine on the thread
        pool, the rest of the request on the event loop. A sync route pays two trips to
        the thread pool, since FastAPI validates a sync route's return value there too;
        an async route whose only blocking call is this one pays one."""
        return await run_in_threadpool(self.execute, command, occurred_at=occurred_at,
                                       on_behalf_of=on_behalf_of)


# The `writer` and `reader` dependencies are async and never block: FastAPI runs a sync
# dependency on its thread pool, and each hop there and back costs more than what they
# do; each level of dependencies costs FastAPI's resolving too, so there are two: the
# gate (who is calling: 401; may they: 403; the rate limit: 429), then the request's
# headers and parameters (422). What may block (verifying a token seen for the first
# time, waiting for read consistency) goes to the thread pool explicitly; the routes
# themselves stay sync. The Security(bearer) parameter declares the scheme in OpenAPI.

def writer(*roles: Role) -> Callable[..., Awaitable[Write]]:
    """Dependency for a write the given roles may make.

    The role is checked (403) and the caller's write budget taken (429) before the
    request's fields are validated, so a caller learns nothing from a write it may
    not make.
    """

    async def gate(request: Request,
                   _credentials: Annotated[HTTPAuthorizationCredentials | None,
                                           Security(bearer)] = None) -> Principal:
        principal = await get_principal_async(request)
        forbid_unless(principal, roles)
        found = services(request)
        # The limiter's lock is held for a few arithmetic operations, never across a wait.
        limiter = found.service_limiter if principal.role in SERVICE_ROLES else found.limiter
        wait_seconds = limiter.take((principal.role, principal.subject))
        if wait_seconds > 0:
            raise ApiProblemError("rate_limited", retry_after_seconds=wait_seconds)
        return principal

    async def dependency(
        request: Request,
        response: Response,
        principal: Annotated[Principal, Depends(gate)],
        idempotency_key: Annotated[str, Header(
            alias="Idempotency-Key", min_length=1, max_length=limits.identifier_length_max,
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description=f"Client-chosen id of this request: 1–{limits.identifier_length_max} "
                        "printable ASCII characters, no spaces. A retry with the same key "
                        "and body returns the first response (with `Idempotent-Replayed: "
                        "true`); the same key with another body is refused with 409 "
                        "`request_id_reused`.")],
    ) -> Write:
        return Write(principal, idempotency_key, services(request), response)

    ROLES_OF[dependency] = roles
    return dependency


# Reads -----------------------------------------------------------------------------------

@dataclass
class Read:
    """One read request: who, on which services, after waiting for consistency."""

    principal: Principal
    services: Services

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A read connection whose statements share one read-only transaction."""
        with self.services.pool.connection() as conn:
            yield conn

    @contextmanager
    def statement_connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A read connection for a read of one statement, which needs no transaction
        around it: one round trip instead of three (BEGIN, the statement, and the pool's
        ROLLBACK when the connection comes back). Still read-only: the pool's sessions
        default to read-only transactions."""
        with self.services.pool.connection() as conn:
            conn.autocommit = True
            try:
                yield conn
            finally:
                # A broken connection is not idle; the pool discards it on its return.
                if conn.pgconn.transaction_status == pq.TransactionStatus.IDLE:
                    conn.autocommit = False

    @asynccontextmanager
    async def statement_connection_async(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """`statement_connection` awaited on the event loop: a read-only connection in
        autocommit, for a read of one statement."""
        async with self.services.async_pool.connection() as conn:
            yield conn

    def resident_home(self, resident_id: UUID) -> Resident | None:
        """A resident's aggregate (its household and complex never change)."""
        return self.services.ledger.snapshot(Resident, resident_id)

    def household_complex(self, household_id: UUID) -> UUID | None:
        household = self.services.ledger.snapshot(Household, household_id)
        return None if household is None else household.home_complex_id


def reader(*roles: Role) -> Callable[..., Awaitable[Read]]:
    """Dependency for a read the given roles may make, after read-your-writes waiting."""

    async def gate(request: Request,
                   _credentials: Annotated[HTTPAuthorizationCredentials | None,
                                           Security(bearer)] = None) -> Principal:
        principal = await get_principal_async(request)
        forbid_unless(principal, roles)
        return principal

    async def dependency(
        request: Request,
        principal: Annotated[Principal, Depends(gate)],
        consistent_with: Annotated[int | None, Query(
            ge=0, le=limits.position_max,
            description="A `position` from a write's response: answer only once the read "
                        "side reflects it (waits a few seconds at most, else 503 "
                        "`not_yet_consistent`). A position beyond the log's head, which no "
                        "write has reached, is refused at once with 409 "
                        "`position_beyond_log`.")] = None,
        x_consistent_with: Annotated[int | None, Header(
            alias="X-Consistent-With", ge=0, le=limits.position_max,
            description="Same as the `consistent_with` query parameter.")] = None,
    ) -> Read:
        found = services(request)
        wanted = max(consistent_with or 0, x_consistent_with or 0)
        if wanted > 0:  # may wait (bounded): on the thread pool, never on the event loop
            await run_in_threadpool(found.wait_until_visible, wanted)
        return Read(principal, found)

    ROLES_OF[dependency] = roles
    return dependency


def in_complex(principal: Principal, complex_id: UUID | str | None) -> bool:
    return principal.complex_id is not None and complex_id is not None and (
        str(principal.complex_id) == str(complex_id))


EVERY_ROLE: Final = tuple(Role)
