"""Reading history for auditors: one aggregate's events, balances at a past moment, accruals.

Two clocks, never mixed up:

- **recorded**: when the ledger stored an event (its log position, and the
  library's `timestamp`). "As of position P" or "as of recorded time T" is what
  the ledger knew then; later corrections are not in it.
- **occurred**: when the thing happened on the platform (`occurred_at`, e.g. the
  time of the sale). A sale made on 31 March but recorded on 2 April belongs to
  March by occurred time, and is absent from "as of recorded 1 April".

The two can be combined: `as_of_occurred=O, as_of_recorded=R` is "what had
happened by O, as far as the ledger knew at R".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any, cast
from uuid import UUID

import psycopg
from psycopg.sql import SQL, Identifier

from audit.scratch import Recomputed, Scratch, accrual_differences, recompute
from eventlog.log import EVENTS_TABLE, Event, decode_row
from ledger import limits
from ledger.database import connect
from ledger.events import KST
from ledger.policy import POLICY_ID
from ledger.trade import trade_aggregate_id

FETCH_ROWS = 20_000
MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def parse_moment(text: str) -> datetime:
    """An ISO 8601 time; without an offset it is Korea Standard Time; a bare date is 00:00 KST."""
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as error:
        msg = f"{text!r} is not an ISO 8601 date or time"
        raise ValueError(msg) from error
    if len(value) == 10:
        moment = datetime.combine(moment.date(), time(0), KST)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=KST)


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) of a 'YYYY-MM' month, in KST."""
    found = MONTH.match(month)
    if found is None:
        msg = f"{month!r} is not a month written YYYY-MM"
        raise ValueError(msg)
    year, number = int(found.group(1)), int(found.group(2))
    start = datetime(year, number, 1, tzinfo=KST)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=KST)
    return start, end


@dataclass(frozen=True)
class AsOf:
    """Which events count: up to a position and/or recorded time, and/or an occurred time."""

    position: int | None = None
    recorded_at: datetime | None = None
    occurred_at: datetime | None = None

    @classmethod
    def parse(cls, as_of: str | None = None, as_of_occurred: str | None = None) -> AsOf:
        position = recorded = None
        if as_of is not None:
            if as_of.strip().isdigit():
                position = int(as_of)
            else:
                recorded = parse_moment(as_of)
        occurred = None if as_of_occurred is None else parse_moment(as_of_occurred)
        return cls(position, recorded, occurred)

    def includes(self, event: Event) -> bool:
        if self.position is not None and event.position > self.position:
            return False
        if self.recorded_at is not None and _moment(event.recorded_at) > self.recorded_at:
            return False
        return not (self.occurred_at is not None
                    and _moment(event.occurred_at) > self.occurred_at)

    def describe(self) -> dict[str, Any]:
        return {"position": self.position,
                "recorded_at": None if self.recorded_at is None else self.recorded_at.isoformat(),
                "occurred_at": None if self.occurred_at is None else self.occurred_at.isoformat()}


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _connection(url: str, schema: str) -> psycopg.Connection[Any]:
    return cast("psycopg.Connection[Any]", connect(url, schema))


def aggregate_events(conn: psycopg.Connection[Any], originator_id: UUID,
                     upto: int | None = None) -> list[Event]:
    """Every event of one aggregate (wallet, fund, household, trade), in log order."""
    rows = conn.execute(SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {}"
        " WHERE originator_id = %s AND notification_id <= %s ORDER BY notification_id")
        .format(Identifier(EVENTS_TABLE)), (originator_id, upto or 2**62)).fetchall()
    return [event for row in rows if (event := decode_row(*row)) is not None]


def all_events(conn: psycopg.Connection[Any], upto: int | None = None) -> Iterator[Event]:
    """Every event in log order, streamed through a server-side cursor."""
    with conn.cursor(name="audit_history", binary=True) as cursor:
        cursor.execute(SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {}"
            " WHERE notification_id <= %s ORDER BY notification_id")
            .format(Identifier(EVENTS_TABLE)), (upto or 2**62,))
        while rows := cursor.fetchmany(FETCH_ROWS):
            for row in rows:
                event = decode_row(*row)
                if event is not None:
                    yield event


