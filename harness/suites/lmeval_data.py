"""Local copies of MMLU, ARC, HellaSwag and GSM8K, made readable by lm-eval, once.

The datasets under HARNESS_DATA_DIR keep their upstream formats (MMLU as
headerless CSV, ARC as the original jsonl, HellaSwag as a 6-lines-per-item
text file, GSM8K as the hub's JSONL). lm-eval reads JSON through
`dataset_path: json`, so `materialize_lmeval_tasks` converts them once into

    HARNESS_HOME/lmeval/<key>/data/...      JSONL in the hub datasets' schema
    HARNESS_HOME/lmeval/<key>/tasks/...     task YAMLs rendered from
                                            suites/lmeval_tasks/*.yaml with
                                            absolute paths to that JSONL

where <key> hashes the data folder, the templates and FORMAT_VERSION, so a
change to any of them builds a fresh copy. A dataset missing from the data
folder leaves its tasks out; `missing_local_data` names it for a suite that
asks for one of them. The folder is staged and renamed
into place under a file lock: concurrent runs build it once, and a reader
never sees half of it. Nothing is written into the repository or the data dir.
"""
from __future__ import annotations

import bz2
import csv
import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from harness import atomic
from harness.errors import HarnessError
from harness.settings import Settings

FORMAT_VERSION = 1
TEMPLATES = Path(str(resources.files("suites"))) / "lmeval_tasks"
MMLU_GROUP = "mmlu_local"
MMLU_PREFIX = "mmlu_local_"
# Local task names (besides the mmlu_local_<subject> leaves) and the folder of HARNESS_DATA_DIR each reads.
LOCAL_DATA = {"mmlu_local": "mmlu", "arc_easy_local": "arc", "arc_challenge_local": "arc",
              "hellaswag_local": "hellaswag", "gsm8k_local": "gsm8k"}
LOCAL_TASKS = tuple(LOCAL_DATA)
_MMLU_SPLITS = {"test": "test", "val": "validation", "dev": "dev"}
_ARC_SPLITS = {"Train": "train", "Dev": "validation", "Test": "test"}


@dataclass(frozen=True)
class LocalTasks:
    """Where the rendered task YAMLs live, plus what evaluation needs to label items."""

    root: Path
    category_of: dict[str, str]  # MMLU subject -> category (STEM, humanities, ...)

    @property
    def task_dir(self) -> Path:
        return self.root / "tasks"


def mmlu_subjects(data_dir: Path) -> list[str]:
    """The MMLU subjects present in the local copy (file names of the test split)."""
    test = data_dir / "mmlu" / "data" / "test"
    return sorted(p.name.removesuffix("_test.csv") for p in test.glob("*_test.csv"))


def mmlu_categories(data_dir: Path) -> dict[str, str]:
    """subject -> top-level category, from mmlu/categories.json (subject -> subcategory -> category)."""
    path = data_dir / "mmlu" / "categories.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise HarnessError(f"{path}: cannot read MMLU categories: {e}") from e
    sub_to_cat = {sub: cat for cat, subs in raw["categories"].items() for sub in subs}
    return {subject: sub_to_cat[subs[0]] for subject, subs in raw["subcategories"].items()}


def local_task_names(data_dir: Path) -> list[str]:
    """Every task name the local YAMLs define: groups and MMLU leaves."""
    return list(LOCAL_TASKS) + [MMLU_PREFIX + s for s in mmlu_subjects(data_dir)]


def is_local_task(name: str) -> bool:
    """Whether a task name is one of the local tasks (a group, or an MMLU subject leaf)."""
    return name in LOCAL_DATA or name.startswith(MMLU_PREFIX)


def missing_local_data(data_dir: Path, name: str) -> Path | None:
    """The data folder a local task needs when it is absent from `data_dir`, else None."""
    folder = data_dir / LOCAL_DATA.get(name, "mmlu")
    return None if folder.is_dir() else folder


