"""Lever of issue #23 item 3: ONNX Runtime int8 for attention's activation x activation products too.

The shipped dynamic int8 search decoder quantizes the weight MatMuls only; this variant also
quantizes QK^T and AV (``MatMulConstBOnly`` off: both inputs through DynamicQuantizeLinear, u8 x u8
MatMulInteger, exact on AVX2 and VNNI alike). The two graphs and fp32 run interleaved, call by call,
spinning off, at 1 and 2 threads; the box error against fp32 on the same input is printed too.

Usage: .venv/bin/python benchmarks/cpu_profile/attention_int8.py EXPORT_DIR OUT_DIR
(``EXPORT_DIR`` with ``search_decoder.onnx`` and ``search_decoder.int8-dynamic.onnx``, e.g. the bench cache's S).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process

from mfv2.bench.envinfo import cpu_isa
from mfv2.exporters.onnx import is_head_node
from mfv2.exporters.quantize import REDUCE_RANGE


def attention_int8(src: Path, dst: Path) -> None:
    """Every MatMul outside the heads dynamically quantized, weights as the shipped file quantizes them."""
    nodes = [n.name for n in onnx.load(str(src)).graph.node if n.op_type == "MatMul" and not is_head_node(n.name)]
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_optimization=True, skip_symbolic_shape=True)
        quantize_dynamic(str(pre), str(dst), op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes, per_channel=True,
                         weight_type=QuantType.QInt8, reduce_range=REDUCE_RANGE, extra_options={"MatMulConstBOnly": False})


def main(export: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    variant = out / "search_decoder.int8-attention.onnx"
    attention_int8(export / "search_decoder.onnx", variant)
    rng = np.random.default_rng(0)
    enc = ort.InferenceSession(str(export / "template_encoder.onnx"), providers=["CPUExecutionProvider"])
    t = rng.standard_normal((1, 3, 112, 112), dtype=np.float32)
    feeds = {"search": rng.standard_normal((1, 3, 224, 224), dtype=np.float32),
             "kv": enc.run(None, {"template": t, "online_template": t})[0]}  # fmt: skip
    files = {"fp32": export / "search_decoder.onnx", "int8 weights (shipped)": export / "search_decoder.int8-dynamic.onnx",
             "int8 weights + attention": variant}  # fmt: skip
    result: dict = {"isa": cpu_isa(), "load_start": os.getloadavg(), "median_ms": {}, "box_err_vs_fp32": {}}
    for threads in (1, 2):
        opt = ort.SessionOptions()
        opt.intra_op_num_threads = threads
        opt.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions = {k: ort.InferenceSession(str(p), opt, providers=["CPUExecutionProvider"]) for k, p in files.items()}
        ref = sessions["fp32"].run(None, feeds)[0]
        result["box_err_vs_fp32"] = {k: float(np.abs(s.run(None, feeds)[0] - ref).max()) for k, s in sessions.items()}
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for _ in range(40):
            for k, s in sessions.items():
                t0 = time.perf_counter_ns()
                s.run(None, feeds)
                times[k].append((time.perf_counter_ns() - t0) / 1e6)
        result["median_ms"][threads] = {k: float(np.median(v)) for k, v in times.items()}
    result["load_end"] = os.getloadavg()
    variant.unlink()
    (out / "attention_int8.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
