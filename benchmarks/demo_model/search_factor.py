"""The shipped demo model's AUC against its search-crop factor, on clip families of another generator.

The model records a search factor of 3.0, chosen on clips of its own training generator
(``mfv2.synthetic``'s default clips, ``mfv2/assets/README.md``). This sweeps the factor on the
validation seed (12) of the nine training families of ``mfv2.synthetic.families`` (clips the shipped
model never trained on; no held-out family is used to choose) and reports the held-out families
(seed 2026) beside it, with per-clip paired differences against 3.0. ONNX Runtime fp32, one thread;
AUC over every frame, the first included, as `heldout.py` computes it.

Usage: .venv/bin/python benchmarks/demo_model/search_factor.py OUT_DIR [--factors 2.25,2.5,2.75,3.0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from mfv2.assets import demo_checkpoint
from mfv2.evaluation.metrics import paired_difference, sequence_errors, success_curve
from mfv2.runtimes import cached_export, load_backend
from mfv2.synthetic import HELD_OUT_FAMILIES, TRAINING_FAMILIES, family_sequences
from mfv2.tracking import Tracker

SPLITS = {"validation (seed 12)": (TRAINING_FAMILIES, 12, 64, 20), "held out (seed 2026)": (HELD_OUT_FAMILIES, 2026, 64, 40)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--factors", default="2.25,2.5,2.75,3.0")
    args = p.parse_args()
    factors = [float(f) for f in args.factors.split(",")]
    runner = load_backend("onnxruntime", cached_export(demo_checkpoint()), threads=1)
    recorded = runner.manifest.tracker
    report: dict[str, dict] = {}
    lines = [f"# Demo model AUC by search factor (recorded: {recorded.search_factor:g})", ""]
    for split, (families, seed, clips, frames) in SPLITS.items():
        auc: dict[float, dict[str, np.ndarray]] = {f: {} for f in factors}
        for family in families:
            seqs = family_sequences(family, clips, frames, seed=seed)
            images = [[s.frame(i) for i in range(len(s))] for s in seqs]
            for factor in factors:
                cfg, a = dataclasses.replace(recorded, search_factor=factor), []
                for seq, frames_ in zip(seqs, images):
                    tracker = Tracker(runner, cfg)
                    tracker.init(frames_[0], tuple(float(v) for v in seq.boxes[0]))
                    boxes = np.asarray([seq.boxes[0], *(tracker.update(f)[1] for f in frames_[1:])], dtype=np.float64)
                    a.append(100.0 * float(np.mean(success_curve(sequence_errors(boxes, seq.boxes, seq.visible).iou))))
                auc[factor][family] = np.asarray(a)
        base = auc[recorded.search_factor] if recorded.search_factor in auc else auc[factors[-1]]
        lines += [f"## {split}: {len(families)} families x {clips} clips x {frames} frames", "",
                  "| search factor | " + " | ".join(families) + " | mean | paired vs recorded, all clips (+- SE) |",
                  "|---" * (len(families) + 3) + "|"]  # fmt: skip
        report[split] = {}
        for factor in factors:
            d = paired_difference(np.concatenate([auc[factor][f] for f in families]), np.concatenate([base[f] for f in families]))
            mean = float(np.mean([auc[factor][f].mean() for f in families]))
            report[split][str(factor)] = {"per_family": {f: float(auc[factor][f].mean()) for f in families}, "mean": mean,
                                          "paired_vs_recorded": d.mean, "paired_se": d.se if d.clips > 1 else 0.0}  # fmt: skip
            lines.append(f"| {factor:g} | " + " | ".join(f"{auc[factor][f].mean():.1f}" for f in families)
                         + f" | {mean:.1f} | {d.mean:+.2f} +- {report[split][str(factor)]['paired_se']:.2f} |")  # fmt: skip
        lines.append("")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search_factor.json").write_text(json.dumps(report, indent=1))
    (args.out / "search_factor.md").write_text("\n".join(lines))
    print("\n".join(lines))
    runner.close()


if __name__ == "__main__":
    main()
