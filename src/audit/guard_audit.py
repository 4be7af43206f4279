"""The wash-trade guards recomputed from the log (see ledger.guards, docs/ledger.md).

Written again here from the documented rules, not imported, so that a change to the
ledger's guards that lets a trade through is caught rather than inherited: for every
trade between residents (group-buy orders' trades excepted), the guards of the policy
version it recorded; no trade within one household where they refuse it; no trade
beyond its pair's count for the KST month; no sharing accrual past the buyer's cap
for the KST month. A version stored without `guards` guarded nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

GUARD_BREACHED = "guard_breached"
GROUP_BUY_TRADE_PREFIX = "group-buy:"
KST = timezone(timedelta(hours=9))


def kst_month(occurred_at: str) -> str:
    return datetime.fromisoformat(occurred_at).astimezone(KST).strftime("%Y-%m")


@dataclass
class GuardTally:
    """Counts the guards read, folded from the trades: per pair and per buyer, per month."""

    guards_by_version: dict[int, dict[str, Any] | None] = field(default_factory=dict)
    pair_trades: dict[tuple[str, str, str], int] = field(default_factory=dict)
    sharing_accrued_won: dict[tuple[str, str], int] = field(default_factory=dict)
    trades_checked: int = 0

    def version_set(self, data: dict[str, Any]) -> None:
        self.guards_by_version[data["version"]] = data.get("guards")

    def trade_recorded(self, data: dict[str, Any], occurred_at: str,
                       seller_household_id: str | None) -> list[str]:
        """What the trade breached (empty when nothing), after counting it."""
        if data["trade_id"].startswith(GROUP_BUY_TRADE_PREFIX):
            return []
        self.trades_checked += 1
        guards = self.guards_by_version.get(data["policy_version"]) or {}
        month = kst_month(occurred_at)
        buyer = str(data["buyer_id"]["_data_"])
        breaches: list[str] = []
        if data["seller_kind"] == "resident":
            seller = str(data["seller_id"]["_data_"])
            household = str(data["buyer_household_id"]["_data_"])
            refused = guards.get("same_household_trades") == "refused"
            if refused and household == seller_household_id:
                breaches.append(f"trade {data['trade_id']} within household {household}")
            low, high = sorted((buyer, seller))
            key = (low, high, month)
            before = self.pair_trades.get(key, 0)
            cap = guards.get("pair_trades_per_month_max")
            if cap is not None and before >= cap:
                breaches.append(f"trade {data['trade_id']} is trade {before + 1} of its pair "
                                f"in {month}, cap {cap}")
            self.pair_trades[key] = before + 1
        if data["market"] == "sharing" and data["personal_won"]:
            key_buyer = (buyer, month)
            before = self.sharing_accrued_won.get(key_buyer, 0)
            after = before + data["personal_won"]
            cap = guards.get("sharing_accrual_won_per_month_max")
            if cap is not None and after > cap:
                breaches.append(f"trade {data['trade_id']} takes sharing accruals in {month} "
                                f"to {after:,} won, cap {cap:,}")
            self.sharing_accrued_won[key_buyer] = after
        return breaches

    def trade_counted(self, data: dict[str, Any], pair_key: tuple[str, str, str] | None
                      ) -> str | None:
        """A pair counter's count must be the count of trades recomputed for it."""
        if pair_key is None:
            return None
        recomputed = self.pair_trades.get(pair_key, 0)
        if data["trades_count"] != recomputed:
            return (f"pair counter says {data['trades_count']} trades after {data['trade_id']}, "
                    f"recomputed {recomputed}")
        return None
