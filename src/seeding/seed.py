"""A realistic dataset, loaded through the same commands users send.

The default is small (2 complexes, 40 households, one month). `--complexes 29
--households 25000` is the Hwaseong pilot; `--months N` adds N months of activity
at rates modelled on the pilot: every household trades a few times a month in
both markets, 2 % of trades are refunded, billing issues rent invoices on the
20th and about one household in eight pays part of its rent with points (most
settled, some released, a few left to expire), merchants run group buys (some
reach their minimum, some do not; see seeding.group_buys), each complex's manager
opens a spending proposal that 25-55 % of its households vote on (most say yes; some
proposals miss the quorum or the majority), the sweeper decides it when its window
closes, managers spend what was approved and a small amount within the monthly
allowance, and a few residents move out each month.

Each month some residents also try wash trades, which the policy's guards refuse
(see ledger.guards): a sale within their own household, a pair trading past the
month's pair cap, a sharing sale whose accrual would pass the buyer's monthly cap.
The summary counts the refusals by code.

Time is simulated: every command carries the platform time it happened at
(`occurred_at`), in Korea Standard Time; the recorded time is the real clock. The
seeded months end today: by default the first starts N months before today (the
same day of the month), so the last one ends with yesterday and a new user's demo
shows recent activity. With `start` given, months run from it instead.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

from tqdm import tqdm

from ledger import commands as c
from ledger import limits
from ledger.application import Ledger, Outcome
from ledger.complex import Complex
from ledger.errors import DomainError
from ledger.events import KST, Cause
from ledger.resident import Resident
from seeding.group_buys import seed_group_buys
from seeding.lifecycle import release_ended_windows, seed_lifecycle

OPERATOR = uuid.UUID("0b1e0000-0000-4000-8000-000000000001")
PLATFORM = uuid.UUID("0b1e0000-0000-4000-8000-000000000002")
BILLING = uuid.UUID("0b1e0000-0000-4000-8000-000000000003")

PILOT_RATES: list[dict[str, Any]] = [
    {"market": "sharing", "seller_kind": "resident", "personal_bps": 300, "common_bps": 100},
    {"market": "shopping", "seller_kind": "small_firm", "personal_bps": 200, "common_bps": 100},
    {"market": "shopping", "seller_kind": "social_enterprise", "personal_bps": 300,
     "common_bps": 150},
    {"market": "shopping", "seller_kind": "local_food", "personal_bps": 300, "common_bps": 150},
    {"market": "shopping", "seller_kind": "public_body", "personal_bps": 100, "common_bps": 50},
]
SHARING_CATEGORIES = ("childcare", "cooking_class", "free_toys", "caregiving",
                      "school_walk", "carpool")
SHOPPING_CATEGORIES = {
    "small_firm": ("move_in_cleaning", "ventilation_filters", "repairs"),
    "social_enterprise": ("household_goods", "care_services"),
    "local_food": ("vegetables", "rice", "side_dishes"),
    "public_body": ("culture_tickets", "education"),
}

TRADES_PER_HOUSEHOLD_MONTH = 4.0
SHARING_SHARE = 0.35
REFUND_RATE = 0.02
POINTS_PAYMENT_RATE = 0.2
RENT_BY_POINTS_RATE = 0.12
MOVE_OUT_RATE = 0.004
TURNOUTS = (0.25, 0.35, 0.45, 0.55)
"""Share of a complex's households that vote on a proposal (the default quorum is 30 %)."""
YES_RATES = (0.35, 0.7, 0.8, 0.9)
"""Share of the ballots that say yes (more than half is needed)."""
COORDINATOR_BALLOT_RATE = 0.1
VOTING_DAYS = 10
PROPOSAL_TITLES = {
    "facility": ("Playroom mats", "Study room desks", "Fitness corner bench"),
    "event": ("Harvest festival", "Children's day picnic", "Senior lunch"),
    "upkeep": ("Stairwell cleaning", "Ventilation filter change", "Garden trimming"),
}
CHUNK_COMMANDS = 4_000
WASH_HOUSEHOLDS_PER_ATTEMPT = 50
"""One attempt of each kind of wash trade a month per this many households."""
WASH_SHARING_AMOUNT_WON = 1_100_000
"""A sharing sale whose 3 % accrual (33,000 won) passes the default monthly cap (30,000)."""


