"""Builders shared by tests (plain functions, imported explicitly)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable


def make_lora(base_dir: Path, out: Path, *, seed: int = 0, scale: float = 0.0, r: int = 8,
              targets: tuple[str, ...] = ("q_proj", "v_proj"), manifest_base: dict | None = None) -> Path:
    """A LoRA adapter for `base_dir`. scale=0 leaves lora_B at zero (a no-op adapter);
    scale>0 sets every lora weight to seeded noise times `scale`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets),
                                                  init_lora_weights=scale == 0.0))
    if scale:
        with torch.no_grad():
            for name, w in peft_model.named_parameters():
                if "lora_" in name:
                    w.copy_(torch.randn_like(w) * scale)
    peft_model.save_pretrained(out)
    if manifest_base is not None:
        (out / "harness_manifest.json").write_text(json.dumps({"base": manifest_base}))
    return out


def arc_ppl_suite(path: Path, *, name: str, seed: int, arc_n: int, ppl_n: int, arc_margin: float,
                  ppl_margin: float) -> Path:
    """A suite YAML at `path`: ARC-Easy (acc_norm) and Alpaca held-out perplexity, small samples."""
    path.write_text(
        f"# {name}: ARC-Easy and held-out perplexity, small samples\nname: {name}\nversion: 1\nseed: {seed}\n"
        f"tasks:\n  - lm_eval: arc_easy_local\n    sample: {{n: {arc_n}}}\n    metric: acc_norm\n"
        f"    margin: {arc_margin}\n  - harness: perplexity\n    data: alpaca_heldout\n    sample: {{n: {ppl_n}}}\n"
        f"    metric: token_perplexity\n    margin: {ppl_margin}\n")
    return path


ADAPTER_METHODS = ("lora", "qlora", "dora", "ia3", "prompt_tuning", "dpo")


def make_adapter(base_dir: Path, out: Path, method: str, *, seed: int = 0, scale: float = 0.0,
                 manifest_base: dict | None = None) -> Path:
    """An adapter with the PEFT config the fine-tuner builds for `method` (finetune.train.build_peft_config),
    over a float32 base, written to `out`. scale=0 leaves the adapter's init (a no-op for LoRA, DoRA and
    IA3; random virtual tokens for prompt tuning); scale>0 perturbs every adapter weight with seeded
    noise of that size (IA3 scales and DoRA magnitudes multiplicatively), so the adapter changes scores."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from finetune.config import DataConfig, FinetuneConfig
    from finetune.train import build_peft_config

    cfg = FinetuneConfig(base=str(base_dir), method=method, output_dir=str(out), seed=seed,
                         data=DataConfig(train="unused.jsonl"))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, build_peft_config(cfg))
    if scale:
        with torch.no_grad():
            for name, w in peft_model.named_parameters():
                if not w.requires_grad:
                    continue
                noise = torch.randn_like(w) * scale
                w.copy_(w * (1 + noise) if ("ia3_" in name or "magnitude" in name) else w + noise)
    peft_model.save_pretrained(out)
    if manifest_base is not None:
        (out / "harness_manifest.json").write_text(json.dumps({"base": manifest_base, "method": method}))
    return out


class ChatStub:
    """A real OpenAI-compatible chat endpoint on 127.0.0.1 (stdlib http.server), for tests.

    `answer(body)` gives the assistant's text for a request body; every reply reports `usage`
    (prompt tokens, completion tokens). `url` is the base URL (.../v1); `close()` stops it.
    Optionally, like a vLLM server: `models` (a list of /v1/models entries, which tests may
    replace) answers GET /models (else 404), and `completions(body)` gives the first choice's
    fields for POST /completions (else that path gets a chat reply too). `seen` lists
    (method, path, Authorization header) of every request.
    """

    def __init__(self, answer: Callable[[dict], str], *, usage: tuple[int, int] = (3, 3),
                 models: list[dict] | None = None, completions: Callable[[dict], dict] | None = None) -> None:
        import http.server
        import threading

        stub = self
        self.models = models
        self.seen: list[tuple[str, str, str | None]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self, code: int, reply: dict) -> None:
                data = json.dumps(reply).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                stub.seen.append(("GET", self.path, self.headers.get("Authorization")))
                if stub.models is not None and self.path.endswith("/models"):
                    self._reply(200, {"object": "list", "data": stub.models})
                else:
                    self._reply(404, {"error": {"message": f"no {self.path}"}})

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                stub.seen.append(("POST", self.path, self.headers.get("Authorization")))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                counts = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
                if completions is not None and self.path.endswith("/completions") and "/chat/" not in self.path:
                    choice = {"index": 0, "finish_reason": "length", "text": "", **completions(body)}
                    self._reply(200, {"id": "x", "object": "text_completion", "created": 0, "model": body["model"],
                                      "choices": [choice], "usage": counts})
                    return
                self._reply(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": answer(body)}}],
                                  "usage": counts})

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# A user's own multiple-choice lm-eval task over a local JSONL (rows: question, choices, label); {data}
# is the file's path. Used through include_path (tests/test_lmeval_tasks*.py).
USER_MC_TASK = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: "{data}"
output_type: multiple_choice
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
metadata:
  version: 1.0
"""
