"""Points lifecycle, given / when / then: pending accruals during a trade's return window,
expiry lots taken earliest-expiring first, and move-out lot by lot."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from ledger import commands as c
from ledger.application import Ledger, now
from ledger.complex import Complex
from ledger.conservation import fold
from ledger.errors import DomainError
from ledger.events import Cause
from ledger.lots import add_months
from ledger.policy import POLICY_ID, AccrualPolicy
from ledger.resident import Resident
from world import BILLING, DEFAULT_RATES, OPERATOR, World

DAY = timedelta(days=1)


def rejected(world: World, code: str, command: c.Command, **cause_fields: Any) -> None:
    """Assert that the command is rejected with `code` and that nothing was recorded."""
    before = world.ledger.position()
    with pytest.raises(DomainError) as caught:
        world.run(command, **cause_fields)
    assert caught.value.code == code, caught.value
    assert world.ledger.position() == before


class Town:
    """A complex, a buyer's home, a resident seller, a small-firm merchant and a policy."""

    def __init__(self, world: World, lifecycle: dict[str, Any] | None = None) -> None:
        self.world = world
        world.run(c.SetAccrualPolicy.of(DEFAULT_RATES, lifecycle))
        self.complex = world.complex()
        self.home = world.household(self.complex, "101-101")
        self.seller = world.resident(world.household(self.complex, "101-102"))
        self.merchant = world.merchant("small_firm")

    def buyer(self) -> uuid.UUID:
        return self.world.resident(self.world.household(self.complex))

    def wallet(self, resident: uuid.UUID) -> Resident:
        found = self.world.ledger.snapshot(Resident, resident)
        assert found is not None
        return found

    def fund(self) -> Complex:
        found = self.world.ledger.snapshot(Complex, self.complex)
        assert found is not None
        return found

    def shop(self, buyer: uuid.UUID, amount_won: int, at: datetime, trade_id: str,
             points_used_won: int = 0) -> Any:
        """A shopping trade (7-day window by default): 2 % personal, 0.5 % common."""
        return self.world.trade(buyer, self.merchant, amount_won, points_used_won,
                                seller_kind="small_firm", trade_id=trade_id, occurred_at=at)

    def share(self, buyer: uuid.UUID, amount_won: int, at: datetime, trade_id: str,
              points_used_won: int = 0) -> Any:
        """A sharing trade (0-day window by default): 3 % personal, 1 % common."""
        return self.world.trade(buyer, self.seller, amount_won, points_used_won,
                                trade_id=trade_id, occurred_at=at)

    def release(self, trade_id: str, at: datetime) -> Any:
        return self.world.run(c.ReleasePendingPoints(trade_id, at), occurred_at=at)

    def expire(self, resident: uuid.UUID, at: datetime) -> Any:
        return self.world.run(c.ExpirePoints(resident, at), occurred_at=at)

    def conserved(self) -> None:
        assert fold(self.world.all_events()).problems() == []


@pytest.fixture
def town(world: World) -> Town:
    return Town(world)


def lots_of(wallet: Resident) -> dict[str, int]:
    return {lot_id: lot[1] for lot_id, lot in (wallet.lots or {}).items()}


# Policy ----------------------------------------------------------------------------------

def test_a_policy_version_records_its_lifecycle_with_defaults(world: World) -> None:
    """A version set without lifecycle settings records the defaults, so they can be audited."""
    before = world.ledger.position()
    world.policy()
    version_set = next(e for e in world.events_after(before)
                       if isinstance(e, AccrualPolicy.VersionSet))
    assert version_set.lifecycle == {
        "return_window_days": {"shopping": 7, "sharing": 0}, "expiry_months": 24,
        "expired_to": "fund", "moved_out_to": "fund"}


@pytest.mark.parametrize("lifecycle", [
    {"expiry_months": 0}, {"return_window_days": {"shopping": -1}},
    {"return_window_days": {"cinema": 3}}, {"expired_to": "nowhere"}, {"colour": "red"},
])
def test_bad_lifecycle_settings_are_rejected(world: World, lifecycle: dict[str, Any]) -> None:
    """A lifecycle setting out of range, or unknown, rejects the whole version."""
    rejected(world, "invalid_field", c.SetAccrualPolicy.of(DEFAULT_RATES, lifecycle))