# Balances at a past moment ------------------------------------------------------------------

def balances_as_of(url: str, schema: str, as_of: AsOf, *, resident: UUID | None = None,
                   complex_id: UUID | None = None,
                   household: UUID | None = None) -> dict[str, Any]:
    """A wallet, a common fund, a household's rent, or (with none named) the platform's
    accounts by kind, folded from exactly the events `as_of` includes."""
    selected = [value for value in (resident, complex_id, household) if value is not None]
    assert len(selected) <= 1, "name at most one of resident, complex, household"
    scratch = Scratch(check_accruals=False)
    last = 0
    with _connection(url, schema) as conn:
        events = (aggregate_events(conn, selected[0], as_of.position) if selected
                  else all_events(conn, as_of.position))
        for event in events:
            if as_of.includes(event):
                scratch.apply(event)
                last = max(last, event.position)
        conn.rollback()
    result: dict[str, Any] = {"as_of": as_of.describe(), "events_folded": scratch.events,
                              "last_position": last}
    if resident is not None:
        wallet = scratch.wallets.get(resident.hex)
        result["resident_id"] = str(resident)
        result["wallet"] = None if wallet is None else {
            "available_won": wallet.available_won, "held_won": wallet.held_won,
            "owed_won": wallet.owed_won, "accrued_total_won": wallet.accrued_total_won,
            "spent_total_won": wallet.spent_total_won, "closed": wallet.closed}
    elif complex_id is not None:
        fund = scratch.funds.get(complex_id.hex)
        result["complex_id"] = str(complex_id)
        result["fund"] = None if fund is None else {
            "balance_won": fund.balance_won, "owed_won": fund.owed_won,
            "accrued_total_won": fund.accrued_total_won,
            "clawed_back_total_won": fund.clawed_back_total_won,
            "spent_total_won": fund.spent_total_won}
    elif household is not None:
        result["household_id"] = str(household)
        result["invoices"] = [
            {"invoice_id": invoice_id, "amount_won": amount, "held_won": held,
             "settled_won": settled, "open_won": amount - held - settled}
            for (_, invoice_id), (amount, held, settled, _) in sorted(scratch.invoices.items())]
        result["payments"] = [
            {"payment_id": payment_id, "invoice_id": payment[1], "amount_won": payment[2],
             "status": payment[3]} for payment_id, payment in sorted(scratch.payments.items())]
    else:
        result["points_by_kind"] = scratch.totals_by_kind()
        result["wallets"] = len(scratch.wallets)
        result["funds"] = len(scratch.funds)
    return result


# One trade's accrual -----------------------------------------------------------------------

def policy_versions(conn: psycopg.Connection[Any]) -> dict[int, list[dict[str, Any]]]:
    return {event.data["version"]: event.data["rates"]
            for event in aggregate_events(conn, POLICY_ID) if event.name.endswith("VersionSet")}


