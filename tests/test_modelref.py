import re

import pytest

from harness.errors import ModelRefError
from harness.models.ref import parse_model_ref


def test_alias_hub_local_adapter_and_openai_forms(tmp_path):
    assert parse_model_ref("smollm2-135m-instruct").kind == "alias"
    assert parse_model_ref("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    local = parse_model_ref(str(tmp_path))
    assert (local.kind, local.base) == ("local", str(tmp_path))
    ad = parse_model_ref(f"smollm2-135m-instruct+{tmp_path}/lora")
    assert ad.is_adapter and str(ad.adapter) == f"{tmp_path}/lora"
    assert ad.base_ref().raw == "smollm2-135m-instruct" and not ad.base_ref().is_adapter
    oa = parse_model_ref("openai:gpt-4o-mini@https://api.openai.com/v1/")
    assert (oa.kind, oa.base, oa.url) == ("openai", "gpt-4o-mini", "https://api.openai.com/v1")
    vl = parse_model_ref("vllm:smol@http://127.0.0.1:8000/v1")
    assert (vl.kind, vl.base, vl.url, vl.is_endpoint) == ("vllm", "smol", "http://127.0.0.1:8000/v1", True)
    assert not ad.is_endpoint


@pytest.mark.parametrize("bad, fragment", [
    ("", "empty model reference"),
    ("not-a-model", "is not an alias"),
    ("smollm2-135m-instruct+", "nothing after '+'"),
    ("smollm2-135m-instruct+a+b", "one adapter per reference"),
    ("openai:gpt-4o", "expected openai:MODEL@"),
    ("openai:gpt@ftp://x", "expected openai:MODEL@"),
    ("vllm:smol", "expected vllm:MODEL@"),
    ("vllm:smol@localhost:8000/v1", "expected vllm:MODEL@"),
])
def test_bad_references_name_the_valid_forms(bad, fragment):
    with pytest.raises(ModelRefError, match=re.escape(fragment)):
        parse_model_ref(bad)
