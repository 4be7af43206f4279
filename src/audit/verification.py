"""`ledger audit verify`: the chain, the replay, conservation and accruals, in one verdict.

`verify_ledger` runs the two passes (`verify_chain`, then `Replay`), picks the
first bad position among everything they found, and stores the verdict in
`audit_verifications` so the API can serve the last one. Each verdict is a row
of its own: the history of verifications is itself part of the audit trail.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from audit.chain import Progress
from audit.replay import (
    COMPARISON_CODES,
    Replay,
    ReplayReport,
    merge_slices,
    replay_projections,
    replay_slice,
)
from audit.verify import PROBLEM_CODES as CHAIN_CODES
from audit.verify import verify_chain
from eventlog.log import EVENTS_TABLE
from ledger import limits
from ledger.database import connect

VERIFICATIONS_TABLE = "audit_verifications"
MAIN_FOLDS = ("wallet_balances",)
"""Projections folded in this process alongside the auditor's fold, from the same decoded
events (the wallet fold reads the most events; decoding them once saves the most)."""
PROJECTION_SHARES = (("complex_funds", "rent_payments", "market_views"),)
"""The other projections' folds, one forked process per share."""
FOLDED = MAIN_FOLDS + tuple(name for share in PROJECTION_SHARES for name in share)
"""Every projection whose own fold is compared (the others only with the auditor's)."""


@dataclass
class Verification:
    """The verdict of one full verification."""

    ok: bool
    first_bad_position: int | None
    problem: str | None
    detail: str
    verified_at: datetime
    seconds: float
    counts: dict[str, int]
    findings: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    points_by_kind: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["verified_at"] = self.verified_at.isoformat()
        return document

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)

    def lines(self) -> list[str]:
        counts = self.counts
        out = [
            f"events replayed: {counts['events']:,} (log head {counts['head']:,})",
            f"hash chain: {counts['chain_checked']:,} events checked, "
            f"{counts['unchained_tail']:,} not chained yet, "
            f"{counts['checkpoints_verified']:,} checkpoint signatures verified",
            f"accruals recomputed: {counts['trades_recomputed']:,} trades",
            f"vote tallies recomputed: {counts.get('tallies_recomputed', 0):,} proposals",
            f"group-buy outcomes recomputed: {counts.get('group_buys_recomputed', 0):,}",
            f"projection rows compared: {counts['rows_compared']:,}",
            *(f"note: {note}" for note in self.notes),
        ]
        if self.ok:
            out.append(f"OK: ledger verified in {self.seconds:.1f} s")
        else:
            out.append(f"FAILED at position {self.first_bad_position}: {self.problem}: "
                       f"{self.detail}")
            out.extend(f"  also at {item['position']}: {item['code']}: {item['detail']}"
                       for item in self.findings[1:6])
        return out


