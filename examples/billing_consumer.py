"""A reference billing consumer: rent paid with points, applied to invoices, answered back.

This is what the rent-billing system's side of the loop looks like (docs/kafka.md):

1. Consume `ledger.rent` in a consumer group. Records are keyed by household, so
   one household's events arrive in log order on one partition.
2. Apply each event in ONE PostgreSQL transaction of billing's own database:
   insert the event id into `processed_events` (primary key) and make the effect
   (an invoice paid down, a payment recorded, an answer queued). A repeat of the
   event id conflicts on the primary key and changes nothing. The offset commit
   to Kafka is only an optimisation; the dedup table is the truth.
3. Answer back for each held payment: settle the hold if the invoice still needs
   the money, release it if the invoice is already fully paid or cancelled. The
   answer is queued in `answers` in the same transaction as the effect and sent
   afterwards (an outbox), with the held event's id as the Idempotency-Key, so a
   crash between commit and answer only delays the answer and a resend is safe.
4. The ledger then publishes `rent.payment_settled.v1` or
   `rent.payment_released.v1`; billing records it. A hold that expired before
   billing settled it is released by the ledger: the settle answer comes back
   `hold_already_released`, and the released event takes the payment off the invoice.

The answer is pluggable: `http_answerer` calls the ledger's HTTP API with a
billing token; `ledger_answerer` calls `Ledger.execute` in process (tests, demos).

Run: `python examples/billing_consumer.py --help`. The billing token comes from
`--token`, `--token-file` or BILLING_API_TOKEN (mint a development one with
`ledger token --role billing --subject UUID`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import psycopg
from psycopg import sql

from ledger.database import ConnectionSettings

if TYPE_CHECKING:
    from ledger.application import Ledger

logger = logging.getLogger("billing_consumer")

rent_topic_default = "ledger.rent"
group_id_default = "billing"
billing_schema_default = "billing"
answers_batch_max = 500
poll_records_max = 500
http_timeout_seconds_default = 10.0

INVOICE_ISSUED = "rent.invoice_issued.v1"
PAYMENT_HELD = "rent.payment_held.v1"
PAYMENT_SETTLED = "rent.payment_settled.v1"
PAYMENT_RELEASED = "rent.payment_released.v1"

Action = Literal["settle", "release"]


# Answering back ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """Billing's decision about one held rent payment."""

    action: Action
    payment_id: str
    idempotency_key: str
    """The id of the `rent.payment_held.v1` event: one answer per hold, however often sent."""


@dataclass(frozen=True)
class AnswerResult:
    """The ledger's reply: accepted, or rejected with a stable error code."""

    accepted: bool
    code: str = ""


class LedgerUnavailableError(Exception):
    """The ledger could not be reached; the answer stays queued and is sent again later."""


Answerer = Callable[[Answer], AnswerResult]


def http_answerer(base_url: str, token: str,
                  timeout_seconds: float = http_timeout_seconds_default) -> Answerer:
    """Answer through the API: POST /v1/rent-payments/{id}/settle|release, role billing."""
    base = base_url.rstrip("/")

    def answer(decision: Answer) -> AnswerResult:
        payment = urllib.parse.quote(decision.payment_id, safe="")
        request = urllib.request.Request(  # noqa: S310  (the operator's configured API URL)
            f"{base}/v1/rent-payments/{payment}/{decision.action}",
            data=b"{}",
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                     "Idempotency-Key": decision.idempotency_key},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_seconds) as response:  # noqa: S310
                response.read()
                return AnswerResult(accepted=True)
        except urllib.error.HTTPError as error:
            body = error.read()
            if error.code in (404, 409, 422):
                try:
                    code = str(json.loads(body).get("code", ""))
                except ValueError:
                    code = ""
                return AnswerResult(accepted=False, code=code or f"http_{error.code}")
            if error.code >= 500 or error.code == 429:
                raise LedgerUnavailableError(f"{error.code} from the ledger API") from error
            # 401, 403, 400: a configuration mistake that retrying cannot fix.
            msg = f"the ledger API refused the billing answer: {error.code} {body[:200]!r}"
            raise RuntimeError(msg) from error
        except (urllib.error.URLError, OSError) as error:
            raise LedgerUnavailableError(str(error)) from error

    return answer


