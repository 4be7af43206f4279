"""`ledger import FILE`: commands from a JSON Lines file, through the ledger's own commands.

One line, one command, with its request id:

    {"request_id": "T-2026-000001", "command": "record_trade",
     "actor_id": "…", "role": "platform", "occurred_at": "2026-03-02T10:15:00+09:00",
     "body": {"trade_id": "T-1", "market": "sharing", "category": "childcare", ...}}

`actor_id`, `role`, `on_behalf_of` and `occurred_at` are optional (the importing operator,
`operator`, none, now). `body` holds the command's fields as the API names them in its
commands (see `ledger.commands`); ids are UUID strings, times ISO 8601 with an offset.

How it runs:
- Each line belongs to a complex: the one it names, or the one of the household, resident,
  trade or rent payment it names (from earlier lines of the file, else from the ledger).
  Lines of one complex run in file order, in one worker process; complexes are spread over
  `workers` processes. Lines that belong to no complex (the accrual policy, merchants) are
  barriers: what comes before them runs first, then they run, in file order.
- Idempotent: every line carries its request id, so running a file twice changes nothing.
- Resumable: each worker runs its lines in chunks, and each chunk's accepted commands, its
  refused lines (`ledger_import_rejects`) and the last line done (`ledger_imports`, per
  file digest) are committed in one transaction (`Ledger.execute_atomically`): after a
  crash, a chunk is either wholly done or not begun, so a run again skips what is done and
  judges every other line exactly as an uninterrupted run would.
- Nothing refused is dropped: every line that is not accepted (malformed, or refused by the
  ledger) is written to the rejects file with its line number, code and reason.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import multiprocessing
import time
import types
import typing
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import psycopg
from psycopg.sql import SQL, Identifier

from ledger import commands as c
from ledger import limits
from ledger.application import Ledger, Outcome, now
from ledger.complex import complex_id_for
from ledger.database import ConnectionSettings
from ledger.errors import DatabaseUnavailable, DomainError
from ledger.events import Cause
from ledger.groupbuy import GroupBuyOrderLocator, order_locator_id, order_trade_id
from ledger.household import Household, RentPaymentLocator, rent_payment_locator_id
from ledger.persistence import APP_ROLE, Statement
from ledger.proposal import Proposal, proposal_aggregate_id
from ledger.resident import Resident
from ledger.trade import Trade, trade_aggregate_id

IMPORTER_ID = uuid5(NAMESPACE_URL, "ledger:import")
"""The actor recorded for lines that name none: the operator running the import."""
ROLES = ("resident", "coordinator", "manager", "merchant", "auditor", "billing", "platform",
         "operator")
COMMANDS: dict[str, type[c.Command]] = {
    cls.name: cls for cls in (
        c.RegisterComplex, c.RegisterHousehold, c.EnrolResident, c.MoveOut, c.RegisterMerchant,
        c.PayOutMerchant, c.SetAccrualPolicy, c.RecordTrade, c.RefundTrade,
        c.IssueRentInvoice, c.PayRent, c.SettleRentPayment, c.ReleaseRentPayment,
        c.ExpireRentPayment, c.SpendFund, c.SetFundAllowance, c.OpenProposal, c.CastBallot,
        c.CloseProposal, c.OpenGroupBuy, c.PlaceGroupBuyOrder, c.CancelGroupBuyOrder,
        c.CloseGroupBuy, c.ReleasePendingPoints, c.ExpirePoints)}
GLOBAL = -1
"""The partition of lines that belong to no complex: run alone, as barriers."""
INVALID_LINE = "invalid_line"
TABLE = "ledger_imports"
REJECTS_TABLE = "ledger_import_rejects"


class LineError(ValueError):
    """A line that cannot become a command (its reason is the message)."""


@dataclass(frozen=True)
class Line:
    number: int
    command: c.Command
    cause: Cause
    complex_id: UUID | None = None
    """The complex the file says the line belongs to (`complex_id` beside `body`), if any."""


def parse(number: int, text: str, default_actor: UUID, at: datetime) -> Line:
    """One line of the file as a command and its cause; LineError says what is wrong."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise LineError(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise LineError("not a JSON object")
    request_id = document.get("request_id")
    if (not isinstance(request_id, str) or not request_id.strip()
            or len(request_id) > limits.identifier_length_max):
        raise LineError(f"request_id: 1 to {limits.identifier_length_max} characters")
    name = document.get("command")
    cls = COMMANDS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise LineError(f"command: one of {', '.join(sorted(COMMANDS))}")
    body = document.get("body")
    if not isinstance(body, dict):
        raise LineError("body: a JSON object with the command's fields")
    role = document.get("role", "operator")
    if role not in ROLES:
        raise LineError(f"role: one of {', '.join(ROLES)}")
    cause = Cause(_uuid("actor_id", document.get("actor_id", str(default_actor))), role,
                  request_id, _time("occurred_at", document["occurred_at"])
                  if "occurred_at" in document else at,
                  _uuid("on_behalf_of", document["on_behalf_of"])
                  if document.get("on_behalf_of") is not None else None)
    hint = document.get("complex_id")
    return Line(number, _command(cls, body), cause,
                None if hint is None else _uuid("complex_id", hint))


