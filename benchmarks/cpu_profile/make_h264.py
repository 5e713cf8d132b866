"""Real H.264 files for ``mfv2 bench --mode video`` (issue #23 item 6): the synthetic clip at 720p and 1080p.

OpenCV's pip wheels encode no H.264 (no libx264/openh264), so the clip is written losslessly-ish with
OpenCV's mp4v encoder and transcoded with the ffmpeg binary of ``imageio-ffmpeg`` (libx264, yuv420p,
CRF 23, the defaults people ship video with); ``pip install imageio-ffmpeg`` for this script only.
The files are checked to decode as H.264 with OpenCV.

Usage: .venv/bin/python benchmarks/cpu_profile/make_h264.py OUT_DIR [--frames 150]
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import cv2

from mfv2.synthetic import make_sequence

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


def main() -> None:
    import imageio_ffmpeg

    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--frames", type=int, default=150)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (w, h) in SIZES.items():
        seq = make_sequence(num_frames=args.frames, width=w, height=h, seed=0, backgrounds="procedural")
        raw = args.out / f"clip_{name}.mp4v.mp4"
        writer = cv2.VideoWriter(str(raw), cv2.VideoWriter.fourcc(*"mp4v"), 30, (w, h))
        for i in range(len(seq)):
            writer.write(seq.frame(i))
        writer.release()
        dst = args.out / f"clip_{name}.h264.mp4"
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(raw), "-c:v", "libx264",
                        "-pix_fmt", "yuv420p", "-crf", "23", str(dst)], check=True)  # fmt: skip
        raw.unlink()
        cap = cv2.VideoCapture(str(dst))
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        if fourcc.lower() not in ("avc1", "h264"):
            raise SystemExit(f"{dst} decodes as {fourcc!r}, not H.264")
        print(f"{dst}: {w}x{h}, {count} frames, {fourcc}, {dst.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
