"""The auditor's API: the event log, signed checkpoints, the last verification, statements.

The event log, checkpoints and verification are for auditors only (403 for every
other role). Statements: auditors may read anyone's; a resident only their own;
a manager only their own complex's common fund. A statement the caller may not
see answers with exactly the 404 a missing one gets.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query
from psycopg.sql import SQL, Identifier
from pydantic import BaseModel, Field

from api.auth import Role
from api.models import CALENDAR_YEARS, MONTH_PATTERN
from api.problems import ApiProblemError, problem_responses
from api.routes_common import Read, in_complex, reader
from audit.chain import CHECKPOINTS_TABLE, read_checkpoints
from audit.history import statement_from
from audit.verification import last_verification
from eventlog.log import EVENTS_TABLE
from feed.public_events import to_public
from ledger import errors, limits
from ledger.errors import DomainError

router = APIRouter(prefix="/v1", tags=["audit"])

AUDIT_ERRORS = problem_responses(401, 403, 404, 409, 413, 422, 503)

Month = Annotated[str, Query(pattern=MONTH_PATTERN, description="Calendar month in KST "
                             f"(by when things happened), YYYY-MM in {CALENDAR_YEARS}.")]


class AuditEventsPage(BaseModel):
    """A page of the event log in log order, as public events (see the JSON Schemas)."""

    events: list[dict[str, Any]] = Field(description="Public event payloads, in log order.")
    next_after: int | None = Field(description="Pass as `after` for the next page; null at "
                                               "the end of the log.")


class CheckpointView(BaseModel):
    """A signed statement: the chain hash after `position` is `hash`, signed at `created_at`."""

    position: int
    hash: str
    created_at: datetime
    key_id: str
    signature: str


class CheckpointsPage(BaseModel):
    checkpoints: list[CheckpointView]
    next_after: int | None


class VerificationView(BaseModel):
    """The last stored result of `ledger audit verify`."""

    verified_at: datetime
    ok: bool
    first_bad_position: int | None
    problem: str | None
    detail: str
    counts: dict[str, int]
    findings: list[dict[str, Any]]
    notes: list[str]


class StatementLine(BaseModel):
    position: int
    occurred_at: datetime
    recorded_at: datetime
    kind: str
    amount_won: int
    held_delta_won: int
    owed_delta_won: int
    balance_won: int
    trade_id: str | None = None
    market: str | None = None
    policy_version: int | None = None
    rate_bps: int | None = None
    accrual_base_won: int | None = None
    payment_id: str | None = None
    invoice_id: str | None = None
    purpose: str | None = None
    decision_ref: str | None = None
    actor_id: UUID
    actor_role: str
    on_behalf_of: UUID | None
    request_id: str
    recorded_after_month: bool
    explanation: str


class StatementView(BaseModel):
    """A month of a wallet or common fund: opening + lines = closing, by occurred time."""

    kind: str
    month: str
    time_zone: str
    basis: str
    period: dict[str, datetime]
    opening: dict[str, int]
    lines: list[StatementLine]
    closing: dict[str, int]
    totals: dict[str, int]


Limit = Annotated[int, Query(ge=1, le=limits.audit_events_page_size_max,
                             description=f"Page size, 1–{limits.audit_events_page_size_max} "
                                         f"(default {limits.audit_events_page_size_default}).")]
After = Annotated[int, Query(ge=0, le=limits.position_max,
                             description="Log position to start after.")]


@router.get("/audit/events", response_model=AuditEventsPage, responses=AUDIT_ERRORS,
            summary="The event log, paged by position (auditors)")
def audit_events(read: Annotated[Read, Depends(reader(Role.AUDITOR))], after: After = 0,
                 limit: Limit = limits.audit_events_page_size_default) -> AuditEventsPage:
    with read.connection() as conn:
        rows = conn.execute(SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {}"
            " WHERE notification_id > %s ORDER BY notification_id LIMIT %s")
            .format(Identifier(EVENTS_TABLE)), (after, limit)).fetchall()
    events = []
    for position, originator_id, version, topic, state in rows:
        message = to_public(position, originator_id, version, topic, bytes(state))
        if message is not None:  # internal records (request idempotency) are not published
            events.append(message.payload)
    return AuditEventsPage(events=events,
                           next_after=rows[-1][0] if len(rows) == limit else None)


@router.get("/audit/checkpoints", response_model=CheckpointsPage, responses=AUDIT_ERRORS,
            summary="Signed checkpoints of the hash chain (auditors)")
def audit_checkpoints(read: Annotated[Read, Depends(reader(Role.AUDITOR))], after: After = 0,
                      limit: Limit = limits.audit_events_page_size_default) -> CheckpointsPage:
    with read.connection() as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                              (CHECKPOINTS_TABLE,)).fetchone()
        schema = conn.execute("SELECT current_schema()").fetchone()
        found = (read_checkpoints(conn, str(schema[0])) if exists and exists[0] and schema
                 else [])
    page = [item for item in found if item.position > after][:limit]
    return CheckpointsPage(
        checkpoints=[CheckpointView(**item.to_document()) for item in page],
        next_after=page[-1].position if len(page) == limit else None)


@router.get("/audit/verification", response_model=VerificationView, responses=AUDIT_ERRORS,
            summary="The last result of `ledger audit verify` (auditors)")
def audit_verification(read: Annotated[Read, Depends(reader(Role.AUDITOR))]
                       ) -> VerificationView:
    with read.connection() as conn:
        row = last_verification(conn)
    if row is None:
        raise ApiProblemError("not_found", "no verification has been run yet")
    report = row["report"]
    return VerificationView(
        verified_at=row["verified_at"], ok=row["ok"], first_bad_position=row["first_bad_position"],
        problem=row["problem"], detail=row["detail"], counts=row["counts"],
        findings=report.get("findings", []), notes=report.get("notes", []))


def _statement(read: Read, month: str, missing: DomainError, **owner: UUID) -> StatementView:
    with read.connection() as conn:
        try:
            document = statement_from(conn, month, **owner)
        except ValueError as error:
            raise DomainError(errors.invalid_field, str(error)) from error
    if document is None:
        raise missing
    return StatementView(**document)


@router.get("/statements/residents/{resident_id}", response_model=StatementView,
            responses=AUDIT_ERRORS,
            summary="A resident's monthly statement (auditors; a resident for themself)")
def resident_statement(read: Annotated[Read, Depends(reader(Role.AUDITOR, Role.RESIDENT))],
                       resident_id: Annotated[UUID, Path()], month: Month) -> StatementView:
    missing = DomainError(errors.unknown_resident, str(resident_id))
    if read.principal.role == Role.RESIDENT and read.principal.subject != resident_id:
        raise missing
    return _statement(read, month, missing, resident=resident_id)


@router.get("/statements/complexes/{complex_id}", response_model=StatementView,
            responses=AUDIT_ERRORS,
            summary="A complex's common-fund monthly statement (auditors; its managers)")
def complex_statement(read: Annotated[Read, Depends(reader(Role.AUDITOR, Role.MANAGER))],
                      complex_id: Annotated[UUID, Path()], month: Month) -> StatementView:
    missing = DomainError(errors.unknown_complex, str(complex_id))
    if read.principal.role == Role.MANAGER and not in_complex(read.principal, complex_id):
        raise missing
    return _statement(read, month, missing, complex_id=complex_id)
