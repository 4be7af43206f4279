"""Scratch state: the auditor's own fold of the event log, written apart from the projections.

`Scratch.apply(event)` folds one stored event (decoded from its JSON, see
`projections.base.decode_row`) into plain in-memory state: wallets, common funds,
merchant settlement accounts, rent invoices and payments, the system accounts,
the accrual policy's versions and every trade's accrual. It re-derives each
account's double-entry postings from the event's fields, so conservation is
checked without the domain classes, and it recomputes every trade's accrual from
the policy version the trade recorded with the ledger's one rounding rule
(`ledger.policy.share_won`, `accrual_base_won`).

This fold shares no code with `projections/`: a projection rule that is wrong
shows up as a difference between the live tables and this state. The first
thing found wrong at a position is kept as a `Finding`; folding goes on so that
the state stays comparable.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from audit.guard_audit import GUARD_BREACHED, GuardTally
from audit.lifecycle_check import (
    LEGACY_EXPIRY_MONTHS,
    LotBook,
    latest_back,
    moment,
    months_later,
    recorded_taking,
    same,
)
from eventlog.log import Event
from ledger.events import (
    FUND_SPENDING,
    ISSUANCE,
    LAPSE_CLEARING,
    PAYOUTS,
    RENT_CLEARING,
    TRADE_CLEARING,
    UNCLAIMED,
)
from ledger.household import EXPIRED, HELD, RELEASED, SETTLED
from ledger.policy import ANY_CATEGORY, accrual_base_won, share_won
from ledger.proposal import APPROVED, OPEN, decide, proposal_aggregate_id

ACCRUAL_MISMATCH = "accrual_mismatch"
ACCRUAL_MISSING = "accrual_missing"
NEGATIVE_BALANCE = "negative_balance"
NOT_CONSERVED = "points_not_conserved"
TRADE_CLEARING_NOT_EMPTY = "trade_clearing_not_empty"
INCONSISTENT_EVENT = "inconsistent_event"
UNKNOWN_EVENT = "unknown_event"
TALLY_MISMATCH = "tally_mismatch"
PROPOSAL_OVERSPENT = "proposal_overspent"
GROUP_BUY_MISMATCH = "group_buy_mismatch"
LOT_MISMATCH = "lot_mismatch"
PENDING_MISMATCH = "pending_mismatch"

SKIPPED = frozenset({"RequestRecord.Accepted", "AccrualPolicy.Created",
                     "RentPaymentLocator.Registered", "Household.Registered",
                     "GroupBuyOrderLocator.Registered"})
GROUP_BUY_TRADE_PREFIX = "group-buy:"
"""The trade of a group-buy order is `group-buy:<order_id>` (ledger.limits)."""


@dataclass(frozen=True)
class Finding:
    """Something wrong at one position of the log, with a stable code."""

    position: int
    code: str
    detail: str


class Wallet:
    __slots__ = ("accrued_total_won", "available_won", "book", "closed", "complex_id",
                 "held_won", "household_id", "owed_won", "pending_won", "position",
                 "spent_total_won")

    def __init__(self, household_id: str | None, complex_id: str | None) -> None:
        self.household_id = household_id
        self.complex_id = complex_id
        self.available_won = 0
        self.held_won = 0
        self.owed_won = 0
        self.accrued_total_won = 0
        self.spent_total_won = 0
        self.closed = False
        self.position = 0
        self.pending_won = 0
        self.book = LotBook()


class Fund:
    __slots__ = ("accrued_total_won", "balance_won", "clawed_back_total_won", "code", "name",
                 "owed_won", "pending", "position", "region", "spent_total_won")

    def __init__(self, code: str | None = None, name: str | None = None,
                 region: str | None = None) -> None:
        self.code, self.name, self.region = code, name, region
        self.balance_won = 0
        self.owed_won = 0
        self.accrued_total_won = 0
        self.clawed_back_total_won = 0
        self.spent_total_won = 0
        self.position = 0
        self.pending: dict[str, tuple[datetime, int]] = {}


class MerchantAccount:
    __slots__ = ("balance_won", "owed_won", "paid_out_won", "payouts_count", "points_received_won",
                 "position")

    def __init__(self) -> None:
        self.balance_won = 0
        self.owed_won = 0
        self.points_received_won = 0
        self.paid_out_won = 0
        self.payouts_count = 0
        self.position = 0


class TradeAccrual:
    """What a recorded trade promised and what its accrual events delivered.

    Within one group-committed transaction a wallet's or fund's events may be stored
    before the trade's own, so an accrual may be seen before its trade is.
    """

    __slots__ = ("cancelled_common_won", "cancelled_personal_won", "common_won",
                 "delivered_common_won", "delivered_personal_won", "personal_won",
                 "points_used_won", "position", "recorded", "refunded")

    def __init__(self, position: int) -> None:
        self.position = position
        self.recorded = False
        self.personal_won = 0
        self.common_won = 0
        self.points_used_won = 0
        self.delivered_personal_won = 0
        self.delivered_common_won = 0
        self.cancelled_personal_won = 0
        self.cancelled_common_won = 0
        self.refunded = False


class ProposalTally:
    """One proposal as the auditor folds it: its rule, its ballots, and what cites it."""

    __slots__ = ("amount_won", "approval_bps", "complex_id", "households", "no_count",
                 "position", "quorum_bps", "spent_won", "state", "yes_count")

    def __init__(self, complex_id: str | None, amount_won: int, quorum_bps: int,
                 approval_bps: int, position: int) -> None:
        self.complex_id = complex_id
        self.amount_won = amount_won
        self.quorum_bps = quorum_bps
        self.approval_bps = approval_bps
        self.position = position
        self.state = OPEN
        self.households: set[str] = set()
        self.yes_count = 0
        self.no_count = 0
        self.spent_won = 0


class GroupBuyState:
    """A group buy as the auditor folds it: its terms, its orders and what its outcome owes.

    Orders are [resident, quantity, points_used_won, money_won, status]."""

    __slots__ = ("deadline_at", "merchant_id", "orders", "position", "quantity_max",
                 "quantity_min", "quantity_ordered", "seller_kind", "state", "unit_price_won")

    def __init__(self, data: dict[str, Any], position: int) -> None:
        self.merchant_id = _uuid(data, "merchant_id")
        self.seller_kind = data["seller_kind"]
        self.unit_price_won = data["unit_price_won"]
        self.quantity_min = data["quantity_min"]
        self.quantity_max = data["quantity_max"]
        self.deadline_at = data["deadline_at"]["_data_"]
        self.quantity_ordered = 0
        self.orders: dict[str, list[Any]] = {}
        self.state = "open"
        self.position = position


@dataclass
class Recomputed:
    """One trade's accrual recomputed from its recorded policy version and inputs."""

    trade_id: str
    policy_version: int
    personal_bps: int
    common_bps: int
    accrual_base_won: int
    personal_won: int
    common_won: int


