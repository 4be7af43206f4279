"""Domain behaviour of the ledger: given what happened, when a command arrives, then
these events are recorded (or this rejection, and nothing changes)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from ledger import commands as c
from ledger.application import now
from ledger.complex import Complex
from ledger.errors import DomainError
from ledger.household import Household
from ledger.merchant import Merchant
from ledger.resident import Resident
from world import BILLING, COORDINATOR, MANAGER, World


def rejected(world: World, code: str, command: c.Command, **cause_fields: object) -> None:
    """Assert that the command is rejected with `code` and that nothing was recorded."""
    before = world.ledger.position()
    with pytest.raises(DomainError) as caught:
        world.run(command, **cause_fields)
    assert caught.value.code == code
    assert world.ledger.position() == before


@pytest.fixture
def pilot(world: World) -> dict[str, uuid.UUID]:
    """Given a complex, two households, a seller with points and a policy."""
    world.policy()
    complex_id = world.complex()
    home = world.household(complex_id, "101-101")
    other_home = world.household(complex_id, "101-102")
    seller = world.resident(other_home)
    return {"complex": complex_id, "home": home, "other_home": other_home, "seller": seller}


def test_a_trade_records_the_sale_and_accrues_both_shares(world: World, pilot: dict) -> None:
    """A sale paid in money accrues 3 % to the buyer and 1 % to the buyer's complex fund."""
    buyer = world.resident(pilot["home"])
    before = world.ledger.position()
    outcome = world.trade(buyer, pilot["seller"], 10_000)
    assert world.event_names_after(before) == [
        "Trade.Recorded", "Resident.PointsAccrued", "Complex.CommonPointsAccrued",
        "TradePair.Opened", "TradePair.TradeCounted"]
    assert outcome["personal_accrued_won"] == 300
    assert outcome["common_accrued_won"] == 100
    assert world.ledger.snapshot(Resident, buyer).available_won == 300
    assert world.ledger.snapshot(Complex, pilot["complex"]).balance_won == 100


def test_accrual_shares_are_floored_separately(world: World, pilot: dict) -> None:
    """12,345 won at 3 % and 1 % accrues floor(370.35) = 370 and floor(123.45) = 123."""
    buyer = world.resident(pilot["home"])
    outcome = world.trade(buyer, pilot["seller"], 12_345)
    assert (outcome["personal_accrued_won"], outcome["common_accrued_won"]) == (370, 123)


def test_every_accrual_records_policy_version_and_inputs(world: World, pilot: dict) -> None:
    """The accrual event carries the policy version, the rate and the base it was computed on."""
    buyer = world.resident(pilot["home"])
    before = world.ledger.position()
    world.trade(buyer, pilot["seller"], 5_000, trade_id="T-audit")
    accrued = next(e for e in world.events_after(before)
                   if isinstance(e, Resident.PointsAccrued))
    assert (accrued.policy_version, accrued.personal_bps, accrued.accrual_base_won,
            accrued.amount_won, accrued.trade_id) == (1, 300, 5_000, 150, "T-audit")


def test_points_used_move_from_buyer_to_seller(world: World, pilot: dict) -> None:
    """Points used as payment leave the buyer's wallet and reach the seller's; only the money
    part of the trade earns points."""
    buyer = world.funded_resident(pilot["home"], pilot["seller"], 300)
    world.trade(buyer, pilot["seller"], 1_000, points_used_won=200)
    assert world.ledger.snapshot(Resident, buyer).available_won == 300 - 200 + 24
    assert world.ledger.snapshot(Resident, pilot["seller"]).available_won == 200


def test_points_paid_to_a_merchant_reach_its_settlement_account(world: World,
                                                                pilot: dict) -> None:
    """A merchant seller is credited in its settlement account, which a payout empties."""
    merchant = world.merchant("small_firm")
    buyer = world.funded_resident(pilot["home"], pilot["seller"], 300)
    world.trade(buyer, merchant, 1_000, points_used_won=250, seller_kind="small_firm")
    assert world.ledger.snapshot(Merchant, merchant).balance_won == 250
    outcome = world.run(c.PayOutMerchant(merchant, "PO-1"))
    assert outcome["amount_won"] == 250
    assert world.ledger.snapshot(Merchant, merchant).balance_won == 0