def _command(cls: type[c.Command], body: dict[str, Any]) -> c.Command:
    if cls is c.SetAccrualPolicy:
        rates, guards = body.get("rates"), body.get("guards")
        if not set(body) <= {"rates", "guards"} or not isinstance(rates, list) or not all(
                isinstance(row, dict) for row in rates) or not isinstance(guards, dict | None):
            raise LineError("body: {\"rates\": [ {market, seller_kind, category, "
                            "personal_bps, common_bps}, ... ], \"guards\"?: {...}}")
        return c.SetAccrualPolicy.of(rates, guards=guards)
    hints, fields = _shape(cls)
    unknown = set(body) - set(fields)
    if unknown:
        raise LineError(f"body: unknown fields {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, spec in fields.items():
        if name not in body:
            if (spec.default is dataclasses.MISSING
                    and spec.default_factory is dataclasses.MISSING):
                raise LineError(f"body: {name} is missing")
            continue
        values[name] = _value(name, hints[name], body[name])
    return cls(**values)


_SHAPES: dict[str, tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]] = {}


def _shape(cls: type[c.Command]) -> tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]:
    """A command's field types and fields (worked out once: `get_type_hints` is slow)."""
    shape = _SHAPES.get(cls.name)
    if shape is None:
        shape = _SHAPES[cls.name] = (typing.get_type_hints(cls),
                                     {f.name: f for f in dataclasses.fields(cls)})
    return shape


