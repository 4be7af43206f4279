"""Request records in a table of their own: the log holds domain facts only, and logs written
before (with `RequestRecord.Accepted` events) keep working."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from audit.chain import ChainFollower
from audit.verification import verify_ledger
from ledger import commands as c
from ledger.application import now
from ledger.complex import Complex, complex_id_for
from ledger.errors import DomainError
from ledger.request import RequestRecord, fingerprint, request_record_id
from world import OPERATOR, PLATFORM, World, cause


def test_the_log_holds_domain_facts_and_each_request_is_recorded_once(world: World) -> None:
    """Every accepted command leaves one request record, at the position its last event
    reached; the events table holds no request records; a refused command leaves none."""
    world.policy()
    complex_id = world.complex()
    seller = world.resident(world.household(complex_id))
    buyer = world.resident(world.household(complex_id))
    trade = world.trade(buyer, seller, 10_000)
    with pytest.raises(DomainError):
        world.run(c.RecordTrade("T-refused", "sharing", "x", seller, "resident", buyer,
                                10_000, 999_999), actor=PLATFORM, role="platform")
    with world.connect() as conn:
        topics = [row[0] for row in conn.execute("SELECT topic FROM ledger_events")]
        requests = conn.execute(
            "SELECT command, position, outcome FROM ledger_requests ORDER BY position"
        ).fetchall()
        head = conn.execute("SELECT max(notification_id) FROM ledger_events").fetchone()
    assert not [topic for topic in topics if "RequestRecord" in topic]
    assert [row[0] for row in requests] == [
        "set_accrual_policy", "register_complex", "register_household", "enrol_resident",
        "register_household", "enrol_resident", "record_trade"]
    assert requests[-1][1] == trade.position == (head[0] if head else None)
    assert requests[-1][2] == trade.result


def test_a_log_written_with_request_record_events_keeps_working(world: World,
                                                                 tmp_path: Path) -> None:
    """A request accepted by an older ledger (its record an event in the log) is replayed
    on retry, refused when reused with other content, and the log still verifies."""
    world.policy()
    old_cause = cause(OPERATOR, "operator", request_id="old-request-1")
    command = c.RegisterComplex("OLD-1", "Older complex", "Hwaseong")
    fund = Complex.register("OLD-1", "Older complex", "Hwaseong", old_cause)
    outcome = {"complex_id": str(complex_id_for("OLD-1"))}
    record = RequestRecord._create(
        RequestRecord.Accepted, id=request_record_id(OPERATOR, "old-request-1"),
        command=command.name, fingerprint=fingerprint(command.name, command.content()),
        outcome=outcome, **old_cause.fields(fund.id))
    recordings = world.ledger.events.put([*fund.collect_events(), *record.collect_events()])
    recorded_position = recordings[-1].notification.id

    again = world.ledger.execute(command, old_cause)
    assert again.replayed and again.result == outcome
    assert again.position == recorded_position
    with pytest.raises(DomainError) as reused:
        world.ledger.execute(c.RegisterComplex("OLD-2", "Other", "Hwaseong"), old_cause)
    assert reused.value.code == "request_id_reused"
    with pytest.raises(DomainError) as exists:
        world.run(command)
    assert exists.value.code == "complex_exists"

    # New commands beside the old record, then the auditors' whole check.
    household = world.household(complex_id_for("OLD-1"))
    world.resident(household)
    key_dir = tmp_path / "keys"
    ChainFollower(world.database_url, world.schema, key_dir=key_dir,
                  checkpoint_interval_events=5).catch_up()
    result = verify_ledger(world.database_url, world.schema, key_dir=key_dir)
    assert result.ok, result.lines()


def test_concurrent_duplicates_of_a_new_request_save_one_record(world: World) -> None:
    """Two ledgers (two writer processes) given the same request at once: one record,
    one set of effects, the same outcome for both callers."""
    other = type(world.ledger).connect(world.database_url, world.schema)
    try:
        request = cause(OPERATOR, "operator", request_id=f"dup-{uuid.uuid4().hex[:6]}",
                        occurred_at=now())
        command = c.RegisterComplex("DUP-1", "Duplicated", "Hwaseong")
        first = world.ledger.execute(command, request)
        second = other.execute(command, request)
        assert first.result == second.result and first.position == second.position
        assert second.replayed
    finally:
        other.close()
    with world.connect() as conn:
        rows = conn.execute("SELECT count(*) FROM ledger_requests WHERE request_id = %s",
                            (request.request_id,)).fetchone()
    assert rows == (1,)