def create_table(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {VERIFICATIONS_TABLE} ("
        " id bigserial PRIMARY KEY,"
        " verified_at timestamptz NOT NULL,"
        " ok boolean NOT NULL,"
        " first_bad_position bigint,"
        " problem text,"
        " detail text NOT NULL,"
        " counts jsonb NOT NULL,"
        " report jsonb NOT NULL)")


def verify_ledger(
    url: str,
    schema: str,
    *,
    checkpoint_files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None,
    progress: Progress | None = None,
    store: bool = True,
    parallel: bool = True,
    memory_budget_bytes: int = limits.verify_memory_budget_bytes_default,
    slices: int | None = None,
    **chain_options: Any,
) -> Verification:
    """Verify the chain, replay every event, compare, check; store and return the verdict.

    With `parallel` the work is split three ways: the chain pass and a share of the
    projections' replay (`PROJECTION_SHARES`) run in forked processes while this one
    runs the auditor's own fold (conservation, accruals, balances) and, from the same
    decoded events, the folds of `MAIN_FOLDS`. Each replay process reads only the events
    it folds. They share nothing but the database; each compares events and tables read
    in one snapshot of its own. The progress callback then follows this process's pass
    only.

    When the auditor's fold would not fit in `memory_budget_bytes` (or `slices` is given)
    runs in several passes (`replay_slice`), each keeping one hash slice of the wallets,
    trades and households, of the auditor's fold and of the projections' folds alike;
    the findings are the same as in one pass.
    """
    started = time.monotonic()
    verified_at = datetime.now(UTC)
    if checkpoint_files is not None and not isinstance(checkpoint_files, str | os.PathLike):
        checkpoint_files = list(checkpoint_files)
    chain_arguments = {"checkpoint_files": checkpoint_files, **chain_options}
    if slices is None:
        slices = verify_slices_for(url, schema, memory_budget_bytes)
    if slices > 1:
        return _finish(url, schema, _verify_sliced(
            url, schema, slices, chain_arguments, progress=progress, parallel=parallel),
            started, verified_at, store=store)
    pool = None
    if parallel:
        # Fork, not spawn: the child needs no `__main__` guard from the caller.
        pool = ProcessPoolExecutor(max_workers=1 + len(PROJECTION_SHARES),
                                   mp_context=multiprocessing.get_context("fork"))
        chain_future = pool.submit(verify_chain, url, schema, **chain_arguments)
        projections_futures = [pool.submit(replay_projections, url, schema, share)
                               for share in PROJECTION_SHARES]
    try:
        if pool is None:
            chain = verify_chain(url, schema, progress=progress, **chain_arguments)
        with cast("psycopg.Connection[Any]", connect(url, schema)) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            try:
                replay = Replay(conn, progress=progress,
                                fold=None if pool is None else MAIN_FOLDS).run()
            finally:
                conn.rollback()
        if pool is not None:
            chain = chain_future.result()
            for future in projections_futures:
                replay = replay.merged_with(future.result())
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return _finish(url, schema, (chain, replay), started, verified_at, store=store)


def verify_slices_for(url: str, schema: str, memory_budget_bytes: int) -> int:
    """Slices of the auditor's fold so that one slice's state fits in the budget, judged
    from the log's head position (request records and all: it errs on the safe side)."""
    with cast("psycopg.Connection[Any]", connect(url, schema)) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (EVENTS_TABLE,)).fetchone()
        row = (conn.execute(f"SELECT COALESCE(MAX(notification_id), 0) FROM {EVENTS_TABLE}")
               .fetchone() if exists and exists[0] else None)
    head = int(row[0]) if row else 0
    wanted = -(-head * limits.verify_state_bytes_per_event // max(1, memory_budget_bytes))
    return max(1, min(limits.verify_slices_max, wanted))


def _verify_sliced(url: str, schema: str, slices: int, chain_arguments: dict[str, Any], *,
                   progress: Progress | None, parallel: bool) -> tuple[Any, ReplayReport]:
    """The chain pass and every slice of the replay (`replay_slice`, the auditor's fold and
    the `FOLDED` projections' folds together), two processes at a time when `parallel`."""
    if not parallel:
        chain = verify_chain(url, schema, progress=progress, **chain_arguments)
        reports = [replay_slice(url, schema, index, slices, FOLDED) for index in range(slices)]
    else:
        with ProcessPoolExecutor(max_workers=2,
                                 mp_context=multiprocessing.get_context("fork")) as pool:
            chain_future = pool.submit(verify_chain, url, schema, **chain_arguments)
            futures = [pool.submit(replay_slice, url, schema, index, slices, FOLDED)
                       for index in range(slices)]
            reports = []
            for future in futures:
                reports.append(future.result())
                if progress is not None:
                    progress(reports[-1].events)
            chain = chain_future.result()
    replay = merge_slices(reports)
    replay.notes.append(f"the replay ran in {slices} hash slices (memory budget)")
    return chain, replay


def _finding_order(item: dict[str, Any]) -> tuple[int, int, str]:
    """By position; at one position the auditor's own fold first, then its comparisons
    with the tables, then the projections' folds' comparisons, then the chain, then by
    text: the same order however the work was split between processes and slices."""
    code, detail = item["code"], item["detail"]
    if code in CHAIN_CODES:
        rank = 3
    elif code not in COMPARISON_CODES:
        rank = 0
    else:
        rank = 1 if "audit replay" in detail else 2
    return int(item["position"]), rank, f"{code} {detail}"


def _finish(url: str, schema: str, passes: tuple[Any, ReplayReport], started: float,
            verified_at: datetime, *, store: bool) -> Verification:
    chain, replay = passes
    findings: list[dict[str, Any]] = [
        {"position": item.position, "code": item.code, "detail": item.detail}
        for item in replay.findings]
    if not chain.ok:
        assert chain.first_bad_position is not None and chain.problem is not None
        findings.append({"position": chain.first_bad_position, "code": chain.problem,
                         "detail": chain.detail})
    findings.sort(key=_finding_order)
    first = findings[0] if findings else None
    counts = {
        "events": replay.events, "head": replay.head,
        "chain_checked": chain.events_checked, "chain_head": chain.chain_head or 0,
        "unchained_tail": chain.unchained_tail,
        "checkpoints_verified": chain.checkpoints_verified,
        "trades_recomputed": replay.trades_recomputed, "rows_compared": replay.rows_compared,
        "tallies_recomputed": replay.tallies_recomputed,
        "group_buys_recomputed": replay.group_buys_recomputed,
        "problems": len(findings),
    }
    result = Verification(
        ok=first is None,
        first_bad_position=None if first is None else first["position"],
        problem=None if first is None else first["code"],
        detail="ledger verified" if first is None else first["detail"],
        verified_at=verified_at, seconds=round(time.monotonic() - started, 3), counts=counts,
        findings=findings[:limits.findings_reported_max], notes=replay.notes,
        points_by_kind=replay.points_by_kind)
    if store:
        store_verification(url, schema, result)
    return result


def store_verification(url: str, schema: str, result: Verification) -> None:
    with cast("psycopg.Connection[Any]", connect(url, schema)) as conn:
        create_table(conn)
        conn.execute(
            f"INSERT INTO {VERIFICATIONS_TABLE} (verified_at, ok, first_bad_position, problem,"
            " detail, counts, report) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (result.verified_at, result.ok, result.first_bad_position, result.problem,
             result.detail, Jsonb(result.counts), Jsonb(result.to_dict())))
        conn.commit()


def last_verification(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
    """The newest stored verdict (search_path is the ledger's schema), or None."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERIFICATIONS_TABLE,)).fetchone()
    if not (exists and exists[0]):
        return None
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            f"SELECT verified_at, ok, first_bad_position, problem, detail, counts, report"
            f" FROM {VERIFICATIONS_TABLE} ORDER BY id DESC LIMIT 1")
        return cursor.fetchone()
