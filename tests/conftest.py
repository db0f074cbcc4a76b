"""Shared fixtures. Nothing heavy happens at import or collection.

Fast tier: `tiny_model_dir`, a 2-layer random llama with SmolLM2's tokenizer
and chat template, built once per session in seconds.
Slow tier (marked `slow`): `smollm2_dir`, the real SmolLM2 prepared into the
shared HARNESS_HOME (prepared once, reused across sessions).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test in a file named test_*_slow.py is slow: the file's name is the one place that says so."""
    for item in items:
        if item.path.name.endswith("_slow.py"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def harness_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model cache shared by the session (HARNESS_HOME if set, so CI reuses the demo's)."""
    env = os.environ.get("HARNESS_HOME")
    return Path(env) if env else tmp_path_factory.mktemp("harness-home")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = Path(os.environ.get("HARNESS_DATA_DIR") or REPO.parent / "shared" / "datasets")
    if not d.is_dir():
        pytest.fail(f"offline datasets not found at {d}; set HARNESS_DATA_DIR")
    return d


@pytest.fixture
def settings(tmp_path: Path, harness_home: Path, data_dir: Path):
    """Settings with a fresh runs dir and a fresh item cache, but the shared prepared models."""
    from harness.settings import Settings

    return Settings(home=tmp_path / "home", runs_dir=tmp_path / "runs", data_dir=data_dir,
                    models_dir=harness_home / "models", cache_path=tmp_path / "item-cache.sqlite")


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2's tokenizer and chat template, read straight from the packaged GGUF (seconds)."""
    from transformers import AutoTokenizer

    from harness.models.resolve import find_alias_gguf

    gguf = find_alias_gguf("smollm2-135m-instruct")
    out = tmp_path_factory.mktemp("smollm2-tokenizer")
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
    return out


def build_tiny_llama(out: Path, tokenizer_dir: Path, *, seed: int = 0, hidden: int = 64,
                     max_positions: int = 256) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max_positions, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_dir: Path) -> Path:
    """A 2-layer random llama (hidden 64) with SmolLM2's tokenizer; context 256 tokens."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2_tokenizer_dir)


@pytest.fixture(scope="session")
def smollm2_dir(harness_home: Path, data_dir: Path) -> Path:
    """The real SmolLM2-135M-Instruct, prepared once into the shared HARNESS_HOME."""
    from harness.models.resolve import prepare_alias
    from harness.settings import Settings

    return prepare_alias(Settings.at(harness_home, runs_dir=harness_home / "runs", data_dir=data_dir),
                         "smollm2-135m-instruct")
