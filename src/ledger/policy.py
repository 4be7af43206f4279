"""The accrual policy: versioned rates, set by the operator.

A rate applies to a market (`sharing`, `shopping`) and a seller kind
(`resident`, `small_firm`, `social_enterprise`, `local_food`, `public_body`),
optionally narrowed to one category; it has a personal share (to the buyer's
wallet) and a common share (to the buyer's complex fund), in basis points.

THE ROUNDING RULE, written down once: each share is floored to whole won,
separately:  share_won = accrual_base_won * share_bps // 10_000.
The accrual base is the part of the trade paid in money, not in points:
accrual_base_won = amount_won - points_used_won.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, uuid5

from ledger import errors, limits
from ledger.errors import DomainError
from ledger.events import Cause, LedgerAggregate
from ledger.guards import Guards, guards_of, validate_guards

MARKETS = ("sharing", "shopping")
SELLER_KINDS = ("resident", "small_firm", "social_enterprise", "local_food", "public_body")
MERCHANT_KINDS = SELLER_KINDS[1:]
ANY_CATEGORY = "*"

POLICY_ID = uuid5(NAMESPACE_URL, "ledger:accrual-policy")

LAPSE_DESTINATIONS = ("fund", "issuance", "unclaimed")
"""Where expired or moved-out personal points go: the resident's complex's common fund,
back to the issuance account, or the unclaimed account (kept on record)."""
LIFECYCLE_DEFAULTS: dict[str, Any] = {
    "return_window_days": {"shopping": 7, "sharing": 0},
    "expiry_months": 24,
    "expired_to": "fund",
    "moved_out_to": "fund",
}
"""The points lifecycle of a policy version that does not say otherwise, including every
version stored before lifecycles existed: return window per market (days; points of a
trade are pending until it ends), months from availability to a lot's expiry, and where
expired and moved-out points go. The one place these defaults live."""


def validate_lifecycle(lifecycle: dict[str, Any] | None) -> dict[str, Any]:
    """Check a version's lifecycle settings; missing keys take the defaults."""
    if lifecycle is None:
        lifecycle = {}
    if not isinstance(lifecycle, dict) or set(lifecycle) - set(LIFECYCLE_DEFAULTS):
        raise DomainError(errors.invalid_field, "lifecycle: unknown setting")
    windows_in = lifecycle.get("return_window_days", {})
    if not isinstance(windows_in, dict) or set(windows_in) - set(MARKETS):
        raise DomainError(errors.invalid_field, "lifecycle.return_window_days: markets only")
    windows = dict(LIFECYCLE_DEFAULTS["return_window_days"])
    for market, days in windows_in.items():
        if type(days) is not int or not 0 <= days <= limits.return_window_days_max:
            raise DomainError(errors.invalid_field,
                              f"lifecycle.return_window_days.{market}: 0 to "
                              f"{limits.return_window_days_max}")
        windows[market] = days
    months = lifecycle.get("expiry_months", LIFECYCLE_DEFAULTS["expiry_months"])
    if type(months) is not int or not 1 <= months <= limits.expiry_months_max:
        raise DomainError(errors.invalid_field,
                          f"lifecycle.expiry_months: 1 to {limits.expiry_months_max}")
    normalised: dict[str, Any] = {"return_window_days": windows, "expiry_months": months}
    for key in ("expired_to", "moved_out_to"):
        destination = lifecycle.get(key, LIFECYCLE_DEFAULTS[key])
        if destination not in LAPSE_DESTINATIONS:
            raise DomainError(errors.invalid_field,
                              f"lifecycle.{key}: one of {', '.join(LAPSE_DESTINATIONS)}")
        normalised[key] = destination
    return normalised


def share_won(accrual_base_won: int, share_bps: int) -> int:
    """One share of an accrual: floor, in won. The only rounding rule of the ledger."""
    assert accrual_base_won >= 0
    assert 0 <= share_bps <= limits.rate_bps_max
    return accrual_base_won * share_bps // 10_000


def accrual_base_won(amount_won: int, points_used_won: int) -> int:
    """Points are earned on the part of a trade paid in money."""
    assert 0 <= points_used_won <= amount_won
    return amount_won - points_used_won


