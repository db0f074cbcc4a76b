"""Exceptions the harness raises for problems a user can fix.

The CLI prints a `HarnessError` as one line (no traceback unless --debug) and
exits 2. Everything else is a bug and keeps its traceback.
"""


class HarnessError(Exception):
    """A problem with the user's input or environment; the message says what and where."""


class ModelRefError(HarnessError):
    """A model reference that cannot be parsed, found or loaded."""


class AdapterMismatchError(ModelRefError):
    """A PEFT adapter that does not fit the base it is applied to."""


class BackendError(HarnessError):
    """A backend failed to answer (dead server, unsupported method, bad reply)."""


class UnsupportedMethodError(BackendError):
    """The backend cannot do this method; the message names the backend and the method."""

    def __init__(self, backend: str, method: str, why: str = ""):
        detail = f": {why}" if why else ""
        super().__init__(f"backend '{backend}' cannot do {method}{detail}")


class ContextTooLongError(HarnessError):
    """A request longer than the model's context under the 'error' truncation policy."""


class SuiteError(HarnessError):
    """A suite or golden-set file that fails validation; the message names file and key path or line."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during scoring, carrying what was scored so far.

    `runs` are unsaved Runs (status partial or failed) that the CLI stores
    before it exits; `note` is what the CLI adds to its one-line message
    (e.g. which runs it wrote). A KeyboardInterrupt, so code that does not
    know this class still stops as it would on Ctrl-C.
    """

    def __init__(self, runs: list, note: str = ""):  # list[harness.store.Run]; errors imports nothing
        super().__init__(note)
        self.runs = list(runs)
        self.note = note
