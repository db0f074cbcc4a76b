"""`harness finetune`: train from a YAML config, prep its data alone, or merge an adapter.

    harness finetune CONFIG.yaml [key.path=value ...]
    harness finetune prep CONFIG.yaml [key.path=value ...]
    harness finetune merge ADAPTER_DIR --out DIR [--base BASE] [--dtype float32]

Heavy imports (torch, transformers, trl) happen inside `run`, so `harness --help` stays fast.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from finetune.config import load_config
from finetune.leakage import summarize
from finetune.merge import merge_adapter, print_check
from finetune.prepare import prepare_data, write_prepared
from finetune.train import run_training
from harness.errors import HarnessError
from harness.models.resolve import MANIFEST
from harness.settings import Settings

HELP = "fine-tune a model (lora, qlora, dora, ia3, prompt_tuning, full, dpo) from a YAML config, or merge an adapter"

_EPILOG = """forms:
  harness finetune CONFIG.yaml [key.path=value ...]     train; writes output_dir with harness_manifest.json
  harness finetune prep CONFIG.yaml [key.path=value ...]  data prep and leakage report only
  harness finetune merge ADAPTER_DIR --out DIR [--base BASE] [--dtype float32]
                                                      merge an adapter into full weights, then score the
                                                      merged checkpoint against base+adapter
examples: finetune/configs/*.yaml (each starts with the command that runs it)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument("target", metavar="CONFIG|prep|merge", help="a config file, or 'prep' or 'merge'")
    parser.add_argument("rest", nargs="*", metavar="ARG",
                        help="key.path=value overrides; for prep: CONFIG then overrides; for merge: ADAPTER_DIR")
    parser.add_argument("--out", type=Path, help="merge: the output directory")
    parser.add_argument("--base", help="merge: the base reference (default: from the adapter's manifest)")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"],
                        help="merge: dtype the merged weights are stored in (default auto: the base's; "
                             "float32 keeps the merge exact at twice the bytes of bfloat16)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Dispatch on the form; HarnessError for user errors (the CLI prints one line, exits 2)."""
    if args.target == "merge":
        return _merge(args, settings)
    if args.target == "prep":
        if not args.rest:
            raise HarnessError("finetune prep: missing CONFIG.yaml")
        return _prep(Path(args.rest[0]), args.rest[1:], settings)
    if args.out or args.base or args.dtype:
        raise HarnessError("--out, --base and --dtype belong to 'harness finetune merge'")
    return _train(Path(args.target), args.rest, settings)


def _train(path: Path, overrides: list[str], settings: Settings) -> int:
    cfg = load_config(path, overrides, data_dir=settings.data_dir)
    out = run_training(cfg, settings)
    print(f"wrote {out} (evaluate it as {cfg.base}+{out})" if cfg.method != "full" else f"wrote {out}")
    return 0


def _prep(path: Path, overrides: list[str], settings: Settings) -> int:
    cfg = load_config(path, overrides, data_dir=settings.data_dir)
    prepared = prepare_data(cfg, settings.data_dir)
    out = cfg.work_path() / "data"
    write_prepared(prepared, out)
    r = prepared.report
    print(f"counts: {r['counts']}")
    print("splits: " + ", ".join(f"{k} {v['count']}" for k, v in r["splits"].items()))
    print(f"leakage ({r['leakage']['action']}):\n{summarize(r['leakage']['references'])}", file=sys.stdout)
    print(f"wrote {out}/{{train,validation,test}}.jsonl and report.json")
    return 0


def _merge(args: argparse.Namespace, settings: Settings) -> int:
    if len(args.rest) != 1 or args.out is None:
        raise HarnessError("usage: harness finetune merge ADAPTER_DIR --out DIR [--base BASE] [--dtype float32]")
    out, check = merge_adapter(settings, Path(args.rest[0]), args.out, base=args.base, dtype=args.dtype or "auto")
    print(f"wrote {out} (evaluate it as {out if out.is_absolute() else './' + str(out)})")
    if check is not None:
        # A merge beyond tolerance is a warning, not an error: the checkpoint is written and usable,
        # and the manifest says how far it is from the adapter that was tested.
        print_check(check, json.loads((out / MANIFEST).read_text())["dtype"])
    return 0