def validate_rates(rates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check and normalise rate rows; a bad row rejects the whole version."""
    if not rates or len(rates) > limits.policy_rates_count_max:
        raise DomainError(errors.invalid_field, "rates: between 1 and 200 rows")
    normalised: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for row in rates:
        market = row.get("market")
        seller_kind = row.get("seller_kind")
        category = row.get("category") or ANY_CATEGORY
        if market not in MARKETS:
            raise DomainError(errors.invalid_market, f"market {market!r}")
        if seller_kind not in SELLER_KINDS:
            raise DomainError(errors.invalid_seller_kind, f"seller_kind {seller_kind!r}")
        if not isinstance(category, str) or len(category) > limits.string_length_max:
            raise DomainError(errors.invalid_field, "category")
        for share in ("personal_bps", "common_bps"):
            value = row.get(share)
            if type(value) is not int or not 0 <= value <= limits.rate_bps_max:
                raise DomainError(errors.invalid_rate, f"{share} {value!r}")
        key = (market, seller_kind, category)
        if key in seen:
            raise DomainError(errors.invalid_field, f"duplicate rate for {key}")
        seen.add(key)
        normalised.append({
            "market": market, "seller_kind": seller_kind, "category": category,
            "personal_bps": row["personal_bps"], "common_bps": row["common_bps"],
        })
    return normalised


class AccrualPolicy(LedgerAggregate):
    """All versions of the accrual policy; one aggregate for the whole platform."""

    if TYPE_CHECKING:  # state, declared for type checkers only: the library
        # would otherwise take annotations as constructor arguments.
        # Each by str(version): a snapshot stores them as JSON, whose keys are strings.
        versions: dict[str, list[dict[str, Any]]]
        current_version: int
        lifecycles: dict[str, dict[str, Any]]
        guards_by_version: dict[str, dict[str, Any]]

    # Added with points lifecycles. A class attribute, so that policies stored, and
    # snapshots taken, before it read every version as the defaults (LIFECYCLE_DEFAULTS).
    lifecycles = {}  # noqa: RUF012  (replaced, never mutated)

    class Created(LedgerAggregate.Created):
        def apply(self, policy: AccrualPolicy) -> None:
            policy.versions = {}
            policy.current_version = 0

    class VersionSet(LedgerAggregate.Event):
        version: int
        rates: list[dict[str, Any]]
        lifecycle: dict[str, Any] | None = None
        """Normalised lifecycle settings; None in versions stored before lifecycles."""
        guards: dict[str, Any] | None = None
        """Wash-trade guard settings (ledger.guards); None in versions stored before them."""

        def apply(self, policy: AccrualPolicy) -> None:
            policy.versions[str(self.version)] = [dict(row) for row in self.rates]
            policy.current_version = self.version
            if self.lifecycle is not None:
                policy.lifecycles = {**policy.lifecycles,
                                     str(self.version): dict(self.lifecycle)}
            if self.guards is not None:
                # A snapshot taken before guards existed has no such attribute.
                policy.guards_by_version = {**getattr(policy, "guards_by_version", {}),
                                            str(self.version): dict(self.guards)}

    @classmethod
    def create(cls, cause: Cause) -> AccrualPolicy:
        return cls._create(cls.Created, id=POLICY_ID, **cause.fields(None))

    def set_version(self, rates: list[dict[str, Any]], cause: Cause,
                    lifecycle: dict[str, Any] | None = None,
                    guards: dict[str, Any] | None = None) -> int:
        normalised = validate_rates(rates)
        normalised_lifecycle = validate_lifecycle(lifecycle)
        guard_settings = validate_guards(guards)
        version = self.current_version + 1
        self.trigger_event(self.VersionSet, version=version, rates=normalised,
                           lifecycle=normalised_lifecycle, guards=guard_settings,
                           **cause.fields(None))
        assert self.current_version == version
        return version

    def guards_for(self, version: int) -> Guards:
        """The wash-trade guards of a version (NO_GUARDS for one stored before guards)."""
        assert str(version) in self.versions
        return guards_of(getattr(self, "guards_by_version", {}).get(str(version)))

    def rates(self, version: int | None = None) -> list[dict[str, Any]]:
        """A version's rate rows (default: the current version's)."""
        chosen = self.current_version if version is None else version
        found = self.versions.get(str(chosen))
        if found is None:
            raise DomainError(errors.unknown_policy, f"version {chosen}")
        return found

    def rates_for(
        self, market: str, seller_kind: str, category: str, version: int | None = None,
    ) -> tuple[int, int, int]:
        """(version, personal_bps, common_bps) for a trade; a category row beats the `*` row."""
        chosen = self.current_version if version is None else version
        fallback: tuple[int, int] = (0, 0)
        for row in self.rates(chosen):
            if row["market"] != market or row["seller_kind"] != seller_kind:
                continue
            if row["category"] == category:
                return chosen, row["personal_bps"], row["common_bps"]
            if row["category"] == ANY_CATEGORY:
                fallback = (row["personal_bps"], row["common_bps"])
        return chosen, fallback[0], fallback[1]

    def lifecycle(self, version: int | None = None) -> dict[str, Any]:
        """A version's lifecycle settings (default: the current version's)."""
        chosen = self.current_version if version is None else version
        found = self.lifecycles.get(str(chosen))
        return validate_lifecycle(None) if found is None else found

    def return_window_days(self, market: str, version: int | None = None) -> int:
        days: int = self.lifecycle(version)["return_window_days"].get(market, 0)
        return days
