"""Public event schemas: generated from the code, valid, compatible, and met by real messages."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from psycopg import sql

from eventlog.log import StoredRow
from feed.public_events import (
    BY_EVENT_TYPE,
    INTERNAL_EVENT_CLASSES,
    PUBLIC_TYPES,
    REGISTRY,
    RETIRED_EVENT_TYPES,
    events_topic,
    rent_topic,
    route,
    to_public,
)
from feed.relay import event_id
from feed.schema_tool import check, compatibility, generate, main, schemas_dir_default
from ledger import commands as c
from ledger.application import Ledger, now
from ledger.complex import Complex
from ledger.database import ConnectionSettings
from ledger.events import Cause, Caused
from ledger.groupbuy import GroupBuy, GroupBuyOrderLocator
from ledger.household import Household, RentPaymentLocator
from ledger.merchant import Merchant
from ledger.policy import AccrualPolicy
from ledger.proposal import Proposal
from ledger.request import RequestRecord
from ledger.resident import Resident
from ledger.trade import Trade
from world import GUARDS_OFF

AGGREGATES = (Complex, Household, RentPaymentLocator, Resident, Merchant, Trade, AccrualPolicy,
              RequestRecord, Proposal, GroupBuy, GroupBuyOrderLocator)

# jsonschema checks `date-time` only with an optional package; this checker also
# insists on an offset, as the payload contract does.
format_checker = FormatChecker()


@format_checker.checks("date-time", raises=ValueError)
def is_date_time_with_offset(value: object) -> bool:
    return not isinstance(value, str) or datetime.fromisoformat(value).utcoffset() is not None


def schema_files() -> list[Path]:
    return sorted(path for path in schemas_dir_default.glob("*.json") if path.name != "index.json")


def load(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return result


def defined_event_classes(aggregate: type[Any]) -> list[type[Any]]:
    """Event classes the ledger defines in an aggregate: those with their own `apply`.

    The library adds `Event` and `Created` bases to every aggregate; they are never recorded.
    """
    found = []
    for value in vars(aggregate).values():
        if not (isinstance(value, type) and issubclass(value, Caused)):
            continue
        same = [cls for cls in value.__mro__ if cls.__qualname__ == value.__qualname__]
        if any("apply" in vars(cls) for cls in same):
            found.append(value)
    return found


# Schemas and the registry -----------------------------------------------------------------


def test_checked_in_schemas_match_the_code() -> None:
    """The schemas in schemas/ are exactly what the generator makes from the event classes."""
    assert check(schemas_dir_default) == []


def test_every_schema_is_valid_draft_2020_12() -> None:
    """Every checked-in schema is itself a valid draft 2020-12 JSON Schema."""
    files = schema_files()
    assert len(files) == len(PUBLIC_TYPES) + len(RETIRED_EVENT_TYPES)
    for path in files:
        Draft202012Validator.check_schema(load(path))


def test_every_schema_is_closed_and_requires_every_field() -> None:
    """Each schema forbids unknown fields, requires all of its fields and names its type."""
    for path in schema_files():
        schema = load(path)
        event_type = path.name.removesuffix(".json")
        assert schema["additionalProperties"] is False
        assert schema["required"] == list(schema["properties"])
        assert schema["$id"] == f"urn:naechingu:ledger:{event_type}"
        assert schema["properties"]["event_type"]["const"] == event_type


def test_index_lists_every_public_type_with_its_version() -> None:
    """index.json names each public type once, with its schema version and file."""
    index = load(schemas_dir_default / "index.json")
    listed = {entry["event_type"]: entry for entry in index["event_types"]
              if entry["status"] == "current"}
    assert set(listed) == set(BY_EVENT_TYPE)
    retired = [entry for entry in index["event_types"] if entry["status"] == "retired"]
    assert {entry["event_type"] for entry in retired} == set(RETIRED_EVENT_TYPES)
    for entry in retired:
        assert (schemas_dir_default / entry["schema"]).exists()
    for event_type, entry in listed.items():
        assert entry["schema_version"] == BY_EVENT_TYPE[event_type].version
        assert (schemas_dir_default / entry["schema"]).exists()


def test_every_domain_event_class_is_public_or_internal() -> None:
    """A new event class cannot slip past the registry: each is public or listed as internal."""
    for aggregate in AGGREGATES:
        for event_class in defined_event_classes(aggregate):
            assert (event_class in REGISTRY) != (event_class in INTERNAL_EVENT_CLASSES), (
                event_class.__qualname__)
    assert RequestRecord.Accepted not in REGISTRY


def test_public_names_are_versioned() -> None:
    """Every public name reads `<area>.<snake_case_event>.v<version>`."""
    for public in PUBLIC_TYPES:
        assert re.fullmatch(r"[a-z]+\.[a-z_]+\.v[1-9][0-9]*", public.event_type)
        assert public.event_type.endswith(f".v{public.version}")


def generation(directory: Path) -> None:
    """The code's schemas in `directory`, with the retired ones kept as checked in."""
    directory.mkdir(parents=True, exist_ok=True)
    for event_type in RETIRED_EVENT_TYPES:
        shutil.copy(schemas_dir_default / f"{event_type}.json", directory)
    generate(directory)


