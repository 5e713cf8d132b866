"""``mfv2 eval``: one-pass evaluation on a tracking dataset (or a synthetic one), resumable."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mfv2.commands._common import add_model_options, add_runtime_options

HELP = "run a tracker over a dataset (LaSOT, GOT-10k, TrackingNet, OTB, UAV123, VOT, synthetic) and score it (OPE)"
EXAMPLE = "mfv2 eval data/LaSOTTest --backend onnxruntime --model exports/S --results results/S-ort --json S-ort.json --plot S-ort.png"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", nargs="?", help="dataset folder (with --synthetic: where to write the synthetic one)")
    p.add_argument("--kind", help="lasot, got10k, trackingnet, otb, uav, vot, synthetic (default: detect the layout)")
    p.add_argument("--split", help="GOT-10k train/val/test or TrackingNet TEST/TRAIN_<i>")
    p.add_argument("--synthetic", type=int, metavar="N", help="generate a synthetic benchmark of N clips and evaluate on it")
    p.add_argument("--frames", type=int, default=300, help="frames per synthetic clip (default 300)")
    add_model_options(p, checkpoint_help="checkpoint (torch; other backends export it on the fly); default without "
                      "--model and --baseline: the shipped demo model",
                      variant_help="architecture of --checkpoint (default: detect)")
    p.add_argument("--baseline", metavar="NAME", help="score a reference tracker instead of a model: static (the first "
                   "box in every frame), mil (OpenCV), kcf or csrt (opencv-contrib-python)")
    add_runtime_options(p, device=False)  # TrackerSpec carries no device yet
    p.add_argument("--preset", help="tracker settings of this dataset (default: the dataset's own)")
    p.add_argument("--results", help="result folder (default results/<dataset>/<model>-<backend>-<precision>)")
    p.add_argument("--no-resume", action="store_true", help="re-run sequences that already have results")
    p.add_argument("--no-run", action="store_true", help="only score existing results (the shards written into one "
                   "--results folder are scored as one run)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="track sequences in N processes, each with "
                   "its own model and (without --threads) its share of the cores (default 1)")
    p.add_argument("--shard", metavar="I/N", help="track and score only shard I of N (every N-th sequence from the "
                   "I-th, 1-based), e.g. one per machine; then --no-run on the shared --results folder merges them")
    p.add_argument("--json", help="write the scores as JSON")
    p.add_argument("--plot", help="write success and precision plots (PNG)")
    p.add_argument("--compare", nargs="+", default=[], metavar="DIR", help="other result folders to score and plot alongside")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _synthetic_root(args: argparse.Namespace) -> Path:
    from mfv2.errors import ConfigError
    from mfv2.fileio import cache_dir
    from mfv2.datasets.synthetic import write_benchmark

    if args.synthetic < 1:
        raise ConfigError(f"--synthetic needs a positive number of clips, got {args.synthetic}")
    default = cache_dir("synthetic")
    root = Path(args.dataset) if args.dataset else default / f"n{args.synthetic}-f{args.frames}-s0"
    if (root / "testing_set.txt").is_file():
        have = len((root / "testing_set.txt").read_text().split())
        if have != args.synthetic:
            raise ConfigError(f"{root} holds a synthetic benchmark of {have} clips, not {args.synthetic}; choose another folder")
        return root
    from mfv2.fileio import check_output_dir

    check_output_dir(root, overwrite=False)  # before rendering the clips
    return write_benchmark(root, num_sequences=args.synthetic, num_frames=args.frames)


def _tracker_spec(args: argparse.Namespace, threads: int | None):  # noqa: ANN202
    from mfv2.evaluation.evaluate import TrackerSpec
    from mfv2.errors import ConfigError

    artifact = args.model or args.checkpoint
    if args.baseline:
        from mfv2.evaluation.baselines import baseline_factory

        if artifact is not None:
            raise ConfigError("--baseline scores a reference tracker; drop --model/--checkpoint (or --baseline)")
        baseline_factory(args.baseline)  # an unknown name fails here, not in every worker
        return TrackerSpec(baseline=args.baseline, threads=threads)
    if artifact is None:
        from mfv2.assets import demo_model_for

        artifact = str(demo_model_for(
            "eval", "give the model to evaluate: --model EXPORT_DIR or --checkpoint CHECKPOINT (or a --baseline)"))
    return TrackerSpec(backend=args.backend, artifact=str(artifact), precision=args.precision, graph=args.graph,
                       threads=threads, variant=args.variant if args.variant and args.checkpoint else None,
                       preset=args.preset)


def run(args: argparse.Namespace) -> int:
    from mfv2.datasets import open_dataset
    from mfv2.evaluation.evaluate import (
        evaluate_results, format_eval_table, parse_shard, plot_curves, run_dataset, run_parallel, shard_names,
        worker_threads,
    )  # fmt: skip
    from mfv2.bench.report import to_json
    from mfv2.fileio import atomic_write_text, check_output_dir, check_output_file
    from mfv2.errors import ConfigError

    if args.synthetic is not None:
        root, kind = _synthetic_root(args), "synthetic"
    elif args.dataset:
        root, kind = Path(args.dataset), args.kind
    else:
        raise ConfigError("give a DATASET folder, or --synthetic N to generate one")
    shard = parse_shard(args.shard) if args.shard else None
    threads = worker_threads(args.workers, args.threads) if args.workers != 1 else args.threads
    dataset = open_dataset(root, kind, split=args.split)
    kind = dataset.name
    names = shard_names(dataset.names, shard)
    if not names:
        raise ConfigError(f"shard {args.shard} of {dataset.root} holds no sequence ({len(dataset)} in all)")
    model_name = Path(args.model or args.checkpoint or "demo").name.split(".")[0]
    default = args.baseline.lower() if args.baseline else f"{model_name}-{args.backend}-{args.precision}"
    results = Path(args.results or Path("results") / kind / default)
    # Every output target is checked before any tracking: a bad one fails now, not after the run.
    if not args.no_run:
        check_output_dir(results)
    for target in (args.json, args.plot):
        if target:
            check_output_file(target, create_parent=True)
    info: dict[str, Any] = (
        {"baseline": args.baseline.lower()} if args.baseline
        else {"backend": args.backend, "precision": args.precision, "graph": args.graph}
    )  # fmt: skip
    if shard is not None:
        info["shard"] = args.shard.replace(" ", "")
    subset = names if shard is not None else None
    if not args.no_run:
        spec = _tracker_spec(args, threads)
        resume, progress = not args.no_resume, not args.no_progress
        if args.workers > 1:
            info.update(workers=args.workers, threads=threads)
            if not args.baseline:
                info["preset"] = spec.preset_for(kind)
            ran = run_parallel(spec, dataset, results, workers=args.workers, resume=resume, progress=progress,
                               names=names)
        else:
            runner, make_tracker, preset = spec.open(kind)
            if runner is not None:
                info.update(graph=runner.graph, preset=preset, model=runner.manifest.model.name)
            try:
                ran = run_dataset(make_tracker, dataset, results, resume=resume, progress=progress, names=names)
            finally:
                if runner is not None:
                    runner.close()
        print(f"tracked {len(ran)} of {len(names)} sequences into {results}"
              + (f" (shard {args.shard} of {len(dataset)} sequences)" if shard else ""))
    summaries = {results.name: evaluate_results(dataset, results, kind=kind, names=subset)}
    for other in args.compare:
        summaries[Path(other).name] = evaluate_results(dataset, other, kind=kind, names=subset)
    print(format_eval_table(summaries))
    if args.json:
        # The run's settings go under "run": a top-level "precision" is the precision metric.
        body = {**summaries[results.name], "run": info, "compare": {k: v for k, v in list(summaries.items())[1:]}}
        print(f"wrote {atomic_write_text(args.json, to_json(body))}")
    if args.plot:
        print(f"wrote {plot_curves(args.plot, summaries, title=f'{kind}: {root.name}')}")
    return 0
