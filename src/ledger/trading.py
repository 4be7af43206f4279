"""Trades: the one piece of work that spans a buyer, a seller, a trade and a fund.

Recording a trade moves the points used from the buyer to the seller and accrues
the personal and common shares by the policy in force; refunding it undoes each
part (what cannot be taken back is owed, see ledger.owed). Each aggregate's own
rules stay in its command methods; this service finds the aggregates, runs every
check before the first change (a command either changes everything or nothing),
then calls the command methods in order.
"""

from __future__ import annotations

from uuid import UUID

from ledger import commands as c
from ledger import errors, limits
from ledger.checks import check_amount, check_identifier, check_text
from ledger.complex import Complex, kst_month
from ledger.errors import DomainError
from ledger.events import Cause
from ledger.guards import Guards, TradePair, check_households, trade_pair_id
from ledger.lifecycle import release_shares, the_policy, trade_timing
from ledger.lots import add_months
from ledger.merchant import Merchant
from ledger.policy import (
    MARKETS,
    POLICY_ID,
    SELLER_KINDS,
    AccrualPolicy,
    accrual_base_won,
    share_won,
)
from ledger.resident import Resident
from ledger.trade import Trade, trade_aggregate_id
from ledger.unit import Result, UnitOfWork


def record_trade(command: c.RecordTrade, cause: Cause, unit: UnitOfWork) -> Result:
    """A sale between a resident buyer and a seller, with its accruals."""
    trade_id = check_identifier("trade_id", command.trade_id)
    if trade_id.startswith(limits.group_buy_trade_prefix):
        raise DomainError(errors.invalid_field,
                          f"trade_id: {limits.group_buy_trade_prefix}… names group-buy orders")
    return _record(command, cause, unit, None)


def record_order_trade(command: c.RecordTrade, cause: Cause, unit: UnitOfWork,
                       group_buy_id: str, order_id: str) -> Result:
    """A group-buy order's sale: the points it used were held when it was placed and pay
    the trade now; everything else is as for any trade."""
    return _record(command, cause, unit, (group_buy_id, order_id))


def _record(command: c.RecordTrade, cause: Cause, unit: UnitOfWork,
            held_by_order: tuple[str, str] | None) -> Result:
    trade_id = check_identifier("trade_id", command.trade_id)
    if command.market not in MARKETS:
        raise DomainError(errors.invalid_market, command.market)
    if command.seller_kind not in SELLER_KINDS:
        raise DomainError(errors.invalid_seller_kind, command.seller_kind)
    category = check_text("category", command.category)
    amount_won = check_amount(command.amount_won)
    points_used_won = check_amount(command.points_used_won, allow_zero=True)
    if points_used_won > amount_won:
        raise DomainError(errors.points_exceed_amount, trade_id)
    buyer = unit.get(Resident, command.buyer_id, errors.unknown_resident)
    buyer.check_open()
    seller = _seller(command, unit)
    policy = unit.find(AccrualPolicy, POLICY_ID)
    if policy is None:
        raise DomainError(errors.unknown_policy, "no accrual policy has been set")
    policy_version, personal_bps, common_bps = policy.rates_for(
        command.market, command.seller_kind, category, command.policy_version)
    buyer_complex = unit.get(Complex, buyer.home_complex_id, errors.unknown_complex)
    trade_aggregate = trade_aggregate_id(trade_id)
    if unit.exists(trade_aggregate):
        raise DomainError(errors.trade_exists, trade_id)
    if held_by_order is None:
        buyer.check_can_spend(points_used_won)
    else:
        buyer.check_order_hold(held_by_order[1], points_used_won)
    base_won = accrual_base_won(amount_won, points_used_won)
    personal_won = share_won(base_won, personal_bps)
    common_won = share_won(base_won, common_bps)
    pending_until, expires_at = trade_timing(policy, policy_version, command.market,
                                             cause.occurred_at)
    counted = None if held_by_order is not None else _check_guards(
        command, cause, unit, policy.guards_for(policy_version), buyer, seller, personal_won)
    # After this point, every change must succeed.
    trade = Trade.record(
        trade_id, buyer.household_id, buyer.home_complex_id, cause, market=command.market,
        category=category, seller_id=seller.id, seller_kind=command.seller_kind,
        buyer_id=buyer.id, amount_won=amount_won, points_used_won=points_used_won,
        policy_version=policy_version, personal_bps=personal_bps, common_bps=common_bps,
        accrual_base_won=base_won, personal_won=personal_won, common_won=common_won,
        available_at=pending_until)
    unit.change(trade, buyer, seller, buyer_complex)
    if held_by_order is not None:
        buyer.spend_order_hold(held_by_order[0], held_by_order[1], trade_id, seller.id, cause)
    elif points_used_won:
        buyer.spend(trade_id, seller.id, points_used_won, cause)
    if points_used_won:
        if isinstance(seller, Resident):
            seller.receive(trade_id, buyer.id, points_used_won, cause,
                           add_months(cause.occurred_at,
                                      policy.lifecycle(policy_version)["expiry_months"]))
        else:
            seller.receive(trade_id, buyer.id, points_used_won, cause)
    if personal_won:
        buyer.accrue(trade_id, command.market, command.seller_kind, policy_version,
                     personal_bps, base_won, personal_won, cause, pending_until, expires_at)
    if common_won:
        buyer_complex.accrue(trade_id, command.market, command.seller_kind, policy_version,
                             common_bps, base_won, common_won, cause, pending_until)
    if counted is not None:
        _count_pair(counted, buyer, seller.id, trade_id, cause, unit)
    return ({"trade_id": trade_id, "policy_version": policy_version,
             "personal_accrued_won": personal_won, "common_accrued_won": common_won,
             "points_used_won": points_used_won,
             "pending_until": None if pending_until is None else pending_until.isoformat()},
            buyer.home_complex_id)


