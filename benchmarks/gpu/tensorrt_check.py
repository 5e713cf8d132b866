"""The TensorRT check of issue 26, in one command on a machine with an NVIDIA GPU, TensorRT and cuda-python.

    python benchmarks/gpu/tensorrt_check.py OUT_DIR [--variant tiny|S] [--dry-run]

Run from the source tree (``PYTHONPATH`` = the repository root); needs tensorrt, cuda-python, torch,
onnx and onnxruntime. Steps, each recorded in ``OUT_DIR/tensorrt_summary.json``:

1. the CUDA device as mfv2 reads it (``device_info``: no nvidia-smi) and the package versions;
2. export (fp32, fp16, int8) plus the TensorRT int8 graphs (``*.int8-trt.onnx``, parity measured
   with ONNX Runtime on the file TensorRT parses);
3. ``build_engines`` for fp32, fp16, int8 (and bf16 where the GPU is sm 8.0+ and TensorRT 10.x);
4. each engine pair tracked through the split runner, plain and with CUDA-graph replay, against ONNX
   Runtime fp32 on the same inputs (gates per precision), counting CUDA-graph fallback warnings;
5. latency of the decoder, plain vs CUDA graph, in the same run (median of 200 frames, a ratio).

``--dry-run`` stops after step 2 (no TensorRT needed) to test the script on a CPU. Exit status: 0 all
gates passed, 1 a gate failed or a step broke, 2 no TensorRT / cuda-python / CUDA device.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

GATES = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 5e-2, "int8": 5e-2}  # max abs box / score error vs ONNX Runtime fp32


def _versions() -> dict[str, str]:
    out = {}
    for name in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "cuda-python", "cuda-bindings", "onnxruntime", "onnx", "torch"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _trt_int8(directory: Path, variant_seed: int) -> dict[str, Any]:
    """Write ``*.int8-trt.onnx`` beside the export's fp32 graphs; the parity of each, measured as TensorRT parses it."""
    import onnxruntime as ort

    from mfv2.artifacts import load_manifest
    from mfv2.exporters.quantize import to_int8_tensorrt
    from mfv2.exporters.tensorrt import TRT_INT8_SUFFIX
    from mfv2.exporters.validate import calibration_crops

    m = load_manifest(directory)
    crops = calibration_crops(m.model, m.tracker, batch=m.batch, count=32, frames=None, seed=variant_seed)
    enc = ort.InferenceSession(str(directory / "template_encoder.onnx"), providers=["CPUExecutionProvider"])
    feeds = {
        "model": crops,
        "template_encoder": [{k: c[k] for k in ("template", "online_template")} for c in crops],
        "search_decoder": [{"search": c["search"], "kv": enc.run(None, {k: c[k] for k in ("template", "online_template")})[0]}
                           for c in crops],
    }
    parity = {}
    for stem, calib in feeds.items():
        dst = to_int8_tensorrt(directory / f"{stem}.onnx", directory / f"{stem}{TRT_INT8_SUFFIX}", calib[:24])
        ref = ort.InferenceSession(str(directory / f"{stem}.onnx"), providers=["CPUExecutionProvider"])
        got = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
        errs = [max(float(np.abs(a - b).max()) for a, b in zip(ref.run(None, f), got.run(None, f))) for f in calib[24:]]
        parity[dst.name] = max(errs)
    return parity


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--variant", default="tiny")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary: dict[str, Any] = {"versions": _versions(), "gates": {}, "failed": []}

    def save() -> None:
        (args.out / "tensorrt_summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    try:
        from mfv2.exporters import export

        if not args.dry_run:
            import tensorrt as trt

            from mfv2._cuda import device_info

            device = device_info(0)
            summary["device"] = device.__dict__ | {"tensorrt": trt.__version__}
        directory = export(None, args.out / "export", variant=args.variant, precisions=("fp32", "fp16", "int8"), overwrite=True)
        summary["int8_trt_parity"] = _trt_int8(directory, 0)
        summary["gates"]["int8_trt_onnx"] = all(v < GATES["int8"] for v in summary["int8_trt_parity"].values())
        if args.dry_run:
            summary["dry_run"] = True
            save()
            return 0 if all(summary["gates"].values()) else 1
        precisions = ["fp32", "fp16", "int8"]
        if device.capability >= (8, 0) and hasattr(trt.BuilderFlag, "BF16"):
            precisions.append("bf16")
        _engines(directory, precisions, summary)
    except ImportError as e:
        summary["failed"].append(f"not runnable here: {e}")
        save()
        print(f"tensorrt_check: {e}", file=sys.stderr)
        return 2
    except Exception:
        summary["failed"].append(traceback.format_exc())
    save()
    bad = [k for k, ok in summary["gates"].items() if not ok]
    print(json.dumps({"gates": summary["gates"], "failed": bad + summary["failed"][:1]}, indent=2))
    return 1 if bad or summary["failed"] else 0


def _engines(directory: Path, precisions: list[str], summary: dict[str, Any]) -> None:
    from mfv2.exporters.tensorrt import build_engines
    from mfv2.runtimes import load_backend

    rng = np.random.default_rng(0)
    with load_backend("onnxruntime", directory, graph="split") as ref:
        b = ref.manifest.batch
        t = rng.standard_normal((b, 3, ref.template_size, ref.template_size), dtype=np.float32)
        frames = [rng.standard_normal((b, 3, ref.search_size, ref.search_size), dtype=np.float32) for _ in range(5)]
        ref.set_templates(t, t * 0.5)
        expected = [ref.predict(f) for f in frames]
    records = logging.getLogger("mfv2.runtimes.tensorrt_backend")
    for precision in precisions:
        t0 = time.perf_counter()
        build_engines(directory, precision, graphs=("template_encoder", "search_decoder"))
        summary[f"build_{precision}_s"] = round(time.perf_counter() - t0, 1)
        for graph_mode in (False, True):
            warned: list[str] = []
            handler = logging.Handler()
            handler.emit = lambda r: warned.append(r.getMessage())  # type: ignore[method-assign]
            records.addHandler(handler)
            try:
                with load_backend("tensorrt", directory, precision=precision, cuda_graph=graph_mode) as run:
                    run.set_templates(t, t * 0.5)
                    got = [run.predict(f) for f in frames]
                    err = max(max(float(np.abs(a - b).max()) for a, b in zip(g, e)) for g, e in zip(got, expected))
                    key = f"{precision}_{'graph' if graph_mode else 'plain'}"
                    summary[f"err_{key}"] = err
                    summary["gates"][key] = err < GATES[precision] and not [w for w in warned if "CUDA graph" in w]
                    if precision == "fp16":
                        lat = []
                        for _ in range(200):
                            t1 = time.perf_counter_ns()
                            run.predict(frames[0])
                            lat.append(time.perf_counter_ns() - t1)
                        summary[f"decoder_median_us_{key}"] = float(np.median(lat)) / 1e3
            finally:
                records.removeHandler(handler)
    if "decoder_median_us_fp16_plain" in summary:
        summary["graph_speedup_fp16"] = summary["decoder_median_us_fp16_plain"] / summary["decoder_median_us_fp16_graph"]


if __name__ == "__main__":
    sys.exit(main())
