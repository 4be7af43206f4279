"""The interactive docs (/docs, /redoc) work on a machine without internet.

The service runs as a real uvicorn process and a real browser (Debian's headless
Chromium) loads its pages with every host but loopback unresolvable, so the pages are
offline whatever network the machine has. Chromium's network log names the initiator of
every request, so the test sees each request the page made (and not the browser's own
background traffic). The rendered DOM must show Swagger UI's (and Redoc's) operations:
their JavaScript ran.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from ledger.database import ConnectionSettings
from private_postgres import free_port

REPOSITORY = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
"""Debian's `chromium` package; `./ledgerctl test` installs it when it is missing."""
SERVICE_START_SECONDS_MAX = 60.0
BROWSER_SECONDS_MAX = 120.0
"""Wall-clock bound on one page load; the page's own time is bounded by VIRTUAL_TIME_MS."""
VIRTUAL_TIME_MS = 15_000
"""Chromium's virtual time for a page: scripts, the OpenAPI fetch and rendering."""
OPERATION_PATH = "/v1/trades"
"""An operation every rendering of the document shows."""

pytestmark = pytest.mark.timeout(600)


@dataclass
class Service:
    base: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def service(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`service.app` under uvicorn on a free loopback port, on a schema of its own."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conninfo = ConnectionSettings.from_url(database_url).conninfo()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    directory = tmp_path_factory.mktemp("docs-service")
    port = free_port()
    log = directory / "service.log"
    environment = {
        **os.environ, "LEDGER_DATABASE_URL": database_url, "LEDGER_SCHEMA": schema,
        "LEDGER_DEV_KEY_DIR": str(directory / "keys"), "LEDGER_EXPIRY_SWEEP_SECONDS": "0",
        "LEDGER_RUN_PROJECTIONS": "false", "PYTHONPATH": str(REPOSITORY / "src")}
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"],
            env=environment, stdout=subprocess.DEVNULL, stderr=log_file)
    running = Service(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + SERVICE_START_SECONDS_MAX
        while True:
            try:
                if httpx.get(f"{running.base}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, f"the service exited at start:\n{log.read_text()}"
            assert time.monotonic() < deadline, "the service did not start within 60 s"
            time.sleep(0.2)
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@dataclass
class Page:
    dom: str
    """The DOM after the page's scripts ran."""
    requests: list[str]
    """Every URL the page asked for: itself, then what it loaded (the network log's
    requests whose initiator is the page's origin)."""


def load(url: str, directory: Path) -> Page:
    """`url` in headless Chromium for VIRTUAL_TIME_MS, offline. Fails (never skips) when
    Chromium is not installed."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package "
                    "(`apt-get install -y chromium`; `./ledgerctl test` does it as root)")
    net_log = directory / "net-log.json"
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
        f"--user-data-dir={directory / 'profile'}", "--no-first-run",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--log-net-log={net_log}",
        f"--virtual-time-budget={VIRTUAL_TIME_MS}", "--dump-dom", url]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=BROWSER_SECONDS_MAX)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=10)
        pytest.fail(f"Chromium did not finish {url} within {BROWSER_SECONDS_MAX:.0f} s")
    assert process.returncode == 0, f"Chromium failed on {url}:\n{err.decode(errors='replace')}"
    return Page(out.decode(), requests_of(url, json.loads(net_log.read_text())))


def requests_of(url: str, net_log: dict[str, Any]) -> list[str]:
    """The URLs the page at `url` asked for, from Chromium's network log."""
    origin = str(httpx.URL(url).copy_with(path="/", query=None)).rstrip("/")
    start_job = net_log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    asked: list[str] = []
    for event in net_log["events"]:
        parameters = event.get("params", {})
        if event["type"] == start_job and "url" in parameters and (
                parameters["url"] == url or parameters.get("initiator") == origin):
            asked.append(parameters["url"])
    assert url in asked, f"the network log does not show {url} itself: is it Chromium's?"
    return asked


def hosts_named(html: str) -> set[str]:
    """Every host a page names: absolute URLs anywhere, scheme-relative ones in attributes."""
    absolute = re.findall(r"[A-Za-z][A-Za-z0-9+.-]*://([^/\s\"'<>)]+)", html)
    scheme_relative = re.findall(r"""(?:src|href|action)\s*=\s*["']//([^/\s"'<>]+)""", html)
    return set(absolute) | set(scheme_relative)


def outside(page: Page, service: Service) -> list[str]:
    return [url for url in page.requests if not url.startswith(f"{service.base}/")]


def test_docs_render_swagger_ui_operations_with_nothing_from_outside(
        service: Service, tmp_path: Path) -> None:
    """Swagger UI at /docs runs offline: the rendered page lists the API's operations, and
    everything the page asked for (scripts, stylesheet, icon, the OpenAPI document) came
    from the service."""
    page = load(f"{service.base}/docs", tmp_path)
    assert outside(page, service) == [], "/docs asked outside hosts"
    assert f"{service.base}/openapi.json" in page.requests
    assert 'class="swagger-ui' in page.dom, "Swagger UI did not render"
    assert re.search(r'class="opblock opblock-post[^"]*"', page.dom), "no operation rendered"
    assert f'class="opblock-summary-path" data-path="{OPERATION_PATH}"' in page.dom, (
        f"{OPERATION_PATH} is not rendered as an operation")
    assert "Points ledger for public rental housing" in page.dom  # the document's title


def test_redoc_renders_operations_with_nothing_from_outside(
        service: Service, tmp_path: Path) -> None:
    """Redoc at /redoc runs offline: the rendered page shows the API's operations, and
    everything the page asked for came from the service."""
    page = load(f"{service.base}/redoc", tmp_path)
    assert outside(page, service) == [], "/redoc asked outside hosts"
    assert f"{service.base}/openapi.json" in page.requests
    assert "redoc-wrap" in page.dom, "Redoc did not render"
    assert re.search(  # an operation's verb and path, as Redoc's side panel shows them
        rf'http-verb post">post</span><span[^>]*>{re.escape(OPERATION_PATH)}</span>',
        page.dom), f"{OPERATION_PATH} is not rendered as an operation"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_name_no_outside_host_and_their_assets_are_served(
        service: Service, page: str) -> None:
    """The HTML of each docs page names no host but the server, every script, stylesheet
    and icon it names is served by the service itself, and the page tells the browser to
    fetch from nowhere else (what its scripts might still name)."""
    response = httpx.get(f"{service.base}{page}", timeout=10)
    assert response.status_code == 200
    policy = response.headers.get("content-security-policy", "")
    assert "default-src 'none'" in policy, policy
    assert all(source in ("'self'", "'unsafe-inline'", "data:", "blob:", "'none'")
               for directive in policy.split(";") for source in directive.split()[1:]), policy
    html = response.text
    server = service.base.removeprefix("http://")
    assert hosts_named(html) <= {server}, f"{page} names outside hosts: {hosts_named(html)}"
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert any(asset.endswith(".js") for asset in assets), assets
    for asset in assets:
        answer = httpx.get(httpx.URL(service.base + page).join(asset), timeout=10)
        assert answer.status_code == 200, f"{page}: {asset} answered {answer.status_code}"
        assert len(answer.content) > 0, f"{page}: {asset} is empty"
