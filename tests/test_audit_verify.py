"""`ledger audit verify`: replay equals live, and what it catches when something is wrong.

Workloads are seeded random commands through the ledger (some of them rejected);
projections are kept by a real `ProjectionRunner`; tampering is done as a
database superuser who silences the immutability trigger.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from audit.chain import ChainFollower
from audit.verification import last_verification, verify_ledger
from cli.audit import main as audit_main
from ledger import commands as c
from ledger.conservation import fold
from ledger.errors import DomainError
from ledger.resident import Resident
from projections.runner import ProjectionRunner, fold_all, read_all
from world import BILLING, MANAGER, PLATFORM, World

START = datetime(2026, 1, 1, tzinfo=UTC)


class Population:
    """Who exists after `populate`: complexes, households, residents, merchants."""

    def __init__(self) -> None:
        self.complexes: list[uuid.UUID] = []
        self.households: list[tuple[uuid.UUID, uuid.UUID]] = []  # (household, complex)
        self.residents: list[tuple[uuid.UUID, uuid.UUID]] = []  # (resident, household)
        self.merchants: list[tuple[uuid.UUID, str]] = []
        self.trades: list[str] = []
        self.invoices: list[tuple[uuid.UUID, str]] = []
        self.payments: list[str] = []


def populate(world: World, rng: random.Random) -> Population:
    people = Population()
    world.policy()
    for number in range(2):
        people.complexes.append(world.complex(f"AU-{number}"))
    for complex_id in people.complexes:
        for _ in range(3):
            household = world.household(complex_id)
            people.households.append((household, complex_id))
            for _ in range(rng.randrange(1, 3)):
                people.residents.append((world.resident(household), household))
    for kind in ("small_firm", "local_food"):
        people.merchants.append((world.merchant(kind), kind))
    return people


def workload(world: World, rng: random.Random, steps: int,
             people: Population | None = None) -> Population:
    """Seeded random commands: trades with and without points, refunds, rent, spends, payouts."""
    people = people or populate(world, rng)
    for step in range(steps):
        at = START + timedelta(hours=rng.randrange(24 * 90))
        choice = rng.random()
        buyer, _ = rng.choice(people.residents)
        try:
            if choice < 0.45:
                trade_id = f"T{step}-{uuid.uuid4().hex[:6]}"
                if rng.random() < 0.4:
                    seller, kind = rng.choice(people.merchants)
                else:
                    seller, kind = rng.choice(people.residents)[0], "resident"
                used = rng.choice([0, 0, rng.randrange(1, 2_000)])
                world.trade(buyer, seller, rng.randrange(1_000, 150_000), used, seller_kind=kind,
                            trade_id=trade_id, category=rng.choice(["food", "childcare"]),
                            occurred_at=at)
                people.trades.append(trade_id)
            elif choice < 0.52 and people.trades:
                world.run(c.RefundTrade(rng.choice(people.trades)), actor=PLATFORM,
                          role="platform", occurred_at=at)
            elif choice < 0.6:
                household, _ = rng.choice(people.households)
                invoice = world.invoice(household, rng.randrange(50_000, 300_000), "2026-02")
                people.invoices.append((household, invoice))
            elif choice < 0.72 and people.invoices:
                household, invoice = rng.choice(people.invoices)
                payer = [r for r, h in people.residents if h == household]
                payment = world.pay_rent(payer[0], household, invoice, rng.randrange(1, 1_500),
                                         billing_period="2026-02")
                people.payments.append(payment)
            elif choice < 0.8 and people.payments:
                command = rng.choice([c.SettleRentPayment, c.ReleaseRentPayment])
                world.run(command(rng.choice(people.payments)), actor=BILLING, role="billing")
            elif choice < 0.9:
                world.run(c.SpendFund(rng.choice(people.complexes), f"S{step}",
                                      rng.choice(["facility", "event", "upkeep"]),
                                      rng.randrange(1, 800), f"council-{step % 4}"),
                          actor=MANAGER, role="manager", occurred_at=at)
            elif choice < 0.97:
                world.run(c.PayOutMerchant(rng.choice(people.merchants)[0], f"PO{step}"))
            else:
                world.run(c.MoveOut(rng.choice(people.residents)[0]))
        except DomainError:
            pass
    return people


def project(world: World) -> None:
    with ProjectionRunner(world.database_url, world.schema, start=False) as runner:
        runner.catch_up()


def chain(world: World, key_dir: Path) -> None:
    ChainFollower(world.database_url, world.schema, key_dir=key_dir,
                  checkpoint_interval_events=50).catch_up()


def superuser(world: World) -> psycopg.Connection[Any]:
    conn = world.connect()
    conn.execute("SET session_replication_role = replica")
    return conn


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "audit-keys"


@pytest.mark.parametrize("seed_value", [1, 2, 3])
def test_replay_equals_live_after_random_workload(world: World, key_dir: Path,
                                                  seed_value: int) -> None:
    """After a seeded random workload verify finds nothing; its scratch state is the live one."""
    rng = random.Random(seed_value)
    people = workload(world, rng, 150)
    project(world)
    workload(world, rng, 60, people)  # projections now lag: compared up to their position
    project(world)
    chain(world, key_dir)

    result = verify_ledger(world.database_url, world.schema, key_dir=key_dir)

    assert result.ok, result.lines()
    assert result.counts["trades_recomputed"] > 20
    assert result.counts["rows_compared"] > 100
    with world.connect() as conn:
        assert read_all(conn) == fold_all(world.database_url, world.schema)
    balances = fold(world.all_events())
    assert balances.problems() == []
    expected = {kind: amount for kind, amount in balances.by_kind().items() if amount}
    assert {k: v for k, v in result.points_by_kind.items() if v} == expected
    for resident, _ in people.residents:
        aggregate = world.ledger.snapshot(Resident, resident)
        assert aggregate is not None


def test_verify_command_exit_zero_then_names_altered_projection_row(
        world: World, key_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command exits 0 on a clean ledger and 1 naming the position of an altered row."""
    workload(world, random.Random(7), 120)
    project(world)
    chain(world, key_dir)
    arguments = ["--database-url", world.database_url, "--schema", world.schema, "--quiet",
                 "audit", "verify", "--json", "--key-dir", str(key_dir)]
    assert audit_main(arguments) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True

    with world.connect() as conn:
        row = conn.execute("SELECT resident_id, position FROM p_wallet_balances"
                           " WHERE available_won > 0 ORDER BY position LIMIT 1").fetchone()
        assert row is not None
        conn.execute("UPDATE p_wallet_balances SET available_won = available_won + 1"
                     " WHERE resident_id = %s", (row[0],))
        conn.commit()

    assert audit_main(arguments) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["first_bad_position"] == row[1]
    assert report["problem"] == "projection_mismatch"
    assert "available_won" in report["detail"] and str(row[0]) in report["detail"]
    with world.connect() as conn:
        stored = last_verification(conn)
    assert stored is not None and stored["ok"] is False
    assert stored["first_bad_position"] == row[1]


