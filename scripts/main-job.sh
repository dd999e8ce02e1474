#!/usr/bin/env bash
# The main job, end to end on real data, offline, on a fresh machine:
#   install -> train (Banking77 intents + CoNLL-2003 NER + SST-2 sentiment on all-MiniLM-L6-v2)
#   -> export (int8 + fp32, split) -> predict -> a short benchmark.
# Usage: bash scripts/main-job.sh [DATA_ROOT]      (default: ../shared/data, or $MTST_DATA_ROOT)
# Re-running it resumes a killed training run and reuses what is already finished.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_ROOT=${1:-${MTST_DATA_ROOT:-../shared/data}}
VENV=${MTST_VENV:-.venv}
RUN=${MTST_RUN:-runs/main}
BUNDLE=${MTST_BUNDLE:-bundles/main}

if [ ! -d "$DATA_ROOT/conll2003" ]; then
  echo "main-job: no datasets in $DATA_ROOT (expected conll2003/, sst2/, banking77/ there); pass DATA_ROOT" >&2
  exit 2
fi

echo "== install ($VENV)"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0                      # the CPU build; never let pip pick a CUDA one
python -m pip install -q -e ".[train,export,bench]" -c .ci/constraints.txt
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

echo "== train ($RUN)"
if [ -f "$RUN/test_metrics.json" ]; then
  echo "already trained: $RUN"
elif [ -f "$RUN/latest.json" ]; then
  mtst-train configs/multitask.yaml --data-root "$DATA_ROOT" --output "$RUN" --resume
else
  mtst-train configs/multitask.yaml --data-root "$DATA_ROOT" --output "$RUN"
fi
cat "$RUN/test_metrics.json"

echo "== export ($BUNDLE)"
mtst-export "$RUN/best" -o "$BUNDLE" --quantize int8 --quantize none --split --overwrite

echo "== predict"
mtst-predict "$BUNDLE" --format table --min-entity-score 0.5 \
  "Apple opened a new office in Paris last week." \
  "I still have not received my new card, can you check?" \
  "A gorgeous, witty and deeply moving film."

echo "== bench (short run; docs/benchmarks.md has the full command)"
CORPUS="$(dirname "$DATA_ROOT")/bench/corpus-1000.txt"
if [ -f "$CORPUS" ]; then DATA_ARGS=(--data "$CORPUS"); else DATA_ARGS=(); fi   # else: the bundle's parity sentences
mtst-bench "$BUNDLE" --quick --no-progress "${DATA_ARGS[@]}" -o bench-out/main
echo "main-job: done (run $RUN, bundle $BUNDLE, bench report bench-out/main/report.md)"
