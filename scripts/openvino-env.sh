#!/usr/bin/env bash
# The OpenVINO peers' environment for mtst-bench (--compare openvino / all), beside the dev one:
# optimum-intel wants optimum 2.3 (mtst[compare]'s optimum-onnx takes 2.1 only), and it requires
# torchvision, whose PyPI build is CUDA's and breaks `import transformers` beside CPU torch. So:
# CPU torch first, optimum-intel without its dependencies, then mtst[openvino] under its own pins.
# Usage: bash scripts/openvino-env.sh [VENV]   (default .venv-openvino), then
#        MTST_BENCH_OPENVINO_PYTHON=VENV/bin/python mtst-bench ... --compare all
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-openvino}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q torch==2.13.0          # the CPU build; never let pip pull a CUDA one
"$VENV/bin/python" -m pip install -q --no-deps optimum-intel -c .ci/constraints-openvino.txt
"$VENV/bin/python" -m pip install -q -e ".[openvino]" -c .ci/constraints-openvino.txt
"$VENV/bin/python" -c "import openvino, nncf, optimum.intel, mtst.bench.peer_worker; print('openvino', openvino.__version__)"
echo "export MTST_BENCH_OPENVINO_PYTHON=$(cd "$VENV" && pwd)/bin/python"
