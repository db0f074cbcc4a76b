"""The finetune YAML config: one pydantic model, validated strictly, errors with file, line and key path.

`load_config` reads the YAML, applies `key.path=value` overrides, validates,
and resolves data paths (`{data_dir}` expands to HARNESS_DATA_DIR). Every
error is a `ConfigError` naming the file, the line when the key came from the
file, the key path, the offending value and the valid choices.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import HarnessError

Method = Literal["lora", "qlora", "dora", "ia3", "prompt_tuning", "full", "dpo"]
METHODS: tuple[str, ...] = Method.__args__  # type: ignore[attr-defined]
Benchmark = Literal["mmlu", "arc", "hellaswag"]

# Low learning rates by method: adapters with few parameters tolerate (and need)
# larger steps; full fine-tuning and DPO move every weight or a sharp objective,
# so they get small ones. `train.learning_rate` overrides.
DEFAULT_LR: dict[str, float] = {
    "lora": 2e-4, "qlora": 2e-4, "dora": 2e-4, "ia3": 1e-3, "prompt_tuning": 1e-2,
    "full": 1e-5, "dpo": 5e-6,
}


class ConfigError(HarnessError):
    """A finetune config that fails validation; the message names file, line and key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    train: str
    format: Literal["auto", "alpaca", "messages", "preference", "hh_rlhf"] = "auto"
    validation: str | None = None  # when absent, split off train by validation_fraction
    test: str | None = None
    golden: list[str] = []  # golden-set files checked for leakage, never trained on
    limit: int | None = Field(None, gt=0)  # rows sampled (seeded) from train before prep
    rows: tuple[int, int] | None = None  # [start, stop): only these rows of train are read (hold out the rest)
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.0, ge=0, lt=1)
    stratify_by: str | None = None  # a row field; splits keep its proportions
    near_dup_threshold: float = Field(0.8, gt=0, le=1)  # MinHash Jaccard; 1.0 keeps near-duplicates
    benchmarks: list[Benchmark] = ["mmlu", "arc", "hellaswag"]
    on_leak: Literal["drop", "warn", "error"] = "drop"
    max_length: int = Field(512, gt=8)  # tokens per example after the chat template


class TrainConfig(_Strict):
    learning_rate: float | None = Field(None, gt=0)  # None: DEFAULT_LR[method]
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1)  # -1: run `epochs`
    batch_size: int = Field(4, gt=0)
    grad_accum: int = Field(1, gt=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)  # fraction of total steps
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    max_grad_norm: float = Field(1.0, gt=0)
    eval_every_steps: int = Field(20, gt=0)
    early_stopping_patience: int | None = Field(3, gt=0)  # evals without improvement; None disables
    logging_steps: int = Field(5, gt=0)
    packing: bool = False
    completion_only_loss: bool = True
    neftune_noise_alpha: float | None = Field(None, gt=0)
    gradient_checkpointing: bool = False
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: float32 on CPU, bfloat16 on GPU
    resume: bool = False  # continue from the newest checkpoint in work_dir
    # Keep every intermediate checkpoint (weights only) in OUTPUT_DIR/checkpoints/checkpoint-N,
    # for a forgetting curve: `harness compare --checkpoints OUTPUT_DIR`.
    keep_checkpoints: bool = False
    # The Trainer's experiment tracker (TrainingArguments.report_to), offline by default; its files end up
    # in OUTPUT_DIR/logs/ (finetune/tracking.py). tensorboard and mlflow are extras: llm-harness[tensorboard].
    report_to: Literal["none", "tensorboard", "mlflow", "wandb"] = "none"


class LoraSection(_Strict):
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class QuantSection(_Strict):
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True


class PromptTuningSection(_Strict):
    num_virtual_tokens: int = Field(16, gt=0)
    init_text: str | None = None  # None: random init


class DpoSection(_Strict):
    beta: float = Field(0.1, gt=0)
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    init_adapter: str | None = None  # an SFT adapter dir to continue; it is also the reference


class FinetuneConfig(_Strict):
    base: str  # a model reference without adapter (alias, ./dir, org/name)
    method: Method
    output_dir: str
    work_dir: str | None = None  # checkpoints for resume; default OUTPUT_DIR.work
    seed: int = 0
    data: DataConfig
    train: TrainConfig = TrainConfig()
    lora: LoraSection = LoraSection()  # also used by qlora, dora and dpo
    qlora: QuantSection = QuantSection()
    prompt_tuning: PromptTuningSection = PromptTuningSection()
    dpo: DpoSection = DpoSection()

    @model_validator(mode="after")
    def _check_combinations(self) -> "FinetuneConfig":
        if "+" in self.base:
            raise ValueError("base: pass the base model only; to continue an adapter use dpo.init_adapter")
        if self.train.packing and self.method in ("prompt_tuning", "dpo"):
            raise ValueError(f"train.packing is not supported with method '{self.method}'; set train.packing=false")
        if self.data.validation_fraction + self.data.test_fraction >= 1:
            raise ValueError("data.validation_fraction + data.test_fraction must be < 1")
        return self

    @property
    def learning_rate(self) -> float:
        return self.train.learning_rate or DEFAULT_LR[self.method]

    @property
    def is_preference(self) -> bool:
        return self.method == "dpo"

    def work_path(self) -> Path:
        return Path(self.work_dir) if self.work_dir else Path(self.output_dir + ".work")


