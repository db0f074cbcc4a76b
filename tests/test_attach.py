"""vllm:MODEL@URL references and endpoint fingerprints, against stub endpoints (fast tier).

The stub speaks vLLM's dialect: GET /v1/models with `root` and `max_model_len`,
and POST /v1/completions with `prompt_logprobs` (token ids keyed as strings).
Its log-probabilities come from `lp(token_id)`, which a test may change.
"""
import json
import re

import pytest

from harness.models.fingerprint import LOGPROB_DECIMALS, EndpointError, rounded
from harness.errors import HarnessError, ModelRefError
from harness.models.ref import parse_model_ref
from harness.models.resolve import resolve
from harness.records import LoglikelihoodRequest
from tests.helpers import ChatStub


class FakeVLLM:
    """A stub vLLM server for one served model whose root is `root`; tokenizes with `tokenizer`."""

    def __init__(self, tokenizer, root: str, name: str = "smol"):
        self.tokenizer = tokenizer
        self.root = root
        self.shift = 0.0  # added to every log-probability: a test's "other weights"
        self.token_offset = 0  # added to every token id: a server with another tokenizer
        self.stub = ChatStub(lambda body: "hello", completions=self._complete,
                             models=[{"id": name, "object": "model", "root": root, "parent": None,
                                      "max_model_len": 256}])
        self.url = self.stub.url

    def lp(self, position: int, token: int) -> float:
        return -1.0 - (token % 7) / 10 - position / 1000 + self.shift

    def _complete(self, body: dict) -> dict:
        prompt = body["prompt"]
        ids = prompt if isinstance(prompt, list) else self.tokenizer(prompt)["input_ids"]
        ids = [i + self.token_offset for i in ids]
        plp = [None] + [{str(t): {"logprob": self.lp(k, t), "rank": 1, "decoded_token": "x"}}
                        for k, t in enumerate(ids) if k > 0]
        return {"prompt_logprobs": plp}

    def close(self) -> None:
        self.stub.close()


@pytest.fixture
def fake_vllm(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    server = FakeVLLM(AutoTokenizer.from_pretrained(smollm2_tokenizer_dir), str(smollm2_tokenizer_dir))
    yield server
    server.close()


# --- parsing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, base, url", [
    ("vllm:smol@http://127.0.0.1:8000/v1", "smol", "http://127.0.0.1:8000/v1"),
    ("vllm:org/model-7b@https://gpu-box:443/v1/", "org/model-7b", "https://gpu-box:443/v1"),
    (" vllm:adapter-1@http://h/v1 ", "adapter-1", "http://h/v1"),
])
def test_vllm_references_parse(text, base, url):
    ref = parse_model_ref(text)
    assert (ref.kind, ref.base, ref.url, ref.adapter, ref.is_endpoint) == ("vllm", base, url, None, True)


@pytest.mark.parametrize("bad", ["vllm:smol", "vllm:@http://h/v1", "vllm:smol@ftp://h/v1", "vllm:smol@http://",
                                 "vllm:smol@127.0.0.1:8000/v1"])
def test_bad_vllm_references_say_the_form(bad):
    with pytest.raises(ModelRefError, match=re.escape(f"model reference '{bad}': expected vllm:MODEL@http(s)://")):
        parse_model_ref(bad)


# --- fingerprints ---------------------------------------------------------------------------------

def test_rounding_grid():
    assert LOGPROB_DECIMALS == 1
    assert rounded(-1.2499) == rounded(-1.2001) == -1.2 and rounded(-0.04) == rounded(0.04) == 0.0


def test_vllm_fingerprint_is_stable_and_follows_the_weights(settings, fake_vllm):
    ref = f"vllm:smol@{fake_vllm.url}"
    first = resolve(settings, ref)
    assert resolve(settings, ref).identity == first.identity  # asked twice, the same answer
    fp = first.endpoint
    assert (fp.model, fp.root, fp.max_model_len, fp.probe, fp.lora_modules) == (
        "smol", fake_vllm.root, 256, "prompt_logprobs", ())
    assert first.base_path == fp.root  # the root is a directory here: its tokenizer is used
    fake_vllm.shift = 1e-4  # float noise well inside the 0.1-nat grid
    assert resolve(settings, ref).identity == first.identity
    fake_vllm.shift = 0.3  # other weights behind the same URL and name
    moved = resolve(settings, ref)
    assert moved.identity != first.identity and moved.endpoint.digest != fp.digest
    fake_vllm.shift = 0.0
    fake_vllm.stub.models[0]["root"] = "/elsewhere/checkpoint"  # the same numbers from another checkpoint
    assert resolve(settings, ref).identity != first.identity
    described = first.describe()["endpoint"]
    assert described["digest"] == fp.digest and described["root"] == fp.root and "probe_token_ids" not in described


