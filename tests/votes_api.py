"""Helpers for the HTTP tests of resident votes (no tests in this module)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from uuid import UUID

from ledger import commands as c
from ledger.application import now
from ledger.events import Cause
from test_api_fixtures import ApiWorld

HOUR = timedelta(hours=1)


def open_proposal(api: ApiWorld, complex_id: UUID, manager: str = "manager",
                  amount_won: int = 500, purpose: str = "event") -> str:
    """A proposal opened over HTTP by the complex's manager, voting for two hours."""
    proposal_id = f"V-{uuid.uuid4().hex[:10]}"
    api.ok("POST", f"/v1/complexes/{complex_id}/proposals", api.callers[manager], {
        "proposal_id": proposal_id, "purpose": purpose, "title": "Playground benches",
        "amount_won": amount_won, "voting_closes_at": (now() + 2 * HOUR).isoformat()})
    return proposal_id


def past_proposal(api: ApiWorld, complex_id: UUID, yes_voters: tuple[UUID, ...] = (),
                  amount_won: int = 500, purpose: str = "event") -> str:
    """A proposal whose window closed an hour ago (recorded with past times straight on the
    ledger, as no HTTP request can travel back), with yes ballots of these residents."""
    proposal_id = f"V-{uuid.uuid4().hex[:10]}"
    opened_at = now() - 3 * HOUR
    ledger = api.services.ledger
    outcome = ledger.execute(
        c.OpenProposal(complex_id, proposal_id, purpose, "Study room lamps", amount_won,
                       opened_at + 2 * HOUR),
        Cause(uuid.uuid4(), "manager", f"open-{proposal_id}", opened_at))
    for resident in yes_voters:
        outcome = ledger.execute(c.CastBallot(proposal_id, resident, "yes"),
                                 Cause(resident, "resident", f"vote-{uuid.uuid4().hex}",
                                       opened_at + HOUR))
    api.position = max(api.position, outcome.position)
    return proposal_id
