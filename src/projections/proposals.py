"""proposals: what is each complex voting on, how do the tallies stand, what did each
spend cite?

A proposal is `open` until it is decided (`approved` or `rejected`); its tally counts
ballots as they are cast. While it is open, `households_count` is the complex's
registered households now; once decided, the count the decision recorded. Who voted
how (`p_proposal_ballots`) is for auditors, and for a resident their own household's
ballot: the API decides who reads it. `p_fund_spends` lists every fund spend with the
proposal it cites (empty for spends within the monthly allowance and for spends made
before proposals existed). `due_proposals` lists open proposals whose window has
closed, for the sweeper to decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from eventlog.log import Event
from ledger import limits
from ledger.proposal import OPEN, proposal_aggregate_id
from projections.base import Changes, Projection, Table, TradeFacts

PROPOSALS = Table(
    name="p_proposals",
    columns=(
        ("proposal_key", "uuid"), ("proposal_id", "text"), ("complex_id", "uuid"),
        ("purpose", "text"), ("title", "text"), ("amount_won", "bigint"),
        ("voting_opens_at", "timestamptz"), ("voting_closes_at", "timestamptz"),
        ("quorum_bps", "bigint"), ("approval_bps", "bigint"), ("state", "text"),
        ("decided_households_count", "bigint"), ("ballots_count", "bigint"),
        ("yes_count", "bigint"), ("no_count", "bigint"), ("spent_won", "bigint"),
        ("opened_at", "timestamptz"), ("decided_at", "timestamptz"), ("position", "bigint"),
    ),
    key=("proposal_key",),
    add=("ballots_count", "yes_count", "no_count", "spent_won"),
    indexes=(("complex", "complex_id, opened_at"), ("due", "state, voting_closes_at")),
)

BALLOTS = Table(
    name="p_proposal_ballots",
    columns=(
        ("proposal_key", "uuid"), ("household_id", "uuid"), ("choice", "text"),
        ("actor_id", "uuid"), ("actor_role", "text"), ("on_behalf_of", "uuid"),
        ("consent_ref", "text"), ("cast_at", "timestamptz"), ("position", "bigint"),
    ),
    key=("proposal_key", "household_id"),
)

HOUSEHOLDS = Table(
    name="p_complex_households",
    columns=(("complex_id", "uuid"), ("households_count", "bigint")),
    key=("complex_id",),
    add=("households_count",),
)

SPENDS = Table(
    name="p_fund_spends",
    columns=(
        ("complex_id", "uuid"), ("spend_id", "text"), ("purpose", "text"),
        ("amount_won", "bigint"), ("decision_ref", "text"), ("proposal_id", "text"),
        ("spent_at", "timestamptz"), ("actor_role", "text"), ("position", "bigint"),
    ),
    key=("complex_id", "spend_id"),
    indexes=(("proposal", "proposal_id"),),
)


class Proposals(Projection):
    name = "proposals"
    reads = ("Proposal.", "Complex.")
    rebuild_cost = 0.3
    tables = (PROPOSALS, BALLOTS, HOUSEHOLDS, SPENDS)

    def fold_into(self, changes: Changes, events: Sequence[Event],
                  trades: TradeFacts) -> Changes:  # noqa: ARG002
        for event in events:
            name = event.name
            data = event.data
            if name == "Complex.HouseholdCounted":
                changes.add(HOUSEHOLDS.name, (event.originator_id,), households_count=1)
            elif name == "Complex.FundSpent":
                changes.set(SPENDS.name, (event.originator_id, data["spend_id"]),
                            purpose=data["purpose"], amount_won=data["amount_won"],
                            decision_ref=data["decision_ref"],
                            proposal_id=data.get("proposal_id", ""),
                            spent_at=event.occurred_at, actor_role=data["actor_role"],
                            position=event.position)
            elif name.startswith("Proposal."):
                self._proposal(changes, event)
        return changes

    def _proposal(self, changes: Changes, event: Event) -> None:
        data = event.data
        key = (event.originator_id,)
        kind = event.name[len("Proposal."):]
        if kind == "Opened":
            changes.set(PROPOSALS.name, key, proposal_id=data["proposal_id"],
                        complex_id=event.uuid("complex_id"), purpose=data["purpose"],
                        title=data["title"], amount_won=data["amount_won"],
                        voting_opens_at=event.time("voting_opens_at"),
                        voting_closes_at=event.time("voting_closes_at"),
                        quorum_bps=data["quorum_bps"], approval_bps=data["approval_bps"],
                        state=OPEN, opened_at=event.occurred_at)
            changes.add(PROPOSALS.name, key, ballots_count=0, yes_count=0, no_count=0,
                        spent_won=0)
        elif kind == "BallotCast":
            yes = data["choice"] == "yes"
            changes.add(PROPOSALS.name, key, ballots_count=1, yes_count=int(yes),
                        no_count=int(not yes))
            changes.set(BALLOTS.name, (event.originator_id, event.uuid("household_id")),
                        choice=data["choice"], actor_id=event.uuid("actor_id"),
                        actor_role=data["actor_role"], on_behalf_of=event.uuid("on_behalf_of"),
                        consent_ref=data["consent_ref"], cast_at=event.occurred_at,
                        position=event.position)
        elif kind == "Decided":
            changes.set(PROPOSALS.name, key, state=data["outcome"],
                        decided_households_count=data["households_count"],
                        decided_at=event.occurred_at)
        elif kind == "SpendCited":
            changes.add(PROPOSALS.name, key, spent_won=data["amount_won"])
        else:
            raise AssertionError(f"unknown proposal event {event.name}")
        changes.set(PROPOSALS.name, key, position=event.position)


_PROPOSAL_COLUMNS = (
    "p.proposal_id, p.complex_id, p.purpose, p.title, p.amount_won, p.voting_opens_at,"
    " p.voting_closes_at, p.quorum_bps, p.approval_bps, p.state,"
    " CASE WHEN p.state = 'open' THEN coalesce(h.households_count, 0)"
    " ELSE p.decided_households_count END AS households_count,"
    " p.ballots_count, p.yes_count, p.no_count, p.spent_won,"
    " p.amount_won - p.spent_won AS unspent_won, p.opened_at, p.decided_at, p.position")


def proposal(conn: psycopg.Connection[Any], proposal_id: str) -> dict[str, Any] | None:
    """One proposal with its tally (no ballots: see `ballots` and `household_ballot`)."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            f"SELECT {_PROPOSAL_COLUMNS} FROM p_proposals p"
            " LEFT JOIN p_complex_households h ON h.complex_id = p.complex_id"
            " WHERE p.proposal_key = %s", (proposal_aggregate_id(proposal_id),))
        return cursor.fetchone()


