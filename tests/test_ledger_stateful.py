"""A Hypothesis state machine over the ledger's commands, checked against a plain model.

After every step: points are conserved, no wallet, hold, fund or settlement account is
negative, the ledger agrees with the model, and replaying the stored events gives the
same state as the live aggregates.

Time passes (the points lifecycle): the machine's clock starts 800 days ago and every
command happens at it; `time_passes` moves it on and sweeps as the service would, so
return windows end and lots expire. The model keeps each wallet's lots (earliest-expiring
taken first, given back to their own lots) and the pending shares; the invariants add:
available points are what the open lots hold, held points what the holds took, pending
points are the shares of trades still inside their window, and the auditor's own fold of
the log (which recomputes every lot and window) finds nothing wrong.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from audit.scratch import Scratch
from eventlog.log import decode_row
from ledger import commands as c
from ledger import limits
from ledger.application import Ledger, now
from ledger.complex import Complex, kst_month
from ledger.conservation import fold
from ledger.database import ConnectionSettings
from ledger.errors import DomainError
from ledger.groupbuy import GroupBuy, group_buy_aggregate_id
from ledger.guards import TradePair, trade_pair_id
from ledger.lots import add_months
from ledger.merchant import Merchant
from ledger.policy import share_won
from ledger.proposal import Proposal, proposal_aggregate_id
from ledger.resident import Resident
from world import BILLING, COORDINATOR, MANAGER, OPERATOR, PLATFORM, cause

PERSONAL_BPS = 300
COMMON_BPS = 100
SHOPPING_WINDOW = timedelta(days=7)  # the default lifecycle; sharing has no window
EXPIRY_MONTHS = 24
Taking = list[tuple[str, datetime, int]]
RATES = [
    {"market": "sharing", "seller_kind": "resident", "personal_bps": PERSONAL_BPS,
     "common_bps": COMMON_BPS},
    {"market": "shopping", "seller_kind": "social_enterprise",
     "personal_bps": PERSONAL_BPS, "common_bps": COMMON_BPS}]
MACHINE_GUARDS = {"same_household_trades": "allowed", "sharing_accrual_won_per_month_max": 1_500,
                  "pair_trades_per_month_max": 2}
"""The machine's residents share one household: it starts with that guard off and small caps,
so that trades between residents happen and the caps are reached."""


class Model:
    """The ledger in plain Python: what each account should hold."""

    def __init__(self) -> None:
        self.wallet: dict[uuid.UUID, int] = {}
        self.held: dict[uuid.UUID, int] = {}
        self.owed: dict[uuid.UUID, int] = {}
        self.closed: set[uuid.UUID] = set()
        self.fund = 0
        self.fund_owed = 0
        self.merchant = 0
        self.merchant_owed = 0
        self.trades: dict[str, dict[str, Any]] = {}
        self.payments: dict[str, tuple[uuid.UUID, int]] = {}
        self.invoice_room = 0
        self.allowance_won = limits.fund_allowance_won_default
        self.allowance_spent: dict[str, int] = {}  # KST month -> spent without a proposal
        self.proposals: dict[str, dict[str, Any]] = {}
        self.households_count = 0
        self.household_of: dict[uuid.UUID, uuid.UUID] = {}
        self.group_buys: dict[str, dict[str, Any]] = {}
        """group buy id -> terms, state, ordered quantity and open orders."""
        self.orders: dict[str, dict[str, Any]] = {}
        """order id -> group buy, resident, quantity, points, status."""
        self.clock = now() - timedelta(days=800)
        self.lots: dict[uuid.UUID, dict[str, list[Any]]] = {}
        """resident -> lot id -> [expires_at, remaining_won]"""
        self.hold_lots: dict[str, Taking] = {}
        self.spent_lots: dict[str, Taking] = {}
        self.pending: dict[str, dict[str, Any]] = {}
        """trade id -> until, buyer, personal and common shares still pending"""
        self.guards: dict[str, Any] = dict(MACHINE_GUARDS)
        """The wash-trade guards of the policy version in force."""
        self.pair_trades: dict[tuple[str, str, str], int] = {}
        """(resident, other resident, KST month) -> trades recorded between them."""
        self.sharing_accrued: dict[tuple[uuid.UUID, str], int] = {}
        """(buyer, KST month) -> personal points accrued from the sharing market."""

    def open_orders_of(self, resident: uuid.UUID) -> list[dict[str, Any]]:
        return [order for order in self.orders.values()
                if order["resident"] == resident and order["status"] == "open"]



    def credit(self, who: uuid.UUID, amount: int, lot: tuple[str, datetime] | None = None,
               back: Taking | None = None) -> None:
        """A credit pays back owed points first; the rest is a new lot, or goes back to the
        lots it was taken from (latest-expiring parts first)."""
        recovered = min(amount, self.owed[who])
        self.owed[who] -= recovered
        kept = amount - recovered
        self.wallet[who] += kept
        if lot is not None:
            self.add_lot(who, lot[0], lot[1], kept)
        elif back is not None:
            left = kept
            for lot_id, expires_at, part in sorted(back, key=lambda p: (p[1], p[0]),
                                                   reverse=True):
                share = min(left, part)
                self.add_lot(who, lot_id, expires_at, share)
                left -= share

    def add_lot(self, who: uuid.UUID, lot_id: str, expires_at: datetime, amount: int) -> None:
        if amount > 0:
            lot = self.lots[who].setdefault(lot_id, [expires_at, 0])
            lot[1] += amount

    def take_lots(self, who: uuid.UUID, amount: int) -> Taking:
        """Earliest-expiring first (ties by lot id)."""
        lots = self.lots[who]
        taking: Taking = []
        left = amount
        for lot_id in sorted(lots, key=lambda k: (lots[k][0], k)):
            part = min(left, lots[lot_id][1])
            if part:
                taking.append((lot_id, lots[lot_id][0], part))
                left -= part
        assert left == 0
        for lot_id, _, part in taking:
            lots[lot_id][1] -= part
            if lots[lot_id][1] == 0:
                del lots[lot_id]
        return taking

    def give_back(self, who: uuid.UUID, taking: Taking) -> None:
        for lot_id, expires_at, part in taking:
            self.add_lot(who, lot_id, expires_at, part)

    def take(self, who: uuid.UUID, amount: int) -> None:
        taken = min(amount, self.wallet[who])
        self.wallet[who] -= taken
        self.owed[who] += amount - taken
        self.take_lots(who, taken)

    def fund_credit(self, amount: int) -> None:
        recovered = min(amount, self.fund_owed)
        self.fund_owed -= recovered
        self.fund += amount - recovered

    def release(self, trade_id: str, moment: datetime) -> None:
        """A trade's window ended: its pending shares become available."""
        pending = self.pending.pop(trade_id)
        if pending["personal"]:
            self.credit(pending["buyer"], pending["personal"],
                        lot=(f"accrual:{trade_id}", add_months(moment, EXPIRY_MONTHS)))
        if pending["common"]:
            self.fund_credit(pending["common"])