def test_a_version_stored_without_lifecycle_reads_as_the_defaults() -> None:
    """A VersionSet stored before lifecycles existed (no `lifecycle`) keeps its meaning: the
    defaults, the one place they are written down."""
    cause = Cause(OPERATOR, "operator", "r-1", now())
    policy = AccrualPolicy.create(cause)
    policy.trigger_event(AccrualPolicy.VersionSet, version=1, rates=DEFAULT_RATES,
                         **cause.fields(None))
    assert policy.return_window_days("shopping") == 7
    assert policy.lifecycle()["expiry_months"] == 24


def test_a_policy_read_from_its_snapshot_keeps_every_version(world: World) -> None:
    """After 49 versions the policy is snapshotted (JSON, whose keys are strings); a writer
    that starts from that snapshot still finds each version's rates, lifecycle and guards,
    and accrues with them."""
    for _ in range(48):
        world.policy()
    lifecycle = {"return_window_days": {"shopping": 3, "sharing": 0}, "expiry_months": 6,
                 "expired_to": "fund", "moved_out_to": "fund"}
    version = int(world.run(c.SetAccrualPolicy.of(DEFAULT_RATES, lifecycle))["version"])
    assert version == 49
    with world.connect() as conn:
        snapshots = conn.execute("SELECT count(*) FROM ledger_snapshots WHERE "
                                 "originator_id = %s", (POLICY_ID,)).fetchone()
    assert snapshots == (1,)
    fresh = Ledger.connect(world.database_url, world.schema)
    try:
        policy = fresh.snapshot(AccrualPolicy, POLICY_ID)
        assert policy is not None and policy.current_version == 49
        assert policy.rates_for("shopping", "small_firm", "groceries")[1:] == (200, 50)
        assert policy.return_window_days("shopping") == 3
        assert policy.lifecycle(1)["expiry_months"] == 24
        assert policy.guards_for(49) == policy.guards_for(1)
        other = World(fresh, world.database_url, world.schema)
        town = Town(other, lifecycle)
        at = now()
        town.shop(town.buyer(), 100_000, at, "T-snap")
        assert town.fund().pending_won == 500
    finally:
        fresh.close()


# Pending accruals ------------------------------------------------------------------------

def test_a_shopping_trade_accrues_pending_points(world: World, town: Town) -> None:
    """Both shares of a shopping trade are recorded at once, pending for 7 days, not available."""
    buyer = town.buyer()
    at = now()
    before = world.ledger.position()
    outcome = town.shop(buyer, 10_000, at, "T-shop")
    assert outcome["pending_until"] == (at + 7 * DAY).isoformat()
    accrued = next(e for e in world.events_after(before) if isinstance(e, Resident.PointsAccrued))
    assert (accrued.amount_won, accrued.pending_until) == (200, at + 7 * DAY)
    wallet = town.wallet(buyer)
    assert (wallet.available_won, wallet.pending_won) == (0, 200)
    assert (town.fund().balance_won, town.fund().pending_won) == (0, 50)
    town.conserved()


def test_pending_points_cannot_be_spent(world: World, town: Town) -> None:
    """Pending points are not spendable: a spend of them is refused."""
    buyer = town.buyer()
    town.shop(buyer, 10_000, now(), "T-shop")
    rejected(world, "insufficient_points",
             c.RecordTrade("T-2", "sharing", "childcare", town.seller, "resident", buyer,
                           1_000, 100))


def test_a_sharing_trade_is_available_at_once_as_a_lot(world: World, town: Town) -> None:
    """A 0-day window: points are available at once, as a lot expiring 24 months later."""
    buyer = town.buyer()
    at = now()
    town.share(buyer, 10_000, at, "T-share")
    wallet = town.wallet(buyer)
    assert (wallet.available_won, wallet.pending_won) == (300, 0)
    assert wallet.lots == {"accrual:T-share": [add_months(at, 24), 300]}


def test_pending_points_are_released_when_the_window_ends(world: World, town: Town) -> None:
    """At the window's end an event makes both shares available; the lot expires 24 months
    after that."""
    buyer = town.buyer()
    at = now() - 8 * DAY
    town.shop(buyer, 10_000, at, "T-shop")
    rejected(world, "return_window_open", c.ReleasePendingPoints("T-shop", at + 6 * DAY))
    released_at = at + 7 * DAY
    before = world.ledger.position()
    outcome = town.release("T-shop", released_at)
    assert world.event_names_after(before) == [
        "Resident.PendingPointsReleased", "Complex.PendingCommonPointsReleased"]
    assert (outcome["personal_released_won"], outcome["common_released_won"]) == (200, 50)
    wallet = town.wallet(buyer)
    assert (wallet.available_won, wallet.pending_won) == (200, 0)
    assert wallet.lots == {"accrual:T-shop": [add_months(released_at, 24), 200]}
    assert (town.fund().balance_won, town.fund().pending_won) == (50, 0)
    rejected(world, "accrual_not_pending", c.ReleasePendingPoints("T-shop", released_at))
    town.conserved()


