"""The ledger's public events: versioned names, flat JSON payloads and Kafka routes.

Domain event classes are an implementation detail of the write side; what other
systems (the rent-billing system above all) consume is the public event made
from them here. Each public event has a versioned name, `<area>.<event>.v<N>`,
kept in the registry below, and a JSON Schema generated from the event class
(see feed.schema_tool) and checked in under `schemas/`.

A public name never changes meaning. A change a consumer could notice (a field
removed, added or retyped) is a new version: the registry entry moves to `.v2`
and the `.v1` name goes into `RETIRED_EVENT_TYPES`, so its schema stays checked
in for consumers replaying older messages.

The payload is one flat JSON object: the envelope (ids, positions, times and the
cause of the event), then the event's own fields. UUIDs are strings, datetimes
ISO 8601 with their offset, points integer won.
"""

from __future__ import annotations

import inspect
import json
import types
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Union, get_args, get_origin, get_type_hints
from uuid import UUID

import orjson
from eventsourcing.utils import get_topic

from eventlog.log import StoredRow, to_domain_event
from feed.messages import OutgoingMessage, event_id
from ledger.complex import Complex
from ledger.events import Caused
from ledger.groupbuy import GroupBuy, GroupBuyOrderLocator
from ledger.guards import TradePair
from ledger.household import Household, RentPaymentLocator
from ledger.merchant import Merchant
from ledger.policy import AccrualPolicy
from ledger.proposal import Proposal
from ledger.request import RequestRecord
from ledger.resident import Resident
from ledger.trade import Trade

events_topic = "ledger.events"
"""Every public event, keyed by aggregate id: one ordered stream per aggregate."""
rent_topic = "ledger.rent"
"""Rent events for the billing system, keyed by household id."""
rent_area = "rent"

schema_dialect = "https://json-schema.org/draft/2020-12/schema"
schema_id_prefix = "urn:naechingu:ledger:"


@dataclass(frozen=True)
class PublicType:
    """One public event type: the domain event class it is made from, and its name."""

    event_class: type[Any]
    area: str
    name: str
    version: int

    @property
    def event_type(self) -> str:
        return f"{self.area}.{self.name}.v{self.version}"

    @property
    def class_name(self) -> str:
        """'Household.RentPaymentHeld'."""
        return str(self.event_class.__qualname__)

    @property
    def topics(self) -> tuple[str, ...]:
        """The Kafka topics this type is published to."""
        return (events_topic, rent_topic) if self.area == rent_area else (events_topic,)


