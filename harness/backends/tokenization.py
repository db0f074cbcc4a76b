"""Tokenization shared by every backend that scores tokens, so hf and vllm score identical tokens.

It follows lm-eval's HFLM: no special tokens are added; an empty context
becomes the prefix token (BOS, or EOS when there is none); trailing spaces of
a context move to the continuation ("Q: ... A: " + "Paris" is scored as
"Q: ... A:" + " Paris").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.errors import ContextTooLongError
from harness.perplexity import rolling_windows


@dataclass(frozen=True)
class ScoreRow:
    """One forward pass: `inputs` tokens; sum log p of `targets` starting at logit position `first`."""

    doc: int
    inputs: list[int]
    first: int
    targets: list[int]


class LMTokenizer:
    def __init__(self, tokenizer: Any, max_length: int, truncation: str = "error"):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncation = truncation
        self.prefix_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context tokens, continuation tokens), split as lm-eval's HFLM splits them."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        if not context:
            return [self.prefix_token_id], self.encode(continuation)
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx):]

    def loglikelihood_row(self, i: int, context: str, continuation: str) -> ScoreRow:
        """The forward pass for request i; too-long inputs are an error or cut on the left, per policy."""
        ctx, cont = self.encode_pair(context, continuation)
        # Messages carry no request index: callers name the item (an index in a batch means nothing to a user).
        if not cont:
            raise ContextTooLongError("empty continuation")  # nothing to score
        if len(cont) > self.max_length:
            raise ContextTooLongError(f"continuation of {len(cont)} tokens exceeds max_length {self.max_length}")
        inputs = (ctx + cont)[:-1]
        if len(inputs) > self.max_length:
            if self.truncation == "error":
                raise ContextTooLongError(
                    f"context and continuation of {len(inputs) + 1} tokens exceed the model's max_length {self.max_length}; "
                    "shorten it, raise max_length, or choose truncation='left' (recorded in the run)")
            inputs = inputs[-self.max_length:]
        return ScoreRow(i, inputs, len(inputs) - len(cont), cont)

    def rolling_rows(self, doc: int, text: str, stride: int) -> tuple[int, list[ScoreRow]]:
        """(token count, one row per rolling window) for a perplexity document."""
        toks = self.encode(text)
        rows = []
        for w in rolling_windows(len(toks), self.max_length, stride):
            inputs = ([self.prefix_token_id] if w.has_prefix else []) + toks[w.start: w.end - 1]
            rows.append(ScoreRow(doc, inputs, w.score_from - w.start - 1 + int(w.has_prefix), toks[w.score_from: w.end]))
        return len(toks), rows
