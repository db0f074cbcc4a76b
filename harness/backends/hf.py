"""`hf`: transformers in-process. A base, a base with a PEFT adapter, or a merged checkpoint.

Tokenization (harness.backends.tokenization) follows lm-eval's HFLM so scores
are comparable with lm-eval. Requests are sorted by length (longest first, so a batch that
fits memory is found at once) and batched; results return in request order.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

from harness.backends.platform import describe_platform
from harness.backends.tokenization import LMTokenizer, ScoreRow
from harness import logs
from harness.errors import ContextTooLongError, HarnessError, ModelRefError
from harness.models.resolve import ResolvedModel
from harness.records import (
    GenerateRequest, Generation, LoglikelihoodRequest, LoglikelihoodResult, RollingRequest, RollingResult
)

log = logging.getLogger(__name__)
TRUNCATION = ("error", "left")


def pick_dtype(name: str, device: str | None = None) -> Any:
    """'auto' is bfloat16 on CUDA and float32 on CPU (`device`, default: CUDA if available).

    On CPU float32 is both exact and faster: on this project's 2-core AVX512-BF16 machine
    (torch 2.13 CPU) a SmolLM2 forward pass ran at 620-860 tok/s in float32 against 410-530 in
    bfloat16 across batch shapes 1x128 to 32x256 (docs/backends.md). It also lets an adapter be
    merged exactly (see HFBackend). Pass bfloat16 to halve memory for a large model on CPU.
    """
    import torch

    if name != "auto":
        if not hasattr(torch, name):
            raise HarnessError(f"dtype '{name}' unknown; choose auto, bfloat16, float16, float32")
        return getattr(torch, name)
    on_gpu = torch.cuda.is_available() if device is None else not device.startswith("cpu")
    return torch.bfloat16 if on_gpu else torch.float32


def dtype_name(name: str) -> str:
    """The dtype `name` resolves to, as text ('auto' -> 'float32' on CPU)."""
    return str(pick_dtype(name)).removeprefix("torch.")


def apply_adapter(model: Any, adapter_path: str, dtype: Any) -> Any:
    """The base with a PEFT adapter; merged into the weights where merging is exact.

    An unmerged LoRA runs two extra small matmuls per layer plus dtype casts: 1.4x the base's
    scoring time in float32 and 2.5x in bfloat16 (ARC-Easy, 100 items, hf, this machine). In
    float32 the merged W + BA equals the unmerged sum to float32 rounding, so it is merged. In a
    16-bit dtype it is not: rounding W + BA to bfloat16 drops deltas below half a unit in the last
    place, which can make a mild adapter look like a no-op, so 16-bit adapters stay unmerged.
    Adapters PEFT cannot merge (prompt tuning) stay unmerged too; `is_prompt_learning` says
    how the scoring paths must treat their virtual tokens.
    """
    import torch
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, adapter_path, is_trainable=False)
    if dtype != torch.float32 or not hasattr(model, "merge_and_unload"):
        return model
    try:
        return model.merge_and_unload()
    except (AttributeError, NotImplementedError, ValueError) as e:
        log.info("adapter %s stays unmerged: %s", adapter_path, e)
        return model


def is_prompt_learning(model: Any) -> bool:
    """True for a PEFT prompt-learning adapter (prompt tuning, p-tuning, prefix tuning).

    These put learned virtual tokens in front of every input (or into its KV cache), so the
    logits have more positions than the input ids, a shared prefix's KV cache cannot be reused
    (PEFT builds its own), and left padding would move the real tokens' positions (PEFT drops
    position ids for them). LoRA, DoRA and IA3 change weights only.
    """
    from peft import PeftModel

    return isinstance(model, PeftModel) and bool(model.active_peft_config.is_prompt_learning)


class HFBackend:
    name = "hf"

    def __init__(self, resolved: ResolvedModel, *, dtype: str = "auto", batch_size: int = 8,
                 max_length: int | None = None, truncation: str = "error", rolling_stride: int | None = None,
                 device: str | None = None, notice: str | None = None):
        import torch
        from transformers import AutoConfig, AutoTokenizer

        if resolved.ref.kind == "openai":
            raise ModelRefError(f"'{resolved.ref.raw}' is an endpoint; the hf backend loads weights")
        if truncation not in TRUNCATION:
            raise HarnessError(f"truncation '{truncation}' unknown; choose {', '.join(TRUNCATION)}")
        self.resolved = resolved
        # Why this model is on hf although another backend was asked for (vLLM cannot serve its
        # adapter); runs record it in their manifest. None when hf was chosen.
        self.notice = notice
        self.identity = resolved.identity
        self.batch_size = batch_size
        self.truncation = truncation
        # Several visible GPUs and no --device: spread the layers over them (accelerate's device
        # map; inputs enter on the first). Otherwise the one device: --device, else cuda or cpu.
        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.device_map = "auto" if device is None and n_gpus > 1 else None
        self.device = device or ("cuda:0" if n_gpus else "cpu")
        self.dtype = pick_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(resolved.base_path, trust_remote_code=False)
        config = AutoConfig.from_pretrained(resolved.base_path, trust_remote_code=False)
        self._model: Any = None  # loaded at first use: a fully cached rerun never needs the weights
        self.max_length = int(max_length or getattr(config, "max_position_embeddings", None) or 2048)
        self.rolling_stride = rolling_stride or self.max_length
        self.lm_tok = LMTokenizer(self.tokenizer, self.max_length, truncation)
        self.scoring_params = {"dtype": str(self.dtype).removeprefix("torch."), "max_length": self.max_length,
                               "truncation": truncation, "rolling_stride": self.rolling_stride}

    @property
    def runtime(self) -> dict[str, Any]:
        """Where this model runs (run manifests record it)."""
        return {**describe_platform("cpu" if self.device == "cpu" else "cuda"), "device": self.device,
                "device_map": self.device_map}

    @property
    def model(self) -> Any:
        """The weights (with the adapter applied), loaded on first use."""
        if self._model is None:
            from transformers import AutoModelForCausalLM

            logs.quiet_libraries()  # no "Loading weights" bar; transformers' warnings go to the log file
            model = AutoModelForCausalLM.from_pretrained(self.resolved.base_path, dtype=self.dtype,
                                                         trust_remote_code=False, use_safetensors=True,
                                                         device_map=self.device_map)
            if self.resolved.adapter_path is not None:
                model = apply_adapter(model, str(self.resolved.adapter_path), self.dtype)
            self._model = (model if self.device_map else model.to(self.device)).eval()
        return self._model

    @property
    def is_prompt_learning(self) -> bool:
        """Whether the adapter adds virtual tokens (see `is_prompt_learning`); loads the weights."""
        return is_prompt_learning(self.model)

    # --- scoring ------------------------------------------------------------------------

    def _score_rows(self, rows: list[ScoreRow]) -> list[tuple[float, bool]]:
        """(sum log p of targets, all targets greedy) per row; rows are sorted by length and batched."""
        import torch

        out: list[tuple[float, bool] | None] = [None] * len(rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i].inputs))
        for b in range(0, len(order), self.batch_size):
            idx = order[b: b + self.batch_size]
            width = max(len(rows[i].inputs) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for j, i in enumerate(idx):
                ids[j, : len(rows[i].inputs)] = torch.tensor(rows[i].inputs)
                mask[j, : len(rows[i].inputs)] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits  # (B, P+T, V)
            # Prompt tuning prepends P virtual-token positions to the logits; input position t is at P + t.
            logits = logits[:, logits.shape[1] - width:]  # (B, T, V)
            for j, i in enumerate(idx):
                r = rows[i]
                logp = logits[j, r.first: r.first + len(r.targets)].float().log_softmax(-1)  # (n, V)
                tgt = torch.tensor(r.targets, device=logp.device)
                out[i] = (float(logp.gather(-1, tgt[:, None]).sum()), bool((logp.argmax(-1) == tgt).all()))
        return out  # type: ignore[return-value]

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        rows = [self.lm_tok.loglikelihood_row(i, r.context, r.continuation) for i, r in enumerate(requests)]
        return [LoglikelihoodResult(logprob=lp, is_greedy=g, n_tokens=len(row.targets))
                for row, (lp, g) in zip(rows, self._score_rows(rows))]

    def loglikelihood_rolling(self, requests: Sequence[RollingRequest]) -> list[RollingResult]:
        # Every window of every document is one row; rows of all documents are batched together.
        counts, rows = [], []
        for doc, r in enumerate(requests):
            n, doc_rows = self.lm_tok.rolling_rows(doc, r.text, self.rolling_stride)
            counts.append(n)
            rows.extend(doc_rows)
        totals = [0.0] * len(requests)
        for row, (lp, _) in zip(rows, self._score_rows(rows)):
            totals[row.doc] += lp
        return [RollingResult(logprob=t, n_tokens=n) for t, n in zip(totals, counts)]

    # --- generation ---------------------------------------------------------------------

    def render_prompt(self, r: GenerateRequest) -> str:
        """The exact text the model sees: the chat template for messages, the prompt otherwise."""
        if r.messages is None:
            return r.prompt or ""
        msgs = [{"role": m.role, "content": m.content} for m in r.messages]
        return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    def generate(self, requests: Sequence[GenerateRequest]) -> list[Generation]:
        import torch

        texts = [self.render_prompt(r) for r in requests]
        encoded = [self.lm_tok.encode(t) for t in texts]
        for i, (r, ids) in enumerate(zip(requests, encoded)):
            if len(ids) + r.max_new_tokens > self.max_length:
                if self.truncation == "error":
                    raise ContextTooLongError(  # the caller names the item: an index here means nothing to a user
                        f"prompt of {len(ids)} tokens + {r.max_new_tokens} new tokens exceeds the model's context "
                        f"of {self.max_length} tokens")
                encoded[i] = ids[-(self.max_length - r.max_new_tokens):]
        results: list[Generation | None] = [None] * len(requests)
        # Batch only requests with the same sampling parameters; sampled requests
        # with a seed run alone so the seed alone decides their output.
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            solo = (i,) if (not r.is_greedy and r.seed is not None) else ()
            groups.setdefault((r.max_new_tokens, r.temperature, r.top_p, r.stop, r.seed, solo), []).append(i)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        # A prompt-learning adapter generates one prompt at a time: PEFT ignores position ids for
        # its virtual tokens, so left padding would shift a padded prompt's positions.
        batch_size = 1 if self.is_prompt_learning else self.batch_size
        for key, members in groups.items():
            r0 = requests[members[0]]
            members.sort(key=lambda i: -len(encoded[i]))
            for b in range(0, len(members), batch_size):
                idx = members[b: b + batch_size]
                width = max(len(encoded[i]) for i in idx)
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for row, i in enumerate(idx):  # left padding for generation
                    ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                    mask[row, width - len(encoded[i]):] = 1
                kwargs: dict[str, Any] = {"max_new_tokens": r0.max_new_tokens, "pad_token_id": pad}
                if r0.stop:  # a batch stops once every row has met a stop string (GSM8K: "Question:", not 256 tokens)
                    kwargs.update(stop_strings=list(r0.stop), tokenizer=self.tokenizer)
                if r0.is_greedy:
                    kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                else:
                    kwargs.update(do_sample=True, temperature=r0.temperature, top_p=r0.top_p, top_k=None)
                    if r0.seed is not None:
                        torch.manual_seed(r0.seed)
                with torch.inference_mode():
                    out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs)
                for row, i in enumerate(idx):
                    new = out[row, width:].tolist()
                    results[i] = self._finish(new, requests[i])
        return results  # type: ignore[return-value]

    def _finish(self, new_tokens: list[int], r: GenerateRequest) -> Generation:
        eos = self.tokenizer.eos_token_id
        hit_eos = eos in new_tokens
        if hit_eos:
            new_tokens = new_tokens[: new_tokens.index(eos)]
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        cut = [text.index(s) for s in r.stop if s in text]
        if cut:
            text = text[: min(cut)]
        finish = "stop" if hit_eos or cut or len(new_tokens) < r.max_new_tokens else "length"
        return Generation(text=text, finish_reason=finish, n_completion_tokens=len(new_tokens))

    def close(self) -> None:
        self._model = None
