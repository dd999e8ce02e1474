#!/usr/bin/env bash
# The tests, from a fresh clone in a plain shell: make (or reuse) the venv with the dev extras, lint,
# type-check, build the C++ runtime (+ ctest), then run every test (slow ones included). CI (.ci/run)
# calls exactly this.
# Usage: bash scripts/test.sh [PYTEST ARGS...]      e.g. bash scripts/test.sh tests/runtime -x
# Environment: MTST_VENV (default .venv, the main job's venv is reused), MTST_DATA_ROOT (the folder with
# conll2003/, sst2/, banking77/ ...; default: ../shared/data beside this checkout, or beside the repository
# it was cloned from), MTST_SKIP_LINT=1 (no lint/types), MTST_SKIP_CPP=1 (no C++ build; tests/cpp then skip).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${MTST_VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"

# Install only when the requirements changed since the last install into this venv.
want=$(cat pyproject.toml .ci/constraints.txt | sha256sum | cut -c1-16)
stamp="$VENV/.mtst-dev-$want"
if [ ! -f "$stamp" ]; then
  echo "== install dev extras into $VENV"
  python -m pip install -q --upgrade pip
  # The CPU build of torch lies on disk; pin it here (not for library users) so pip never pulls a CUDA build.
  python -m pip install -q torch==2.13.0
  python -m pip install -q -e ".[dev]" -c .ci/constraints.txt
  # The Triton server of the serving test (tests/export/test_triton_server.py): nvidia-pytriton's
  # tritonserver runs the Python-backend model in an environment of its own holding the base install of
  # mtst, with numpy<2 (the 2.51 Python backend stub garbles string tensors under numpy 2). Only the
  # package's server binary is used, so it goes in without its (numpy<2) client dependencies.
  triton_env="$VENV/tritonserver-env"
  [ -x "$triton_env/bin/python" ] || python3 -m venv "$triton_env"
  sed 's/^numpy==.*/numpy==1.26.4/' .ci/constraints.txt > "$triton_env/constraints.txt"
  "$triton_env/bin/python" -m pip install -q -e . -c "$triton_env/constraints.txt"
  "$triton_env/bin/python" -m pip install -q --no-deps nvidia-pytriton -c "$triton_env/constraints.txt"
  rm -f "$VENV"/.mtst-dev-* && touch "$stamp"
fi
export MTST_TRITON_ENV; MTST_TRITON_ENV=$(cd "$VENV/tritonserver-env" && pwd)

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -z "${MTST_DATA_ROOT:-}" ]; then
  candidates=(../shared/data)
  # a clone made from a local checkout: the data beside that checkout
  origin=$(git config --get remote.origin.url 2>/dev/null || true)
  [ -n "$origin" ] && [ -d "$origin" ] && candidates+=("$origin/../shared/data")
  for d in "${candidates[@]}"; do
    if [ -d "$d/conll2003" ]; then MTST_DATA_ROOT=$(cd "$d" && pwd); export MTST_DATA_ROOT; break; fi
  done
fi
echo "data root: ${MTST_DATA_ROOT:-<not found: set MTST_DATA_ROOT; the real-data tests will fail>}"

if [ "${MTST_SKIP_LINT:-0}" != 1 ]; then
  echo "== lint and types"
  make check
fi
if [ "${MTST_SKIP_CPP:-0}" != 1 ]; then
  # The C++ runtime (runtime/cpp): system packages, configure (ONNX Runtime headers from npm, the library
  # from the onnxruntime wheel installed above), build, ctest. pytest then compares it with the Python
  # runtime (tests/cpp); MTST_REQUIRE_CPP makes a missing build fail those tests instead of skipping.
  echo "== C++ runtime"
  missing=""
  for pair in cmake:cmake g++:g++ ninja:ninja-build npm:npm; do
    command -v "${pair%%:*}" >/dev/null || missing="$missing ${pair#*:}"
  done
  for deb in nlohmann-json3-dev libssl-dev; do
    dpkg -s "$deb" >/dev/null 2>&1 || missing="$missing $deb"
  done
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    # shellcheck disable=SC2086
    $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends $missing
  fi
  CPP_BUILD=${MTST_CPP_BUILD:-build}
  cmake -S . -B "$CPP_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMTST_PYTHON="$(command -v python)"
  cmake --build "$CPP_BUILD" -j2
  ctest --test-dir "$CPP_BUILD" --output-on-failure
  export MTST_CPP_BUILD="$CPP_BUILD" MTST_REQUIRE_CPP=1
fi

echo "== tests"
python -m pytest "$@"
