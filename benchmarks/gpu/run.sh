#!/usr/bin/env bash
# The GPU check of issue 25, in one command on a CUDA machine (about 5-7 minutes on one H200):
#
#     bash benchmarks/gpu/run.sh [OUT_DIR] [gpu_check.py options]
#
# OUT_DIR defaults to $OUT, else benchmarks/gpu/out. It runs mfv2 from this source tree (PYTHONPATH),
# installs nothing and needs only torch (a CUDA build), numpy, opencv-python-headless, pyyaml, tqdm.
# Exit status: 0 every gate passed, 1 a gate failed or a section broke, 2 no CUDA (nothing measured).
# "bash benchmarks/gpu/run.sh OUT --dry-run" checks the script itself on a CPU (tiny model, no GPU figures).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${OUT:-$root/benchmarks/gpu/out}"
if [[ $# -gt 0 && "$1" != -* ]]; then out="$1"; shift; fi
mkdir -p "$out"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"
status=0
"$python" "$here/gpu_check.py" "$out" "$@" 2>&1 | tee "$out/log.txt" || status=$?
# The TensorRT section (issue 26): only where TensorRT is importable, never in a dry run.
if [[ " $* " != *" --dry-run "* && -f "$here/tensorrt_check.py" ]] && "$python" -c "import tensorrt" 2>/dev/null; then
    trt=0
    "$python" "$here/tensorrt_check.py" "$out/tensorrt" 2>&1 | tee "$out/tensorrt_log.txt" || trt=$?
    if [[ $status -eq 0 ]]; then status=$trt; fi
fi
exit "$status"