def test_check_reports_an_edited_schema(tmp_path: Path) -> None:
    """The drift check names a schema that no longer matches the code, and a stray file."""
    generation(tmp_path)
    path = tmp_path / "rent.payment_held.v1.json"
    schema = load(path)
    del schema["properties"]["deadline_at"]
    path.write_text(json.dumps(schema), encoding="utf-8")
    (tmp_path / "rent.payment_held.v0.json").write_text("{}", encoding="utf-8")
    assert check(tmp_path) == ["rent.payment_held.v1.json: differs from the code",
                               "rent.payment_held.v0.json: not made by the code"]


def test_check_command_exits_non_zero_on_drift(tmp_path: Path) -> None:
    """`python -m feed.schema_tool check` fails when a schema is missing."""
    generation(tmp_path)
    (tmp_path / "fund.spent.v2.json").unlink()
    assert main(["check", "--dir", str(tmp_path)]) == 1
    generation(tmp_path)
    assert main(["check", "--dir", str(tmp_path)]) == 0


# Compatibility ----------------------------------------------------------------------------


@pytest.fixture
def old_and_new(tmp_path: Path) -> tuple[Path, Path]:
    """Two copies of the current generation: `old` as released, `new` to be changed."""
    old, new = tmp_path / "old", tmp_path / "new"
    generation(old)
    shutil.copytree(old, new)
    return old, new


def edit(directory: Path, event_type: str, change: Any) -> None:
    path = directory / f"{event_type}.json"
    schema = load(path)
    change(schema)
    path.write_text(json.dumps(schema, indent=2), encoding="utf-8")


def test_unchanged_schemas_are_compatible(old_and_new: tuple[Path, Path]) -> None:
    """A generation compared with itself has no breaking change."""
    old, new = old_and_new
    assert compatibility(old, new) == []


def test_removing_a_field_is_breaking(old_and_new: tuple[Path, Path]) -> None:
    """Dropping a field from a published type is reported as breaking."""
    old, new = old_and_new

    def drop_deadline(schema: dict[str, Any]) -> None:
        del schema["properties"]["deadline_at"]
        schema["required"].remove("deadline_at")

    edit(new, "rent.payment_held.v1", drop_deadline)
    assert compatibility(old, new) == ["rent.payment_held.v1: field 'deadline_at' removed"]


def test_changing_a_field_type_is_breaking(old_and_new: tuple[Path, Path]) -> None:
    """Retyping a field of a published type is reported as breaking."""
    old, new = old_and_new

    def amount_as_string(schema: dict[str, Any]) -> None:
        schema["properties"]["amount_won"] = {"type": "string"}

    edit(new, "rent.payment_settled.v1", amount_as_string)
    assert compatibility(old, new) == ["rent.payment_settled.v1: field 'amount_won' changed type"]