def materialize_lmeval_tasks(settings: Settings) -> LocalTasks:
    """Convert the local datasets for lm-eval (once) and return where the task YAMLs are.

    Datasets absent from HARNESS_DATA_DIR are left out (their tasks are not defined); the caller
    checks the ones a suite needs with `missing_local_data`."""
    data_dir = settings.data_dir.resolve()
    if not data_dir.is_dir():
        raise HarnessError(f"offline datasets not found at {data_dir}; set HARNESS_DATA_DIR")
    h = hashlib.sha256(f"{FORMAT_VERSION}\0{data_dir}".encode())
    for t in sorted(TEMPLATES.glob("*.yaml")):
        h.update(t.name.encode() + t.read_bytes())
    for folder in sorted(set(LOCAL_DATA.values())):  # a dataset arriving later builds a fresh copy
        h.update(f"\0{folder}={(data_dir / folder).is_dir()}".encode())
    final = settings.home / "lmeval" / h.hexdigest()[:16]
    categories = mmlu_categories(data_dir) if (data_dir / "mmlu").is_dir() else {}
    with atomic.file_lock(settings.home / "lmeval" / ".build.lock"):
        if not (final / "tasks").is_dir():
            atomic.remove_stale_staging(final.parent)
            with atomic.staged_dir(final) as stage:
                _build(data_dir, stage, final, categories)
    return LocalTasks(root=final, category_of=categories)


def _build(data_dir: Path, stage: Path, final: Path, categories: dict[str, str]) -> None:
    # YAMLs name `final` (where the folder will be after the rename), not the stage.
    (stage / "tasks").mkdir(parents=True, exist_ok=True)
    if (data_dir / "mmlu").is_dir():
        _build_mmlu(data_dir, stage, final, categories)
    if (data_dir / "arc").is_dir():
        _build_arc(data_dir, stage, final)
    if (data_dir / "hellaswag").is_dir():
        rows = read_hellaswag_text(data_dir / "hellaswag" / "hellaswag_val_full.txt.bz2")
        atomic.write_jsonl(stage / "data" / "hellaswag" / "validation.jsonl", rows)
        _write_yaml(stage / "tasks" / "hellaswag_local.yaml",
                    _fill(_read_template("hellaswag_local.yaml"), {"@DATA@": str(final / "data")}))
    if (data_dir / "gsm8k").is_dir():  # already the hub's JSONL schema: read in place
        _write_yaml(stage / "tasks" / "gsm8k_local.yaml",
                    _fill(_read_template("gsm8k_local.yaml"), {"@SOURCE@": str(data_dir / "gsm8k")}))


def _build_mmlu(data_dir: Path, stage: Path, final: Path, categories: dict[str, str]) -> None:
    data_out = stage / "data"
    subjects = mmlu_subjects(data_dir)
    template = _read_template("mmlu_local_subject.yaml")
    for subject in subjects:
        for src_split, split in _MMLU_SPLITS.items():
            rows = read_mmlu_csv(data_dir / "mmlu" / "data" / src_split / f"{subject}_{src_split}.csv",
                                 subject, categories.get(subject, "other"))
            atomic.write_jsonl(data_out / "mmlu" / subject / f"{split}.jsonl", rows)
        values = {"@DATA@": str(final / "data"), "@SUBJECT@": subject,
                  "@SUBJECT_TEXT@": subject.replace("_", " "),
                  "@CATEGORY@": _slug(categories.get(subject, "other"))}
        _write_yaml(stage / "tasks" / "mmlu" / f"{MMLU_PREFIX}{subject}.yaml", _fill(template, values))
    _write_yaml(stage / "tasks" / "mmlu" / "_mmlu_local.yaml", {
        "group": MMLU_GROUP, "task": [MMLU_PREFIX + s for s in subjects],
        "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
        "metadata": {"version": 1.0}})


