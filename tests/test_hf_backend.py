import math

import pytest

from harness.backends.factory import open_backend
from harness.backends.hf import HFBackend
from harness.errors import ContextTooLongError
from harness.models.resolve import resolve
from harness.records import GenerateRequest, LoglikelihoodRequest, RollingRequest


@pytest.fixture(scope="module")
def tiny(tiny_model_dir, tmp_path_factory, data_dir):
    from harness.settings import Settings

    s = Settings.at(tmp_path_factory.mktemp("home"), runs_dir=tmp_path_factory.mktemp("runs"), data_dir=data_dir)
    return HFBackend(resolve(s, str(tiny_model_dir)), dtype="float32", batch_size=3)


def _manual_logprob(backend, context, continuation):
    """log p(continuation | context) from one unbatched forward pass, written out by hand."""
    import torch

    ctx, cont = backend.lm_tok.encode_pair(context, continuation)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = backend.model(ids).logits[0].float().log_softmax(-1)
    return sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))


def test_loglikelihood_matches_a_hand_computed_forward_pass_in_any_batch_order(tiny):
    reqs = [LoglikelihoodRequest("The capital of France is", " Paris"),
            LoglikelihoodRequest("A much longer context that will sit in another batch position", " and more words"),
            LoglikelihoodRequest("Short", " x"),
            LoglikelihoodRequest("Question: 2+2=", " 4"),
            LoglikelihoodRequest("", " Hello")]
    got = tiny.loglikelihood(reqs)
    for r, g in zip(reqs, got):
        assert g.logprob == pytest.approx(_manual_logprob(tiny, r.context, r.continuation), abs=1e-4)
    assert [g.logprob for g in tiny.loglikelihood(reqs[::-1])] == pytest.approx([g.logprob for g in got[::-1]], abs=1e-4)


def test_trailing_context_space_moves_to_the_continuation(tiny):
    a, b = tiny.loglikelihood([LoglikelihoodRequest("Answer: ", "Paris"), LoglikelihoodRequest("Answer:", " Paris")])
    assert a == b


def test_empty_context_is_scored_after_the_prefix_token(tiny):
    ctx, cont = tiny.lm_tok.encode_pair("", " Hello")
    assert ctx == [tiny.tokenizer.bos_token_id] and cont == tiny.lm_tok.encode(" Hello")


def test_rolling_scores_every_token_once_and_windows_agree_with_full_context(tiny):
    text = "one two three four five six seven eight nine ten " * 3
    full = tiny.loglikelihood_rolling([RollingRequest(text)])[0]
    n = len(tiny.lm_tok.encode(text))
    assert full.n_tokens == n
    # The first token after BOS, then each next token given all before it.
    bos_scored = tiny.loglikelihood([LoglikelihoodRequest("", text)])[0]
    assert full.logprob == pytest.approx(bos_scored.logprob, abs=1e-3)
    # Short windows: same token count, a different (less informed) total.
    tiny.max_length, tiny.lm_tok.max_length, tiny.rolling_stride = 8, 8, 4
    try:
        windowed = tiny.loglikelihood_rolling([RollingRequest(text)])[0]
    finally:
        tiny.max_length, tiny.lm_tok.max_length, tiny.rolling_stride = 256, 256, 256
    assert windowed.n_tokens == n and windowed.logprob != pytest.approx(full.logprob, abs=1e-3)


def test_too_long_context_is_a_clear_error_with_the_sizes(tiny):
    # No request index in the message: callers name the item (harness.backends.base.call_per_item_on_overflow).
    long = "word " * 400
    with pytest.raises(ContextTooLongError, match=r"^context and continuation of 40\d tokens exceed the model's max_length 256"):
        tiny.loglikelihood([LoglikelihoodRequest("ok", " fine"), LoglikelihoodRequest(long, " end")])
    with pytest.raises(ContextTooLongError, match=r"^prompt of 40\d tokens \+ 8 new tokens exceeds the model's context of 256"):
        tiny.generate([GenerateRequest(prompt=long, max_new_tokens=8)])


def test_greedy_generation_is_deterministic_and_batch_independent(tiny):
    reqs = [GenerateRequest.chat("Hi there", max_new_tokens=6), GenerateRequest(prompt="Once upon a", max_new_tokens=6),
            GenerateRequest.chat("A longer message to force left padding in the batch", max_new_tokens=6)]
    together = tiny.generate(reqs)
    alone = [tiny.generate([r])[0] for r in reqs]
    assert [g.text for g in together] == [g.text for g in alone]
    assert all(g.n_completion_tokens <= 6 for g in together)


@pytest.mark.slow
def test_real_smollm2_greedy_chat_answers_paris(settings, smollm2_dir):
    backend = open_backend(settings, "smollm2-135m-instruct", kind="hf")
    out = backend.generate([GenerateRequest.chat("What is the capital of France?", max_new_tokens=24)])[0]
    assert "Paris" in out.text, out.text
    lp = backend.loglikelihood([LoglikelihoodRequest("The capital of France is", " Paris"),
                                LoglikelihoodRequest("The capital of France is", " London")])
    assert lp[0].is_greedy and lp[0].logprob > lp[1].logprob and math.isfinite(lp[1].logprob)


def test_adapters_merge_in_float32_and_stay_unmerged_in_bfloat16(settings, tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tests.helpers import make_lora

    adapter = make_lora(tiny_model_dir, tmp_path / "a", scale=0.05)
    resolved = resolve(settings, f"{tiny_model_dir}+{adapter}")
    merged = HFBackend(resolved, dtype="float32")
    assert not isinstance(merged.model, PeftModel)  # exact in float32, and as fast as the base
    assert isinstance(HFBackend(resolved, dtype="bfloat16").model, PeftModel)  # rounding would eat the delta
    reqs = [LoglikelihoodRequest("The capital of France is", " Paris"), LoglikelihoodRequest("2 + 3 =", " 5")]
    unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                                         str(adapter)).eval()
    merged_lp = [r.logprob for r in merged.loglikelihood(reqs)]
    merged._model = unmerged  # the same backend, scoring through the unmerged PEFT model
    assert merged_lp == pytest.approx([r.logprob for r in merged.loglikelihood(reqs)], abs=1e-4)