def test_making_a_field_nullable_is_breaking(old_and_new: tuple[Path, Path]) -> None:
    """Letting a field become null changes its type, so it is breaking too."""
    old, new = old_and_new

    def nullable_resident(schema: dict[str, Any]) -> None:
        schema["properties"]["resident_id"]["type"] = ["string", "null"]

    edit(new, "rent.payment_held.v1", nullable_resident)
    assert compatibility(old, new) == ["rent.payment_held.v1: field 'resident_id' changed type"]


def test_adding_a_required_field_is_breaking(old_and_new: tuple[Path, Path]) -> None:
    """A new required field on a published type is reported as breaking."""
    old, new = old_and_new

    def add_reason(schema: dict[str, Any]) -> None:
        schema["properties"]["reason"] = {"type": "string"}
        schema["required"].append("reason")

    edit(new, "rent.payment_settled.v1", add_reason)
    assert compatibility(old, new) == ["rent.payment_settled.v1: required field 'reason' added"]


def test_removing_a_published_type_is_breaking(old_and_new: tuple[Path, Path]) -> None:
    """A published schema must stay: deleting it is reported as breaking."""
    old, new = old_and_new
    (new / "fund.spent.v1.json").unlink()
    assert compatibility(old, new) == [
        "fund.spent.v1: schema removed (keep it, retire the name instead)"]


def test_adding_an_event_type_is_not_breaking(old_and_new: tuple[Path, Path]) -> None:
    """A new event type, such as a .v2 beside its .v1, is not a breaking change."""
    old, new = old_and_new
    schema = load(new / "rent.payment_held.v1.json")
    schema["properties"]["reason"] = {"type": "string"}
    schema["required"].append("reason")
    (new / "rent.payment_held.v2.json").write_text(json.dumps(schema), encoding="utf-8")
    assert compatibility(old, new) == []


def test_description_changes_are_not_breaking(old_and_new: tuple[Path, Path]) -> None:
    """Rewording a description constrains nothing, so it breaks nobody."""
    old, new = old_and_new

    def reword(schema: dict[str, Any]) -> None:
        schema["description"] = "Reworded."
        schema["properties"]["actor_id"]["description"] = "Reworded."

    edit(new, "fund.spent.v1", reword)
    assert compatibility(old, new) == []


def test_compat_command_exits_non_zero_on_a_breaking_change(
        old_and_new: tuple[Path, Path]) -> None:
    """`python -m feed.schema_tool compat OLD NEW` fails on a breaking change only."""
    old, new = old_and_new
    assert main(["compat", str(old), str(new)]) == 0
    edit(new, "fund.spent.v2", lambda schema: schema["properties"].pop("purpose"))
    assert main(["compat", str(old), str(new)]) == 1


# Messages from a realistic workload -------------------------------------------------------


