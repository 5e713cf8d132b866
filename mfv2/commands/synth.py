"""``mfv2 synth``: write deterministic synthetic clips with ground truth (one sequence or a LaSOT-style benchmark)."""

from __future__ import annotations

import argparse
import re

HELP = "write deterministic synthetic tracking clips with ground truth (LaSOT, GOT-10k, OTB or VOT layout)"
EXAMPLE = "mfv2 synth data/synthetic --frames 300 --seed 0 --sequences 8 --out-of-view"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="OUT", help="output directory (must be empty or absent unless --overwrite)")
    p.add_argument("--frames", type=int, default=300, help="frames per sequence (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files (default 0)")
    p.add_argument("--size", default="480x360", metavar="WxH", help="frame size in pixels (default 480x360)")
    p.add_argument("--sequences", type=int, default=1,
                   help="number of sequences; above 1 writes OUT/synthetic/synthetic-<k>/ and OUT/testing_set.txt")
    p.add_argument("--layout", choices=("lasot", "frames", "got10k", "otb", "vot"), default="lasot",
                   help="lasot: img/ + groundtruth.txt + flags; frames: one sequence's images and groundtruth.txt "
                   "in OUT; got10k (val/ with the label files and meta_info.ini), otb, vot (a VOT workspace's "
                   "sequences/ folder): the benchmark in that toolkit's layout")
    p.add_argument("--ext", choices=(".jpg", ".png"), default=".jpg", help="image format (default .jpg)")
    p.add_argument("--no-occlusion", action="store_true", help="no occluder passing over the target")
    p.add_argument("--distractors", type=int, default=1, help="similar-looking objects (default 1)")
    p.add_argument("--clutter", type=int, default=0, help="other objects, with textures of their own (default 0)")
    p.add_argument("--out-of-view", action="store_true", help="the target leaves the frame and comes back")
    p.add_argument("--backgrounds", choices=("auto", "photo", "procedural"), default="auto",
                   help="photo needs scikit-image; auto uses photos when it is installed (default auto)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")


def _parse_size(text: str) -> tuple[int, int]:
    from mfv2.errors import ConfigError

    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise ConfigError(f"--size expects WIDTHxHEIGHT such as 480x360, got {text!r}")
    width, height = int(m.group(1)), int(m.group(2))
    if min(width, height) < 48:
        raise ConfigError(f"--size {text} is too small: width and height must be at least 48 pixels")
    return width, height


def run(args: argparse.Namespace) -> int:
    from mfv2.datasets.synthetic import write_benchmark, write_sequence
    from mfv2.errors import ConfigError
    from mfv2.fileio import check_output_dir
    from mfv2.synthetic import make_sequence

    width, height = _parse_size(args.size)
    if args.sequences < 1:
        raise ConfigError(f"--sequences must be >= 1, got {args.sequences}")
    check_output_dir(args.out, overwrite=args.overwrite)  # before rendering: a file or read-only OUT fails now
    opts = dict(height=height, width=width, occlusion=not args.no_occlusion, distractors=args.distractors,
                clutter=args.clutter, out_of_view=args.out_of_view, backgrounds=args.backgrounds)
    if args.layout in ("got10k", "otb", "vot") or args.sequences > 1:
        if args.layout == "frames":
            raise ConfigError("--layout frames writes a single sequence; use --sequences 1 or --layout lasot")
        path = write_benchmark(args.out, args.layout, num_sequences=args.sequences, num_frames=args.frames,
                               seed=args.seed, ext=args.ext, overwrite=args.overwrite, **opts)
    else:
        seq = make_sequence(num_frames=args.frames, seed=args.seed, **opts)
        path = write_sequence(seq, args.out, layout=args.layout, ext=args.ext, overwrite=args.overwrite)
    print(f"wrote {args.sequences} sequence(s), {args.sequences * args.frames} frames to {path}")
    return 0
