"""The ledger at growing sizes: seed, rebuild, verify and HTTP, each against its baseline.

    .venv/bin/python bench/scale.py [--database-url URL] [--datasets tiny,small,pilot-month]
        [--results var/scale.jsonl] [--plot docs/scale.png] [--http-seconds 5] [--keep]
    .venv/bin/python bench/scale.py --report-only      # table and plot from recorded results

Needs matplotlib for the plot (`.venv/bin/pip install -e ".[bench]"`) and Debian's `wrk`
for the HTTP figures (without it they are left out). Prints figures; asserts nothing.

For each dataset (`DATASETS`: complexes, households, months of activity), in a fresh schema:
1. seed it with `ledger seed` (wall time, events/s, the process's peak memory);
2. settle the events table (`VACUUM ANALYZE`, as a table is some time after it was written)
   and take its size with indexes;
3. the baseline: a plain server-side-cursor SELECT of every event's columns
   (`audit_bench.scan`);
4. `ledger projections rebuild` (all projections, from position 0): time, events/s over the
   whole log, peak memory of its largest process, ratio to the SELECT;
5. `ledger audit chain`, then `ledger audit verify`: the same figures;
6. with `wrk`: `ledger serve` on the dataset, `GET /v1/health`, `GET /v1/me/wallet` and
   `POST /v1/trades` (`http_bench.measure_server`), requests/s and each route's ratio to the
   health check of the same server.
Every dataset's figures are appended as one JSON line to `--results`, so long datasets
(`pilot-year`, `nationwide-month`) can be run on their own and still land in the same table
and plot. The table (markdown) of every recorded dataset is printed at the end and the plot
(throughput against events in the log, log scale) written to `--plot`.

Peak memory is the largest single process of a step (`os.wait4`'s `ru_maxrss`, which covers
the step's process and the workers it waited for). Steps run one after another, alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from audit_bench import scan
from http_bench import LEDGER, measure_server, prepare_clients, server_environment
from ledger.database import ConnectionSettings, database_url

DATASETS: dict[str, tuple[int, int, int]] = {
    # name: (complexes, households, months of activity)
    "tiny": (3, 1_000, 1),
    "small": (8, 5_000, 1),
    "pilot-month": (29, 25_000, 1),
    "pilot-year": (29, 25_000, 12),
    "nationwide-month": (2_200, 1_090_000, 1),
}
DEFAULT_DATASETS = "tiny,small,pilot-month"


def run_step(command: list[str], environment: dict[str, str], log: Path
             ) -> tuple[float, float]:
    """Run one of the ledger's commands alone: its wall time (s) and peak memory (MiB)."""
    started = time.perf_counter()
    with log.open("ab") as out:
        process = subprocess.Popen(  # noqa: S603  (our own command line)
            command, env=environment, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        print(log.read_text()[-3000:], file=sys.stderr)
        raise RuntimeError(f"{' '.join(command[-3:])} exited with {process.returncode}")
    return seconds, usage.ru_maxrss / 1024


def schema_facts(conninfo: str, schema: str) -> tuple[int, int]:
    """Events in the log and the schema's size on disk with indexes (bytes), once settled."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'VACUUM ANALYZE "{schema}".ledger_events')
        events = conn.execute(f'SELECT count(*) FROM "{schema}".ledger_events').fetchone()
        size = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'm')", [schema]).fetchone()
    assert events is not None and size is not None
    return int(events[0]), int(size[0])


def measure(name: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    complexes, households, months = DATASETS[name]
    conninfo = ConnectionSettings.from_url(url).conninfo()
    schema = f"bench_scale_{name.replace('-', '_')}_{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    environment = server_environment(url, schema, work)
    log = work / "steps.log"
    ledger = [str(LEDGER), "--database-url", url, "--schema", schema, "--quiet"]
    keys = ["--key-dir", str(work / "audit-keys")]
    figures: dict[str, Any] = {"dataset": name, "complexes": complexes,
                               "households": households, "months": months,
                               "seed_workers": args.seed_workers,
                               "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "load_average": round(os.getloadavg()[0], 2)}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        print(f"{name} (schema {schema}): seeding {complexes:,} complexes, "
              f"{households:,} households, {months} month(s)", flush=True)
        seconds, peak = run_step([*ledger, "seed", "--complexes", str(complexes),
                                  "--households", str(households), "--months", str(months),
                                  "--workers", str(args.seed_workers)],
                                 environment, log)
        events, size = schema_facts(conninfo, schema)
        figures.update(events=events, database_mib=round(size / 2**20),
                       seed_seconds=round(seconds, 1),
                       seed_events_per_second=round(events / seconds),
                       seed_peak_mib=round(peak))
        scanned, scan_seconds = scan(url, schema)
        assert scanned == events, (scanned, events)
        select_rate = events / scan_seconds
        figures.update(select_seconds=round(scan_seconds, 2),
                       select_events_per_second=round(select_rate))
        print(f"{name}: {events:,} events, {size / 2**20:,.0f} MiB; SELECT scan "
              f"{scan_seconds:.1f} s; rebuilding", flush=True)
        for step, command in (("rebuild", [*ledger, "projections", "rebuild"]),
                              ("chain", [*ledger, "audit", "chain", *keys]),
                              ("verify", [*ledger, "audit", "verify", *keys])):
            if step in args.skip or (step == "chain" and "verify" in args.skip):
                continue
            seconds, peak = run_step(command, environment, log)
            figures.update({f"{step}_seconds": round(seconds, 1),
                            f"{step}_peak_mib": round(peak)})
            if step != "chain":
                figures[f"{step}_events_per_second"] = round(events / seconds)
                figures[f"{step}_ratio"] = round(events / seconds / select_rate, 3)
            print(f"{name}: {step} {seconds:.1f} s, peak {peak:,.0f} MiB", flush=True)
        if shutil.which("wrk") is not None and args.http_seconds > 0 and "http" not in args.skip:
            files, tokens, platform_token, _ = prepare_clients(conninfo, schema, work)
            load = argparse.Namespace(seconds=args.http_seconds, connections=16, threads=2)
            routes = measure_server([], environment, load, files, tokens[0], platform_token)
            health = routes["GET /v1/health"].requests_per_second
            for route, key in (("GET /v1/health", "health"), ("GET /v1/me/wallet", "wallet"),
                               ("POST /v1/trades", "trades")):
                figure = routes[route]
                figures.update({f"http_{key}_rps": round(figure.requests_per_second),
                                f"http_{key}_p99_ms": round(figure.p99_ms, 1),
                                f"http_{key}_ratio": round(figure.requests_per_second / health, 2)})
            print(f"{name}: HTTP health {health:,.0f}/s, wallet {figures['http_wallet_rps']:,}/s,"
                  f" trades {figures['http_trades_rps']:,}/s", flush=True)
    finally:
        if not args.keep:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        shutil.rmtree(work, ignore_errors=True)
    return figures


def recorded(results: Path) -> list[dict[str, Any]]:
    """The latest figures of each dataset in the results file, smallest log first."""
    latest: dict[str, dict[str, Any]] = {}
    if results.exists():
        for line in results.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                latest[row["dataset"]] = row
    return sorted(latest.values(), key=lambda row: row["events"])


def table(rows: list[dict[str, Any]]) -> str:
    def cell(row: dict[str, Any], key: str, suffix: str = "") -> str:
        value = row.get(key)
        return "—" if value is None else f"{value:,}{suffix}"

    def step(row: dict[str, Any], name: str) -> str:
        if f"{name}_seconds" not in row:
            return "not run"
        return f"{row[f'{name}_seconds']:,} s ({row[f'{name}_ratio']}×)"

    lines = [
        "| dataset | events | database | seed | SELECT scan | rebuild (ratio) | verify (ratio) "
        "| peak memory seed / rebuild / verify | HTTP health / wallet / trades (req/s) |",
        "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        http = "—" if "http_health_rps" not in row else (
            f"{row['http_health_rps']:,} / {row['http_wallet_rps']:,} "
            f"({row['http_wallet_ratio']}×) / {row['http_trades_rps']:,} "
            f"({row['http_trades_ratio']}×)")
        lines.append(
            f"| {row['dataset']} ({row['households']:,} households, {row['months']} mo) "
            f"| {row['events']:,} | {row['database_mib']:,} MiB "
            f"| {row['seed_seconds']:,} s ({row['seed_events_per_second']:,} ev/s) "
            f"| {row['select_seconds']} s ({row['select_events_per_second']:,} ev/s) "
            f"| {step(row, 'rebuild')} | {step(row, 'verify')} "
            f"| {cell(row, 'seed_peak_mib')} / {cell(row, 'rebuild_peak_mib')} / "
            f"{cell(row, 'verify_peak_mib')} MiB | {http} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib  # noqa: PLC0415  (an optional extra: only the plot needs it)
    except ImportError:
        print('no plot: matplotlib is missing (.venv/bin/pip install -e ".[bench]")',
              file=sys.stderr)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: PLC0415

    def thousands(axis: Any) -> None:
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        axis.set_minor_formatter(NullFormatter())

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for key, label in (("select_events_per_second", "plain SELECT scan (baseline)"),
                       ("seed_events_per_second", "seed (through the commands)"),
                       ("rebuild_events_per_second", "projections rebuild"),
                       ("verify_events_per_second", "audit verify")):
        measured = [row for row in rows if key in row]
        left.plot([row["events"] for row in measured], [row[key] for row in measured],
                  marker="o", label=label)
    left.set(xscale="log", yscale="log", xlabel="events in the log",
             ylabel="events per second", title="Throughput against dataset size")
    thousands(left.xaxis)
    thousands(left.yaxis)
    left.grid(True, which="both", alpha=0.3)
    # Room below the slowest line for the legend.
    left.set_ylim(bottom=min(row["seed_events_per_second"] for row in rows) / 8)
    left.legend(fontsize="small", loc="lower right")
    with_http = [row for row in rows if "http_health_rps" in row]
    for key, label in (("http_health_rps", "GET /v1/health"),
                       ("http_wallet_rps", "GET /v1/me/wallet"),
                       ("http_trades_rps", "POST /v1/trades")):
        right.plot([row["events"] for row in with_http], [row[key] for row in with_http],
                   marker="o", label=label)
    right.set(xscale="log", xlabel="events in the log", ylabel="requests per second (wrk, 16 "
              "connections)", title="HTTP against dataset size")
    right.set_ylim(bottom=0)
    thousands(right.xaxis)
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"plot written to {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="")
    parser.add_argument("--datasets", default=DEFAULT_DATASETS,
                        help=f"comma-separated, of {', '.join(DATASETS)}")
    parser.add_argument("--results", type=Path, default=Path("var/scale.jsonl"))
    parser.add_argument("--plot", type=Path, default=Path("var/scale.png"))
    parser.add_argument("--http-seconds", type=float, default=5.0,
                        help="wrk's seconds per route (0: no HTTP figures)")
    parser.add_argument("--keep", action="store_true", help="keep the seeded schemas")
    parser.add_argument("--seed-workers", type=int, default=os.cpu_count() or 1,
                        help="`ledger seed --workers` (default: one per core)")
    parser.add_argument("--skip", default="", type=lambda text: set(text.split(",")),
                        help="steps to leave out: rebuild, verify, http (comma-separated)")
    parser.add_argument("--report-only", action="store_true",
                        help="print the table and draw the plot from --results, measure nothing")
    args = parser.parse_args()
    names = [name.strip() for name in args.datasets.split(",") if name.strip()]
    unknown = [name for name in names if name not in DATASETS]
    if unknown:
        parser.error(f"unknown datasets {unknown}; known: {', '.join(DATASETS)}")
    if not args.report_only:
        if shutil.which("wrk") is None and args.http_seconds > 0:
            print("wrk is missing (apt-get install -y wrk): no HTTP figures", file=sys.stderr)
        url = args.database_url or database_url()
        args.results.parent.mkdir(parents=True, exist_ok=True)
        for name in names:
            figures = measure(name, url, args)
            with args.results.open("a") as out:
                out.write(json.dumps(figures) + "\n")
    rows = recorded(args.results)
    if not rows:
        print(f"nothing recorded in {args.results}", file=sys.stderr)
        return 1
    print(table(rows))
    plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
