"""The ledger application: commands in, events saved atomically, outcomes out.

Every command runs against aggregates kept in memory (the library's aggregate
cache) and saves all its events, and its request record, in one transaction.
The commit engine (`ledger.engine`) queues commands, runs them in groups and
answers each exactly once; this module routes each command to its handler and
gives the engine what it needs: staging a command against memory (or, when asked,
against state read fresh from the database), saving a batch with the versions of
what it read, and the aggregate cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, CanMutateProtocol, Snapshot
from eventsourcing.persistence import (
    JSONTranscoder,
    StoredEvent,
    Transcoder,
    Transcoding,
)

from ledger import commands as c
from ledger import errors, group_buying, lifecycle, limits, trading, voting
from ledger.checks import (
    check_amount,
    check_aware,
    check_billing_period,
    check_identifier,
    check_text,
)
from ledger.codec import FastJSONTranscoder
from ledger.complex import Complex, complex_id_for
from ledger.database import database_url, eventsourcing_env
from ledger.engine import Batch, Engine, Pending, Rejected, Staged
from ledger.errors import DomainError
from ledger.events import KST, Cause
from ledger.groupbuy import GroupBuy, GroupBuyOrderLocator
from ledger.household import (
    EXPIRED,
    RELEASED,
    Household,
    RentPaymentLocator,
    household_id_for,
    rent_payment_locator_id,
)
from ledger.merchant import Merchant
from ledger.persistence import STALE_ALL, LedgerRecorder, Statement
from ledger.policy import (
    MERCHANT_KINDS,
    POLICY_ID,
    AccrualPolicy,
)
from ledger.proposal import Proposal
from ledger.request import RequestRecord, RequestRow, fingerprint, request_record_id
from ledger.resident import Resident
from ledger.trade import Trade
from ledger.unit import Handler, Result, UnitOfWork

A = TypeVar("A", bound=Aggregate)
logger = logging.getLogger(__name__)


class SetAsList(Transcoding):
    """Sets in aggregate state (ids already used), for snapshots."""

    type = set
    name = "set_list"

    def encode(self, obj: set[Any]) -> list[Any]:
        return sorted(obj)

    def decode(self, data: list[Any]) -> set[Any]:
        return set(data)



@dataclass(frozen=True)
class Outcome:
    """What a command achieved: its result fields and the log position it reached."""

    result: dict[str, Any]
    position: int
    replayed: bool = False

    def __getitem__(self, key: str) -> Any:
        return self.result[key]




class Ledger(Application[UUID]):
    """The write side. Thread-safe: call `execute` from any number of threads."""

    name = "Ledger"
    env = {  # noqa: RUF012  (the library reads this class attribute)
        "AGGREGATE_CACHE_FASTFORWARD": "n",
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
        "APPLICATION_RECORDER_TOPIC": "ledger.persistence:LedgerRecorder",
    }

    # Long streams (a complex's fund sees every trade of its residents) load from the
    # latest snapshot plus the events after it. Snapshots are a cache, kept in their own
    # table; the events table stays the only record.
    snapshotting_intervals = {  # noqa: RUF012  (the library reads this class attribute)
        Complex: 500, Household: 200, Resident: 200, Merchant: 500, AccrualPolicy: 50,
        Proposal: 200,
        GroupBuy: 200,
    }

    def __init__(self, env: dict[str, str] | None = None) -> None:
        settings = dict(env or {})
        settings.setdefault("AGGREGATE_CACHE_MAXSIZE", str(aggregate_cache_size()))
        super().__init__(settings)
        self.engine = Engine(self, Outcome)
        self._last_position = 0
        self._policy_loaded_at = time.monotonic()
        self._handlers: dict[str, Handler] = {
            c.RegisterComplex.name: self._register_complex,
            c.RegisterHousehold.name: self._register_household,
            c.EnrolResident.name: self._enrol_resident,
            c.MoveOut.name: lifecycle.move_out,
            c.RegisterMerchant.name: self._register_merchant,
            c.PayOutMerchant.name: self._pay_out_merchant,
            c.SetAccrualPolicy.name: self._set_accrual_policy,
            c.RecordTrade.name: self._record_trade,
            c.RefundTrade.name: trading.refund_trade,
            c.IssueRentInvoice.name: self._issue_rent_invoice,
            c.PayRent.name: self._pay_rent,
            c.SettleRentPayment.name: self._settle_rent_payment,
            c.ReleaseRentPayment.name: self._release_rent_payment,
            c.ExpireRentPayment.name: self._expire_rent_payment,
            c.SpendFund.name: voting.spend_fund,
            c.SetFundAllowance.name: voting.set_fund_allowance,
            c.OpenProposal.name: voting.open_proposal,
            c.CastBallot.name: voting.cast_ballot,
            c.CloseProposal.name: voting.close_proposal,
            c.OpenGroupBuy.name: group_buying.open_group_buy,
            c.PlaceGroupBuyOrder.name: group_buying.place_order,
            c.CancelGroupBuyOrder.name: group_buying.cancel_order,
            c.CloseGroupBuy.name: self._close_group_buy,
            c.ReleasePendingPoints.name: lifecycle.release_pending_points,
            c.ExpirePoints.name: lifecycle.expire_points,
        }

    def construct_transcoder(self) -> Transcoder:
        transcoder = FastJSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(SetAsList())

    @classmethod
    def connect(cls, url: str | None = None, schema: str = "public",
                **extra_env: str) -> Ledger:
        """A ledger on the database at `url` (default: LEDGER_DATABASE_URL or embedded)."""
        env = eventsourcing_env(url or database_url(), schema)
        env.update(extra_env)
        return cls(env)

    @property
    def events_table(self) -> str:
        return self.recorder.events_table_name  # type: ignore[attr-defined, no-any-return]

    @property
    def schema(self) -> str:
        return self.recorder.datastore.schema  # type: ignore[attr-defined, no-any-return]

    # Loading -----------------------------------------------------------------------------

    def load(self, aggregate_id: UUID) -> Aggregate | None:
        """The aggregate from the cache, else as stored (and then cached, if it is of a
        kind that is touched again)."""
        cache = self.repository.cache
        if cache is not None:
            with contextlib.suppress(KeyError):
                return cast(Aggregate, cache.get(aggregate_id))
        found = self.load_fresh(aggregate_id)
        if found is not None and cache is not None and cacheable(found):
            cache.put(aggregate_id, found)
        return found

    def load_fresh(self, aggregate_id: UUID) -> Aggregate | None:
        """The aggregate as stored (snapshot and later events, one round trip), bypassing
        the cache."""
        return self.load_many([aggregate_id]).get(aggregate_id)

    def load_many(self, aggregate_ids: list[UUID]) -> dict[UUID, Aggregate]:
        """Aggregates as stored, many in one round trip; ids not stored are left out."""
        recorder = self.recorder
        assert isinstance(recorder, LedgerRecorder)
        snapshots = self.snapshots
        snapshots_table = (None if snapshots is None else
                           snapshots.recorder.events_table_name)  # type: ignore[attr-defined]
        found: dict[UUID, Aggregate] = {}
        aggregate: Any = None
        current: UUID | None = None
        for is_snapshot, stored in recorder.select_aggregates(aggregate_ids, snapshots_table):
            if stored.originator_id != current:
                if current is not None and aggregate is not None:
                    found[current] = aggregate
                current, aggregate = cast(UUID, stored.originator_id), None
            event = self.mapper.to_domain_event(stored)
            assert isinstance(event, CanMutateProtocol)
            assert is_snapshot or aggregate is not None or stored.originator_version == 1
            aggregate = event.mutate(aggregate)
        if current is not None and aggregate is not None:
            found[current] = aggregate
        return found

    def prefetch(self, items: list[tuple[c.Command, Cause]]) -> None:
        """Load into the cache, in one round trip, what the commands name or read ahead
        (`trading.read_ahead_ids`) and the cache lacks: a batch whose aggregates outgrew the
        cache then pays one round trip, not one (or two) per command."""
        self.warm([aggregate_id for command, cause in items
                   for aggregate_id in (*command.named_ids(),
                                        *trading.read_ahead_ids(command, cause))])

    def warm(self, aggregate_ids: list[UUID]) -> None:
        """Load into the cache, in one round trip, those of these aggregates it lacks (a
        command about to read many, such as a group buy's close, calls it first)."""
        cache = self.repository.cache
        if cache is None:
            return
        missing = list({aggregate_id for aggregate_id in aggregate_ids
                        if not self.cached(aggregate_id)})
        if len(missing) < limits.prefetch_ids_min:
            return
        for aggregate_id, aggregate in self.load_many(missing).items():
            if cacheable(aggregate):
                cache.put(aggregate_id, aggregate)

    def cached(self, aggregate_id: UUID) -> bool:
        cache = self.repository.cache
        if cache is None:
            return False
        try:
            cache.get(aggregate_id)
        except KeyError:
            return False
        return True

    def _evict(self, aggregate_ids: Iterator[UUID] | list[UUID]) -> None:
        cache = self.repository.cache
        if cache is None:
            return
        for aggregate_id in aggregate_ids:
            with contextlib.suppress(KeyError):
                cache.get(aggregate_id, evict=True)

    # Executing ---------------------------------------------------------------------------

    def execute(self, command: c.Command, cause: Cause) -> Outcome:
        """Run one command; return its outcome, or raise its DomainError or
        DatabaseUnavailable (retry the same request)."""
        return self.engine.execute(command, cause)

    def execute_many(self, items: list[tuple[c.Command, Cause]]
                     ) -> list[Outcome | DomainError]:
        """Run many commands in order, sharing transactions (bulk loading)."""
        return self.engine.execute_many(items)

    def execute_atomically(
            self, items: list[tuple[c.Command, Cause]],
            companion_for: Callable[[list[tuple[int, DomainError]]], Sequence[Statement]],
    ) -> list[Outcome | DomainError]:
        """Run commands in order and commit all of them, with the statements
        `companion_for` makes of their rejections, in one transaction (an import's
        chunk); see `Engine.execute_atomically`."""
        return self.engine.execute_atomically(items, companion_for)

    def close(self) -> None:
        """Answer queued commands, let the batch in flight finish, close the pools."""
        self.engine.close()
        recorder = self.recorder
        if isinstance(recorder, LedgerRecorder):
            recorder.writers_lock.close()
            recorder.notifier.close()
        super().close()

    # What the engine asks of the application ------------------------------------------

    def stage(self, pending: Pending, batch: Batch, *, fresh: bool) -> None:
        """Run one command against memory (fresh: against state read from the database)."""
        if fresh:
            replay = self._replay(pending)
            if isinstance(replay, Outcome):
                pending.answer(outcome=replay)
                return
            if replay is not None:  # request_id_reused: a rejection like any other
                batch.rejected.append(Rejected(pending, replay, {}))
                return
        unit = UnitOfWork(self, batch, fresh=fresh)
        try:
            result, complex_id = self._handlers[pending.command.name](
                pending.command, pending.cause, unit)
        except DomainError as error:
            if unit.changed_anything():  # memory changed, then refused: a programmer error
                batch.in_flight.update(unit.touched)  # evicted by the engine
                msg = f"rejected after change: {error}"
                raise AssertionError(msg) from error
            batch.rejected.append(Rejected(pending, error, unit.read))
            return
        except BaseException:
            batch.in_flight.update(unit.touched)  # evicted by the engine
            raise
        events: list[Any] = []
        for aggregate in unit.touched.values():
            new_events = aggregate.collect_events()
            events.extend(new_events)
            batch.in_flight[aggregate.id] = aggregate
            if new_events and new_events[0].originator_version == 1:
                batch.created[aggregate.id] = aggregate
        if not events:  # every accepted command records a fact
            msg = f"{pending.command.name} accepted without an event"
            raise AssertionError(msg)
        request = RequestRow(
            pending.cause.actor_id, pending.cause.request_id, pending.command.name,
            fingerprint(pending.command.name, pending.command.content()), result, complex_id,
            last_event=-1)  # placed when the batch is saved
        batch.staged.append(Staged(pending, events, result, request))

    def save_batch(self, batch: Batch, companion: Sequence[Statement] = ()) -> list[int]:
        all_events = [event for stage in batch.staged for event in stage.events]
        requests: list[RequestRow] = []
        count = 0
        for stage in batch.staged:
            count += len(stage.events)
            requests.append(dataclasses.replace(stage.request, last_event=count - 1))
        written = {event.originator_id for event in all_events}
        read_only = {aggregate_id: version
                     for aggregate_id, version in batch.read_versions.items()
                     if aggregate_id not in written}
        # A log written before request records had their table holds them as events: a
        # request id accepted then must not be accepted again (a primary-key probe each).
        for request in requests:
            read_only[request_record_id(request.actor_id, request.request_id)] = 0
        recordings = self.events.put(all_events, read_versions=read_only, requests=requests,
                                     companion=companion)
        positions = [recording.notification.id for recording in recordings]
        self._last_position = positions[-1] if positions else 0
        return positions

    def saved(self, batch: Batch) -> None:
        cache = self.repository.cache
        for aggregate_id, aggregate in batch.created.items():
            if cache is not None and cacheable(aggregate):
                cache.put(aggregate_id, aggregate)
        self._take_due_snapshots(batch)

    def evict(self, aggregate_ids: list[UUID]) -> None:
        self._evict(aggregate_ids)

    def _catch_up(self, changed: list[StoredEvent]) -> None:
        """Bring cached aggregates up to date with other writers' events (in log order):
        applied to an aggregate cached at the version before, else it is evicted."""
        cache = self.repository.cache
        if cache is None:
            return
        if changed and changed[0] is STALE_ALL:
            self._evict(list(cache.cache))
            return
        for stored in changed:
            aggregate_id = stored.originator_id
            assert isinstance(aggregate_id, UUID)
            try:
                aggregate = cache.get(aggregate_id)
            except KeyError:
                continue
            if stored.originator_version != aggregate.version + 1:
                self._evict([aggregate_id])
                continue
            event = self.mapper.to_domain_event(stored)
            assert isinstance(event, CanMutateProtocol)
            event.mutate(aggregate)

    @contextlib.contextmanager
    def writing_alone(self) -> Iterator[bool]:
        recorder = self.recorder
        assert isinstance(recorder, LedgerRecorder)
        changed = recorder.writers_lock.acquire()
        if changed is None:  # not had in time (or the database is away): without it
            yield False
            return
        saved_before = self._last_position
        try:
            self._catch_up(changed)
            yield True
        finally:
            recorder.writers_lock.release(
                self._last_position if self._last_position != saved_before else None)

    def rejection_stands(self, rejected: Rejected) -> bool:
        cause = rejected.pending.cause
        recorder = self.recorder
        assert isinstance(recorder, LedgerRecorder)
        legacy_record = request_record_id(cause.actor_id, cause.request_id)
        return recorder.unchanged({**rejected.read, legacy_record: 0},
                                  request=(cause.actor_id, cause.request_id))

    def _take_due_snapshots(self, batch: Batch) -> None:
        """Snapshot aggregates whose version just reached a multiple of their interval."""
        due: set[UUID] = set()
        for stage in batch.staged:
            for event in stage.events:
                aggregate = batch.in_flight.get(event.originator_id)
                interval = self.snapshotting_intervals.get(type(aggregate))  # type: ignore[arg-type]
                if interval and event.originator_version % interval == 0:
                    due.add(event.originator_id)
        for aggregate_id in due:
            aggregate = batch.in_flight[aggregate_id]
            try:
                assert self.snapshots is not None
                self.snapshots.put([Snapshot.take(aggregate)])
            except Exception:  # a snapshot is only a cache: never fail a saved command
                logger.exception("snapshot of %s at version %s failed", aggregate_id,
                                 aggregate.version)

    def _replay(self, pending: Pending) -> Outcome | DomainError | None:
        """The recorded outcome of an earlier run of this request, if there was one."""
        recorder = self.recorder
        assert isinstance(recorder, LedgerRecorder)
        found = recorder.find_request(pending.cause.actor_id, pending.cause.request_id)
        if found is None:
            return None
        position, recorded_fingerprint, outcome = found
        if recorded_fingerprint != fingerprint(pending.command.name, pending.command.content()):
            return DomainError(errors.request_id_reused, pending.cause.request_id)
        return Outcome(outcome, position, replayed=True)

    # Handlers: validate everything first, then change. ----------------------------------

    def _register_complex(self, command: c.RegisterComplex, cause: Cause,
                          unit: UnitOfWork) -> Result:
        code = check_identifier("code", command.code)
        name = check_text("name", command.complex_name)
        region = check_text("region", command.region)
        complex_id = complex_id_for(code)
        if unit.exists(complex_id):
            raise DomainError(errors.complex_exists, code)
        fund = Complex.register(code, name, region, cause)
        unit.change(fund)
        return {"complex_id": str(complex_id)}, complex_id

    def _register_household(self, command: c.RegisterHousehold, cause: Cause,
                            unit: UnitOfWork) -> Result:
        unit_name = check_identifier("unit", command.unit)
        fund = unit.get(Complex, command.complex_id, errors.unknown_complex)
        household_id = household_id_for(command.complex_id, unit_name)
        if unit.exists(household_id):
            raise DomainError(errors.household_exists, unit_name)
        household = Household.register(command.complex_id, unit_name, cause)
        unit.change(household, fund)
        fund.count_household(household_id, cause)  # the count a proposal's quorum is reckoned on
        return {"household_id": str(household_id)}, command.complex_id

    def _enrol_resident(self, command: c.EnrolResident, cause: Cause,
                        unit: UnitOfWork) -> Result:
        consent_ref = check_text("consent_ref", command.consent_ref)
        household = unit.get(Household, command.household_id, errors.unknown_household)
        resident_id = command.resident_id or uuid5(
            NAMESPACE_URL, f"ledger:resident:{cause.actor_id}:{cause.request_id}")
        if unit.exists(resident_id):
            raise DomainError(errors.resident_exists, str(resident_id))
        if cause.actor_id != resident_id and cause.on_behalf_of is None:
            cause = Cause(cause.actor_id, cause.actor_role, cause.request_id,
                          cause.occurred_at, on_behalf_of=resident_id)
        wallet = Resident.enrol(resident_id, household.id, household.home_complex_id,
                                consent_ref, cause)
        unit.change(wallet)
        return {"resident_id": str(resident_id)}, household.home_complex_id

    def _register_merchant(self, command: c.RegisterMerchant, cause: Cause,
                           unit: UnitOfWork) -> Result:
        if command.kind not in MERCHANT_KINDS:
            raise DomainError(errors.invalid_seller_kind, command.kind)
        name = check_text("name", command.merchant_name)
        merchant_id = uuid5(NAMESPACE_URL,
                            f"ledger:merchant:{cause.actor_id}:{cause.request_id}")
        if unit.exists(merchant_id):
            raise DomainError(errors.invalid_field, "merchant already registered")
        merchant = Merchant._create(Merchant.Registered, id=merchant_id, kind=command.kind,
                                    name=name, **cause.fields(None))
        unit.change(merchant)
        return {"merchant_id": str(merchant_id)}, None

    def _pay_out_merchant(self, command: c.PayOutMerchant, cause: Cause,
                          unit: UnitOfWork) -> Result:
        payout_id = check_identifier("payout_id", command.payout_id)
        merchant = unit.get(Merchant, command.merchant_id, errors.unknown_merchant)
        unit.change(merchant)
        amount_won = merchant.pay_out(payout_id, cause)
        return ({"merchant_id": str(merchant.id), "payout_id": payout_id,
                 "amount_won": amount_won}, None)

    def _set_accrual_policy(self, command: c.SetAccrualPolicy, cause: Cause,
                            unit: UnitOfWork) -> Result:
        policy = unit.find(AccrualPolicy, POLICY_ID)
        if policy is None:
            policy = AccrualPolicy.create(cause)  # dropped with the command if it is refused
        unit.change(policy)
        version = policy.set_version(command.rate_rows(), cause, lifecycle=command.lifecycle(),
                                     guards=command.guard_settings())
        return {"version": version}, None

    def _record_trade(self, command: c.RecordTrade, cause: Cause,
                      unit: UnitOfWork) -> Result:
        self._refresh_policy(unit)
        return trading.record_trade(command, cause, unit)

    def _refresh_policy(self, unit: UnitOfWork) -> None:
        """Trades only read the policy; reload it now and then, so a version set by another
        process applies here within `policy_reload_seconds`."""
        if POLICY_ID in unit.batch.in_flight or POLICY_ID in unit.touched:
            return
        moment = time.monotonic()
        if moment - self._policy_loaded_at >= limits.policy_reload_seconds:
            self._evict([POLICY_ID])
            self._policy_loaded_at = moment

    def _close_group_buy(self, command: c.CloseGroupBuy, cause: Cause,
                         unit: UnitOfWork) -> Result:
        self._refresh_policy(unit)  # a completed group buy records trades
        return group_buying.close_group_buy(command, cause, unit)

    def _issue_rent_invoice(self, command: c.IssueRentInvoice, cause: Cause,
                            unit: UnitOfWork) -> Result:
        invoice_id = check_identifier("invoice_id", command.invoice_id)
        billing_period = check_billing_period(command.billing_period)
        amount_won = check_amount(command.amount_won)
        due_at = check_aware("due_at", command.due_at)
        household = unit.get(Household, command.household_id, errors.unknown_household)
        unit.change(household)
        household.issue_invoice(invoice_id, billing_period, amount_won, due_at, cause)
        return ({"household_id": str(household.id), "invoice_id": invoice_id},
                household.home_complex_id)

    def _pay_rent(self, command: c.PayRent, cause: Cause,
                  unit: UnitOfWork) -> Result:
        payment_id = check_identifier("payment_id", command.payment_id)
        invoice_id = check_identifier("invoice_id", command.invoice_id)
        billing_period = check_billing_period(command.billing_period)
        amount_won = check_amount(command.amount_won)
        hold_seconds = command.hold_seconds or limits.hold_seconds_default
        if (type(hold_seconds) is not int
                or not limits.hold_seconds_min <= hold_seconds <= limits.hold_seconds_max):
            raise DomainError(errors.invalid_field, "hold_seconds")
        household = unit.get(Household, command.household_id, errors.unknown_household)
        wallet = unit.get(Resident, command.resident_id, errors.unknown_resident)
        if wallet.household_id != household.id:
            raise DomainError(errors.resident_not_in_household, str(wallet.id))
        wallet.check_open()
        locator_id = rent_payment_locator_id(payment_id)
        if unit.exists(locator_id):
            raise DomainError(errors.rent_payment_exists, payment_id)
        household.check_payment(payment_id, invoice_id, billing_period, amount_won)
        wallet.check_can_spend(amount_won)
        deadline_at = cause.occurred_at + timedelta(seconds=hold_seconds)
        # After this point, the hold must succeed.
        locator = RentPaymentLocator.register(payment_id, household.id,
                                              household.home_complex_id, cause)
        unit.change(wallet, household, locator)
        wallet.hold(payment_id, household.id, invoice_id, amount_won, cause)
        household.hold_payment(payment_id, invoice_id, billing_period, wallet.id, amount_won,
                               deadline_at, cause)
        return ({"payment_id": payment_id, "status": "held", "amount_won": amount_won,
                 "deadline_at": deadline_at.isoformat()}, household.home_complex_id)

    def _payment_parts(self, payment_id: str,
                       unit: UnitOfWork) -> tuple[Household, Resident, dict[str, Any]]:
        check_identifier("payment_id", payment_id)
        locator = unit.get(RentPaymentLocator, rent_payment_locator_id(payment_id),
                           errors.unknown_rent_payment)
        household = unit.get(Household, locator.household_id, errors.unknown_household)
        payment = household.open_payment(payment_id)
        wallet = unit.get(Resident, payment["resident_id"], errors.unknown_resident)
        return household, wallet, payment

    def _settle_rent_payment(self, command: c.SettleRentPayment, cause: Cause,
                             unit: UnitOfWork) -> Result:
        household, wallet, payment = self._payment_parts(command.payment_id, unit)
        unit.change(household, wallet)
        household.settle_payment(command.payment_id, cause)
        wallet.settle_hold(command.payment_id, cause)
        return ({"payment_id": command.payment_id, "status": "settled",
                 "amount_won": payment["amount_won"]}, household.home_complex_id)

    def _release(self, payment_id: str, reason: str, now: datetime, cause: Cause,
                 unit: UnitOfWork) -> Result:
        household, wallet, payment = self._payment_parts(payment_id, unit)
        unit.change(household, wallet)
        household.release_payment(payment_id, reason, now, cause)
        wallet.release_hold(payment_id, reason, cause)
        return ({"payment_id": payment_id, "status": reason,
                 "amount_won": payment["amount_won"]}, household.home_complex_id)

    def _release_rent_payment(self, command: c.ReleaseRentPayment, cause: Cause,
                              unit: UnitOfWork) -> Result:
        return self._release(command.payment_id, RELEASED, cause.occurred_at, cause, unit)

    def _expire_rent_payment(self, command: c.ExpireRentPayment, cause: Cause,
                             unit: UnitOfWork) -> Result:
        now = check_aware("now", command.now)
        return self._release(command.payment_id, EXPIRED, now, cause, unit)

    # Reads for tests, the CLI and the seeder (the API reads projections). ------------------

    def snapshot(self, cls: type[A], aggregate_id: UUID) -> A | None:
        """One aggregate's committed state, read from the database: never waits for the
        writers, never sees a batch in flight."""
        aggregate = self.load_fresh(aggregate_id)
        return aggregate if isinstance(aggregate, cls) else None

    def position(self) -> int:
        return self.recorder.max_notification_id() or 0


def aggregate_cache_size() -> int:
    """How many aggregates a writer process keeps in memory: LEDGER_AGGREGATE_CACHE_SIZE,
    else a share of the machine's memory (`limits.aggregate_cache_memory_fraction`)."""
    configured = os.environ.get("LEDGER_AGGREGATE_CACHE_SIZE", "").strip()
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            msg = f"LEDGER_AGGREGATE_CACHE_SIZE must be a positive integer, not {configured!r}"
            raise ValueError(msg)
        return int(configured)
    memory_bytes = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    size = memory_bytes // limits.aggregate_cache_memory_fraction // limits.aggregate_bytes_estimate
    return max(limits.aggregate_cache_size_min, min(limits.aggregate_cache_size_max, size))


def cacheable(aggregate: Aggregate) -> bool:
    """Whether an aggregate is kept in the cache: what commands touch again (wallets,
    households, funds, merchants, the policy), not trades, payment locators or request
    records, which are read again once at most."""
    return not isinstance(aggregate, Trade | RentPaymentLocator | GroupBuyOrderLocator
                          | RequestRecord)


def now() -> datetime:
    return datetime.now(KST)


def wait_until(predicate: Callable[[], bool], timeout_seconds: float) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