def _build_arc(data_dir: Path, stage: Path, final: Path) -> None:
    for name in ("ARC-Easy", "ARC-Challenge"):
        short = name.lower().replace("-", "_")
        for src_split, split in _ARC_SPLITS.items():
            rows = read_arc_jsonl(data_dir / "arc" / name / f"{name}-{src_split}.jsonl")
            atomic.write_jsonl(stage / "data" / short / f"{split}.jsonl", rows)
        _write_yaml(stage / "tasks" / f"{short}_local.yaml",
                    _fill(_read_template(f"{short}_local.yaml"), {"@DATA@": str(final / "data")}))


def _read_template(name: str) -> dict[str, Any]:
    return yaml.safe_load((TEMPLATES / name).read_text())


def _fill(node: Any, values: dict[str, str]) -> Any:
    """Replace @KEY@ placeholders inside every string of a parsed YAML tree."""
    if isinstance(node, str):
        for k, v in values.items():
            node = node.replace(k, v)
        return node
    if isinstance(node, dict):
        return {_fill(k, values): _fill(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(x, values) for x in node]
    return node


def _write_yaml(path: Path, obj: dict[str, Any]) -> None:
    atomic.write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, width=10_000))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


# --- readers for the upstream formats ------------------------------------------------

def read_mmlu_csv(path: Path, subject: str, category: str) -> list[dict[str, Any]]:
    """Rows in the hub schema (question, subject, choices, answer index) plus category."""
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for line_no, rec in enumerate(csv.reader(f), 1):
            if len(rec) != 6 or rec[5].strip() not in ("A", "B", "C", "D"):
                raise HarnessError(f"{path}:{line_no}: expected question, A, B, C, D, answer letter; got {rec!r:.200}")
            rows.append({"question": rec[0], "subject": subject, "category": category,
                         "choices": rec[1:5], "answer": "ABCD".index(rec[5].strip())})
    return rows


def read_arc_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows in the hub ai2_arc schema: id, question (the stem), choices{text,label}, answerKey."""
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            choices = d["question"]["choices"]
            rows.append({"id": d["id"], "question": d["question"]["stem"],
                         "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]},
                         "answerKey": d["answerKey"]})
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise HarnessError(f"{path}:{line_no}: not an ARC record: {e}") from e
    return rows


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's hellaswag preprocess: strip WikiHow bracket markup and double spaces.

    >>> hellaswag_preprocess("  Make tea [title] Boil water. [step] Pour it. ")
    'Make tea. Boil water. Pour it.'
    """
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def restore_ctx_b_capital(query: str) -> str:
    """Undo the text copy's missing `ctx_b.capitalize()` (heuristic).

    lm-eval builds ctx_a + " " + ctx_b.capitalize(); the text copy joined them
    without capitalizing. ctx_b is the unfinished last sentence, so the text
    after the last ". " is capitalized when it starts lower-case (as
    str.capitalize would, which also lower-cases the rest).

    >>> restore_ctx_b_capital("Roof shingle removal: A man is sitting on a roof. he")
    'Roof shingle removal: A man is sitting on a roof. He'
    """
    head, sep, tail = query.rpartition(". ")
    if sep and tail[:1].islower():
        return head + sep + tail.capitalize()
    return query


def read_hellaswag_text(path: Path) -> list[dict[str, Any]]:
    """Rows {id, query, choices, label} from the 6-lines-per-item text copy."""
    with bz2.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) % 6:
        raise HarnessError(f"{path}: {len(lines)} lines is not 6 per item (label: ctx, gold, 4 endings)")
    rows = []
    for i in range(0, len(lines), 6):
        gold = lines[i + 1].strip()
        if gold not in ("0", "1", "2", "3"):
            raise HarnessError(f"{path}:{i + 2}: gold label '{gold}' is not 0-3")
        rows.append({"id": f"hellaswag-val-{i // 6}",
                     "query": restore_ctx_b_capital(hellaswag_preprocess(lines[i])),
                     "choices": [hellaswag_preprocess(e) for e in lines[i + 2: i + 6]],
                     "label": int(gold)})
    return rows