def trade_accrual(url: str, schema: str, trade_id: str) -> dict[str, Any] | None:
    """One trade's accrual recomputed from its recorded policy version and inputs, and what
    its buyer's wallet and complex fund received; None when no such trade was recorded."""
    with _connection(url, schema) as conn:
        trade_events = aggregate_events(conn, trade_aggregate_id(trade_id))
        if not trade_events or trade_events[0].name != "Trade.Recorded":
            return None
        recorded = trade_events[0]
        data = recorded.data
        versions = policy_versions(conn)
        buyer = UUID(data["buyer_id"]["_data_"])
        complex_hex = recorded.uuid("complex_id")
        received = [event for event in aggregate_events(conn, buyer)
                    if event.data.get("trade_id") == trade_id]
        if complex_hex is not None:
            received += [event for event in aggregate_events(conn, UUID(complex_hex))
                         if event.data.get("trade_id") == trade_id]
        conn.rollback()
    computed: Recomputed | None = recompute(versions, data)
    differences = (["policy version unknown"] if computed is None
                   else accrual_differences(data, computed))
    delivered_personal = sum(e.data["amount_won"] for e in received
                             if e.name == "Resident.PointsAccrued")
    delivered_common = sum(e.data["amount_won"] for e in received
                           if e.name == "Complex.CommonPointsAccrued")
    if (delivered_personal, delivered_common) != (data["personal_won"], data["common_won"]):
        differences.append(f"wallet and fund received {delivered_personal} + {delivered_common}"
                           f" won, the trade recorded {data['personal_won']} + "
                           f"{data['common_won']}")
    fields = ("policy_version", "personal_bps", "common_bps", "accrual_base_won",
              "personal_won", "common_won")
    return {
        "trade_id": trade_id, "position": recorded.position, "ok": not differences,
        "inputs": {name: data[name] for name in ("market", "category", "seller_kind",
                                                 "amount_won", "points_used_won")},
        "recorded": {name: data[name] for name in fields},
        "recomputed": None if computed is None else {
            name: getattr(computed, name) for name in fields},
        "rule": "accrual_base_won = amount_won - points_used_won; "
                "share_won = accrual_base_won * share_bps // 10000 (floor, each share apart)",
        "received": [{"position": e.position, "event": e.name, "amount_won": e.data["amount_won"],
                      "recovered_won": e.data.get("recovered_won", 0)} for e in received],
        "differences": differences,
    }


# Monthly statements -------------------------------------------------------------------------

STATEMENT_COLUMNS = (
    "position", "occurred_at", "recorded_at", "kind", "amount_won", "held_delta_won",
    "owed_delta_won", "balance_won", "trade_id", "market", "policy_version", "rate_bps",
    "accrual_base_won", "payment_id", "invoice_id", "purpose", "decision_ref", "actor_id",
    "actor_role", "on_behalf_of", "request_id", "recorded_after_month", "explanation",
)