def test_a_refund_inside_the_window_cancels_pending_points(world: World, town: Town) -> None:
    """A refund inside the window cancels both pending shares: no clawback, nothing owed."""
    buyer = town.buyer()
    at = now() - 2 * DAY
    town.shop(buyer, 10_000, at, "T-shop")
    before = world.ledger.position()
    outcome = world.run(c.RefundTrade("T-shop"))
    assert world.event_names_after(before) == [
        "Trade.Refunded", "Resident.PendingPointsCancelled",
        "Complex.PendingCommonPointsCancelled"]
    assert (outcome["personal_cancelled_won"], outcome["personal_clawback_won"]) == (200, 0)
    wallet = town.wallet(buyer)
    assert (wallet.available_won, wallet.pending_won, wallet.owed_won) == (0, 0, 0)
    assert (town.fund().pending_won, town.fund().owed_won) == (0, 0)
    rejected(world, "accrual_not_pending", c.ReleasePendingPoints("T-shop", now()))
    town.conserved()


def test_a_refund_after_the_window_keeps_todays_rules(world: World, town: Town) -> None:
    """A refund after the window (even before the sweeper ran) releases, then claws back: what
    was spent meanwhile is owed."""
    buyer = town.buyer()
    at = now() - 10 * DAY
    town.shop(buyer, 10_000, at, "T-shop")
    town.release("T-shop", at + 7 * DAY)
    town.share(buyer, 3_000, at + 8 * DAY, "T-spend", points_used_won=150)
    outcome = world.run(c.RefundTrade("T-shop"))
    assert outcome["personal_clawback_won"] == 200
    wallet = town.wallet(buyer)
    # 200 - 150 spent + 3 % of 2,850 = 85 earned; the clawback takes 135 and owes 65.
    assert (wallet.available_won, wallet.owed_won) == (0, 65)
    town.conserved()


def test_an_unswept_ended_window_is_released_by_the_refund(world: World, town: Town) -> None:
    """A refund after the window ends, before the sweeper released it: release then clawback."""
    buyer = town.buyer()
    town.shop(buyer, 10_000, now() - 9 * DAY, "T-shop")
    before = world.ledger.position()
    world.run(c.RefundTrade("T-shop"))
    assert sorted(world.event_names_after(before)) == sorted([
        "Resident.PendingPointsReleased", "Complex.PendingCommonPointsReleased",
        "Trade.Refunded", "Resident.AccrualClawedBack", "Complex.CommonPointsClawedBack"])
    assert town.wallet(buyer).available_won == 0
    town.conserved()


# Lots ------------------------------------------------------------------------------------

def test_spending_takes_the_earliest_expiring_lot_first(world: World, town: Town) -> None:
    """Two lots: a spend empties the one that expires first, then takes from the next."""
    buyer = town.buyer()
    older, newer = now() - 300 * DAY, now() - 100 * DAY
    town.share(buyer, 10_000, newer, "T-new")   # 300, expires later
    town.share(buyer, 10_000, older, "T-old")   # 300, expires first
    before = world.ledger.position()
    town.share(buyer, 10_000, now(), "T-spend", points_used_won=400)
    spent = next(e for e in world.events_after(before) if isinstance(e, Resident.PointsSpent))
    assert [(part["lot_id"], part["amount_won"]) for part in spent.lots or []] == [
        ("accrual:T-old", 300), ("accrual:T-new", 100)]
    assert lots_of(town.wallet(buyer)) == {"accrual:T-new": 200, "accrual:T-spend": 288}


def test_a_released_hold_returns_points_to_their_lots(world: World, town: Town) -> None:
    """A rent hold takes the earliest lots; its release gives each part back, same expiry."""
    buyer = world.resident(town.home)
    old_at = now() - 300 * DAY
    town.share(buyer, 10_000, old_at, "T-old")
    town.share(buyer, 10_000, now(), "T-new")
    invoice = world.invoice(town.home)
    payment = world.pay_rent(buyer, town.home, invoice, 400)
    assert lots_of(town.wallet(buyer)) == {"accrual:T-new": 200}
    assert town.wallet(buyer).hold_lots[payment][0]["lot_id"] == "accrual:T-old"
    world.run(c.ReleaseRentPayment(payment), actor=BILLING, role="billing")
    wallet = town.wallet(buyer)
    assert lots_of(wallet) == {"accrual:T-old": 300, "accrual:T-new": 300}
    assert (wallet.lots or {})["accrual:T-old"][0] == add_months(old_at, 24)
    town.conserved()


