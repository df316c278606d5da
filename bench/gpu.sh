#!/usr/bin/env bash
# GPU check of the main job, in one short run: `enface run` on lfw_dev + every fixture photo with
# ENFACE_PROVIDERS=cuda (onnxruntime's CUDA provider for detection and the batched embedder), printing
# images/s and faces/s (bench/throughput.py's table, without the CPU peer and the per-core floor).
#
#   bash bench/gpu.sh                 # venv .venv-gpu next to the repo, onnxruntime-gpu from PyPI
#   WHEELHOUSE=/path bash bench/gpu.sh   # offline machine: wheels (onnxruntime-gpu and the project's deps) there
#   LFW=500 bash bench/gpu.sh         # the first 500 lfw_dev photos only
#
# Needs: an NVIDIA GPU with its driver (nvidia-smi), the models in ~/.cache/enface-batch/models
# (`enface models fetch` once, or that folder copied), and the data under ENFACE_TEST_DATA (../shared/data).
# onnxruntime and onnxruntime-gpu must not share a venv, so this one gets only the GPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpu}
PIP_OPTS=()
if [ -n "${WHEELHOUSE:-}" ]; then PIP_OPTS=(--no-index --find-links "$WHEELHOUSE"); fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "no GPU here"; exit 2; }
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "${PIP_OPTS[@]}" -e '.[gpu]'
  "$VENV/bin/pip" uninstall -q -y onnxruntime || true   # the CPU build would shadow the GPU one
  "$VENV/bin/pip" install -q "${PIP_OPTS[@]}" --force-reinstall --no-deps 'onnxruntime-gpu>=1.20'
fi
"$VENV/bin/python" - <<'PY'
import onnxruntime as ort
have = ort.get_available_providers()
print("onnxruntime", ort.__version__, "providers", have)
assert "CUDAExecutionProvider" in have, "the CUDA provider is missing: check onnxruntime-gpu and the CUDA libraries"
PY
export ENFACE_DET_BATCH=${DET_BATCH:-32} ENFACE_BATCH_SIZE=${BATCH_SIZE:-64}
export ENFACE_PROVIDERS=cuda DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
# One worker feeds the GPU (batched embedder; ENFACE_BATCH_SIZE sets the batch), decoding on its threads.
"$VENV/bin/python" bench/throughput.py --skip-peer --skip-floor --runner threads ${LFW:+--lfw "$LFW"}
