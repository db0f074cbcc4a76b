"""Hash-based leakage check: does training data contain validation, test, golden or benchmark items?

Every text is reduced to `prep.canonical` words. A training example is flagged
when its prompt equals a reference item exactly (sha256 of the canonical
text), or when its prompt or answer contains any NGRAM-word run of a reference
item (items shorter than NGRAM words must appear whole; items shorter than
MIN_WORDS are only matched exactly, since a 3-word phrase matches by chance).
This is the n-gram overlap test of GPT-3's contamination study, with hashes.
"""
from __future__ import annotations

import bz2
import csv
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from finetune.data import DataError, Example, parse_row, read_rows
from finetune.prep import canonical, text_hash

NGRAM = 13
MIN_WORDS = 6
MAX_HITS_LISTED = 20
Item = tuple[str, str]  # (item id, text)


def load_benchmark_items(data_dir: Path, names: Iterable[str]) -> dict[str, list[Item]]:
    """Question texts of the named benchmarks (mmlu, arc, hellaswag), all splits, from HARNESS_DATA_DIR."""
    loaders = {"mmlu": _mmlu, "arc": _arc, "hellaswag": _hellaswag}
    out = {}
    for name in names:
        if name not in loaders:
            raise DataError(f"unknown benchmark '{name}'; choose {', '.join(sorted(loaders))}")
        items = loaders[name](data_dir)
        if not items:
            raise DataError(f"benchmark '{name}': no items found under {data_dir} (is HARNESS_DATA_DIR right?)")
        out[name] = items
    return out


def _mmlu(data_dir: Path) -> list[Item]:
    items = []
    for path in sorted((data_dir / "mmlu" / "data").glob("*/*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            for lineno, row in enumerate(csv.reader(f), 1):
                if row:
                    items.append((f"mmlu/{path.parent.name}/{path.stem}:{lineno}", row[0]))
    return items


def _arc(data_dir: Path) -> list[Item]:
    items = []
    for path in sorted((data_dir / "arc").glob("ARC-*/*.jsonl")):
        for where, row in read_rows(path):
            items.append((f"arc/{path.stem}/{row.get('id', where)}", row["question"]["stem"]))
    return items


def _hellaswag(data_dir: Path) -> list[Item]:
    path = data_dir / "hellaswag" / "hellaswag_val_full.txt.bz2"
    if not path.is_file():
        return []
    with bz2.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    # 6 lines per item: "activity label: context", gold index, 4 endings.
    return [(f"hellaswag/val:{i // 6}", lines[i].split(": ", 1)[-1]) for i in range(0, len(lines) - 5, 6)]


def reference_texts(path: Path) -> list[Item]:
    """Prompt texts of a golden or evaluation file in any format the harness reads.

    Rows in a training format give their prompt; other rows give the first of
    prompt, instruction, question, input or text.
    """
    items = []
    for where, row in read_rows(path):
        try:
            items.append((where, parse_row(row, "auto", where).prompt_text()))
            continue
        except DataError:
            pass
        text = next((row[k] for k in ("prompt", "instruction", "question", "input", "text")
                     if isinstance(row.get(k), str)), None)
        if text is None:
            raise DataError(f"{where}: no prompt text to check for leakage (keys {sorted(row)})")
        items.append((where, text))
    return items


class _Index:
    """Exact hashes and n-gram hashes of one reference set."""

    def __init__(self, items: Sequence[Item]):
        self.exact: dict[str, str] = {}
        self.grams: dict[int, dict[int, str]] = defaultdict(dict)  # n -> gram hash -> item id
        self.too_short = 0
        for item_id, text in items:
            words = canonical(text).split()
            self.exact.setdefault(" ".join(words), item_id)
            if len(words) < MIN_WORDS:
                self.too_short += 1
                continue
            n = min(NGRAM, len(words))
            for i in range(len(words) - n + 1):
                self.grams[n].setdefault(hash(tuple(words[i:i + n])), item_id)

    def match(self, prompt_words: list[str], texts_words: Sequence[list[str]]) -> tuple[str, str] | None:
        hit = self.exact.get(" ".join(prompt_words))
        if hit is not None:
            return hit, "exact"
        for words in texts_words:
            for n, table in self.grams.items():
                for i in range(len(words) - n + 1):
                    hit = table.get(hash(tuple(words[i:i + n])))
                    if hit is not None:
                        return hit, f"{n}-gram"
        return None


def check_leakage(train: Sequence[Example], references: dict[str, Sequence[Item]]) -> tuple[dict[str, Any], set[int]]:
    """Compare every training example against each reference set.

    Returns (report, flagged): `report[name]` has the number of reference
    items, how many were too short for n-gram matching, how many training
    examples matched, and up to MAX_HITS_LISTED hits (training source, item
    id, item sha256, match kind); `flagged` holds the indices into `train` of
    every matched example.
    """
    report: dict[str, Any] = {}
    flagged: set[int] = set()
    canon = [(canonical(ex.prompt_text()).split(),
              [canonical(ex.prompt_text()).split(), canonical(ex.completion).split()]) for ex in train]
    for name, items in references.items():
        index = _Index(items)
        texts = dict(items)
        hits = []
        for i, (prompt_words, texts_words) in enumerate(canon):
            m = index.match(prompt_words, texts_words)
            if m is not None:
                flagged.add(i)
                hits.append({"train": train[i].source, "item": m[0], "item_sha256": text_hash(texts[m[0]]),
                             "match": m[1]})
        report[name] = {"items": len(items), "items_exact_only": index.too_short,
                        "train_flagged": len(hits), "hits": hits[:MAX_HITS_LISTED]}
    return report, flagged


def describe_method() -> str:
    return (f"canonical text (lowercase words, no punctuation); exact sha256 of the prompt, or any {NGRAM}-word "
            f"run of an item (whole item if shorter, at least {MIN_WORDS} words) in the prompt or answer")


def summarize(report: dict[str, Any]) -> str:
    """One line per reference set, for the console."""
    return "\n".join(f"  {name:<12} {r['train_flagged']:>5} training examples flagged ({r['items']} items checked)"
                     for name, r in report.items())
