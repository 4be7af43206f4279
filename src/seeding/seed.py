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

Sharing trades are between residents of one complex (the market is the complex's own).
Each month some residents also try wash trades, which the policy's guards refuse
(see ledger.guards): a sale within their own household, a pair trading past the
month's pair cap, a sharing sale whose accrual would pass the buyer's monthly cap.
The summary counts the refusals by code.

Time is simulated: every command carries the platform time it happened at
(`occurred_at`), in Korea Standard Time; the recorded time is the real clock. The
seeded months end today: by default the first starts N months before today (the
same day of the month), so the last one ends with yesterday and a new user's demo
shows recent activity. With `start` given, months run from it instead.

How it runs: the seeder writes its commands as import lines (seeding.importing) to a
temporary file, deciding what depends on earlier commands from its own model of the
dataset (seeding.model), then imports the file: in worker processes by complex, chunks
committed atomically, refused lines counted by code. Same seed value, sizes, start and
ledger contents: the same file, byte for byte, and so the same dataset with any number of
workers. Seeding again adds a new set of complexes after the existing ones (a new run
tag, new request ids): a seed is not meant to be run twice to the same effect, as its
lines are; see docs/import.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote
from uuid import NAMESPACE_URL, UUID, uuid5

import psycopg
from psycopg.sql import SQL, Identifier
from tqdm import tqdm

from ledger import commands as c
from ledger import limits
from ledger.application import Ledger
from ledger.complex import Complex, complex_id_for
from ledger.database import ConnectionSettings
from ledger.events import KST, Cause
from ledger.household import household_id_for
from ledger.proposal import decide
from seeding.group_buys import seed_group_buys
from seeding.importing import import_file
from seeding.lifecycle import release_ended_windows, seed_lifecycle
from seeding.model import Model

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
WASH_HOUSEHOLDS_PER_ATTEMPT = 50
"""One attempt of each kind of wash trade a month per this many households."""
WASH_SHARING_AMOUNT_WON = 1_100_000
"""A sharing sale whose 3 % accrual (33,000 won) passes the default monthly cap (30,000)."""
SELLER_PICKS_MAX = 8
"""Draws of a sharing seller (same complex, another household, a pair under its monthly
cap) before the trade goes to the shopping market instead."""
POPULATION_LINES_PER_HOUSEHOLD = 2.9
FIRST_MONTH_LINES_PER_HOUSEHOLD = 7.9
LATER_MONTH_LINES_PER_HOUSEHOLD = 8.9
"""Lines a seed writes per household, measured (2026-12-05, seeds of 5,000 and 25,000
households; the progress bar's total): registering households and residents (1.8 a
household) with the lifecycle's old lots; a first month of activity (4 trades, their
releases and refunds, a rent invoice, ballots, group-buy orders); a later month, with more
rent paid in points and the previous month's last releases. Within 1 % at those sizes."""


@dataclass
class SeedSummary:
    commands: int = 0
    rejected: int = 0
    events_before: int = 0
    events_after: int = 0
    position: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    """Accepted commands by name."""
    rejected_by_code: dict[str, int] = field(default_factory=dict)
    seconds_writing: float = 0.0
    seconds_importing: float = 0.0


class Seeder:
    def __init__(self, url: str, schema: str, *, complexes: int, households: int,
                 months: int, seed: int = 7, start: date | None = None,
                 progress: bool = True, workers: int = 1) -> None:
        assert complexes >= 1 and households >= complexes and months >= 0 and workers >= 1
        self.url = url
        self.schema = schema
        self.complex_count = complexes
        self.household_count = households
        self.months = months
        self.seed_value = seed
        self.random = random.Random(seed)
        self.start = start or _shift_months(datetime.now(KST).date(), -months)
        self.progress = progress
        self.workers = workers
        self.model = Model({(row["market"], row["seller_kind"]):
                            (row["personal_bps"], row["common_bps"]) for row in PILOT_RATES})
        self.summary = SeedSummary()
        self.requests = 0
        self.run_tag = ""
        self.lines_by_command: Counter[str] = Counter()
        self._out: IO[str] | None = None
        self._bar: Any = None

    # Plumbing ----------------------------------------------------------------------------

    def _cause(self, actor: UUID, role: str, at: datetime,
               on_behalf_of: UUID | None = None) -> Cause:
        self.requests += 1
        return Cause(actor, role, f"seed-{self.run_tag}-{self.requests}", at, on_behalf_of)

    def write(self, command: c.Command, cause: Cause, complex_number: int | None) -> None:
        """One import line: the command, its cause, and the complex it belongs to (none: a
        barrier, run alone between the complexes' lines)."""
        document: dict[str, Any] = {
            "request_id": cause.request_id, "command": command.name,
            "actor_id": str(cause.actor_id), "role": cause.actor_role,
            "occurred_at": cause.occurred_at.isoformat(), "body": _body(command)}
        if cause.on_behalf_of is not None:
            document["on_behalf_of"] = str(cause.on_behalf_of)
        if complex_number is not None:
            document["complex_id"] = str(self.model.complexes[complex_number])
        assert self._out is not None
        self._out.write(json.dumps(document, separators=(",", ":")) + "\n")
        self.lines_by_command[command.name] += 1
        self._bar.update(1)

    def _at(self, day: date, hour_low: int = 7, hour_high: int = 23) -> datetime:
        seconds = self.random.randrange(hour_low * 3600, hour_high * 3600)
        return datetime(day.year, day.month, day.day, tzinfo=KST) + timedelta(seconds=seconds)

    # The dataset -------------------------------------------------------------------------

    def run(self) -> SeedSummary:
        import time  # noqa: PLC0415

        ledger = Ledger.connect(self.url, self.schema)
        try:
            self.summary.events_before = ledger.position()
            events_table = ledger.events_table
            offset = _complexes_seeded(ledger)
        finally:
            ledger.close()
        self.run_tag = hashlib.sha256(
            f"{self.seed_value}:{self.complex_count}:{self.household_count}:{self.months}:"
            f"{self.start.isoformat()}:{offset}".encode()).hexdigest()[:8]
        folder = Path(tempfile.mkdtemp(prefix="ledger-seed-"))
        try:
            path = folder / "seed.jsonl"
            started = time.monotonic()
            with path.open("w", encoding="utf-8") as out, tqdm(
                    total=self._estimate(), desc="writing", unit="line",
                    disable=not self.progress) as bar:
                self._out, self._bar = out, bar
                self._population(offset)
                for month in range(self.months):
                    self._month(month)
                seed_lifecycle(self, self.start, self.months, OPERATOR)
                self._out = self._bar = None
            self.summary.seconds_writing = time.monotonic() - started
            started = time.monotonic()
            report = import_file(self.url, self.schema, path, workers=self.workers,
                                 rejects_path=folder / "rejects.jsonl",
                                 show_progress=self.progress)
            self.summary.seconds_importing = time.monotonic() - started
            self._count(report.lines, folder / "rejects.jsonl")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        # Counted, not taken from the log's head: a save that lost a race between two
        # workers (the events table's key) burns the positions it took.
        with psycopg.connect(ConnectionSettings.from_url(self.url).conninfo()) as conn:
            row = conn.execute(SQL("SELECT count(*), max(notification_id) FROM {}.{} "
                                   "WHERE notification_id > %s").format(
                Identifier(self.schema), Identifier(events_table)),
                (self.summary.events_before,)).fetchone()
        assert row is not None
        self.summary.events_after = self.summary.events_before + int(row[0])
        self.summary.position = int(row[1] or self.summary.events_before)
        return self.summary

    def _count(self, lines: int, rejects: Path) -> None:
        self.summary.commands = lines
        rejected_by_name: Counter[str] = Counter()
        with rejects.open(encoding="utf-8") as stream:
            for text in stream:
                entry = json.loads(text)
                code = str(entry["code"])
                self.summary.rejected_by_code[code] = (
                    self.summary.rejected_by_code.get(code, 0) + 1)
                rejected_by_name[json.loads(entry["text"])["command"]] += 1
                self.summary.rejected += 1
        self.summary.counts = {name: count - rejected_by_name[name]
                               for name, count in self.lines_by_command.items()
                               if count > rejected_by_name[name]}

    def _estimate(self) -> int:
        per_household = POPULATION_LINES_PER_HOUSEHOLD
        if self.months:
            per_household += (FIRST_MONTH_LINES_PER_HOUSEHOLD
                              + LATER_MONTH_LINES_PER_HOUSEHOLD * (self.months - 1))
        return int(1 + self.complex_count + 50 + self.household_count * per_household)

    def _population(self, offset: int) -> None:
        model = self.model
        day = self.start - timedelta(days=1)
        at = datetime(day.year, day.month, day.day, 9, tzinfo=KST)
        self.write(c.SetAccrualPolicy.of(PILOT_RATES), self._cause(OPERATOR, "operator", at),
                   None)
        for number in range(offset + 1, offset + self.complex_count + 1):
            code = f"HS-{number:02d}"
            complex_number = model.add_complex(complex_id_for(code))
            self.write(c.RegisterComplex(code, f"Hwaseong rental complex {number:02d}",
                                         "Hwaseong"),
                       self._cause(OPERATOR, "operator", at), complex_number)
        for kind, count in (("small_firm", 20), ("social_enterprise", 10), ("local_food", 15),
                            ("public_body", 5)):
            for number in range(count):
                cause = self._cause(OPERATOR, "operator", at)
                model.merchants.append((uuid5(NAMESPACE_URL, f"ledger:merchant:{OPERATOR}:"
                                                             f"{cause.request_id}"), kind))
                self.write(c.RegisterMerchant(kind, f"{kind.replace('_', ' ')} {number + 1}"),
                           cause, None)
        complexes = len(model.complexes)
        for index in range(self.household_count):
            complex_number = index % complexes
            building = 101 + (index // complexes) // 400
            unit = f"{building}-{(index // complexes) % 400 + 101:04d}"
            model.add_household(household_id_for(model.complexes[complex_number], unit),
                                complex_number)
            self.write(c.RegisterHousehold(model.complexes[complex_number], unit),
                       self._cause(OPERATOR, "operator", at), complex_number)
        for household, household_id in enumerate(model.households):
            complex_number = model.household_complex[household]
            complex_id = model.complexes[complex_number]
            for _ in range(self.random.choice((1, 1, 2, 2, 3))):
                if self.random.random() < 0.3:  # enrolled by the complex's coordinator
                    cause = self._cause(uuid5(complex_id, "coordinator"), "coordinator", at)
                    resident_id = uuid5(NAMESPACE_URL, f"ledger:resident:{cause.actor_id}:"
                                                       f"{cause.request_id}")
                    command = c.EnrolResident(household_id, "consent-form-paper")
                else:
                    resident_id = uuid.UUID(int=self.random.getrandbits(128), version=4)
                    cause = self._cause(resident_id, "resident", at)
                    command = c.EnrolResident(household_id, "consent-in-app",
                                              resident_id=resident_id)
                model.add_resident(resident_id, household)
                self.write(command, cause, complex_number)

    def _month(self, month: int) -> None:
        model = self.model
        first = _shift_months(self.start, month)
        days = (_shift_months(self.start, month + 1) - first).days
        residents = model.open_residents()
        members: list[list[int]] = [[] for _ in model.complexes]
        for resident in residents:
            members[model.complex_of(resident)].append(resident)
        pairs: Counter[tuple[int, int]] = Counter()  # sharing trades of a pair this month
        trades_total = int(len(model.households) * TRADES_PER_HOUSEHOLD_MONTH)
        trade_days = sorted(self.random.randrange(days) for _ in range(trades_total))
        for day_offset, day_trades in _group(trade_days):
            day = first + timedelta(days=day_offset)
            recorded = [self._trade(day, residents, members, pairs)
                        for _ in range(day_trades)]
            for trade in recorded:
                if self.random.random() < REFUND_RATE:
                    self._refund(trade)
        self._wash_trades(first + timedelta(days=days // 2), members, pairs)
        seed_group_buys(self, first, members, OPERATOR)
        self._rent(first, residents)
        approved = self._votes(first, residents)
        release_ended_windows(self, datetime.combine(first + timedelta(days=days - 2),
                                                     datetime.min.time(), KST), OPERATOR)
        self._fund_spends(first + timedelta(days=days - 2), approved)
        self._move_outs(first + timedelta(days=days - 1), residents)

    def _seller(self, buyer: int, members: list[int], pairs: Counter[tuple[int, int]]
                ) -> int | None:
        """A sharing seller for the buyer: a neighbour of the same complex, from another
        household, with whom the buyer has not reached the month's pair cap."""
        model = self.model
        if len(members) < 2:
            return None
        for _ in range(SELLER_PICKS_MAX):
            seller = self.random.choice(members)
            if (model.resident_household[seller] != model.resident_household[buyer]
                    and pairs[_pair(buyer, seller)]
                    < limits.guard_pair_trades_per_month_default):
                return seller
        return None

    def _trade(self, day: date, residents: list[int], members: list[list[int]],
               pairs: Counter[tuple[int, int]]) -> tuple[str, datetime, int, int | None,
                                                         int, int, int]:
        """One trade, written and applied to the model: (trade id, when, buyer, seller
        resident or None, points used, personal and common shares)."""
        model = self.model
        buyer = self.random.choice(residents)
        at = self._at(day)
        trade_id = f"MKT-{self.run_tag}-{self.requests + 1}"
        seller: int | None = None
        if self.random.random() < SHARING_SHARE:
            seller = self._seller(buyer, members[model.complex_of(buyer)], pairs)
        if seller is not None:
            seller_id, kind, market = model.residents[seller], "resident", "sharing"
            category = self.random.choice(SHARING_CATEGORIES)
            amount_won = self.random.choice((3_000, 5_000, 10_000, 15_000, 20_000, 30_000))
            pairs[_pair(buyer, seller)] += 1
        else:
            seller_id, kind = self.random.choice(model.merchants)
            market = "shopping"
            category = self.random.choice(SHOPPING_CATEGORIES[kind])
            amount_won = self.random.randrange(8_000, 120_000, 500)
        points_used_won = 0
        if self.random.random() < POINTS_PAYMENT_RATE:
            points_used_won = min(model.available_won[buyer], amount_won // 2)
        self.write(c.RecordTrade(trade_id, market, category, seller_id, kind,
                                 model.residents[buyer], amount_won, points_used_won),
                   self._cause(PLATFORM, "platform", at), model.complex_of(buyer))
        personal_won, common_won = model.trade(trade_id, market, kind, buyer, seller,
                                               amount_won, points_used_won, at)
        return trade_id, at, buyer, seller, points_used_won, personal_won, common_won

    def _refund(self, trade: tuple[str, datetime, int, int | None, int, int, int]) -> None:
        trade_id, at, buyer, seller, points_used_won, personal_won, common_won = trade
        self.write(c.RefundTrade(trade_id),
                   self._cause(PLATFORM, "platform", at + timedelta(days=1)),
                   self.model.complex_of(buyer))
        self.model.refund(trade_id, buyer, seller, points_used_won, personal_won, common_won)

    def _wash_trades(self, day: date, members: list[list[int]],
                     pairs: Counter[tuple[int, int]]) -> None:
        """Residents trying to mint points, refused by the guards: a sale within a household,
        one pair trading past the month's pair cap, sharing sales past the accrual cap."""
        model = self.model
        by_household: dict[int, list[int]] = {}
        for complex_members in members:
            for resident in complex_members:
                by_household.setdefault(model.resident_household[resident], []).append(resident)
        shared = [group for group in by_household.values() if len(group) > 1]
        neighbours = [group for group in members
                      if len({model.resident_household[r] for r in group}) > 1]
        if not shared or not neighbours:
            return
        attempts = max(1, len(model.households) // WASH_HOUSEHOLDS_PER_ATTEMPT)

        def sharing(buyer: int, seller: int, amount_won: int, *, accepted: bool) -> None:
            trade_id = f"WASH-{self.run_tag}-{self.requests + 1}"
            at = self._at(day)
            self.write(c.RecordTrade(trade_id, "sharing", "lessons", model.residents[seller],
                                     "resident", model.residents[buyer], amount_won, 0),
                       self._cause(PLATFORM, "platform", at), model.complex_of(buyer))
            if accepted:
                model.trade(trade_id, "sharing", "resident", buyer, seller, amount_won, 0, at)
                pairs[_pair(buyer, seller)] += 1

        def pair_in(group: list[int]) -> tuple[int, int]:
            """A buyer and a seller of one complex, from two households, the pair under
            its cap."""
            while True:
                buyer, seller = self.random.sample(group, 2)
                if (model.resident_household[buyer] != model.resident_household[seller]
                        and pairs[_pair(buyer, seller)]
                        < limits.guard_pair_trades_per_month_default):
                    return buyer, seller

        for _ in range(attempts):
            first, second = self.random.sample(self.random.choice(shared), 2)
            sharing(first, second, self.random.choice((500_000, 1_000_000)), accepted=False)
        buyer, seller = pair_in(self.random.choice(neighbours))
        room = limits.guard_pair_trades_per_month_default - pairs[_pair(buyer, seller)]
        for number in range(room + 2):
            sharing(buyer, seller, 1_000, accepted=number < room)
        for _ in range(attempts):
            buyer, seller = pair_in(self.random.choice(neighbours))
            sharing(buyer, seller, WASH_SHARING_AMOUNT_WON, accepted=False)

    def _rent(self, first: date, residents: list[int]) -> None:
        model = self.model
        period = f"{first.year:04d}-{first.month:02d}"
        issue_day = first + timedelta(days=19)
        issued_at = self._at(issue_day, 9, 10)
        due_at = datetime(issue_day.year, issue_day.month, issue_day.day, tzinfo=KST) + \
            timedelta(days=10)
        invoices: list[tuple[str, int]] = []
        for household, household_id in enumerate(model.households):
            invoice_id = f"RENT-{period}-{household_id.hex[:12]}"
            amount_won = self.random.randrange(180_000, 460_000, 1_000)
            invoices.append((invoice_id, amount_won))
            self.write(c.IssueRentInvoice(household_id, invoice_id, period, amount_won, due_at),
                       self._cause(BILLING, "billing", issued_at),
                       model.household_complex[household])
        payments: list[tuple[str, int, int, datetime]] = []
        for resident in residents:
            if self.random.random() >= RENT_BY_POINTS_RATE:
                continue
            if model.available_won[resident] < 1_000:
                continue
            household = model.resident_household[resident]
            invoice_id, invoice_won = invoices[household]
            amount_won = min(model.available_won[resident], invoice_won // 3)
            payment_id = f"PAY-{self.run_tag}-{self.requests + 1}"
            paid_at = self._at(issue_day + timedelta(days=self.random.randrange(1, 5)))
            self.write(c.PayRent(payment_id, model.households[household], invoice_id, period,
                                 amount_won, model.residents[resident], 3 * 24 * 3600),
                       self._cause(model.residents[resident], "resident", paid_at),
                       model.complex_of(resident))
            model.hold(resident, amount_won)
            payments.append((payment_id, resident, amount_won, paid_at))
        for payment_id, resident, amount_won, paid_at in payments:
            roll = self.random.random()
            answered_at = paid_at + timedelta(hours=self.random.randrange(1, 48))
            if roll < 0.85:
                command: c.Command = c.SettleRentPayment(payment_id)
                cause = self._cause(BILLING, "billing", answered_at)
            elif roll < 0.95:
                command = c.ReleaseRentPayment(payment_id)
                cause = self._cause(BILLING, "billing", answered_at)
            else:
                expired_at = paid_at + timedelta(days=3, minutes=5)
                command = c.ExpireRentPayment(payment_id, expired_at)
                cause = self._cause(OPERATOR, "operator", expired_at)
            self.write(command, cause, model.complex_of(resident))
            model.end_hold(resident, amount_won, returned=roll >= 0.85)

    def _votes(self, first: date, residents: list[int]) -> dict[int, tuple[str, str, int]]:
        """Each complex votes on one proposal this month; its approved one, by complex."""
        model = self.model
        opened_day = first + timedelta(days=1)
        closes_at = datetime(opened_day.year, opened_day.month, opened_day.day, 18,
                             tzinfo=KST) + timedelta(days=VOTING_DAYS)
        opened: list[tuple[int, str, str, int, datetime]] = []
        for complex_number, complex_id in enumerate(model.complexes):
            purpose = self.random.choice(("facility", "event", "upkeep"))
            amount_won = max(50_000, model.fund_won[complex_number] // 2 // 1_000 * 1_000)
            proposal_id = f"VOTE-{self.run_tag}-{self.requests + 1}"
            opened_at = self._at(opened_day, 9, 12)
            self.write(c.OpenProposal(complex_id, proposal_id, purpose,
                                      self.random.choice(PROPOSAL_TITLES[purpose]),
                                      amount_won, closes_at),
                       self._cause(uuid5(complex_id, "manager"), "manager", opened_at),
                       complex_number)
            opened.append((complex_number, proposal_id, purpose, amount_won, opened_at))
        voters: dict[int, int] = {}  # household -> one of its residents still living there
        for resident in residents:
            voters.setdefault(model.resident_household[resident], resident)
        households: list[list[int]] = [[] for _ in model.complexes]
        for household in range(len(model.households)):
            households[model.household_complex[household]].append(household)
        approved: dict[int, tuple[str, str, int]] = {}
        closes: list[tuple[int, str]] = []
        for complex_number, proposal_id, purpose, amount_won, opened_at in opened:
            complex_id = model.complexes[complex_number]
            turnout = self.random.choice(TURNOUTS)
            yes_rate = self.random.choice(YES_RATES)
            ballots = yes = 0
            for household in households[complex_number]:
                voter = voters.get(household)
                if voter is None or self.random.random() >= turnout:
                    continue
                resident_id = model.residents[voter]
                choice = "yes" if self.random.random() < yes_rate else "no"
                at = max(self._at(opened_day + timedelta(
                    days=self.random.randrange(VOTING_DAYS))), opened_at + timedelta(minutes=1))
                if self.random.random() < COORDINATOR_BALLOT_RATE:
                    self.write(c.CastBallot(proposal_id, resident_id, choice,
                                            "consent-form-paper"),
                               self._cause(uuid5(complex_id, "coordinator"), "coordinator",
                                           at, on_behalf_of=resident_id), complex_number)
                else:
                    self.write(c.CastBallot(proposal_id, resident_id, choice),
                               self._cause(resident_id, "resident", at), complex_number)
                ballots += 1
                yes += choice == "yes"
            closes.append((complex_number, proposal_id))
            if decide(model.complex_households[complex_number], ballots, yes,
                      limits.quorum_bps_default, limits.approval_bps_default) == "approved":
                approved[complex_number] = (proposal_id, purpose, amount_won)
        swept_at = closes_at + timedelta(minutes=1)
        for complex_number, proposal_id in closes:
            self.write(c.CloseProposal(proposal_id, swept_at),
                       self._cause(OPERATOR, "operator", swept_at), complex_number)
        return approved

    def _fund_spends(self, day: date, approved: dict[int, tuple[str, str, int]]) -> None:
        """What each vote approved (as far as the fund goes), and a small upkeep spend
        within the monthly allowance."""
        model = self.model
        for complex_number, complex_id in enumerate(model.complexes):
            manager = uuid5(complex_id, "manager")
            if complex_number in approved:
                proposal_id, purpose, amount_won = approved[complex_number]
                amount_won = min(amount_won, model.fund_won[complex_number])
                if amount_won > 0:
                    model.fund_won[complex_number] -= amount_won
                    self.write(c.SpendFund(complex_id, f"SPEND-{self.run_tag}-"
                                                       f"{self.requests + 1}",
                                           purpose, amount_won, proposal_id=proposal_id),
                               self._cause(manager, "manager", self._at(day, 10, 17)),
                               complex_number)
            small_won = self.random.randrange(20_000, 150_000, 1_000)
            if model.fund_won[complex_number] >= small_won:
                model.fund_won[complex_number] -= small_won
                self.write(c.SpendFund(complex_id, f"SPEND-{self.run_tag}-{self.requests + 1}",
                                       "upkeep", small_won, f"cleaning-invoice-{day.isoformat()}"),
                           self._cause(manager, "manager", self._at(day, 10, 17)),
                           complex_number)

    def _move_outs(self, day: date, residents: list[int]) -> None:
        model = self.model
        for resident in residents:
            if self.random.random() < MOVE_OUT_RATE and not model.holds[resident]:
                resident_id = model.residents[resident]
                self.write(c.MoveOut(resident_id),
                           self._cause(resident_id, "resident", self._at(day)),
                           model.complex_of(resident))
                model.closed[resident] = 1


_FIELDS: dict[str, tuple[str, ...]] = {}


def _body(command: c.Command) -> dict[str, Any]:
    """A command's fields as an import line's body (seeding.importing reads it back)."""
    if isinstance(command, c.SetAccrualPolicy):
        body: dict[str, Any] = {"rates": command.rate_rows()}
        if command.guards is not None:
            body["guards"] = command.guard_settings()
        return body
    names = _FIELDS.get(command.name)
    if names is None:
        import dataclasses  # noqa: PLC0415

        names = _FIELDS[command.name] = tuple(f.name for f in dataclasses.fields(command))
    body = {}
    for name in names:
        value = getattr(command, name)
        if value is None:
            continue
        if isinstance(value, UUID):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, tuple):
            value = [str(item) for item in value]
        body[name] = value
    return body


def _pair(buyer: int, seller: int) -> tuple[int, int]:
    return (buyer, seller) if buyer < seller else (seller, buyer)


def _complexes_seeded(ledger: Ledger) -> int:
    """How many seeded complexes (HS-01, HS-02, ...) the ledger holds already."""
    offset = 0
    while ledger.snapshot(Complex, complex_id_for(f"HS-{offset + 1:02d}")) is not None:
        offset += 1
    return offset


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


def ledger_url(ledger: Ledger) -> str:
    """The database URL of a connected ledger (its worker processes connect anew)."""
    env = ledger.env
    user = quote(env["POSTGRES_USER"], safe="")
    password = quote(env.get("POSTGRES_PASSWORD", ""), safe="")
    credentials = f"{user}:{password}@" if password else f"{user}@"
    host = env["POSTGRES_HOST"]
    if host.startswith("/"):  # a socket directory
        return (f"postgresql://{credentials}/{quote(env['POSTGRES_DBNAME'], safe='')}"
                f"?host={quote(host, safe='')}&port={env['POSTGRES_PORT']}")
    return (f"postgresql://{credentials}{host}:{env['POSTGRES_PORT']}/"
            f"{quote(env['POSTGRES_DBNAME'], safe='')}")


def default_workers() -> int:
    """One worker per core, at most `limits.import_workers_default_max`."""
    return max(1, min(limits.import_workers_default_max, os.cpu_count() or 1))


def seed(ledger: Ledger, *, complexes: int = 2, households: int = 40, months: int = 1,
         seed_value: int = 7, progress: bool = True, start: date | None = None,
         workers: int | None = None) -> SeedSummary:
    """Seed the ledger's database and schema (through `ledger import`'s path; workers:
    default one per core)."""
    return Seeder(ledger_url(ledger), ledger.schema, complexes=complexes,
                  households=households, months=months, seed=seed_value, start=start,
                  progress=progress, workers=workers or default_workers()).run()
