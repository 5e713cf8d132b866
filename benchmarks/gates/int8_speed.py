"""S search decoder, ONNX Runtime dynamic int8: 7-bit (shipped) vs 8-bit (before) weights, same run.

The three sessions run interleaved, call by call, with thread spinning off (a spinning pool of one
session would slow the next one's call). Usage: .venv/bin/python benchmarks/gates/int8_speed.py [WORKDIR]
"""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from mfv2.bench.envinfo import cpu_isa
from mfv2.exporters import export, quantize

d = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/mfv2-int8-speed") / "S"
if not (d / "manifest.json").exists():
    export(None, d, variant="S", precisions=("fp32", "int8"), seed=0)
old = d / "search_decoder.int8-dynamic.8bit.onnx"
if not old.exists():
    quantize.REDUCE_RANGE = False
    quantize.to_int8_dynamic(d / "search_decoder.onnx", old)
    quantize.REDUCE_RANGE = True
rng = np.random.default_rng(0)
kv = ort.InferenceSession(str(d / "template_encoder.onnx"), providers=["CPUExecutionProvider"]).run(None, {
    "template": rng.standard_normal((1, 3, 112, 112), dtype=np.float32), "online_template": rng.standard_normal((1, 3, 112, 112), dtype=np.float32)})[0]
feeds = {"search": rng.standard_normal((1, 3, 224, 224), dtype=np.float32), "kv": kv}
res = {}
for threads in (1, 2):
    o = ort.SessionOptions(); o.intra_op_num_threads = threads; o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = {k: ort.InferenceSession(str(p), o, providers=["CPUExecutionProvider"]) for k, p in
            (("7-bit", d / "search_decoder.int8-dynamic.onnx"), ("8-bit", old), ("fp32", d / "search_decoder.onnx"))}
    t = {k: [] for k in sess}
    for s in sess.values():
        for _ in range(5): s.run(None, feeds)
    for _ in range(60):
        for k, s in sess.items():
            t0 = time.perf_counter_ns(); s.run(None, feeds); t[k].append((time.perf_counter_ns() - t0) / 1e6)
    res[threads] = {k: float(np.median(v)) for k, v in t.items()}
print(json.dumps({"isa": cpu_isa(), "load": os.getloadavg(), "median_ms": res}, indent=1))