def _value(name: str, hint: Any, value: Any) -> Any:
    options = typing.get_args(hint) if typing.get_origin(hint) in (
        typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise LineError(f"body: {name} may not be null")
    if UUID in options:
        return _uuid(name, value)
    if tuple[UUID, ...] in options:
        if not isinstance(value, list) or not value:
            raise LineError(f"body: {name} must be a list of UUIDs")
        return tuple(_uuid(name, item) for item in value)
    if datetime in options:
        return _time(name, value)
    if int in options:
        if type(value) is not int:
            raise LineError(f"body: {name} must be a whole number")
        return value
    if str in options:
        if not isinstance(value, str):
            raise LineError(f"body: {name} must be a string")
        return value
    raise LineError(f"body: {name} has a type the importer cannot read")  # pragma: no cover


def _uuid(name: str, value: Any) -> UUID:
    try:
        return UUID(value)
    except (TypeError, ValueError, AttributeError):
        raise LineError(f"{name}: a UUID") from None


def _time(name: str, value: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise LineError(f"{name}: an ISO 8601 time with an offset") from None
    if moment.tzinfo is None:
        raise LineError(f"{name}: an ISO 8601 time with an offset")
    return moment


# Partitions ------------------------------------------------------------------------------

@dataclass
class Owners:
    """Which complex each id belongs to, learnt from the file and, failing that, the ledger."""

    ledger: Ledger
    complexes: dict[UUID, UUID] = field(default_factory=dict)
    """household, resident, trade-aggregate or payment-locator id -> complex id"""

    def learn(self, command: c.Command, cause: Cause, complex_id: UUID | None) -> None:
        if complex_id is None:
            return
        if isinstance(command, c.RegisterHousehold):
            from ledger.household import household_id_for  # noqa: PLC0415

            self.complexes[household_id_for(command.complex_id, command.unit)] = complex_id
        elif isinstance(command, c.EnrolResident):
            resident_id = command.resident_id or uuid5(
                NAMESPACE_URL, f"ledger:resident:{cause.actor_id}:{cause.request_id}")
            self.complexes[resident_id] = complex_id
        elif isinstance(command, c.RecordTrade):
            self.complexes[trade_aggregate_id(command.trade_id)] = complex_id
        elif isinstance(command, c.PayRent):
            self.complexes[rent_payment_locator_id(command.payment_id)] = complex_id
        elif isinstance(command, c.OpenProposal):
            self.complexes[proposal_aggregate_id(command.proposal_id)] = complex_id
        elif isinstance(command, c.PlaceGroupBuyOrder):
            self.complexes[order_locator_id(command.order_id)] = complex_id
            # The trade the order becomes when its group buy completes.
            self.complexes[trade_aggregate_id(order_trade_id(command.order_id))] = complex_id

    def owner_ids(self, command: c.Command) -> UUID | None:
        """The id whose complex the line belongs to (None: the line names a complex or none)."""
        match command:
            case c.EnrolResident() | c.IssueRentInvoice() | c.PayRent():
                return command.household_id
            case c.MoveOut() | c.ExpirePoints() | c.PlaceGroupBuyOrder():
                return command.resident_id
            case c.RecordTrade():
                return command.buyer_id
            case c.RefundTrade() | c.ReleasePendingPoints():
                return trade_aggregate_id(command.trade_id)
            case c.CancelGroupBuyOrder():
                return order_locator_id(command.order_id)
            case c.SettleRentPayment() | c.ReleaseRentPayment() | c.ExpireRentPayment():
                return rent_payment_locator_id(command.payment_id)
            case c.CastBallot() | c.CloseProposal():
                return proposal_aggregate_id(command.proposal_id)
        return None

    def complex_of(self, command: c.Command) -> UUID | None:
        match command:
            case c.RegisterComplex():
                return complex_id_for(command.code)
            case (c.RegisterHousehold() | c.SpendFund() | c.SetFundAllowance()
                  | c.OpenProposal()):
                return command.complex_id
        owner = self.owner_ids(command)
        return None if owner is None else self.complexes.get(owner)

    def look_up(self, ids: Sequence[UUID]) -> None:
        """Learn from the ledger the complexes of ids the file did not define."""
        missing = list({aggregate_id for aggregate_id in ids
                        if aggregate_id not in self.complexes})
        orders: dict[UUID, UUID] = {}  # order locator -> its resident
        for start in range(0, len(missing), limits.import_lookup_ids_max):
            found = self.ledger.load_many(missing[start:start + limits.import_lookup_ids_max])
            for aggregate_id, aggregate in found.items():
                if isinstance(aggregate, Household | Resident | RentPaymentLocator | Proposal):
                    self.complexes[aggregate_id] = aggregate.home_complex_id
                elif isinstance(aggregate, Trade):
                    self.complexes[aggregate_id] = aggregate.buyer_complex_id
                elif isinstance(aggregate, GroupBuyOrderLocator):
                    orders[aggregate_id] = aggregate.resident_id
        if orders:  # an order's complex is its resident's
            self.look_up(list(orders.values()))
            for locator_id, resident_id in orders.items():
                if resident_id in self.complexes:
                    self.complexes[locator_id] = self.complexes[resident_id]


@dataclass
class Partitions:
    """Complexes dealt to the workers in turn, in the order the file first names them: the
    same file and number of workers give the same partitions (a resumed run relies on it),
    and complexes of like size load the workers evenly (a hash of the id left one worker
    with six of eight complexes)."""

    workers: int
    of: dict[UUID, int] = field(default_factory=dict)

    def __call__(self, complex_id: UUID) -> int:
        part = self.of.get(complex_id)
        if part is None:
            part = self.of[complex_id] = len(self.of) % self.workers
        return part


# Running ---------------------------------------------------------------------------------

@dataclass
class Report:
    lines: int = 0
    accepted: int = 0
    replayed: int = 0
    skipped: int = 0
    """Lines a previous run of the same file finished."""
    rejected: int = 0
    rejects_path: Path | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        text = (f"lines: {self.lines:,}; accepted {self.accepted:,}, already accepted "
                f"{self.replayed:,}, done by an earlier run {self.skipped:,}, refused "
                f"{self.rejected:,}")
        if self.rejected and self.rejects_path is not None:
            text += f" (see {self.rejects_path})"
        return text + f"; {self.seconds:.1f} s"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _setup(conninfo: str, schema: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SQL(
            "CREATE TABLE IF NOT EXISTS {schema}.{table} (file_sha256 text NOT NULL, "
            "part int NOT NULL, line_done bigint NOT NULL, "
            "PRIMARY KEY (file_sha256, part))").format(
            schema=Identifier(schema), table=Identifier(TABLE)))
        conn.execute(SQL(
            "CREATE TABLE IF NOT EXISTS {schema}.{table} (file_sha256 text NOT NULL, "
            "line bigint NOT NULL, entry text NOT NULL, "
            "PRIMARY KEY (file_sha256, line))").format(
            schema=Identifier(schema), table=Identifier(REJECTS_TABLE)))
        # Written in the ledger's own save (as its role), with the chunk's effects.
        for table in (TABLE, REJECTS_TABLE):
            conn.execute(SQL("GRANT SELECT, INSERT, UPDATE ON {schema}.{table} TO {role}").format(
                schema=Identifier(schema), table=Identifier(table), role=Identifier(APP_ROLE)))


def _done(conninfo: str, schema: str, digest: str) -> dict[int, int]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(SQL("SELECT part, line_done FROM {schema}.{table} "
                                "WHERE file_sha256 = %s").format(
            schema=Identifier(schema), table=Identifier(TABLE)), (digest,)).fetchall()
    return {int(part): int(line) for part, line in rows}


def _chunk_done(schema: str, digest: str, part: int, line: int,
                rejected: list[tuple[int, str]]) -> list[Statement]:
    """The statements that record a chunk as done, in the transaction of its effects: its
    refused lines (number, rejects-file entry) and its last line."""
    statements: list[Statement] = []
    if rejected:
        statements.append((SQL(
            "INSERT INTO {schema}.{table} (file_sha256, line, entry) "
            "SELECT %s, * FROM unnest(%s::bigint[], %s::text[]) "
            "ON CONFLICT (file_sha256, line) DO NOTHING").format(
            schema=Identifier(schema), table=Identifier(REJECTS_TABLE)),
            (digest, [number for number, _ in rejected], [entry for _, entry in rejected])))
    statements.append((SQL(
        "INSERT INTO {schema}.{table} (file_sha256, part, line_done) VALUES (%s, %s, %s) "
        "ON CONFLICT (file_sha256, part) DO UPDATE SET line_done = excluded.line_done").format(
        schema=Identifier(schema), table=Identifier(TABLE)), (digest, part, line)))
    return statements


def _rejected_lines(conninfo: str, schema: str, digest: str) -> dict[int, str]:
    """Every line the ledger refused in this file's runs, and its rejects-file entry."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(SQL("SELECT line, entry FROM {schema}.{table} "
                                "WHERE file_sha256 = %s").format(
            schema=Identifier(schema), table=Identifier(REJECTS_TABLE)), (digest,)).fetchall()
    return {int(line): str(entry) for line, entry in rows}


@dataclass(frozen=True)
class Job:
    """What one worker process runs: its partition's lines of one segment, in file order
    (`numbers`, the first of which starts at byte `offset`)."""

    url: str
    schema: str
    path: str
    digest: str
    part: int
    numbers: array[int]
    offset: int
    default_actor: UUID
    started_at: datetime


def _read_lines(path: str, offset: int, numbers: array[int]) -> Iterator[tuple[int, str]]:
    """The lines `numbers` (ascending; the first starts at byte `offset`): read on from
    there, not from the file's start, so a segment costs what it spans."""
    if not numbers:
        return
    index, number = 0, numbers[0]
    with open(path, "rb") as stream:
        stream.seek(offset)
        for raw in stream:
            if number == numbers[index]:
                yield number, raw.decode("utf-8", "surrogateescape")
                index += 1
                if index == len(numbers):
                    return
            number += 1


def run_job(job: Job, progress: Any = None) -> tuple[int, int, int]:
    """Run one partition's lines in order; (accepted, replayed, rejected)."""
    ledger = Ledger.connect(job.url, job.schema)
    accepted = replayed = rejected = 0
    try:
        chunk: list[tuple[Line, str]] = []

        def flush() -> None:
            nonlocal accepted, replayed, rejected
            if not chunk:
                return

            def done(rejections: list[tuple[int, DomainError]]) -> list[Statement]:
                entries = []
                for index, error in rejections:
                    line, text = chunk[index]
                    entries.append((line.number, _reject(line.number, line.cause.request_id,
                                                         error.code, error.detail, text)))
                return _chunk_done(job.schema, job.digest, job.part, chunk[-1][0].number,
                                   entries)

            for result in _execute(ledger, [line for line, _ in chunk], done):
                if isinstance(result, Outcome):
                    if result.replayed:
                        replayed += 1
                    else:
                        accepted += 1
                else:
                    rejected += 1
            if progress is not None:
                with progress.get_lock():
                    progress.value += len(chunk)
            chunk.clear()

        for number, text in _read_lines(job.path, job.offset, job.numbers):
            line = parse(number, text, job.default_actor, job.started_at)
            chunk.append((line, text))
            if len(chunk) >= limits.import_chunk_lines:
                flush()
        flush()
    finally:
        ledger.close()
    return accepted, replayed, rejected


def _execute(ledger: Ledger, lines: list[Line],
             done: Callable[[list[tuple[int, DomainError]]], list[Statement]]
             ) -> list[Outcome | DomainError]:
    """The chunk through `execute_atomically` (its effects, rejections and progress in one
    transaction), run again while the database is briefly away (nothing was committed)."""
    deadline = time.monotonic() + limits.import_unavailable_seconds_max
    while True:
        try:
            return ledger.execute_atomically(
                [(line.command, line.cause) for line in lines], done)
        except DatabaseUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _reject(number: int, request_id: str | None, code: str, reason: str, text: str) -> str:
    return json.dumps({"line": number, "request_id": request_id, "code": code,
                       "reason": reason, "text": text.rstrip("\n")}, ensure_ascii=False) + "\n"


_progress: Any = None


def _init_worker(progress: Any) -> None:
    global _progress  # noqa: PLW0603  (one per worker process)
    _progress = progress


def _run_in_worker(job: Job) -> tuple[int, int, int]:
    return run_job(job, _progress)


class ImportRunning(Exception):  # noqa: N818  (a state, not a failure of ours)
    """Another run is importing the same file into the same schema."""


@contextmanager
def _only_run(conninfo: str, schema: str, file_sha256: str) -> Iterator[None]:
    """Hold, for the run, the lock that keeps a second run of the same file into the same
    schema out (a PostgreSQL session advisory lock: a crashed run's lock goes with its
    connection). Two runs at once would each judge the other's refused lines again."""
    name = f"ledger-import:{schema}:{file_sha256}".encode()
    key = int.from_bytes(hashlib.sha256(name).digest()[:8], "big", signed=True)
    with psycopg.connect(conninfo, autocommit=True,
                         connect_timeout=limits.database_connect_seconds_max) as conn:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if not (row and row[0]):
            msg = (f"another run is importing this file into schema {schema!r}; "
                   "wait for it to end (or for its connection to close) and run again")
            raise ImportRunning(msg)
        try:
            yield
        finally:
            # A lost connection has let the lock go already; the run's work stands.
            with suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def import_file(url: str, schema: str, path: Path, *, workers: int = 2,
                rejects_path: Path | None = None, default_actor: UUID = IMPORTER_ID,
                show_progress: bool = True) -> Report:
    """Import the file; see the module's docstring. ImportRunning if another run is
    importing the same file into the same schema."""
    conninfo = ConnectionSettings.from_url(url).conninfo()
    with _only_run(conninfo, schema, file_digest(path)):
        return _import_file(url, schema, path, workers=workers, rejects_path=rejects_path,
                            default_actor=default_actor, show_progress=show_progress)


def _import_file(url: str, schema: str, path: Path, *, workers: int,
                 rejects_path: Path | None, default_actor: UUID,
                 show_progress: bool) -> Report:
    from tqdm import tqdm  # noqa: PLC0415

    started = time.monotonic()
    started_at = now()
    rejects_path = rejects_path or path.with_name(path.name + ".rejects.jsonl")
    conninfo = ConnectionSettings.from_url(url).conninfo()
    ledger = Ledger.connect(url, schema)  # creates the ledger's tables on a new database
    report = Report(rejects_path=rejects_path)
    try:
        _setup(conninfo, schema)
        # Partitions follow the number of workers: a resumed run with another number
        # starts afresh (and replays what is done: idempotent, only slower).
        digest = f"{file_digest(path)}:{workers}"
        done = _done(conninfo, schema, digest)
        plan = _plan(ledger, path, workers, default_actor, started_at, show_progress)
        invalid, report.lines = plan.invalid, plan.lines
    finally:
        ledger.close()
    invalid_entries = {number: _reject(number, request_id, INVALID_LINE, reason, text)
                       for number, request_id, reason, text in invalid}
    report.rejected += len(invalid)
    context = multiprocessing.get_context("spawn")
    progress = context.Value("q", len(invalid))
    with tqdm(total=report.lines, desc="importing", unit="line",
              disable=not show_progress) as bar, context.Pool(
            workers, initializer=_init_worker, initargs=(progress,)) as pool:
        for segment in plan.segments:
            jobs: list[Job] = []
            for part, numbers in sorted(segment.items()):
                after = done.get(part, 0)
                first = bisect.bisect_right(numbers, after)
                todo = numbers[first:]
                skipped = len(numbers) - len(todo)
                report.skipped += skipped
                with progress.get_lock():
                    progress.value += skipped
                if todo:
                    jobs.append(Job(url, schema, str(path), digest, part, todo,
                                    plan.offsets[todo[0] - 1], default_actor, started_at))
            pending = pool.map_async(_run_in_worker, jobs) if jobs else None
            while pending is not None and not pending.ready():
                pending.wait(0.5)
                bar.n = progress.value
                bar.refresh()
            if pending is not None:
                for accepted, replayed, rejected in pending.get():
                    report.accepted += accepted
                    report.replayed += replayed
                    report.rejected += rejected
            bar.n = progress.value
            bar.refresh()
    entries = {**_rejected_lines(conninfo, schema, digest), **invalid_entries}
    with rejects_path.open("w", encoding="utf-8") as out:
        for number in sorted(entries):
            out.write(entries[number])
    report.rejected = len(entries)
    report.seconds = time.monotonic() - started
    return report


DEFERRED = -2
"""A line whose complex is looked up once the whole file is read."""
NOT_RUN = -3
"""A line that is not a command (it goes to the rejects file as it is)."""


@dataclass
class Plan:
    segments: list[dict[int, array[int]]]
    """Partition -> its line numbers, segment by segment (a barrier: {GLOBAL: ...})."""
    offsets: array[int]
    """Each line's byte offset in the file (line n at offsets[n - 1])."""
    invalid: list[tuple[int, str | None, str, str]]
    lines: int


def _plan(ledger: Ledger, path: Path, workers: int, default_actor: UUID, at: datetime,
          show_progress: bool) -> Plan:
    """Read the file once: each line's partition, cut into segments at the barriers (lines
    that belong to no complex; consecutive ones share a segment). Holds a few bytes a line,
    not the lines: a nationwide file plans in bounded memory."""
    from tqdm import tqdm  # noqa: PLC0415

    owners = Owners(ledger)
    partition = Partitions(workers)
    parts = array("h")
    offsets = array("q")
    deferred: dict[int, UUID] = {}  # line number -> the id whose complex it takes
    invalid: list[tuple[int, str | None, str, str]] = []
    offset = 0
    with path.open("rb") as stream, tqdm(desc="reading", unit="line",
                                         disable=not show_progress) as bar:
        for number, raw in enumerate(stream, start=1):
            offsets.append(offset)
            offset += len(raw)
            if number % 10_000 == 0:
                bar.update(10_000)
            text = raw.decode("utf-8", "surrogateescape")
            if not text.strip():
                invalid.append((number, None, "an empty line", text))
                parts.append(NOT_RUN)
                continue
            try:
                line = parse(number, text, default_actor, at)
            except LineError as error:
                invalid.append((number, _request_id(text), str(error), text))
                parts.append(NOT_RUN)
                continue
            if line.complex_id is not None:  # the file says: nothing to learn or look up
                parts.append(partition(line.complex_id))
                continue
            complex_id = owners.complex_of(line.command)
            owners.learn(line.command, line.cause, complex_id)
            if complex_id is not None:
                parts.append(partition(complex_id))
            elif (owner := owners.owner_ids(line.command)) is not None:
                deferred[number] = owner
                parts.append(DEFERRED)
            else:
                parts.append(GLOBAL)
        bar.update(len(parts) % 10_000)
    # What the file did not define, from the ledger (bulk look-ups). A line naming what
    # neither holds runs too, and the ledger refuses it with its own code
    # (unknown_household, unknown_resident, ...).
    owners.look_up(list(deferred.values()))
    for number, owner in deferred.items():
        complex_id = owners.complexes.get(owner)
        parts[number - 1] = 0 if complex_id is None else partition(complex_id)
    segments: list[dict[int, array[int]]] = []
    current: dict[int, array[int]] = {}
    for index, part in enumerate(parts):
        if part == NOT_RUN:
            continue
        if current and (part == GLOBAL) != (GLOBAL in current):
            segments.append(current)
            current = {}
        current.setdefault(part, array("q")).append(index + 1)
    if current:
        segments.append(current)
    return Plan(segments, offsets, invalid, len(parts))


def _request_id(text: str) -> str | None:
    try:
        value = json.loads(text).get("request_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
