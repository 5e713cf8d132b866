"""``mfv2 distill``: run a MixFormerV2 distillation route (teacher -> stage 1 -> pruning -> ... -> score)."""

from __future__ import annotations

import argparse
import os

HELP = "run a distillation route (B, S, demo_s or a route YAML), stage by stage, resumable"
EXAMPLE = (
    "mfv2 distill --route demo_s --output runs/demo\n"
    "  mfv2 distill --route S --output runs/s --teacher mixvit_b_224.pth --scale 0.01\n"
    "  mfv2 distill --route B --output runs/b --dry-run"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--route", required=True, metavar="ROUTE",
                   help="a shipped route (B, S, demo_s) or a route YAML file")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="run folder: one sub-folder per stage, final.pt and log.csv; rerun to resume")
    p.add_argument("--teacher", metavar="CKPT", help="a trained teacher checkpoint instead of training the 'teacher' stage")
    p.add_argument("--given", action="append", default=[], metavar="STAGE=CKPT",
                   help="use CKPT as the output of STAGE instead of training it (repeatable); the stages before it are not trained")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply epochs and samples per epoch of every stage, for small runs (default 1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value in every stage's config, e.g. --set data.num_workers=2 (repeatable)")
    p.add_argument("--stop-after", metavar="STAGE", help="stop after this stage")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N for every stage")
    p.add_argument("--threads", type=int, metavar="N", help="torch intra-op threads of the training process")
    p.add_argument("--dry-run", action="store_true", help="print the resolved stages (init, teacher, output) and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _given(args: argparse.Namespace) -> dict[str, str]:
    from mfv2.errors import ConfigError

    given: dict[str, str] = {}
    for item in args.given:
        stage, sep, path = item.partition("=")
        if not sep or not stage or not path:
            raise ConfigError(f"--given expects STAGE=CKPT, e.g. --given stage1=runs/s/02_stage1/final.pt; got {item!r}")
        given[stage] = path
    if args.teacher:
        given["teacher"] = args.teacher
    return given


def run(args: argparse.Namespace) -> int:
    from mfv2.errors import ConfigError
    from mfv2.training.models import MODEL_KINDS
    from mfv2.training.routes import load_route, plan_route, run_route

    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    route = load_route(args.route)
    overrides = list(args.set)
    if args.device:
        overrides.append(f"device={args.device}")
    given = _given(args)
    if args.dry_run:
        for s in plan_route(route, args.output, scale=args.scale, overrides=overrides, given=given):
            if s.given:
                print(f"{s.index:2d}. {s.name:<12} given: {s.output}")
                continue
            o = s.config.get("optim", {})
            init = s.spec.init
            if init.source:
                start = init.source + (f" (MLP sliced to ratio {init.mlp_ratio:g})" if init.mlp_ratio else "")
                start += f" (search factor {init.search_factor:g})" if init.search_factor else ""
            else:
                kind = MODEL_KINDS.get(s.kind)
                cfg = kind.named(kind.config(init.fresh), s.spec.model_name)
                start = f"fresh {kind.title}-{cfg.name} ({cfg.describe()})"
                start += f" (backbone from {init.backbone_from})" if init.backbone_from else ""
                start += f" (backbone from MAE {init.mae})" if init.mae else ""
            print(f"{s.index:2d}. {s.name:<12} {s.config.get('objective', {}).get('name', 'supervised'):<15} "
                  f"from {start}; teacher {s.spec.teacher or '-'}; {o.get('epochs')} epochs x "
                  f"{s.config.get('data', {}).get('samples_per_epoch')} samples -> {s.output}")
        return 0
    import torch

    from mfv2.fileio import check_output_dir

    check_output_dir(args.output)  # an unwritable route folder fails now, not after the first stage
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_route(route, args.output, scale=args.scale, overrides=overrides, given=given,
                       stop_after=args.stop_after, progress=False if args.no_progress else None)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return 0
    if result.final is not None:
        print(f"route {route.name} done: {result.final}")
    else:
        print(f"route {route.name} stopped after stage {args.stop_after}; rerun without --stop-after to continue")
    return 0
