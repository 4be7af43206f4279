"""The service `ledger serve` runs: the API, plus the work that runs beside it.

The API (`api.app`) serves HTTP and, unless told not to, keeps the projections it
reads up to date. The service adds what is not HTTP: the auditors' hash chain
follows the log with the projections, and the expiry sweeper releases rent holds
whose deadline has passed. Each uvicorn worker process builds its own; two of each
are safe (see their docstrings).
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from fastapi import FastAPI
from psycopg_pool import ConnectionPool

from api.app import BackgroundWork, StartWork
from api.app import create_app as create_api
from api.settings import ApiSettings, get_settings
from audit.follower import start_audit_follower
from ledger.application import Ledger
from ledger.database import database_url
from projections.runner import ProjectionRunner
from service.sweeper import ExpirySweeper


class _Thread:
    """A follower thread and the event that stops it."""

    def __init__(self, thread: threading.Thread, stopping: threading.Event) -> None:
        self.thread = thread
        self.stopping = stopping

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)


def start_audit_chain(_ledger: Ledger, _pool: ConnectionPool[psycopg.Connection[Any]],
                      settings: ApiSettings) -> BackgroundWork | None:
    """The auditors' hash chain follows the log wherever the projections do."""
    if not settings.run_projections:
        return None
    stopping = threading.Event()
    url = settings.database_url or database_url()
    return _Thread(start_audit_follower(url, settings.schema_name, stopping), stopping)


def start_sweeper(ledger: Ledger, pool: ConnectionPool[psycopg.Connection[Any]],
                  settings: ApiSettings) -> BackgroundWork | None:
    if settings.expiry_sweep_seconds <= 0:
        return None
    sweeper = ExpirySweeper(ledger, pool, settings.expiry_sweep_seconds)
    sweeper.start()
    return sweeper


BACKGROUND: tuple[StartWork, ...] = (start_audit_chain, start_sweeper)


def create_app(settings: ApiSettings | None = None, *, ledger: Ledger | None = None,
               runner: ProjectionRunner | None = None) -> FastAPI:
    """The API with its background work; the factory `ledger serve` hands to uvicorn."""
    return create_api(settings or get_settings(), ledger=ledger, runner=runner,
                      background=BACKGROUND)
