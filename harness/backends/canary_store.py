"""Adapter canary outcomes, recorded per adapter content: runs/canaries.sqlite.

One row per (base hash, adapter hash, backend, canary version): the latest
outcome ("passed", "refused: not applied", "refused: damaged"), the figures the
probes measured, the thresholds applied, the reason of a refusal, the reference
that was checked and when. It sits beside the run index because it is a
record of what was verified, like the runs: deleting the item cache leaves it
true, and a changed adapter (a new content hash) has no row until its own
canary runs. harness.backends.canary decides what to do with it.
"""
from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from harness.errors import HarnessError

FILENAME = "canaries.sqlite"


class CanaryKey(NamedTuple):
    base_hash: str
    adapter_hash: str
    backend: str  # the adapter's backend name: a pass on hf says nothing about a vLLM server
    version: int  # harness.backends.canary.CANARY_VERSION


def _connect(runs_dir: Path) -> sqlite3.Connection:
    path = runs_dir / FILENAME
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path), timeout=30)
        db.execute("""CREATE TABLE IF NOT EXISTS canaries (
            base_hash TEXT, adapter_hash TEXT, backend TEXT, version INTEGER, outcome TEXT, figures TEXT,
            thresholds TEXT, reason TEXT, ref TEXT, checked_utc TEXT,
            PRIMARY KEY (base_hash, adapter_hash, backend, version))""")
    except (OSError, sqlite3.Error) as e:
        raise HarnessError(f"{path}: cannot open the adapter canary records: {e}") from e
    return db


def _row(r: sqlite3.Row) -> dict[str, Any]:
    return {"outcome": r["outcome"], "figures": json.loads(r["figures"] or "{}"),
            "thresholds": json.loads(r["thresholds"] or "{}"), "reason": r["reason"], "version": r["version"],
            "backend": r["backend"], "checked_utc": r["checked_utc"]}


def find_passed(runs_dir: Path, key: CanaryKey) -> dict[str, Any] | None:
    """The passing record for `key`, or None (no row, or the latest outcome was a refusal)."""
    rows = _select(runs_dir, "SELECT * FROM canaries WHERE base_hash=? AND adapter_hash=? AND backend=? AND version=?",
                   tuple(key))
    return _row(rows[0]) if rows and rows[0]["outcome"] == "passed" else None


def _select(runs_dir: Path, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
    """Rows of a query on the records; none when there are no records yet."""
    if not (runs_dir / FILENAME).is_file():
        return []
    db = _connect(runs_dir)
    try:
        db.row_factory = sqlite3.Row
        return db.execute(sql, params).fetchall()
    except sqlite3.Error as e:
        raise HarnessError(f"{runs_dir / FILENAME}: cannot read the adapter canary records: {e}") from e
    finally:
        db.close()


def record(runs_dir: Path, key: CanaryKey, *, outcome: str, figures: dict[str, float], thresholds: dict[str, float],
           reason: str | None, ref: str) -> dict[str, Any]:
    """Store an outcome for `key` (replacing the previous one); returns it as `find_passed` would."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    db = _connect(runs_dir)
    try:
        with db:
            db.execute("INSERT OR REPLACE INTO canaries VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (*key, outcome, json.dumps(figures), json.dumps(thresholds), reason, ref, now))
    except sqlite3.Error as e:
        raise HarnessError(f"{runs_dir / FILENAME}: cannot record the adapter canary of {ref}: {e}") from e
    finally:
        db.close()
    return {"outcome": outcome, "figures": figures, "thresholds": thresholds, "reason": reason,
            "version": key.version, "backend": key.backend, "checked_utc": now}


def list_records(runs_dir: Path) -> list[dict[str, Any]]:
    """Every record, newest first, with its key and reference (for inspection and tests)."""
    rows = _select(runs_dir, "SELECT * FROM canaries ORDER BY checked_utc DESC")
    return [{**_row(r), "base_hash": r["base_hash"], "adapter_hash": r["adapter_hash"], "ref": r["ref"]} for r in rows]