def test_altered_history_line_is_located(world: World, key_dir: Path) -> None:
    """An edited wallet history line is found at its own position."""
    workload(world, random.Random(8), 80)
    project(world)
    chain(world, key_dir)
    with world.connect() as conn:
        (position,) = conn.execute("SELECT position FROM p_wallet_entries ORDER BY position"
                                   " OFFSET 5 LIMIT 1").fetchone() or (None,)
        conn.execute("UPDATE p_wallet_entries SET description = 'edited' WHERE position = %s",
                     (position,))
        conn.commit()

    result = verify_ledger(world.database_url, world.schema, key_dir=key_dir)

    assert (result.ok, result.first_bad_position, result.problem) == (
        False, position, "projection_mismatch")


def insert_fake_trade(conn: Any, world: World, buyer: Any, seller: Any) -> None:
    """Write the fake trade's events straight into the log, as a superuser, and commit."""
    for originator_id, version, topic, state in _fake_trade_rows(world, buyer, seller):
        conn.execute("INSERT INTO ledger_events (originator_id, originator_version, topic,"
                     " state) VALUES (%s, %s, %s, %s)",
                     (originator_id, version, topic, json.dumps(state).encode()))
    conn.commit()


def _fake_trade_rows(world: World, buyer: uuid.UUID, seller: uuid.UUID) -> list[tuple[Any, ...]]:
    """A trade written around the rules: 10 % personal accrual where the policy says 3 %,
    and points spent that the buyer does not have and the seller never receives."""
    trade_id = "FAKE-1"
    trade_aggregate = uuid.uuid5(uuid.NAMESPACE_URL, f"ledger:trade:{trade_id}")
    with world.connect() as conn:
        complex_row = conn.execute("SELECT state FROM ledger_events WHERE originator_id = %s"
                                   " AND originator_version = 1", (buyer,)).fetchone()
        version_row = conn.execute("SELECT max(originator_version) FROM ledger_events"
                                   " WHERE originator_id = %s", (buyer,)).fetchone()
    assert complex_row is not None and version_row is not None
    complex_hex = json.loads(complex_row[0])["complex_id"]["_data_"]
    household_hex = json.loads(complex_row[0])["household_id"]["_data_"]

    def uuid_field(value: uuid.UUID | str) -> dict[str, str]:
        return {"_type_": "uuid_hex", "_data_": value if isinstance(value, str) else value.hex}

    now_field = {"_type_": "datetime_iso", "_data_": datetime.now(UTC).isoformat()}
    cause = {"timestamp": now_field, "actor_id": uuid_field(PLATFORM), "actor_role": "platform",
             "on_behalf_of": None, "request_id": "fake-1", "complex_id": uuid_field(complex_hex),
             "occurred_at": now_field}
    recorded = {**cause, "originator_topic": "ledger.trade:Trade", "trade_id": trade_id,
                "market": "sharing", "category": "childcare", "seller_id": uuid_field(seller),
                "seller_kind": "resident", "buyer_id": uuid_field(buyer),
                "buyer_household_id": uuid_field(household_hex), "amount_won": 100_000,
                "points_used_won": 0, "policy_version": 1, "personal_bps": 1_000,
                "common_bps": 100, "accrual_base_won": 100_000, "personal_won": 10_000,
                "common_won": 1_000}
    accrued = {**cause, "trade_id": trade_id, "market": "sharing", "seller_kind": "resident",
               "policy_version": 1, "personal_bps": 1_000, "accrual_base_won": 100_000,
               "amount_won": 10_000, "recovered_won": 0}
    spent = {**cause, "trade_id": trade_id, "seller_id": uuid_field(seller),
             "amount_won": 50_000_000}
    version = version_row[0]
    return [
        (trade_aggregate, 1, "ledger.trade:Trade.Recorded", recorded),
        (buyer, version + 1, "ledger.resident:Resident.PointsAccrued", accrued),
        (buyer, version + 2, "ledger.resident:Resident.PointsSpent", spent),
    ]


