"""Request records: what makes every mutating command idempotent, forever.

Each accepted command saves, in the same transaction as its effects, a record
keyed by (actor, request id) holding a fingerprint of the command's content, its
outcome and the log position its events reached. A retry with the same content
gets the recorded outcome back and changes nothing; the same request id with
different content is rejected with `request_id_reused`. The records live in a
table of their own (`ledger_requests`), so the event log holds domain facts
only; its primary key makes concurrent duplicates safe: only one of them can save
its record.

Logs written before that hold the records as `RequestRecord.Accepted` events;
they are still looked up (a retry of an old request id replays its outcome), and
every reader of the log skips them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger.events import LedgerAggregate


def request_record_id(actor_id: UUID, request_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"ledger:request:{actor_id}:{request_id}")


def fingerprint(command_name: str, content: dict[str, Any]) -> str:
    """SHA-256 of the command's name and content, in canonical JSON."""
    canonical = json.dumps([command_name, content], sort_keys=True, separators=(",", ":"),
                           default=str, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class RequestRow:
    """One accepted command's request record, saved with its events."""

    actor_id: UUID
    request_id: str
    command: str
    fingerprint: str
    outcome: dict[str, Any]
    complex_id: UUID | None
    last_event: int
    """The index, among the events saved together, of the command's last event: the
    record's position is where that event lands in the log."""


class RequestRecord(LedgerAggregate):
    """Request records of logs written before they had a table of their own: decoded,
    looked up and skipped, never written any more."""

    if TYPE_CHECKING:  # state, declared for type checkers only: the library
        # would otherwise take annotations as constructor arguments.
        command: str
        fingerprint: str
        outcome: dict[str, Any]

    class Accepted(LedgerAggregate.Created):
        command: str
        fingerprint: str
        outcome: dict[str, Any]

        def apply(self, record: RequestRecord) -> None:
            record.command = self.command
            record.fingerprint = self.fingerprint
            record.outcome = dict(self.outcome)
