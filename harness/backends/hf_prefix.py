"""A fast loglikelihood scorer for multiple-choice tasks: shared prefixes are computed once.

lm-eval's few-shot prompts repeat the same description and examples before
every question of a subject, and every choice of a question repeats the
question. `SharedPrefixScorer` wraps an HFBackend and, for a batch of
loglikelihood requests:

1. tokenizes each request exactly as the HF backend (and lm-eval's HFLM) does,
   and turns it into an input row `(context + continuation)[:-1]`; requests
   with identical rows (one-token answers " A", " B", ... after the same
   context) share one row;
2. sorts the rows and cuts them into groups whose members share a long token
   prefix (the few-shot block of a subject, or a question across its choices);
3. runs each group's prefix once (batch 1) and keeps its KV cache, then runs
   the rows' remaining tokens in batches on top of that cache (copied to the
   batch), reading log-probabilities only where continuations are scored.

The prompts are untouched, so results equal the plain backend's up to float
rounding (parity is tested against lm-eval's HF model). Models with sliding
window attention, and prompt-learning adapters (PEFT puts its virtual tokens in
front of every forward, cache or not), get no sharing: their rows are batched
plainly, and logits are read from the end of each row, which virtual tokens at
the front do not move. Other methods pass through to the wrapped backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from harness.backends.base import EngineScored
from harness.backends.hf import HFBackend
from harness.records import (
    GenerateRequest, Generation, LoglikelihoodRequest, LoglikelihoodResult, RollingRequest, RollingResult
)

MIN_PREFIX_TOKENS = 8  # shorter shared prefixes are not worth a separate forward
KV_TOKEN_BUDGET = 16_384  # rows x (prefix + suffix) tokens per batch; bounds cache copies in memory
MAX_ROWS = 16
MIN_SAVED_TOKENS = 256  # share a prefix only if it saves at least this many token computations
PAD_RATIO = 0.85  # a row joins a batch only if at least this fraction of the batch width is real tokens


@dataclass
class _Row:
    tokens: list[int]  # model input: (context + continuation)[:-1]
    first_target: int  # smallest input position whose logits some request reads


def with_shared_prefix(backend: Any) -> Any:
    """`backend` with its multiple-choice loglikelihoods scored by a SharedPrefixScorer where
    they are computed in-process: an hf backend, or a vLLM engine's model whose
    loglikelihoods go to hf (a LoRA engine; harness.backends.vllm). Other backends are returned as they are."""
    if isinstance(backend, HFBackend):
        return SharedPrefixScorer(backend)
    if not isinstance(backend, EngineScored) or not backend.loglikelihood_via_hf:
        return backend
    # The delegate loads a model: only when something is scored, not on a fully cached rerun.
    return SharedPrefixScorer(backend.loglikelihood_delegate, front=backend)


class SharedPrefixScorer:
    """Backend over an HFBackend (.model, .tokenizer, .lm_tok) with prefix KV reuse.

    `front`, when given, is the backend this scorer stands in for (a vLLM
    model whose loglikelihoods go to `hf`): it answers everything else, and
    its name and scoring parameters key the cache. With a `front`, `hf` may be
    a function returning the HFBackend, called at the first loglikelihood.
    """

    def __init__(self, hf: Any, *, front: Any = None, min_prefix_tokens: int = MIN_PREFIX_TOKENS,
                 kv_token_budget: int = KV_TOKEN_BUDGET, max_rows: int = MAX_ROWS):
        self._hf = hf
        self.front = front if front is not None else hf
        self.inner = self.front  # harness.backends.base.Wraps: chat rendering and tokenizer are the front's
        self.name = self.front.name
        self.identity = self.front.identity
        self.min_prefix_tokens = min_prefix_tokens
        self.kv_token_budget = kv_token_budget
        self.max_rows = max_rows
        # Work done, for the benchmark's compute-floor comparison.
        self.stats = {"prefix_tokens": 0, "suffix_tokens": 0, "padded_tokens": 0, "rows": 0, "groups": 0}

    @property
    def scoring_params(self) -> dict[str, Any]:
        # Float rounding differs from the plain backend's, so cached results are kept apart.
        return {**self.front.scoring_params, "scorer": "shared_prefix"}

    @property
    def notice(self) -> str | None:
        return self.front.notice

    @property
    def runtime(self) -> dict[str, Any] | None:  # read when a run is written: a route settles at the first request
        return self.front.runtime

    @property
    def resolved(self) -> Any:
        return self.front.resolved

    @property
    def hf(self) -> Any:
        if callable(self._hf):
            self._hf = self._hf()
        return self._hf

    @property
    def is_sharing(self) -> bool:
        """False where a shared prefix's cache would not be reusable: sliding-window attention,
        and prompt-learning adapters (harness.backends.hf.is_prompt_learning)."""
        if self.hf.is_prompt_learning:
            return False
        config = self.hf.model.config
        return not getattr(config, "sliding_window", None) or getattr(config, "use_sliding_window", True) is False

    # --- pass-through --------------------------------------------------------------

    def loglikelihood_rolling(self, requests: Sequence[RollingRequest]) -> list[RollingResult]:
        return self.front.loglikelihood_rolling(requests)

    def generate(self, requests: Sequence[GenerateRequest]) -> list[Generation]:
        return self.front.generate(requests)

    def close(self) -> None:
        self.front.close()

    # --- scoring -------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        rows: dict[tuple[int, ...], _Row] = {}
        targets: list[tuple[tuple[int, ...], int, list[int]]] = []  # (row key, first logit position, tokens)
        for i, r in enumerate(requests):
            # The backend's own tokenization and truncation, so the tokens equal the plain path's.
            scored = self.hf.lm_tok.loglikelihood_row(i, r.context, r.continuation)
            key, pos, cont = tuple(scored.inputs), scored.first, scored.targets
            row = rows.setdefault(key, _Row(list(scored.inputs), pos))
            row.first_target = min(row.first_target, pos)
            targets.append((key, pos, cont))
        import torch

        logprobs = self._score_rows(rows)  # row key -> (T_row, V) log-probs from first_target on
        out = []
        for key, pos, cont in targets:
            lp, first = logprobs[key]
            rows_lp = lp[pos - first: pos - first + len(cont)]  # (n, V)
            tgt = torch.tensor(cont)
            out.append(LoglikelihoodResult(logprob=float(rows_lp.gather(-1, tgt[:, None]).sum()),
                                           is_greedy=bool((rows_lp.argmax(-1) == tgt).all()), n_tokens=len(cont)))
        return out

    def _groups(self, keys: list[tuple[int, ...]], rows: dict[tuple[int, ...], _Row]) -> list[tuple[int, list[tuple[int, ...]]]]:
        """(prefix length, members) groups of lexicographically sorted rows sharing a prefix.

        A row joins the current group if it shares at least min_prefix_tokens
        with its sorted neighbour and at least half the group's prefix so far
        (so one outlier does not shrink a long few-shot prefix to a short one).
        The prefix stops before any position whose logits are read.
        """
        keys = sorted(keys)
        groups: list[tuple[int, list[tuple[int, ...]]]] = []
        for key in keys:
            if groups and self.is_sharing:
                prefix, members = groups[-1]
                lcp = _common_prefix(members[-1], key)
                cap = min(lcp, rows[key].first_target)
                if prefix == -1:  # the group's first member has not capped the prefix yet
                    cap = min(cap, rows[members[0]].first_target)
                new_prefix = cap if prefix == -1 else min(prefix, cap)
                if cap >= self.min_prefix_tokens and (prefix == -1 or cap * 2 >= prefix):
                    groups[-1] = (new_prefix, members + [key])
                    continue
            groups.append((-1, [key]))  # -1: a singleton, no shared prefix yet
        return [(max(p, 0), m) for p, m in groups]

    def _score_rows(self, rows: dict[tuple[int, ...], _Row]) -> dict[tuple[int, ...], tuple[Any, int]]:
        import torch

        out: dict[tuple[int, ...], tuple[Any, int]] = {}
        model = self.hf.model
        device = next(model.parameters()).device
        pad = self.hf.tokenizer.pad_token_id if self.hf.tokenizer.pad_token_id is not None else 0
        groups = self._groups(list(rows), rows)
        # A separate prefix pass costs a forward call; on CPU that overhead beats saving a few
        # dozen tokens (0-shot ARC: ~30 shared tokens x 3), so such rows are pooled and batched plainly.
        shared = [(p, m) for p, m in groups if p * (len(m) - 1) >= MIN_SAVED_TOKENS]
        plain = [k for p, m in groups if p * (len(m) - 1) < MIN_SAVED_TOKENS for k in m]
        for prefix_len, members in shared + ([(0, plain)] if plain else []):
            self.stats["groups"] += 1
            prefix_kv = None
            if prefix_len:
                ids = torch.tensor([members[0][:prefix_len]], device=device)
                with torch.inference_mode():
                    res = model(input_ids=ids, use_cache=True, logits_to_keep=1)
                prefix_kv = [(layer.keys, layer.values) for layer in res.past_key_values.layers]
                self.stats["prefix_tokens"] += prefix_len
            # Similar lengths together keep padding low; long rows first so memory peaks early.
            members.sort(key=lambda k: -len(k))
            start = 0
            while start < len(members):
                width = len(members[start]) - prefix_len
                n = max(1, min(self.max_rows, self.kv_token_budget // max(1, prefix_len + width)))
                # On CPU a padded token costs as much as a real one: stop the batch where rows get
                # much shorter than its widest row (rows are sorted longest first).
                end = start + 1
                while end < min(start + n, len(members)) and len(members[end]) - prefix_len >= PAD_RATIO * width:
                    end += 1
                self._score_batch(members[start:end], rows, prefix_len, prefix_kv, pad, device, out)
                start = end
        return out

    def _score_batch(self, batch: list[tuple[int, ...]], rows: dict[tuple[int, ...], _Row], prefix_len: int,
                     prefix_kv: list[tuple[Any, Any]] | None, pad: int, device: Any,
                     out: dict[tuple[int, ...], tuple[Any, int]]) -> None:
        import torch
        from transformers import DynamicCache

        b = len(batch)
        width = max(len(k) for k in batch) - prefix_len
        ids = torch.full((b, width), pad, dtype=torch.long)
        mask = torch.zeros((b, prefix_len + width), dtype=torch.long)
        mask[:, :prefix_len] = 1
        for i, key in enumerate(batch):
            suffix = key[prefix_len:]
            ids[i, : len(suffix)] = torch.tensor(suffix)
            mask[i, prefix_len: prefix_len + len(suffix)] = 1
            self.stats["suffix_tokens"] += len(suffix)
        self.stats["padded_tokens"] += b * width
        self.stats["rows"] += b
        # Logits are needed only from the earliest scored position on (right padding: rows start aligned).
        keep = width - min(rows[k].first_target - prefix_len for k in batch)
        kwargs: dict[str, Any] = {}
        if prefix_kv is not None:
            kwargs["past_key_values"] = DynamicCache(
                ddp_cache_data=[(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in prefix_kv],
                config=self.hf.model.config)
        with torch.inference_mode():
            logits = self.hf.model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=prefix_kv is not None,
                                   logits_to_keep=keep, **kwargs).logits  # (B, keep, V)
        first_col = width - keep  # suffix position of logits[:, 0]
        for i, key in enumerate(batch):
            first = rows[key].first_target  # absolute input position
            lo = first - prefix_len - first_col
            hi = len(key) - prefix_len - first_col
            out[key] = (logits[i, lo:hi].float().log_softmax(-1).cpu(), first)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