def test_spending_more_points_than_available_is_rejected(world: World, pilot: dict) -> None:
    """A buyer cannot use more points than the wallet holds; nothing is recorded."""
    buyer = world.funded_resident(pilot["home"], pilot["seller"], 300)
    rejected(world, "insufficient_points",
             c.RecordTrade("T-x", "sharing", "toys", pilot["seller"], "resident", buyer, 1_000,
                           301), actor=BILLING, role="platform")


@pytest.mark.parametrize("amount_won", [0, -5, 100_000_001])
def test_bad_amounts_are_rejected(world: World, pilot: dict, amount_won: int) -> None:
    """Zero, negative and too-large amounts are rejected with invalid_amount."""
    buyer = world.resident(pilot["home"])
    rejected(world, "invalid_amount",
             c.RecordTrade("T-bad", "sharing", "toys", pilot["seller"], "resident", buyer,
                           amount_won, 0))


def test_unknown_buyer_is_rejected(world: World, pilot: dict) -> None:
    """A trade naming a resident who never enrolled is rejected with unknown_resident."""
    rejected(world, "unknown_resident",
             c.RecordTrade("T-u", "sharing", "toys", pilot["seller"], "resident", uuid.uuid4(),
                           1_000, 0))


def test_trade_without_a_policy_is_rejected(world: World) -> None:
    """Before the operator sets an accrual policy, trades are rejected with unknown_policy."""
    complex_id = world.complex()
    buyer = world.resident(world.household(complex_id))
    seller = world.resident(world.household(complex_id))
    rejected(world, "unknown_policy",
             c.RecordTrade("T-p", "sharing", "toys", seller, "resident", buyer, 1_000, 0))


def test_naming_an_unknown_policy_version_is_rejected(world: World, pilot: dict) -> None:
    """A trade that asks for a policy version that was never set is rejected."""
    buyer = world.resident(pilot["home"])
    rejected(world, "unknown_policy",
             c.RecordTrade("T-v", "sharing", "toys", pilot["seller"], "resident", buyer, 1_000,
                           0, policy_version=7))


def test_a_trade_id_is_recorded_once(world: World, pilot: dict) -> None:
    """A second trade with the same trade id (under another request id) is trade_exists."""
    buyer = world.resident(pilot["home"])
    world.trade(buyer, pilot["seller"], 1_000, trade_id="T-dup")
    rejected(world, "trade_exists",
             c.RecordTrade("T-dup", "sharing", "toys", pilot["seller"], "resident", buyer, 1_000,
                           0))


def test_a_seller_kind_must_match_the_seller(world: World, pilot: dict) -> None:
    """Claiming a resident seller is a small firm is rejected with seller_kind_mismatch."""
    buyer = world.resident(pilot["home"])
    rejected(world, "seller_kind_mismatch",
             c.RecordTrade("T-k", "shopping", "food", pilot["seller"], "small_firm", buyer,
                           1_000, 0))


def test_refund_reverses_points_and_claws_back_accruals(world: World, pilot: dict) -> None:
    """A refund returns points used and takes back both accrued shares."""
    buyer = world.funded_resident(pilot["home"], pilot["seller"], 300)
    world.trade(buyer, pilot["seller"], 1_000, points_used_won=100, trade_id="T-r")
    before = world.ledger.position()
    world.run(c.RefundTrade("T-r"))
    assert world.event_names_after(before) == [
        "Trade.Refunded", "Resident.PointsRefunded", "Resident.AccrualClawedBack",
        "Resident.PaymentReturned", "Complex.CommonPointsClawedBack"]
    assert world.ledger.snapshot(Resident, buyer).available_won == 300
    assert world.ledger.snapshot(Resident, pilot["seller"]).available_won == 0


def test_a_trade_is_refunded_once(world: World, pilot: dict) -> None:
    """Refunding a refunded trade is rejected with trade_already_refunded."""
    buyer = world.resident(pilot["home"])
    world.trade(buyer, pilot["seller"], 1_000, trade_id="T-twice")
    world.run(c.RefundTrade("T-twice"))
    rejected(world, "trade_already_refunded", c.RefundTrade("T-twice"))


