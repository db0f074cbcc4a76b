"""The training recipe: setup, train, save. One function, `run_training`, for every method.

    setup   resolve the base (hash it), prep the data, load the model for the
            method (4-bit NF4 for qlora), build the PEFT config and the trainer
            (TRL SFTTrainer, or DPOTrainer for dpo)
    train   validation loss before training and every eval_every_steps, early
            stopping on it, checkpoints in work_dir for resume; one progress bar
            (the Trainer's per-step log dicts go to the log file) and the
            validation losses printed at the end
    save    adapter (or full weights), tokenizer and harness_manifest.json into
            output_dir in one atomic rename; the work dir is then removed

The same entry runs under `accelerate launch`: Trainer handles the processes,
every rank preps the same data (seeded), and only the main process writes.
"""
from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from finetune.chat import preference_row, tokenize_split
from finetune.config import FinetuneConfig
from finetune.prepare import PreparedData, prepare_data, write_splits
from finetune.tracking import LOGS, check_tracker, tracker_env
from harness import atomic, logs
from harness.errors import HarnessError
from harness.extras import env_defaults
from harness.models.resolve import MANIFEST, ResolvedModel, check_adapter, hash_files, resolve
from harness.settings import Settings

log = logging.getLogger(__name__)
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_training(cfg: FinetuneConfig, settings: Settings) -> Path:
    """Train per `cfg` and write the checkpoint to cfg.output_dir; returns that path.

    Raises HarnessError for a bad base, data or adapter, and when work_dir
    holds checkpoints but train.resume is false (so an earlier run's progress
    is never silently overwritten).
    """
    import torch
    import transformers

    t0 = time.time()
    logs.quiet_libraries()  # datasets' map bars and transformers' "Loading weights" stay off the terminal
    transformers.set_seed(cfg.seed)
    resolved = resolve(settings, cfg.base)
    if resolved.ref.kind == "openai":
        raise HarnessError(f"base '{cfg.base}': an OpenAI endpoint cannot be fine-tuned here; use a local checkpoint")
    if cfg.dpo.init_adapter:
        check_adapter(Path(cfg.dpo.init_adapter), Path(resolved.base_path), resolved.base_hash, base_label=cfg.base)
    work = cfg.work_path()
    checkpoints = sorted(work.glob("checkpoint-*"))
    if checkpoints and not cfg.train.resume:
        raise HarnessError(f"{work} holds checkpoints of an earlier run; pass train.resume=true to continue it, "
                           "or delete the folder to start over")

    check_tracker(cfg.train.report_to)

    prepared = prepare_data(cfg, settings.data_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolved.base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model, peft_config = _load_model(cfg, resolved)
    # The tracker callbacks read their settings from the environment when built and when training starts.
    with env_defaults(tracker_env(cfg.train.report_to, work / LOGS, os.environ)):
        trainer, n_tokens = _build_trainer(cfg, model, peft_config, tokenizer, prepared, work)
        _print_plan(cfg, prepared, n_tokens, trainer)
        has_validation = bool(prepared.splits["validation"])
        initial_eval = trainer.evaluate() if has_validation and not checkpoints else None
        result = trainer.train(resume_from_checkpoint=bool(checkpoints) or None)
    history = _loss_history(trainer.state.log_history, initial_eval)
    if trainer.is_world_process_zero():
        _print_losses(history)
    wall_s = time.time() - t0
    train_s = float(result.metrics.get("train_runtime", wall_s))
    tokens_seen = int(trainer.state.num_input_tokens_seen or 0)

    manifest = {
        "harness_manifest_version": 1,
        "kind": "full" if cfg.method == "full" else "adapter",
        "base": {"ref": cfg.base, "hash": resolved.base_hash, "path": resolved.base_path},
        "method": cfg.method,
        "hyperparameters": {**cfg.model_dump(mode="json"), "effective_learning_rate": cfg.learning_rate},
        "init_adapter": ({"path": cfg.dpo.init_adapter,
                          "hash": hash_files(Path(cfg.dpo.init_adapter), _ADAPTER_FILES)}
                         if cfg.dpo.init_adapter else None),
        "data": prepared.report,
        "loss_history": history,
        "best_validation_loss": min((p["loss"] for p in history["validation"]), default=None),
        "steps": trainer.state.global_step,
        # Early stopping ends the run before the planned last step.
        "stopped_early": trainer.state.global_step < trainer.state.max_steps,
        "wall_s": round(wall_s, 2),
        "train_s": round(train_s, 2),
        "tokens_seen": tokens_seen,
        "tokens_per_s": round(tokens_seen / train_s, 1) if train_s > 0 else None,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "versions": {m: sys.modules[m].__version__ for m in ("torch", "transformers", "peft", "trl") if m in sys.modules},
        "command": " ".join(sys.argv),
    }
    out = Path(cfg.output_dir)
    state_dict = trainer.accelerator.get_state_dict(trainer.model) if cfg.method == "full" else None
    if trainer.is_world_process_zero():
        _save(cfg, trainer.model, tokenizer, manifest, out, state_dict, resolved, prepared)
        shutil.rmtree(work, ignore_errors=True)
    return out


def _dtype(cfg: FinetuneConfig) -> Any:
    import torch

    if cfg.train.dtype != "auto":
        return getattr(torch, cfg.train.dtype)
    # CPU training in bf16 loses small updates (and is slow on most CPUs): float32 there.
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32


def _load_model(cfg: FinetuneConfig, resolved: ResolvedModel) -> tuple[Any, Any]:
    """The model to train and the PEFT config to wrap it with (None for full or a continued adapter)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = _dtype(cfg)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if cfg.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=cfg.qlora.quant_type,
            bnb_4bit_use_double_quant=cfg.qlora.double_quant, bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": "cuda" if torch.cuda.is_available() else "cpu"}
    model = AutoModelForCausalLM.from_pretrained(resolved.base_path, **kwargs)
    if cfg.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.train.gradient_checkpointing)
    if cfg.method == "dpo" and cfg.dpo.init_adapter:
        from peft import PeftModel

        # Continue the SFT adapter; TRL copies it as the frozen reference ("ref" adapter).
        return PeftModel.from_pretrained(model, cfg.dpo.init_adapter, is_trainable=True), None
    return model, build_peft_config(cfg)


def build_peft_config(cfg: FinetuneConfig) -> Any:
    """The PEFT config for the method; None for full fine-tuning."""
    from peft import IA3Config, LoraConfig, PromptTuningConfig, PromptTuningInit, TaskType

    lo = cfg.lora
    if cfg.method in ("lora", "qlora", "dora", "dpo"):
        return LoraConfig(task_type=TaskType.CAUSAL_LM, r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout,
                          target_modules=lo.target_modules, use_dora=cfg.method == "dora")
    if cfg.method == "ia3":
        # PEFT knows llama's key/value/down_proj targets; other architectures need lora.target_modules.
        targets = None if lo.target_modules == "all-linear" else lo.target_modules
        return IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=targets,
                         feedforward_modules=[t for t in targets if "down" in t or "mlp" in t] if targets else None)
    if cfg.method == "prompt_tuning":
        pt = cfg.prompt_tuning
        return PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM, num_virtual_tokens=pt.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT if pt.init_text else PromptTuningInit.RANDOM,
            prompt_tuning_init_text=pt.init_text, tokenizer_name_or_path=cfg.base if pt.init_text else None)
    return None


def _build_trainer(cfg: FinetuneConfig, model: Any, peft_config: Any, tokenizer: Any,
                   prepared: PreparedData, work: Path) -> tuple[Any, int]:
    """The TRL trainer and the number of training tokens in one epoch."""
    from datasets import Dataset
    from transformers import EarlyStoppingCallback

    t = cfg.train
    has_validation = bool(prepared.splits["validation"])
    common = dict(
        output_dir=str(work), seed=cfg.seed, data_seed=cfg.seed, learning_rate=cfg.learning_rate,
        num_train_epochs=t.epochs, max_steps=t.max_steps, per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
        warmup_steps=t.warmup_ratio, weight_decay=t.weight_decay, lr_scheduler_type=t.lr_scheduler,
        max_grad_norm=t.max_grad_norm, logging_steps=t.logging_steps, logging_first_step=True,
        eval_strategy="steps" if has_validation else "no", eval_steps=t.eval_every_steps,
        save_strategy="steps", save_steps=t.eval_every_steps,
        save_total_limit=None if t.keep_checkpoints else 2,
        load_best_model_at_end=has_validation and t.early_stopping_patience is not None,
        metric_for_best_model="eval_loss", greater_is_better=False,
        # disable_tqdm: the Trainer's bars (train, every evaluation) and log dicts give way to _progress_callback.
        gradient_checkpointing=t.gradient_checkpointing, report_to=t.report_to, run_name=Path(cfg.output_dir).name,
        disable_tqdm=True,
        bf16=str(_dtype(cfg)) == "torch.bfloat16", use_cpu=not _has_cuda(),
        include_num_input_tokens_seen="non_padding", dataloader_num_workers=0,
        save_only_model=False, remove_unused_columns=True,
    )
    callbacks = ([EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience)]
                 if has_validation and t.early_stopping_patience is not None else [])
    callbacks.append(_progress_callback())
    splits = prepared.splits
    if cfg.method == "dpo":
        from trl import DPOConfig, DPOTrainer


        args = DPOConfig(**common, beta=cfg.dpo.beta, loss_type=[cfg.dpo.loss_type], max_length=cfg.data.max_length)
        train_ds = Dataset.from_list([preference_row(ex) for ex in splits["train"]])
        eval_ds = Dataset.from_list([preference_row(ex) for ex in splits["validation"]]) if has_validation else None
        trainer = DPOTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                             processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
        _without_log_printer(trainer)
        cols = trainer.train_dataset.column_names
        n_tokens = sum(len(p) + len(c) + len(r) for p, c, r in zip(
            *(trainer.train_dataset[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")))) \
            if {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(cols) else 0
        return trainer, n_tokens

    from trl import SFTConfig, SFTTrainer


    train_rows, dropped = tokenize_split(tokenizer, splits["train"], cfg.data.max_length)
    eval_rows, _ = tokenize_split(tokenizer, splits["validation"], cfg.data.max_length)
    prepared.report["counts"]["dropped_too_long"] = dropped
    if not train_rows:
        raise HarnessError(f"{cfg.data.train}: every training example is longer than data.max_length="
                           f"{cfg.data.max_length} tokens in its prompt; raise data.max_length")
    args = SFTConfig(**common, max_length=cfg.data.max_length, packing=t.packing, packing_strategy="bfd",
                     completion_only_loss=t.completion_only_loss, neftune_noise_alpha=t.neftune_noise_alpha,
                     dataset_num_proc=None)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                         eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                         processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
    _without_log_printer(trainer)
    return trainer, sum(len(r["input_ids"]) for r in train_rows)


def _progress_callback() -> Any:
    """A TrainerCallback drawing one bar over the training steps, the latest training and validation
    loss as its postfix, on the main process only."""
    from transformers import TrainerCallback

    class OneBar(TrainerCallback):
        bar: Any = None
        shown: dict[str, str] = {}

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                self.shown = {}
                self.bar = logs.progress(total=state.max_steps, initial=state.global_step, desc="training",
                                         unit="step")

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            log.info("step %d: %s", state.global_step, logs)  # the per-step dicts, in the log file
            if self.bar is not None and logs:
                for key, label in (("loss", "loss"), ("eval_loss", "validation")):
                    if isinstance(logs.get(key), (int, float)):
                        self.shown[label] = f"{logs[key]:.3f}"
                self.bar.set_postfix(self.shown, refresh=False)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return OneBar()


def _without_log_printer(trainer: Any) -> None:
    """With disable_tqdm the Trainer prints every log dict (PrinterCallback); the bar replaces it."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def _print_losses(history: dict[str, list]) -> None:
    """The validation losses, one line: before training (step 0), at each evaluation, and the best."""
    val = history["validation"]
    if val:
        steps = ", ".join(f"{p['loss']:.4f} (step {p['step']})" for p in val)
        print(f"validation loss: {steps}; best {min(p['loss'] for p in val):.4f}", file=sys.stderr)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _print_plan(cfg: FinetuneConfig, prepared: PreparedData, n_tokens: int, trainer: Any) -> None:
    # Derived quantities before a long run, so a wrong config is caught in seconds.
    n_train = len(prepared.splits["train"])
    per_step = cfg.train.batch_size * cfg.train.grad_accum * trainer.args.world_size
    steps = cfg.train.max_steps if cfg.train.max_steps > 0 else int(-(-n_train // per_step) * cfg.train.epochs)
    trainable, total = _param_counts(trainer.model)
    leak = prepared.report["leakage"]
    print(f"finetune {cfg.method} on {cfg.base}: {n_train} train / {len(prepared.splits['validation'])} validation "
          f"examples, {n_tokens} train tokens per epoch, ~{steps} steps of {per_step} examples, "
          f"lr {cfg.learning_rate:g}, {trainable:,} of {total:,} parameters trainable "
          f"({100 * trainable / max(total, 1):.2f}%), leakage: {leak['train_flagged']} flagged ({leak['action']})",
          file=sys.stderr)


def _param_counts(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def _loss_history(log_history: list[dict[str, Any]], initial_eval: dict[str, float] | None) -> dict[str, list]:
    train = [{"step": e["step"], "loss": e["loss"]} for e in log_history if "loss" in e and "step" in e]
    validation = [{"step": 0, "loss": initial_eval["eval_loss"]}] if initial_eval else []
    validation += [{"step": e["step"], "loss": e["eval_loss"]} for e in log_history if "eval_loss" in e]
    return {"train": train, "validation": validation}


def _save(cfg: FinetuneConfig, model: Any, tokenizer: Any, manifest: dict[str, Any], out: Path,
          state_dict: Any, resolved: ResolvedModel, prepared: PreparedData) -> None:
    atomic.remove_stale_staging(out.parent)
    with atomic.staged_dir(out) as stage:
        if cfg.method == "full":
            import torch

            # Save in the base's stored dtype (bf16 for SmolLM2): what evaluation loads, half the bytes of fp32.
            base_cfg = json.loads((Path(resolved.base_path) / "config.json").read_text())
            base_dtype = base_cfg.get("dtype") or base_cfg.get("torch_dtype")
            dtype = getattr(torch, base_dtype) if isinstance(base_dtype, str) else None
            if dtype is not None:
                model = model.to(dtype)
                state_dict = {k: v.to(dtype) for k, v in state_dict.items()} if state_dict else None
            model.save_pretrained(stage, state_dict=tie_shared(model, state_dict), safe_serialization=True)
        else:
            model.save_pretrained(stage, selected_adapters=["default"], safe_serialization=True)
        tokenizer.save_pretrained(stage)
        # The exact splits trained and validated on, so held-out loss can be recomputed from the checkpoint.
        write_splits(prepared, stage / "data")
        atomic.write_json(stage / MANIFEST, manifest)
        if (cfg.work_path() / LOGS).is_dir():  # the tracker's files (train.report_to), kept with the checkpoint
            shutil.copytree(cfg.work_path() / LOGS, stage / LOGS)
        if cfg.train.keep_checkpoints:
            _keep_checkpoints(cfg.work_path(), stage / "checkpoints", manifest)


def tie_shared(model: Any, state_dict: dict[str, Any] | None) -> dict[str, Any] | None:
    """The state dict with each tied key (lm_head.weight when config.tie_word_embeddings) pointing at
    its source tensor again. Converting the dtype or gathering the state copies tensors one by one,
    so lm_head became a second copy of the embeddings (325 MB against the base's 272 MB); aliased,
    save_pretrained stores it once, as it does for a model's own state dict."""
    if not state_dict or not getattr(model.config, "tie_word_embeddings", False):
        return state_dict
    tied = model.get_expanded_tied_weights_keys()
    return {k: state_dict[tied[k]] if tied.get(k) in state_dict else v for k, v in state_dict.items()}


# Trainer checkpoints also hold optimizer, scheduler and RNG state as pickles; kept checkpoints are weights only.
_CHECKPOINT_SKIP = ("*.pt", "*.pth", "*.bin", "trainer_state.json")


def _keep_checkpoints(work: Path, dest: Path, manifest: dict[str, Any]) -> None:
    """Copy each work/checkpoint-N's safetensors weights, configs and tokenizer to dest/checkpoint-N,
    with a manifest naming the base and the step, so each loads as a model reference of its own."""
    for ckpt in sorted(work.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1])):
        target = dest / ckpt.name
        shutil.copytree(ckpt, target, ignore=shutil.ignore_patterns(*_CHECKPOINT_SKIP))
        step = int(ckpt.name.rsplit("-", 1)[1])
        atomic.write_json(target / MANIFEST, {
            "harness_manifest_version": 1, "kind": manifest["kind"], "base": manifest["base"],
            "method": manifest["method"], "step": step, "checkpoint_of": manifest["command"]})