def _schema_for_machine(database_url: str) -> str:
    name = f"t_sm_{uuid.uuid4().hex[:10]}"
    conninfo = ConnectionSettings.from_url(database_url).conninfo()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    return name


class LedgerMachine(RuleBasedStateMachine):
    database_url: str = ""
    schemas: list[str] = []  # noqa: RUF012  (collected for cleanup by the test)

    residents = Bundle("residents")
    neighbours = Bundle("neighbours")

    @initialize()
    def open_ledger(self) -> None:
        schema = _schema_for_machine(self.database_url)
        type(self).schemas.append(schema)
        self.ledger = Ledger.connect(self.database_url, schema)
        self.model = Model()
        self.ledger.execute(c.SetAccrualPolicy.of(RATES, guards=MACHINE_GUARDS), cause())
        self.complex_id = uuid.UUID(self.ledger.execute(
            c.RegisterComplex("SM-1", "machine", "Hwaseong"), cause())["complex_id"])
        self.household = uuid.UUID(self.ledger.execute(
            c.RegisterHousehold(self.complex_id, "1-1"), cause())["household_id"])
        self.neighbour_household = uuid.UUID(self.ledger.execute(
            c.RegisterHousehold(self.complex_id, "1-2"), cause())["household_id"])
        self.merchant_id = uuid.UUID(self.ledger.execute(
            c.RegisterMerchant("social_enterprise", "co-op"), cause())["merchant_id"])
        self.invoice = "INV-SM"
        self.ledger.execute(c.IssueRentInvoice(self.household, self.invoice, "2026-11",
                                               50_000, now() + timedelta(days=5)),
                            cause(BILLING, "billing"))
        self.model.invoice_room = 50_000
        self.model.households_count = 2
        self.count = 0

    def teardown(self) -> None:
        if hasattr(self, "ledger"):
            self.ledger.close()

    def _next(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}-{self.count}"

    def _attempt(self, command: c.Command, **cause_fields: Any) -> str | None:
        """Run a command at the machine's clock (unless told another moment); return the
        rejection code, or None if it was accepted."""
        if cause_fields.get("occurred_at") is None:
            cause_fields["occurred_at"] = self.model.clock
        try:
            self.ledger.execute(command, cause(**cause_fields))
        except DomainError as error:
            return error.code
        return None

    @rule(target=residents)
    def enrol(self) -> uuid.UUID:
        outcome = self.ledger.execute(c.EnrolResident(self.household, "consent"),
                                      cause(COORDINATOR, "coordinator"))
        resident = uuid.UUID(outcome["resident_id"])
        for table in (self.model.wallet, self.model.held, self.model.owed):
            table[resident] = 0
        self.model.lots[resident] = {}
        self.model.household_of[resident] = self.household
        return resident

    @rule(buyer=residents, amount=st.integers(100, 40_000), to_merchant=st.booleans())
    def earn(self, buyer: uuid.UUID, amount: int, to_merchant: bool) -> None:
        """A trade paid in money, with the merchant or another resident: the usual way
        points come in (so that lots, windows and expiries have points to work on)."""
        partner = next((r for r in self.model.wallet if r != buyer), None)
        if partner is None:
            to_merchant = True
        self.trade(buyer, partner or buyer, amount, 0, to_merchant, False)

    @rule(target=neighbours)
    def enrol_neighbour(self) -> uuid.UUID:
        """A resident of the second household: a voter who holds no points here."""
        outcome = self.ledger.execute(c.EnrolResident(self.neighbour_household, "consent"),
                                      cause(COORDINATOR, "coordinator"))
        neighbour = uuid.UUID(outcome["resident_id"])
        self.model.household_of[neighbour] = self.neighbour_household
        return neighbour

    @rule(buyer=residents, seller=residents, amount=st.integers(1, 40_000),
          points=st.one_of(st.just(0), st.integers(0, 3_000)), to_merchant=st.booleans(),
          overspend=st.booleans())
    def trade(self, buyer: uuid.UUID, seller: uuid.UUID, amount: int, points: int,
              to_merchant: bool, overspend: bool) -> None:
        m = self.model
        points = min(points, amount)
        if not overspend:  # mostly use what the buyer has: most trades then go through
            points = min(points, m.wallet[buyer])
        trade_id = self._next("T")
        seller_id = self.merchant_id if to_merchant else seller
        kind = "social_enterprise" if to_merchant else "resident"
        market = "shopping" if to_merchant else "sharing"
        at = m.clock  # the guards count by the KST month of the machine's clock
        code = self._attempt(c.RecordTrade(trade_id, market, "any", seller_id, kind, buyer,
                                           amount, points), actor=PLATFORM, role="platform",
                             occurred_at=at)
        if buyer in m.closed or (not to_merchant and seller in m.closed):
            assert code == "wallet_closed"
            return
        if not to_merchant and seller == buyer:
            assert code == "seller_is_buyer"
            return
        if points > m.wallet[buyer]:
            assert code == "insufficient_points"
            return
        base = amount - points
        personal, common = share_won(base, PERSONAL_BPS), share_won(base, COMMON_BPS)
        # The guards, written out again (ledger.guards), in their order; every resident of
        # the machine lives in one household.
        month = kst_month(at)
        low, high = sorted((str(buyer), str(seller)))
        pair_key = (low, high, month)
        pair_cap = m.guards["pair_trades_per_month_max"]
        sharing_cap = m.guards["sharing_accrual_won_per_month_max"]
        accrued = m.sharing_accrued.get((buyer, month), 0)
        if not to_merchant and m.guards["same_household_trades"] == "refused":
            assert code == "same_household_trade"
            return
        if not to_merchant and pair_cap is not None and m.pair_trades.get(pair_key, 0) >= pair_cap:
            assert code == "pair_trade_cap_reached"
            return
        if (market == "sharing" and personal and sharing_cap is not None
                and accrued + personal > sharing_cap):
            assert code == "sharing_accrual_cap_reached"
            return
        assert code is None
        if not to_merchant:
            m.pair_trades[pair_key] = m.pair_trades.get(pair_key, 0) + 1
        if market == "sharing" and personal:
            m.sharing_accrued[(buyer, month)] = accrued + personal
        m.wallet[buyer] -= points
        m.spent_lots[trade_id] = m.take_lots(buyer, points)
        at = m.clock
        if points:
            if to_merchant:
                recovered = min(points, m.merchant_owed)
                m.merchant_owed -= recovered
                m.merchant += points - recovered
            else:
                m.credit(seller, points,
                         lot=(f"received:{trade_id}", add_months(at, EXPIRY_MONTHS)))
        if to_merchant:  # shopping: both shares pend for the return window
            if personal or common:
                m.pending[trade_id] = {"until": at + SHOPPING_WINDOW, "buyer": buyer,
                                       "personal": personal, "common": common}
        else:
            if personal:
                m.credit(buyer, personal,
                         lot=(f"accrual:{trade_id}", add_months(at, EXPIRY_MONTHS)))
            if common:
                m.fund_credit(common)
        m.trades[trade_id] = {"buyer": buyer, "seller": seller, "points": points,
                              "personal": personal, "common": common,
                              "to_merchant": to_merchant, "refunded": False}

    @rule(buyer=residents, seller=residents, amount=st.integers(1, 40_000),
          times=st.integers(1, 4))
    def trade_between_residents(self, buyer: uuid.UUID, seller: uuid.UUID, amount: int,
                                times: int) -> None:
        """Sharing trades paid in money between two residents, again and again: what wash
        trades look like, so that the caps are reached."""
        for _ in range(times):
            self.trade(buyer, seller, amount, 0, to_merchant=False, overspend=False)

    @precondition(lambda self: bool(self.model.trades))
    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        m = self.model
        trade_id = data.draw(st.sampled_from(sorted(m.trades)))
        trade = m.trades[trade_id]
        code = self._attempt(c.RefundTrade(trade_id), actor=PLATFORM, role="platform")
        if trade["refunded"]:
            assert code == "trade_already_refunded"
            return
        assert code is None
        trade["refunded"] = True
        buyer = trade["buyer"]
        pending = m.pending.get(trade_id)
        inside = pending is not None and m.clock < pending["until"]
        if pending is not None and not inside:
            m.release(trade_id, m.clock)  # the window ended, not yet swept
        if trade["points"]:
            if trade["to_merchant"]:
                taken = min(trade["points"], m.merchant)
                m.merchant -= taken
                m.merchant_owed += trade["points"] - taken
            else:
                m.take(trade["seller"], trade["points"])
            m.credit(buyer, trade["points"], back=m.spent_lots.pop(trade_id))
        if inside:  # cancelled: nothing clawed back, nothing owed
            del m.pending[trade_id]
            return
        if trade["personal"] and not trade.get("forfeited"):
            m.take(buyer, trade["personal"])
        if trade["common"]:
            taken = min(trade["common"], m.fund)
            m.fund -= taken
            m.fund_owed += trade["common"] - taken

    @rule(resident=residents, amount=st.integers(1, 5_000))
    def pay_rent(self, resident: uuid.UUID, amount: int) -> None:
        m = self.model
        payment_id = self._next("P")
        code = self._attempt(c.PayRent(payment_id, self.household, self.invoice, "2026-11",
                                       amount, resident, 3600), actor=resident, role="resident")
        if resident in m.closed:
            assert code == "wallet_closed"
        elif amount > m.invoice_room:
            assert code == "invoice_exceeded"
        elif amount > m.wallet[resident]:
            assert code == "insufficient_points"
        else:
            assert code is None
            m.wallet[resident] -= amount
            m.held[resident] += amount
            m.hold_lots[payment_id] = m.take_lots(resident, amount)
            m.invoice_room -= amount
            m.payments[payment_id] = (resident, amount)

    @precondition(lambda self: bool(self.model.payments))
    @rule(data=st.data(), how=st.sampled_from(["settle", "release", "expire"]))
    def resolve_hold(self, data: st.DataObject, how: str) -> None:
        m = self.model
        payment_id = data.draw(st.sampled_from(sorted(m.payments)))
        resident, amount = m.payments.pop(payment_id)
        command: c.Command
        if how == "settle":
            command = c.SettleRentPayment(payment_id)
        elif how == "release":
            command = c.ReleaseRentPayment(payment_id)
        else:
            command = c.ExpireRentPayment(payment_id, now() + timedelta(hours=2))
        assert self._attempt(command, actor=BILLING, role="billing") is None
        m.held[resident] -= amount
        taking = m.hold_lots.pop(payment_id)
        if how == "settle":
            return
        m.give_back(resident, taking)
        m.wallet[resident] += amount
        m.invoice_room += amount

    @rule(amount=st.integers(1, 2_000))
    def spend_fund(self, amount: int) -> None:
        """A spend without a proposal: within the month's allowance and the fund."""
        m = self.model
        moment = now()
        month = kst_month(moment)
        code = self._attempt(c.SpendFund(self.complex_id, self._next("S"), "event", amount,
                                         "council"), actor=MANAGER, role="manager",
                             occurred_at=moment)
        if amount > m.allowance_won - m.allowance_spent.get(month, 0):
            assert code == "allowance_exceeded"
        elif amount > m.fund:
            assert code == "insufficient_fund"
        else:
            assert code is None
            m.fund -= amount
            m.allowance_spent[month] = m.allowance_spent.get(month, 0) + amount

    @rule(allowance=st.integers(0, 3_000))
    def set_allowance(self, allowance: int) -> None:
        assert self._attempt(c.SetFundAllowance(self.complex_id, allowance),
                             actor=OPERATOR, role="operator") is None
        self.model.allowance_won = allowance

    # Resident votes -----------------------------------------------------------------------

    @rule(amount=st.integers(1, 3_000), purpose=st.sampled_from(["facility", "upkeep"]),
          quorum_bps=st.sampled_from([0, 3_000, 5_000, 10_000]),
          approval_bps=st.sampled_from([0, 5_000, 6_666]))
    def open_proposal(self, amount: int, purpose: str, quorum_bps: int,
                      approval_bps: int) -> None:
        proposal_id = self._next("V")
        code = self._attempt(c.OpenProposal(self.complex_id, proposal_id, purpose, "Benches",
                                            amount, now() + timedelta(hours=2),
                                            quorum_bps=quorum_bps, approval_bps=approval_bps),
                             actor=MANAGER, role="manager", occurred_at=now())
        assert code is None
        self.model.proposals[proposal_id] = {
            "amount": amount, "purpose": purpose, "quorum": quorum_bps,
            "approval": approval_bps, "state": "open", "ballots": {}, "spent": 0}

    @precondition(lambda self: bool(self.model.proposals))
    @rule(data=st.data(), voter=st.one_of(residents, neighbours),
          choice=st.sampled_from(["yes", "no"]), by_coordinator=st.booleans())
    def vote(self, data: st.DataObject, voter: uuid.UUID, choice: str,
             by_coordinator: bool) -> None:
        m = self.model
        proposal_id = data.draw(st.sampled_from(sorted(m.proposals)))
        proposal = m.proposals[proposal_id]
        if by_coordinator:
            code = self._attempt(c.CastBallot(proposal_id, voter, choice, "consent-form"),
                                 actor=COORDINATOR, role="coordinator", occurred_at=now())
        else:
            code = self._attempt(c.CastBallot(proposal_id, voter, choice), actor=voter,
                                 role="resident", occurred_at=now())
        household = m.household_of[voter]
        if voter in m.closed:
            assert code == "wallet_closed"
        elif proposal["state"] != "open":
            assert code == "voting_closed"
        elif household in proposal["ballots"]:
            assert code == "already_voted"
        else:
            assert code is None
            proposal["ballots"][household] = choice

    @precondition(lambda self: bool(self.model.proposals))
    @rule(data=st.data())
    def close_proposal(self, data: st.DataObject) -> None:
        m = self.model
        proposal_id = data.draw(st.sampled_from(sorted(m.proposals)))
        proposal = m.proposals[proposal_id]
        code = self._attempt(c.CloseProposal(proposal_id), actor=MANAGER, role="manager",
                             occurred_at=now() + timedelta(hours=3))
        if proposal["state"] != "open":
            assert code == "proposal_decided"
            return
        assert code is None
        ballots = len(proposal["ballots"])
        yes = sum(1 for choice in proposal["ballots"].values() if choice == "yes")
        # The rule, written out again: quorum of households, then more than approval_bps yes.
        quorum_met = ballots * 10_000 >= proposal["quorum"] * m.households_count
        approved = quorum_met and yes * 10_000 > proposal["approval"] * ballots
        proposal["state"] = "approved" if approved else "rejected"

    @precondition(lambda self: bool(self.model.proposals))
    @rule(data=st.data(), amount=st.integers(1, 2_000),
          purpose=st.sampled_from(["facility", "upkeep"]))
    def spend_with_proposal(self, data: st.DataObject, amount: int, purpose: str) -> None:
        m = self.model
        proposal_id = data.draw(st.sampled_from(sorted(m.proposals)))
        proposal = m.proposals[proposal_id]
        code = self._attempt(c.SpendFund(self.complex_id, self._next("S"), purpose, amount,
                                         proposal_id=proposal_id),
                             actor=MANAGER, role="manager", occurred_at=now())
        if proposal["state"] != "approved":
            assert code == "proposal_not_approved"
        elif purpose != proposal["purpose"]:
            assert code == "proposal_purpose_mismatch"
        elif proposal["spent"] + amount > proposal["amount"]:
            assert code == "proposal_amount_exceeded"
        elif amount > m.fund:
            assert code == "insufficient_fund"
        else:
            assert code is None
            m.fund -= amount
            proposal["spent"] += amount

    @rule(household=st.sampled_from(["refused", "allowed"]),
          sharing_cap=st.sampled_from([None, 0, 1_500, 6_000]),
          pair_cap=st.sampled_from([None, 1, 2, 4]))
    def set_guards(self, household: str, sharing_cap: int | None, pair_cap: int | None) -> None:
        """The operator sets a new policy version with other guards; later trades follow it."""
        guards = {"same_household_trades": household,
                  "sharing_accrual_won_per_month_max": sharing_cap,
                  "pair_trades_per_month_max": pair_cap}
        self.ledger.execute(c.SetAccrualPolicy.of(RATES, guards=guards), cause())
        self.model.guards = guards

    @invariant()
    def guard_counts_agree_with_the_model(self) -> None:
        """The pair counters and each wallet's sharing accruals are the model's; no count
        passed the cap in force when it was reached (the model refuses beyond it)."""
        if not hasattr(self, "ledger"):
            return
        m = self.model
        for (low, high, month), count in m.pair_trades.items():
            counter = self.ledger.snapshot(TradePair, trade_pair_id(
                uuid.UUID(low), uuid.UUID(high), month))
            assert counter is not None and counter.trades_count == count
        for (buyer, month), accrued in m.sharing_accrued.items():
            wallet = self.ledger.snapshot(Resident, buyer)
            assert wallet is not None and wallet.sharing_accrued_won(month) == accrued

    @invariant()
    def spends_per_proposal_stay_within_its_amount(self) -> None:
        if not hasattr(self, "ledger"):
            return
        for proposal_id, modelled in self.model.proposals.items():
            proposal = self.ledger.snapshot(Proposal, proposal_aggregate_id(proposal_id))
            assert proposal is not None
            assert (proposal.state, proposal.spent_won, proposal.yes_count + proposal.no_count) == (
                modelled["state"], modelled["spent"], len(modelled["ballots"]))
            assert proposal.spent_won <= proposal.amount_won

    @rule()
    def pay_out(self) -> None:
        code = self._attempt(c.PayOutMerchant(self.merchant_id, self._next("PO")),
                             actor=OPERATOR, role="operator")
        if self.model.merchant == 0:
            assert code == "nothing_to_pay_out"
        else:
            assert code is None
            self.model.merchant = 0

    # Group buys ----------------------------------------------------------------------------

    @rule(quantity_min=st.integers(1, 4), extra=st.integers(0, 3),
          unit_price=st.integers(1, 3_000))
    def open_group_buy(self, quantity_min: int, extra: int, unit_price: int) -> None:
        group_buy_id = self._next("GB")
        code = self._attempt(c.OpenGroupBuy(
            group_buy_id, self.merchant_id, "filters", unit_price, quantity_min,
            quantity_min + extra, now() + timedelta(days=1), (self.complex_id,)),
            actor=self.merchant_id, role="merchant", occurred_at=now())
        assert code is None
        self.model.group_buys[group_buy_id] = {
            "min": quantity_min, "max": quantity_min + extra, "price": unit_price,
            "state": "open", "ordered": 0}

    @precondition(lambda self: bool(self.model.group_buys))
    @rule(data=st.data(), resident=residents, quantity=st.integers(1, 4),
          points=st.integers(0, 3_000), late=st.booleans())
    def order(self, data: st.DataObject, resident: uuid.UUID, quantity: int, points: int,
              late: bool) -> None:
        m = self.model
        group_buy_id = data.draw(st.sampled_from(sorted(m.group_buys)))
        group_buy = m.group_buys[group_buy_id]
        order_id = self._next("O")
        code = self._attempt(
            c.PlaceGroupBuyOrder(group_buy_id, order_id, resident, quantity, points),
            actor=resident, role="resident",
            occurred_at=now() + timedelta(days=2) if late else now())
        if group_buy["state"] != "open":
            assert code == "group_buy_closed"
        elif late:
            assert code == "group_buy_deadline_passed"
        elif quantity > group_buy["max"]:
            assert code == "invalid_quantity"
        elif points > quantity * group_buy["price"]:
            assert code == "points_exceed_amount"
        elif group_buy["ordered"] + quantity > group_buy["max"]:
            assert code == "group_buy_quantity_exceeded"
        elif resident in m.closed:
            assert code == "wallet_closed"
        elif points > m.wallet[resident]:
            assert code == "insufficient_points"
        else:
            assert code is None, code
            group_buy["ordered"] += quantity
            m.wallet[resident] -= points
            m.held[resident] += points
            m.hold_lots[f"order:{order_id}"] = m.take_lots(resident, points)
            m.orders[order_id] = {"group_buy": group_buy_id, "resident": resident,
                                  "quantity": quantity, "points": points, "status": "open"}

    @precondition(lambda self: bool(self.model.orders))
    @rule(data=st.data())
    def cancel_order(self, data: st.DataObject) -> None:
        m = self.model
        order_id = data.draw(st.sampled_from(sorted(m.orders)))
        order = m.orders[order_id]
        group_buy = m.group_buys[order["group_buy"]]
        code = self._attempt(c.CancelGroupBuyOrder(order_id), actor=order["resident"],
                             role="resident", occurred_at=now())
        if order["status"] == "cancelled":
            assert code == "order_already_cancelled"
        elif group_buy["state"] != "open":
            assert code == "group_buy_closed"
        else:
            assert code is None, code
            order["status"] = "cancelled"
            group_buy["ordered"] -= order["quantity"]
            m.give_back(order["resident"], m.hold_lots.pop(f"order:{order_id}"))
            m.wallet[order["resident"]] += order["points"]
            m.held[order["resident"]] -= order["points"]

    @precondition(lambda self: bool(self.model.group_buys))
    @rule(data=st.data(), at_deadline=st.booleans())
    def close_group_buy(self, data: st.DataObject, at_deadline: bool) -> None:
        m = self.model
        group_buy_id = data.draw(st.sampled_from(sorted(m.group_buys)))
        group_buy = m.group_buys[group_buy_id]
        # Group buys live at the real clock (their deadlines are bounded from the moment
        # they open): their trades pend until a week after it, past the machine's clock.
        closed_at = now() + timedelta(days=2) if at_deadline else now()
        code = self._attempt(c.CloseGroupBuy(group_buy_id), actor=OPERATOR, role="operator",
                             occurred_at=closed_at)
        reached = group_buy["ordered"] >= group_buy["min"]
        if group_buy["state"] != "open":
            assert code == "group_buy_closed"
            return
        if not at_deadline and not reached:
            assert code == "group_buy_minimum_not_reached"
            return
        assert code is None, code
        group_buy["state"] = "completed" if reached else "cancelled"
        for order_id, order in m.orders.items():
            if order["group_buy"] != group_buy_id or order["status"] != "open":
                continue
            buyer, points = order["resident"], order["points"]
            m.held[buyer] -= points
            taking = m.hold_lots.pop(f"order:{order_id}")
            if not reached:
                order["status"] = "released"
                m.give_back(buyer, taking)
                m.wallet[buyer] += points
                continue
            m.spent_lots[f"group-buy:{order_id}"] = taking
            order["status"] = "settled"
            if points:
                recovered = min(points, m.merchant_owed)
                m.merchant_owed -= recovered
                m.merchant += points - recovered
            base = order["quantity"] * group_buy["price"] - points
            personal, common = share_won(base, PERSONAL_BPS), share_won(base, COMMON_BPS)
            if personal or common:  # a group buy's trades are shopping trades: pending
                m.pending[f"group-buy:{order_id}"] = {
                    "until": closed_at + SHOPPING_WINDOW, "buyer": buyer,
                    "personal": personal, "common": common}
            m.trades[f"group-buy:{order_id}"] = {
                "buyer": buyer, "seller": self.merchant_id, "points": points,
                "personal": personal, "common": common, "to_merchant": True,
                "refunded": False}

    @rule(resident=residents)
    def move_out(self, resident: uuid.UUID) -> None:
        m = self.model
        code = self._attempt(c.MoveOut(resident), actor=COORDINATOR, role="coordinator")
        if resident in m.closed:
            assert code == "wallet_closed"
        elif m.held[resident] or m.open_orders_of(resident):
            assert code == "holds_pending"
        else:
            assert code is None
            m.closed.add(resident)
            m.fund_credit(m.wallet[resident])  # the remaining lots go to the fund
            m.wallet[resident] = 0
            m.lots[resident] = {}
            for trade_id, pending in m.pending.items():  # pending shares are cancelled
                if pending["buyer"] == resident and pending["personal"]:
                    pending["personal"] = 0
                    m.trades[trade_id]["forfeited"] = True

    @rule(days=st.sampled_from([1, 6, 8, 30, 400, 740]))
    def time_passes(self, days: int) -> None:
        """The clock moves on (never past now) and the sweeper runs: ended windows are
        released, then every lot past its expiry is expired into the fund."""
        m = self.model
        m.clock = min(m.clock + timedelta(days=days), now())
        for trade_id in sorted(m.pending):
            if m.pending[trade_id]["until"] <= m.clock:
                pending = m.pending[trade_id]
                code = self._attempt(c.ReleasePendingPoints(trade_id, m.clock))
                if not pending["personal"] and not pending["common"]:
                    assert code == "accrual_not_pending"
                    del m.pending[trade_id]
                    continue
                assert code is None, code
                m.release(trade_id, m.clock)
        for resident, lots in m.lots.items():
            due = [lot_id for lot_id, lot in lots.items() if lot[0] <= m.clock]
            code = self._attempt(c.ExpirePoints(resident, m.clock))
            if resident in m.closed:
                assert code == "wallet_closed"
                continue
            if not due:
                assert code == "nothing_to_expire"
                continue
            assert code is None, code
            expired = sum(lots.pop(lot_id)[1] for lot_id in due)
            m.wallet[resident] -= expired
            m.fund_credit(expired)

    @invariant()
    def ledger_agrees_with_model(self) -> None:
        if not hasattr(self, "ledger"):
            return
        m = self.model
        for resident, available in m.wallet.items():
            wallet = self.ledger.snapshot(Resident, resident)
            assert wallet is not None
            assert (wallet.available_won, wallet.held_won, wallet.owed_won) == (
                available, m.held[resident], m.owed[resident])
            # Lots: earliest-expiring taken first and given back to their own lots, so the
            # wallet's open lots are the model's, lot by lot.
            lots = wallet.lots or {}
            assert {lot_id: lot[1] for lot_id, lot in lots.items()} == {
                lot_id: lot[1] for lot_id, lot in m.lots[resident].items()}
            assert wallet.available_won == sum(lot[1] for lot in lots.values())
            assert wallet.held_won == sum(part["amount_won"] for taking in
                                          wallet.hold_lots.values() for part in taking)
            # Pending: the shares of trades still inside their window, none past it.
            pending = {trade_id: p["personal"] for trade_id, p in m.pending.items()
                       if p["buyer"] == resident and p["personal"]}
            assert {trade_id: share[1] for trade_id, share in wallet.pending.items()} == pending
            assert wallet.pending_won == sum(pending.values())
            assert all(share[0] > m.clock for share in wallet.pending.values())
        fund = self.ledger.snapshot(Complex, self.complex_id)
        assert fund is not None
        assert (fund.balance_won, fund.owed_won) == (m.fund, m.fund_owed)
        assert fund.pending_won == sum(p["common"] for p in m.pending.values())
        merchant = self.ledger.snapshot(Merchant, self.merchant_id)
        assert merchant is not None
        assert (merchant.balance_won, merchant.owed_won) == (m.merchant, m.merchant_owed)

    @invariant()
    def held_points_are_open_orders_plus_rent_holds(self) -> None:
        if not hasattr(self, "ledger"):
            return
        m = self.model
        for resident in m.wallet:
            rent_won = sum(amount for who, amount in m.payments.values() if who == resident)
            orders_won = sum(order["points"] for order in m.open_orders_of(resident))
            wallet = self.ledger.snapshot(Resident, resident)
            assert wallet is not None
            assert wallet.held_won == rent_won + orders_won == sum(wallet.holds.values())
        for group_buy_id, group_buy in m.group_buys.items():
            live = self.ledger.snapshot(GroupBuy, group_buy_aggregate_id(group_buy_id))
            assert live is not None
            assert (live.state, live.quantity_ordered) == (group_buy["state"],
                                                           group_buy["ordered"])
            assert live.quantity_ordered <= live.quantity_max

    @invariant()
    def points_are_conserved_and_replay_equals_live(self) -> None:
        if not hasattr(self, "ledger"):
            return
        self.conserved_and_stored_as_modelled(compare_cache=True)

    def conserved_and_stored_as_modelled(self, *, compare_cache: bool) -> None:
        """Conservation over the whole log, and every wallet replayed from its events
        equal to the fold (and, with `compare_cache`, to the writer's live aggregate)."""
        notifications = self.ledger.recorder.select_notifications(start=1, limit=1_000_000)
        events = [self.ledger.mapper.to_domain_event(n) for n in notifications]
        balances = fold(events)
        assert balances.problems() == []
        # The auditor's own fold recomputes every lot (earliest-expiring first) and every
        # pending share's window from the stored log, apart from the domain code.
        scratch = Scratch()
        for notification in notifications:
            stored = decode_row(notification.id, notification.originator_id,
                                notification.originator_version, notification.topic,
                                notification.state)
            if stored is not None:
                scratch.apply(stored)
        scratch.finish()
        assert [finding for finding in scratch.findings
                if finding.code != "accrual_missing"] == []
        cited: dict[str, int] = {}
        for event in events:
            if isinstance(event, Complex.FundSpent) and event.proposal_id:
                cited[event.proposal_id] = cited.get(event.proposal_id, 0) + event.amount_won
        for proposal_id, spent_won in cited.items():
            assert spent_won <= self.model.proposals[proposal_id]["amount"]
        for resident in self.model.wallet:
            fresh = self.ledger.repository._reconstruct_aggregate(
                resident, None, _project)
            if compare_cache:
                replayed = self.ledger.repository.get(resident, version=None,
                                                      deepcopy_from_cache=False)
                assert (fresh.available_won, fresh.held_won, fresh.owed_won) == (
                    replayed.available_won, replayed.held_won, replayed.owed_won)
            assert balances.accounts.get(f"wallet:{resident}", 0) == fresh.available_won


