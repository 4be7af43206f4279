"""Wash-trade guards under concurrent writers: threads of one ledger, and two writer processes,
racing the pair cap and the sharing accrual cap; the caps are never exceeded."""

from __future__ import annotations

import multiprocessing
import uuid
from collections import Counter
from typing import Any

import pytest

from ledger import commands as c
from ledger.application import Ledger, Outcome, now
from ledger.complex import kst_month
from ledger.conservation import fold
from ledger.errors import DomainError
from ledger.guards import TradePair, trade_pair_id
from ledger.resident import Resident
from test_ledger_concurrency import run_together
from world import PLATFORM, World, cause


@pytest.fixture
def pair(world: World) -> dict[str, uuid.UUID]:
    """Two residents of two households, under a pair cap of 3 and a sharing cap of 900 won."""
    world.policy(guards={"pair_trades_per_month_max": 3,
                         "sharing_accrual_won_per_month_max": 900})
    complex_id = world.complex()
    first = world.resident(world.household(complex_id))
    second = world.resident(world.household(complex_id))
    return {"first": first, "second": second}


def record(ledger: Ledger, buyer: uuid.UUID, seller: uuid.UUID, trade_id: str,
           amount_won: int) -> Outcome:
    return ledger.execute(c.RecordTrade(trade_id, "sharing", "x", seller, "resident", buyer,
                                        amount_won, 0), cause(PLATFORM, "platform"))


def pair_count(world: World, pair: dict[str, uuid.UUID]) -> int:
    counter = world.ledger.snapshot(TradePair, trade_pair_id(
        pair["first"], pair["second"], kst_month(now())))
    return 0 if counter is None else counter.trades_count


def test_sixteen_threads_racing_the_pair_cap(world: World, pair: dict) -> None:
    """16 trades between one pair at once, both ways: exactly 3 are recorded."""
    def trade(index: int) -> Outcome:
        buyer, seller = ((pair["first"], pair["second"]) if index % 2
                         else (pair["second"], pair["first"]))
        return record(world.ledger, buyer, seller, f"race-{index}", 100)

    results = run_together(16, trade)
    codes = Counter(r.code for r in results if isinstance(r, DomainError))
    assert sum(isinstance(r, Outcome) for r in results) == 3
    assert codes == {"pair_trade_cap_reached": 13}
    assert pair_count(world, pair) == 3
    assert fold(world.all_events()).problems() == []


def test_threads_racing_the_sharing_cap(world: World, pair: dict) -> None:
    """One buyer, 8 trades of 300 won accrual at once, under a 900 won cap: exactly 3."""
    world.policy(guards={"pair_trades_per_month_max": None,
                         "sharing_accrual_won_per_month_max": 900})
    results = run_together(8, lambda index: record(
        world.ledger, pair["first"], pair["second"], f"cap-{index}", 10_000))
    assert sum(isinstance(r, Outcome) for r in results) == 3
    assert {r.code for r in results if isinstance(r, DomainError)} == {
        "sharing_accrual_cap_reached"}
    wallet = world.ledger.snapshot(Resident, pair["first"])
    assert wallet is not None and wallet.sharing_accrued_won(kst_month(now())) == 900


def test_two_writers_racing_the_pair_cap(world: World, pair: dict) -> None:
    """Two ledger instances with warm caches: the cap holds across them."""
    second = Ledger.connect(world.database_url, world.schema)
    try:
        record(world.ledger, pair["first"], pair["second"], "warm-1", 100)
        second.snapshot(TradePair, trade_pair_id(pair["first"], pair["second"],
                                                  kst_month(now())))
        ledgers = [world.ledger, second]
        results = run_together(8, lambda index: record(
            ledgers[index % 2], pair["second"], pair["first"], f"two-{index}", 100))
    finally:
        second.close()
    assert sum(isinstance(r, Outcome) for r in results) == 2
    assert pair_count(world, pair) == 3


def _trade_in_a_process(database_url: str, schema: str, buyer: str, seller: str, index: int,
                        start: Any, answers: Any) -> None:
    ledger = Ledger.connect(database_url, schema)
    try:
        ledger.snapshot(Resident, uuid.UUID(buyer))  # warm the cache
        start.wait(timeout=30)
        for number in range(4):
            try:
                record(ledger, uuid.UUID(buyer), uuid.UUID(seller), f"p{index}-{number}", 10_000)
                answers.put("accepted")
            except DomainError as error:
                answers.put(error.code)
    finally:
        ledger.close()


def test_two_writer_processes_racing_both_caps(world: World, pair: dict) -> None:
    """Two OS processes, each its own writer, 4 trades each of one pair (cap 3) and one
    buyer's sharing accruals (300 won each, cap 900): 3 accepted in all."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    answers = context.Queue()
    processes = [context.Process(target=_trade_in_a_process, args=(
        world.database_url, world.schema, str(pair["first"]), str(pair["second"]), index,
        start, answers)) for index in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0, 0]
    got = Counter(answers.get(timeout=5) for _ in range(8))
    assert got["accepted"] == 3
    assert set(got) <= {"accepted", "pair_trade_cap_reached", "sharing_accrual_cap_reached"}
    assert pair_count(world, pair) == 3
    wallet = world.ledger.snapshot(Resident, pair["first"])
    assert wallet is not None and wallet.sharing_accrued_won(kst_month(now())) == 900


def test_a_cold_writer_sees_the_pair_count_of_another(world: World, pair: dict) -> None:
    """A writer that has not seen the pair's counter (a new process) takes it as new, and the
    save's key sends it back to read the counter: the cap still holds."""
    world.policy(guards={"pair_trades_per_month_max": 1})
    record(world.ledger, pair["first"], pair["second"], "first", 100)
    cold = Ledger.connect(world.database_url, world.schema)
    try:
        with pytest.raises(DomainError) as refused:
            record(cold, pair["second"], pair["first"], "second", 100)
    finally:
        cold.close()
    assert refused.value.code == "pair_trade_cap_reached"
    assert pair_count(world, pair) == 1


def test_a_cold_writer_loads_stored_pair_counters_with_its_batch(world: World,
                                                                  pair: dict) -> None:
    """A batch of trades in a writer that has not seen the pairs' counters (a new process, a
    restart) reads them with the rest of the batch: it saves at first try, without turning to
    the writers' cross-process lock, and the counters count on."""
    third = world.resident(world.household(world.complexes[0]))
    record(world.ledger, pair["first"], pair["second"], "before-1", 100)
    record(world.ledger, pair["first"], third, "before-2", 100)
    cold = Ledger.connect(world.database_url, world.schema)
    try:
        results = cold.execute_many([
            (c.RecordTrade(f"cold-{number}", "sharing", "x", seller, "resident", pair["first"],
                           100, 0), cause(PLATFORM, "platform"))
            for number, seller in enumerate((pair["second"], third))])
        assert all(isinstance(result, Outcome) for result in results), results
        assert not cold.engine.contended()
    finally:
        cold.close()
    assert pair_count(world, pair) == 2
