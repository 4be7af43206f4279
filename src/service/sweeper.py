"""The expiry sweeper: a writer that releases rent holds whose deadline has passed,
decides proposals whose voting window has closed, closes group buys whose deadline
has passed, releases pending points whose return window has ended and expires lots
past their expiry."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final
from uuid import NAMESPACE_URL, UUID, uuid5

import psycopg
from psycopg_pool import ConnectionPool

import projections
from ledger import commands as c
from ledger import limits
from ledger.application import Ledger, now
from ledger.errors import DomainError
from ledger.events import Cause

log = logging.getLogger(__name__)

SWEEPER_ACTOR: Final = uuid5(NAMESPACE_URL, "ledger:system:expiry-sweeper")
"""The system operator in whose name the sweeper expires holds."""


class ExpirySweeper:
    """Every `interval_seconds`: releases rent holds whose deadline has passed, decides
    proposals whose window closed, closes group buys past their deadline, releases pending
    points and expires lots.

    Each is a command with a request id derived from what it acts on, so two sweepers (two
    API workers) never act twice: the second gets a refusal (`hold_already_released`,
    `proposal_decided`, ...) or its first answer back, and moves on. Each kind of work is
    taken a page at a time through the group commit (`_sweep_pages`).
    """

    def __init__(self, ledger: Ledger, pool: ConnectionPool[psycopg.Connection[Any]],
                 interval_seconds: float) -> None:
        self.ledger = ledger
        self.pool = pool
        self.interval_seconds = interval_seconds
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep_once(self, moment: datetime | None = None) -> int:
        """Expire every hold due at `moment` (default now), then decide the proposals due;
        return how many holds expired."""
        moment = moment or now()
        expired = self._sweep_pages(
            lambda conn, limit: projections.due_holds(conn, moment, limit),
            lambda payment_id: (c.ExpireRentPayment(payment_id, moment), Cause(
                SWEEPER_ACTOR, "operator", f"expire-{uuid5(NAMESPACE_URL, payment_id).hex}",
                moment)), time.monotonic() + limits.sweep_round_seconds_max)
        self.decide_due_proposals(moment)
        return expired

    def decide_due_proposals(self, moment: datetime | None = None) -> int:
        """Decide every open proposal whose window closed by `moment`; return how many.

        Each is a CloseProposal command with the sweeper's clock and a request id derived
        from the proposal, so two sweepers never decide one proposal twice (the second gets
        `proposal_decided` or its first answer back).
        """
        moment = moment or now()
        return self._sweep_pages(
            lambda conn, limit: projections.due_proposals(conn, moment, limit),
            lambda proposal_id: (c.CloseProposal(proposal_id, moment), Cause(
                SWEEPER_ACTOR, "operator", f"decide-{uuid5(NAMESPACE_URL, proposal_id).hex}",
                moment)), time.monotonic() + limits.sweep_round_seconds_max)

    def close_due_group_buys(self, moment: datetime | None = None) -> int:
        """Close every open group buy whose deadline is past at `moment` (default now): each
        completes or is cancelled by its ordered quantity. Returns how many closed.

        The request id is derived from the group buy, so two sweepers close it once; the
        other gets `group_buy_closed` or its first answer back, and moves on. An order that
        reached the ledger before the close is in the outcome; one after it is refused."""
        moment = moment or now()
        return self._sweep_pages(
            lambda conn, limit: projections.due_group_buys(conn, moment, limit),
            lambda group_buy_id: (c.CloseGroupBuy(group_buy_id), Cause(
                SWEEPER_ACTOR, "operator", f"close-{uuid5(NAMESPACE_URL, group_buy_id).hex}",
                moment)), time.monotonic() + limits.sweep_round_seconds_max)

    def sweep_points(self, moment: datetime | None = None) -> tuple[int, int]:
        """Release the pending shares of every trade whose return window ended by `moment`,
        and expire every wallet's lots past their expiry; returns (trades released, wallets
        expired).

        Request ids are derived from the trade, or from the wallet and the earliest expiry
        due in it, so two sweepers release a trade once and expire a wallet's due lots
        once, while a lot falling due later the same day gets a sweep of its own; the other
        sweeper gets `accrual_not_pending`, `nothing_to_expire`, `request_id_reused` or its
        first answer back. The projection
        only proposes candidates: the ledger decides what is due.

        A round takes pages of `limits.page_size_max` until nothing due is left or
        `limits.sweep_round_seconds_max` has passed, each page through the group commit
        (`execute_many`): a month-end with tens of thousands of wallets due is one round,
        not one page every interval. What a page handled is not proposed again in the round
        (the projection may not have caught up with it yet)."""
        moment = moment or now()
        deadline = time.monotonic() + limits.sweep_round_seconds_max
        released = self._sweep_pages(
            lambda conn, limit: projections.due_pending_trades(conn, moment, limit),
            lambda trade_id: (c.ReleasePendingPoints(trade_id, moment), Cause(
                SWEEPER_ACTOR, "operator", f"release-{uuid5(NAMESPACE_URL, trade_id).hex}",
                moment)), deadline)
        expired = self._sweep_pages(
            lambda conn, limit: projections.due_expiry_wallets(conn, moment, limit),
            lambda due: (c.ExpirePoints(due[0], moment), Cause(
                SWEEPER_ACTOR, "operator", _expiry_request_id(*due), moment)),
            deadline)
        return released, expired

    def _sweep_pages(self, due: Callable[[psycopg.Connection[Any], int], list[Any]],
                     command_for: Callable[[Any], tuple[c.Command, Cause]],
                     deadline: float) -> int:
        """Run the commands for what `due` proposes, a page at a time; how many took effect
        (a refusal means it was done meanwhile, or is not due after all)."""
        handled: set[Any] = set()
        done = 0
        while time.monotonic() < deadline and not self._stopping.is_set():
            with self.pool.connection() as conn:
                page = [key for key in due(conn, limits.page_size_max + len(handled))
                        if key not in handled][:limits.page_size_max]
            if not page:
                break
            handled.update(page)
            results = self.ledger.execute_many([command_for(key) for key in page])
            for key, result in zip(page, results, strict=True):
                if isinstance(result, DomainError):
                    log.debug("sweep of %s skipped: %s", key, result.code)
                elif not result.replayed:
                    done += 1
        return done

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="expiry-sweeper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_seconds):
            try:
                self.sweep_once()
            except Exception:  # the next round tries again
                log.exception("expiry sweep failed")
            try:
                self.close_due_group_buys()
            except Exception:  # the next round tries again
                log.exception("group-buy sweep failed")
            try:
                self.sweep_points()
            except Exception:  # the next round tries again
                log.exception("points sweep failed")

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


def _expiry_request_id(resident_id: UUID, earliest_due: datetime) -> str:
    """The request id of a sweep expiring a wallet's lots, the earliest due at that time."""
    return f"expire-lots-{uuid5(NAMESPACE_URL, f'{resident_id}:{earliest_due.isoformat()}').hex}"