def read_ahead_ids(command: c.Command, cause: Cause) -> list[UUID]:
    """What a command reads beyond the ids it names: a trade between residents, its pair's
    counter of the month. A batch loads it with the rest (`Ledger.prefetch`), so that a
    counter stored by another process, or before a restart, is not taken as new and its
    save refused (`UnitOfWork.find_known`), which ran the batch again and sent the writer
    into its contended mode for `limits.contended_seconds`."""
    if isinstance(command, c.RecordTrade) and command.seller_kind == "resident":
        return [trade_pair_id(command.buyer_id, command.seller_id,
                              kst_month(cause.occurred_at))]
    return []


def _check_guards(command: c.RecordTrade, cause: Cause, unit: UnitOfWork, guards: Guards,
                  buyer: Resident, seller: Resident | Merchant,
                  personal_won: int) -> tuple[TradePair | None, int | None] | None:
    """The wash-trade guards (ledger.guards), after every other check, so that a guard only
    ever refuses a trade that would otherwise have been recorded. For a trade between
    residents, returns the pair's counter for the month (None: not yet opened) and its cap."""
    month = kst_month(cause.occurred_at)
    counter: TradePair | None = None
    if isinstance(seller, Resident):
        check_households(guards, buyer.household_id, seller.household_id, command.trade_id)
        # Mostly a new pair of the month: taken as new unless cached (see UnitOfWork).
        counter = unit.find_known(TradePair, trade_pair_id(buyer.id, seller.id, month))
        if counter is not None:
            counter.check_room(guards.pair_trades_per_month_max, command.trade_id)
    if command.market == "sharing":
        buyer.check_sharing_accrual(month, personal_won, guards.sharing_accrual_won_per_month_max,
                                    command.trade_id)
    if not isinstance(seller, Resident):
        return None
    return counter, guards.pair_trades_per_month_max


def _count_pair(counted: tuple[TradePair | None, int | None], buyer: Resident, seller_id: UUID,
                trade_id: str, cause: Cause, unit: UnitOfWork) -> None:
    """Count a trade between residents on their pair's counter for the month."""
    counter, cap = counted
    if counter is None:
        counter = TradePair.open(buyer.id, seller_id, kst_month(cause.occurred_at), cause)
    unit.change(counter)
    counter.count(trade_id, cap, cause)