# The registry. Names are chosen for consumers and written out, never derived from
# class names: renaming a class must not rename a public event.
PUBLIC_TYPES: tuple[PublicType, ...] = (
    PublicType(Complex.Registered, "fund", "complex_registered", 1),
    PublicType(Complex.CommonPointsAccrued, "fund", "common_points_accrued", 2),
    PublicType(Complex.CommonPointsClawedBack, "fund", "common_points_clawed_back", 1),
    PublicType(Complex.FundSpent, "fund", "spent", 2),
    PublicType(Complex.FundAllowanceSet, "fund", "allowance_set", 1),
    PublicType(Household.Registered, "household", "registered", 1),
    PublicType(Household.RentInvoiceIssued, rent_area, "invoice_issued", 1),
    PublicType(Household.RentPaymentHeld, rent_area, "payment_held", 1),
    PublicType(Household.RentPaymentSettled, rent_area, "payment_settled", 1),
    PublicType(Household.RentPaymentReleased, rent_area, "payment_released", 1),
    PublicType(Resident.Enrolled, "wallet", "resident_enrolled", 1),
    PublicType(Resident.PointsAccrued, "wallet", "points_accrued", 2),
    PublicType(Resident.PointsReceived, "wallet", "points_received", 2),
    PublicType(Resident.PointsRefunded, "wallet", "points_refunded", 2),
    PublicType(Resident.PointsSpent, "wallet", "points_spent", 2),
    PublicType(Resident.AccrualClawedBack, "wallet", "accrual_clawed_back", 2),
    PublicType(Resident.PaymentReturned, "wallet", "payment_returned", 2),
    PublicType(Resident.PointsHeld, "wallet", "points_held", 2),
    PublicType(Resident.HoldSettled, "wallet", "hold_settled", 1),
    PublicType(Resident.HoldReleased, "wallet", "hold_released", 2),
    PublicType(Resident.MovedOut, "wallet", "resident_moved_out", 2),
    PublicType(Merchant.Registered, "merchant", "registered", 1),
    PublicType(Merchant.SettlementCredited, "merchant", "settlement_credited", 1),
    PublicType(Merchant.SettlementReturned, "merchant", "settlement_returned", 1),
    PublicType(Merchant.PaidOut, "merchant", "paid_out", 1),
    PublicType(Trade.Recorded, "trade", "recorded", 2),
    PublicType(Trade.Refunded, "trade", "refunded", 2),
    PublicType(AccrualPolicy.Created, "policy", "created", 1),
    PublicType(AccrualPolicy.VersionSet, "policy", "version_set", 2),
    PublicType(Proposal.Opened, "vote", "proposal_opened", 1),
    PublicType(Proposal.Decided, "vote", "proposal_decided", 1),
    # Group buys: every event of one group buy has its id as key, so one partition holds
    # them in order; the money part of each order is on its order_placed event, and the
    # orders in an outcome are those placed and not cancelled before it.
    PublicType(GroupBuy.Opened, "groupbuy", "opened", 1),
    PublicType(GroupBuy.OrderPlaced, "groupbuy", "order_placed", 1),
    PublicType(GroupBuy.OrderCancelled, "groupbuy", "order_cancelled", 1),
    PublicType(GroupBuy.Completed, "groupbuy", "completed", 1),
    PublicType(GroupBuy.Cancelled, "groupbuy", "cancelled", 1),
    PublicType(Resident.OrderPointsHeld, "wallet", "order_points_held", 2),
    PublicType(Resident.OrderHoldReleased, "wallet", "order_hold_released", 2),
    PublicType(Resident.OrderHoldSpent, "wallet", "order_hold_spent", 1),
    # Points lifecycle: pending shares released or cancelled, expired lots, and personal
    # points that came to a fund by expiry or move-out.
    PublicType(Resident.PendingPointsReleased, "wallet", "pending_points_released", 1),
    PublicType(Resident.PendingPointsCancelled, "wallet", "pending_points_cancelled", 1),
    PublicType(Resident.PointsExpired, "wallet", "points_expired", 1),
    PublicType(Complex.PendingCommonPointsReleased, "fund", "pending_common_points_released", 1),
    PublicType(Complex.PendingCommonPointsCancelled, "fund", "pending_common_points_cancelled",
               1),
    PublicType(Complex.LapsedPointsReceived, "fund", "lapsed_points_received", 1),
)

INTERNAL_EVENT_CLASSES: tuple[type[Any], ...] = (
    RequestRecord.Accepted,  # Idempotency bookkeeping: holds other commands' outcomes.
    RentPaymentLocator.Registered,  # An index from payment id to household, nothing more.
    Complex.HouseholdCounted,  # The quorum's count; household.registered is the public fact.
    Proposal.BallotCast,  # Who voted how is for auditors only; vote.proposal_decided has the tally.
    Proposal.SpendCited,  # fund.spent.v2 names the proposal a spend cites.
    GroupBuyOrderLocator.Registered,  # An index from order id to group buy, nothing more.
    TradePair.Opened,  # The wash-trade guard's count per pair; trade.recorded is the fact.
    TradePair.TradeCounted,
)

RETIRED_EVENT_TYPES: tuple[str, ...] = (
    "fund.spent.v1",  # v2 adds proposal_id (resident votes gate fund spending).
    # v2 of these add the points lifecycle's fields (pending_until, expires_at, lots,
    # moved_to, cancelled shares, available_at, lifecycle): issue 12.
    "fund.common_points_accrued.v1",
    "wallet.points_accrued.v1",
    "wallet.points_received.v1",
    "wallet.points_refunded.v1",
    "wallet.points_spent.v1",
    "wallet.accrual_clawed_back.v1",
    "wallet.payment_returned.v1",
    "wallet.points_held.v1",
    "wallet.resident_moved_out.v1",
    "trade.recorded.v1",
    "trade.refunded.v1",
    "policy.version_set.v1",
    "wallet.order_points_held.v1",
    "wallet.hold_released.v1",
    "wallet.order_hold_released.v1",  # policy.version_set.v2 also adds guards.
)
"""Earlier versions no longer published, whose checked-in schemas are kept unchanged."""