def test_a_refunded_spend_returns_points_to_their_lots(world: World, town: Town) -> None:
    """A refund of points used gives them back to the lots they came from."""
    buyer = town.buyer()
    old_at = now() - 300 * DAY
    town.share(buyer, 10_000, old_at, "T-old")
    town.shop(buyer, 1_000, now(), "T-buy", points_used_won=300)
    assert "accrual:T-old" not in lots_of(town.wallet(buyer))
    world.run(c.RefundTrade("T-buy"))
    assert town.wallet(buyer).lots == {"accrual:T-old": [add_months(old_at, 24), 300]}
    town.conserved()


def test_a_received_payment_is_a_lot(world: World, town: Town) -> None:
    """Points a resident seller receives are a lot of their own, with an expiry."""
    buyer = town.buyer()
    town.share(buyer, 10_000, now() - DAY, "T-earn")
    at = now()
    town.world.trade(buyer, town.seller, 1_000, 100, trade_id="T-pay", occurred_at=at)
    assert town.wallet(town.seller).lots == {"received:T-pay": [add_months(at, 24), 100]}


def test_a_lot_past_its_expiry_moves_to_the_fund(world: World, town: Town) -> None:
    """An expired lot's points leave the wallet for the complex's fund, lot by lot."""
    buyer = town.buyer()
    old_at = now() - 25 * 30 * DAY
    town.share(buyer, 10_000, old_at, "T-old")
    town.share(buyer, 10_000, now() - DAY, "T-new")
    fund_before = town.fund().balance_won
    before = world.ledger.position()
    outcome = town.expire(buyer, now())
    assert world.event_names_after(before) == [
        "Resident.PointsExpired", "Complex.LapsedPointsReceived"]
    expired = next(e for e in world.events_after(before)
                   if isinstance(e, Resident.PointsExpired))
    assert [(p["lot_id"], p["amount_won"]) for p in expired.lots] == [("accrual:T-old", 300)]
    assert (expired.expired_to, expired.policy_version, outcome["expired_won"]) == ("fund", 1, 300)
    assert lots_of(town.wallet(buyer)) == {"accrual:T-new": 300}
    assert town.fund().balance_won == fund_before + 300
    rejected(world, "nothing_to_expire", c.ExpirePoints(buyer, now()))
    town.conserved()


def test_a_lot_not_yet_due_does_not_expire(world: World, town: Town) -> None:
    """A wallet with no lot past its expiry answers `nothing_to_expire`."""
    buyer = town.buyer()
    town.share(buyer, 10_000, now(), "T-new")
    rejected(world, "nothing_to_expire", c.ExpirePoints(buyer, now() + 700 * DAY))
    town.expire(buyer, now() + 800 * DAY)
    assert town.wallet(buyer).available_won == 0


def test_expired_points_go_to_issuance_where_the_policy_says(world: World) -> None:
    """With `expired_to: issuance` the expired points return to issuance; the fund is unchanged."""
    town = Town(world, {"expired_to": "issuance"})
    buyer = town.buyer()
    town.share(buyer, 10_000, now() - 800 * DAY, "T-old")
    before = world.ledger.position()
    town.expire(buyer, now())
    assert world.event_names_after(before) == ["Resident.PointsExpired"]
    assert town.fund().balance_won == 100
    town.conserved()


def test_held_points_do_not_expire_while_held(world: World, town: Town) -> None:
    """Points taken by a hold are not in any open lot; the hold's release returns them to
    their lot, and the next sweep expires them if the lot is past its expiry."""
    buyer = world.resident(town.home)
    town.share(buyer, 10_000, now() - 800 * DAY, "T-old")
    payment = world.pay_rent(buyer, town.home, world.invoice(town.home), 300)
    rejected(world, "nothing_to_expire", c.ExpirePoints(buyer, now()))
    world.run(c.ReleaseRentPayment(payment), actor=BILLING, role="billing")
    assert town.expire(buyer, now())["expired_won"] == 300


# Move-out --------------------------------------------------------------------------------

