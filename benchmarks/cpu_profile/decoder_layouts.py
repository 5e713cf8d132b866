"""Issue #23 item 3, the template keys/values lever: S's search decoder in three layouts, same run, OpenVINO int8.

* ``current``: what mfv2 exports. ``kv`` is (depth, 2, B, heads, Nt, head_dim); each block computes
  the search tokens' K and V with one GEMM, splits them, splits heads and concatenates them after the
  cached template K/V (a transpose each, 4 int8 Transposes in the profile, 5 % of the time).
* ``token-major``: ``kv`` stored as (depth, 2, B, Nt, C), the layout the K/V GEMM writes: the search
  K/V are concatenated before the heads are split, so one transpose per tensor sits right at the
  attention, where OpenVINO's MHA pattern can take it.
* ``kv-apart``: K and V as two GEMMs, no VariadicSplit (2 % of the time in the profile).

All three compute the same function (checked on the first calibration input); each is converted,
quantized by NNCF exactly as the exporter does (TRANSFORMER model type, heads unquantized, 16 random
inputs) and timed in alternating rounds (150 calls each, 2 threads). Random weights: the speed does not
depend on them.

Usage: .venv/bin/python benchmarks/cpu_profile/decoder_layouts.py OUT_DIR [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mfv2._openvino import import_nncf, import_openvino
from mfv2.bench.envinfo import cpu_isa
from mfv2.models.factory import build_model
from mfv2.models.mixformerv2.model import NUM_PRED_TOKENS

LAYOUTS = ("current", "token-major", "kv-apart")


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, head_dim) -> (B, N, C)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _kv_for(layout: str, kv: torch.Tensor) -> torch.Tensor:
    if layout != "token-major":
        return kv
    return torch.stack([torch.stack([_merge(kv[i, 0]), _merge(kv[i, 1])]) for i in range(kv.shape[0])])


class Decoder(torch.nn.Module):
    """The search decoder of ``model`` with its template K/V in ``layout``."""

    def __init__(self, model: Any, layout: str) -> None:
        super().__init__()
        self.model, self.layout = model, layout

    def _step(self, block: Any, x: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor, queries: int | None = None) -> torch.Tensor:
        a, h = block.attn, block.norm1(x)
        c = h.shape[-1]
        w, bias = a.qkv.weight, a.qkv.bias
        if self.layout == "kv-apart":
            k, v = a.split_heads(F.linear(h, w[c:2 * c], bias[c:2 * c])), a.split_heads(F.linear(h, w[2 * c:], bias[2 * c:]))
        else:
            k, v = F.linear(h, w[c:], bias[c:]).chunk(2, dim=-1)
        if queries is not None:
            q, x = a.q_heads(h[:, -queries:]), x[:, -queries:]
        else:
            q = a.q_heads(h)
        if self.layout == "token-major":
            keys, values = a.split_heads(torch.cat([k_t, k], dim=1)), a.split_heads(torch.cat([v_t, v], dim=1))
        else:
            if self.layout == "current":
                k, v = a.split_heads(k), a.split_heads(v)
            keys, values = torch.cat([k_t, k], dim=2), torch.cat([v_t, v], dim=2)
        x = x + block._residual(a.proj(a.merge_heads(F.scaled_dot_product_attention(q, keys, values))))
        return x + block._residual(block.mlp(block.norm2(x)))

    def forward(self, search: torch.Tensor, kv: torch.Tensor) -> dict[str, torch.Tensor]:
        m = self.model
        x = m.backbone.embed_search(search)
        *body, last = m.backbone.block_list
        for i, block in enumerate(body):
            x = self._step(block, x, kv[i, 0], kv[i, 1])
        out = m._heads(self._step(last, x, kv[-1, 0], kv[-1, 1], queries=NUM_PRED_TOKENS))
        return {"boxes": out["pred_boxes"], "score": torch.sigmoid(out["pred_scores"])}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=150)
    args = p.parse_args()
    ov, nncf = import_openvino(), import_nncf()
    torch.manual_seed(0)
    model = build_model("S").eval()
    cfg = model.config
    rng = np.random.default_rng(0)
    with torch.no_grad():
        inputs = []
        for _ in range(16):
            t = torch.from_numpy(rng.standard_normal((1, 3, cfg.template_size, cfg.template_size), dtype=np.float32))
            s = torch.from_numpy(rng.standard_normal((1, 3, cfg.search_size, cfg.search_size), dtype=np.float32))
            inputs.append((s, model.encode_templates(t, t)))
        reference = model.graphs()["search_decoder"](*inputs[0])
    compiled: dict[str, tuple[Any, dict[str, np.ndarray]]] = {}
    parity: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for layout in LAYOUTS:
            dec = Decoder(model, layout).eval()
            s0, kv0 = inputs[0][0], _kv_for(layout, inputs[0][1])
            with torch.no_grad():
                got = dec(s0, kv0)
            parity[layout] = max(float((got[k] - reference[k]).abs().max()) for k in ("boxes", "score"))
            path = os.path.join(tmp, f"{layout}.onnx")
            torch.onnx.export(dec, (s0, kv0), path, input_names=["search", "kv"], output_names=["boxes", "score"],
                              opset_version=17, dynamo=False)  # fmt: skip
            data = [{"search": s.numpy(), "kv": _kv_for(layout, kv).numpy()} for s, kv in inputs]
            quantized = nncf.quantize(ov.convert_model(path), nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER,
                                      subset_size=len(data),
                                      ignored_scope=nncf.IgnoredScope(patterns=[".*box_head.*", ".*score_head.*"], validate=False))  # fmt: skip
            compiled[layout] = (ov.Core().compile_model(quantized, "CPU", {"INFERENCE_NUM_THREADS": args.threads}), data[0])
    times: dict[str, list[float]] = {k: [] for k in LAYOUTS}
    for _ in range(args.rounds):
        for layout, (net, feeds) in compiled.items():
            req = net.create_infer_request()
            for _ in range(20):
                req.infer(feeds)
            for _ in range(args.calls):
                t0 = time.perf_counter()
                req.infer(feeds)
                times[layout].append(time.perf_counter() - t0)
    base = float(np.median(times["current"]))
    rows = [{"layout": k, "median_ms": 1000 * float(np.median(v)), "p90_ms": 1000 * float(np.percentile(v, 90)),
             "vs_current": base / float(np.median(v)), "max_abs_diff_fp32": parity[k]} for k, v in times.items()]  # fmt: skip
    report = {"isa": cpu_isa(), "load": [round(x, 2) for x in os.getloadavg()], "threads": args.threads,
              "model": "S, seeded random weights", "backend": "openvino int8 (NNCF)", "rows": rows}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "decoder_layouts.json").write_text(json.dumps(report, indent=1))
    lines = [f"# S search decoder layouts, OpenVINO int8, {args.threads} threads ({report['isa']}, load {report['load']})", "",
             "| layout | median ms | p90 ms | speed vs current | max abs diff vs the exported decoder (fp32) |",
             "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['layout']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['vs_current']:.3f}x | {r['max_abs_diff_fp32']:.1e} |" for r in rows]
    (args.out / "decoder_layouts.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
