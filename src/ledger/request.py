"""Request records: what makes every mutating command idempotent, forever.

Each accepted command saves, in the same transaction as its effects, a record
keyed by (actor, request id) holding a fingerprint of the command's content and
its outcome. A retry with the same content gets the recorded outcome back and
changes nothing; the same request id with different content is rejected with
`request_id_reused`. The primary key of the events table makes concurrent
duplicates safe: only one of them can save its record.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger.events import Cause, LedgerAggregate


def request_record_id(actor_id: UUID, request_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"ledger:request:{actor_id}:{request_id}")


def fingerprint(command_name: str, content: dict[str, Any]) -> str:
    """SHA-256 of the command's name and content, in canonical JSON."""
    canonical = json.dumps([command_name, content], sort_keys=True, separators=(",", ":"),
                           default=str, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class RequestRecord(LedgerAggregate):
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

    @classmethod
    def accept(cls, command: str, content_fingerprint: str, outcome: dict[str, Any],
               complex_id: UUID | None, cause: Cause) -> RequestRecord:
        return cls._create(cls.Accepted, id=request_record_id(cause.actor_id, cause.request_id),
                           command=command, fingerprint=content_fingerprint, outcome=outcome,
                           **cause.fields(complex_id))
