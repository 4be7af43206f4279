"""The write path under many writers and faults: every command answered exactly once with
its own true outcome, and no stale answer from a writer's memory."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from eventsourcing.persistence import DataError, OperationalError

from ledger import commands as c
from ledger.application import Ledger, Outcome, now
from ledger.engine import Batch, Pending
from ledger.errors import DatabaseUnavailable, DomainError
from ledger.resident import Resident
from world import PLATFORM, World, cause

ANSWER_SECONDS_MAX = 10.0
"""No caller waits longer than this in these tests (the engine's own bound is 5 s plus
one batch's bounded database work)."""


class FaultyLedger(Ledger):
    """A ledger whose handlers, saves and replays fail on chosen trades, as a lost
    database connection or a bug would make them fail."""

    name = "Ledger"  # the same events table as the ledger's
    faults: dict[str, str]
    """trade id -> fault: operational, assertion, save, replay."""

    def stage(self, pending: Pending, batch: Batch, *, fresh: bool) -> None:
        fault = self._fault(pending)
        if fault == "operational":
            raise OperationalError("connection to server lost (injected)")
        if fault == "assertion":
            raise AssertionError("a broken invariant (injected)")
        super().stage(pending, batch, fresh=fresh)

    def save_batch(self, batch: Batch) -> list[int]:
        if any(self._fault(stage.pending) == "save" for stage in batch.staged):
            self.faults = {k: v for k, v in self.faults.items() if v != "save"}  # once
            raise OperationalError("server closed the connection during COMMIT (injected)")
        return super().save_batch(batch)

    def _replay(self, pending: Pending) -> Outcome | DomainError | None:
        if self._fault(pending) == "replay":
            raise OperationalError("replay lookup failed (injected)")
        return super()._replay(pending)

    def _fault(self, pending: Pending) -> str | None:
        command = pending.command
        if isinstance(command, c.RecordTrade):
            return getattr(self, "faults", {}).get(command.trade_id)
        return None


@pytest.fixture
def two(world: World) -> Iterator[tuple[World, Ledger]]:
    """The test's world (writer A) and a second writer process's ledger (B), both warm."""
    other = Ledger.connect(world.database_url, world.schema)
    yield world, other
    other.close()


def people(world: World) -> dict[str, Any]:
    complex_id = world.complex(f"C-{uuid.uuid4().hex[:6]}")
    household = world.household(complex_id)
    world.policy()
    return {"complex": complex_id, "household": household,
            "seller": world.resident(household), "buyer": world.resident(world.household(
                complex_id))}


def trade_command(buyer: uuid.UUID, seller: uuid.UUID, amount_won: int, points_won: int = 0,
                  trade_id: str | None = None) -> c.RecordTrade:
    return c.RecordTrade(trade_id or f"T-{uuid.uuid4().hex[:10]}", "sharing", "childcare",
                         seller, "resident", buyer, amount_won, points_won)


@pytest.mark.parametrize("round_number", range(3))
def test_faults_inside_a_batch_answer_every_caller_with_its_own_outcome(
        database_url: str, schema: str, round_number: int) -> None:
    """Among 24 concurrent commands sharing batches, one handler loses the database, one
    save fails, one replay fails and one assertion breaks: every caller is answered
    within the bound, with its own outcome or "unavailable" (never another's error);
    retried with the same request ids, every command but the broken one ends committed,
    and each is stored exactly once."""
    ledger = FaultyLedger.connect(database_url, schema)
    assert isinstance(ledger, FaultyLedger)
    ledger.faults = {}
    world = World(ledger, database_url, schema)
    cast = people(world)
    faults = {"F-operational": "operational", "F-assertion": "assertion", "F-save": "save",
              "F-replay": "replay"}
    ledger.faults = dict(faults)
    trade_ids = [*faults, *[f"OK-{n}" for n in range(20)]]
    requests = {trade_id: cause(PLATFORM, "platform") for trade_id in trade_ids}
    commands = {trade_id: trade_command(cast["buyer"], cast["seller"], 10_000,
                                        trade_id=trade_id) for trade_id in trade_ids}
    start = threading.Barrier(len(trade_ids))
    answers: dict[str, tuple[Any, float]] = {}

    def call(trade_id: str) -> None:
        start.wait()
        began = time.monotonic()
        try:
            answer: Any = ledger.execute(commands[trade_id], requests[trade_id])
        except BaseException as error:  # the answer under test
            answer = error
        answers[trade_id] = (answer, time.monotonic() - began)

    threads = [threading.Thread(target=call, args=(t,)) for t in trade_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(ANSWER_SECONDS_MAX + 5)
    try:
        assert sorted(answers) == sorted(trade_ids), "every caller was answered"
        assert max(seconds for _, seconds in answers.values()) < ANSWER_SECONDS_MAX
        assert isinstance(answers["F-operational"][0], DatabaseUnavailable)
        for trade_id, (answer, _) in answers.items():
            if trade_id == "F-assertion":
                assert isinstance(answer, AssertionError | DatabaseUnavailable), answer
            else:  # never another command's error
                assert isinstance(answer, Outcome | DatabaseUnavailable), (trade_id, answer)

        # Whoever was told "unavailable" retries the same request; only the broken
        # invariant is still broken.
        ledger.faults = {"F-assertion": "assertion"}
        final: dict[str, Any] = {}
        for trade_id, (first, _) in answers.items():
            answer = first
            for _ in range(3):
                if not isinstance(answer, DatabaseUnavailable):
                    break
                try:
                    answer = ledger.execute(commands[trade_id], requests[trade_id])
                except (AssertionError, DatabaseUnavailable) as error:
                    answer = error
            final[trade_id] = answer
        assert isinstance(final.pop("F-assertion"), AssertionError)
        assert all(isinstance(outcome, Outcome) for outcome in final.values()), final
        with world.connect() as conn:
            stored = dict(conn.execute(
                "SELECT convert_from(state, 'UTF8')::jsonb ->> 'trade_id', count(*)"
                " FROM ledger_events WHERE topic LIKE %s GROUP BY 1",
                ("%:Trade.Recorded",)).fetchall())
        assert stored == dict.fromkeys(final, 1), "each stored exactly once, none lost"
        for trade_id, outcome in final.items():
            assert outcome["trade_id"] == trade_id
        assert round_number >= 0
    finally:
        ledger.close()


def test_a_rejection_is_checked_against_committed_state_not_a_stale_cache(
        two: tuple[World, Ledger]) -> None:
    """Writer B holds a wallet at 0 points in memory; writer A credits it; B then accepts
    a trade paid with those points instead of refusing `insufficient_points`."""
    world, other = two
    cast = people(world)
    # B reads (and caches) the buyer at 0 points: a refusal that is right at that moment.
    with pytest.raises(DomainError) as refused:
        other.execute(trade_command(cast["buyer"], cast["seller"], 10_000, 3_000),
                      cause(PLATFORM, "platform"))
    assert refused.value.code == "insufficient_points"
    world.trade(cast["buyer"], cast["seller"], 100_000)  # A: +3,000 points
    outcome = other.execute(trade_command(cast["buyer"], cast["seller"], 10_000, 3_000),
                            cause(PLATFORM, "platform"))
    assert outcome["points_used_won"] == 3_000
    wallet = other.snapshot(Resident, cast["buyer"])
    assert wallet is not None
    assert wallet.available_won == 3_000 - 3_000 + 210  # 3 % of the 7,000 paid in money


def test_an_invoice_issued_by_another_writer_is_found(two: tuple[World, Ledger]) -> None:
    """Writer B holds the household in memory; writer A issues an invoice; B's rent
    payment against it is accepted, not refused `unknown_invoice`."""
    world, other = two
    cast = people(world)
    world.trade(cast["seller"], cast["buyer"], 100_000)  # the payer earns 3,000 points
    payer = cast["seller"]
    other.execute(c.IssueRentInvoice(cast["household"], "INV-B", "2026-11", 50_000,
                                      time_in_days(10)), cause(role="billing"))
    invoice_id = world.invoice(cast["household"], 50_000)  # written by A, B has it cached
    outcome = other.execute(c.PayRent("PAY-1", cast["household"], invoice_id, "2026-11",
                                      2_000, payer, None), cause(payer, "resident"))
    assert outcome["status"] == "held"


def test_a_trade_with_a_seller_who_moved_out_elsewhere_is_refused(
        two: tuple[World, Ledger]) -> None:
    """Writer B holds the seller open in memory; the seller moves out through writer A;
    B refuses the next trade with that seller, as one writer would."""
    world, other = two
    cast = people(world)
    other.execute(trade_command(cast["buyer"], cast["seller"], 10_000),
                  cause(PLATFORM, "platform"))  # B caches the seller, open
    world.run(c.MoveOut(cast["seller"]))
    with pytest.raises(DomainError) as refused:
        other.execute(trade_command(cast["buyer"], cast["seller"], 10_000),
                      cause(PLATFORM, "platform"))
    assert refused.value.code == "wallet_closed"


def test_a_retried_request_after_a_commit_gets_the_first_outcome_not_a_rejection(
        world: World) -> None:
    """A rent payment whose answer was lost is retried with the same request id: the
    retry answers the first outcome, although running it again would now be refused."""
    cast = people(world)
    world.trade(cast["seller"], cast["buyer"], 100_000)
    invoice_id = world.invoice(cast["household"], 50_000)
    request = cause(cast["seller"], "resident")
    command = c.PayRent("PAY-R", cast["household"], invoice_id, "2026-11", 3_000,
                        cast["seller"], None)
    first = world.ledger.execute(command, request)
    again = world.ledger.execute(command, request)
    assert again.replayed
    assert (again.result, again.position) == (first.result, first.position)


def test_a_closed_ledger_answers_queued_and_new_commands_unavailable(
        database_url: str, schema: str) -> None:
    """Shutting down answers every command: new ones get DatabaseUnavailable at once."""
    ledger = Ledger.connect(database_url, schema)
    world = World(ledger, database_url, schema)
    world.complex("SHUT")
    ledger.engine.close()
    began = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        world.complex("SHUT-2")
    assert time.monotonic() - began < 1
    ledger.close()


def time_in_days(days: int) -> datetime:
    return now() + timedelta(days=days)


def test_a_group_run_atomically_commits_with_its_companion_statements_or_not_at_all(
        world: World) -> None:
    """`execute_atomically` (an import's chunk): the accepted commands, the statements made
    of the rejections and the progress are one transaction. A companion that fails leaves
    nothing committed; one that succeeds records exactly the rejections, in order."""
    import psycopg  # noqa: PLC0415
    from psycopg.sql import SQL, Identifier  # noqa: PLC0415

    from ledger.complex import complex_id_for  # noqa: PLC0415
    from ledger.database import ConnectionSettings  # noqa: PLC0415
    from ledger.persistence import APP_ROLE  # noqa: PLC0415

    conninfo = ConnectionSettings.from_url(world.database_url).conninfo()
    table = SQL("{}.{}").format(Identifier(world.schema), Identifier("progress"))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SQL("CREATE TABLE {} (rejected int[] NOT NULL)").format(table))
        conn.execute(SQL("GRANT INSERT, SELECT ON {} TO {}").format(table,
                                                                 Identifier(APP_ROLE)))
    unknown_complex = uuid.uuid4()
    items = [(c.RegisterComplex("AT-01", "Atomic", "Hwaseong"), cause()),
             (c.RegisterHousehold(unknown_complex, "101-1"), cause()),
             (c.RegisterComplex("AT-02", "Atomic two", "Hwaseong"), cause())]

    def failing(_rejections: list[tuple[int, DomainError]]) -> list[Any]:
        return [("SELECT 1 / 0", ())]

    with pytest.raises(DataError, match="division by zero"):
        world.ledger.execute_atomically(items, failing)
    assert world.ledger.load(complex_id_for("AT-01")) is None, "nothing was committed"

    seen: list[list[tuple[int, str]]] = []

    def recording(rejections: list[tuple[int, DomainError]]) -> list[Any]:
        seen.append([(index, error.code) for index, error in rejections])
        return [(SQL("INSERT INTO {} VALUES (%s)").format(table),
                 ([index for index, _ in rejections],))]

    retried = [(command, cause()) for command, _ in items]  # new request ids
    results = world.ledger.execute_atomically(retried, recording)
    assert [type(result).__name__ for result in results] == ["Outcome", "DomainError",
                                                              "Outcome"]
    assert seen[-1] == [(1, "unknown_complex")]
    assert world.ledger.load(complex_id_for("AT-01")) is not None
    assert world.ledger.load(complex_id_for("AT-02")) is not None
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(SQL("SELECT rejected FROM {}").format(table)).fetchall()
    assert rows == [([1],)]
