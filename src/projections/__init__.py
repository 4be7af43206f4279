"""The read side: projections of the ledger's events, each answering one question.

Tables live in the ledger's schema with the prefix `p_`; `p_tracking` holds each
projection's committed log position. Read functions take a psycopg connection whose
search_path is that schema (see `projections.runner.connect`).
"""

from projections.complex_funds import fund
from projections.group_buys import (
    due_group_buys,
    group_buy,
    group_buy_order,
    group_buy_orders,
    open_group_buys,
)
from projections.market_views import market_stats, merchant_settlement
from projections.points_lifecycle import (
    due_expiry_wallets,
    due_pending_trades,
    fund_pending_won,
    wallet_lifecycle,
    wallet_view_async,
)
from projections.proposals import (
    ballots,
    complex_proposals,
    due_proposals,
    fund_spends,
    household_ballot,
    proposal,
)
from projections.rent_payments import due_holds, household_rent, rent_payment
from projections.runner import (
    ALL,
    ProjectionRunner,
    connect,
    fold_all,
    positions,
    read_all,
    rebuild,
)
from projections.wallet_balances import (
    wallet,
    wallet_entries,
    wallet_entries_async,
)

__all__ = [
    "ALL",
    "ProjectionRunner",
    "ballots",
    "complex_proposals",
    "connect",
    "due_expiry_wallets",
    "due_group_buys",
    "due_holds",
    "due_pending_trades",
    "due_proposals",
    "fold_all",
    "fund",
    "fund_pending_won",
    "fund_spends",
    "group_buy",
    "group_buy_order",
    "group_buy_orders",
    "household_ballot",
    "household_rent",
    "market_stats",
    "merchant_settlement",
    "open_group_buys",
    "positions",
    "proposal",
    "read_all",
    "rebuild",
    "rent_payment",
    "wallet",
    "wallet_entries",
    "wallet_entries_async",
    "wallet_lifecycle",
    "wallet_view_async",
]