REGISTRY: dict[type[Any], PublicType] = {public.event_class: public for public in PUBLIC_TYPES}
BY_EVENT_TYPE: dict[str, PublicType] = {public.event_type: public for public in PUBLIC_TYPES}
assert len(REGISTRY) == len(PUBLIC_TYPES) == len(BY_EVENT_TYPE), "a public type is listed twice"
assert not set(RETIRED_EVENT_TYPES) & set(BY_EVENT_TYPE), "a retired name is still published"

_internal_topics = frozenset(get_topic(cls) for cls in INTERNAL_EVENT_CLASSES)


class UnknownEventError(LookupError):
    """An event class that is neither public nor internal: the registry needs an entry."""


# Payload fields ---------------------------------------------------------------------------

# Library fields of every event, renamed in the payload; `originator_topic` (on creation
# events) names a Python class and is left out.
_library_fields = ("originator_id", "originator_version", "timestamp", "originator_topic")
_caused_fields = tuple(field.name for field in fields(Caused))

_envelope_schemas: dict[str, dict[str, Any]] = {
    "event_id": {"type": "string", "format": "uuid",
                 "description": "Stable id of the event, the same on every delivery: "
                                "uuid5 of aggregate id and version. Drop repeats by it."},
    "event_type": {"type": "string", "description": "The public event type, with version."},
    "aggregate_id": {"type": "string", "format": "uuid",
                     "description": "The aggregate the event belongs to."},
    "aggregate_version": {"type": "integer", "minimum": 1,
                          "description": "The event's place among its aggregate's events."},
    "position": {"type": "integer", "minimum": 1,
                 "description": "The event's place in the ledger's log; may have gaps."},
    "recorded_at": {"type": "string", "format": "date-time",
                    "description": "When the ledger recorded the event."},
}
_caused_descriptions = {
    "actor_id": "Who did it.",
    "actor_role": "In which role: resident, coordinator, manager, billing, platform, operator.",
    "on_behalf_of": "The resident a coordinator acted for, or null.",
    "request_id": "The client's request id.",
    "complex_id": "The complex the event concerns, or null.",
    "occurred_at": "When it happened on the platform.",
}


def _own_field_names(event_class: type[Any]) -> list[str]:
    return [field.name for field in fields(event_class)
            if field.name not in _library_fields and field.name not in _caused_fields]


def type_schema(hint: Any) -> dict[str, Any]:
    """The JSON Schema of one Python type hint of an event field."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        present = [arg for arg in get_args(hint) if arg is not type(None)]
        assert len(present) == 1, f"only `X | None`: {hint!r}"
        assert len(get_args(hint)) == 2, f"only `X | None`: {hint!r}"
        inner = type_schema(present[0])
        assert isinstance(inner.get("type"), str), f"cannot make {hint!r} nullable"
        return {**inner, "type": [inner["type"], "null"]}
    if hint is Any:
        return {}
    if hint is bool:
        msg = "events carry no booleans"
        raise TypeError(msg)
    simple = {int: {"type": "integer"}, str: {"type": "string"},
              UUID: {"type": "string", "format": "uuid"},
              datetime: {"type": "string", "format": "date-time"}}
    if hint in simple:
        return dict(simple[hint])
    if origin in (list, tuple):
        arguments = [arg for arg in get_args(hint) if arg is not Ellipsis]
        return {"type": "array", "items": type_schema(arguments[0])} if arguments else {
            "type": "array"}
    if origin is dict or hint is dict:
        arguments = list(get_args(hint))
        if arguments and arguments[1] is not Any:
            return {"type": "object", "additionalProperties": type_schema(arguments[1])}
        return {"type": "object"}
    msg = f"no JSON Schema for event field type {hint!r}"
    raise TypeError(msg)


def payload_properties(event_class: type[Any]) -> dict[str, dict[str, Any]]:
    """Every payload field of an event class and its JSON Schema, in payload order."""
    hints = get_type_hints(event_class)
    properties = {name: dict(schema) for name, schema in _envelope_schemas.items()}
    for name in _caused_fields:
        properties[name] = {**type_schema(hints[name]), "description": _caused_descriptions[name]}
    for name in _own_field_names(event_class):
        assert name not in properties, f"{event_class.__qualname__}.{name} shadows the envelope"
        properties[name] = type_schema(hints[name])
    return properties


def description(event_class: type[Any]) -> str:
    """The event class's own docstring; the library's dataclass wrapper hides it one level up."""
    for cls in event_class.__mro__:
        if cls.__qualname__ != event_class.__qualname__:
            break
        doc = cls.__dict__.get("__doc__")
        if doc and not doc.startswith(f"{cls.__name__}("):
            return inspect.cleandoc(doc)
    return f"{event_class.__qualname__}, as recorded by the ledger."


def json_schema(public: PublicType) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one public event type's payload."""
    properties = payload_properties(public.event_class)
    properties["event_type"] = {**properties["event_type"], "const": public.event_type}
    return {
        "$schema": schema_dialect,
        "$id": f"{schema_id_prefix}{public.event_type}",
        "title": public.event_type,
        "description": description(public.event_class),
        "type": "object",
        "additionalProperties": False,
        "required": list(properties),
        "properties": properties,
    }


