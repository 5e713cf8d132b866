#!/usr/bin/env bash
# Issue #23's target table in one run (~5 min on a quiet 2-core AVX-512 VNNI host, ~40 with AVX2 only; before it, a
# preparation step exports S into mfv2's bench cache once, 2-4 min, seconds when cached): S at 2 threads, the official path against
# every gated ONNX Runtime / OpenVINO path, model only and tracker loop, idle and beside one
# busy-looping process; what backend=auto picks; the int8 trackers against fp32 on the demo model
# over 64 synthetic clips; end to end on real H.264 720p/1080p files; B at 2 threads. Writes bench.{json,md},
# accuracy.{json,md}, targets.{json,md}, attention_int8.json, video_{720p,1080p}.{json,md}, B.{json,md} into OUT.
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
# 20 rows of about 20 s (VNNI) to 35 s (AVX2 only, slower torch rows) each, plus the auto choice.
timeout 1500 .venv/bin/mfv2 bench --variant S --threads 2 --backends onnxruntime,openvino --precisions fp32,int8 \
  --graphs split --mode model,tracker --background-load 1 --duration 3 --frames 80 --warmup 5 \
  --json "$OUT/bench.json" --markdown "$OUT/bench.md" || { echo "S bench did not finish" | tee -a "$OUT/load.txt"; exit 1; }
echo "bench done $(date -u +%FT%TZ), $(uptime)" | tee -a "$OUT/load.txt"
timeout 240 .venv/bin/python benchmarks/cpu_profile/accuracy.py "$OUT" --clips 64 --frames 100
.venv/bin/python benchmarks/cpu_profile/targets.py "$OUT"
# The attention-int8 lever (item 3), same run, on the bench's S export.
# The bench's S export: the newest folder of the export cache whose manifest names model S.
S_EXPORT=$(.venv/bin/python - <<'PY'
import json
from mfv2.fileio import cache_dir
dirs = sorted(cache_dir("exports").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime, reverse=True)
print(next((str(p.parent) for p in dirs if json.loads(p.read_text())["model"]["name"] == "S"), ""))
PY
)
timeout 120 .venv/bin/python benchmarks/cpu_profile/attention_int8.py "$S_EXPORT" "$OUT" || echo "attention_int8 did not finish"
# End to end on real H.264 files (item 6): decode on a background thread + the tracker, 720p and 1080p,
# beside the tracker loop alone, the path auto picks on this machine. Needs imageio-ffmpeg's ffmpeg
# (PYTHONPATH or the venv); skipped with a line when it is missing.
if .venv/bin/python -c "import imageio_ffmpeg" 2>/dev/null; then
  .venv/bin/python benchmarks/cpu_profile/make_h264.py "$OUT/video" --frames 150
  for size in 720p 1080p; do
    timeout 900 .venv/bin/mfv2 bench --variant S --threads 2 --backends onnxruntime,openvino --precisions int8 \
      --graphs split --mode tracker,video --video "$OUT/video/clip_$size.h264.mp4" --frames 150 --warmup 5 --no-auto \
      --json "$OUT/video_$size.json" --markdown "$OUT/video_$size.md"
  done
  rm -rf "$OUT/video"
else
  echo "video mode skipped: pip install imageio-ffmpeg (or PYTHONPATH) to write the H.264 files" | tee -a "$OUT/load.txt"
fi
echo "video done $(date -u +%FT%TZ), $(uptime)" | tee -a "$OUT/load.txt"
# B (item 7): the same comparison at 2 threads, model only and tracker loop, idle only.
timeout 900 .venv/bin/mfv2 bench --variant B --threads 2 --backends torch,onnxruntime,openvino --precisions fp32,int8 \
  --graphs split,full --mode model,tracker --duration 3 --frames 60 --warmup 3 --no-auto \
  --json "$OUT/B.json" --markdown "$OUT/B.md" || echo "B bench did not finish" | tee -a "$OUT/load.txt"
echo "end $(date -u +%FT%TZ), $(uptime)" | tee -a "$OUT/load.txt"
