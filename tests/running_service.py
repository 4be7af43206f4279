"""The service as a real process, the way operators run it: uvicorn's own command line,
or `ledger serve` (which also prepares the metrics directory its workers share).
(This module holds helpers only; pytest finds no tests in it.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from private_postgres import free_port

REPOSITORY = Path(__file__).resolve().parents[1]
START_SECONDS_MAX = 60


@dataclass
class Service:
    key_dir: Path
    database_url: str
    log: Path = Path("/dev/null")
    process: subprocess.Popen[bytes] | None = None
    port: int = field(default_factory=free_port)
    workers: int = 1
    schema: str = "public"
    ledger_serve: bool = False
    """Start it with `ledger serve` instead of uvicorn's command line."""
    environment: dict[str, str] = field(default_factory=dict)
    """Added to the process's environment."""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.ledger_serve:
            return [sys.executable, "-m", "cli.main", "--database-url", self.database_url,
                    "--schema", self.schema, "serve", "--host", "127.0.0.1",
                    "--port", str(self.port), "--workers", str(self.workers)]
        return [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", str(self.workers), "--log-level", "info"]

    def start(self) -> None:
        environment = {
            **os.environ, "LEDGER_DATABASE_URL": self.database_url,
            "LEDGER_SCHEMA": self.schema, "LEDGER_DEV_KEY_DIR": str(self.key_dir),
            "LEDGER_EXPIRY_SWEEP_SECONDS": "0", "PYTHONPATH": str(REPOSITORY / "src"),
            **self.environment}
        self.log = self.key_dir.parent / f"service-{self.port}-{time.monotonic_ns()}.log"
        self.process = subprocess.Popen(
            self.command(), env=environment, stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"))
        deadline = time.monotonic() + START_SECONDS_MAX
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/v1/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, "the service exited at start"
            time.sleep(0.2)
        pytest.fail(f"the service did not become ready within {START_SECONDS_MAX} s")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> bool:
        """SIGTERM; whether the service shut down cleanly by itself within 20 s (uvicorn
        exits by the signal it caught, after its shutdown, so the log says whether)."""
        if self.process is None or self.process.poll() is not None:
            return False
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            return False
        return b"Application shutdown complete" in self.log.read_bytes()