def test_fake_trade_chained_by_the_follower_is_caught(world: World, key_dir: Path) -> None:
    """A trade inserted around the rules keeps the chain whole, yet verify names its position,
    the wrong accrual and the conservation break."""
    rng = random.Random(11)
    people = workload(world, rng, 60)
    project(world)
    chain(world, key_dir)
    buyer, _ = people.residents[0]
    seller, _ = people.residents[1]
    with superuser(world) as conn:
        insert_fake_trade(conn, world, buyer, seller)
        (fake_position,) = conn.execute(
            "SELECT min(notification_id) FROM ledger_events WHERE topic = %s"
            " AND state::text LIKE %s", ("ledger.trade:Trade.Recorded", "%")).fetchone() or (0,)
        fake_position = conn.execute(
            "SELECT notification_id FROM ledger_events WHERE originator_id = %s",
            (uuid.uuid5(uuid.NAMESPACE_URL, "ledger:trade:FAKE-1"),)).fetchone()[0]
    chain(world, key_dir)  # the follower chains what it finds: the chain stays consistent
    project(world)

    result = verify_ledger(world.database_url, world.schema, key_dir=key_dir)

    assert result.counts["unchained_tail"] == 0
    codes = {item["code"] for item in result.findings}
    assert not result.ok
    assert result.first_bad_position == fake_position
    assert result.problem == "accrual_mismatch"
    assert "personal_bps recorded 1000, recomputed 300" in result.detail
    assert {"negative_balance", "trade_clearing_not_empty"} <= codes
    assert not {"event_modified", "event_inserted", "chain_row_modified"} & codes
