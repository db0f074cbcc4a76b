"""A judge: a backend (any model reference) plus a JudgeConfig; turns judge prompts into verdicts.

`Judge.decide` takes chat prompts and returns one `Verdict` per prompt, in
order. How the label is read, per the config's `verdict_via`:

- logprobs: the prompt is rendered with the judge's chat template, the
  config's `logprob_prefix` is appended as the start of the judge's reply,
  and each label's text is scored with `backend.loglikelihood`; the most
  likely label wins. A constrained choice: it always yields a label, and the
  label log-probabilities are kept as the raw judgment.
- generate: greedy generation, the strict parser, and on failure exactly one
  retry that shows the reply and restates the format. Still unparseable: an
  invalid verdict (label None) with the parser's reason.
- auto: logprobs where the backend can score text and render the chat
  (hf, vllm), else generate (openai endpoints).

Judge calls go through whatever backend is given; pass a CachedBackend tagged
`config.tag` and every call is cached by judge identity, template version and
exact request (prompt with both answers in their order).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from harness.backends.base import Backend, RendersChat, Tokenizes, call_per_item_on_overflow, unwrap
from harness.errors import UnsupportedMethodError
from harness.records import GenerateRequest, LoglikelihoodRequest, Message
from judges.config import JudgeConfig, JudgeError
from judges.parsers import PARSERS

log = logging.getLogger(__name__)

Chat = tuple[Message, ...]
RenderChat = Callable[[Chat], str]


@dataclass(frozen=True)
class Verdict:
    """One judgment: a label, or None with the reason it is invalid; `raw` keeps what the judge said."""

    label: str | None
    failure_reason: str | None
    via: str  # "logprobs", "generate", "generate+retry", or "none" when the judge was not asked
    raw: dict[str, Any] = field(default_factory=dict)
    # What the game cost: tokens sent (None where the backend has no tokenizer we can count with,
    # e.g. an endpoint) and tokens generated (0 on the log-probability path), retry included.
    n_prompt_tokens: int | None = None
    n_completion_tokens: int | None = None

    @staticmethod
    def invalid(reason: str, via: str = "none", **raw: Any) -> "Verdict":
        return Verdict(None, reason, via, dict(raw))


def chat_renderer(backend: Any) -> RenderChat | None:
    """The text a backend's model sees for a chat, or None when the backend cannot say.

    Uses the backend's own rendering (RendersChat: hf) or its tokenizer's chat
    template (Tokenizes: vllm), under any wrapper such as the item cache.
    Endpoints (openai) render server-side, so they get None and the generate path.
    """
    inner = unwrap(backend)
    if isinstance(inner, RendersChat):
        return lambda chat: inner.render_prompt(GenerateRequest(messages=chat))
    if isinstance(inner, Tokenizes) and inner.tokenizer.chat_template:
        tok = inner.tokenizer
        return lambda chat: tok.apply_chat_template([{"role": m.role, "content": m.content} for m in chat],
                                                    tokenize=False, add_generation_prompt=True)
    return None


def token_counter(backend: Any) -> Callable[[str], int] | None:
    """Counts a text's tokens with the judge's own tokenizer (hf, vllm), or None (endpoints tokenize server-side)."""
    inner = unwrap(backend)
    if not isinstance(inner, Tokenizes):
        return None
    tok = inner.tokenizer
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


class Judge:
    """Verdicts from `backend` under `config`; `render_chat` and `count_tokens` default to what `backend` offers."""

    def __init__(self, backend: Backend, config: JudgeConfig, *, render_chat: RenderChat | None = None,
                 count_tokens: Callable[[str], int] | None = None):
        self.backend = backend
        self.config = config
        self.render_chat = render_chat or chat_renderer(backend)
        self.parse = PARSERS[config.parser]
        self.count_tokens = count_tokens or token_counter(backend)
        if config.verdict_via == "logprobs" and self.render_chat is None:
            raise JudgeError(f"judge config '{config.name}' asks for verdict_via: logprobs, but backend "
                             f"'{backend.name}' cannot render the judge's chat; use auto or generate")

    def chat(self, user_text: str) -> Chat:
        system = (Message("system", self.config.system),) if self.config.system else ()
        return system + (Message("user", user_text),)

    def decide(self, chats: Sequence[Chat]) -> list[Verdict]:
        """One verdict per chat, same order; one batch per path so a server sees them all at once."""
        if not chats:
            return []
        via = self.config.verdict_via
        if via in ("auto", "logprobs") and self.render_chat is not None:
            try:
                return self._by_logprobs(chats)
            except UnsupportedMethodError as e:
                if via == "logprobs":
                    raise JudgeError(f"judge config '{self.config.name}' asks for logprobs: {e}") from e
                log.info("judge backend cannot score text (%s); reading verdicts from generated text", e)
        return self._by_generation(chats)

    # --- constrained: log-probabilities over the labels ------------------------------------

    def _by_logprobs(self, chats: Sequence[Chat]) -> list[Verdict]:
        labels = list(self.config.labels.items())  # [(label, text scored after the prefix)]
        contexts: list[str | None] = []
        for chat in chats:
            assert self.render_chat is not None
            contexts.append(self.render_chat(chat) + self.config.logprob_prefix)
        requests = [LoglikelihoodRequest(c, text) for c in contexts for _, text in labels]  # (n × L)
        results = call_per_item_on_overflow(self.backend.loglikelihood, requests, group=len(labels))
        out = []
        for i in range(len(chats)):
            group = results[i * len(labels):(i + 1) * len(labels)]
            if any(isinstance(r, Exception) for r in group):
                err = next(r for r in group if isinstance(r, Exception))
                out.append(Verdict.invalid(f"judge prompt too long: {err}", "logprobs"))
                continue
            lps = {label: r.logprob for (label, _), r in zip(labels, group)}  # type: ignore[union-attr]
            n_prompt = self.count_tokens(contexts[i]) if self.count_tokens else None  # type: ignore[arg-type]
            out.append(dataclasses.replace(_argmax_verdict(lps), n_prompt_tokens=n_prompt, n_completion_tokens=0))
        return out

    def _chat_tokens(self, chat: Chat) -> int | None:
        if self.count_tokens is None or self.render_chat is None:
            return None
        return self.count_tokens(self.render_chat(chat))

    # --- free text: strict parser, one retry -----------------------------------------------

    def _by_generation(self, chats: Sequence[Chat]) -> list[Verdict]:
        cfg = self.config
        first = call_per_item_on_overflow(self.backend.generate, [
            GenerateRequest(messages=c, max_new_tokens=cfg.max_new_tokens) for c in chats])
        out: list[Verdict | None] = [None] * len(chats)
        retry_idx, retry_chats = [], []
        for i, g in enumerate(first):
            if isinstance(g, Exception):
                out[i] = Verdict.invalid(f"judge prompt too long: {g}", "generate")
                continue
            label, reason = self.parse(g.text)
            if label is not None:
                out[i] = Verdict(label, None, "generate", {"replies": [g.text]}, self._chat_tokens(chats[i]),
                                 g.n_completion_tokens)
            else:
                retry_idx.append(i)
                retry_chats.append(chats[i] + (Message("assistant", g.text), Message("user", cfg.retry_message)))
        second = call_per_item_on_overflow(self.backend.generate, [
            GenerateRequest(messages=c, max_new_tokens=cfg.max_new_tokens) for c in retry_chats])
        for k, (i, g) in enumerate(zip(retry_idx, second)):
            reply1 = first[i].text  # type: ignore[union-attr]
            if isinstance(g, Exception):
                out[i] = Verdict.invalid(f"retry prompt too long: {g}", "generate+retry", replies=[reply1])
                continue
            label, reason = self.parse(g.text)
            verdict = (Verdict(label, None, "generate+retry", {"replies": [reply1, g.text]}) if label is not None
                       else Verdict.invalid(f"unparseable after one retry: {reason}", "generate+retry",
                                            replies=[reply1, g.text]))
            first_tokens, retry_tokens = self._chat_tokens(chats[i]), self._chat_tokens(retry_chats[k])
            n_prompt = None if first_tokens is None or retry_tokens is None else first_tokens + retry_tokens
            out[i] = dataclasses.replace(verdict, n_prompt_tokens=n_prompt, n_completion_tokens=(
                first[i].n_completion_tokens + g.n_completion_tokens))  # type: ignore[union-attr]
        return out  # type: ignore[return-value]


def _argmax_verdict(logprobs: dict[str, float]) -> Verdict:
    """The most likely label; exactly equal best scores are undecidable, so invalid, never a tie."""
    if not all(math.isfinite(v) for v in logprobs.values()):
        return Verdict.invalid(f"non-finite label log-probabilities {logprobs}", "logprobs", logprobs=logprobs)
    best = max(logprobs.values())
    top = [k for k, v in logprobs.items() if v == best]
    z = math.log(sum(math.exp(v - best) for v in logprobs.values())) + best
    raw = {"logprobs": logprobs, "p": {k: round(math.exp(v - z), 6) for k, v in logprobs.items()}}
    if len(top) > 1:
        return Verdict(None, f"labels {', '.join(top)} equally likely", "logprobs", raw)
    return Verdict(top[0], None, "logprobs", raw)