def test_openai_fingerprint_of_a_chat_only_endpoint_hashes_its_greedy_answer(settings):
    reply = {"text": "Paris. One, two, three, four, five."}
    stub = ChatStub(lambda body: reply["text"])  # no /models, no completions log-probabilities
    try:
        ref = f"openai:chat@{stub.url}"
        first = resolve(settings, ref)
        assert first.endpoint.probe == "greedy_chat" and first.endpoint.root is None
        assert resolve(settings, ref).identity == first.identity
        reply["text"] = "Paris. 1, 2, 3, 4, 5."
        assert resolve(settings, ref).identity != first.identity
        assert resolve(settings, f"openai:other@{stub.url}").identity != resolve(settings, ref).identity
    finally:
        stub.close()


def test_openai_fingerprint_uses_echo_logprobs_when_given(settings, fake_vllm):
    def echo(body):
        text = body["prompt"]
        ids = fake_vllm.tokenizer(text)["input_ids"]
        toks = [fake_vllm.tokenizer.decode([i]) for i in ids]
        offsets = [sum(len(t) for t in toks[:k]) for k in range(len(toks))]
        return {"logprobs": {"tokens": toks + ["!"], "token_logprobs": [None] + [-1.5 + fake_vllm.shift] * len(ids),
                             "text_offset": offsets + [len(text)], "top_logprobs": None}}

    stub = ChatStub(lambda body: "unused", completions=echo)
    try:
        ref = f"openai:m@{stub.url}"
        first = resolve(settings, ref)
        assert first.endpoint.probe == "echo_logprobs" and first.base_path == "m"
        fake_vllm.shift = 0.5
        assert resolve(settings, ref).identity != first.identity
    finally:
        stub.close()


def test_the_api_key_is_sent_and_never_recorded(settings, fake_vllm, monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "sk-secret-123")
    resolved = resolve(settings, f"vllm:smol@{fake_vllm.url}")
    assert {auth for _, _, auth in fake_vllm.stub.seen} == {"Bearer sk-secret-123"}
    assert "sk-secret-123" not in json.dumps(resolved.describe()) + resolved.identity


def test_unreachable_endpoint_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from cli.main import main

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    for ref in ("vllm:smol@http://127.0.0.1:9/v1", "openai:gpt@http://127.0.0.1:9/v1"):  # port 9: refused
        assert main(["models", "show", ref]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"harness: error: endpoint http://127.0.0.1:9/v1 unreachable for '{ref}' "
                       "([Errno 111] Connection refused); is the server running?"]


def test_vllm_reference_to_a_model_the_server_does_not_serve(settings, fake_vllm):
    with pytest.raises(EndpointError, match=re.escape(f"the server at {fake_vllm.url} serves smol, not 'big'")):
        resolve(settings, f"vllm:big@{fake_vllm.url}")


