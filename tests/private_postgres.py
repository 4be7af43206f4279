"""A PostgreSQL cluster of a test's own, to stop and start: the system's binaries, run as
the `postgres` user (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType


def _bin_dir() -> Path:
    """The newest PostgreSQL of the system's (Debian keeps each major version apart)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                   key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0)
    assert found, ("no PostgreSQL binaries in /usr/lib/postgresql/*/bin "
                   "(./ledgerctl test installs them)")
    return found[-1].parent


BIN_DIR = _bin_dir()
START_SECONDS_MAX = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivatePostgres:
    """initdb in a temporary directory; `start`, `crash` (immediate stop, no checkpoint)
    and `stop`; the directory goes when the context ends."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="ledger-private-pg-"))
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *arguments: str) -> None:
        command = [str(BIN_DIR / arguments[0]), *arguments[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=START_SECONDS_MAX * 2)

    def __enter__(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
        self._as_postgres("initdb", "-D", str(self.directory / "data"), "-A", "trust",
                          "-U", "postgres")
        self.start()
        return self

    def start(self) -> None:
        self._as_postgres(
            "pg_ctl", "-D", str(self.directory / "data"), "-l", str(self.directory / "log"),
            "-o", f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1",
            "-w", "-t", str(START_SECONDS_MAX), "start")

    def crash(self) -> None:
        """Stop at once, as a crash does: connections drop, nothing is checkpointed."""
        self._as_postgres("pg_ctl", "-D", str(self.directory / "data"), "-m", "immediate",
                          "-w", "stop")

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.directory / "data"), "-m", "fast",
                          "-w", "stop")

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
