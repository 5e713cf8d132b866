"""The #22 targets run: ``bench_targets`` (S; ORT and OpenVINO, int8 split and fp32; 1, 2, 4, 8 targets) path by path.

It takes the batch-1, dynamic and fixed-8 exports from ``--exports`` (folders ``mfv2 bench --targets`` left in
its cache) instead of exporting again, and writes the JSON after each path, so a run cut short keeps its rows.
Usage: python benchmarks/multi_target/run.py --exports ~/.cache/mfv2/bench --key S-seed0-batch{}-fp32_int8-ovfp32_int8-0.1.0-b06c6531fcad
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mfv2.bench import targets

PATHS = (("onnxruntime", "int8"), ("openvino", "int8"), ("onnxruntime", "fp32"), ("openvino", "fp32"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--exports", type=Path, required=True)
    p.add_argument("--key", required=True, help="export folder name with {} for the batch (1, dynamic, 8)")
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("targets.json"))
    args = p.parse_args()
    exports = {name: args.exports / args.key.format(batch) for name, batch in (("single", 1), ("dynamic", "dynamic"), ("fixed", 8))}
    targets._exports = lambda variant, paths, cache, fixed: exports  # the given folders, not a new export
    report: dict = {"rows": [], "exports": {k: str(v) for k, v in exports.items()}}
    for path in PATHS:
        part = targets.bench_targets("S", targets=(1, 2, 4, 8), paths=[path], frames=args.frames, warmup=2, rounds=2)
        report["env"] = part["env"]
        report["rows"] += part["rows"]
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(targets.format_targets(report["rows"]), flush=True)


if __name__ == "__main__":
    main()
