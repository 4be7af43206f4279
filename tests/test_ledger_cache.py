"""When the data outgrows the aggregate cache: the same answers, loaded in fewer trips."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from ledger import commands as c
from ledger import limits
from ledger.application import Ledger, Outcome, aggregate_cache_size, now
from ledger.complex import Complex
from ledger.database import ConnectionSettings
from ledger.errors import DomainError
from ledger.events import Cause
from ledger.household import household_id_for
from ledger.resident import Resident
from ledger.trade import trade_aggregate_id
from world import BILLING, PLATFORM, World, cause

HOUSEHOLDS = 40


def _workload() -> list[list[tuple[c.Command, Cause]]]:
    """Batches of commands over 40 households: registrations, enrolments, trades (some
    paying with points, some refused for want of them), refunds, rent invoices and holds."""
    pick = random.Random(7)
    complex_id = uuid.uuid5(uuid.NAMESPACE_URL, "ledger:complex:CA-01")
    households = [household_id_for(complex_id, f"u-{n}") for n in range(HOUSEHOLDS)]
    residents = [uuid.UUID(int=pick.getrandbits(128), version=4) for _ in households]
    batches: list[list[tuple[c.Command, Cause]]] = [
        [(c.SetAccrualPolicy.of([{"market": "sharing", "seller_kind": "resident",
                                  "personal_bps": 3000, "common_bps": 1000}]), cause()),
         (c.RegisterComplex("CA-01", "Cache complex", "Hwaseong"), cause())],
        [(c.RegisterHousehold(complex_id, f"u-{n}"), cause()) for n in range(HOUSEHOLDS)],
        [(c.EnrolResident(household, "consent-1", resident_id=resident),
          cause(resident, "resident")) for household, resident in zip(households, residents,
                                                                        strict=True)],
    ]
    trades: list[str] = []
    for round_number in range(4):
        batch: list[tuple[c.Command, Cause]] = []
        for _ in range(60):
            buyer, seller = pick.sample(range(HOUSEHOLDS), 2)
            trade_id = f"T-{round_number}-{len(trades)}"
            trades.append(trade_id)
            amount = pick.randrange(1_000, 50_000)
            batch.append((c.RecordTrade(trade_id, "sharing", "childcare", residents[seller],
                                        "resident", residents[buyer], amount,
                                        pick.choice((0, 0, amount // 2, amount))),
                          cause(PLATFORM, "platform")))
        for trade_id in pick.sample(trades, 8):
            batch.append((c.RefundTrade(trade_id), cause(PLATFORM, "platform")))
        for index in pick.sample(range(HOUSEHOLDS), 5):
            invoice = f"INV-{round_number}-{index}"
            batch.append((c.IssueRentInvoice(households[index], invoice, "2026-01", 20_000,
                                             now() + timedelta(days=10)),
                          cause(BILLING, "billing")))
            batch.append((c.PayRent(f"P-{round_number}-{index}", households[index], invoice,
                                    "2026-01", pick.randrange(1, 20_000), residents[index]),
                          cause(residents[index], "resident")))
        batches.append(batch)
    return batches


def _answers(ledger: Ledger, batches: list[list[tuple[c.Command, Cause]]]
             ) -> list[dict[str, object] | str]:
    answers: list[dict[str, object] | str] = []
    for batch in batches:
        for result in ledger.execute_many(batch):
            if isinstance(result, Outcome):
                answers.append(result.result)
            else:
                assert isinstance(result, DomainError), result
                answers.append(result.code)
    return answers


@pytest.fixture
def two_schemas(database_url: str) -> Iterator[tuple[str, str]]:
    conninfo = ConnectionSettings.from_url(database_url).conninfo()
    names = (f"cache_small_{uuid.uuid4().hex[:6]}", f"cache_big_{uuid.uuid4().hex[:6]}")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE SCHEMA "{name}"')
    yield names
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def test_a_ledger_whose_data_outgrows_its_cache_gives_the_same_answers(
        database_url: str, two_schemas: tuple[str, str]) -> None:
    """The same commands, run by a ledger that caches 6 aggregates and by one that caches
    everything, get the same answers (acceptances, refusals, amounts) and leave the same
    balances: loading what the cache lacks (together, per batch) changes nothing."""
    batches = _workload()
    small = Ledger.connect(database_url, two_schemas[0], AGGREGATE_CACHE_MAXSIZE="6")
    big = Ledger.connect(database_url, two_schemas[1])
    try:
        small_answers = _answers(small, batches)
        big_answers = _answers(big, batches)
        assert small_answers == big_answers
        assert "insufficient_points" in small_answers  # refusals that depend on loaded state
        assert sum(isinstance(answer, dict) for answer in small_answers) > 250
        for command, _ in batches[2]:
            assert isinstance(command, c.EnrolResident) and command.resident_id
            one = small.snapshot(Resident, command.resident_id)
            other = big.snapshot(Resident, command.resident_id)
            assert one is not None and other is not None
            assert ((one.available_won, one.held_won, one.owed_won)
                    == (other.available_won, other.held_won, other.owed_won))
        fund_id = uuid.uuid5(uuid.NAMESPACE_URL, "ledger:complex:CA-01")
        small_fund, big_fund = small.snapshot(Complex, fund_id), big.snapshot(Complex, fund_id)
        assert small_fund is not None and big_fund is not None
        assert small_fund.balance_won == big_fund.balance_won > 0
    finally:
        small.close()
        big.close()


def test_the_cache_keeps_wallets_and_funds_not_trades(world: World) -> None:
    """After a trade, the buyer's wallet and the complex's fund stay cached (commands touch
    them again); the trade does not (read again at most once, by a refund)."""
    world.policy()
    complex_id = world.complex()
    seller = world.resident(world.household(complex_id))
    buyer = world.resident(world.household(complex_id))
    world.trade(buyer, seller, 10_000, trade_id="T-cache-1")
    assert world.ledger.cached(buyer) and world.ledger.cached(complex_id)
    assert not world.ledger.cached(trade_aggregate_id("T-cache-1"))
    refund = world.run(c.RefundTrade("T-cache-1"), actor=PLATFORM, role="platform")
    assert refund["personal_clawback_won"] == 300
    assert not world.ledger.cached(trade_aggregate_id("T-cache-1"))


def test_the_cache_size_is_a_setting_refused_when_malformed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """LEDGER_AGGREGATE_CACHE_SIZE sets the cache; a value that is not a positive integer
    stops the ledger with a message naming the variable; unset, the size follows memory."""
    monkeypatch.setenv("LEDGER_AGGREGATE_CACHE_SIZE", "1234")
    assert aggregate_cache_size() == 1234
    monkeypatch.setenv("LEDGER_AGGREGATE_CACHE_SIZE", "lots")
    with pytest.raises(ValueError, match="LEDGER_AGGREGATE_CACHE_SIZE"):
        aggregate_cache_size()
    monkeypatch.delenv("LEDGER_AGGREGATE_CACHE_SIZE")
    assert limits.aggregate_cache_size_min <= aggregate_cache_size() <= (
        limits.aggregate_cache_size_max)
