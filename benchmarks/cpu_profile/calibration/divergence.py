"""Why closed-loop agreement collapses: tracks part only after a search crop window moves by a pixel.

Tracks the ``mfv2 eval --synthetic`` clips (seed 0) with the demo model (ONNX Runtime fp32), once as is
and once with seeded Gaussian noise of ``--sigma`` (crop units) on every box, and reports how many
clips part (some frame's IoU between the two tracks < 0.9) and in how many of those the two
trackers' crop windows (whole pixels, as the official tracker rounds them) differed at or before
that frame. While the windows agree, both networks see the same pixels and the tracks differ only
by the noise.

Usage: .venv/bin/python benchmarks/cpu_profile/calibration/divergence.py [--clips 32] [--frames 100] [--sigma 1e-5]
"""

from __future__ import annotations

import argparse

import numpy as np

from mfv2.assets import demo_checkpoint
from mfv2.geometry.boxes import iou_continuous
from mfv2.runtimes import cached_export, load_backend
from mfv2.synthetic import benchmark_sequences
from mfv2.tracking.tracker import TargetState


def _track(runner, seq, sigma: float, seed: int) -> tuple[list[tuple[int, int, int]], np.ndarray]:  # noqa: ANN001
    """Crop windows and boxes of frames 1.. with noise ``sigma`` on every predicted box."""
    rng = np.random.default_rng(seed)
    state = TargetState.from_manifest(runner.manifest.tracker, runner.manifest)
    state.init(seq.frame(0), tuple(float(v) for v in seq.boxes[0]))
    runner.set_templates(state.template, state.online)
    windows, boxes = [], []
    for i in range(1, len(seq)):
        image = seq.frame(i)
        crop = state.crop(image)
        windows.append(crop.window)
        b, s = runner.predict(state.normalize(crop.image))
        state.post(crop, b[0] + rng.normal(0.0, sigma, 4).astype(b.dtype), float(s[0]), runner.backend)
        boxes.append(state.box)
        if state.update_templates(image):
            runner.set_templates(state.template, state.online)
    return windows, np.asarray(boxes)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--sigma", type=float, default=1e-5)
    args = p.parse_args()
    runner = load_backend("onnxruntime", cached_export(demo_checkpoint()), threads=1)
    parted = window_first = 0
    for k, seq in enumerate(benchmark_sequences(args.clips, args.frames, seed=0)):
        w0, b0 = _track(runner, seq, 0.0, k)
        w1, b1 = _track(runner, seq, args.sigma, k)
        low = np.flatnonzero(iou_continuous(b1, b0) < 0.9)
        if len(low):
            parted += 1
            moved = [i for i, (a, b) in enumerate(zip(w0, w1)) if a != b]
            window_first += bool(moved) and moved[0] <= low[0]
    print(f"noise {args.sigma:g}: {parted} of {args.clips} clips parted below IoU 0.9; in {window_first} of them a crop "
          "window had moved by a whole pixel at or before that frame")  # fmt: skip
    runner.close()


if __name__ == "__main__":
    main()