def test_clawback_of_spent_points_is_owed_then_recovered(world: World, pilot: dict) -> None:
    """If the buyer spent the accrued points, the shortfall is owed and the next credit pays it."""
    buyer = world.resident(pilot["home"])
    world.trade(buyer, pilot["seller"], 10_000, trade_id="T-spent")  # accrues 300
    world.trade(buyer, pilot["seller"], 300, points_used_won=300)  # spends them all
    world.run(c.RefundTrade("T-spent"))
    wallet = world.ledger.snapshot(Resident, buyer)
    assert (wallet.available_won, wallet.owed_won) == (0, 300)
    world.trade(buyer, pilot["seller"], 20_000)  # accrues 600: 300 repays the debt
    wallet = world.ledger.snapshot(Resident, buyer)
    assert (wallet.available_won, wallet.owed_won) == (300, 0)


def test_merchant_shortfall_after_payout_is_owed(world: World, pilot: dict) -> None:
    """A refund after a merchant was paid out leaves the merchant owing, recovered from sales."""
    merchant = world.merchant("small_firm")
    buyer = world.funded_resident(pilot["home"], pilot["seller"], 300)
    world.trade(buyer, merchant, 500, points_used_won=200, seller_kind="small_firm",
                trade_id="T-m")
    world.run(c.PayOutMerchant(merchant, "PO-m"))
    world.run(c.RefundTrade("T-m"))
    assert world.ledger.snapshot(Merchant, merchant).owed_won == 200
    assert world.ledger.snapshot(Resident, buyer).available_won >= 200


def test_rent_payment_holds_points_at_once(world: World, pilot: dict) -> None:
    """Paying rent moves points from available to held; they cannot be spent meanwhile."""
    buyer = world.funded_resident(pilot["home"], pilot["seller"], 300)
    invoice = world.invoice(pilot["home"])
    world.pay_rent(buyer, pilot["home"], invoice, 250)
    wallet = world.ledger.snapshot(Resident, buyer)
    assert (wallet.available_won, wallet.held_won) == (50, 250)
    rejected(world, "insufficient_points",
             c.RecordTrade("T-h", "sharing", "toys", pilot["seller"], "resident", buyer, 100,
                           100))


def test_settling_a_hold_hands_points_to_billing(world: World, pilot: dict) -> None:
    """Billing settles a hold: the held points leave the wallet for rent clearing."""
    buyer = world.funded_resident(pilot["home"], pilot["seller"], 300)
    payment = world.pay_rent(buyer, pilot["home"], world.invoice(pilot["home"]), 200)
    before = world.ledger.position()
    world.run(c.SettleRentPayment(payment), actor=BILLING, role="billing")
    assert world.event_names_after(before) == ["Household.RentPaymentSettled",
                                               "Resident.HoldSettled"]
    wallet = world.ledger.snapshot(Resident, buyer)
    assert (wallet.available_won, wallet.held_won) == (100, 0)


def test_a_hold_is_settled_once(world: World, pilot: dict) -> None:
    """Settling a settled hold is rejected with hold_already_settled."""
    buyer = world.funded_resident(pilot["home"], pilot["seller"], 300)
    payment = world.pay_rent(buyer, pilot["home"], world.invoice(pilot["home"]), 200)
    world.run(c.SettleRentPayment(payment), actor=BILLING, role="billing")
    rejected(world, "hold_already_settled", c.SettleRentPayment(payment))


def test_releasing_a_hold_returns_the_points(world: World, pilot: dict) -> None:
    """Billing releases a hold: the points are available again; the hold can't be settled."""
    buyer = world.funded_resident(pilot["home"], pilot["seller"], 300)
    payment = world.pay_rent(buyer, pilot["home"], world.invoice(pilot["home"]), 200)
    world.run(c.ReleaseRentPayment(payment), actor=BILLING, role="billing")
    assert world.ledger.snapshot(Resident, buyer).available_won == 300
    rejected(world, "hold_already_released", c.SettleRentPayment(payment))


def test_an_unsettled_hold_expires_after_its_deadline(world: World, pilot: dict) -> None:
    """A hold past its deadline is released as expired; before it, expiry is refused."""
    buyer = world.funded_resident(pilot["home"], pilot["seller"], 300)
    payment = world.pay_rent(buyer, pilot["home"], world.invoice(pilot["home"]), 200,
                             hold_seconds=3600)
    rejected(world, "hold_not_due", c.ExpireRentPayment(payment, now()))
    before = world.ledger.position()
    world.run(c.ExpireRentPayment(payment, now() + timedelta(hours=2)))
    released = [e for e in world.events_after(before)
                if isinstance(e, Household.RentPaymentReleased)]
    assert [e.reason for e in released] == ["expired"]
    assert world.ledger.snapshot(Resident, buyer).available_won == 300


