"""Concurrent commands: no overdraft, nothing lost, duplicates collapse to one outcome."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from ledger import commands as c
from ledger.application import Ledger, Outcome
from ledger.complex import Complex
from ledger.conservation import fold
from ledger.errors import DomainError
from ledger.resident import Resident
from world import MANAGER, PLATFORM, World, cause


def run_together(count: int, action: Callable[[int], Any]) -> list[Any]:
    """Start `count` threads at once; return each one's result or exception."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def worker(index: int) -> None:
        barrier.wait()
        try:
            results[index] = action(index)
        except Exception as error:
            results[index] = error

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


@pytest.fixture
def funded(world: World) -> dict[str, uuid.UUID]:
    """A buyer holding 1,000 points and a seller."""
    world.policy()
    complex_id = world.complex()
    seller = world.resident(world.household(complex_id))
    buyer = world.funded_resident(world.household(complex_id), seller, 999)
    world.trade(seller, buyer, 34)  # gives the buyer nothing; seller earns 1 point
    world.run(c.RecordTrade("T-top-up", "sharing", "x", seller, "resident", buyer, 1, 0))
    assert world.ledger.snapshot(Resident, buyer).available_won == 999
    return {"buyer": buyer, "seller": seller, "complex": complex_id}


def test_sixteen_threads_spending_one_wallet(world: World, funded: dict) -> None:
    """16 threads each spend 111 of 999 points at once: exactly 9 succeed, 7 get
    insufficient_points, nothing overdraws and nothing is lost."""
    def spend(index: int) -> Outcome:
        return world.ledger.execute(
            c.RecordTrade(f"race-{index}", "sharing", "x", funded["seller"], "resident",
                          funded["buyer"], 111, 111), cause(PLATFORM, "platform"))

    results = run_together(16, spend)
    successes = [r for r in results if isinstance(r, Outcome)]
    failures = [r for r in results if not isinstance(r, Outcome)]
    assert len(successes) == 9
    assert {type(f) for f in failures} == {DomainError}
    assert {f.code for f in failures} == {"insufficient_points"}
    assert world.ledger.snapshot(Resident, funded["buyer"]).available_won == 0
    assert len({s.position for s in successes}) == 9
    assert fold(world.all_events()).problems() == []


def test_two_writers_on_one_database_never_overdraw(world: World, funded: dict) -> None:
    """Two ledger instances (as two processes would) racing on one wallet: the events
    table's keys force the loser to reload and re-check; exactly the affordable succeed."""
    second = Ledger.connect(world.database_url, world.schema)
    try:
        second.snapshot(Resident, funded["buyer"])  # warm its cache with the same version
        ledgers = [world.ledger, second]

        def spend(index: int) -> Outcome:
            return ledgers[index % 2].execute(
                c.RecordTrade(f"two-{index}", "sharing", "x", funded["seller"], "resident",
                              funded["buyer"], 333, 333), cause(PLATFORM, "platform"))

        results = run_together(8, spend)
    finally:
        second.close()
    successes = [r for r in results if isinstance(r, Outcome)]
    codes = Counter(r.code for r in results if isinstance(r, DomainError))
    assert len(successes) == 3
    assert codes == {"insufficient_points": 5}
    assert fold(world.all_events()).problems() == []