def ledger_answerer(ledger: Ledger, billing_actor_id: uuid.UUID) -> Answerer:
    """Answer in process through `Ledger.execute`, the request id being the idempotency key."""
    from ledger import commands  # noqa: PLC0415
    from ledger.application import now  # noqa: PLC0415
    from ledger.errors import DomainError  # noqa: PLC0415
    from ledger.events import Cause  # noqa: PLC0415

    def answer(decision: Answer) -> AnswerResult:
        command: commands.Command = (
            commands.SettleRentPayment(decision.payment_id) if decision.action == "settle"
            else commands.ReleaseRentPayment(decision.payment_id))
        cause = Cause(billing_actor_id, "billing", decision.idempotency_key, now())
        try:
            ledger.execute(command, cause)
        except DomainError as error:
            return AnswerResult(accepted=False, code=error.code)
        return AnswerResult(accepted=True)

    return answer


# Billing's own tables ------------------------------------------------------------------------


def ensure_tables(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create billing's schema and tables if they are missing."""
    statements = [
        "CREATE SCHEMA IF NOT EXISTS {s}",
        """CREATE TABLE IF NOT EXISTS {s}.invoices (
            invoice_id text PRIMARY KEY,
            household_id uuid NOT NULL,
            billing_period text NOT NULL,
            amount_won bigint NOT NULL CHECK (amount_won > 0),
            paid_won bigint NOT NULL DEFAULT 0 CHECK (paid_won >= 0 AND paid_won <= amount_won),
            cancelled boolean NOT NULL DEFAULT false)""",
        """CREATE TABLE IF NOT EXISTS {s}.applied_payments (
            payment_id text PRIMARY KEY,
            invoice_id text NOT NULL,
            household_id uuid NOT NULL,
            amount_won bigint NOT NULL CHECK (amount_won > 0),
            status text NOT NULL
                CHECK (status IN ('applied', 'declined', 'settled', 'released')),
            held_event_id uuid NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now())""",
        """CREATE TABLE IF NOT EXISTS {s}.processed_events (
            event_id uuid PRIMARY KEY,
            event_type text NOT NULL,
            position bigint NOT NULL,
            processed_at timestamptz NOT NULL DEFAULT now())""",
        """CREATE TABLE IF NOT EXISTS {s}.answers (
            event_id uuid PRIMARY KEY,
            payment_id text NOT NULL,
            action text NOT NULL CHECK (action IN ('settle', 'release')),
            queued_at timestamptz NOT NULL DEFAULT now(),
            answered_at timestamptz,
            outcome text)""",
    ]
    with conn.transaction():
        for statement in statements:
            conn.execute(sql.SQL(statement).format(s=sql.Identifier(schema)))


# Applying events ------------------------------------------------------------------------


@dataclass(frozen=True)
class RentEvent:
    """One `ledger.rent` record as billing reads it."""

    event_id: str
    event_type: str
    position: int
    payload: dict[str, Any]

    @classmethod
    def from_record(cls, headers: Iterable[tuple[str, bytes]], value: bytes) -> RentEvent:
        header = dict(headers)
        payload = json.loads(value)
        assert payload["event_id"] == header["event_id"].decode(), "header and payload differ"
        return cls(payload["event_id"], header["event_type"].decode(),
                   int(header["position"]), payload)


class Billing:
    """Billing's side: apply rent events exactly once in effect, queue and send answers."""

    def __init__(self, conn: psycopg.Connection[Any], schema: str = billing_schema_default,
                 answerer: Answerer | None = None) -> None:
        assert not conn.autocommit, "billing applies each event in its own transaction"
        self.conn = conn
        self.schema = schema
        self.answerer = answerer
        self.applied = 0
        self.duplicates = 0
        ensure_tables(conn, schema)
        self.conn.commit()

    def _table(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    def apply(self, event: RentEvent) -> bool:
        """Apply one event; False when its id was already processed (nothing changes)."""
        with self.conn.transaction():
            inserted = self.conn.execute(
                sql.SQL("INSERT INTO {} (event_id, event_type, position) VALUES (%s, %s, %s)"
                        " ON CONFLICT (event_id) DO NOTHING").format(
                    self._table("processed_events")),
                (event.event_id, event.event_type, event.position)).rowcount
            if inserted == 0:
                self.duplicates += 1
                return False
            # After this point, the effect commits with the dedup record or not at all.
            handler = {
                INVOICE_ISSUED: self._invoice_issued,
                PAYMENT_HELD: self._payment_held,
                PAYMENT_SETTLED: self._payment_settled,
                PAYMENT_RELEASED: self._payment_released,
            }.get(event.event_type)
            if handler is None:
                logger.warning("billing: ignoring event type %s (position %d)",
                               event.event_type, event.position)
            else:
                handler(event)
        self.applied += 1
        return True

    def _invoice_issued(self, event: RentEvent) -> None:
        # A real billing system issued the invoice itself and already has it.
        p = event.payload
        self.conn.execute(
            sql.SQL("INSERT INTO {} (invoice_id, household_id, billing_period, amount_won)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (invoice_id) DO NOTHING").format(
                self._table("invoices")),
            (p["invoice_id"], p["aggregate_id"], p["billing_period"], p["amount_won"]))

    def _payment_held(self, event: RentEvent) -> None:
        p = event.payload
        row = self.conn.execute(
            sql.SQL("SELECT amount_won, paid_won, cancelled FROM {} WHERE invoice_id = %s"
                    " FOR UPDATE").format(self._table("invoices")),
            (p["invoice_id"],)).fetchone()
        takes_it = (row is not None and not row[2] and row[1] + p["amount_won"] <= row[0])
        if takes_it:
            self.conn.execute(
                sql.SQL("UPDATE {} SET paid_won = paid_won + %s WHERE invoice_id = %s").format(
                    self._table("invoices")), (p["amount_won"], p["invoice_id"]))
        self.conn.execute(
            sql.SQL("INSERT INTO {} (payment_id, invoice_id, household_id, amount_won, status,"
                    " held_event_id) VALUES (%s, %s, %s, %s, %s, %s)").format(
                self._table("applied_payments")),
            (p["payment_id"], p["invoice_id"], p["aggregate_id"], p["amount_won"],
             "applied" if takes_it else "declined", event.event_id))
        self.conn.execute(
            sql.SQL("INSERT INTO {} (event_id, payment_id, action) VALUES (%s, %s, %s)").format(
                self._table("answers")),
            (event.event_id, p["payment_id"], "settle" if takes_it else "release"))

    def _payment_settled(self, event: RentEvent) -> None:
        self.conn.execute(
            sql.SQL("UPDATE {} SET status = 'settled', updated_at = now()"
                    " WHERE payment_id = %s AND status = 'applied'").format(
                self._table("applied_payments")), (event.payload["payment_id"],))

    def _payment_released(self, event: RentEvent) -> None:
        # Released by billing's answer or expired in the ledger: the points did not pay rent.
        payment_id = event.payload["payment_id"]
        row = self.conn.execute(
            sql.SQL("SELECT status, invoice_id, amount_won FROM {} WHERE payment_id = %s"
                    " FOR UPDATE").format(self._table("applied_payments")),
            (payment_id,)).fetchone()
        if row is None or row[0] not in ("applied", "declined"):
            return
        if row[0] == "applied":
            self.conn.execute(
                sql.SQL("UPDATE {} SET paid_won = paid_won - %s WHERE invoice_id = %s").format(
                    self._table("invoices")), (row[2], row[1]))
        self.conn.execute(
            sql.SQL("UPDATE {} SET status = 'released', updated_at = now()"
                    " WHERE payment_id = %s").format(self._table("applied_payments")),
            (payment_id,))

    def send_answers(self) -> int:
        """Send queued answers in order; return how many were sent. Stops at an outage."""
        assert self.answerer is not None, "no answerer configured"
        sent = 0
        rows = self.conn.execute(
            sql.SQL("SELECT event_id, payment_id, action FROM {} WHERE answered_at IS NULL"
                    " ORDER BY queued_at, event_id LIMIT %s").format(self._table("answers")),
            (answers_batch_max,)).fetchall()
        self.conn.commit()
        for event_id, payment_id, action in rows:
            try:
                result = self.answerer(Answer(action, payment_id, str(event_id)))
            except LedgerUnavailableError as error:
                logger.warning("billing: ledger unavailable, answers wait: %s", error)
                break
            outcome = "accepted" if result.accepted else result.code
            with self.conn.transaction():
                self.conn.execute(
                    sql.SQL("UPDATE {} SET answered_at = now(), outcome = %s"
                            " WHERE event_id = %s").format(self._table("answers")),
                    (outcome, event_id))
            sent += 1
        return sent

    def pending_answers(self) -> int:
        row = self.conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE answered_at IS NULL")
                                .format(self._table("answers"))).fetchone()
        self.conn.commit()
        return int(row[0]) if row else 0


# The Kafka loop -------------------------------------------------------------------------


def kafka_consumer(bootstrap_servers: str, topic: str, group_id: str) -> Any:
    """A group consumer with manual offset commits and timeouts low enough to join fast."""
    from kafka import KafkaConsumer  # noqa: PLC0415

    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        client_id=f"billing-{group_id}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=poll_records_max,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_interval_ms=60_000,
    )


