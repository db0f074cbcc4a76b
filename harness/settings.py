"""Where the harness keeps things, passed explicitly instead of read at import.

Only `Settings.from_env` reads the environment; the CLI calls it once and hands
the result down.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path  # hash memo and anything else cached per user
    runs_dir: Path  # runs/<run-id>/ and runs/index.sqlite
    data_dir: Path  # offline datasets (MMLU, ARC, HellaSwag, Alpaca, ...)
    models_dir: Path  # prepared alias checkpoints
    cache_path: Path  # the per-item result cache (SQLite)

    @staticmethod
    def from_env(env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        home = Path(env.get("HARNESS_HOME") or Path.home() / ".cache" / "llm-harness")
        runs = Path(env.get("HARNESS_RUNS_DIR") or "runs")
        data = Path(env.get("HARNESS_DATA_DIR") or "../shared/datasets")
        s = Settings.at(home.expanduser(), runs_dir=runs.expanduser(), data_dir=data.expanduser())
        if env.get("HARNESS_CACHE"):  # the item cache elsewhere, e.g. a CI cache directory
            s = replace(s, cache_path=Path(env["HARNESS_CACHE"]).expanduser())
        return s

    @staticmethod
    def at(home: Path, *, runs_dir: Path, data_dir: Path) -> "Settings":
        """Settings with the usual layout under `home`."""
        return Settings(home=home, runs_dir=runs_dir, data_dir=data_dir,
                        models_dir=home / "models", cache_path=home / "item-cache.sqlite")
