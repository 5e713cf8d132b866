#!/usr/bin/env bash
# Install mfv2 into the active Python environment with the given extras, then check the result.
# The docker images run this script, and CI runs it in a fresh virtual environment, so the image
# recipe is tested even where no docker engine runs.
#
#   docker/install.sh [SRC] [EXTRAS]      e.g. docker/install.sh . onnxruntime,openvino
set -euo pipefail
src=${1:-.}
extras=${2:-onnxruntime,openvino}
python -m pip install --upgrade pip >/dev/null
python -m pip install "${src}[${extras}]"
# The tracking runtime must work without torch unless an extra asked for it.
python - "$extras" <<'PY'
import sys

import mfv2.runtimes
import mfv2.tracking

extras = set(sys.argv[1].split(","))
backends = mfv2.runtimes.available_backends()
print("mfv2 backends:", ", ".join(backends))
if not extras & {"torch", "onnx", "train", "all"} and "torch" in sys.modules:
    sys.exit("the runtime imported torch although no torch extra was installed")
for extra, backend in (("onnxruntime", "onnxruntime"), ("openvino", "openvino"), ("tensorrt", "tensorrt")):
    if extra in extras and backend not in backends:
        sys.exit(f"extra {extra!r} installed but backend {backend!r} is not available")
PY
mfv2 --help >/dev/null
