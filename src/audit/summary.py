"""What the ledger holds: events, points per account kind, and the conservation check."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier
from tqdm import tqdm

from ledger.codec import decode
from ledger.conservation import Balances
from ledger.database import ConnectionSettings

FETCH_ROWS = 10_000


@dataclass(frozen=True)
class LedgerSummary:
    events: int
    position: int
    points_by_kind: dict[str, int]
    owed_won: int
    problems: list[str]

    @property
    def conserved(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [f"events: {self.events:,} (log position {self.position:,})",
               "points per account kind (won; system accounts are negative where points "
               "come from):"]
        for kind, amount in self.points_by_kind.items():
            out.append(f"  {kind:<15} {amount:>18,}")
        out.append(f"  {'owed (memo)':<15} {self.owed_won:>18,}")
        total = sum(self.points_by_kind.values())
        verdict = "OK" if self.conserved else "FAILED: " + "; ".join(self.problems[:5])
        out.append(f"conservation: sum of all accounts = {total:,} — {verdict}")
        return out


def stored_events(url: str, schema: str, *, after: int = 0,
                  upto: int | None = None) -> Iterator[tuple[int, Any]]:
    """(position, domain event) for every stored event, in log order, streamed."""
    statement = SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state "
        "FROM {schema}.ledger_events WHERE notification_id > %s AND notification_id <= %s "
        "ORDER BY notification_id").format(schema=Identifier(schema))
    with psycopg.connect(ConnectionSettings.from_url(url).conninfo()) as conn, \
            conn.cursor(name="ledger_summary") as cursor:
        cursor.itersize = FETCH_ROWS
        cursor.execute(statement, (after, upto if upto is not None else 2**62))
        for position, originator_id, version, topic, state in cursor:
            yield position, decode(originator_id, version, topic, state)


def summarise(url: str, schema: str = "public", *, progress: bool = False) -> LedgerSummary:
    balances = Balances()
    owed_won = 0
    last_position = 0
    for position, event in tqdm(stored_events(url, schema), desc="checking", unit="event",
                                disable=not progress):
        last_position = position
        balances.apply(event)
        owed_won += getattr(event, "owed_won", 0) if type(event).__name__ in (
            "AccrualClawedBack", "PaymentReturned", "CommonPointsClawedBack",
            "SettlementReturned") else 0
        owed_won -= getattr(event, "recovered_won", 0)
    return LedgerSummary(events=balances.events, position=last_position,
                         points_by_kind=balances.by_kind(), owed_won=owed_won,
                         problems=balances.problems())