def test_sixteen_threads_spending_one_fund(world: World, funded: dict) -> None:
    """Concurrent fund spends never take the fund below zero."""
    fund = world.ledger.snapshot(Complex, funded["complex"])
    assert fund is not None
    balance = fund.balance_won

    def spend(index: int) -> Outcome:
        return world.ledger.execute(
            c.SpendFund(funded["complex"], f"S-{index}", "upkeep", 100, "council"),
            cause(MANAGER, "manager"))

    results = run_together(16, spend)
    assert sum(isinstance(r, Outcome) for r in results) == min(16, balance // 100)
    fund = world.ledger.snapshot(Complex, funded["complex"])
    assert fund is not None and fund.balance_won >= 0


def test_a_retried_request_returns_the_first_outcome(world: World, funded: dict) -> None:
    """The same request id with the same content answers the original outcome, changes nothing."""
    command = c.RecordTrade("T-retry", "sharing", "x", funded["seller"], "resident",
                            funded["buyer"], 500, 100)
    first = world.ledger.execute(command, cause(PLATFORM, "platform", "retry-1"))
    position = world.ledger.position()
    again = world.ledger.execute(command, cause(PLATFORM, "platform", "retry-1"))
    assert (again.result, again.position, again.replayed) == (first.result, first.position,
                                                               True)
    assert world.ledger.position() == position


def test_a_reused_request_id_with_other_content_is_rejected(world: World,
                                                            funded: dict) -> None:
    """The same request id with a different body is rejected with request_id_reused."""
    world.ledger.execute(c.SpendFund(funded["complex"], "S-a", "event", 1, "council"),
                         cause(MANAGER, "manager", "reuse-1"))
    with pytest.raises(DomainError) as caught:
        world.ledger.execute(c.SpendFund(funded["complex"], "S-b", "event", 1, "council"),
                             cause(MANAGER, "manager", "reuse-1"))
    assert caught.value.code == "request_id_reused"


def test_a_retry_is_answered_even_when_the_command_would_now_fail(world: World,
                                                                  funded: dict) -> None:
    """A retry of a successful spend of all points returns the first outcome, not
    insufficient_points."""
    command = c.RecordTrade("T-all", "sharing", "x", funded["seller"], "resident",
                            funded["buyer"], 999, 999)
    first = world.ledger.execute(command, cause(PLATFORM, "platform", "all-in"))
    assert world.ledger.execute(command, cause(PLATFORM, "platform", "all-in")) == Outcome(
        first.result, first.position, replayed=True)


def test_concurrent_duplicates_collapse_to_one(world: World, funded: dict) -> None:
    """16 concurrent copies of one request (on two ledger instances): one effect, and every
    copy gets the same outcome."""
    second = Ledger.connect(world.database_url, world.schema)
    try:
        ledgers = [world.ledger, second]
        command = c.RecordTrade("T-dupes", "sharing", "x", funded["seller"], "resident",
                                funded["buyer"], 400, 40)

        def send(index: int) -> Outcome:
            return ledgers[index % 2].execute(command, cause(PLATFORM, "platform", "dupes"))

        results = run_together(16, send)
    finally:
        second.close()
    assert all(isinstance(r, Outcome) for r in results), results
    assert len({(r.position, str(r.result)) for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert world.ledger.snapshot(Resident, funded["buyer"]).available_won == 999 - 40 + 10


def test_concurrent_duplicates_with_different_content(world: World, funded: dict) -> None:
    """Concurrent copies of one request id with two bodies: one body wins, the other is
    rejected with request_id_reused."""
    def send(index: int) -> Outcome:
        return world.ledger.execute(
            c.SpendFund(funded["complex"], f"S-body-{index % 2}", "event", 1, "council"),
            cause(MANAGER, "manager", "two-bodies"))

    results = run_together(8, send)
    outcomes = {r.result["spend_id"] for r in results if isinstance(r, Outcome)}
    codes = {r.code for r in results if isinstance(r, DomainError)}
    assert len(outcomes) == 1
    assert codes == {"request_id_reused"}


def test_a_policy_set_by_another_process_applies_within_the_reload_interval(
        world: World, funded: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trades in one process pick up a policy version set through another process once the
    cached policy is older than the reload interval."""
    other = Ledger.connect(world.database_url, world.schema)
    try:
        other.execute(c.SetAccrualPolicy.of([
            {"market": "sharing", "seller_kind": "resident", "personal_bps": 1000,
             "common_bps": 0}]), cause())
    finally:
        other.close()
    monkeypatch.setattr("ledger.limits.policy_reload_seconds", 0.0)
    outcome = world.ledger.execute(
        c.RecordTrade("T-new-policy", "sharing", "x", funded["seller"], "resident",
                      funded["buyer"], 1_000, 0), cause(PLATFORM, "platform"))
    assert (outcome["policy_version"], outcome["personal_accrued_won"]) == (2, 100)


def test_commands_sent_together_are_answered_as_if_sent_one_by_one(world: World) -> None:
    """`execute_many` keeps order: a trade refused for want of points stays refused even
    when a later command of the same batch brings the buyer points (the refusal is not
    re-run after it)."""
    world.policy()
    complex_id = world.complex()
    buyer = world.resident(world.household(complex_id))
    other = world.resident(world.household(complex_id))
    items = [
        (c.RecordTrade("T-early", "sharing", "childcare", other, "resident", buyer, 1_000,
                       500), cause(PLATFORM, "platform")),
        (c.RecordTrade("T-earn", "sharing", "childcare", other, "resident", buyer, 100_000,
                       0), cause(PLATFORM, "platform")),
        (c.RecordTrade("T-late", "sharing", "childcare", other, "resident", buyer, 1_000,
                       500), cause(PLATFORM, "platform")),
    ]
    results = world.ledger.execute_many(items)
    assert isinstance(results[0], DomainError) and results[0].code == "insufficient_points"
    assert isinstance(results[1], Outcome) and results[1]["personal_accrued_won"] == 3_000
    assert isinstance(results[2], Outcome)
    wallet = world.ledger.snapshot(Resident, buyer)
    assert wallet is not None and wallet.available_won == 3_000 - 500 + 15
