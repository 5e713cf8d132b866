"""``mfv2 convert``: rewrite a checkpoint (official release or training file) in another layout."""

from __future__ import annotations

import argparse

HELP = "convert an official MixFormerV2 checkpoint to the mfv2 native format (or back)"
EXAMPLE = "mfv2 convert mixformerv2_small.pth.tar mixformerv2_small.pt"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="official .pth.tar ({'net': ...}), training checkpoint or mfv2 .pt")
    p.add_argument("output", help="file to write")
    p.add_argument("--variant", help="S, B, ... (default: detect from the tensors)")
    p.add_argument("--official", action="store_true", help="write the official {'net': state_dict} layout instead")


def run(args: argparse.Namespace) -> int:
    from mfv2.fileio import check_output_file
    from mfv2.models import build_model
    from mfv2.fileio import sha256
    from mfv2.models.checkpoint import save_native, save_official

    check_output_file(args.output)  # before reading anything: a folder or an unwritable target fails now
    model = build_model(args.variant, args.checkpoint)
    sd = model.state_dict()
    if args.official:
        path = save_official(sd, args.output)
    else:
        meta = {"converted_from": str(args.checkpoint), "source_sha256": sha256(args.checkpoint)}
        path = save_native(sd, model.config, args.output, meta)
    print(f"wrote {path} (MixFormerV2-{model.config.name}: {model.config.describe()})")
    return 0
