"""`ledger import FILE`: JSON Lines through the commands, in parallel by complex, idempotent,
resumable after a crash, every refused line named in the rejects file."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cli.main import main
from ledger.application import Ledger, now
from ledger.complex import Complex, complex_id_for
from ledger.database import ConnectionSettings
from ledger.errors import DomainError
from ledger.household import household_id_for
from ledger.resident import Resident
from seeding.importing import IMPORTER_ID, LineError, parse
from world import GUARDS_OFF

PLATFORM = "00000000-0000-4000-8000-00000000000b"
AT = "2026-03-02T10:00:00+09:00"
MERCHANT_REQUEST = "merchant-1"


def _line(request_id: str, command: str, body: dict[str, Any], **extra: Any) -> str:
    return json.dumps({"request_id": request_id, "command": command, "occurred_at": AT,
                       "body": body, **extra})


def _merchant_id() -> str:
    """The id the ledger gives the merchant the file registers (actor and request id)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ledger:merchant:{IMPORTER_ID}:{MERCHANT_REQUEST}"))


def write_file(path: Path, trades: int = 600) -> dict[str, Any]:
    """A file: policy, 3 complexes, 45 households and residents, trades, a merchant
    registered midway (a barrier) and trades with it, refunds, five bad lines, and a trade
    sent twice in a row then its request id a third time with other content."""
    pick = random.Random(11)
    lines: list[str] = [_line("policy-1", "set_accrual_policy", {"rates": [
        {"market": "sharing", "seller_kind": "resident", "personal_bps": 3000,
         "common_bps": 1000},
        {"market": "shopping", "seller_kind": "local_food", "personal_bps": 500,
         "common_bps": 200}], "guards": GUARDS_OFF})]  # random pairs, big accruals
    residents: list[str] = []
    by_complex: list[list[str]] = []
    for number in range(3):
        by_complex.append([])
        code = f"IM-{number}"
        lines.append(_line(f"complex-{number}", "register_complex",
                           {"code": code, "complex_name": f"Import {number}",
                            "region": "Hwaseong"}))
        complex_id = str(complex_id_for(code))
        for unit in range(15):
            household = str(household_id_for(uuid.UUID(complex_id), f"u-{unit}"))
            lines.append(_line(f"household-{number}-{unit}", "register_household",
                               {"complex_id": complex_id, "unit": f"u-{unit}"}))
            resident = str(uuid.UUID(int=pick.getrandbits(128), version=4))
            residents.append(resident)
            by_complex[-1].append(resident)
            lines.append(_line(f"enrol-{resident}", "enrol_resident",
                               {"household_id": household, "consent_ref": "paper-1",
                                "resident_id": resident},
                               actor_id=resident, role="resident"))
    for index in range(trades):
        if index == trades // 2:
            lines.append(_line(MERCHANT_REQUEST, "register_merchant",
                               {"kind": "local_food", "merchant_name": "Farm"}))
        buyer, seller = pick.sample(pick.choice(by_complex), 2)  # sharing within a complex
        amount = pick.randrange(1_000, 30_000)
        body = {"trade_id": f"T-{index}", "market": "sharing", "category": "childcare",
                "seller_id": seller, "seller_kind": "resident", "buyer_id": buyer,
                "amount_won": amount, "points_used_won": pick.choice((0, 0, amount // 3))}
        if index > trades // 2 and index % 5 == 0:
            body.update(market="shopping", seller_id=_merchant_id(), seller_kind="local_food")
        lines.append(_line(f"trade-{index}", "record_trade", body,
                           actor_id=PLATFORM, role="platform"))
        if index == 100:  # sent twice in a row: the second is a retry, answered as the first
            lines.append(lines[-1])
            repeat = {**body, "amount_won": amount + 1}  # its request id again, other content
            lines.append(_line(f"trade-{index}", "record_trade", repeat,
                               actor_id=PLATFORM, role="platform"))
            reused = lines[-1]
        if index % 40 == 39:
            lines.append(_line(f"refund-{index}", "refund_trade",
                               {"trade_id": f"T-{index - 3}"},
                               actor_id=PLATFORM, role="platform"))
    bad = {
        5: "{not json",
        9: _line("bad-command", "launch_rocket", {}),
        12: _line("bad-field", "register_household", {"complex_id": "nope", "unit": "x"}),
        20: _line("unknown-household", "enrol_resident",
                  {"household_id": str(uuid.uuid4()), "consent_ref": "p"}),
        30: _line("too-many-points", "record_trade",
                  {"trade_id": "T-greedy", "market": "sharing", "category": "x",
                   "seller_id": residents[0], "seller_kind": "resident",
                   "buyer_id": residents[1], "amount_won": 10 ** 8,
                   "points_used_won": 10 ** 8}, actor_id=PLATFORM, role="platform"),
    }
    for offset in sorted(bad):  # placed after the enrolments, so numbers are known
        lines.insert(len(lines) - 200 + offset, bad[offset])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    numbers = {text: number for number, text in enumerate(lines, start=1)}
    return {"lines": len(lines), "residents": residents, "retries": 1,
            "reused": numbers[reused],
            "bad": {numbers[text]: text for text in bad.values()}}


_created: list[str] = []
"""Schemas `_schema` made for the running test, dropped after it."""


@pytest.fixture(autouse=True)
def _drop_schemas(database_url: str) -> Iterator[None]:
    yield
    with psycopg.connect(ConnectionSettings.from_url(database_url).conninfo(),
                         autocommit=True) as conn:
        while _created:
            conn.execute(f'DROP SCHEMA IF EXISTS "{_created.pop()}" CASCADE')


def _schema(database_url: str) -> str:
    name = f"imp_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ConnectionSettings.from_url(database_url).conninfo(),
                         autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    _created.append(name)
    return name


def _balances(database_url: str, schema: str, residents: list[str]) -> dict[str, Any]:
    ledger = Ledger.connect(database_url, schema)
    try:
        wallets = {}
        for resident in residents:
            wallet = ledger.snapshot(Resident, uuid.UUID(resident))
            assert wallet is not None
            wallets[resident] = (wallet.available_won, wallet.owed_won)
        funds = {}
        for number in range(3):
            fund = ledger.snapshot(Complex, complex_id_for(f"IM-{number}"))
            assert fund is not None
            funds[number] = fund.balance_won
        # Events, not the log's head: a save refused by the events table's key (writers racing
        # to open one pair's trade counter, ledger.guards) burns positions, so heads differ.
        with psycopg.connect(ConnectionSettings.from_url(database_url).conninfo(),
                             options=f"-c search_path={schema}") as conn:
            row = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
        return {"wallets": wallets, "funds": funds, "events": row[0] if row else 0}
    finally:
        ledger.close()


def _import(database_url: str, schema: str, path: Path, workers: int) -> int:
    return main(["--database-url", database_url, "--schema", schema, "--quiet", "import",
                 str(path), "--workers", str(workers)])


def _start_import(database_url: str, schema: str, path: Path) -> subprocess.Popen[bytes]:
    """`ledger import` of `path` into `schema` with two workers, in a process of its own."""
    command = [sys.executable, "-m", "cli.main", "--database-url", database_url, "--schema",
               schema, "--quiet", "import", str(path), "--workers", "2"]
    return subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _wait_for_progress(database_url: str, schema: str, lines_done_over: int) -> None:
    """Until the import into `schema` has recorded more than that many lines done (60 s at
    most)."""
    conninfo = ConnectionSettings.from_url(database_url).conninfo()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.2)
        with psycopg.connect(conninfo, options=f"-c search_path={schema}") as conn:
            try:
                done = conn.execute("SELECT coalesce(sum(line_done), 0) FROM "
                                    "ledger_imports").fetchone()
            except psycopg.errors.UndefinedTable:
                continue
        if done and done[0] > lines_done_over:
            return


def _one_at_a_time(database_url: str, schema: str, path: Path) -> dict[int, str]:
    """The file's lines sent one by one, in order, each waiting for its answer: what the
    ledger refuses then is what an import must refuse."""
    ledger = Ledger.connect(database_url, schema)
    refused: dict[int, str] = {}
    at = now()
    try:
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                line = parse(number, text, IMPORTER_ID, at)
            except LineError:
                refused[number] = "invalid_line"
                continue
            try:
                ledger.execute(line.command, line.cause)
            except DomainError as error:
                refused[number] = error.code
    finally:
        ledger.close()
    return refused


def _rejects(path: Path) -> dict[int, str]:
    rejects = path.with_name(path.name + ".rejects.jsonl")
    return {entry["line"]: entry["code"] for entry in
            map(json.loads, rejects.read_text(encoding="utf-8").splitlines())}


def test_import_runs_the_file_through_the_commands_and_names_every_refused_line(
        database_url: str, tmp_path: Path) -> None:
    """One worker and two refuse exactly the lines that sending them one by one refuses
    (the five bad lines, and trades short of points) and leave the same balances; the
    rejects file names each with its code; a second run changes nothing."""
    path = tmp_path / "commands.jsonl"
    plan = write_file(path)
    one, two = _schema(database_url), _schema(database_url)
    assert _import(database_url, one, path, workers=1) == 1
    rejected_once = _rejects(path)
    assert _import(database_url, two, path, workers=2) == 1
    rejected_twice = _rejects(path)
    assert rejected_once == rejected_twice == _one_at_a_time(
        database_url, _schema(database_url), path)
    codes = {number: rejected_twice[number] for number in plan["bad"]}
    assert list(codes.values()) == ["invalid_line", "invalid_line", "invalid_line",
                                    "unknown_household", "insufficient_points"]
    assert rejected_twice[plan["reused"]] == "request_id_reused"
    assert set(rejected_twice.values()) <= {"invalid_line", "unknown_household",
                                            "insufficient_points", "request_id_reused"}
    first = _balances(database_url, one, plan["residents"])
    second = _balances(database_url, two, plan["residents"])
    assert first["wallets"] == second["wallets"] and first["funds"] == second["funds"]
    assert all(balance > 0 for balance in second["funds"].values())
    with psycopg.connect(ConnectionSettings.from_url(database_url).conninfo(),
                         options=f"-c search_path={two}") as conn:
        requests = conn.execute("SELECT count(*) FROM ledger_requests").fetchone()
    assert requests == (plan["lines"] - len(rejected_twice) - plan["retries"],)

    assert _import(database_url, two, path, workers=2) == 1  # again: nothing changes
    assert _balances(database_url, two, plan["residents"]) == second
    assert _rejects(path) == rejected_twice


@pytest.mark.slow
def test_an_import_killed_midway_resumes_without_losing_or_doubling(
        database_url: str, tmp_path: Path) -> None:
    """kill -9 of `ledger import` once it has recorded progress; run again: every line is
    accepted once or named in the rejects file, as in an uninterrupted run."""
    path = tmp_path / "commands.jsonl"
    plan = write_file(path, trades=3000)
    whole, broken = _schema(database_url), _schema(database_url)
    assert _import(database_url, whole, path, workers=2) == 1
    expected_rejects = _rejects(path)
    process = _start_import(database_url, broken, path)
    conninfo = ConnectionSettings.from_url(database_url).conninfo()
    try:
        _wait_for_progress(database_url, broken, 1500)
        assert process.poll() is None, "the import ended before it could be killed"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    assert _import(database_url, broken, path, workers=2) == 1
    assert _rejects(path) == expected_rejects
    resumed = _balances(database_url, broken, plan["residents"])
    uninterrupted = _balances(database_url, whole, plan["residents"])
    assert resumed["wallets"] == uninterrupted["wallets"]
    assert resumed["funds"] == uninterrupted["funds"]
    with psycopg.connect(conninfo, options=f"-c search_path={broken}") as conn:
        requests = conn.execute("SELECT count(*) FROM ledger_requests").fetchone()
        events = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
    with psycopg.connect(conninfo, options=f"-c search_path={whole}") as conn:
        whole_events = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
    assert requests == (plan["lines"] - len(expected_rejects) - plan["retries"],)
    assert events == whole_events


@pytest.mark.slow
def test_a_second_run_of_the_same_file_is_refused_while_the_first_imports(
        database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two runs of one file into one schema at once would each judge the other's refused
    lines again: the second is refused at once (exit 2, saying why) and changes nothing;
    the first ends as an uninterrupted run does."""
    path = tmp_path / "commands.jsonl"
    plan = write_file(path, trades=3000)
    alone, twice = _schema(database_url), _schema(database_url)
    assert _import(database_url, alone, path, workers=2) == 1
    expected_rejects = _rejects(path)
    first = _start_import(database_url, twice, path)
    try:
        _wait_for_progress(database_url, twice, 0)
        assert first.poll() is None, "the first run ended before the second could start"
        capsys.readouterr()
        assert _import(database_url, twice, path, workers=2) == 2
        assert "another run is importing this file" in capsys.readouterr().err
        assert first.wait(timeout=120) == 1  # refused lines, as the uninterrupted run
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
    assert _rejects(path) == expected_rejects
    assert (_balances(database_url, twice, plan["residents"])
            == _balances(database_url, alone, plan["residents"]))