def test_holds_on_an_invoice_never_exceed_it(world: World, pilot: dict) -> None:
    """Two residents of one household cannot together hold more than the invoice amount."""
    first = world.funded_resident(pilot["home"], pilot["seller"], 300)
    second = world.funded_resident(pilot["home"], pilot["seller"], 300)
    invoice = world.invoice(pilot["home"], amount_won=400)
    world.pay_rent(first, pilot["home"], invoice, 300)
    rejected(world, "invoice_exceeded",
             c.PayRent("P-over", pilot["home"], invoice, "2026-11", 101, second),
             actor=second, role="resident")
    world.pay_rent(second, pilot["home"], invoice, 100)


def test_a_released_hold_frees_its_share_of_the_invoice(world: World, pilot: dict) -> None:
    """After a release, the invoice can take a new payment of the released amount."""
    buyer = world.funded_resident(pilot["home"], pilot["seller"], 300)
    invoice = world.invoice(pilot["home"], amount_won=200)
    payment = world.pay_rent(buyer, pilot["home"], invoice, 200)
    world.run(c.ReleaseRentPayment(payment), actor=BILLING, role="billing")
    world.pay_rent(buyer, pilot["home"], invoice, 200)


def test_only_residents_of_the_household_pay_its_rent(world: World, pilot: dict) -> None:
    """A resident of another household is rejected with resident_not_in_household."""
    invoice = world.invoice(pilot["home"])
    rejected(world, "resident_not_in_household",
             c.PayRent("P-n", pilot["home"], invoice, "2026-11", 10, pilot["seller"]),
             actor=pilot["seller"], role="resident")


def test_paying_an_unknown_invoice_is_rejected(world: World, pilot: dict) -> None:
    """Rent can only be paid against an invoice billing issued for that household."""
    buyer = world.funded_resident(pilot["home"], pilot["seller"], 300)
    rejected(world, "unknown_invoice",
             c.PayRent("P-u", pilot["home"], "INV-none", "2026-11", 10, buyer),
             actor=buyer, role="resident")


def test_fund_spend_cites_its_decision(world: World, pilot: dict) -> None:
    """A manager spends from the fund for a purpose, citing the approving decision."""
    buyer = world.resident(pilot["home"])
    world.trade(buyer, pilot["seller"], 100_000)  # fund accrues 1,000
    before = world.ledger.position()
    world.run(c.SpendFund(pilot["complex"], "S-1", "facility", 600, "council-2026-07"),
              actor=MANAGER, role="manager")
    spent = [e for e in world.events_after(before) if isinstance(e, Complex.FundSpent)]
    assert [(e.purpose, e.decision_ref, e.amount_won) for e in spent] == [
        ("facility", "council-2026-07", 600)]
    assert world.ledger.snapshot(Complex, pilot["complex"]).balance_won == 400


def test_fund_spend_never_exceeds_the_fund(world: World, pilot: dict) -> None:
    """Spending more than the fund holds is rejected with insufficient_fund."""
    rejected(world, "insufficient_fund",
             c.SpendFund(pilot["complex"], "S-2", "event", 1, "council-1"), actor=MANAGER,
             role="manager")


def test_fund_spend_needs_a_known_purpose(world: World, pilot: dict) -> None:
    """A purpose other than facility, event or upkeep is rejected."""
    rejected(world, "invalid_purpose",
             c.SpendFund(pilot["complex"], "S-3", "party", 1, "council-1"), actor=MANAGER,
             role="manager")


def test_coordinator_enrolment_records_who_acted_for_whom(world: World, pilot: dict) -> None:
    """A coordinator enrolling a resident is the actor; the resident is on_behalf_of."""
    before = world.ledger.position()
    resident = world.resident(pilot["home"])
    enrolled = next(e for e in world.events_after(before) if isinstance(e, Resident.Enrolled))
    assert (enrolled.actor_id, enrolled.actor_role, enrolled.on_behalf_of,
            enrolled.consent_ref) == (COORDINATOR, "coordinator", resident, "consent-paper-1")