@dataclass
class SeedSummary:
    commands: int = 0
    rejected: int = 0
    events_before: int = 0
    events_after: int = 0
    position: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    rejected_by_code: dict[str, int] = field(default_factory=dict)


@dataclass
class _World:
    complexes: list[UUID] = field(default_factory=list)
    complex_codes: list[str] = field(default_factory=list)
    households: list[tuple[UUID, UUID]] = field(default_factory=list)  # (household, complex)
    residents: list[tuple[UUID, UUID]] = field(default_factory=list)  # (resident, household)
    merchants: list[tuple[UUID, str]] = field(default_factory=list)
    closed: set[UUID] = field(default_factory=set)


class Seeder:
    def __init__(self, ledger: Ledger, *, complexes: int, households: int, months: int,
                 seed: int = 7, start: date | None = None, progress: bool = True) -> None:
        assert complexes >= 1 and households >= complexes and months >= 0
        self.ledger = ledger
        self.complex_count = complexes
        self.household_count = households
        self.months = months
        self.random = random.Random(seed)
        self.start = start or _shift_months(datetime.now(KST).date(), -months)
        self.progress = progress
        self.world = _World()
        self.summary = SeedSummary()
        self.requests = 0
        # Request and trade ids are unique per run, so seeding again adds to the ledger.
        self.run_tag = uuid.uuid4().hex[:8]

    # Plumbing ----------------------------------------------------------------------------

    def _cause(self, actor: UUID, role: str, at: datetime,
               on_behalf_of: UUID | None = None) -> Cause:
        self.requests += 1
        return Cause(actor, role, f"seed-{self.run_tag}-{self.requests}", at, on_behalf_of)

    def _run(self, items: list[tuple[c.Command, Cause]], bar: Any) -> list[Outcome | None]:
        outcomes: list[Outcome | None] = []
        for start in range(0, len(items), CHUNK_COMMANDS):
            chunk = items[start:start + CHUNK_COMMANDS]
            for (command, _), result in zip(chunk, self.ledger.execute_many(chunk),
                                            strict=True):
                self.summary.commands += 1
                name = command.name
                if isinstance(result, DomainError):
                    self.summary.rejected += 1
                    self.summary.rejected_by_code[result.code] = (
                        self.summary.rejected_by_code.get(result.code, 0) + 1)
                    outcomes.append(None)
                else:
                    self.summary.counts[name] = self.summary.counts.get(name, 0) + 1
                    self.summary.position = max(self.summary.position, result.position)
                    outcomes.append(result)
            bar.update(len(chunk))
        return outcomes

    def _at(self, day: date, hour_low: int = 7, hour_high: int = 23) -> datetime:
        seconds = self.random.randrange(hour_low * 3600, hour_high * 3600)
        return datetime(day.year, day.month, day.day, tzinfo=KST) + timedelta(seconds=seconds)

    # The dataset -------------------------------------------------------------------------

    def run(self) -> SeedSummary:
        self.summary.events_before = self.ledger.position()
        with tqdm(total=self._estimate(), desc="seeding", unit="cmd",
                  disable=not self.progress) as bar:
            self._population(bar)
            for month in range(self.months):
                self._month(month, bar)
            seed_lifecycle(self, [r for r in self.world.residents
                                  if r[0] not in self.world.closed],
                           self.start, self.months, OPERATOR, bar)
        self.summary.events_after = self.ledger.position()
        return self.summary

    def _estimate(self) -> int:
        population = 1 + self.complex_count + self.household_count * 2.5 + 40
        # Trades; rent invoices, holds and their outcomes; about one more for group-buy
        # orders and ballots (the pilot's month: 226,288 commands against 200,070 without).
        per_month = self.household_count * (TRADES_PER_HOUSEHOLD_MONTH + 1.5 + 1.05)
        return int(population + per_month * self.months)

    def _population(self, bar: Any) -> None:
        day = self.start - timedelta(days=1)
        at = datetime(day.year, day.month, day.day, 9, tzinfo=KST)
        items: list[tuple[c.Command, Cause]] = [
            (c.SetAccrualPolicy.of(PILOT_RATES), self._cause(OPERATOR, "operator", at))]
        existing = self.ledger.snapshot(Complex, _complex_id(f"HS-{1:02d}"))
        offset = 0
        if existing is not None:  # seeding again: add new complexes after the old ones
            while self.ledger.snapshot(Complex, _complex_id(f"HS-{offset + 1:02d}")):
                offset += 1
        for number in range(offset + 1, offset + self.complex_count + 1):
            code = f"HS-{number:02d}"
            self.world.complex_codes.append(code)
            items.append((c.RegisterComplex(code, f"Hwaseong rental complex {number:02d}",
                                            "Hwaseong"), self._cause(OPERATOR, "operator", at)))
        for kind, count in (("small_firm", 20), ("social_enterprise", 10), ("local_food", 15),
                            ("public_body", 5)):
            for number in range(count):
                items.append((c.RegisterMerchant(kind, f"{kind.replace('_', ' ')} {number + 1}"),
                              self._cause(OPERATOR, "operator", at)))
        outcomes = self._run(items, bar)
        for (command, _), outcome in zip(items, outcomes, strict=True):
            if outcome is None:
                continue
            if isinstance(command, c.RegisterComplex):
                self.world.complexes.append(UUID(outcome["complex_id"]))
            elif isinstance(command, c.RegisterMerchant):
                self.world.merchants.append((UUID(outcome["merchant_id"]), command.kind))

        items = []
        for index in range(self.household_count):
            complex_id = self.world.complexes[index % len(self.world.complexes)]
            building = 101 + (index // len(self.world.complexes)) // 400
            unit = f"{building}-{(index // len(self.world.complexes)) % 400 + 101:04d}"
            items.append((c.RegisterHousehold(complex_id, unit),
                          self._cause(OPERATOR, "operator", at)))
        outcomes = self._run(items, bar)
        for (command, _), outcome in zip(items, outcomes, strict=True):
            if outcome is not None:
                assert isinstance(command, c.RegisterHousehold)
                self.world.households.append((UUID(outcome["household_id"]), command.complex_id))

        items = []
        for household_id, complex_id in self.world.households:
            for _ in range(self.random.choice((1, 1, 2, 2, 3))):
                if self.random.random() < 0.3:  # enrolled by the complex's coordinator
                    actor = uuid.uuid5(complex_id, "coordinator")
                    items.append((c.EnrolResident(household_id, "consent-form-paper"),
                                  self._cause(actor, "coordinator", at)))
                else:
                    resident_id = uuid.UUID(int=self.random.getrandbits(128), version=4)
                    items.append((c.EnrolResident(household_id, "consent-in-app",
                                                  resident_id=resident_id),
                                  self._cause(resident_id, "resident", at)))
        outcomes = self._run(items, bar)
        for (command, _), outcome in zip(items, outcomes, strict=True):
            if outcome is not None:
                assert isinstance(command, c.EnrolResident)
                self.world.residents.append((UUID(outcome["resident_id"]), command.household_id))

    def _month(self, month: int, bar: Any) -> None:
        first = _shift_months(self.start, month)
        days = (_shift_months(self.start, month + 1) - first).days
        residents = [r for r in self.world.residents if r[0] not in self.world.closed]
        trades_total = int(len(self.world.households) * TRADES_PER_HOUSEHOLD_MONTH)
        trade_days = sorted(self.random.randrange(days) for _ in range(trades_total))
        recorded: list[tuple[str, datetime]] = []
        for day_offset, day_trades in _group(trade_days):
            day = first + timedelta(days=day_offset)
            items = [self._trade(day, residents) for _ in range(day_trades)]
            outcomes = self._run(items, bar)
            for (command, cause), outcome in zip(items, outcomes, strict=True):
                if outcome is not None:
                    assert isinstance(command, c.RecordTrade)
                    recorded.append((command.trade_id, cause.occurred_at))
            refunds: list[tuple[c.Command, Cause]] = [
                (c.RefundTrade(trade_id), self._cause(PLATFORM, "platform",
                                                      at + timedelta(days=1)))
                for trade_id, at in recorded[-day_trades:]
                if self.random.random() < REFUND_RATE]
            self._run(refunds, bar)
        self._wash_trades(first + timedelta(days=days // 2), residents, bar)
        self._group_buys(first, residents, bar)
        self._rent(first, residents, bar)
        approved = self._votes(first, residents, bar)
        release_ended_windows(self, datetime.combine(first + timedelta(days=days - 2),
                                                     datetime.min.time(), KST), OPERATOR, bar)
        self._fund_spends(first + timedelta(days=days - 2), approved, bar)
        self._move_outs(first + timedelta(days=days - 1), residents, bar)

    def _trade(self, day: date, residents: list[tuple[UUID, UUID]]
               ) -> tuple[c.Command, Cause]:
        buyer, _ = self.random.choice(residents)
        at = self._at(day)
        trade_id = f"MKT-{self.run_tag}-{self.requests + 1}"
        if self.random.random() < SHARING_SHARE:
            seller, _ = self.random.choice(residents)
            while seller == buyer and len(residents) > 1:
                seller, _ = self.random.choice(residents)
            kind, market = "resident", "sharing"
            category = self.random.choice(SHARING_CATEGORIES)
            amount_won = self.random.choice((3_000, 5_000, 10_000, 15_000, 20_000, 30_000))
        else:
            seller, kind = self.random.choice(self.world.merchants)
            market = "shopping"
            category = self.random.choice(SHOPPING_CATEGORIES[kind])
            amount_won = self.random.randrange(8_000, 120_000, 500)
        points_used_won = 0
        if self.random.random() < POINTS_PAYMENT_RATE:
            wallet = self.ledger.load(buyer)
            if isinstance(wallet, Resident):
                points_used_won = min(wallet.available_won, amount_won // 2)
        return (c.RecordTrade(trade_id, market, category, seller, kind, buyer, amount_won,
                              points_used_won), self._cause(PLATFORM, "platform", at))

    def _wash_trades(self, day: date, residents: list[tuple[UUID, UUID]], bar: Any) -> None:
        """Residents trying to mint points, refused by the guards: a sale within a household,
        one pair trading past the month's pair cap, sharing sales past the accrual cap."""
        by_household: dict[UUID, list[UUID]] = {}
        for resident_id, household_id in residents:
            by_household.setdefault(household_id, []).append(resident_id)
        shared = [members for members in by_household.values() if len(members) > 1]
        if len(by_household) < 2 or not shared:
            return
        attempts = max(1, len(self.world.households) // WASH_HOUSEHOLDS_PER_ATTEMPT)
        items: list[tuple[c.Command, Cause]] = []

        def sharing(buyer: UUID, seller: UUID, amount_won: int) -> None:
            items.append((c.RecordTrade(f"WASH-{self.run_tag}-{self.requests + 1}", "sharing",
                                        "lessons", seller, "resident", buyer, amount_won, 0),
                          self._cause(PLATFORM, "platform", self._at(day))))

        for _ in range(attempts):
            first, second = self.random.sample(self.random.choice(shared), 2)
            sharing(first, second, self.random.choice((500_000, 1_000_000)))
        buyer, buyer_household = self.random.choice(residents)
        seller = self.random.choice([r for r, h in residents if h != buyer_household])
        for _ in range(limits.guard_pair_trades_per_month_default + 2):
            sharing(buyer, seller, 1_000)
        for _ in range(attempts):
            buyer, buyer_household = self.random.choice(residents)
            seller = self.random.choice([r for r, h in residents if h != buyer_household])
            sharing(buyer, seller, WASH_SHARING_AMOUNT_WON)
        self._run(items, bar)

    def _group_buys(self, first: date, residents: list[tuple[UUID, UUID]], bar: Any) -> None:
        complex_of = dict(self.world.households)
        by_complex: dict[UUID, list[UUID]] = {}
        for resident_id, household_id in residents:
            by_complex.setdefault(complex_of[household_id], []).append(resident_id)
        seed_group_buys(self.ledger, self.random, lambda items: self._run(items, bar),
                        self._cause, self.run_tag,
                        first, self.world.complexes, self.world.merchants, by_complex,
                        OPERATOR)

    def _rent(self, first: date, residents: list[tuple[UUID, UUID]], bar: Any) -> None:
        period = f"{first.year:04d}-{first.month:02d}"
        issue_day = first + timedelta(days=19)
        issued_at = self._at(issue_day, 9, 10)
        due_at = datetime(issue_day.year, issue_day.month, issue_day.day, tzinfo=KST) + \
            timedelta(days=10)
        items: list[tuple[c.Command, Cause]] = []
        invoices: dict[UUID, tuple[str, int]] = {}
        for household_id, _ in self.world.households:
            invoice_id = f"RENT-{period}-{household_id.hex[:12]}"
            amount_won = self.random.randrange(180_000, 460_000, 1_000)
            invoices[household_id] = (invoice_id, amount_won)
            items.append((c.IssueRentInvoice(household_id, invoice_id, period, amount_won,
                                             due_at), self._cause(BILLING, "billing", issued_at)))
        self._run(items, bar)
        payments: list[tuple[c.Command, Cause]] = []
        for resident_id, household_id in residents:
            if self.random.random() >= RENT_BY_POINTS_RATE:
                continue
            wallet = self.ledger.load(resident_id)
            if not isinstance(wallet, Resident) or wallet.available_won < 1_000:
                continue
            invoice_id, invoice_won = invoices[household_id]
            amount_won = min(wallet.available_won, invoice_won // 3)
            payment_id = f"PAY-{self.run_tag}-{self.requests + 1}"
            paid_at = self._at(issue_day + timedelta(days=self.random.randrange(1, 5)))
            payments.append((c.PayRent(payment_id, household_id, invoice_id, period,
                                       amount_won, resident_id, 3 * 24 * 3600),
                             self._cause(resident_id, "resident", paid_at)))
        outcomes = self._run(payments, bar)
        answers: list[tuple[c.Command, Cause]] = []
        for (command, cause), outcome in zip(payments, outcomes, strict=True):
            if outcome is None:
                continue
            assert isinstance(command, c.PayRent)
            roll = self.random.random()
            answered_at = cause.occurred_at + timedelta(hours=self.random.randrange(1, 48))
            if roll < 0.85:
                answers.append((c.SettleRentPayment(command.payment_id),
                                self._cause(BILLING, "billing", answered_at)))
            elif roll < 0.95:
                answers.append((c.ReleaseRentPayment(command.payment_id),
                                self._cause(BILLING, "billing", answered_at)))
            else:
                expired_at = cause.occurred_at + timedelta(days=3, minutes=5)
                answers.append((c.ExpireRentPayment(command.payment_id, expired_at),
                                self._cause(OPERATOR, "operator", expired_at)))
        self._run(answers, bar)

    def _votes(self, first: date, residents: list[tuple[UUID, UUID]], bar: Any
               ) -> dict[UUID, tuple[str, str, int]]:
        """Each complex votes on one proposal this month; its approved one, by complex."""
        opened_day = first + timedelta(days=1)
        closes_at = datetime(opened_day.year, opened_day.month, opened_day.day, 18,
                             tzinfo=KST) + timedelta(days=VOTING_DAYS)
        opens: list[tuple[c.Command, Cause]] = []
        for complex_id in self.world.complexes:
            fund = self.ledger.load(complex_id)
            balance_won = fund.balance_won if isinstance(fund, Complex) else 0
            purpose = self.random.choice(("facility", "event", "upkeep"))
            amount_won = max(50_000, balance_won // 2 // 1_000 * 1_000)
            proposal_id = f"VOTE-{self.run_tag}-{self.requests + 1}"
            opens.append((c.OpenProposal(
                complex_id, proposal_id, purpose,
                self.random.choice(PROPOSAL_TITLES[purpose]), amount_won, closes_at),
                self._cause(uuid.uuid5(complex_id, "manager"), "manager",
                            self._at(opened_day, 9, 12))))
        opened = [(command, outcome) for (command, _), outcome in zip(
            opens, self._run(opens, bar), strict=True) if outcome is not None]
        voters: dict[UUID, UUID] = {}  # household -> one of its residents still living there
        for resident_id, household_id in residents:
            voters.setdefault(household_id, resident_id)
        ballots: list[tuple[c.Command, Cause]] = []
        closes: list[tuple[c.Command, Cause]] = []
        households: dict[UUID, list[UUID]] = {}
        for household_id, complex_id in self.world.households:
            households.setdefault(complex_id, []).append(household_id)
        for command, _ in opened:
            assert isinstance(command, c.OpenProposal)
            turnout = self.random.choice(TURNOUTS)
            yes_rate = self.random.choice(YES_RATES)
            complex_id = command.complex_id
            for household_id in households.get(complex_id, []):
                voter = voters.get(household_id)
                if voter is None or self.random.random() >= turnout:
                    continue
                resident_id = voter
                choice = "yes" if self.random.random() < yes_rate else "no"
                at = self._at(opened_day + timedelta(days=self.random.randrange(VOTING_DAYS)))
                if self.random.random() < COORDINATOR_BALLOT_RATE:
                    ballots.append((c.CastBallot(command.proposal_id, resident_id, choice,
                                                 "consent-form-paper"),
                                    self._cause(uuid.uuid5(complex_id, "coordinator"),
                                                "coordinator", at, on_behalf_of=resident_id)))
                else:
                    ballots.append((c.CastBallot(command.proposal_id, resident_id, choice),
                                    self._cause(resident_id, "resident", at)))
            swept_at = closes_at + timedelta(minutes=1)
            closes.append((c.CloseProposal(command.proposal_id, swept_at),
                           self._cause(OPERATOR, "operator", swept_at)))
        self._run(ballots, bar)
        approved: dict[UUID, tuple[str, str, int]] = {}
        for (command, _), outcome in zip(closes, self._run(closes, bar), strict=True):
            assert isinstance(command, c.CloseProposal)
            if outcome is not None and outcome["state"] == "approved":
                proposal = next(opened_command for opened_command, _ in opened
                                if isinstance(opened_command, c.OpenProposal)
                                and opened_command.proposal_id == command.proposal_id)
                assert isinstance(proposal, c.OpenProposal)
                approved[proposal.complex_id] = (proposal.proposal_id, proposal.purpose,
                                                 proposal.amount_won)
        return approved

    def _fund_spends(self, day: date, approved: dict[UUID, tuple[str, str, int]],
                     bar: Any) -> None:
        """What each vote approved (as far as the fund goes), and a small upkeep spend
        within the monthly allowance."""
        items: list[tuple[c.Command, Cause]] = []
        for complex_id in self.world.complexes:
            fund = self.ledger.load(complex_id)
            if not isinstance(fund, Complex):
                continue
            balance_won = fund.balance_won
            manager = uuid.uuid5(complex_id, "manager")
            if complex_id in approved:
                proposal_id, purpose, amount_won = approved[complex_id]
                amount_won = min(amount_won, balance_won)
                if amount_won > 0:
                    balance_won -= amount_won
                    items.append((c.SpendFund(
                        complex_id, f"SPEND-{self.run_tag}-{self.requests + 1}", purpose,
                        amount_won, proposal_id=proposal_id),
                        self._cause(manager, "manager", self._at(day, 10, 17))))
            small_won = self.random.randrange(20_000, 150_000, 1_000)
            if balance_won >= small_won:
                items.append((c.SpendFund(
                    complex_id, f"SPEND-{self.run_tag}-{self.requests + 1}", "upkeep",
                    small_won, f"cleaning-invoice-{day.isoformat()}"),
                    self._cause(manager, "manager", self._at(day, 10, 17))))
        self._run(items, bar)

    def _move_outs(self, day: date, residents: list[tuple[UUID, UUID]], bar: Any) -> None:
        items: list[tuple[c.Command, Cause]] = []
        for resident_id, _ in residents:
            if self.random.random() < MOVE_OUT_RATE:
                wallet = self.ledger.load(resident_id)
                if isinstance(wallet, Resident) and not wallet.holds:
                    items.append((c.MoveOut(resident_id),
                                  self._cause(resident_id, "resident", self._at(day))))
                    self.world.closed.add(resident_id)
        self._run(items, bar)


def _complex_id(code: str) -> UUID:
    from ledger.complex import complex_id_for  # noqa: PLC0415

    return complex_id_for(code)


def _shift_months(day: date, months: int) -> date:
    """The same day of the month `months` later (the month's last day where it is shorter)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    following = date(year + month // 12, month % 12 + 1, 1)
    return date(year, month, min(day.day, (following - timedelta(days=1)).day))


def _group(sorted_days: list[int]) -> Iterator[tuple[int, int]]:
    """(day, count) runs of a sorted list of day offsets."""
    index = 0
    while index < len(sorted_days):
        day = sorted_days[index]
        end = index
        while end < len(sorted_days) and sorted_days[end] == day:
            end += 1
        yield day, end - index
        index = end


def seed(ledger: Ledger, *, complexes: int = 2, households: int = 40, months: int = 1,
         seed_value: int = 7, progress: bool = True,
         start: date | None = None) -> SeedSummary:
    return Seeder(ledger, complexes=complexes, households=households, months=months,
                  seed=seed_value, progress=progress, start=start).run()


ProgressFactory = Callable[..., Any]
