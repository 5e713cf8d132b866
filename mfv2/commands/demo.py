"""``mfv2 demo``: the main job on a built-in default, with no files needed."""

from __future__ import annotations

import argparse

HELP = "build MixFormerV2 and compare the official full forward with the template-KV path"
EXAMPLE = "mfv2 demo --variant S --threads 2"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="S", help="model variant (default S)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--iters", type=int, default=20, help="timed runs per path")


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from mfv2.models import build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.variant)
    cfg = model.config
    t = torch.randn(1, 3, cfg.template_size, cfg.template_size)
    s = torch.randn(1, 3, cfg.search_size, cfg.search_size)

    def median_ms(fn) -> float:
        for _ in range(3):
            fn()
        times = []
        for _ in range(args.iters):
            start = time.perf_counter_ns()
            fn()
            times.append((time.perf_counter_ns() - start) / 1e6)
        return sorted(times)[len(times) // 2]

    with torch.inference_mode():
        kv = model.encode_templates(t, t)
        full = median_ms(lambda: model(t, t, s))
        cached = median_ms(lambda: model.track_search(s, kv))
        diff = (model(t, t, s)["pred_boxes"] - model.track_search(s, kv)["pred_boxes"]).abs().max().item()
    print(f"MixFormerV2-{cfg.name} (seeded random weights; {cfg.describe()}), {torch.get_num_threads()} threads")
    print(f"  full forward (official path)   {full:7.1f} ms")
    print(f"  template-KV + pruned last block {cached:7.1f} ms   {full / cached:.2f}x faster, max box diff {diff:.1e}")
    return 0