def _project(aggregate: Any, events: Any) -> Any:
    from eventsourcing.application import project_aggregate  # noqa: PLC0415

    return project_aggregate(aggregate, events)


@pytest.mark.slow
def test_ledger_state_machine(database_url: str) -> None:
    """Random sequences of every command keep the ledger equal to a plain model."""
    LedgerMachine.database_url = database_url
    LedgerMachine.schemas = []
    runner = LedgerMachine.TestCase()
    runner.settings = settings(max_examples=35, stateful_step_count=30, deadline=None)
    try:
        runner.runTest()
    finally:
        conninfo = ConnectionSettings.from_url(database_url).conninfo()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for schema in LedgerMachine.schemas:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_ledger_state_machine_walks_through_the_points_lifecycle(database_url: str) -> None:
    """One fixed walk of the machine through the lifecycle (random runs reach it less
    often): windows end, a hold takes the oldest lot and gives it back, lots expire, a
    refund inside and one after the window, a move-out; every invariant after each step."""
    LedgerMachine.database_url = database_url
    LedgerMachine.schemas = []
    machine = LedgerMachine()

    def check() -> None:
        machine.ledger_agrees_with_model()
        machine.held_points_are_open_orders_plus_rent_holds()
        machine.points_are_conserved_and_replay_equals_live()

    try:
        machine.open_ledger()
        first, second = machine.enrol(), machine.enrol()
        steps: list[Any] = [
            lambda: machine.earn(first, 30_000, False),    # 900 available at once
            lambda: machine.earn(first, 20_000, True),     # 600 pending for 7 days
            lambda: machine.earn(second, 10_000, True),    # refunded inside its window
            lambda: machine.time_passes(6),
            lambda: machine.refund(_draw("T-3")),
            lambda: machine.time_passes(8),                # T-2's window ends: released
            lambda: machine.earn(first, 10_000, False),
            lambda: machine.pay_rent(first, 1_000),        # takes the oldest lot first
            lambda: machine.resolve_hold(_draw("P-5"), "release"),
            lambda: machine.trade(first, second, 5_000, 500, False, False),
            lambda: machine.time_passes(740),              # lots expire into the fund
            lambda: machine.earn(second, 10_000, True),
            lambda: machine.refund(_draw("T-6")),          # refund of points used, expired lot
            lambda: machine.move_out(second),              # pending share cancelled
            lambda: machine.refund(_draw("T-7")),          # nothing clawed back from it
            lambda: machine.time_passes(30),
        ]
        for step in steps:
            step()
            check()
        wallet = machine.ledger.snapshot(Resident, first)
        assert wallet is not None and wallet.expired_total_won > 0
    finally:
        machine.teardown()
        conninfo = ConnectionSettings.from_url(database_url).conninfo()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for schema in LedgerMachine.schemas:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


