"""GET /metrics as an operator's Prometheus sees it.

In one process (the TestClient) the metrics are the process's own and every test reads
differences, since other tests in the process count too. `ledger serve --workers 2` is
started as operators start it, and every scrape, whichever worker answers it, must
count the requests both workers served.
"""

# Fixtures come from test_api_fixtures by import, so tests "redefine" their names.
# ruff: noqa: F811

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from api import metrics
from api.auth import Role, mint_token
from api.settings import ApiSettings
from ledger import commands as c
from private_postgres import PrivatePostgres
from projections.runner import ProjectionRunner
from running_service import Service
from service.app import create_app
from test_api_fixtures import key_dir, make_settings  # noqa: F401  (fixture)
from world import World, cause

WALLET_ROUTE = "/v1/wallets/{resident_id}"


def value(text: str, sample_name: str, **labels: str) -> float:
    """One sample of a scrape (0 when absent, as Prometheus' increase() treats it)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == sample_name and all(
                    sample.labels.get(key) == wanted for key, wanted in labels.items()):
                return sample.value
    return 0.0


def ledger_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The ledger's own samples of a scrape (not the Python runtime's)."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name.startswith("ledger_")}


def has_sample(text: str, sample_name: str) -> bool:
    return any(sample.name == sample_name
               for family in text_string_to_metric_families(text) for sample in family.samples)


def bearer(settings: ApiSettings, role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(role, uuid.uuid4(), settings=settings)}"}


@contextmanager
def serving(settings: ApiSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def scrape(client: TestClient) -> str:
    response = client.get(metrics.METRICS_PATH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_requests_are_counted_by_route_template_and_status(
        database_url: str, schema: str, key_dir: Path) -> None:
    """Two wallets that do not exist count twice under the route's template, never under
    their ids; /metrics needs no token and is not an operation of the OpenAPI document."""
    settings = make_settings(database_url, schema, key_dir)
    auditor = bearer(settings, Role.AUDITOR)
    missing = [uuid.uuid4(), uuid.uuid4()]
    with serving(settings) as client:
        before = scrape(client)
        wallet_codes = set()
        for resident_id in missing:
            response = client.get(f"/v1/wallets/{resident_id}", headers=auditor)
            assert response.status_code == 404
            wallet_codes.add(response.json()["code"])
        assert client.get("/v1/health").status_code == 200
        assert client.get("/v1/no-such-thing/42").status_code == 404
        assert client.request("BREW", "/v1/health").status_code == 405
        after = scrape(client)
        document = client.get("/openapi.json").json()

    def increase(sample_name: str, **labels: str) -> float:
        return value(after, sample_name, **labels) - value(before, sample_name, **labels)

    requests = "ledger_http_requests_total"
    assert increase(requests, method="GET", route=WALLET_ROUTE, status="404") == 2
    assert increase(requests, method="GET", route="/v1/health", status="200") == 1
    assert increase(requests, method="GET", route="unmatched", status="404") == 1
    assert increase(requests, method="other", route="/v1/health", status="405") == 1
    assert increase("ledger_http_request_duration_seconds_count",
                    method="GET", route=WALLET_ROUTE) == 2
    [wallet_code] = wallet_codes
    assert increase("ledger_http_problems_total", code=wallet_code, status="404") == 2
    assert increase("ledger_http_problems_total", code="not_found", status="404") == 1
    assert increase("ledger_http_problems_total", code="method_not_allowed",
                    status="405") == 1
    for resident_id in missing:
        assert str(resident_id) not in after
    assert "/v1/no-such-thing" not in after and "BREW" not in after
    assert metrics.METRICS_PATH not in document["paths"]


def test_metrics_turned_off_leave_no_endpoint(database_url: str, schema: str,
                                              key_dir: Path) -> None:
    """LEDGER_METRICS_ENABLED=false: /metrics is not found, like any unknown path, and the
    requests served are not counted."""
    before = ledger_samples(generate_latest(REGISTRY).decode())
    with serving(make_settings(database_url, schema, key_dir, metrics_enabled=False)) as client:
        assert client.get("/v1/health").status_code == 200
        response = client.get(metrics.METRICS_PATH)
    assert (response.status_code, response.json()["code"]) == (404, "not_found")
    assert ledger_samples(generate_latest(REGISTRY).decode()) == before


def test_refusals_are_counted_by_their_code(database_url: str, schema: str,
                                            key_dir: Path) -> None:
    """A write over the caller's rate limit counts as rate_limited (429) and a body over
    the size limit as body_too_large (413), each under its own code."""
    settings = make_settings(database_url, schema, key_dir, rate_limit_writes_per_minute=1)
    operator = bearer(settings, Role.OPERATOR)
    with serving(settings) as client:
        before = scrape(client)
        for number in range(2):  # the limit is one write a minute
            response = client.post("/v1/complexes", headers={
                **operator, "Idempotency-Key": f"limit-{number}"},
                json={"code": f"HS-{number}", "name": "A", "region": "Hwaseong"})
        assert response.status_code == 429
        huge = client.post("/v1/complexes", headers={**operator, "Idempotency-Key": "huge"},
                           content=b"x" * (settings.body_bytes_max + 1))
        assert huge.status_code == 413
        after = scrape(client)

    def increase(sample_name: str, **labels: str) -> float:
        return value(after, sample_name, **labels) - value(before, sample_name, **labels)

    assert increase("ledger_http_problems_total", code="rate_limited", status="429") == 1
    assert increase("ledger_http_problems_total", code="body_too_large", status="413") == 1
    assert increase("ledger_http_requests_total", method="POST", route="/v1/complexes",
                    status="201") == 1
    assert increase("ledger_http_requests_total", method="POST", route="/v1/complexes",
                    status="429") == 1
    # Refused before routing: no route template.
    assert increase("ledger_http_requests_total", method="POST", route="unmatched",
                    status="413") == 1


@pytest.mark.slow
def test_503s_are_counted_by_cause_while_the_database_is_away(key_dir: Path) -> None:
    """With PostgreSQL stopped, a read answers 503 database_unavailable and readiness 503
    not_ready; /metrics still answers, counts each by its code, and leaves out the log
    positions it cannot read instead of reporting stale ones."""
    with PrivatePostgres() as cluster:
        # No followers: they are not what is measured here.
        settings = make_settings(cluster.url, "public", key_dir, run_projections=False)
        with serving(settings) as client:
            auditor = bearer(settings, Role.AUDITOR)
            before = scrape(client)
            assert has_sample(before, "ledger_projection_lag_positions")
            cluster.stop()
            try:
                read = client.get("/v1/accrual-policy", headers=auditor)
                ready = client.get("/v1/ready")
                began = time.monotonic()
                after = scrape(client)
                scrape_seconds = time.monotonic() - began
            finally:
                cluster.start()
    assert (read.status_code, read.json()["code"]) == (503, "database_unavailable")
    assert (ready.status_code, ready.json()["code"]) == (503, "not_ready")

    def increase(sample_name: str, **labels: str) -> float:
        return value(after, sample_name, **labels) - value(before, sample_name, **labels)

    assert increase("ledger_http_problems_total", code="database_unavailable",
                    status="503") == 1
    assert increase("ledger_http_problems_total", code="not_ready", status="503") == 1
    assert increase("ledger_http_requests_total", method="GET", route="/v1/accrual-policy",
                    status="503") == 1
    assert not has_sample(after, "ledger_projection_lag_positions")
    assert not has_sample(after, "ledger_log_head_position")
    assert scrape_seconds < 5


def test_projection_lag_is_the_distance_to_the_head_of_the_log(
        database_url: str, schema: str, key_dir: Path, world: World) -> None:
    """With the projections run elsewhere (here: not yet), events written count as lag
    of every projection, read from the database; once they are folded the lag is zero."""
    settings = make_settings(database_url, schema, key_dir, run_projections=False)
    with serving(settings) as client:
        head_before = int(value(scrape(client), "ledger_log_head_position"))
        world.complex("LAG-1")
        world.complex("LAG-2")
        lagging = scrape(client)
        with ProjectionRunner(database_url, schema, start=False) as runner:
            runner.catch_up()
        caught_up = scrape(client)
    head = int(value(lagging, "ledger_log_head_position"))
    assert head > head_before
    for projection in ("wallet_balances", "complex_funds", "rent_payments", "market_views"):
        position = value(lagging, "ledger_projection_position", projection=projection)
        assert position <= head_before
        assert value(lagging, "ledger_projection_lag_positions",
                     projection=projection) == head - position
        assert value(caught_up, "ledger_projection_lag_positions", projection=projection) == 0
        assert value(caught_up, "ledger_projection_position", projection=projection) == head


def test_engine_batch_sizes_count_commands_and_the_queue_depth_shows_waiting_ones(
        world: World) -> None:
    """Six commands queued while a batch holds the engine: the queue depth shows six,
    then one batch takes all of them (the histogram's sum counts commands, its count
    batches), and the queue is empty again."""
    engine = world.ledger.engine
    engine.observer = metrics.ENGINE_METRICS
    before = generate_latest(REGISTRY).decode()
    batches_before = engine.batches
    errors: list[BaseException] = []

    def register(number: int) -> None:
        try:
            world.ledger.execute(c.RegisterComplex(f"Q-{number}", "Q", "Hwaseong"), cause())
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    with engine.write_lock:  # as a batch in flight does
        threads = [threading.Thread(target=register, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 2  # within the commands' own wait of 3 s
        while (REGISTRY.get_sample_value("ledger_engine_queue_depth") or 0) < 6 \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        waiting = generate_latest(REGISTRY).decode()
    for thread in threads:
        thread.join(timeout=10)
    after = generate_latest(REGISTRY).decode()

    assert errors == []
    assert value(waiting, "ledger_engine_queue_depth") == 6
    assert value(after, "ledger_engine_queue_depth") == 0
    assert engine.batches - batches_before == 1
    assert (value(after, "ledger_engine_batch_commands_sum")
            - value(before, "ledger_engine_batch_commands_sum")) == 6
    assert (value(after, "ledger_engine_batch_commands_count")
            - value(before, "ledger_engine_batch_commands_count")) == 1
    assert (value(after, "ledger_engine_batch_commands_bucket", le="4.0")
            - value(before, "ledger_engine_batch_commands_bucket", le="4.0")) == 0
    assert (value(after, "ledger_engine_batch_commands_bucket", le="8.0")
            - value(before, "ledger_engine_batch_commands_bucket", le="8.0")) == 1
    assert (value(after, "ledger_engine_batch_duration_seconds_count")
            - value(before, "ledger_engine_batch_duration_seconds_count")) == 1


# Two worker processes ----------------------------------------------------------------------

HEALTH_REQUESTS_MAX = 400
SCRAPES = 8


def worker_health_counts(directory: Path) -> dict[int, float]:
    """GET /v1/health requests counted in each worker process's own file."""
    counts: dict[int, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.removeprefix("counter_"))
        for family in MultiProcessCollector.merge([str(path)]):
            for sample in family.samples:
                if (sample.name == "ledger_http_requests_total"
                        and sample.labels.get("route") == "/v1/health"):
                    counts[pid] = counts.get(pid, 0) + sample.value
    return counts