def consume(billing: Billing, consumer: Any, stop: Callable[[bool], bool]) -> None:
    """Poll, apply, commit offsets, answer; until `stop(idle)` says so.

    `idle` is True when, with partitions assigned, a poll returned nothing and no
    answer was sent.
    """
    while True:
        batches = consumer.poll(timeout_ms=500)
        for records in batches.values():
            for record in records:  # One partition's records, in offset order.
                billing.apply(RentEvent.from_record(record.headers, record.value))
        if batches:
            consumer.commit()
        sent = billing.send_answers() if billing.answerer is not None else 0
        # Before the group has assigned partitions, an empty poll says nothing.
        idle = not batches and sent == 0 and bool(consumer.assignment())
        if stop(idle):
            return


def run_until_idle(billing: Billing, consumer: Any, idle_seconds: float,
                   timeout_seconds: float) -> None:
    """Consume until nothing arrived for `idle_seconds` (tests and one-shot runs)."""
    deadline = time.monotonic() + timeout_seconds
    idle_since: list[float] = [time.monotonic()]

    def stop(idle: bool) -> bool:
        now = time.monotonic()
        if not idle:
            idle_since[0] = now
        if now > deadline:
            msg = f"billing consumer still busy after {timeout_seconds} s"
            raise TimeoutError(msg)
        return idle and now - idle_since[0] >= idle_seconds

    consume(billing, consumer, stop)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="billing_consumer",
        description="Reference billing consumer: apply rent paid with points, answer back.")
    parser.add_argument("--bootstrap-servers",
                        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--topic", default=rent_topic_default)
    parser.add_argument("--group-id", default=group_id_default)
    parser.add_argument("--billing-database-url", default=os.environ.get("BILLING_DATABASE_URL"),
                        required="BILLING_DATABASE_URL" not in os.environ,
                        help="billing's own PostgreSQL (default: BILLING_DATABASE_URL)")
    parser.add_argument("--billing-schema", default=billing_schema_default)
    answer = parser.add_mutually_exclusive_group(required=True)
    answer.add_argument("--api-url", help="answer through the ledger API at this URL")
    answer.add_argument("--in-process", action="store_true",
                        help="answer through Ledger.execute on LEDGER_DATABASE_URL")
    parser.add_argument("--token", default=os.environ.get("BILLING_API_TOKEN", ""),
                        help="billing bearer token (default: BILLING_API_TOKEN)")
    parser.add_argument("--token-file", type=Path, default=None,
                        help="a file holding the billing bearer token (instead of --token)")
    parser.add_argument("--billing-actor-id", type=uuid.UUID,
                        default=uuid.UUID("00000000-0000-4000-8000-00000000000c"))
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    ledger = None
    if arguments.in_process:
        from ledger.application import Ledger  # noqa: PLC0415

        ledger = Ledger.connect(None, os.environ.get("LEDGER_SCHEMA", "public"))
        answerer = ledger_answerer(ledger, arguments.billing_actor_id)
    else:
        token = arguments.token
        if arguments.token_file is not None:
            try:
                token = arguments.token_file.read_text(encoding="utf-8").strip()
            except OSError as error:
                parser.error(f"cannot read --token-file: {error}")
        if not token:
            parser.error("--api-url needs a billing token: --token, --token-file or "
                         "BILLING_API_TOKEN (`ledger token --role billing --subject UUID` "
                         "mints a development one)")
        answerer = http_answerer(arguments.api_url, token)

    conninfo = ConnectionSettings.from_url(arguments.billing_database_url).conninfo()
    stop_event = threading.Event()
    import signal  # noqa: PLC0415

    signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: stop_event.set())
    with psycopg.connect(conninfo) as conn:
        billing = Billing(conn, arguments.billing_schema, answerer)
        consumer = kafka_consumer(arguments.bootstrap_servers, arguments.topic,
                                  arguments.group_id)
        try:
            consume(billing, consumer, lambda _idle: stop_event.is_set())
        finally:
            consumer.close()
            if ledger is not None:
                ledger.close()
    logger.info("billing: applied %d events, dropped %d repeats", billing.applied,
                billing.duplicates)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