def drive_workload(ledger: Ledger) -> dict[str, uuid.UUID]:
    """Every kind of event: trades and refunds, invoices, rent holds settled, released and
    expired, a fund spend, a merchant payout and a move-out."""
    operator, coordinator = uuid.uuid4(), uuid.uuid4()

    def run(command: c.Command, role: str = "operator", actor: uuid.UUID = operator,
            on_behalf_of: uuid.UUID | None = None) -> Any:
        cause = Cause(actor, role, uuid.uuid4().hex, now(), on_behalf_of=on_behalf_of)
        return ledger.execute(command, cause)

    complex_id = uuid.UUID(run(c.RegisterComplex("HS-01", "화성 1단지", "Hwaseong"))["complex_id"])
    household_id = uuid.UUID(run(c.RegisterHousehold(complex_id, "101-1203"))["household_id"])
    buyer = uuid.UUID(run(c.EnrolResident(household_id, "consent-1"),
                          "coordinator", coordinator)["resident_id"])
    seller = uuid.UUID(run(c.EnrolResident(household_id, "consent-2"),
                           "coordinator", coordinator)["resident_id"])
    run(c.SetAccrualPolicy.of([
        {"market": "sharing", "seller_kind": "resident", "personal_bps": 300, "common_bps": 100},
        {"market": "shopping", "seller_kind": "small_firm", "personal_bps": 200,
         "common_bps": 100},
    ], guards=GUARDS_OFF))  # buyer and seller share a household
    merchant = uuid.UUID(run(c.RegisterMerchant("small_firm", "Hwaseong Filters"))["merchant_id"])

    run(c.RecordTrade("T1", "sharing", "childcare", seller, "resident", buyer, 12345, 0),
        "platform")
    run(c.RecordTrade("T2", "sharing", "childcare", seller, "resident", buyer, 1000, 300),
        "platform")
    run(c.RefundTrade("T2"), "platform")
    run(c.RecordTrade("T3", "shopping", "filters", merchant, "small_firm", buyer, 5000, 100),
        "platform")
    run(c.RefundTrade("T3"), "platform")
    run(c.RecordTrade("T4", "shopping", "filters", merchant, "small_firm", buyer, 5000, 200),
        "platform")
    run(c.PayOutMerchant(merchant, "PO-1"))

    run(c.IssueRentInvoice(household_id, "INV-1", "2026-11", 500000, now() + timedelta(days=10)),
        "billing")
    run(c.PayRent("P1", household_id, "INV-1", "2026-11", 100, buyer), "resident", buyer)
    run(c.SettleRentPayment("P1"), "billing")
    run(c.PayRent("P2", household_id, "INV-1", "2026-11", 50, buyer),
        "coordinator", coordinator, buyer)
    run(c.ReleaseRentPayment("P2"), "billing")
    run(c.PayRent("P3", household_id, "INV-1", "2026-11", 50, buyer, hold_seconds=60),
        "resident", buyer)
    run(c.ExpireRentPayment("P3", now() + timedelta(minutes=2)), "platform")

    run(c.SpendFund(complex_id, "S1", "facility", 100, "DEC-1"), "manager")
    run(c.SetFundAllowance(complex_id, 50_000))
    run(c.OpenProposal(complex_id, "V1", "facility", "Benches", 20, now() + timedelta(hours=2)),
        "manager")
    run(c.CastBallot("V1", buyer, "yes"), "resident", buyer)
    run(c.CloseProposal("V1", now() + timedelta(hours=3)))
    run(c.SpendFund(complex_id, "S2", "facility", 20, proposal_id="V1"), "manager")

    # Group buys: one completes (an order cancelled before), one is cancelled.
    for group_buy_id, quantity_min in (("GB-1", 1), ("GB-2", 9)):
        run(c.OpenGroupBuy(group_buy_id, merchant, "filters", 3_000, quantity_min, 10,
                           now() + timedelta(days=1), (complex_id,)), "merchant", merchant)
    run(c.PlaceGroupBuyOrder("GB-1", "O-1", buyer, 1, 10), "resident", buyer)
    run(c.PlaceGroupBuyOrder("GB-1", "O-2", buyer, 1, 0), "coordinator", coordinator, buyer)
    run(c.CancelGroupBuyOrder("O-2"), "resident", buyer)
    run(c.CloseGroupBuy("GB-1"), "merchant", merchant)
    run(c.PlaceGroupBuyOrder("GB-2", "O-3", seller, 1, 0), "resident", seller)
    ledger.execute(c.CloseGroupBuy("GB-2"),
                   Cause(operator, "operator", "close-GB-2", now() + timedelta(days=2)))

    # Points lifecycle: a shopping trade's pending shares released after its window, and a
    # lot from long ago expired into the fund.
    long_ago = now() - timedelta(days=800)
    for trade_id, market, seller_id, kind, at in (
            ("T5", "shopping", merchant, "small_firm", now() - timedelta(days=8)),
            ("T6", "sharing", seller, "resident", long_ago)):
        ledger.execute(c.RecordTrade(trade_id, market, "filters", seller_id, kind, buyer, 10_000,
                                     0), Cause(operator, "platform", f"rec-{trade_id}", at))
    run(c.ReleasePendingPoints("T5", now()))
    run(c.ExpirePoints(buyer, now()))

    run(c.MoveOut(seller), "coordinator", coordinator, seller)
    return {"complex_id": complex_id, "household_id": household_id}


Row = tuple[int, uuid.UUID, int, str, bytes]


