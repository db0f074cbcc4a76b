"""Scoring is right for every adapter kind the fine-tuner makes, on the real SmolLM2 (slow tier).

For each kind (lora, qlora, dora, ia3, prompt_tuning, full, dpo) the hf backend's
per-item log-likelihoods, on the plain path (`--no-fast-scorer`), the shared-prefix
scorer and the rolling path, and its greedy generations, must equal a forward
computed here independently: PEFT's own unmerged model (or the plain checkpoint)
with `labels`, so transformers and PEFT place the targets, virtual tokens included.
qlora, dpo and prompt_tuning are trained for a few steps through `harness finetune`;
the others are the fine-tuner's PEFT configs with seeded non-zero weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main

REPO = Path(__file__).resolve().parent.parent
BASE = "smollm2-135m-instruct"
KINDS = ("lora", "qlora", "dora", "ia3", "prompt_tuning", "full", "dpo")

_FEWSHOT = "".join(
    f"Question: Which of these is a {kind}?\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer: {ans}\n\n"
    for kind, a, b, c, d, ans in [
        ("planet", "Mars", "Paris", "Oak", "Salt", "A"), ("tree", "Iron", "Oak", "Venus", "Rome", "B"),
        ("metal", "Pine", "Lima", "Iron", "Jupiter", "C"), ("city", "Gold", "Birch", "Saturn", "Oslo", "D"),
        ("gas", "Neon", "Maple", "Cairo", "Copper", "A"), ("colour", "Tin", "Red", "Elm", "Quito", "B"),
    ])
MMLU_LIKE = _FEWSHOT + "Question: Which of these is a fruit?\nA. Granite\nB. Apple\nC. Nitrogen\nD. Berlin\nAnswer:"
# Multi-token answers after one long context: distinct rows with a long common prefix, which the
# shared-prefix scorer computes once (one-token answers would collapse into a single row).
MMLU_ANSWERS = (" A. Granite", " B. Apple", " C. Nitrogen", " D. Berlin")
ARC_LIKE = [("Question: What do plants need to make their own food?\nAnswer:", c)
            for c in (" sunlight", " sand and gravel", " moonlight only")]
ROLLING = ("Give three tips for staying healthy.\n\n1. Eat a balanced diet with plenty of fruits and vegetables. "
           "2. Exercise regularly to keep your body active and strong. 3. Get enough sleep every night.")
PROMPTS = ["Write one word that rhymes with cat.", "Name the largest planet in the solar system, in a short sentence."]


def _train(tmp: Path, config: str, steps: int, **over: str) -> Path:
    """A few steps of a shipped finetune config, on a small sample."""
    out = tmp / config
    args = [f"output_dir={out}", "data.limit=24", "data.max_length=96", "data.benchmarks=[]",
            f"train.max_steps={steps}", "train.batch_size=2", f"train.eval_every_steps={steps}",
            *[f"{k}={v}" for k, v in over.items()]]
    assert main(["finetune", str(REPO / f"finetune/configs/smollm2_{config}.yaml"), *args]) == 0
    return out


def _full_checkpoint(smollm2_dir: Path, out: Path) -> Path:
    """A full fine-tune's output: every weight moved a little, stored in the base's dtype (as finetune does)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    with torch.no_grad():
        for w in model.parameters():
            w.add_(torch.randn_like(w) * 2e-3)
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(smollm2_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def kinds(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Model references, one per kind."""
    from tests.helpers import make_adapter

    tmp = tmp_path_factory.mktemp("kinds")
    mp = pytest.MonkeyPatch()
    mp.setenv("HARNESS_HOME", str(smollm2_dir.parent.parent))
    try:
        # One step at a high learning rate moves a LoRA's zero-initialised B measurably; no validation
        # split, so no evaluation passes. Prompt tuning keeps its config's rate, as a user's short run would.
        fast = {"train.learning_rate": "5e-3", "data.validation_fraction": "0"}
        trained = {"qlora": _train(tmp, "qlora_alpaca", 1, **fast), "dpo": _train(tmp, "dpo_hh", 1, **fast),
                   "prompt_tuning": _train(tmp, "prompt_tuning_alpaca", 3)}
    finally:
        mp.undo()
    refs = {k: f"{BASE}+{p}" for k, p in trained.items()}
    for i, method in enumerate(("lora", "dora", "ia3")):
        refs[method] = f"{BASE}+{make_adapter(smollm2_dir, tmp / method, method, seed=i, scale=0.05)}"
    refs["full"] = str(_full_checkpoint(smollm2_dir, tmp / "full"))
    return refs


def _reference(settings, ref: str, *, generate: bool) -> tuple[list[float], float, list[str]]:
    """(log-likelihood per request, rolling log-likelihood, greedy continuations if `generate`), computed
    independently: the adapter unmerged through PEFT (or the checkpoint as it is), targets placed by `labels`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.models.resolve import resolve

    resolved = resolve(settings, ref)
    tok = AutoTokenizer.from_pretrained(resolved.base_path)
    model = AutoModelForCausalLM.from_pretrained(resolved.base_path, dtype=torch.float32)
    if resolved.adapter_path is not None:
        model = PeftModel.from_pretrained(model, str(resolved.adapter_path))
    model.eval()

    def enc(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    def logprob(prefix: list[int], target: list[int]) -> float:
        ids = torch.tensor([prefix + target])  # (1, T)
        labels = torch.tensor([[-100] * len(prefix) + target])
        with torch.no_grad():
            return -float(model(input_ids=ids, labels=labels).loss) * len(target)

    lls = []
    for context, cont in _requests():
        ctx, whole = enc(context), enc(context + cont)
        lls.append(logprob(ctx, whole[len(ctx):]))
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    rolling = logprob([bos], enc(ROLLING))
    gens = []
    for prompt in PROMPTS if generate else []:
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      tokenize=True, return_dict=True)["input_ids"]
        new: list[int] = []
        with torch.no_grad():
            for _ in range(6):  # greedy, no cache: one full forward per token
                nxt = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
                if nxt == tok.eos_token_id:
                    break
                new.append(nxt)
        gens.append(tok.decode(new, skip_special_tokens=True))
    return lls, rolling, gens


def _requests() -> list[tuple[str, str]]:
    return [*ARC_LIKE, *[(MMLU_LIKE, a) for a in MMLU_ANSWERS]]


@pytest.fixture(scope="module")
def base_scores(settings_module, smollm2_dir) -> list[float]:
    from harness.backends.hf import HFBackend
    from harness.models.resolve import resolve
    from harness.records import LoglikelihoodRequest

    backend = HFBackend(resolve(settings_module, BASE), dtype="float32")
    return [r.logprob for r in backend.loglikelihood([LoglikelihoodRequest(c, x) for c, x in _requests()])]


@pytest.fixture(scope="module")
def settings_module(tmp_path_factory, harness_home, data_dir):
    from harness.settings import Settings

    tmp = tmp_path_factory.mktemp("kinds-home")
    return Settings(home=tmp, runs_dir=tmp / "runs", data_dir=data_dir, models_dir=harness_home / "models",
                    cache_path=tmp / "items.sqlite")


@pytest.mark.parametrize("kind", KINDS)
def test_hf_scores_every_adapter_kind_like_an_independent_forward(settings_module, kinds, base_scores, kind):
    from harness.backends.hf import HFBackend
    from harness.backends.hf_prefix import SharedPrefixScorer
    from harness.models.resolve import resolve
    from harness.records import GenerateRequest, LoglikelihoodRequest, RollingRequest

    requests = [LoglikelihoodRequest(c, x) for c, x in _requests()]
    backend = HFBackend(resolve(settings_module, kinds[kind]), dtype="float32", batch_size=4)
    plain = [r.logprob for r in backend.loglikelihood(requests)]  # what --no-fast-scorer scores
    scorer = SharedPrefixScorer(backend)
    shared = [r.logprob for r in scorer.loglikelihood(requests)]
    rolling = backend.loglikelihood_rolling([RollingRequest(ROLLING)])[0].logprob
    # Only prompt tuning changes how hf generates (one prompt at a time, after its virtual tokens);
    # weight adapters generate through the merged model, as in tests/test_hf_backend.py.
    is_prompt = kind == "prompt_tuning"
    gens = [g.text for g in backend.generate([GenerateRequest.chat(p, max_new_tokens=6) for p in PROMPTS])] \
        if is_prompt else []
    backend.close()
    want, want_rolling, want_gens = _reference(settings_module, kinds[kind], generate=is_prompt)

    assert max(abs(a - b) for a, b in zip(want, base_scores)) > 0.01, "the adapter must change some score"
    assert plain == pytest.approx(want, abs=5e-3)
    assert shared == pytest.approx(want, abs=5e-3)
    assert rolling == pytest.approx(want_rolling, abs=5e-3)
    assert gens == want_gens
    # The few-shot prefix is shared wherever the model allows it; never across virtual tokens.
    assert (scorer.stats["prefix_tokens"] > 0) is not is_prompt


def test_a_short_prompt_tuning_adapter_compares_as_roughly_neutral(smollm2_dir, kinds, tmp_path, monkeypatch,
                                                                  capsys):
    """Before: a 3-step prompt-tuning adapter whose validation loss was slightly better than the base's
    showed held-out perplexity 140,381 against 6.81 and the gate called it a regression.

    Now it is scored as PEFT scores it (the parity test above). Its 16 randomly initialised virtual
    tokens, 3 steps into training on chat-formatted Alpaca, still move plain-text perplexity a little
    (measured: 10.19 -> 11.68 on these 10 documents, while its validation loss went 1.887 -> 1.874),
    so the suite's margin allows 30%: roughly neutral, where the fault was a factor of 20,000."""
    monkeypatch.setenv("HARNESS_HOME", str(smollm2_dir.parent.parent))
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache.sqlite"))
    suite = tmp_path / "ppl.yaml"
    suite.write_text("# held-out perplexity, 10 documents\nname: ppl-pt\nversion: 1\nseed: 3\ntasks:\n"
                     "  - harness: perplexity\n    data: alpaca_heldout\n    sample: {n: 10}\n"
                     "    metric: token_perplexity\n    margin: 30.0\n")
    man = json.loads((Path(kinds["prompt_tuning"].split("+", 1)[1]) / "harness_manifest.json").read_text())
    val = man["loss_history"]["validation"]  # step 0 (the base) and step 3
    assert main(["compare", "--baseline", BASE, "--candidate", kinds["prompt_tuning"], "--suite", str(suite),
                 "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ppl = out["results"][0]
    print(f"validation loss {val[0]['loss']:.3f} -> {val[-1]['loss']:.3f}; held-out perplexity base "
          f"{ppl['baseline']:.3f}, prompt tuning {ppl['candidate_value']:.3f}")
    assert out["summary"]["verdict"] == "pass"
    assert ppl["candidate_value"] == pytest.approx(ppl["baseline"], rel=0.3)
