"""The Trainer's experiment tracker (`train.report_to`): offline, its files kept with the checkpoint.

transformers' tracker callbacks read their settings from environment variables only. While
training, `tracker_env` points them into WORK_DIR/logs/, each variable only when the user left it
unset (a user's MLFLOW_TRACKING_URI or WANDB_MODE wins):

    tensorboard  TENSORBOARD_LOGGING_DIR = WORK_DIR/logs/tensorboard
    mlflow       MLFLOW_TRACKING_URI = file:WORK_DIR/logs/mlruns, a local file store
                 (MLFLOW_ALLOW_FILE_STORE=true: MLflow 3 reads file stores only when asked)
    wandb        WANDB_MODE = offline, WANDB_DIR = WORK_DIR/logs

The save step copies WORK_DIR/logs/ to OUTPUT_DIR/logs/: the output folder appears in one rename
at the end, so nothing may write into it during training. A resumed run appends to the same logs.
An MLflow file store keeps absolute artifact paths, which then point at the removed work dir;
metrics and params read the same from the copy (`MlflowClient("file:OUTPUT_DIR/logs/mlruns")`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from harness.extras import require

LOGS = "logs"  # folder name under WORK_DIR while training, under OUTPUT_DIR after


def check_tracker(report_to: str) -> None:
    """HarnessError naming what to install when the tracker's package is missing (before any work)."""
    if report_to != "none":
        require(report_to, f"train.report_to={report_to}")


def tracker_env(report_to: str, logs_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment defaults that keep `report_to` offline and inside `logs_dir` (pure).

    >>> tracker_env("wandb", Path("/w/logs"), {})
    {'WANDB_MODE': 'offline', 'WANDB_DIR': '/w/logs'}
    >>> tracker_env("mlflow", Path("/w/logs"), {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    {}
    """
    if report_to == "tensorboard":
        return {"TENSORBOARD_LOGGING_DIR": str(logs_dir / "tensorboard")}
    if report_to == "mlflow":
        if environ.get("MLFLOW_TRACKING_URI"):
            return {}  # the user's tracking server or store
        return {"MLFLOW_TRACKING_URI": (logs_dir / "mlruns").resolve().as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}
    if report_to == "wandb":
        return {"WANDB_MODE": "offline", "WANDB_DIR": str(logs_dir)}
    return {}