def load_config(path: Path, overrides: Sequence[str] = (), *, data_dir: Path) -> FinetuneConfig:
    """Read, override, validate and resolve a finetune config.

    `overrides` are `key.path=value` strings; values are parsed as YAML
    (`train.packing=true`, `lora.r=16`). Data paths may use `{data_dir}`;
    they must exist. Raises ConfigError naming file, line and key path.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', e)})") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    overridden = set()
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{path}: override '{item}' is not KEY.PATH=VALUE")
        _set_path(raw, key.split("."), _parse_value(value), path, item)
        overridden.add(tuple(key.split(".")))
    try:
        cfg = FinetuneConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, path, text, overridden)) from None
    data = cfg.data.model_copy(update={
        "train": _data_path(cfg.data.train, "data.train", data_dir, path, text),
        "validation": _data_path(cfg.data.validation, "data.validation", data_dir, path, text),
        "test": _data_path(cfg.data.test, "data.test", data_dir, path, text),
        "golden": [_data_path(g, f"data.golden.{i}", data_dir, path, text) for i, g in enumerate(cfg.data.golden)],
    })
    dpo = cfg.dpo
    if cfg.dpo.init_adapter:
        dpo = dpo.model_copy(update={"init_adapter": _data_path(dpo.init_adapter, "dpo.init_adapter",
                                                                data_dir, path, text, is_dir=True)})
    return cfg.model_copy(update={"data": data, "dpo": dpo})


def _parse_value(text: str) -> Any:
    """An override's value as YAML (`true`, `16`, `[a, b]`), or the plain string when it is not valid YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _set_path(raw: dict[str, Any], keys: list[str], value: Any, path: Path, item: str) -> None:
    node = raw
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{path}: override '{item}': '{k}' is not a section")
        node = nxt
    node[keys[-1]] = value


def _data_path(value: str | None, key: str, data_dir: Path, path: Path, text: str, *, is_dir: bool = False) -> Any:
    if value is None:
        return None
    resolved = Path(value.replace("{data_dir}", str(data_dir))).expanduser()
    if not (resolved.is_dir() if is_dir else resolved.is_file()):
        kind = "directory" if is_dir else "file"
        raise ConfigError(f"{path}{_line_of(text, key.split('.'))}: {key}: {kind} not found: {resolved}"
                          + (" ({data_dir} is HARNESS_DATA_DIR)" if "{data_dir}" in value else ""))
    return str(resolved)


def _format_errors(e: ValidationError, path: Path, text: str, overridden: set[tuple[str, ...]]) -> str:
    lines = []
    for err in e.errors():
        loc = [str(x) for x in err["loc"]]
        key = ".".join(loc) or "(top level)"
        where = " (from override)" if tuple(loc) in overridden else _line_of(text, loc)
        kind, ctx, value = err["type"], err.get("ctx", {}), err.get("input")
        if kind == "extra_forbidden":
            msg = f"{key}: unknown key; remove it or check the spelling"
        elif kind == "missing":
            msg = f"{key}: required key missing"
        elif kind == "literal_error":
            msg = f"{key}: unknown value {value!r}; choose {ctx.get('expected', '')}"
        elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
            bound = next(iter(ctx.values()), "?")
            msg = f"{key} must be {op} {bound}, got {value!r}"
        elif kind == "value_error":
            msg = str(ctx.get("error", err["msg"]))
        else:
            msg = f"{key}: {err['msg'].lower()}, got {value!r}"
        lines.append(f"{path}{where}: {msg}")
    return "; ".join(lines)


def _line_of(text: str, keys: Sequence[str]) -> str:
    """':LINE' of a key path in the YAML text (the deepest key found), or '' when unknown."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return ""
    line = None
    for k in keys:
        if isinstance(node, yaml.MappingNode):
            match = next(((kn, vn) for kn, vn in node.value if kn.value == k), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and k.isdigit() and int(k) < len(node.value):
            node = node.value[int(k)]
            line = node.start_mark.line + 1
        else:
            break
    return f":{line}" if line else ""