def complex_proposals(conn: psycopg.Connection[Any], complex_id: UUID,
                      limit: int = limits.page_size_max) -> list[dict[str, Any]]:
    """A complex's proposals with their tallies, newest first."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            f"SELECT {_PROPOSAL_COLUMNS} FROM p_proposals p"
            " LEFT JOIN p_complex_households h ON h.complex_id = p.complex_id"
            " WHERE p.complex_id = %s ORDER BY p.opened_at DESC, p.proposal_id LIMIT %s",
            (complex_id, limit))
        return cursor.fetchall()


def household_ballot(conn: psycopg.Connection[Any], proposal_id: str,
                     household_id: UUID) -> str | None:
    """One household's choice on a proposal, or None if it has not voted."""
    row = conn.execute(
        "SELECT choice FROM p_proposal_ballots WHERE proposal_key = %s AND household_id = %s",
        (proposal_aggregate_id(proposal_id), household_id)).fetchone()
    return None if row is None else str(row[0])


def ballots(conn: psycopg.Connection[Any], proposal_id: str) -> list[dict[str, Any]]:
    """Every ballot on a proposal, in the order cast (who voted how: auditors only)."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            "SELECT household_id, choice, actor_id, actor_role, on_behalf_of, consent_ref,"
            " cast_at, position FROM p_proposal_ballots WHERE proposal_key = %s"
            " ORDER BY position", (proposal_aggregate_id(proposal_id),))
        return cursor.fetchall()


def fund_spends(conn: psycopg.Connection[Any], complex_id: UUID,
                limit: int = limits.page_size_max) -> list[dict[str, Any]]:
    """A complex's latest fund spends, each with the proposal it cites, newest first."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            "SELECT spend_id, purpose, amount_won, decision_ref,"
            " nullif(proposal_id, '') AS proposal_id, spent_at, position"
            " FROM p_fund_spends WHERE complex_id = %s ORDER BY position DESC LIMIT %s",
            (complex_id, limit))
        return cursor.fetchall()


def due_proposals(conn: psycopg.Connection[Any], now: datetime,
                  limit: int = limits.page_size_max) -> list[str]:
    """Ids of open proposals whose voting window has closed, earliest close first."""
    rows = conn.execute(
        "SELECT proposal_id FROM p_proposals WHERE state = %s AND voting_closes_at <= %s"
        " ORDER BY voting_closes_at, proposal_id LIMIT %s", (OPEN, now, limit)).fetchall()
    return [row[0] for row in rows]
