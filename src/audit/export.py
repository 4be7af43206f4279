"""Copy signed checkpoints out of the database, where auditors keep them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

import psycopg

from audit.chain import CHECKPOINTS_TABLE, read_checkpoints, table_exists
from audit.signing import (
    KEY_DIR_DEFAULT,
    PUBLIC_KEY_FILE,
    SigningKey,
    checkpoint_file_name,
    load_signing_key,
    public_key_pem,
)
from ledger.database import connect


def export_checkpoints(
    url: str,
    schema: str,
    out_dir: str | os.PathLike[str],
    *,
    signing_key: SigningKey | None = None,
    key_dir: str | os.PathLike[str] = KEY_DIR_DEFAULT,
) -> list[Path]:
    """Write each checkpoint not yet exported as one JSON file, plus the public key PEM.

    Files already in `out_dir` are never overwritten: an exported checkpoint is
    the auditor's independent copy, and a later export from a tampered database
    must not replace it. Returns the checkpoint files written.
    """
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    key = signing_key if signing_key is not None else load_signing_key(key_dir, create=False)
    if key is not None and not (directory / PUBLIC_KEY_FILE).exists():
        (directory / PUBLIC_KEY_FILE).write_bytes(public_key_pem(key.public_key))
    with cast("psycopg.Connection[Any]", connect(url, schema)) as conn:
        checkpoints = (
            read_checkpoints(conn, schema) if table_exists(conn, schema, CHECKPOINTS_TABLE) else []
        )
        conn.rollback()
    written = []
    for checkpoint in checkpoints:
        path = directory / checkpoint_file_name(checkpoint.position)
        if path.exists():
            continue
        path.write_text(json.dumps(checkpoint.to_document(), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