# Messages ---------------------------------------------------------------------------------


def json_value(value: Any) -> Any:
    """A field value as JSON: UUIDs as strings, datetimes ISO 8601 with offset."""
    kind = type(value)
    if kind is str or kind is int or value is None:  # the common cases first, by exact type
        return value
    if kind is UUID:
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, float)):
        msg = f"events carry no {type(value).__name__} values: {value!r}"
        raise TypeError(msg)
    if isinstance(value, int):
        return value
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        assert value.utcoffset() is not None, f"naive datetime in an event: {value!r}"
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): json_value(item) for key, item in value.items()}
    msg = f"no JSON for {type(value).__name__} value {value!r}"
    raise TypeError(msg)


def json_bytes(payload: dict[str, Any]) -> bytes:
    """`payload` as compact UTF-8 JSON, non-ASCII unescaped.

    orjson writes the very bytes `json.dumps(payload, separators=(",", ":"),
    ensure_ascii=False).encode()` writes for the values `json_value` makes, only
    faster; an integer beyond 64 bits, which orjson refuses, goes the slow way.
    """
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class PublicMessage:
    """One public event, ready to publish: its payload and where it goes."""

    event_type: str
    schema_version: int
    payload: dict[str, Any]
    routes: tuple[tuple[str, str], ...]
    """(Kafka topic, key) pairs."""

    def value(self) -> bytes:
        """The payload as compact UTF-8 JSON, the Kafka record value."""
        return json_bytes(self.payload)


def payload_of(public: PublicType, position: int, event: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event_id": str(event_id(event.originator_id, event.originator_version)),
        "event_type": public.event_type,
        "aggregate_id": str(event.originator_id),
        "aggregate_version": event.originator_version,
        "position": position,
        "recorded_at": json_value(event.timestamp),
    }
    for name in _field_names_after_envelope(public.event_class):
        payload[name] = json_value(getattr(event, name))
    return payload


_fields_after_envelope: dict[type[Any], tuple[str, ...]] = {}


def _field_names_after_envelope(event_class: type[Any]) -> tuple[str, ...]:
    """The cause's fields, then the event's own: the payload's order after the envelope."""
    names = _fields_after_envelope.get(event_class)
    if names is None:
        names = _fields_after_envelope[event_class] = (
            *_caused_fields, *_own_field_names(event_class))
    return names


def to_public(position: int, originator_id: UUID, originator_version: int, topic: str,
              state: bytes) -> PublicMessage | None:
    """The public message of one stored event; None for an internal event."""
    if topic in _internal_topics:
        return None  # Decoding is skipped: a request record accompanies every command.
    event = to_domain_event(StoredRow(position, originator_id, originator_version, topic, state))
    public = REGISTRY.get(type(event))
    if public is None:
        msg = f"event class {type(event).__qualname__} ({topic}) is neither public nor internal"
        raise UnknownEventError(msg)
    assert event.originator_id == originator_id
    # Rent events are keyed by household: a Household's id is its aggregate id.
    key = str(originator_id)
    return PublicMessage(
        event_type=public.event_type,
        schema_version=public.version,
        payload=payload_of(public, position, event),
        routes=tuple((kafka_topic, key) for kafka_topic in public.topics),
    )


def route(notification: StoredRow) -> list[OutgoingMessage]:
    """The relay's route for public events: `--route feed.public_events:route`.

    The relay adds the headers event_id, position, event_type and schema_version.
    """
    message = to_public(notification.position, notification.originator_id,
                        notification.originator_version, notification.topic,
                        notification.state)
    if message is None:
        return []
    value = message.value()
    return [OutgoingMessage(kafka_topic, key, value, event_type=message.event_type,
                            schema_version=message.schema_version)
            for kafka_topic, key in message.routes]