NOT_STATEMENT_LINES = frozenset({"Complex.HouseholdCounted"})
"""Events of a fund that move no points and would only crowd its statement."""


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _explain(event: Event, facts: dict[str, dict[str, Any]],
             payments: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The sentence and structured fields that say why a line moved the balance."""
    data = event.data
    kind = event.name.split(".", 1)[1]
    line: dict[str, Any] = {"trade_id": data.get("trade_id"),
                            "payment_id": data.get("payment_id")}
    if kind in ("PointsAccrued", "CommonPointsAccrued"):
        rate = int(data.get("personal_bps", data.get("common_bps", 0)))
        line.update(market=data["market"], policy_version=data["policy_version"],
                    rate_bps=rate, accrual_base_won=data["accrual_base_won"])
        text = (f"accrued {data['amount_won']:,} won: {rate / 100:.2f}% of "
                f"{data['accrual_base_won']:,} won paid in money on {data['market']} trade "
                f"{data['trade_id']} (seller kind {data['seller_kind']}), accrual policy "
                f"version {data['policy_version']}")
        if data["recovered_won"]:
            text += f"; {data['recovered_won']:,} won of it repaid owed points"
    elif kind in ("AccrualClawedBack", "CommonPointsClawedBack"):
        trade = facts.get(data["trade_id"]) or {}
        clawed_rate = trade.get("personal_bps" if kind == "AccrualClawedBack" else "common_bps")
        line.update(market=trade.get("market"), policy_version=trade.get("policy_version"),
                    rate_bps=clawed_rate, accrual_base_won=trade.get("accrual_base_won"))
        text = (f"accrual of {data['amount_won']:,} won taken back: trade {data['trade_id']} "
                f"was refunded (policy version {trade.get('policy_version')}, rate "
                f"{clawed_rate} bps)")
        if data["owed_won"]:
            text += f"; {data['owed_won']:,} won could not be taken and is owed"
    elif kind == "PointsSpent":
        text = f"spent {data['amount_won']:,} won on trade {data['trade_id']}"
    elif kind == "PointsReceived":
        text = f"received {data['amount_won']:,} won in points as seller of trade " \
               f"{data['trade_id']}"
    elif kind == "PointsRefunded":
        text = f"points used on refunded trade {data['trade_id']} returned: " \
               f"{data['amount_won']:,} won"
    elif kind == "PaymentReturned":
        text = f"returned {data['amount_won']:,} won received for refunded trade " \
               f"{data['trade_id']} to its buyer"
    elif kind == "PointsHeld":
        line["invoice_id"] = data["invoice_id"]
        text = (f"held {data['amount_won']:,} won for rent payment {data['payment_id']} "
                f"on invoice {data['invoice_id']}")
    elif kind in ("HoldSettled", "HoldReleased"):
        invoice = payments.get(data["payment_id"])
        line["invoice_id"] = invoice
        outcome = ("settled: paid as rent" if kind == "HoldSettled"
                   else f"{data['reason']}: available again")
        text = (f"rent payment {data['payment_id']} on invoice {invoice} {outcome}, "
                f"{data['amount_won']:,} won")
    elif kind in ("OrderPointsHeld", "OrderHoldReleased", "OrderHoldSpent"):
        line["payment_id"] = data["order_id"]
        happened = {"OrderPointsHeld": "held for the order",
                    "OrderHoldSpent": f"paid trade {data.get('trade_id')}",
                    "OrderHoldReleased": f"released ({data.get('reason')}): available again"}
        text = (f"group buy {data['group_buy_id']} order {data['order_id']}: "
                f"{data['amount_won']:,} won {happened[kind]}")
    elif kind == "FundSpent":
        line.update(purpose=data["purpose"], decision_ref=data["decision_ref"])
        if data.get("proposal_id"):
            text = (f"spent {data['amount_won']:,} won on {data['purpose']} as approved by "
                    f"the households' vote on proposal {data['proposal_id']} "
                    f"(spend {data['spend_id']})")
        else:
            decision = data["decision_ref"] or "not given"
            text = (f"spent {data['amount_won']:,} won on {data['purpose']} without a "
                    f"proposal (the monthly allowance), decision {decision} "
                    f"(spend {data['spend_id']})")
    elif kind == "MovedOut":
        text = f"moved out; wallet closed, {data['remaining_won']:,} won kept as unclaimed"
    elif kind in ("Enrolled", "Registered"):
        text = "wallet opened" if kind == "Enrolled" else "common fund opened"
    else:
        text = kind
    actor = f"by {data['actor_role']} {UUID(data['actor_id']['_data_'])}"
    if data.get("on_behalf_of"):
        actor += f" on behalf of resident {UUID(data['on_behalf_of']['_data_'])}"
    return f"{text} ({actor}, request {data['request_id']})", line


def statement(url: str, schema: str, month: str, *, resident: UUID | None = None,
              complex_id: UUID | None = None) -> dict[str, Any] | None:
    """`statement_from` on a connection of its own."""
    with _connection(url, schema) as conn:
        try:
            return statement_from(conn, month, resident=resident, complex_id=complex_id)
        finally:
            conn.rollback()


def statement_from(conn: psycopg.Connection[Any], month: str, *, resident: UUID | None = None,
                   complex_id: UUID | None = None) -> dict[str, Any] | None:
    """A month's statement of a wallet or a common fund, by occurred time in KST.

    opening + the sum of the lines = closing, for the available balance and for
    held and owed points. Lines recorded after the month ended are included (they
    happened in it) and flagged. None when the wallet or fund does not exist.
    `conn`'s search_path is the ledger's schema.
    """
    assert (resident is None) != (complex_id is None), "name a resident or a complex"
    start, end = month_bounds(month)
    owner = resident if resident is not None else complex_id
    assert owner is not None
    events = aggregate_events(conn, owner)
    if len(events) > limits.statement_lines_max:
        msg = f"more than {limits.statement_lines_max:,} events: too long for one statement"
        raise ValueError(msg)
    trade_ids = {e.data["trade_id"] for e in events
                 if e.name.endswith("ClawedBack") and "trade_id" in e.data}
    facts: dict[str, dict[str, Any]] = {}
    payments: dict[str, str] = {}
    for trade_id in sorted(trade_ids):
        recorded = aggregate_events(conn, trade_aggregate_id(trade_id))
        if recorded:
            facts[trade_id] = recorded[0].data
    if not events or events[0].name not in ("Resident.Enrolled", "Complex.Registered"):
        return None
    is_wallet = resident is not None
    for event in events:
        if event.name == "Resident.PointsHeld":
            payments[event.data["payment_id"]] = event.data["invoice_id"]
    before = [e for e in events if _moment(e.occurred_at) < start]
    during = sorted((e for e in events if start <= _moment(e.occurred_at) < end),
                    key=lambda e: (_moment(e.occurred_at), e.position))
    scratch = Scratch(check_accruals=False)

    def state() -> tuple[int, int, int]:
        if is_wallet:
            wallet = scratch.wallets.get(owner.hex)
            return (0, 0, 0) if wallet is None else (
                wallet.available_won, wallet.held_won, wallet.owed_won)
        fund = scratch.funds.get(owner.hex)
        return (0, 0, 0) if fund is None else (fund.balance_won, 0, fund.owed_won)

    for event in before:
        scratch.apply(event)
    opening = state()
    lines = []
    for event in during:
        if event.name in NOT_STATEMENT_LINES:
            scratch.apply(event)
            continue
        was = state()
        scratch.apply(event)
        now = state()
        amount, held, owed = (now[0] - was[0], now[1] - was[1], now[2] - was[2])
        text, fields = _explain(event, facts, payments)
        data = event.data
        lines.append({
            "position": event.position, "occurred_at": event.occurred_at,
            "recorded_at": event.recorded_at, "kind": _snake(event.name.split(".", 1)[1]),
            "amount_won": amount, "held_delta_won": held, "owed_delta_won": owed,
            "balance_won": now[0], **dict.fromkeys(
                ("trade_id", "market", "policy_version", "rate_bps", "accrual_base_won",
                 "payment_id", "invoice_id", "purpose", "decision_ref")),
            **{k: v for k, v in fields.items() if v is not None},
            "actor_id": str(UUID(data["actor_id"]["_data_"])), "actor_role": data["actor_role"],
            "on_behalf_of": (None if data.get("on_behalf_of") is None
                             else str(UUID(data["on_behalf_of"]["_data_"]))),
            "request_id": data["request_id"],
            "recorded_after_month": _moment(event.recorded_at) >= end,
            "explanation": text,
        })
    closing = state()
    assert closing[0] == opening[0] + sum(line["amount_won"] for line in lines)
    names = ("available_won", "held_won", "owed_won") if is_wallet else (
        "balance_won", "held_won", "owed_won")

    def balance(values: tuple[int, int, int]) -> dict[str, int]:
        chosen = dict(zip(names, values, strict=True))
        if not is_wallet:
            del chosen["held_won"]
        return chosen

    return {
        "kind": "wallet" if is_wallet else "common_fund",
        "resident_id" if is_wallet else "complex_id": str(owner),
        "month": month, "time_zone": "Asia/Seoul (KST, +09:00)",
        "period": {"from": start.isoformat(), "to_before": end.isoformat()},
        "basis": "occurred_at (when things happened); recorded_at is shown on every line",
        "opening": balance(opening), "lines": lines, "closing": balance(closing),
        "totals": {"credits_won": sum(x["amount_won"] for x in lines if x["amount_won"] > 0),
                   "debits_won": -sum(x["amount_won"] for x in lines if x["amount_won"] < 0),
                   "lines": len(lines)},
    }


def statement_csv(document: dict[str, Any]) -> str:
    """The statement as CSV: an opening row, one row per line, a closing row."""
    import csv  # noqa: PLC0415
    import io  # noqa: PLC0415

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=STATEMENT_COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    first = next(iter(document["opening"].values()))
    writer.writerow({"kind": "opening_balance", "balance_won": first,
                     "occurred_at": document["period"]["from"],
                     "explanation": f"opening balance {document['opening']}"})
    for line in document["lines"]:
        writer.writerow(line)
    last = next(iter(document["closing"].values()))
    writer.writerow({"kind": "closing_balance", "balance_won": last,
                     "occurred_at": document["period"]["to_before"],
                     "amount_won": last - first,
                     "explanation": f"closing balance {document['closing']}"})
    return out.getvalue()