def _seller(command: c.RecordTrade, unit: UnitOfWork) -> Resident | Merchant:
    """The trade's seller, of the kind the command says, able to take the sale."""
    if command.seller_kind == "resident":
        if command.seller_id == command.buyer_id:
            raise DomainError(errors.seller_is_buyer, command.trade_id)
        resident = unit.find(Resident, command.seller_id)
        if resident is None:
            if unit.find(Merchant, command.seller_id) is not None:
                raise DomainError(errors.seller_kind_mismatch, "seller is a merchant")
            raise DomainError(errors.unknown_resident, f"seller {command.seller_id}")
        resident.check_open()
        return resident
    merchant = unit.find(Merchant, command.seller_id)
    if merchant is None:
        if unit.find(Resident, command.seller_id) is not None:
            raise DomainError(errors.seller_kind_mismatch, "seller is a resident")
        raise DomainError(errors.unknown_merchant, str(command.seller_id))
    if merchant.kind != command.seller_kind:
        raise DomainError(errors.seller_kind_mismatch,
                          f"{merchant.kind} != {command.seller_kind}")
    return merchant


def refund_trade(command: c.RefundTrade, cause: Cause, unit: UnitOfWork) -> Result:
    """Undo a trade: points used go back to the buyer, accruals are clawed back."""
    trade_id = check_identifier("trade_id", command.trade_id)
    trade = unit.get(Trade, trade_aggregate_id(trade_id), errors.unknown_trade)
    trade.check_refundable()
    buyer = unit.get(Resident, trade.buyer_id, errors.unknown_resident)
    seller: Resident | Merchant
    if trade.seller_kind == "resident":
        seller = unit.get(Resident, trade.seller_id, errors.unknown_resident)
    else:
        seller = unit.get(Merchant, trade.seller_id, errors.unknown_merchant)
    fund = unit.get(Complex, trade.buyer_complex_id, errors.unknown_complex)
    inside_window = (trade.available_at is not None
                     and cause.occurred_at < trade.available_at)
    policy = the_policy(unit) if trade.available_at is not None else None
    # After this point, every change must succeed: what cannot be taken back is owed.
    unit.change(trade, buyer, seller, fund)
    personal_cancelled_won = common_cancelled_won = 0
    if inside_window:
        # A refund inside the return window cancels the pending shares: nothing was ever
        # available, so nothing is clawed back and nothing owed.
        if buyer.pending_until(trade_id) is not None:
            personal_cancelled_won = buyer.pending[trade_id][1]
        if fund.pending_until(trade_id) is not None:
            common_cancelled_won = fund.pending[trade_id][1]
    elif policy is not None:
        release_shares(trade, buyer, fund, policy, cause)  # the window ended, unswept
    # A share pending at the buyer's move-out was cancelled then: nothing to take back.
    personal_forfeited_won = (trade.personal_won if trade_id in buyer.forfeited_pending
                              else 0)
    trade.refund(cause, personal_cancelled_won + personal_forfeited_won,
                 common_cancelled_won)
    if trade.points_used_won:
        seller.return_payment(trade_id, trade.points_used_won, cause)
        buyer.refund_points(trade_id, trade.points_used_won, cause)
    if personal_cancelled_won:
        buyer.cancel_pending(trade_id, cause)
    elif trade.personal_won and not personal_forfeited_won:
        buyer.claw_back(trade_id, trade.personal_won, cause)
    if common_cancelled_won:
        fund.cancel_pending(trade_id, cause)
    elif trade.common_won:
        fund.claw_back(trade_id, trade.common_won, cause)
    personal_clawback_won = (trade.personal_won - personal_cancelled_won
                             - personal_forfeited_won)
    return ({"trade_id": trade_id, "points_returned_won": trade.points_used_won,
             "personal_clawback_won": personal_clawback_won,
             "common_clawback_won": trade.common_won - common_cancelled_won,
             "personal_cancelled_won": personal_cancelled_won,
             "common_cancelled_won": common_cancelled_won}, trade.buyer_complex_id)
