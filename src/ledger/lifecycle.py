"""Points lifecycle: pending accruals during a trade's return window, expiry of lots, and
a move-out that sends the remaining lots where the policy says.

The rules live in the aggregates' command methods (Resident, Complex, Trade); this
service finds the aggregates and the policy version whose settings apply, and calls them
in order, every check before the first change.

Which version's settings apply:
- a trade's return window and the expiry of its accrual lot: the trade's policy version;
- a received payment's lot: the trade's policy version too;
- where expired points go: the version current at the expiry; where a moved-out wallet's
  points go: the version current at the move-out. Each event records the version.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ledger import commands as c
from ledger import errors
from ledger.complex import Complex
from ledger.errors import DomainError
from ledger.events import Cause
from ledger.lots import add_months
from ledger.policy import POLICY_ID, AccrualPolicy
from ledger.resident import Resident
from ledger.trade import Trade, trade_aggregate_id
from ledger.unit import Result, UnitOfWork


def trade_timing(policy: AccrualPolicy, policy_version: int, market: str,
                 moment: datetime) -> tuple[datetime | None, datetime]:
    """(pending_until, expires_at) of a trade's accrual recorded at `moment`: pending until
    the return window ends (None for a 0-day window), and its lot expiring expiry months
    after it becomes available."""
    lifecycle = policy.lifecycle(policy_version)
    days = policy.return_window_days(market, policy_version)
    pending_until = moment + timedelta(days=days) if days else None
    expires_at = add_months(pending_until or moment, lifecycle["expiry_months"])
    return pending_until, expires_at


def the_policy(unit: UnitOfWork) -> AccrualPolicy:
    policy = unit.find(AccrualPolicy, POLICY_ID)
    if policy is None:
        raise DomainError(errors.unknown_policy, "no accrual policy has been set")
    return policy


def release_shares(trade: Trade, buyer: Resident, fund: Complex, policy: AccrualPolicy,
                   cause: Cause) -> tuple[int, int]:
    """Make a trade's pending shares available; (personal_won, common_won) released."""
    personal_won = common_won = 0
    if buyer.pending_until(trade.trade_id) is not None:
        expires_at = add_months(cause.occurred_at,
                                policy.lifecycle(trade.policy_version)["expiry_months"])
        personal_won = buyer.pending[trade.trade_id][1]
        buyer.release_pending(trade.trade_id, trade.policy_version, expires_at, cause)
    if fund.pending_until(trade.trade_id) is not None:
        common_won = fund.pending[trade.trade_id][1]
        fund.release_pending(trade.trade_id, cause)
    return personal_won, common_won


def release_pending_points(command: c.ReleasePendingPoints, cause: Cause,
                           unit: UnitOfWork) -> Result:
    """A trade's return window ended: its pending shares become available (the sweeper)."""
    trade = unit.get(Trade, trade_aggregate_id(command.trade_id), errors.unknown_trade)
    buyer = unit.get(Resident, trade.buyer_id, errors.unknown_resident)
    fund = unit.get(Complex, trade.buyer_complex_id, errors.unknown_complex)
    if (buyer.pending_until(trade.trade_id) is None
            and fund.pending_until(trade.trade_id) is None):
        raise DomainError(errors.accrual_not_pending, trade.trade_id)
    assert trade.available_at is not None
    if command.now < trade.available_at:
        raise DomainError(errors.return_window_open,
                          f"{trade.trade_id} until {trade.available_at.isoformat()}")
    policy = the_policy(unit)
    # After this point, every change must succeed.
    unit.change(buyer, fund)
    personal_won, common_won = release_shares(trade, buyer, fund, policy, cause)
    return ({"trade_id": trade.trade_id, "personal_released_won": personal_won,
             "common_released_won": common_won}, trade.buyer_complex_id)


def expire_points(command: c.ExpirePoints, cause: Cause, unit: UnitOfWork) -> Result:
    """Expire every lot of a wallet that reached its expiry by `now` (the sweeper)."""
    wallet = unit.get(Resident, command.resident_id, errors.unknown_resident)
    wallet.check_open()
    policy = the_policy(unit)
    expired_to = policy.lifecycle()["expired_to"]
    fund = unit.get(Complex, wallet.home_complex_id, errors.unknown_complex)
    if not wallet.due_lots(command.now):
        raise DomainError(errors.nothing_to_expire, str(wallet.id))
    # After this point, every change must succeed.
    unit.change(wallet, fund)
    amount_won = wallet.expire_lots(command.now, expired_to, policy.current_version, cause)
    if expired_to == "fund":
        fund.receive_lapsed(wallet.id, "expired", amount_won, cause)
    return ({"resident_id": str(wallet.id), "expired_won": amount_won,
             "expired_to": expired_to, "policy_version": policy.current_version},
            wallet.home_complex_id)


def move_out(command: c.MoveOut, cause: Cause, unit: UnitOfWork) -> Result:
    """Close a wallet: its remaining lots go to the complex's fund (or where the policy in
    force says), lot by lot; pending shares are cancelled."""
    wallet = unit.get(Resident, command.resident_id, errors.unknown_resident)
    wallet.check_open()
    policy = unit.find(AccrualPolicy, POLICY_ID)
    moved_to, policy_version = (("unclaimed", 0) if policy is None else
                                (policy.lifecycle()["moved_out_to"], policy.current_version))
    fund = unit.get(Complex, wallet.home_complex_id, errors.unknown_complex)
    unit.change(wallet, fund)
    owed_won = wallet.owed_won
    pending_won = wallet.pending_won
    remaining_won = wallet.move_out(cause, moved_to, policy_version)
    if moved_to == "fund" and remaining_won:
        fund.receive_lapsed(wallet.id, "moved_out", remaining_won, cause)
    return ({"resident_id": str(wallet.id), "remaining_won": remaining_won,
             "owed_won": owed_won, "moved_to": moved_to,
             "pending_cancelled_won": pending_won}, wallet.home_complex_id)
