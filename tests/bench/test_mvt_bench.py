"""Bench with MVT: its FLOPs counted from the ONNX graph, its official path (split) as the baseline."""

from __future__ import annotations

import pytest

from mfv2.bench.config import BenchConfig
from mfv2.bench.matrix import official_path, plan_rows


def test_baseline_is_each_familys_official_tracker_path() -> None:
    assert official_path("S") == ("torch", "fp32", "full")
    assert official_path("MVT") == ("torch", "fp32", "split")  # the released tracker caches the template stem
    rows = plan_rows(BenchConfig(backends=("torch",), threads=(1,), modes=("model",)), ["S", "MVT"], [])
    base = {r["variant"]: r for r in rows if r["baseline"]}
    assert (base["S"]["graph"], base["MVT"]["graph"]) == ("full", "split")
    mvt = [(r["graph"], r["baseline"]) for r in rows if r["variant"] == "MVT" and r["precision"] == "fp32"]
    assert mvt == [("split", True), ("full", False)]  # the full graph is a row, timed against the baseline


def test_mvt_flops_from_the_onnx_graph_equal_a_count_by_hand(tmp_path) -> None:
    """torch's counter (convolutions and linears) plus the MobileViT attention products by hand."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from torch.utils.flop_counter import FlopCounterMode

    from mfv2.bench.flops import count_flops, export_graph_flops
    from mfv2.config import ExportConfig, MVTConfig
    from mfv2.exporters.onnx import export_graph
    from mfv2.exporters.simplify import simplify
    from mfv2.models import build_model

    cfg = MVTConfig(name="MVT-64", template_size=64, search_size=128)
    model = build_model(cfg)
    for graph in ("full", "template_encoder", "search_decoder"):
        export_graph(model, graph, tmp_path / f"{graph}.onnx", batch=1, opset=17, dynamic_batch=False)
        simplify(tmp_path / f"{graph}.onnx", ExportConfig().simplify)  # as the export pipeline writes them
    (tmp_path / "full.onnx").rename(tmp_path / "model.onnx")
    z, x = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 128, 128)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(z, x)
    # Softmax attention over [search; template] patch tokens, one sequence per pixel of the 2x2 patch:
    # QK^T and AV, 2 FLOPs per multiply-add; layer_3 (stride 8, width 144, 2 layers), layer_4 (16, 192, 4).
    attention = 0
    for stride, dim, layers in ((8, 144, 2), (16, 192, 4)):
        tokens = (128 // stride // 2) ** 2 + (64 // stride // 2) ** 2
        attention += layers * 4 * 2 * 2 * tokens * tokens * dim
    assert export_graph_flops(tmp_path, "full") == counter.get_total_flops() + attention
    assert count_flops(cfg, "full", tmp_path) == export_graph_flops(tmp_path, "full")
    with torch.no_grad(), FlopCounterMode(display=False) as stem:
        model.encode_template(z)
    assert export_graph_flops(tmp_path, "template_encoder") == stem.get_total_flops()  # convolutions only
    assert export_graph_flops(tmp_path, "search_decoder") == export_graph_flops(tmp_path, "full") - stem.get_total_flops()
    with pytest.raises(Exception, match="give an export"):
        count_flops(cfg, "full")