class _Drawn:
    """A stand-in for Hypothesis' `data` that always draws one given value."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def draw(self, strategy: Any) -> Any:  # noqa: ARG002  (the value is fixed)
        return self.value


def _draw(value: Any) -> Any:
    return _Drawn(value)


class TwoWriterMachine(LedgerMachine):
    """The same machine with two writers on one database (two processes' ledgers, each
    with its own cache), switching at random: every command must get the answer one
    writer would give, so the plain model still predicts every outcome."""

    @initialize()
    def open_ledger(self) -> None:
        super().open_ledger()
        self.other = Ledger.connect(self.database_url, self.ledger.schema)

    @rule()
    def switch_writer(self) -> None:
        self.ledger, self.other = self.other, self.ledger

    def teardown(self) -> None:
        if hasattr(self, "other"):
            self.other.close()
        super().teardown()

    @invariant()
    def points_are_conserved_and_replay_equals_live(self) -> None:
        """Conservation, and the stored events replay to what the model says; a writer's
        cache may lag behind the other writer's commits, which is what it is for."""
        if not hasattr(self, "ledger"):
            return
        self.conserved_and_stored_as_modelled(compare_cache=False)


@pytest.mark.slow
def test_two_writer_state_machine(database_url: str) -> None:
    """Random sequences of every command, sent through two writers at random, keep the
    ledger equal to a plain model: no stale rejection, no stale acceptance."""
    TwoWriterMachine.database_url = database_url
    TwoWriterMachine.schemas = []
    runner = TwoWriterMachine.TestCase()
    runner.settings = settings(max_examples=25, stateful_step_count=30, deadline=None)
    try:
        runner.runTest()
    finally:
        conninfo = ConnectionSettings.from_url(database_url).conninfo()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for schema in TwoWriterMachine.schemas:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