@pytest.mark.slow
def test_two_workers_every_scrape_counts_the_requests_of_both(
        database_url: str, schema: str, tmp_path: Path) -> None:
    """`ledger serve --workers 2`: requests are sent until both workers have served some;
    every scrape, whichever worker answers it, counts all of them. A worker killed -9
    leaves its counts in the totals and its live gauge out of the sums; the run's metrics
    directory is gone when the service stops."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    service = Service(key_dir=tmp_path / "keys", database_url=database_url, schema=schema,
                      workers=2, ledger_serve=True, environment={"TMPDIR": str(temporary)})
    service.start()
    try:
        [directory] = temporary.glob("ledger-metrics-*")
        sent = 0
        lock = threading.Lock()

        def send(count: int) -> None:
            nonlocal sent
            for _ in range(count):
                # A new connection each time: the kernel hands it to either worker.
                assert httpx.get(f"{service.base}/v1/health", timeout=10).status_code == 200
                with lock:
                    sent += 1

        while sent < HEALTH_REQUESTS_MAX:
            senders = [threading.Thread(target=send, args=(5,)) for _ in range(4)]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join(timeout=30)
            if len([n for n in worker_health_counts(directory).values() if n > 0]) == 2:
                break
        # A worker counts a request once its answer is sent: the last may land just after
        # the client has it (5 s at most).
        deadline = time.monotonic() + 5
        by_worker = worker_health_counts(directory)
        while sum(by_worker.values()) < sent and time.monotonic() < deadline:
            time.sleep(0.05)
            by_worker = worker_health_counts(directory)
        assert len([n for n in by_worker.values() if n > 0]) == 2, by_worker
        assert sum(by_worker.values()) == sent

        def health_total() -> float:
            text = httpx.get(f"{service.base}/metrics", timeout=10).text
            return value(text, "ledger_http_requests_total", method="GET",
                         route="/v1/health", status="200")

        assert [health_total() for _ in range(SCRAPES)] == [sent] * SCRAPES

        victim = min(by_worker)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(directory.glob(f"gauge_live*_{victim}.db")) and time.monotonic() < deadline:
            try:
                totals = {health_total() for _ in range(SCRAPES)}
            except httpx.TransportError:
                continue  # the supervisor is replacing the worker
            assert totals == {sent}, totals
            time.sleep(0.2)
        assert not any(directory.glob(f"gauge_live*_{victim}.db")), "the dead worker forgotten"
        assert (directory / f"counter_{victim}.db").exists(), "its counts kept"
    finally:
        service.stop()
    assert not directory.exists(), "the run's metrics directory is removed"


@pytest.mark.slow
def test_one_worker_removes_its_metrics_directory_on_sigterm(
        database_url: str, schema: str, tmp_path: Path) -> None:
    """`ledger serve` with one worker (uvicorn ends it by the SIGTERM it caught) shuts
    down cleanly and leaves no metrics directory behind."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    service = Service(key_dir=tmp_path / "keys", database_url=database_url, schema=schema,
                      ledger_serve=True, environment={"TMPDIR": str(temporary)})
    service.start()
    try:
        [directory] = temporary.glob("ledger-metrics-*")
        assert httpx.get(f"{service.base}/metrics", timeout=10).status_code == 200
    finally:
        assert service.stop()
    assert service.process is not None and service.process.returncode == -signal.SIGTERM
    assert not directory.exists()


def test_a_dead_process_live_gauges_are_forgotten_and_a_live_one_kept(tmp_path: Path) -> None:
    """Only the live gauges of processes that no longer exist are removed."""
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, check=True, text=True)
    dead_pid = int(ended.stdout)
    for pid in (dead_pid, os.getpid()):
        (tmp_path / f"gauge_livesum_{pid}.db").touch()
        (tmp_path / f"counter_{pid}.db").touch()
    assert metrics.forget_dead_processes(tmp_path) == [dead_pid]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([
        f"counter_{dead_pid}.db", f"counter_{os.getpid()}.db",
        f"gauge_livesum_{os.getpid()}.db"])
