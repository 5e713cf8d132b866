"""``mfv2 train``: train or distil a tracker from a YAML config, on one process or under ``torchrun``."""

from __future__ import annotations

import argparse
import json
import os

HELP = "train a MixFormerV2 (or a MixViT teacher) from a YAML config; several processes via torchrun"
EXAMPLE = (
    "mfv2 train --config tiny_synthetic --output runs/tiny\n"
    "  mfv2 train --config stage1.yaml --output runs/s1 --resume\n"
    "  torchrun --standalone --nproc_per_node=2 -m mfv2 train --config stage1.yaml --output runs/s1\n"
    "  mfv2 train --config tiny_synthetic --benchmark 20 --set data.num_workers=2"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="CFG",
                   help="YAML file, or the name of a shipped config (tiny_synthetic, mixvit_tiny_synthetic, "
                        "mixvit_b_teacher, mixformerv2_b_stage1, mixformerv2_b_supervised)")
    p.add_argument("--output", metavar="DIR",
                   help="run folder for checkpoints and logs (default: $MFV2_TRAIN_OUTPUT, the config's output, "
                        "or runs/train)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT",
                   help="continue the run in --output (its checkpoints/latest.pth), or from CKPT")
    p.add_argument("--official", action="store_true", help="also write checkpoints in the official {'net': ...} layout")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides the config)")
    p.add_argument("--workers", type=int, metavar="N", help="DataLoader workers per process (overrides the config)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.epochs=10 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--benchmark", type=int, metavar="N",
                   help="instead of training, time N data batches and a few optimisation steps, print JSON")


def run(args: argparse.Namespace) -> int:
    from mfv2.errors import ConfigError
    from mfv2.training import Trainer, load_train_config

    overrides = list(args.set)
    if args.device:
        overrides.append(f"device={args.device}")
    if args.workers is not None:
        if args.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {args.workers}")
        overrides.append(f"data.num_workers={args.workers}")
    if args.official:
        overrides.append("official_checkpoint=true")
    if args.no_progress:
        overrides.append("progress=false")
    cfg = load_train_config(args.config, overrides)
    if args.benchmark is not None:
        if args.benchmark < 1:
            raise ConfigError(f"--benchmark needs a number of batches >= 1, got {args.benchmark}")
        from mfv2.training.throughput import measure_throughput

        speed = measure_throughput(cfg, batches=args.benchmark)
        print(json.dumps({**speed.to_dict(), "bound": speed.bound}, indent=2))
        return 0
    output = args.output or os.environ.get("MFV2_TRAIN_OUTPUT") or cfg.output
    from mfv2.fileio import check_output_dir

    check_output_dir(output or "runs/train")  # an unwritable run folder fails now, not after building the data
    trainer = Trainer(cfg, output, resume=args.resume)
    result = trainer.fit()
    if trainer.dist.is_main:
        last = result.history[-1] if result.history else {}
        iou = last.get("val/IoU", last.get("train/IoU"))
        print(f"trained to epoch {result.epoch} in {result.output}"
              + (f"; IoU {iou:.3f}" if iou is not None else "")
              + (f"; checkpoint {result.last_checkpoint}" if result.last_checkpoint else ""))
    return 0
