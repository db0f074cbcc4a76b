#!/usr/bin/env bash
# GPU smoke test (bench/gpu_smoke.py): a real vLLM engine with 2 LoRA adapters against hf.
#   bash bench/gpu_smoke.sh [--model REF | --random-from DIR] [--n 64] [--max-new-tokens 128] [--repeats 3]
# Uses the project's .venv when there is one (PYTHON overrides), offline as everywhere else.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then py=$PYTHON; elif [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
exec "$py" bench/gpu_smoke.py "$@"