def test_models_show_prints_the_fingerprint(settings, fake_vllm, monkeypatch, capsys):
    from cli.main import main

    monkeypatch.setenv("HARNESS_HOME", str(settings.home))
    assert main(["models", "show", "--json", f"vllm:smol@{fake_vllm.url}"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["endpoint"]["model"] == "smol" and shown["base_hash"].startswith("vllm:")


# --- the attached backend --------------------------------------------------------------------------

def test_attached_backend_scores_with_token_ids_through_the_server(settings, fake_vllm):
    from harness.backends.factory import open_backend

    resolved = resolve(settings, f"vllm:smol@{fake_vllm.url}")
    backend = open_backend(settings, resolved, kind="hf", dtype="float32")  # vllm: refs ignore --backend
    try:
        assert backend.identity == resolved.identity and backend.server.options["max_concurrency"] == 16
        assert backend.scoring_params["tokenizer"] == resolved.base_path
        [res] = backend.loglikelihood([LoglikelihoodRequest("The capital of France is", " Paris")])
        ctx = fake_vllm.tokenizer("The capital of France is", add_special_tokens=False)["input_ids"]
        cont = fake_vllm.tokenizer("The capital of France is Paris", add_special_tokens=False)["input_ids"][len(ctx):]
        assert res.n_tokens == len(cont)
        assert res.logprob == pytest.approx(sum(fake_vllm.lp(len(ctx) + j, t) for j, t in enumerate(cont)))
        assert backend.server.log_text() is None
    finally:
        backend.close()


def test_attached_server_with_lora_modules_takes_one_request_at_a_time(settings, fake_vllm):
    from harness.backends.vllm_attach import attach

    fake_vllm.stub.models.append({"id": "ad1", "object": "model", "root": "/adapters/ad1", "parent": "smol",
                                  "max_model_len": None})  # as vLLM lists a LoRA module
    resolved = resolve(settings, f"vllm:ad1@{fake_vllm.url}")
    assert resolved.endpoint.lora_modules == ("ad1",) and resolved.endpoint.tokenizer_root == resolved.base_path
    backend = attach(resolved)
    assert backend.server.options["max_concurrency"] == 1 and backend.served_name == "ad1"
    assert backend.max_length == 256  # the base's context


def test_attach_refuses_a_tokenizer_that_splits_text_otherwise(settings, fake_vllm, smollm2_tokenizer_dir):
    from harness.backends.vllm_attach import attach

    fake_vllm.token_offset = 1
    resolved = resolve(settings, f"vllm:smol@{fake_vllm.url}")
    with pytest.raises(HarnessError, match="does not split text as the server does"):
        attach(resolved)
    fake_vllm.token_offset = 0
    fake_vllm.stub.models[0]["root"] = "HuggingFaceTB/not-here"
    with pytest.raises(HarnessError, match="not a directory here; pass the served model's tokenizer with --tokenizer"):
        attach(resolve(settings, f"vllm:smol@{fake_vllm.url}"))
    assert attach(resolve(settings, f"vllm:smol@{fake_vllm.url}"), str(smollm2_tokenizer_dir)).lm_tok is not None



def test_a_server_that_stops_answering_mid_run_is_one_line(settings, fake_vllm):
    from harness.backends.vllm_attach import attach
    from harness.errors import BackendError

    backend = attach(resolve(settings, f"vllm:smol@{fake_vllm.url}"))
    fake_vllm.close()
    with pytest.raises(BackendError, match=re.escape(f"vLLM server at {fake_vllm.url} ('vllm:smol@{fake_vllm.url}') "
                                                     "no longer answers")):
        backend.loglikelihood([LoglikelihoodRequest("The capital of France is", " Paris")])



def test_backends_declare_their_abilities_and_callers_ask_with_isinstance(settings, fake_vllm, tiny_model_dir):
    """The contract (harness.backends.base): hf renders chats and has a tokenizer; a vLLM model has a tokenizer,
    its engine's own scores, an hf delegate and a server log; wrappers answer through `unwrap`; an openai
    endpoint declares none of them. Judges and the canary read only these."""
    from harness.backends.base import (Backend, EngineScored, HasServerLog, RendersChat, Tokenizes, Wraps,
                                       unwrap)
    from harness.backends.cache import CachedBackend, ItemCache
    from harness.backends.hf import HFBackend
    from harness.backends.hf_prefix import SharedPrefixScorer, with_shared_prefix
    from harness.backends.openai_api import OpenAIBackend
    from harness.backends.vllm_attach import attach
    from judges.judge import chat_renderer, token_counter

    hf = HFBackend(resolve(settings, str(tiny_model_dir)))
    vllm = attach(resolve(settings, f"vllm:smol@{fake_vllm.url}"))
    api = OpenAIBackend("m", fake_vllm.url, "sha256:x")
    try:
        for b in (hf, vllm, api):
            assert isinstance(b, Backend)
        assert isinstance(hf, RendersChat) and isinstance(hf, Tokenizes)
        assert not isinstance(hf, (EngineScored, HasServerLog, Wraps))
        assert isinstance(vllm, Tokenizes) and isinstance(vllm, EngineScored) and isinstance(vllm, HasServerLog)
        assert not isinstance(vllm, RendersChat)
        assert not isinstance(api, (RendersChat, Tokenizes, EngineScored, HasServerLog))
        cached = CachedBackend(with_shared_prefix(hf), ItemCache(settings.cache_path))
        assert isinstance(cached, Wraps) and isinstance(cached.inner, SharedPrefixScorer) and unwrap(cached) is hf
        assert cached.scoring_params == {**hf.scoring_params, "scorer": "shared_prefix"}
        assert cached.resolved is hf.resolved and cached.notice is None
        assert with_shared_prefix(vllm) is vllm  # an attached engine scores its own log-likelihoods
        # What judges take from each: the chat as the model sees it, and its token count; endpoints neither.
        assert chat_renderer(cached) is not None and token_counter(cached)("two words") == 2
        assert chat_renderer(vllm) is not None and token_counter(vllm) is not None
        assert chat_renderer(api) is None and token_counter(api) is None
    finally:
        hf.close()
        vllm.close()