def rates_for(versions: dict[int, list[dict[str, Any]]], version: int, market: str,
              seller_kind: str, category: str) -> tuple[int, int] | None:
    """(personal_bps, common_bps) of a policy version; a category row beats the `*` row.

    Written again here, from the policy's documented rule, so that a change to
    `AccrualPolicy.rates_for` that alters history is caught rather than inherited.
    """
    rows = versions.get(version)
    if rows is None:
        return None
    fallback = (0, 0)
    for row in rows:
        if row["market"] != market or row["seller_kind"] != seller_kind:
            continue
        if row["category"] == category:
            return row["personal_bps"], row["common_bps"]
        if row["category"] == ANY_CATEGORY:
            fallback = (row["personal_bps"], row["common_bps"])
    return fallback


def recompute(versions: dict[int, list[dict[str, Any]]], data: dict[str, Any]) -> Recomputed | None:
    """A Trade.Recorded event's accrual recomputed; None when its policy version is unknown."""
    rates = rates_for(versions, data["policy_version"], data["market"], data["seller_kind"],
                      data["category"])
    if rates is None:
        return None
    base_won = accrual_base_won(data["amount_won"], data["points_used_won"])
    return Recomputed(data["trade_id"], data["policy_version"], rates[0], rates[1], base_won,
                      share_won(base_won, rates[0]), share_won(base_won, rates[1]))


