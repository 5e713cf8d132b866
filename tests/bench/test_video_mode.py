"""``mfv2 bench --mode video``: a real encoded file, decoded on a background thread while the tracker runs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mfv2.bench.rows import run_row


def test_video_row_times_decode_plus_tracker(tiny_export, tmp_path):
    from mfv2.synthetic import make_sequence

    seq = make_sequence(num_frames=20, width=320, height=240, seed=0, backgrounds="procedural")
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30, (320, 240))
    for i in range(len(seq)):
        writer.write(seq.frame(i))
    writer.release()
    spec = {"backend": "onnxruntime", "artifact": str(tiny_export), "precision": "fp32", "threads": 1, "graph": "split",
            "mode": "video", "video": str(path), "frames": 15, "warmup": 2}  # fmt: skip
    res = run_row(spec)
    assert res["status"] == "ok", res["status"]
    assert res["size"] == "320x240" and res["count"] == 13 and len(res["boxes"]) == 16  # init + 15 updates
    assert 0 < res["update_ms"] <= res["median_ms"] * 1.5 and res["decode_ms"] > 0
    assert np.isfinite(np.asarray(res["boxes"])).all()
    too_short = run_row({**spec, "warmup": 30})
    assert "too few frames" in too_short["status"]
