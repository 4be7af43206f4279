"""Balances at a past moment, monthly statements, one trade's accrual, checkpoints on disk."""

from __future__ import annotations

import csv
import io
import json
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from audit.chain import ChainFollower
from audit.follower import start_audit_follower
from audit.history import AsOf, balances_as_of, statement, trade_accrual
from cli.audit import main as audit_main
from ledger.codec import decode
from ledger.conservation import fold
from ledger.events import KST
from test_audit_verify import populate, workload
from world import World


def events_with_positions(world: World) -> list[tuple[int, Any]]:
    with world.connect() as conn:
        rows = conn.execute("SELECT notification_id, originator_id, originator_version, topic,"
                            " state FROM ledger_events ORDER BY notification_id").fetchall()
    return [(row[0], decode(*row[1:])) for row in rows]


def test_balances_as_of_position_equal_a_fold_up_to_it(world: World) -> None:
    """At random positions, every wallet and fund equals the double-entry fold of the events
    up to that position."""
    rng = random.Random(5)
    people = workload(world, rng, 150)
    events = events_with_positions(world)
    positions = sorted(rng.sample([position for position, _ in events], 8))
    complex_at = {event.originator_id: at for at, event in events
                  if type(event).__name__ == "Registered" and event.originator_id in
                  people.complexes}
    for position in positions:
        accounts = fold(event for at, event in events if at <= position).accounts
        for resident, _ in rng.sample(people.residents, 3):
            found = balances_as_of(world.database_url, world.schema, AsOf(position=position),
                                   resident=resident)
            wallet = found["wallet"]
            if wallet is None:
                assert f"wallet:{resident}" not in accounts
                continue
            assert wallet["available_won"] == accounts.get(f"wallet:{resident}", 0)
            assert wallet["held_won"] == accounts.get(f"held:{resident}", 0)
        for complex_id in people.complexes:
            found = balances_as_of(world.database_url, world.schema, AsOf(position=position),
                                   complex_id=complex_id)
            if found["fund"] is None:  # not yet registered at that position
                assert f"fund:{complex_id}" not in accounts
                assert all(at < complex_at[complex_id] for at, _ in events if at <= position)
                continue
            assert found["fund"]["balance_won"] == accounts.get(f"fund:{complex_id}", 0)
        platform = balances_as_of(world.database_url, world.schema, AsOf(position=position))
        by_kind: dict[str, int] = {}
        for name, amount in accounts.items():
            by_kind[name.split(":")[0]] = by_kind.get(name.split(":")[0], 0) + amount
        assert {k: v for k, v in platform["points_by_kind"].items() if v} == {
            k: v for k, v in by_kind.items() if v}
        assert platform["last_position"] <= position


def test_recorded_time_and_occurred_time_are_told_apart(world: World) -> None:
    """A sale made on 31 January but recorded later counts as of occurred 1 February, not as
    of a recorded time before it was recorded, and belongs to January's statement."""
    people = populate(world, random.Random(1))
    buyer, seller = people.residents[0][0], people.residents[1][0]
    before_recording = datetime.now(UTC)
    time.sleep(0.01)
    late = datetime(2026, 1, 31, 23, 30, tzinfo=KST)
    world.trade(buyer, seller, 100_000, occurred_at=late, trade_id="LATE-1")

    occurred = balances_as_of(world.database_url, world.schema,
                              AsOf.parse(None, "2026-02-01"), resident=buyer)
    recorded_then = balances_as_of(world.database_url, world.schema,
                                   AsOf.parse(before_recording.isoformat()), resident=buyer)
    occurred_before = balances_as_of(world.database_url, world.schema,
                                     AsOf.parse(None, "2026-01-31T23:00:00"), resident=buyer)

    assert occurred["wallet"]["available_won"] == 3_000
    assert recorded_then["wallet"]["available_won"] == 0
    assert occurred_before["wallet"] is None  # by occurred time, nothing had happened yet
    january = statement(world.database_url, world.schema, "2026-01", resident=buyer)
    assert january is not None
    (line,) = [line for line in january["lines"] if line["trade_id"] == "LATE-1"]
    assert line["recorded_after_month"] is True
    february = statement(world.database_url, world.schema, "2026-02", resident=buyer)
    assert february is not None and february["lines"] == []
    assert february["opening"]["available_won"] == 3_000


