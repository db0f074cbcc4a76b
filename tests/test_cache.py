import pytest

from harness.backends.cache import CachedBackend, ItemCache
from harness.records import GenerateRequest, Generation, LoglikelihoodRequest, LoglikelihoodResult


class CountingBackend:
    """Deterministic stand-in that records every request it computes."""

    name = "counting"
    identity = "sha256:test"
    scoring_params: dict = {}
    notice = runtime = resolved = None

    def __init__(self, fail_after: int | None = None):
        self.seen: list[str] = []
        self.fail_after = fail_after

    def loglikelihood(self, requests):
        out = []
        for r in requests:
            if self.fail_after is not None and len(self.seen) >= self.fail_after:
                raise ConnectionError("server died")
            self.seen.append(r.continuation)
            out.append(LoglikelihoodResult(logprob=-float(len(r.continuation)), is_greedy=False, n_tokens=1))
        return out

    def generate(self, requests):
        self.seen.extend(r.prompt for r in requests)
        return [Generation(text=r.prompt.upper(), finish_reason="stop", n_completion_tokens=1) for r in requests]

    def close(self):
        pass


def _reqs(n):
    return [LoglikelihoodRequest("ctx", " x" * (i + 1)) for i in range(n)]


def test_second_call_computes_nothing_and_results_keep_order(tmp_path):
    inner = CountingBackend()
    cached = CachedBackend(inner, ItemCache(tmp_path / "c.sqlite"), tag="t@1", show_progress=False)
    first = cached.loglikelihood(_reqs(10))
    assert len(inner.seen) == 10
    again = CachedBackend(inner, ItemCache(tmp_path / "c.sqlite"), tag="t@1", show_progress=False)
    assert again.loglikelihood(list(reversed(_reqs(10)))) == list(reversed(first))
    assert len(inner.seen) == 10 and again.stats == {"hits": 10, "misses": 0}


def test_key_covers_tag_identity_and_request(tmp_path):
    inner = CountingBackend()
    cache = ItemCache(tmp_path / "c.sqlite")
    CachedBackend(inner, cache, tag="t@1", show_progress=False).generate([GenerateRequest(prompt="a")])
    CachedBackend(inner, cache, tag="t@2", show_progress=False).generate([GenerateRequest(prompt="a")])
    CachedBackend(inner, cache, tag="t@2", show_progress=False).generate([GenerateRequest(prompt="a", max_new_tokens=5)])
    inner.identity = "sha256:other"
    CachedBackend(inner, cache, tag="t@2", show_progress=False).generate([GenerateRequest(prompt="a", max_new_tokens=5)])
    assert len(inner.seen) == 4


def test_a_crash_keeps_finished_chunks_and_the_rerun_resumes(tmp_path):
    dying = CountingBackend(fail_after=7)
    cached = CachedBackend(dying, ItemCache(tmp_path / "c.sqlite"), chunk_size=3, show_progress=False)
    with pytest.raises(ConnectionError):
        cached.loglikelihood(_reqs(10))
    healthy = CountingBackend()
    rerun = CachedBackend(healthy, ItemCache(tmp_path / "c.sqlite"), chunk_size=3, show_progress=False)
    results = rerun.loglikelihood(_reqs(10))
    assert len(healthy.seen) == 4  # two chunks of 3 survived the crash
    assert [r.logprob for r in results] == [-2.0 * (i + 1) for i in range(10)]
