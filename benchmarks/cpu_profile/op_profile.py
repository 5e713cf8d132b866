"""Per-op profile of MixFormerV2-S's search decoder (the per-frame graph) on the CPU (issue #23 item 1).

ONNX Runtime's profiler (``enable_profiling``) for the dynamic int8 and fp32 graphs, OpenVINO's
performance counters (``PERF_COUNT``) for the int8 and fp32 IRs, at 1 and 2 threads. Each op is put in
one bucket: the int8 weight GEMMs, the float weight GEMMs, attention's two activation x activation
products (QK^T, AV) and its softmax, quantize/dequantize and layout reorders, LayerNorm, GELU and the
rest; ``per_call_overhead`` is the wall time of a call minus the sum of its ops (binding, dispatch,
output copies, thread wake-up).

Usage: .venv/bin/python benchmarks/cpu_profile/op_profile.py EXPORT_DIR [OUT_DIR] [--iters N]
(``EXPORT_DIR`` from ``mfv2 export --random-init --variant S --precision fp32,int8 --openvino fp32,int8``).
Writes ``profile.json`` and ``profile.md`` into ``OUT_DIR`` (default: this folder).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from mfv2.bench.envinfo import cpu_isa

BUCKETS = ("int8 GEMM", "float GEMM", "attention QK^T", "attention softmax", "attention AV", "attention (fused MHA)",
           "attention QK^T/AV",
           "quantize/dequantize", "reorder/convert", "layernorm", "gelu", "other")  # fmt: skip


def _feeds(export: Path) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    enc = ort.InferenceSession(str(export / "template_encoder.onnx"), providers=["CPUExecutionProvider"])
    t = rng.standard_normal((1, 3, 112, 112), dtype=np.float32)
    kv = enc.run(None, {"template": t, "online_template": t})[0]
    return {"search": rng.standard_normal((1, 3, 224, 224), dtype=np.float32), "kv": kv}


def _attention_roles(graph_nodes: list[tuple[str, str, list[str], list[str]]]) -> dict[str, str]:
    """Node name -> "qk"/"av" for the activation x activation products: the MatMul feeding a Softmax
    (through scale/mask ops) is QK^T, the one reading a Softmax output is AV."""
    producer = {o: n for n in graph_nodes for o in n[3]}
    consumers: dict[str, list[tuple[str, str, list[str], list[str]]]] = defaultdict(list)
    for n in graph_nodes:
        for i in n[2]:
            consumers[i].append(n)
    roles = {}
    for name, op, inputs, outputs in graph_nodes:
        if op != "Softmax":
            continue
        node = producer.get(inputs[0])
        for _ in range(4):  # walk back over Mul/Add/Div to the product
            if node is None or node[1] in ("MatMul", "FusedMatMul"):
                break
            node = producer.get(node[2][0])
        if node is not None:
            roles[node[0]] = "qk"
        roles.update({c[0]: "av" for c in consumers[outputs[0]] if c[1] in ("MatMul", "FusedMatMul")})
    return roles


def _ort_bucket(op: str, role: str | None) -> str:
    if op in ("MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearMatMul", "QGemm"):
        return "int8 GEMM"
    if role == "qk":
        return "attention QK^T"
    if role == "av":
        return "attention AV"
    if op in ("MatMul", "FusedMatMul", "Gemm", "FusedGemm", "Conv", "FusedConv", "MatMulNBits"):
        return "float GEMM"
    if op == "Softmax":
        return "attention softmax"
    if op in ("DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear"):
        return "quantize/dequantize"
    if op in ("Transpose", "Reshape", "Concat", "Split", "Slice", "Gather", "Cast", "ReorderInput", "ReorderOutput"):
        return "reorder/convert"
    if op in ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization"):
        return "layernorm"
    if op in ("Gelu", "BiasGelu", "FastGelu", "Erf"):
        return "gelu"
    return "other"


def profile_ort(path: Path, feeds: dict[str, np.ndarray], threads: int, iters: int) -> dict:
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opt = ort.SessionOptions()
        opt.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opt.intra_op_num_threads = threads
        opt.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(str(path), opt, providers=["CPUExecutionProvider"])
        m = onnx.load(str(Path(tmp) / "opt.onnx"))
        nodes = [(n.name, n.op_type, list(n.input), list(n.output)) for n in m.graph.node]
        roles = _attention_roles(nodes)
        opt = ort.SessionOptions()
        opt.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opt.intra_op_num_threads = threads
        opt.enable_profiling = True
        opt.profile_file_prefix = str(Path(tmp) / "prof")
        s = ort.InferenceSession(str(path), opt, providers=["CPUExecutionProvider"])
        for _ in range(5):
            s.run(None, feeds)
        wall = []
        for _ in range(iters):
            t0 = time.perf_counter_ns()
            s.run(None, feeds)
            wall.append((time.perf_counter_ns() - t0) / 1e6)
        events = json.loads(Path(s.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"][-iters:]
    t_first = runs[0]["ts"]
    per_op: dict[str, float] = defaultdict(float)
    buckets: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < t_first:
            continue
        name = e["name"][: -len("_kernel_time")]
        op = e.get("args", {}).get("op_name", "?")
        ms = e["dur"] / 1000.0 / iters
        per_op[op] += ms
        buckets[_ort_bucket(op, roles.get(name))] += ms
    return _summary(wall, [r["dur"] / 1000.0 for r in runs], buckets, per_op)


def _ov_bucket(node_type: str, exec_type: str, fc_like: bool, fused: str) -> str:
    t, x = node_type.lower(), exec_type.lower()
    if t == "subgraph":  # a snippets kernel: fused attention (MHA) or a fused element-wise/quantize chain
        if "Softmax" in fused:
            return "attention (fused MHA)"
        return "quantize/dequantize" if ("fq_" in fused or "Dequantization" in fused) else "other"
    if t in ("fullyconnected", "fullyconnectedquantizedlegacy", "convolution") or (t == "matmul" and fc_like):
        return "int8 GEMM" if ("i8" in x or "u8" in x) else "float GEMM"
    if t == "matmul":
        return "attention QK^T/AV"
    if t == "scaleddotproductattention":
        return "attention (fused MHA)"
    if t == "softmax":
        return "attention softmax"
    if t in ("fakequantize", "quantize", "dequantize"):
        return "quantize/dequantize"
    if t in ("reorder", "convert", "transpose", "reshape", "concatenation", "concat", "split", "variadicsplit",
             "gather", "stridedslice", "slice"):
        return "reorder/convert"
    if t in ("mvn", "layernorm", "rms"):
        return "layernorm"
    if "gelu" in t:
        return "gelu"
    return "other"


def profile_ov(path: Path, feeds: dict[str, np.ndarray], threads: int, iters: int) -> dict:
    from mfv2._openvino import core, import_openvino

    ov = import_openvino()
    compiled = core().compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
                                                        "PERF_COUNT": True, "INFERENCE_PRECISION_HINT": "f32"})  # fmt: skip
    # In the runtime graph a MatMul with a constant (weight) input is a weight GEMM; two activations: attention.
    fc_like, fused = {}, {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        fused[op.get_friendly_name()] = info["originalLayersNames"].astype(str)
        if info["layerType"].astype(str) == "MatMul":
            srcs = [op.input_value(i).get_node() for i in range(op.get_input_size())]
            fc_like[op.get_friendly_name()] = any(s.get_rt_info()["layerType"].astype(str) == "Const" for s in srcs)
    req = compiled.create_infer_request()
    for k, v in feeds.items():
        req.set_tensor(k, ov.Tensor(np.ascontiguousarray(v)))
    for _ in range(5):
        req.infer()
    wall, ops_total = [], []
    per_op: dict[str, float] = defaultdict(float)
    buckets: dict[str, float] = defaultdict(float)
    for _ in range(iters):
        t0 = time.perf_counter_ns()
        req.infer()
        wall.append((time.perf_counter_ns() - t0) / 1e6)
        total = 0.0
        for p in req.profiling_info:
            ms = p.real_time.total_seconds() * 1000.0
            if p.status.name != "EXECUTED" or ms == 0.0:
                continue
            total += ms
            key = f"{p.node_type} ({p.exec_type})"
            per_op[key] += ms / iters
            buckets[_ov_bucket(p.node_type, p.exec_type, fc_like.get(p.node_name, False), fused.get(p.node_name, ""))] += ms / iters
        ops_total.append(total)
    return _summary(wall, ops_total, buckets, per_op)


def _summary(wall: list[float], run_ms: list[float], buckets: dict[str, float], per_op: dict[str, float]) -> dict:
    ops = sum(buckets.values())
    wall_med = float(np.median(wall))
    return {
        "wall_median_ms": wall_med,
        "run_median_ms": float(np.median(run_ms)),
        "ops_ms": ops,
        "per_call_overhead_ms": wall_med - ops,
        "buckets_ms": dict(sorted(buckets.items(), key=lambda kv: -kv[1])),
        "share_pct": {k: 100.0 * v / ops for k, v in sorted(buckets.items(), key=lambda kv: -kv[1])},
        "top_ops_ms": dict(sorted(per_op.items(), key=lambda kv: -kv[1])[:12]),
    }


def _markdown(report: dict) -> str:
    lines = [f"# S search decoder, per-op profile ({report['isa']}, load {report['load']})", "",
             f"Command: `{report['command']}`", ""]  # fmt: skip
    buckets = sorted({b for r in report["rows"] for b in r["share_pct"]}, key=lambda b: BUCKETS.index(b) if b in BUCKETS else 99)
    lines.append("| path | threads | wall ms | ops ms | overhead ms | " + " | ".join(buckets) + " |")
    lines.append("|---|---|---|---|---|" + "---|" * len(buckets))
    for r in report["rows"]:
        shares = " | ".join(f"{r['share_pct'].get(b, 0.0):.1f} %" for b in buckets)
        lines.append(f"| {r['path']} | {r['threads']} | {r['wall_median_ms']:.2f} | {r['ops_ms']:.2f} | "
                     f"{r['per_call_overhead_ms']:.2f} | {shares} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("export", type=Path)
    p.add_argument("out", type=Path, nargs="?", default=Path(__file__).parent)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--threads", default="1,2")
    args = p.parse_args()
    feeds = _feeds(args.export)
    paths = [("onnxruntime int8 (dynamic)", profile_ort, "search_decoder.int8-dynamic.onnx"),
             ("onnxruntime fp32", profile_ort, "search_decoder.onnx"),
             ("openvino int8", profile_ov, "search_decoder.int8.xml"),
             ("openvino fp32", profile_ov, "search_decoder.xml")]  # fmt: skip
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        for label, fn, name in paths:
            if not (args.export / name).is_file():
                continue
            r = fn(args.export / name, feeds, threads, args.iters)
            rows.append({"path": label, "threads": threads, **r})
            print(f"{label} t{threads}: {r['wall_median_ms']:.2f} ms, {r['share_pct']}", flush=True)
    report = {"isa": cpu_isa(), "load": [round(x, 2) for x in os.getloadavg()], "rows": rows,
              "command": f"python benchmarks/cpu_profile/op_profile.py {args.export} --iters {args.iters}"}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.json").write_text(json.dumps(report, indent=1))
    (args.out / "profile.md").write_text(_markdown(report))


if __name__ == "__main__":
    main()