@pytest.fixture
def stored_rows(database_url: str, schema: str) -> tuple[list[Row], dict[str, Any]]:
    """All rows of `{schema}.ledger_events` after the workload, in position order."""
    ledger = Ledger.connect(database_url, schema)
    try:
        ids = drive_workload(ledger)
    finally:
        ledger.close()
    conninfo = ConnectionSettings.from_url(database_url).conninfo()
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state"
            " FROM {}.ledger_events ORDER BY notification_id").format(sql.Identifier(schema)),
        ).fetchall()
    return [(int(p), o, int(v), t, bytes(s)) for p, o, v, t, s in rows], ids


def test_workload_messages_validate_against_their_schemas(
        stored_rows: tuple[list[Row], dict[str, Any]]) -> None:
    """Every public message of a realistic workload is valid under its checked-in schema."""
    rows, _ = stored_rows
    validators = {path.name.removesuffix(".json"): Draft202012Validator(
        load(path), format_checker=format_checker) for path in schema_files()}
    seen = set()
    for row in rows:
        message = to_public(*row)
        if message is None:
            continue
        validators[message.event_type].validate(message.payload)
        assert message.payload == json.loads(message.value())
        seen.add(message.event_type)
    assert seen == set(BY_EVENT_TYPE)


def test_every_public_message_goes_to_the_event_stream_by_aggregate(
        stored_rows: tuple[list[Row], dict[str, Any]]) -> None:
    """Each public message goes to ledger.events keyed by its aggregate id, with its stable id."""
    rows, _ = stored_rows
    for position, originator_id, version, topic, state in rows:
        message = to_public(position, originator_id, version, topic, state)
        if message is None:
            continue
        assert message.routes[0] == (events_topic, str(originator_id))
        assert message.payload["event_id"] == str(event_id(originator_id, version))
        assert message.payload["position"] == position
        assert message.payload["aggregate_version"] == version


def test_rent_messages_route_to_the_rent_topic_by_household(
        stored_rows: tuple[list[Row], dict[str, Any]]) -> None:
    """Invoice and rent payment messages also go to ledger.rent, keyed by household id."""
    rows, ids = stored_rows
    household = str(ids["household_id"])
    rent_types = {"rent.invoice_issued.v1", "rent.payment_held.v1", "rent.payment_settled.v1",
                  "rent.payment_released.v1"}
    rent_seen = []
    for row in rows:
        message = to_public(*row)
        if message is None:
            continue
        to_rent = [key for kafka_topic, key in message.routes if kafka_topic == rent_topic]
        if message.event_type in rent_types:
            assert to_rent == [household]
            rent_seen.append(message.event_type)
        else:
            assert to_rent == []
    assert sorted(rent_seen) == sorted([
        "rent.invoice_issued.v1", "rent.payment_held.v1", "rent.payment_settled.v1",
        "rent.payment_held.v1", "rent.payment_released.v1", "rent.payment_held.v1",
        "rent.payment_released.v1"])


def test_internal_events_are_not_published(
        stored_rows: tuple[list[Row], dict[str, Any]]) -> None:
    """Request records and rent payment locators make no public message."""
    rows, _ = stored_rows
    internal = [row for row in rows
                if row[3].endswith((":RequestRecord.Accepted", ":RentPaymentLocator.Registered"))]
    assert internal
    for row in internal:
        assert to_public(*row) is None
        assert route(StoredRow(*row)) == []


def test_route_gives_the_relay_one_record_per_kafka_route(
        stored_rows: tuple[list[Row], dict[str, Any]]) -> None:
    """The relay's route turns an event into records with the payload as compact JSON."""
    rows, _ = stored_rows
    for row in rows:
        message = to_public(*row)
        outgoing = route(StoredRow(*row))
        if message is None:
            continue
        assert [(record.topic, record.key) for record in outgoing] == list(message.routes)
        for record in outgoing:
            assert record.value == json.dumps(
                message.payload, separators=(",", ":"), ensure_ascii=False).encode()
            assert record.event_type == message.event_type
            assert record.schema_version == message.schema_version
            assert record.headers == []