@pytest.mark.parametrize("seed_value", [3, 4])
def test_statement_opening_plus_lines_is_closing(world: World, seed_value: int) -> None:
    """For every wallet and fund and month, opening + lines = closing, and each month opens
    where the one before closed."""
    people = workload(world, random.Random(seed_value), 200)
    owners = [("resident", r) for r, _ in people.residents] + [
        ("complex", c) for c in people.complexes]
    for kind, owner in owners:
        closing: dict[str, int] | None = None
        for month in ("2025-12", "2026-01", "2026-02", "2026-03", "2026-04"):
            document = statement(world.database_url, world.schema, month,
                                 **{"resident" if kind == "resident" else "complex_id": owner})
            assert document is not None
            key = "available_won" if kind == "resident" else "balance_won"
            assert document["opening"][key] + sum(
                line["amount_won"] for line in document["lines"]) == document["closing"][key]
            assert document["opening"]["owed_won"] + sum(
                line["owed_delta_won"] for line in document["lines"]
            ) == document["closing"]["owed_won"]
            if closing is not None:
                assert document["opening"] == closing
            closing = document["closing"]
            for line in document["lines"]:
                assert line["explanation"] and line["actor_role"]
                if line["kind"] in ("points_accrued", "common_points_accrued"):
                    assert line["policy_version"] == 1 and line["rate_bps"] is not None


def test_statement_command_csv_and_json(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """The statement command writes CSV with opening and closing rows, or the JSON document."""
    people = workload(world, random.Random(9), 80)
    resident = people.residents[0][0]
    base = ["--database-url", world.database_url, "--schema", world.schema, "audit",
            "statement", "--resident", str(resident), "--month", "2026-02"]
    assert audit_main([*base, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["kind"] == "opening_balance" and rows[-1]["kind"] == "closing_balance"
    assert int(rows[0]["balance_won"]) + sum(int(r["amount_won"]) for r in rows[1:-1]) == int(
        rows[-1]["balance_won"])
    assert audit_main(base) == 0
    assert json.loads(capsys.readouterr().out)["month"] == "2026-02"
    assert audit_main([*base[:-1], "2026-13"]) == 2
    unknown = [*base[:6], "--resident", "00000000-0000-4000-8000-000000000999", "--month",
               "2026-02"]
    assert audit_main(unknown) == 3


def test_accrual_of_one_trade_is_recomputed(world: World,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`audit accrual` recomputes a trade's shares from its recorded policy version."""
    people = populate(world, random.Random(2))
    buyer, seller = people.residents[0][0], people.residents[1][0]
    world.trade(buyer, seller, 12_345, trade_id="ACC-1")
    world.policy([{"market": "sharing", "seller_kind": "resident", "personal_bps": 700,
                   "common_bps": 0}])  # a later version does not change an old trade

    document = trade_accrual(world.database_url, world.schema, "ACC-1")

    assert document is not None and document["ok"], document
    assert document["recomputed"] == {"policy_version": 1, "personal_bps": 300,
                                      "common_bps": 100, "accrual_base_won": 12_345,
                                      "personal_won": 370, "common_won": 123}
    assert [r["event"] for r in document["received"]] == ["Resident.PointsAccrued",
                                                          "Complex.CommonPointsAccrued"]
    arguments = ["--database-url", world.database_url, "--schema", world.schema, "audit",
                 "accrual", "--trade"]
    assert audit_main([*arguments, "ACC-1"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert audit_main([*arguments, "NO-SUCH"]) == 3


def test_checkpoints_export_and_follower_thread(world: World, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The follower thread chains new events as they come; export writes signed files that
    verify then holds the database to."""
    key_dir = tmp_path / "keys"
    stop = threading.Event()
    thread = start_audit_follower(world.database_url, world.schema, stop, key_dir=key_dir,
                                  poll_interval=0.05, checkpoint_interval_events=20)
    try:
        workload(world, random.Random(4), 60)
        head = world.ledger.position()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with world.connect() as conn:
                row = conn.execute("SELECT max(position) FROM audit_chain").fetchone()
            if row and row[0] == head:
                break
            time.sleep(0.05)
        assert row is not None and row[0] == head
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    out = tmp_path / "exported"
    base = ["--database-url", world.database_url, "--schema", world.schema, "--quiet", "audit"]
    assert audit_main([*base, "chain", "--key-dir", str(key_dir)]) == 0
    assert audit_main([*base, "checkpoints", "export", str(out), "--key-dir",
                       str(key_dir)]) == 0
    files = sorted(out.glob("checkpoint-*.json"))
    assert len(files) >= 3 and (out / "public-key.pem").exists()
    capsys.readouterr()
    assert audit_main([*base, "verify", "--json", "--key-dir", str(key_dir), "--checkpoints",
                       str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["checkpoints_verified"] >= 2 * len(files)
    assert "no projection tables" in " ".join(report["notes"])


def test_follower_is_chained_with_the_log(world: World, tmp_path: Path) -> None:
    """ChainFollower and verify agree on a workload's log (a smoke test of the wiring)."""
    workload(world, random.Random(6), 30)
    assert ChainFollower(world.database_url, world.schema, key_dir=tmp_path).catch_up() > 0
    assert isinstance(UUID(int=1), UUID) and timedelta(0) == timedelta(0)