def test_move_out_sends_remaining_lots_to_the_fund(world: World, town: Town) -> None:
    """Moving out sends every remaining lot to the fund, lot by lot; pending shares are
    cancelled (they never became the resident's)."""
    buyer = town.buyer()
    town.share(buyer, 10_000, now() - DAY, "T-a")
    town.share(buyer, 20_000, now(), "T-b")
    town.shop(buyer, 10_000, now(), "T-pending")
    fund_before = town.fund().balance_won
    before = world.ledger.position()
    outcome = world.run(c.MoveOut(buyer))
    assert (outcome["remaining_won"], outcome["moved_to"],
            outcome["pending_cancelled_won"]) == (900, "fund", 200)
    moved = next(e for e in world.events_after(before) if isinstance(e, Resident.MovedOut))
    assert [(p["lot_id"], p["amount_won"]) for p in moved.lots or []] == [
        ("accrual:T-a", 300), ("accrual:T-b", 600)]
    assert town.fund().balance_won == fund_before + 900
    wallet = town.wallet(buyer)
    assert (wallet.available_won, wallet.pending_won, wallet.lots) == (0, 0, {})
    town.conserved()


def test_a_refund_after_move_out_takes_nothing_from_a_cancelled_share(world: World,
                                                                      town: Town) -> None:
    """A share cancelled at move-out is not clawed back when the trade is refunded later."""
    buyer = town.buyer()
    town.shop(buyer, 10_000, now() - DAY, "T-pending")
    world.run(c.MoveOut(buyer))
    outcome = world.run(c.RefundTrade("T-pending"))
    assert outcome["personal_clawback_won"] == 0
    assert town.wallet(buyer).owed_won == 0
    town.conserved()


def test_move_out_to_unclaimed_where_the_policy_says(world: World) -> None:
    """With `moved_out_to: unclaimed`, the remaining points go to unclaimed, as before lots."""
    town = Town(world, {"moved_out_to": "unclaimed"})
    buyer = town.buyer()
    town.share(buyer, 10_000, now(), "T-a")
    before = world.ledger.position()
    world.run(c.MoveOut(buyer))
    assert world.event_names_after(before) == ["Resident.MovedOut"]
    assert fold(world.all_events()).accounts["unclaimed"] == 300


# Events stored before lots ---------------------------------------------------------------

def _bare_wallet(at: datetime) -> Resident:
    cause = Cause(OPERATOR, "operator", "r-1", at)
    return Resident.enrol(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), "consent", cause)


def test_old_credits_become_lots_from_their_recorded_time() -> None:
    """An accrual stored before lots (no expiry field) is a lot expiring 24 months after it was
    recorded; an old spend takes the earliest such lot first."""
    first, second = datetime(2026, 1, 31, tzinfo=now().tzinfo), datetime(2026, 3, 1,
                                                                         tzinfo=now().tzinfo)
    wallet = _bare_wallet(first)
    for trade_id, at in (("T-2", second), ("T-1", first)):
        fields = Cause(OPERATOR, "platform", f"r-{trade_id}", at).fields(wallet.home_complex_id)
        wallet.trigger_event(Resident.PointsAccrued, trade_id=trade_id, market="sharing",
                             seller_kind="resident", policy_version=1, personal_bps=300,
                             accrual_base_won=10_000, amount_won=300, recovered_won=0, **fields)
    fields = Cause(OPERATOR, "platform", "r-s", second).fields(wallet.home_complex_id)
    wallet.trigger_event(Resident.PointsSpent, trade_id="T-3", seller_id=uuid.uuid4(),
                         amount_won=400, **fields)
    assert wallet.lots == {"accrual:T-2": [datetime(2028, 3, 1, tzinfo=first.tzinfo), 200]}
    assert wallet.available_won == 200


def test_a_wallet_from_an_old_snapshot_reads_its_balance_as_one_lot() -> None:
    """A wallet snapshotted before lots (no lot state) reads its available points as one
    opening lot, expiring 24 months after enrolment."""
    at = datetime(2026, 2, 1, tzinfo=now().tzinfo)
    wallet = _bare_wallet(at)
    wallet.available_won = 500
    for name in ("lots", "hold_lots", "spent_lots", "pending"):
        wallet.__dict__.pop(name, None)
    fields = Cause(OPERATOR, "platform", "r-s", at).fields(wallet.home_complex_id)
    wallet.trigger_event(Resident.PointsSpent, trade_id="T-3", seller_id=uuid.uuid4(),
                         amount_won=100, **fields)
    assert wallet.lots == {"opening": [add_months(wallet.created_on, 24), 400]}