def test_self_enrolment_has_no_on_behalf_of(world: World, pilot: dict) -> None:
    """A resident who enrols themself is both actor and wallet owner."""
    me = uuid.uuid4()
    outcome = world.run(c.EnrolResident(pilot["home"], "app-consent", resident_id=me),
                        actor=me, role="resident")
    assert outcome["resident_id"] == str(me)
    enrolled = world.events_after(outcome.position - 1)[0]
    assert (enrolled.actor_id, enrolled.on_behalf_of) == (me, None)


def test_moving_out_closes_the_wallet_and_records_the_remainder(world: World,
                                                                pilot: dict) -> None:
    """Move-out moves the remaining points to the unclaimed account, on record."""
    buyer = world.funded_resident(pilot["home"], pilot["seller"], 300)
    outcome = world.run(c.MoveOut(buyer), actor=COORDINATOR, role="coordinator")
    assert outcome["remaining_won"] == 300
    wallet = world.ledger.snapshot(Resident, buyer)
    assert (wallet.closed, wallet.available_won) == (True, 0)


def test_a_closed_wallet_takes_no_trades(world: World, pilot: dict) -> None:
    """After move-out, the resident can neither buy nor sell: wallet_closed."""
    buyer = world.resident(pilot["home"])
    world.run(c.MoveOut(buyer))
    rejected(world, "wallet_closed",
             c.RecordTrade("T-c", "sharing", "toys", pilot["seller"], "resident", buyer, 100, 0))


def test_moving_out_waits_for_open_holds(world: World, pilot: dict) -> None:
    """Points held for the last rent must be settled or released before the wallet closes."""
    buyer = world.funded_resident(pilot["home"], pilot["seller"], 300)
    payment = world.pay_rent(buyer, pilot["home"], world.invoice(pilot["home"]), 300)
    rejected(world, "holds_pending", c.MoveOut(buyer))
    world.run(c.SettleRentPayment(payment), actor=BILLING, role="billing")
    assert world.run(c.MoveOut(buyer))["remaining_won"] == 0


def test_a_complex_code_is_registered_once(world: World) -> None:
    """Registering the same complex code twice is rejected with complex_exists."""
    world.complex("HS-09")
    rejected(world, "complex_exists", c.RegisterComplex("HS-09", "again", "Hwaseong"))


def test_policy_rates_are_validated(world: World) -> None:
    """A rate above 10,000 basis points or an unknown seller kind rejects the version."""
    rejected(world, "invalid_rate", c.SetAccrualPolicy.of([
        {"market": "sharing", "seller_kind": "resident", "personal_bps": 10_001,
         "common_bps": 0}]))
    rejected(world, "invalid_seller_kind", c.SetAccrualPolicy.of([
        {"market": "sharing", "seller_kind": "landlord", "personal_bps": 1, "common_bps": 0}]))


def test_a_refused_first_policy_leaves_no_policy_behind(world: World) -> None:
    """The first version, refused, creates nothing: the next valid one is version 1."""
    rejected(world, "invalid_rate", c.SetAccrualPolicy.of([
        {"market": "sharing", "seller_kind": "resident", "personal_bps": -1,
         "common_bps": 0}]))
    assert world.policy() == 1


def test_a_new_policy_version_applies_to_later_trades(world: World, pilot: dict) -> None:
    """Trades after a policy change use the new version; earlier accruals keep theirs."""
    buyer = world.resident(pilot["home"])
    first = world.trade(buyer, pilot["seller"], 10_000)
    world.policy([{"market": "sharing", "seller_kind": "resident", "personal_bps": 1000,
                   "common_bps": 0}])
    second = world.trade(buyer, pilot["seller"], 10_000)
    assert (first["policy_version"], first["personal_accrued_won"]) == (1, 300)
    assert (second["policy_version"], second["personal_accrued_won"]) == (2, 1000)


def test_no_personal_data_in_events(world: World, pilot: dict) -> None:
    """Events name people by id only: no field holds a name or phone number of a resident."""
    world.resident(pilot["home"])
    for event in world.all_events():
        if isinstance(event, Resident.Enrolled):
            fields = set(vars(event)) - {"originator_id", "originator_version", "timestamp"}
            assert fields == {"actor_id", "actor_role", "on_behalf_of", "request_id",
                              "complex_id", "occurred_at", "household_id", "consent_ref",
                              "originator_topic"}
