#!/usr/bin/env bash
# Issue #23's target table in one run (~5 min on a quiet 2-core host, 8 at most; before it, a
# preparation step exports S into mfv2's bench cache once, 2-4 min, seconds when cached): S at 2 threads, the official path against
# every gated ONNX Runtime / OpenVINO path, model only and tracker loop, idle and beside one
# busy-looping process; what backend=auto picks; the int8 trackers against fp32 on the demo model
# over 64 synthetic clips. Writes bench.{json,md}, accuracy.{json,md}, targets.{json,md} into OUT.
#
# Usage: bash benchmarks/cpu_profile/quiet_run.sh [OUT]   (default benchmarks/cpu_profile/quiet)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-benchmarks/cpu_profile/quiet}
mkdir -p "$OUT"
echo "prepare $(date -u +%FT%TZ), $(uptime)" | tee "$OUT/load.txt"
.venv/bin/mfv2 bench --variant S --threads 2 --backends onnxruntime,openvino --precisions fp32,int8 --graphs split \
  --mode model --iters 1 --warmup 0 --no-auto > "$OUT/prepare.log" 2>&1
echo "start $(date -u +%FT%TZ), $(uptime)" | tee -a "$OUT/load.txt"
timeout 480 .venv/bin/mfv2 bench --variant S --threads 2 --backends onnxruntime,openvino --precisions fp32,int8 \
  --graphs split --mode model,tracker --background-load 1 --duration 3 --frames 80 --warmup 5 \
  --json "$OUT/bench.json" --markdown "$OUT/bench.md"
echo "bench done $(date -u +%FT%TZ), $(uptime)" | tee -a "$OUT/load.txt"
timeout 240 .venv/bin/python benchmarks/cpu_profile/accuracy.py "$OUT" --clips 64 --frames 100
.venv/bin/python benchmarks/cpu_profile/targets.py "$OUT"
# The attention-int8 lever (item 3), same run, on the bench's S export.
S_EXPORT=$(ls -dt "${MFV2_CACHE:-$HOME/.cache/mfv2}"/bench/S-*/ | head -1)
timeout 120 .venv/bin/python benchmarks/cpu_profile/attention_int8.py "$S_EXPORT" "$OUT" || echo "attention_int8 did not finish"
echo "end $(date -u +%FT%TZ), $(uptime)" | tee -a "$OUT/load.txt"
