"""``mfv2 export``: checkpoint -> ONNX (full + split graphs), fp16/int8 ONNX and OpenVINO IR, with parity."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "export a checkpoint to ONNX (full and split template-KV graphs), fp16/int8 and OpenVINO, with parity checks"
EXAMPLE = "mfv2 export --checkpoint mixformerv2_small.pth.tar --output exports/S --precision fp32,fp16,int8 --openvino fp32,int8"

_MAX_FRAMES = 64


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="official .pth.tar or mfv2 .pt checkpoint")
    src.add_argument("--random-init", action="store_true", help="seeded random weights of --variant (demos, tests)")
    p.add_argument("--output", required=True, help="export directory to create")
    p.add_argument("--variant", help="S, B, tiny, ... (default: detect from the checkpoint; S with --random-init)")
    p.add_argument("--batch", type=_batch, default=1, metavar="N|dynamic",
                   help="targets tracked per call: a fixed batch N (default 1; TensorRT needs one), or 'dynamic' "
                        "(any number, ONNX Runtime and OpenVINO)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default 17)")
    p.add_argument("--allow-low-opset", action="store_true", help="accept opsets < 17 (TensorRT fp16 may overflow)")
    p.add_argument("--precision", default="fp32", help="ONNX precisions, comma-separated: fp32,fp16,int8 (default fp32)")
    p.add_argument("--openvino", default="", help="OpenVINO IR precisions, comma-separated: fp32,fp16,int8 (default none)")
    p.add_argument("--simplify", default="onnxsim", choices=["onnxsim", "onnxslim", "none"], help="graph simplifier")
    p.add_argument("--preset", help="tracker preset whose crop factors go into the manifest (lasot, got10k, ...)")
    p.add_argument(
        "--calibration", help="video file or image folder: real frames for parity crops and int8 calibration "
        "(default: a synthetic clip)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of random weights, inputs and the synthetic clip")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument(
        "--skip-failed", action="store_true",
        help="leave out a low-precision variant that misses its parity gate (listed under 'rejected' in the "
        "manifest) instead of failing the export; fp32 always fails the export",
    )  # fmt: skip


def _read_frames(path: str) -> list[Any]:
    """Up to ``_MAX_FRAMES`` BGR frames from an image folder or a video file."""
    import cv2

    from mfv2.errors import ConfigError
    from mfv2.fileio import IMAGE_SUFFIXES

    p = Path(path)
    frames = []
    if p.is_dir():
        for f in sorted(x for x in p.iterdir() if x.suffix.lower() in IMAGE_SUFFIXES)[:_MAX_FRAMES]:
            image = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if image is not None:
                frames.append(image)
    elif p.is_file():
        cap = cv2.VideoCapture(str(p))
        while len(frames) < _MAX_FRAMES:
            ok, image = cap.read()
            if not ok:
                break
            frames.append(image)
        cap.release()
    else:
        raise ConfigError(f"--calibration {p} does not exist; pass a video file or a folder of images")
    if len(frames) < 2:
        raise ConfigError(f"--calibration {p} gave {len(frames)} readable frame(s); at least 2 are needed")
    return frames


def run(args: argparse.Namespace) -> int:
    from mfv2.config import TrackerConfig
    from mfv2.errors import ConfigError
    from mfv2.exporters import export
    from mfv2.artifacts import load_manifest

    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise ConfigError(f"checkpoint {args.checkpoint} does not exist; pass the path of a .pth.tar or mfv2 .pt file")
    tracker = None
    if args.preset:
        variant = args.variant or "S"
        tracker = TrackerConfig.preset(args.preset, variant)
    frames = _read_frames(args.calibration) if args.calibration else None
    out = export(
        None if args.random_init else args.checkpoint,
        args.output,
        variant=args.variant,
        batch=args.batch,
        opset=args.opset,
        allow_low_opset=args.allow_low_opset,
        precisions=args.precision.split(","),
        openvino=[p for p in args.openvino.split(",") if p.strip()],
        simplify=args.simplify,
        tracker=tracker,
        calibration=frames,
        seed=args.seed,
        overwrite=args.overwrite,
        skip_failed=args.skip_failed,
    )
    manifest = load_manifest(out)
    print(f"exported MixFormerV2-{manifest.model.name} to {out}")
    print("errors against PyTorch fp32 on real tracker crops (boxes: fraction of the crop side); IoU: mean over the crops")
    print(f"{'file':34s} {'MB':>7s} {'boxes err':>10s} {'score err':>10s} {'mean IoU':>9s}")
    for a in manifest.artifacts:
        size = (out / a.file).stat().st_size + ((out / a.file).with_suffix(".bin").stat().st_size if a.format == "openvino" else 0)
        iou = f"{a.parity['iou_mean']:.3f}" if "iou_mean" in a.parity else "n/a"
        print(f"{a.file:34s} {size / 1e6:7.1f} {a.parity.get('crop_boxes', float('nan')):10.2e} "
              f"{a.parity.get('crop_score', float('nan')):10.2e} {iou:>9s}")  # fmt: skip
    for r in manifest.rejected:
        print(f"{r['file']:34s} not written: parity gate missed ({'; '.join(r['failed'])})")
    print(f"next: mfv2 track VIDEO --model {out} --init x,y,w,h   |   on a GPU: mfv2 build-engine {out} --fp16")
    return 0


def _batch(text: str) -> int | str:
    """``--batch``: an integer (checked by the export) or ``dynamic``."""
    if text == "dynamic":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch must be a positive integer or 'dynamic', got {text!r}") from None
