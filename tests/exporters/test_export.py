"""Export: ONNX full and split graphs, metadata, parity gates, fp16/int8 (Q/DQ and dynamic) ONNX and OpenVINO IR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from mfv2.artifacts import artifact_name, load_manifest  # noqa: E402
from mfv2.config import TrackerConfig, variant_config  # noqa: E402
from mfv2.errors import ConfigError, ExportError, ShapeError  # noqa: E402
from mfv2.exporters import export  # noqa: E402
from mfv2.exporters.onnx import graph_io, manifest_from_onnx, read_metadata  # noqa: E402
from mfv2.exporters.quantize import symmetric_qdq  # noqa: E402
from mfv2.exporters.tensorrt import plan_engines, tensorrt_issues  # noqa: E402
from mfv2.exporters.validate import (  # noqa: E402
    TOLERANCES,
    Sample,
    check_parity,
    make_samples,
    measure,
    ort_runner,
    torch_reference,
)
from mfv2.fileio import sha256  # noqa: E402
from mfv2.geometry.boxes import box_iou  # noqa: E402
from mfv2.models import build_model, save_native  # noqa: E402

GRAPHS = ("full", "template_encoder", "search_decoder")
from tests.conftest import EXPORT_ONNX_PRECISIONS as ONNX_PRECISIONS  # noqa: E402
from tests.conftest import EXPORT_OV_PRECISIONS as OV_PRECISIONS  # noqa: E402


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def _torch_full(model: torch.nn.Module, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        out = model(*(torch.from_numpy(feeds[k]) for k in ("template", "online_template", "search")))
    return out["pred_boxes"].numpy(), torch.sigmoid(out["pred_scores"]).numpy()


def test_export_writes_every_file_and_nothing_else(tiny_export: Path) -> None:
    expected = {"manifest.json"}
    for graph in GRAPHS:
        expected |= {artifact_name(graph, p, "onnx") for p in ONNX_PRECISIONS}
        expected.add(artifact_name(graph, "int8", "onnx-dynamic"))
        expected.add(artifact_name(graph, "int8", "onnx-tensorrt"))
        for p in OV_PRECISIONS:
            xml = artifact_name(graph, p, "openvino")
            expected |= {xml, xml[: -len(".xml")] + ".bin"}
    assert {f.name for f in tiny_export.iterdir()} == expected
    assert [p.name for p in tiny_export.parent.iterdir()] == ["tiny"]  # no temporary directory left


def test_manifest_describes_every_artifact(tiny_export: Path, tiny_model: torch.nn.Module) -> None:
    m = load_manifest(tiny_export)
    assert m.model == variant_config("tiny")
    assert m.tracker == TrackerConfig()
    assert (m.batch, m.opset, m.score) == (1, 17, "probability")
    assert m.source == {"checkpoint": None, "format": "random-init, seed 0", "seed": 0}
    assert {"mfv2", "torch", "onnx", "onnxruntime", "onnxsim", "openvino", "nncf"} <= set(m.toolkit)
    # + the dynamic int8 files (ONNX Runtime) and the TensorRT int8 files
    assert len(m.artifacts) == 3 * (len(ONNX_PRECISIONS) + 2 + len(OV_PRECISIONS))
    io = graph_io(m.model)
    for a in m.artifacts:
        assert a.sha256 == sha256(tiny_export / a.file)
        assert (a.inputs, a.outputs) == io[a.graph]
        tol = TOLERANCES[(a.format, a.precision)]
        assert a.extra["tolerance"]["boxes"] == tol.boxes
        assert 0 <= a.parity["boxes"] <= tol.boxes and 0 <= a.parity["score"] <= tol.score
    z = torch.zeros(1, 3, m.model.template_size, m.model.template_size)
    assert io["template_encoder"][1]["kv"] == list(tiny_model.encode_templates(z, z).shape)


def test_onnx_metadata_is_a_self_describing_manifest(tiny_export: Path) -> None:
    props = read_metadata(tiny_export / "search_decoder.fp16.onnx")
    assert props["score"] == "probability" and props["precision"] == "fp16" and props["variant"] == "tiny"
    assert json.loads(props["mean"]) == [0.485, 0.456, 0.406]
    single = manifest_from_onnx(tiny_export / "search_decoder.fp16.onnx")
    full = load_manifest(tiny_export)
    assert (single.model, single.tracker, single.batch) == (full.model, full.tracker, full.batch)
    [artifact] = single.artifacts
    listed = full.find("search_decoder", "fp16", "onnx")
    assert (artifact.file, artifact.parity, artifact.inputs) == (listed.file, listed.parity, listed.inputs)


def test_openvino_ir_carries_metadata(tiny_export: Path) -> None:
    ov = pytest.importorskip("openvino")
    model = ov.Core().read_model(str(tiny_export / "model.int8.xml"))
    data = json.loads(model.get_rt_info(["mfv2"]).astype(str))
    assert data["artifacts"][0]["file"] == "model.int8.xml" and data["model"]["name"] == "tiny"


def test_graphs_have_fixed_named_io_and_only_tensorrt_ops(tiny_export: Path) -> None:
    io = graph_io(variant_config("tiny"))
    for graph in GRAPHS:
        for p in ONNX_PRECISIONS:
            path = tiny_export / artifact_name(graph, p, "onnx")
            sess = _session(path)
            ins, outs = io[graph]
            assert {i.name: i.shape for i in sess.get_inputs()} == ins
            assert {o.name: o.shape for o in sess.get_outputs()} == outs
            assert all(i.type == "tensor(float)" for i in sess.get_inputs() + sess.get_outputs())
            model = onnx.load(str(path))
            assert tensorrt_issues(symmetric_qdq(model) if p == "int8" else model) == []
            assert "LayerNormalization" in {n.op_type for n in model.graph.node}


def test_fp32_graphs_match_pytorch_and_split_equals_full(tiny_export: Path, tiny_model: torch.nn.Module) -> None:
    samples = make_samples(tiny_model.config, TrackerConfig(), random=2, crops=3, seed=7)
    full, enc, dec = (_session(tiny_export / artifact_name(g)) for g in GRAPHS)
    for s in samples:
        boxes, score = _torch_full(tiny_model, s.feeds)
        out = _run(full, s.feeds)
        np.testing.assert_allclose(out["boxes"], boxes, atol=1e-4, rtol=0)
        np.testing.assert_allclose(out["score"], score, atol=1e-4, rtol=0)
        assert np.all((out["score"] > 0) & (out["score"] < 1))  # a probability, not a logit
        kv = _run(enc, {k: s.feeds[k] for k in ("template", "online_template")})["kv"]
        chained = _run(dec, {"search": s.feeds["search"], "kv": kv})
        np.testing.assert_allclose(chained["boxes"], out["boxes"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(chained["score"], out["score"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_low_precision_onnx_loads_and_stays_within_tolerance(
    tiny_export: Path, tiny_model: torch.nn.Module, precision: str
) -> None:
    tol = TOLERANCES[("onnx", precision)]
    samples = make_samples(tiny_model.config, TrackerConfig(), random=2, crops=3, seed=11)
    full = _session(tiny_export / artifact_name("full", precision))
    enc = _session(tiny_export / artifact_name("template_encoder", precision))
    dec = _session(tiny_export / artifact_name("search_decoder", precision))
    for s in samples:
        boxes, score = _torch_full(tiny_model, s.feeds)
        for out in (
            _run(full, s.feeds),
            _run(dec, {"search": s.feeds["search"], "kv": _run(enc, {k: s.feeds[k] for k in ("template", "online_template")})["kv"]}),
        ):
            assert np.abs(out["boxes"] - boxes).max() <= tol.boxes
            assert np.abs(out["score"] - score).max() <= tol.score


@pytest.mark.parametrize("precision", OV_PRECISIONS)
def test_openvino_ir_stays_within_tolerance(tiny_export: Path, tiny_model: torch.nn.Module, precision: str) -> None:
    from mfv2.exporters.openvino import ov_runner

    tol = TOLERANCES[("openvino", precision)]
    run = ov_runner({"full": tiny_export / artifact_name("full", precision, "openvino")})
    for s in make_samples(tiny_model.config, TrackerConfig(), random=1, crops=2, seed=5):
        boxes, score = _torch_full(tiny_model, s.feeds)
        out = run("full", s.feeds)
        assert np.abs(out["boxes"] - boxes).max() <= tol.boxes
        assert np.abs(out["score"] - score).max() <= tol.score


def test_fp16_graph_is_typed_with_norms_and_heads_in_fp32(tiny_export: Path) -> None:
    model = onnx.shape_inference.infer_shapes(onnx.load(str(tiny_export / "model.fp16.onnx")))
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types |= {i.name: i.data_type for i in g.initializer}
    types |= {n.output[0]: n.attribute[0].t.data_type for n in g.node if n.op_type == "Constant"}
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    backbone_matmuls = [n for n in g.node if n.op_type == "MatMul" and "/blocks." in n.name and "attn/MatMul" not in n.name]
    assert backbone_matmuls and all(types[n.input[1]] == f16 for n in backbone_matmuls)
    kept = [
        n for n in g.node
        if n.input and n.op_type != "Cast"
        and (n.op_type in ("LayerNormalization", "Softmax") or "box_head" in n.name or "score_head" in n.name)
    ]
    assert len(kept) > 20 and all(types[x] == f32 for n in kept for x in n.input if x and types[x] in (f16, f32))


def test_int8_graph_quantizes_weight_matmuls_only_symmetrically(tiny_export: Path) -> None:
    from mfv2.exporters.onnx import is_head_node
    from mfv2.exporters.quantize import quantizable_nodes

    model = onnx.load(str(tiny_export / "search_decoder.int8.onnx"))
    weights = {i.name for i in model.graph.initializer}
    produced_by = {o: n for n in model.graph.node for o in n.output}

    def dequantized(name: str) -> onnx.NodeProto | None:
        node = produced_by.get(name)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    touched = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and any(dequantized(x) for x in n.input)]
    assert touched, "nothing was quantized"
    for n in touched:  # int8 weights on the right, never a head, never activation x activation (attention)
        dq = dequantized(n.input[1])
        assert dq is not None and dq.input[0] in weights and not is_head_node(n.name), n.name
    fp32 = onnx.load(str(tiny_export / "search_decoder.onnx"))
    assert sorted(n.name for n in touched) == sorted(quantizable_nodes(fp32))
    # uint8 activations for ONNX Runtime; their symmetric form has the zero zero-points TensorRT needs.
    assert any("non-zero zero point" in issue for issue in tensorrt_issues(model))
    assert tensorrt_issues(symmetric_qdq(model)) == []


def test_dynamic_int8_graphs_quantize_every_block_weight(tiny_export: Path) -> None:
    from mfv2.exporters.onnx import is_head_node
    from mfv2.exporters.quantize import quantizable_nodes

    m = load_manifest(tiny_export)
    tol = TOLERANCES[("onnx", "int8")]
    for graph in GRAPHS:
        a = m.find(graph, "int8", "onnx-dynamic")
        assert a is not None and a.file == artifact_name(graph, "int8", "onnx-dynamic") and a.file.endswith(".int8-dynamic.onnx")
        assert a.extra["quantization"]["scheme"] == "dynamic"
        assert m.find(graph, "int8", "onnx").extra["quantization"]["scheme"] == "static Q/DQ"
        assert "min/max ranges" in m.find(graph, "int8", "openvino").extra["quantization"]["activations"]
        assert 0 <= a.parity["boxes"] <= tol.boxes and 0 <= a.parity["score"] <= tol.score
        assert a.extra["tolerance"]["boxes"] == tol.boxes
        model = onnx.load(str(tiny_export / a.file))
        weights = {i.name for i in model.graph.initializer}
        ops = [n.op_type for n in model.graph.node]
        fp32 = onnx.load(str(tiny_export / artifact_name(graph)))
        assert ops.count("MatMulInteger") == len(quantizable_nodes(fp32)) > 0
        producer = {o: n.op_type for n in model.graph.node for o in n.output}
        # every int8 product reads a dynamically quantized activation (Q and KV of a block share one)
        assert {producer[n.input[0]] for n in model.graph.node if n.op_type == "MatMulInteger"} == {"DynamicQuantizeLinear"}
        left = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights]
        assert all(is_head_node(n) for n in left), left  # no fp32 weight MatMul left outside the heads
        assert read_metadata(tiny_export / a.file)["precision"] == "int8"


def test_onnxruntime_int8_runs_the_dynamic_graphs_and_falls_back_to_qdq(
    tiny_export: Path, tiny_model: torch.nn.Module, tmp_path: Path
) -> None:
    import shutil

    from mfv2.runtimes import ModelRunner
    from mfv2.runtimes.onnxruntime_backend import OnnxRuntimeBackend

    tol = TOLERANCES[("onnx", "int8")]
    s = make_samples(tiny_model.config, TrackerConfig(), random=1, crops=1, seed=4)[-1].feeds
    boxes, score = _torch_full(tiny_model, s)

    def files(directory: Path, graph: str) -> dict[str, str]:
        """The files the backend opens at int8 (as load_backend, and so 'mfv2 bench', does), checked against torch."""
        manifest, sessions = OnnxRuntimeBackend(precision="int8", threads=1).load(directory, graph)
        with ModelRunner(sessions, manifest, backend="onnxruntime", precision="int8") as runner:
            names = {g: session.path.name for g, session in sessions.items()}
            runner.set_templates(s["template"], s["online_template"])
            out_boxes, out_score = runner.predict(s["search"])
        assert np.abs(out_boxes - boxes).max() <= tol.boxes and np.abs(out_score - score).max() <= tol.score
        return names

    assert files(tiny_export, "split") == {g: artifact_name(g, "int8", "onnx-dynamic") for g in ("template_encoder", "search_decoder")}
    assert files(tiny_export, "full") == {"full": "model.int8-dynamic.onnx"}
    older = shutil.copytree(tiny_export, tmp_path / "older", ignore=shutil.ignore_patterns("*-dynamic.onnx"))
    data = json.loads((older / "manifest.json").read_text())
    data["artifacts"] = [a for a in data["artifacts"] if a["format"] != "onnx-dynamic"]
    (older / "manifest.json").write_text(json.dumps(data))
    assert files(older, "split") == {g: artifact_name(g, "int8") for g in ("template_encoder", "search_decoder")}
    # TensorRT builds int8 engines from Q/DQ only; the GPU providers and 'mfv2 build-engine' take the Q/DQ files.
    assert OnnxRuntimeBackend(precision="int8", device="tensorrt").candidates() == [("int8", "onnx")]
    assert OnnxRuntimeBackend(precision="fp32").candidates() == [("fp32", "onnx")]
    # int8 engines build from the TensorRT-targeted Q/DQ files (measured as TensorRT computes them)
    assert [p.onnx.name for p in plan_engines(tiny_export, "int8", GRAPHS)] == [artifact_name(g, "int8", "onnx-tensorrt") for g in GRAPHS]
    assert any("MatMulInteger" in i for i in tensorrt_issues(onnx.load(str(tiny_export / "model.int8-dynamic.onnx"))))


def test_symmetric_qdq_keeps_int8_accuracy(tiny_export: Path, tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "model.int8.sym.onnx"
    onnx.save(symmetric_qdq(onnx.load(str(tiny_export / "model.int8.onnx"))), str(path))
    tol = TOLERANCES[("onnx", "int8")]
    sym, asym = _session(path), _session(tiny_export / "model.int8.onnx")
    for s in make_samples(tiny_model.config, TrackerConfig(), random=1, crops=3, seed=2):
        boxes, score = _torch_full(tiny_model, s.feeds)
        out = _run(sym, s.feeds)
        assert np.abs(out["boxes"] - boxes).max() <= tol.boxes and np.abs(out["score"] - score).max() <= tol.score
        assert not np.array_equal(out["boxes"], _run(asym, s.feeds)["boxes"])  # really a different quantization


def test_export_from_checkpoint_S(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = build_model("S")
    ckpt = save_native(model.state_dict(), model.config, tmp_path / "s.pt")
    out = export(ckpt, tmp_path / "S")
    m = load_manifest(out)
    assert m.model.name == "S" and m.source["sha256"] == sha256(ckpt) and m.source["format"] == "native"
    assert m.find("template_encoder").outputs["kv"] == [4, 2, 1, 12, 98, 64]
    for a in m.artifacts:
        assert a.parity["boxes"] <= 1e-4 and a.parity["score"] <= 1e-4
        if a.graph != "full":
            assert a.parity["chain_vs_full_boxes"] <= 1e-4 and a.parity["kv"] <= 1e-4
    # The decoder holds the pruned last block; the encoder only what the templates need.
    sizes = {a.graph: (out / a.file).stat().st_size for a in m.artifacts}
    assert sizes["template_encoder"] < 0.85 * sizes["full"]


def test_parity_check_catches_a_broken_graph(tiny_export: Path, tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    model = onnx.load(str(tiny_export / "model.onnx"))
    weight = max(model.graph.initializer, key=lambda i: np.prod(i.dims))  # the biggest weight matrix
    array = onnx.numpy_helper.to_array(weight).copy()
    array.flat[::7] += 0.05
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    onnx.save(model, str(tmp_path / "model.onnx"))
    samples = make_samples(tiny_model.config, TrackerConfig(), random=2, crops=2, seed=1)
    figures = measure(ort_runner({"full": tmp_path / "model.onnx"}), ["full"], samples, torch_reference(tiny_model, samples))
    with pytest.raises(ExportError, match=r"parity check failed for model.onnx: boxes .* > 0.0001"):
        check_parity("model.onnx", figures["full"], TOLERANCES[("onnx", "fp32")])


def test_failed_parity_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mfv2.exporters.simplify as simplify_module

    real = simplify_module.simplify

    def corrupt(path, method="onnxsim"):  # a "simplifier" that changes the numbers
        real(path, method)
        model = onnx.load(str(path))
        for init in model.graph.initializer:
            if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) == 2:
                init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * 1.5, init.name))
        onnx.save(model, str(path))
        return path

    monkeypatch.setattr(simplify_module, "simplify", corrupt)
    with pytest.raises(ExportError, match="parity check failed"):
        export(None, tmp_path / "out", variant="tiny")
    assert list(tmp_path.iterdir()) == []


def test_measure_iou_fraction_counts_frames_that_drift() -> None:
    ref_boxes = np.array([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.001, 0.2]], dtype=np.float32)
    shifted = ref_boxes + np.array([[0, 0, 0, 0], [0.05, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32)
    samples = [Sample({}, "crop")]
    refs = [{"boxes": ref_boxes, "score": np.full(3, 0.5, np.float32)}]
    figures = measure(lambda graph, feeds: {"boxes": shifted, "score": np.full(3, 0.5, np.float32)}, ["full"], samples, refs)
    # Row 3 is a near-empty reference box and is not counted; row 2 drifts to IoU 0.6.
    assert figures["full"] == pytest.approx({"boxes": 0.05, "score": 0.0, "crop_boxes": 0.05, "crop_score": 0.0, "nonfinite": 0.0,
                                             "iou_fraction": 0.5, "iou_mean": 0.8, "iou_frames": 2.0})  # fmt: skip
    assert box_iou(ref_boxes[:2], shifted[:2], fmt="cxcywh") == pytest.approx([1.0, 0.15 / 0.25])


def test_bad_options_fail_before_any_work(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    with pytest.raises(ConfigError, match="opset 16"):
        export(None, tmp_path / "a", variant="tiny", opset=16)
    with pytest.raises(ConfigError, match="choose from fp32, fp16, int8"):
        export(None, tmp_path / "a", variant="tiny", precisions=("fp8",))
    with pytest.raises(ConfigError, match="does not match"):
        export(tiny_model, tmp_path / "a", variant="S")
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        export(None, tmp_path / "taken", variant="tiny")
    with pytest.raises(ShapeError, match=r"calibration frames must be BGR uint8 \(H, W, 3\) arrays, got float32 \(4, 4\)"):
        export(None, tmp_path / "a", variant="tiny", calibration=[np.zeros((4, 4), np.float32)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_mfv2_export_stays_the_function_after_the_exporters_load() -> None:
    import inspect

    import mfv2
    import mfv2.exporters.onnx  # noqa: F401  (loading a submodule once rebound mfv2.export to the package)
    from mfv2.exporters import export as function

    assert mfv2.export is function and inspect.isfunction(mfv2.export)


def test_openvino_int8_asks_nncf_for_min_max_activation_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    # NNCF's default estimator clips activation tails, where a tracker's off-centre crops live
    # (benchmarks/cpu_profile/calibration/): the export must ask for the calibration minima and maxima.
    nncf = pytest.importorskip("nncf")
    from types import SimpleNamespace

    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    from mfv2.exporters.openvino import _nncf_int8

    asked: dict = {}
    monkeypatch.setattr(nncf, "quantize", lambda model, dataset, **kwargs: asked.update(kwargs) or model)
    model = SimpleNamespace(inputs=[SimpleNamespace(get_any_name=lambda: "search")])
    assert _nncf_int8(model, [{"search": np.zeros((1, 3, 8, 8), np.float32)}]) is model
    assert asked["advanced_parameters"].activations_range_estimator_params == RangeEstimatorParametersSet.MINMAX
    assert asked["model_type"] == nncf.ModelType.TRANSFORMER and asked["subset_size"] == 1