def accrual_differences(recorded: dict[str, Any], computed: Recomputed) -> list[str]:
    """Fields of a recorded trade that differ from the recomputation, as 'field a != b'."""
    return [f"{name} recorded {recorded[name]}, recomputed {getattr(computed, name)}"
            for name in ("personal_bps", "common_bps", "accrual_base_won", "personal_won",
                         "common_won")
            if recorded[name] != getattr(computed, name)]


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _uuid(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return None if value is None else str(value["_data_"])


@dataclass
class Scratch:
    """Everything the auditor folds from the events, and the first things found wrong."""

    wallets: dict[str, Wallet] = field(default_factory=dict)
    funds: dict[str, Fund] = field(default_factory=dict)
    merchants: dict[str, MerchantAccount] = field(default_factory=dict)
    invoices: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    """(household, invoice id) -> [amount_won, held_won, settled_won, position]."""
    payments: dict[str, list[Any]] = field(default_factory=dict)
    """payment id -> [household, invoice id, amount_won, status, position]."""
    system: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        (ISSUANCE, RENT_CLEARING, FUND_SPENDING, PAYOUTS, UNCLAIMED, TRADE_CLEARING,
         LAPSE_CLEARING), 0))
    versions: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    trades: dict[str, TradeAccrual] = field(default_factory=dict)
    proposals: dict[str, ProposalTally] = field(default_factory=dict)
    """proposal id (the client's) -> its tally."""
    households_counted: dict[str, int] = field(default_factory=dict)
    """complex -> households counted (Complex.HouseholdCounted)."""
    household_complexes: dict[str, str] = field(default_factory=dict)
    cited_spends: dict[str, list[Any]] = field(default_factory=dict)
    """spend id -> [proposal id by FundSpent, by SpendCited, amount, cited amount, position]."""
    tallies_recomputed: int = 0
    group_buys: dict[str, GroupBuyState] = field(default_factory=dict)
    owed_by_outcomes: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    """order id -> (what its group buy's outcome owes it: "spent" or "released", the group
    buy, the position of the outcome), until the wallet's event for it is seen."""
    group_buys_recomputed: int = 0
    findings: list[Finding] = field(default_factory=list)
    findings_max: int = 100
    events: int = 0
    trades_recomputed: int = 0
    position: int = 0
    clearing_since: int = 0
    """First position after which the trade clearing account has not been empty."""
    check_accruals: bool = True
    guard_tally: GuardTally = field(default_factory=GuardTally)
    pairs: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    """TradePair aggregate -> (resident, other resident, KST month), from TradePair.Opened."""
    slice_index: int = 0
    slices: int = 1
    """This fold keeps the state of one hash slice of wallets, trades and households
    (`owns_uuid`, `owns_trade`); `slices` folds, one per index, together see everything
    once. Accounts' postings are counted by the slice that owns their event (the shared
    accounts' by slice 0), so the slices' `accounts()` add up to the unsliced fold's."""
    clearing_won: int = 0
    """The trade clearing account over every event, whichever slice owns it (for
    `clearing_since`): its postings are read from the events' fields alone."""

    # Slices -------------------------------------------------------------------------------

    def owns_uuid(self, hex_id: str) -> bool:
        """A wallet or household (32 hex digits) belongs to this slice: its last 32 bits
        modulo the number of slices (`slice_sql` says the same in SQL)."""
        return self.slices == 1 or int(hex_id[-8:], 16) % self.slices == self.slice_index

    def owns_trade(self, trade_id: str) -> bool:
        return (self.slices == 1
                or zlib.crc32(trade_id.encode()) % self.slices == self.slice_index)

    @property
    def owns_shared(self) -> bool:
        """Slice 0 also owns the shared accounts: funds, merchants, proposals, group buys."""
        return self.slice_index == 0

    # Findings -----------------------------------------------------------------------------

    def found(self, position: int, code: str, detail: str) -> None:
        if len(self.findings) < self.findings_max:
            self.findings.append(Finding(position, code, detail))

    def _not_negative(self, position: int, name: str, amount_won: int) -> None:
        if amount_won < 0:
            self.found(position, NEGATIVE_BALANCE, f"{name} would be {amount_won:,} won")

    # Folding ------------------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        """Fold one event; events must come in log order."""
        name = event.name
        if name in SKIPPED:
            return
        self.events += 1
        self.position = event.position
        clearing_before = self.clearing_won
        posted_before = self.system[TRADE_CLEARING]
        kind, _, what = name.partition(".")
        handler = _HANDLERS.get(kind)
        if handler is None:
            self.found(event.position, UNKNOWN_EVENT, f"no audit rule for {name}")
        elif self.slices == 1:
            handler(self, what, event)
        elif kind == "Resident" and not self.owns_uuid(event.originator_id):
            self._resident_elsewhere(what, event)
        elif kind == "Household" and not self.owns_uuid(event.originator_id):
            pass
        elif kind in ("Complex", "Merchant") and not self.owns_shared:
            # Folded for the trades and citations they touch; their postings are slice 0's.
            system = dict(self.system)
            handler(self, what, event)
            self.clearing_won += self.system[TRADE_CLEARING] - system[TRADE_CLEARING]
            self.system = system
            posted_before = system[TRADE_CLEARING]
        else:
            handler(self, what, event)
        self.clearing_won += self.system[TRADE_CLEARING] - posted_before
        if clearing_before == 0 and self.clearing_won != 0:
            self.clearing_since = event.position

    def _resident_elsewhere(self, what: str, event: Event) -> None:
        """A wallet event of another slice: only what it does to the trades and group-buy
        orders this slice keeps, and to the trade clearing account."""
        data = event.data
        if what == "PointsAccrued":
            self._accrued(event, "personal")
        elif what == "AccrualClawedBack":
            self._clawed_back(event, "personal")
        elif what in ("PointsReceived", "PointsRefunded"):
            self.clearing_won -= data["amount_won"]
        elif what in ("PointsSpent", "PaymentReturned"):
            self.clearing_won += data["amount_won"]
        elif what == "OrderPointsHeld":
            self._order_hold(event, "held")
        elif what == "OrderHoldSpent":
            self.clearing_won += data["amount_won"]
            self._order_hold(event, "spent")
        elif what == "OrderHoldReleased":
            self._order_hold(event, data["reason"])

    def _wallet(self, event: Event) -> Wallet:
        wallet = self.wallets.get(event.originator_id)
        if wallet is None:
            self.found(event.position, INCONSISTENT_EVENT, f"{event.name} of a wallet never "
                       f"enrolled ({event.originator_id})")
            wallet = self.wallets[event.originator_id] = Wallet(None, None)
        wallet.position = event.position
        return wallet

    def _resident(self, what: str, event: Event) -> None:
        data = event.data
        position = event.position
        system = self.system
        if what == "Enrolled":
            wallet = Wallet(_uuid(data, "household_id"), _uuid(data, "complex_id"))
            wallet.position = position
            self.wallets[event.originator_id] = wallet
            return
        wallet = self._wallet(event)
        label = f"wallet {event.originator_id}"
        if what == "PointsAccrued" and data.get("pending_until") is not None:
            amount = data["amount_won"]
            wallet.book.pending[data["trade_id"]] = (moment(data["pending_until"]), amount)
            wallet.pending_won += amount
            wallet.accrued_total_won += amount
            system[ISSUANCE] -= amount
            self._accrued(event, "personal")
        elif what in ("PendingPointsReleased", "PendingPointsCancelled"):
            self._pending_ends(what, event, wallet, label)
        elif what in ("PointsExpired", "MovedOut") and "lots" in data:
            self._lapse(what, event, wallet, label)
        elif what in ("PointsAccrued", "PointsReceived", "PointsRefunded"):
            amount, recovered = data["amount_won"], data["recovered_won"]
            self._lot_credit(what, event, wallet, amount - recovered)
            if not 0 <= recovered <= min(amount, wallet.owed_won):
                self.found(position, INCONSISTENT_EVENT,
                           f"{label}: recovered {recovered} of {amount}, owed {wallet.owed_won}")
            wallet.owed_won -= recovered
            wallet.available_won += amount - recovered
            if what == "PointsAccrued":
                wallet.accrued_total_won += amount
                system[ISSUANCE] -= amount - recovered
                self._accrued(event, "personal")
            else:
                system[TRADE_CLEARING] -= amount
                system[ISSUANCE] += recovered
                if what == "PointsRefunded":
                    wallet.spent_total_won -= amount
        elif what == "PointsSpent":
            amount = data["amount_won"]
            wallet.book.spent_lots[data["trade_id"]] = self._lot_debit(event, wallet, amount)
            wallet.available_won -= amount
            wallet.spent_total_won += amount
            system[TRADE_CLEARING] += amount
            self._not_negative(position, label, wallet.available_won)
        elif what in ("AccrualClawedBack", "PaymentReturned"):
            amount, taken, owed = data["amount_won"], data["taken_won"], data["owed_won"]
            if taken + owed != amount or taken > wallet.available_won:
                self.found(position, INCONSISTENT_EVENT,
                           f"{label}: takes {taken} + owes {owed} of {amount} with "
                           f"{wallet.available_won} available")
            self._lot_debit(event, wallet, taken)
            wallet.available_won -= taken
            wallet.owed_won += owed
            if what == "AccrualClawedBack":
                wallet.accrued_total_won -= amount
                system[ISSUANCE] += taken
                self._clawed_back(event, "personal")
            else:
                system[ISSUANCE] -= owed
                system[TRADE_CLEARING] += amount
            self._not_negative(position, label, wallet.available_won)
        elif what == "PointsHeld":
            amount = data["amount_won"]
            wallet.book.hold_lots[data["payment_id"]] = self._lot_debit(event, wallet, amount)
            wallet.available_won -= amount
            wallet.held_won += amount
            self._not_negative(position, label, wallet.available_won)
        elif what in ("HoldSettled", "HoldReleased"):
            amount = data["amount_won"]
            wallet.held_won -= amount
            taking = wallet.book.hold_lots.pop(data["payment_id"], [])
            if what == "HoldSettled":
                wallet.spent_total_won += amount
                system[RENT_CLEARING] += amount
            else:
                wallet.available_won += amount
                wallet.book.give_back(taking)
            self._not_negative(position, f"held points of {label}", wallet.held_won)
        elif what == "OrderPointsHeld":
            amount = data["amount_won"]
            wallet.book.hold_lots[f"order:{data['order_id']}"] = self._lot_debit(
                event, wallet, amount)
            wallet.available_won -= amount
            wallet.held_won += amount
            self._not_negative(position, label, wallet.available_won)
            self._order_hold(event, "held")
        elif what in ("OrderHoldReleased", "OrderHoldSpent"):
            amount = data["amount_won"]
            wallet.held_won -= amount
            taking = wallet.book.hold_lots.pop(f"order:{data['order_id']}", [])
            if what == "OrderHoldSpent":
                wallet.spent_total_won += amount
                system[TRADE_CLEARING] += amount
                wallet.book.spent_lots[data["trade_id"]] = taking
            else:
                wallet.available_won += amount
                wallet.book.give_back(taking)
            self._not_negative(position, f"held points of {label}", wallet.held_won)
            self._order_hold(event, "spent" if what == "OrderHoldSpent" else data["reason"])
        elif what == "MovedOut":
            remaining = data["remaining_won"]
            if remaining != wallet.available_won or wallet.held_won:
                self.found(position, INCONSISTENT_EVENT,
                           f"{label} moved out with {remaining} of {wallet.available_won} "
                           f"available and {wallet.held_won} held")
            wallet.available_won -= remaining
            wallet.closed = True
            system[UNCLAIMED] += remaining
            wallet.book.lots.clear()
        else:
            self.found(position, UNKNOWN_EVENT, f"no audit rule for {event.name}")

    # Lots and pending shares (see audit.lifecycle_check) ---------------------------------

    def _lot_credit(self, what: str, event: Event, wallet: Wallet, kept_won: int) -> None:
        data = event.data
        trade_id = data["trade_id"]
        if what == "PointsRefunded":
            taking = wallet.book.spent_lots.pop(trade_id, None)
            back = (latest_back(taking, kept_won) if taking is not None else
                    [(f"refund:{trade_id}", months_later(moment(event.occurred_at),
                                                         LEGACY_EXPIRY_MONTHS), kept_won)])
            recorded = recorded_taking(data)
            if recorded is not None and not same(recorded, back):
                self.found(event.position, LOT_MISMATCH,
                           f"refund of trade {trade_id} to wallet {event.originator_id} "
                           f"gives back {recorded}, recomputed {back}")
            wallet.book.give_back(back if recorded is None else recorded)
            return
        expires = data.get("expires_at")
        expires_at = (moment(expires) if expires is not None else
                      months_later(moment(event.occurred_at), LEGACY_EXPIRY_MONTHS))
        prefix = "accrual" if what == "PointsAccrued" else "received"
        wallet.book.credit(f"{prefix}:{trade_id}", expires_at, kept_won)

    def _lot_debit(self, event: Event, wallet: Wallet,
                   amount_won: int) -> list[tuple[str, datetime, int]]:
        """Take `amount_won` earliest-expiring first; the event must record just that."""
        if amount_won > wallet.book.total_won():
            self.found(event.position, LOT_MISMATCH,
                       f"wallet {event.originator_id}: {event.name} takes {amount_won:,} won, "
                       f"its lots hold {wallet.book.total_won():,}")
        taking = wallet.book.take(min(amount_won, wallet.book.total_won()))
        recorded = recorded_taking(event.data)
        if recorded is not None and not same(recorded, taking):
            self.found(event.position, LOT_MISMATCH,
                       f"wallet {event.originator_id}: {event.name} records lots {recorded}, "
                       f"earliest-expiring first is {taking}")
        return taking

    def _pending_ends(self, what: str, event: Event, wallet: Wallet, label: str) -> None:
        data = event.data
        trade_id, amount = data["trade_id"], data["amount_won"]
        pending = wallet.book.pending.pop(trade_id, None)
        if pending is None or pending[1] != amount:
            self.found(event.position, PENDING_MISMATCH,
                       f"{label}: {event.name} of {amount:,} won for trade {trade_id}, "
                       f"pending {pending}")
            return
        wallet.pending_won -= amount
        happened = moment(event.occurred_at)
        if what == "PendingPointsReleased":
            if happened < pending[0]:
                self.found(event.position, PENDING_MISMATCH,
                           f"{label}: trade {trade_id} released before its window ended")
            recovered = data["recovered_won"]
            wallet.owed_won -= recovered
            wallet.available_won += amount - recovered
            self.system[ISSUANCE] += recovered
            wallet.book.credit(f"accrual:{trade_id}", moment(data["expires_at"]),
                               amount - recovered)
        else:
            if happened >= pending[0]:
                self.found(event.position, PENDING_MISMATCH,
                           f"{label}: trade {trade_id} cancelled after its window ended")
            wallet.accrued_total_won -= amount
            self.system[ISSUANCE] += amount
            self._cancelled(trade_id, "personal", amount)

    def _lapse(self, what: str, event: Event, wallet: Wallet, label: str) -> None:
        """Expired lots, or a move-out's remaining lots, leave the wallet lot by lot."""
        data = event.data
        destination = data["expired_to"] if what == "PointsExpired" else data["moved_to"]
        amount = data["amount_won"] if what == "PointsExpired" else data["remaining_won"]
        if what == "PointsExpired":
            happened = moment(event.occurred_at)
            recorded = recorded_taking(data) or []
            for lot_id, expires_at, part in recorded:
                lot = wallet.book.lots.get(lot_id)
                if lot is None or lot[0] != expires_at or lot[1] != part or happened < lot[0]:
                    self.found(event.position, LOT_MISMATCH,
                               f"{label}: expires lot {lot_id} ({part:,} won, {expires_at}) "
                               f"that is {lot}, at {happened}")
                else:
                    del wallet.book.lots[lot_id]
            if sum(part for _, _, part in recorded) != amount:
                self.found(event.position, LOT_MISMATCH, f"{label}: expiry total differs")
        else:
            if amount != wallet.available_won or wallet.held_won:
                self.found(event.position, INCONSISTENT_EVENT,
                           f"{label} moved out with {amount} of {wallet.available_won} "
                           f"available and {wallet.held_won} held")
            self._lot_debit(event, wallet, amount)
            cancelled = data.get("pending_cancelled_won", 0)
            if cancelled != wallet.pending_won:
                self.found(event.position, PENDING_MISMATCH,
                           f"{label}: move-out cancels {cancelled:,} pending of "
                           f"{wallet.pending_won:,}")
            for trade_id, (_, part) in wallet.book.pending.items():
                self._cancelled(trade_id, "personal", part)
            wallet.book.pending.clear()
            wallet.pending_won = 0
            self.system[ISSUANCE] += cancelled
            wallet.closed = True
        wallet.available_won -= amount
        self._not_negative(event.position, label, wallet.available_won)
        target = {"fund": LAPSE_CLEARING, "issuance": ISSUANCE, "unclaimed": UNCLAIMED}.get(
            destination)
        if target is None:
            self.found(event.position, INCONSISTENT_EVENT, f"{label}: lapse to {destination}")
            return
        self.system[target] += amount

    def _cancelled(self, trade_id: str, share: str, amount_won: int) -> None:
        """A pending share cancelled: its trade delivered that much less."""
        if not self.check_accruals or not self.owns_trade(trade_id):
            return
        trade = self.trades.get(trade_id)
        if trade is None:
            return
        if share == "personal":
            trade.cancelled_personal_won += amount_won
        else:
            trade.cancelled_common_won += amount_won

    def _complex(self, what: str, event: Event) -> None:
        data = event.data
        position = event.position
        if what == "Registered":
            fund = Fund(data["code"], data["name"], data["region"])
            fund.position = position
            self.funds[event.originator_id] = fund
            return
        found = self.funds.get(event.originator_id)
        if found is None:
            self.found(position, INCONSISTENT_EVENT, f"{event.name} of an unregistered complex")
            found = self.funds[event.originator_id] = Fund()
        fund = found
        fund.position = position
        label = f"common fund {event.originator_id}"
        if what == "CommonPointsAccrued" and data.get("pending_until") is not None:
            amount = data["amount_won"]
            fund.pending[data["trade_id"]] = (moment(data["pending_until"]), amount)
            fund.accrued_total_won += amount
            self.system[ISSUANCE] -= amount
            self._accrued(event, "common")
        elif what in ("PendingCommonPointsReleased", "PendingCommonPointsCancelled"):
            trade_id, amount = data["trade_id"], data["amount_won"]
            pending = fund.pending.pop(trade_id, None)
            if pending is None or pending[1] != amount:
                self.found(position, PENDING_MISMATCH,
                           f"{label}: {event.name} of {amount:,} won for trade {trade_id}, "
                           f"pending {pending}")
            elif what == "PendingCommonPointsReleased":
                recovered = data["recovered_won"]
                fund.owed_won -= recovered
                fund.balance_won += amount - recovered
                self.system[ISSUANCE] += recovered
            else:
                fund.accrued_total_won -= amount
                self.system[ISSUANCE] += amount
                self._cancelled(trade_id, "common", amount)
        elif what == "LapsedPointsReceived":
            amount, recovered = data["amount_won"], data["recovered_won"]
            fund.owed_won -= recovered
            fund.balance_won += amount - recovered
            self.system[LAPSE_CLEARING] -= amount
            self.system[ISSUANCE] += recovered
        elif what == "CommonPointsAccrued":
            amount, recovered = data["amount_won"], data["recovered_won"]
            fund.owed_won -= recovered
            fund.balance_won += amount - recovered
            fund.accrued_total_won += amount
            self.system[ISSUANCE] -= amount - recovered
            self._accrued(event, "common")
        elif what == "CommonPointsClawedBack":
            taken, owed = data["taken_won"], data["owed_won"]
            fund.balance_won -= taken
            fund.owed_won += owed
            fund.clawed_back_total_won += data["amount_won"]
            self.system[ISSUANCE] += taken
            self._clawed_back(event, "common")
            self._not_negative(position, label, fund.balance_won)
        elif what == "FundSpent":
            amount = data["amount_won"]
            fund.balance_won -= amount
            fund.spent_total_won += amount
            self.system[FUND_SPENDING] += amount
            self._not_negative(position, label, fund.balance_won)
            if data.get("proposal_id"):
                cited = self.cited_spends.setdefault(data["spend_id"],
                                                     [None, None, 0, 0, position])
                cited[0], cited[2] = data["proposal_id"], amount
        elif what == "HouseholdCounted":
            complex_id = event.originator_id
            self.households_counted[complex_id] = self.households_counted.get(complex_id, 0) + 1
            household_id = _uuid(data, "household_id")
            if household_id is not None:
                self.household_complexes[household_id] = complex_id
        elif what == "FundAllowanceSet":
            pass  # a limit on later commands; no points move
        else:
            self.found(position, UNKNOWN_EVENT, f"no audit rule for {event.name}")

    def _proposal(self, what: str, event: Event) -> None:
        """Recompute every tally and decision; spends citing a proposal stay within it."""
        data = event.data
        position = event.position
        if what == "Opened":
            self.proposals[event.originator_id] = ProposalTally(
                _uuid(data, "complex_id"), data["amount_won"], data["quorum_bps"],
                data["approval_bps"], position)
            return
        tally = self.proposals.get(event.originator_id)
        if tally is None:
            self.found(position, INCONSISTENT_EVENT, f"{event.name} of a proposal never opened")
            tally = self.proposals[event.originator_id] = ProposalTally(None, 0, 0, 0, position)
        tally.position = position
        label = f"proposal {event.originator_id}"
        if what == "BallotCast":
            household_id = _uuid(data, "household_id") or ""
            if tally.state != OPEN or household_id in tally.households:
                self.found(position, TALLY_MISMATCH,
                           f"{label}: a ballot of household {household_id} after the decision "
                           "or a second one")
            home = self.household_complexes.get(household_id)
            if home is not None and home != tally.complex_id:
                self.found(position, TALLY_MISMATCH,
                           f"{label}: a ballot of household {household_id} of another complex")
            tally.households.add(household_id)
            if data["choice"] == "yes":
                tally.yes_count += 1
            else:
                tally.no_count += 1
        elif what == "Decided":
            households = self.households_counted.get(tally.complex_id or "", 0)
            ballots = tally.yes_count + tally.no_count
            expected = decide(households, ballots, tally.yes_count, tally.quorum_bps,
                              tally.approval_bps)
            recorded = (data["outcome"], data["households_count"], data["ballots_count"],
                        data["yes_count"], data["no_count"], data["quorum_bps"],
                        data["approval_bps"])
            computed = (expected, households, ballots, tally.yes_count, tally.no_count,
                        tally.quorum_bps, tally.approval_bps)
            self.tallies_recomputed += 1
            if tally.state != OPEN or recorded != computed:
                self.found(position, TALLY_MISMATCH,
                           f"{label} recorded (outcome, households, ballots, yes, no, quorum, "
                           f"approval) {recorded}, recomputed {computed}")
            tally.state = data["outcome"]
        elif what == "SpendCited":
            amount = data["amount_won"]
            tally.spent_won += amount
            if tally.state != APPROVED or tally.spent_won > tally.amount_won:
                self.found(position, PROPOSAL_OVERSPENT,
                           f"{label} ({tally.state}) cited for {tally.spent_won:,} won of "
                           f"{tally.amount_won:,}")
            cited = self.cited_spends.setdefault(data["spend_id"], [None, None, 0, 0, position])
            cited[1], cited[3] = event.originator_id, amount
        else:
            self.found(position, UNKNOWN_EVENT, f"no audit rule for {event.name}")

    def _merchant(self, what: str, event: Event) -> None:
        data = event.data
        account = self.merchants.get(event.originator_id)
        if account is None:
            account = self.merchants[event.originator_id] = MerchantAccount()
        account.position = event.position
        label = f"merchant {event.originator_id}"
        if what == "Registered":
            return
        if what == "SettlementCredited":
            amount, recovered = data["amount_won"], data["recovered_won"]
            account.points_received_won += amount
            account.balance_won += amount - recovered
            account.owed_won -= recovered
            self.system[TRADE_CLEARING] -= amount
            self.system[ISSUANCE] += recovered
        elif what == "SettlementReturned":
            amount, taken, owed = data["amount_won"], data["taken_won"], data["owed_won"]
            account.points_received_won -= amount
            account.balance_won -= taken
            account.owed_won += owed
            self.system[ISSUANCE] -= owed
            self.system[TRADE_CLEARING] += amount
        elif what == "PaidOut":
            amount = data["amount_won"]
            account.balance_won -= amount
            account.paid_out_won += amount
            account.payouts_count += 1
            self.system[PAYOUTS] += amount
        else:
            self.found(event.position, UNKNOWN_EVENT, f"no audit rule for {event.name}")
            return
        self._not_negative(event.position, label, account.balance_won)

    def _household(self, what: str, event: Event) -> None:
        data = event.data
        household = event.originator_id
        position = event.position
        if what == "RentInvoiceIssued":
            self.invoices[(household, data["invoice_id"])] = [data["amount_won"], 0, 0, position]
            return
        invoice = self.invoices.get((household, data["invoice_id"]))
        if invoice is None:
            self.found(position, INCONSISTENT_EVENT, f"{event.name} on unknown invoice "
                       f"{data['invoice_id']}")
            invoice = self.invoices[(household, data["invoice_id"])] = [0, 0, 0, position]
        invoice[3] = position
        amount = data["amount_won"]
        payment_id = data["payment_id"]
        if what == "RentPaymentHeld":
            invoice[1] += amount
            self.payments[payment_id] = [household, data["invoice_id"], amount, HELD, position]
            if invoice[1] + invoice[2] > invoice[0]:
                self.found(position, INCONSISTENT_EVENT,
                           f"invoice {data['invoice_id']} holds and settlements exceed it")
            return
        payment = self.payments.get(payment_id)
        if payment is None or payment[3] != HELD:
            self.found(position, INCONSISTENT_EVENT, f"{event.name} of payment {payment_id} "
                       "that is not held")
            return
        payment[4] = position
        invoice[1] -= amount
        if what == "RentPaymentSettled":
            invoice[2] += amount
            payment[3] = SETTLED
        elif what == "RentPaymentReleased":
            payment[3] = EXPIRED if data["reason"] == EXPIRED else RELEASED
        else:
            self.found(position, UNKNOWN_EVENT, f"no audit rule for {event.name}")

    def _policy(self, what: str, event: Event) -> None:
        if what == "VersionSet":
            self.versions[event.data["version"]] = event.data["rates"]
            self.guard_tally.version_set(event.data)
        else:
            self.found(event.position, UNKNOWN_EVENT, f"no audit rule for {event.name}")

    def _trade(self, what: str, event: Event) -> None:
        data = event.data
        trade_id = data["trade_id"]
        if what == "Recorded" and not self.owns_trade(trade_id):
            # Another slice keeps this trade; the group-buy and guard checks read shared state.
            if trade_id.startswith(GROUP_BUY_TRADE_PREFIX):
                self._order_trade(event)
            self._check_guards(event)
        elif what == "Recorded":
            trade = self.trades.get(trade_id)
            if trade is None:
                trade = self.trades[trade_id] = TradeAccrual(event.position)
            if trade.recorded:
                self.found(event.position, INCONSISTENT_EVENT, f"trade {trade_id} recorded twice")
            trade.recorded = True
            trade.position = event.position
            trade.personal_won = data["personal_won"]
            trade.common_won = data["common_won"]
            trade.points_used_won = data["points_used_won"]
            self._check_delivered(trade_id, trade, event.position)
            if trade_id.startswith(GROUP_BUY_TRADE_PREFIX):
                self._order_trade(event)
            if self.check_accruals:
                self._recompute_accrual(event)
            self._check_guards(event)
        elif what == "Refunded":
            if self.owns_trade(trade_id):
                self._trade_refunded(event)
        else:
            self.found(event.position, UNKNOWN_EVENT, f"no audit rule for {event.name}")

    def _check_guards(self, event: Event) -> None:
        """The wash-trade guards; the same-household rule is checked by the slice that
        keeps the seller's wallet (the others do not know its household)."""
        data = event.data
        seller = self.wallets.get(str(data["seller_id"]["_data_"]))
        for breach in self.guard_tally.trade_recorded(
                data, event.occurred_at, None if seller is None else seller.household_id):
            self.found(event.position, GUARD_BREACHED, breach)

    def _recompute_accrual(self, event: Event) -> None:
        """The trade's accrual, recomputed from the policy version it recorded."""
        data = event.data
        trade_id = data["trade_id"]
        computed = recompute(self.versions, data)
        self.trades_recomputed += 1
        if computed is None:
            self.found(event.position, ACCRUAL_MISMATCH,
                       f"trade {trade_id} names unknown policy version "
                       f"{data['policy_version']}")
            return
        differences = accrual_differences(data, computed)
        if differences:
            self.found(event.position, ACCRUAL_MISMATCH,
                       f"trade {trade_id} (policy version {data['policy_version']}): "
                       + "; ".join(differences))

    def _trade_refunded(self, event: Event) -> None:
        """A refund claws back what the trade accrued, once."""
        data = event.data
        trade_id = data["trade_id"]
        trade = self.trades.get(trade_id)
        if trade is None or trade.refunded:
            self.found(event.position, INCONSISTENT_EVENT,
                       f"refund of trade {trade_id} that is unknown or already refunded")
            return
        trade.refunded = True
        # A refund inside the return window cancels pending shares instead of clawing back.
        if (data["personal_clawback_won"] + data.get("personal_cancelled_won", 0),
                data["common_clawback_won"] + data.get("common_cancelled_won", 0),
                data["points_returned_won"]) != (trade.personal_won, trade.common_won,
                                                 trade.points_used_won):
            self.found(event.position, ACCRUAL_MISMATCH,
                       f"refund of trade {trade_id} claws back other amounts than it accrued")

    def _trade_pair(self, what: str, event: Event) -> None:
        """A pair's counter of trades per KST month (ledger.guards): it must agree with the
        trades recomputed for the pair."""
        data = event.data
        if what == "Opened":
            low, high = sorted((str(_uuid(data, "resident_id")),
                                str(_uuid(data, "other_resident_id"))))
            self.pairs[event.originator_id] = (low, high, data["month"])
        elif what == "TradeCounted":
            problem = self.guard_tally.trade_counted(data, self.pairs.get(event.originator_id))
            if problem is not None:
                self.found(event.position, GUARD_BREACHED, problem)
        else:
            self.found(event.position, UNKNOWN_EVENT, f"no audit rule for {event.name}")

    # Group buys --------------------------------------------------------------------------

    def _group_buy(self, what: str, event: Event) -> None:
        """Fold a group buy's events and recompute its outcome from its orders: completed
        exactly when the ordered quantity reached the minimum (early only then), cancelled
        only at or after the deadline, with the totals of its open orders; each of those
        orders then owes one wallet event (its hold spent, or released) and, if completed,
        one trade of its quantity and points."""
        data = event.data
        group_buy_id = data["group_buy_id"]
        position = event.position
        if what == "Opened":
            self.group_buys[group_buy_id] = GroupBuyState(data, position)
            return
        found = self.group_buys.get(group_buy_id)
        if found is None:
            self.found(position, INCONSISTENT_EVENT, f"{event.name} of group buy "
                       f"{group_buy_id}, never opened")
            return
        group_buy = found
        group_buy.position = position
        label = f"group buy {group_buy_id}"
        if group_buy.state != "open":
            self.found(position, GROUP_BUY_MISMATCH, f"{event.name} after {label} closed")
        if what == "OrderPlaced":
            quantity, points = data["quantity"], data["points_used_won"]
            money = quantity * group_buy.unit_price_won - points
            if data["money_won"] != money or money < 0:
                self.found(position, GROUP_BUY_MISMATCH,
                           f"{label} order {data['order_id']}: money part {data['money_won']}, "
                           f"recomputed {money}")
            if data["order_id"] in group_buy.orders:
                self.found(position, GROUP_BUY_MISMATCH,
                           f"{label} order {data['order_id']} placed twice")
            group_buy.quantity_ordered += quantity
            group_buy.orders[data["order_id"]] = [_uuid(data, "resident_id"), quantity, points,
                                                  data["money_won"], "open"]
            if group_buy.quantity_ordered > group_buy.quantity_max:
                self.found(position, GROUP_BUY_MISMATCH,
                           f"{label}: {group_buy.quantity_ordered} ordered, maximum "
                           f"{group_buy.quantity_max}")
        elif what == "OrderCancelled":
            order = group_buy.orders.get(data["order_id"])
            if order is None or order[4] != "open":
                self.found(position, GROUP_BUY_MISMATCH,
                           f"{label}: cancelled order {data['order_id']} is not open")
                return
            order[4] = "cancelled"
            group_buy.quantity_ordered -= order[1]
            self.owed_by_outcomes[data["order_id"]] = ("order_cancelled", group_buy_id,
                                                       position)
        elif what in ("Completed", "Cancelled"):
            self._group_buy_outcome(what, event, group_buy, label)
        else:
            self.found(position, UNKNOWN_EVENT, f"no audit rule for {event.name}")
        if group_buy.quantity_ordered != data.get("quantity_ordered", group_buy.quantity_ordered):
            self.found(position, GROUP_BUY_MISMATCH,
                       f"{label}: records {data['quantity_ordered']} ordered, recomputed "
                       f"{group_buy.quantity_ordered}")

    def _group_buy_outcome(self, what: str, event: Event, group_buy: GroupBuyState,
                           label: str) -> None:
        data = event.data
        position = event.position
        self.group_buys_recomputed += 1
        reached = group_buy.quantity_ordered >= group_buy.quantity_min
        before_deadline = _moment(event.occurred_at) < _moment(group_buy.deadline_at)
        expected = "Completed" if reached else "Cancelled"
        if what != expected or (what == "Cancelled" and before_deadline):
            self.found(position, GROUP_BUY_MISMATCH,
                       f"{label} {what.lower()} with {group_buy.quantity_ordered} ordered of "
                       f"minimum {group_buy.quantity_min}"
                       + (", before its deadline" if before_deadline else ""))
        open_orders = {order_id: order for order_id, order in group_buy.orders.items()
                       if order[4] == "open"}
        totals = (len(open_orders), sum(o[2] for o in open_orders.values()),
                  sum(o[3] for o in open_orders.values()))
        recorded = (data["orders_count"], data["points_used_won_total"],
                    data["money_won_total"])
        if totals != recorded:
            self.found(position, GROUP_BUY_MISMATCH,
                       f"{label}: outcome records (orders, points, money) {recorded}, "
                       f"recomputed {totals}")
        owed = "spent" if what == "Completed" else "group_buy_cancelled"
        for order_id, order in open_orders.items():
            order[4] = "settled" if what == "Completed" else "released"
            self.owed_by_outcomes[order_id] = (owed, data["group_buy_id"], position)
        group_buy.state = "completed" if what == "Completed" else "cancelled"

    def _order_hold(self, event: Event, what: str) -> None:
        """A wallet's order hold: held when the order is placed; spent or released exactly
        as its cancellation or its group buy's outcome owes it."""
        if not self.check_accruals:  # one wallet's statement: its group buys are not folded
            return
        data = event.data
        order_id = data["order_id"]
        if what == "held":
            group_buy = self.group_buys.get(data["group_buy_id"])
            order = None if group_buy is None else group_buy.orders.get(order_id)
            if order is not None and (order[0], order[2]) != (event.originator_id,
                                                                data["amount_won"]):
                self.found(event.position, GROUP_BUY_MISMATCH,
                           f"order {order_id} holds {data['amount_won']} on wallet "
                           f"{event.originator_id}, not as ordered")
            return
        owed = self.owed_by_outcomes.pop(order_id, None)
        if owed is None or owed[0] != what:
            self.found(event.position, GROUP_BUY_MISMATCH,
                       f"order {order_id}: hold {what} without a cancellation or outcome "
                       "that owes it")

    def _order_trade(self, event: Event) -> None:
        """A group-buy order's trade: the order's quantity at the unit price, its points,
        its buyer and the group buy's merchant."""
        data = event.data
        order_id = data["trade_id"][len(GROUP_BUY_TRADE_PREFIX):]
        for group_buy in self.group_buys.values():
            order = group_buy.orders.get(order_id)
            if order is None:
                continue
            expected = (order[0], order[1] * group_buy.unit_price_won, order[2],
                        group_buy.merchant_id, "settled")
            got = (_uuid(data, "buyer_id"), data["amount_won"], data["points_used_won"],
                   _uuid(data, "seller_id"), order[4])
            if got != expected:
                self.found(event.position, GROUP_BUY_MISMATCH,
                           f"trade {data['trade_id']} is {got}, its order says {expected}")
            return
        self.found(event.position, GROUP_BUY_MISMATCH,
                   f"trade {data['trade_id']} names no group-buy order")

    def _accrued(self, event: Event, share: str) -> None:
        """Count what an accrual event delivers towards its trade's recorded accrual."""
        trade_id = event.data["trade_id"]
        if not self.check_accruals or not self.owns_trade(trade_id):
            return
        trade = self.trades.get(trade_id)
        if trade is None:
            trade = self.trades[trade_id] = TradeAccrual(event.position)
        if share == "personal":
            trade.delivered_personal_won += event.data["amount_won"]
        else:
            trade.delivered_common_won += event.data["amount_won"]
        self._check_delivered(trade_id, trade, event.position)

    def _check_delivered(self, trade_id: str, trade: TradeAccrual, position: int) -> None:
        """More delivered than recorded is wrong at once; less only at the end of the log."""
        if not trade.recorded:
            return
        if (trade.delivered_personal_won > trade.personal_won
                or trade.delivered_common_won > trade.common_won):
            self.found(position, ACCRUAL_MISMATCH,
                       f"trade {trade_id} recorded {trade.personal_won:,} + {trade.common_won:,}"
                       f" won of accrual, its wallet and fund received "
                       f"{trade.delivered_personal_won:,} + {trade.delivered_common_won:,}")

    def _clawed_back(self, event: Event, share: str) -> None:
        if not self.check_accruals or not self.owns_trade(event.data["trade_id"]):
            return
        trade = self.trades.get(event.data["trade_id"])
        expected = None if trade is None else (
            trade.personal_won if share == "personal" else trade.common_won)
        if expected != event.data["amount_won"]:
            self.found(event.position, ACCRUAL_MISMATCH,
                       f"{share} clawback of {event.data['amount_won']:,} won for trade "
                       f"{event.data['trade_id']} differs from its accrual ({expected})")

    # Conservation -------------------------------------------------------------------------

    def accounts(self) -> dict[str, int]:
        """Every account's balance, named as `ledger.events` names accounts."""
        found: dict[str, int] = dict(self.system)
        for resident, wallet in self.wallets.items():
            found[f"wallet:{resident}"] = wallet.available_won
            found[f"held:{resident}"] = wallet.held_won
            if wallet.pending_won:
                found[f"pending:{resident}"] = wallet.pending_won
        if not self.owns_shared:  # every slice folds them; slice 0 counts them
            return found
        for complex_id, fund in self.funds.items():
            found[f"fund:{complex_id}"] = fund.balance_won
            if fund.pending:
                found[f"pending:{complex_id}"] = sum(part for _, part in fund.pending.values())
        for merchant, account in self.merchants.items():
            found[f"merchant:{merchant}"] = account.balance_won
        return found

    def totals_by_kind(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for name, amount in self.accounts().items():
            kind = name.split(":", 1)[0]
            totals[kind] = totals.get(kind, 0) + amount
        return dict(sorted(totals.items()))

    def finish(self) -> None:
        """End-of-log checks: conservation, an empty trade clearing, every accrual delivered.
        A slice of several leaves conservation to `check_conserved` over all their accounts."""
        if self.slices == 1:
            self.check_conserved(self.position, self.accounts().values(),
                                 self.system[LAPSE_CLEARING])
        if self.clearing_won != 0:
            self.found(self.clearing_since, TRADE_CLEARING_NOT_EMPTY,
                       f"trade clearing holds {self.clearing_won:,} won since this "
                       "position")
        self._check_cited_spends()
        for order_id, (owed, group_buy_id, position) in self.owed_by_outcomes.items():
            self.found(position, GROUP_BUY_MISMATCH,
                       f"group buy {group_buy_id}: order {order_id}'s hold was never "
                       f"{'spent' if owed == 'spent' else 'released'}")
        if self.check_accruals:
            for trade_id, trade in self.trades.items():
                if not trade.recorded:
                    self.found(trade.position, ACCRUAL_MISMATCH,
                               f"points accrued for trade {trade_id}, which was never recorded")
                elif (trade.delivered_personal_won, trade.delivered_common_won) != (
                        trade.personal_won, trade.common_won):
                    self.found(trade.position, ACCRUAL_MISSING,
                               f"trade {trade_id} recorded {trade.personal_won:,} + "
                               f"{trade.common_won:,} won of accrual, its wallet and fund "
                               f"received {trade.delivered_personal_won:,} + "
                               f"{trade.delivered_common_won:,}")

    def check_conserved(self, position: int, balances: Any, lapse_clearing_won: int) -> None:
        """All accounts sum to zero and the lapse clearing account is empty."""
        total = sum(balances)
        if total != 0:
            self.found(position, NOT_CONSERVED, f"all accounts sum to {total:,}, not 0")
        if lapse_clearing_won != 0:
            self.found(position, NOT_CONSERVED,
                       f"lapse clearing holds {lapse_clearing_won:,} won")

    def _check_cited_spends(self) -> None:
        """Every spend that names a proposal was counted by that proposal, for its amount."""
        for spend_id, (named, counted_by, amount, counted, position) in self.cited_spends.items():
            if (named is None or counted_by != proposal_aggregate_id(named).hex
                    or amount != counted):
                self.found(position, PROPOSAL_OVERSPENT,
                           f"spend {spend_id} names proposal {named} but was counted by "
                           f"{counted_by} ({amount:,} won named, {counted:,} counted)")

    def first_finding(self) -> Finding | None:
        return min(self.findings, key=lambda item: item.position, default=None)


_HANDLERS = {
    "Resident": Scratch._resident,
    "Complex": Scratch._complex,
    "Merchant": Scratch._merchant,
    "Household": Scratch._household,
    "AccrualPolicy": Scratch._policy,
    "Trade": Scratch._trade,
    "TradePair": Scratch._trade_pair,
    "Proposal": Scratch._proposal,
    "GroupBuy": Scratch._group_buy,
}
