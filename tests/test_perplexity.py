import pytest

from harness.perplexity import perplexity, rolling_windows


@pytest.mark.parametrize("n, max_length, stride", [(1, 4, None), (4, 4, None), (5, 4, None), (37, 8, 3),
                                                   (100, 16, 16), (100, 16, 1), (9, 2, 2)])
def test_every_token_is_scored_exactly_once_within_the_context(n, max_length, stride):
    windows = rolling_windows(n, max_length, stride)
    scored = [t for w in windows for t in range(w.score_from, w.end)]
    assert scored == list(range(n))
    for w in windows:
        n_inputs = int(w.has_prefix) + (w.end - 1 - w.start)
        assert n_inputs <= max_length
        # the logit for the first target exists inside the window
        assert 0 <= w.score_from - w.start - 1 + int(w.has_prefix) < n_inputs


def test_bad_window_arguments_are_rejected():
    with pytest.raises(ValueError, match="stride"):
        rolling_windows(10, 4, stride=5)
    assert rolling_windows(0, 4) == []


def test_perplexity_definition():
    assert perplexity(0.0, 10) == 1.0
    assert perplexity(10 * 2.302585092994046, 10) == pytest.approx(10.0)


@pytest.mark.slow
def test_rolling_perplexity_matches_lm_eval_loglikelihood_rolling(settings, smollm2_dir):
    """Same checkpoint, float32 on both sides; one text longer than the window so windows matter."""
    import lm_eval.models.huggingface as lm_hf
    from lm_eval.api.instance import Instance

    from harness.backends.factory import open_backend
    from harness.records import RollingRequest

    texts = ["The mitochondria is the powerhouse of the cell. " * 40,
             "Paris is the capital of France. It lies on the Seine.",
             "def f(x):\n    return x * x\n\nprint(f(3))\n"]
    ours = open_backend(settings, "smollm2-135m-instruct", kind="hf", dtype="float32", max_length=256)
    got = ours.loglikelihood_rolling([RollingRequest(t) for t in texts])
    peer = lm_hf.HFLM(pretrained=str(smollm2_dir), dtype="float32", max_length=256, batch_size=4, device="cpu")
    want = peer.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)],
                                      disable_tqdm=True)
    for g, w in zip(got, want):
        assert g.logprob / g.n_tokens == pytest.approx(w / g.n_tokens, abs=1e-3)
    assert got[0].n_tokens > 256
