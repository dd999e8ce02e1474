#!/usr/bin/env bash
# The GPU check in one command (docs/gpu.md): install the carried onnxruntime-gpu, prove CUDA is active,
# export (or take) an fp32 + fp16 bundle, measure mtst on CUDA beside torch fp16 / torch.compile, write
# report.json, report.md and PNGs to $OUT. Meant to finish within 8 minutes on the lent H200.
#
#   bash scripts/gpu-check.sh                 # on the GPU machine, after the parts were carried
#   bash scripts/gpu-check.sh --dry-run ...   # the same steps on CPU (CI: tests/bench/test_gpu_check.py)
#
# Options: --bundle DIR (skip the export), --checkpoint DIR (default: the carried checkpoint),
# --data FILE (default: the carried or shared corpus-1000.txt), --out DIR (default: $OUT or ./gpu-check-out),
# --carry DIR... (folders holding carried parts; default: .carry /tmp/ortgpu), --sentences N, --corpus N.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY=0
BUNDLE=""
CHECKPOINT=""
DATA=""
OUTDIR="${OUT:-$ROOT/gpu-check-out}"
CARRY=("$ROOT/.carry" /tmp/ortgpu)
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY=1; shift ;;
        --bundle) BUNDLE="$2"; shift 2 ;;
        --checkpoint) CHECKPOINT="$2"; shift 2 ;;
        --data) DATA="$2"; shift 2 ;;
        --out) OUTDIR="$2"; shift 2 ;;
        --carry) CARRY=("$2"); shift 2 ;;
        --sentences|--corpus|--rounds|--cold-runs|--warmup) EXTRA+=("$1" "$2"); shift 2 ;;
        *) echo "gpu-check: unknown option $1" >&2; exit 2 ;;
    esac
done
abspath() { if [[ -n "$1" ]]; then realpath -m "$1"; fi; }
BUNDLE="$(abspath "$BUNDLE")"; CHECKPOINT="$(abspath "$CHECKPOINT")"; DATA="$(abspath "$DATA")"
OUTDIR="$(abspath "$OUTDIR")"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mtst-gpu-check.XXXXXX")"
mkdir -p "$OUTDIR"
START=$(date +%s)
step() { echo "== $(( $(date +%s) - START ))s: $*"; }

# 1. mtst importable from this tree (no install, no build tools needed)
"$PY" "$ROOT/scripts/carry.py" farm "$WORK/site" > /dev/null
export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
cd "$WORK"  # not the repository root: its mtst/ folder (without runtime/, export/...) would shadow the farm
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# 2. carried files: joined and sha256-checked; wheels installed without dependencies in front of the image's
if [[ $DRY -eq 0 ]]; then
    step "joining carried parts from ${CARRY[*]}"
    "$PY" "$ROOT/scripts/carry.py" join --from "${CARRY[@]}" --to "$WORK/carried"
    shopt -s nullglob
    wheels=("$WORK"/carried/*.whl)
    [[ ${#wheels[@]} -gt 0 ]] || { echo "gpu-check: no wheel was carried (onnxruntime-gpu)" >&2; exit 3; }
    step "installing ${wheels[*]##*/}"
    if "$PY" -m pip --version > /dev/null 2>&1; then
        "$PY" -m pip install --quiet --no-deps --no-index --target "$WORK/deps" "${wheels[@]}"
    else  # no pip in the image: a wheel unpacked is an installed package (these have no scripts to run)
        for w in "${wheels[@]}"; do "$PY" -m zipfile -e "$w" "$WORK/deps"; done
    fi
    export PYTHONPATH="$WORK/deps:$PYTHONPATH"
    # the CUDA 13 libraries that torch's wheels brought (cuBLAS, cuDNN, ...), for every process started
    # from here (mtst-bench's cold start imports no torch); onnxruntime-gpu links against them
    NV_LIBS="$("$PY" -c "import glob, os, nvidia; print(':'.join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(os.path.join(d, '**', 'lib*.so*'), recursive=True)})))" 2>/dev/null || true)"
    export LD_LIBRARY_PATH="${NV_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "CUDA libraries from torch's wheels: ${NV_LIBS:-none found}"
    for tarball in "$WORK"/carried/*.tar; do tar -xf "$tarball" -C "$WORK/carried"; done
    [[ -n "$CHECKPOINT" ]] || CHECKPOINT="$WORK/carried/checkpoint"
    [[ -n "$DATA" || ! -f "$WORK/carried/corpus-1000.txt" ]] || DATA="$WORK/carried/corpus-1000.txt"
fi
[[ -n "$DATA" ]] || DATA="${MTST_BENCH_CORPUS:-../shared/bench/corpus-1000.txt}"
[[ -n "$CHECKPOINT" ]] || { echo "gpu-check: --checkpoint is needed" >&2; exit 2; }

# 3. the providers ONNX Runtime really has; CUDA must be there unless this is the dry run
step "onnxruntime providers"
PROVIDER=cuda
[[ $DRY -eq 1 ]] && PROVIDER=cpu
"$PY" - "$PROVIDER" <<'EOF'
import sys
import torch  # noqa: F401  (the CUDA 13 libraries of torch's wheels, for onnxruntime-gpu)
import onnxruntime as ort
have = ort.get_available_providers()
print(f"onnxruntime {ort.__version__} from {ort.__file__}: {have}")
if sys.argv[1] == "cuda" and "CUDAExecutionProvider" not in have:
    sys.exit("gpu-check: CUDA NOT ACTIVE: CUDAExecutionProvider missing (the CPU onnxruntime shadows the GPU one?)")
EOF

# 4. the bundle: fp32 + fp16 variants, TensorRT profiles from the corpus
if [[ -z "$BUNDLE" ]]; then
    step "exporting $CHECKPOINT (fp32 + fp16)"
    BUNDLE="$WORK/bundle"
    "$PY" -c "import sys; from mtst.export.cli import main; sys.argv[0] = 'mtst-export'; main()" \
        "$CHECKPOINT" -o "$BUNDLE" --quantize none --quantize fp16 --no-accuracy-guard \
        --trt-profiles-from "$DATA" --no-progress > "$OUTDIR/export.log" 2>&1 \
        || { tail -30 "$OUTDIR/export.log" >&2; exit 4; }
fi
cp "$BUNDLE/manifest.json" "$OUTDIR/bundle-manifest.json"

# 5. the measurements
step "measuring on $PROVIDER"
ARGS=(--bundle "$BUNDLE" --checkpoint "$CHECKPOINT" --data "$DATA" --out "$OUTDIR" --provider "$PROVIDER")
[[ $DRY -eq 1 ]] && ARGS+=(--dry-run --sentences 12 --corpus 48 --rounds 1 --cold-runs 1 --warmup 2)
"$PY" "$ROOT/scripts/gpu_check.py" "${ARGS[@]}" "${EXTRA[@]}"
step "done: $OUTDIR/report.md"
rm -rf "$WORK"
