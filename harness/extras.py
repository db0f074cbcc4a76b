"""Optional packages (the `llm-harness[...]` extras) and the environment their libraries read.

Experiment trackers are optional: `require` turns a missing one into a one-line HarnessError
that names the extra to install, before any work starts. Trackers and the Trainer's callbacks
take their settings from environment variables only (MLFLOW_TRACKING_URI, WANDB_MODE, ...);
`env_defaults` sets the ones the user left unset for the length of a block and restores them,
so nothing leaks into the rest of the process.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import Iterator, Mapping

from harness.errors import HarnessError

# package to import -> what installs it
INSTALL = {"tensorboard": "pip install 'llm-harness[tensorboard]'",
           "mlflow": "pip install 'llm-harness[mlflow]'",
           "wandb": "pip install wandb"}


def is_installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it (trackers are slow to import)."""
    return importlib.util.find_spec(module) is not None


def require(module: str, what: str) -> None:
    """Raise HarnessError when `module` is missing: "`what` needs the `module` package: `install`".

    >>> require("json", "a test")
    """
    if not is_installed(module):
        install = INSTALL.get(module, f"pip install {module}")
        raise HarnessError(f"{what} needs the {module} package: {install}")


@contextlib.contextmanager
def env_defaults(values: Mapping[str, str]) -> Iterator[None]:
    """Set each variable of `values` that is not already set, for the block; unset them again after.
    A variable the user set keeps the user's value."""
    added = [k for k in values if k not in os.environ]
    for k in added:
        os.environ[k] = values[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)
