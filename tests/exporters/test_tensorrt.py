"""TensorRT engine builder: op-set check, planning, builder calls (against fake modules), the sidecar it writes,
and the int8 graph exported for TensorRT.

TensorRT itself cannot run here (no GPU); the fakes of ``tests/_tensorrt_fakes.py`` (their names checked
against the real bindings in ``tests/runtimes/test_tensorrt_fakes.py``) record the calls and return a fake plan, so the
builder's own logic is tested. Engines on a real GPU are unverified in CI.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from mfv2._tensorrt import trt_logger  # noqa: E402
from mfv2.artifacts import Artifact, Manifest, load_manifest, read_sidecar  # noqa: E402
from mfv2.config import TrackerConfig, variant_config  # noqa: E402
from mfv2.errors import BackendUnavailableError, ConfigError, ExportError  # noqa: E402
from mfv2.exporters.quantize import symmetric_qdq  # noqa: E402
from mfv2.exporters.tensorrt import (  # noqa: E402
    TRT_INT8_SUFFIX,
    build_engine,
    build_engines,
    plan_engines,
    tensorrt_issues,
)
from mfv2.fileio import sha256  # noqa: E402
from mfv2._cuda import DeviceInfo  # noqa: E402
from tests._tensorrt_fakes import FakeCudart, cudaError_t, fake_cuda_package, fake_tensorrt  # noqa: E402


def _graph(nodes: list, opset: int = 17, initializers: list | None = None, domains: tuple[str, ...] = ()) -> Any:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    g = helper.make_graph(nodes, "g", [x], [y], initializer=initializers or [])
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(g, opset_imports=opsets)


def test_tensorrt_issues_accepts_a_plain_graph() -> None:
    assert tensorrt_issues(_graph([helper.make_node("Relu", ["x"], ["y"])])) == []


def test_tensorrt_issues_names_what_tensorrt_lacks() -> None:
    roi = _graph([helper.make_node("RoiAlign", ["x", "r", "i"], ["y"])])
    assert tensorrt_issues(roi) == ["RoiAlign (RoI pooling) is not allowed in mfv2 graphs"]
    assert tensorrt_issues(_graph([helper.make_node("Unique", ["x"], ["y"])])) == ["Unique is not supported by TensorRT"]
    foreign = _graph([helper.make_node("FusedMatMul", ["x", "x"], ["y"], domain="com.microsoft")], domains=("com.microsoft",))
    assert tensorrt_issues(foreign) == ["com.microsoft::FusedMatMul is not a standard ONNX op"]
    assert tensorrt_issues(_graph([helper.make_node("Relu", ["x"], ["y"])], opset=25)) == ["opset 25 outside TensorRT's 9..24"]


def _qdq_graph(zero_point: np.ndarray, scale: float = 0.1) -> Any:
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "s"), numpy_helper.from_array(zero_point, "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q0"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq0")]
    return _graph(nodes, initializers=inits)


def test_tensorrt_issues_rejects_asymmetric_qdq_and_symmetric_qdq_fixes_it() -> None:
    asym = _qdq_graph(np.array(200, np.uint8))
    issues = tensorrt_issues(asym)
    assert len(issues) == 2 and all("non-zero zero point" in i for i in issues)
    sym = symmetric_qdq(asym)
    assert tensorrt_issues(sym) == []
    inits = {i.name: numpy_helper.to_array(i) for i in sym.graph.initializer}
    assert inits["z"].dtype == np.int8 and inits["z"] == 0
    assert inits["s"] == pytest.approx(200 * 0.1 / 127)  # covers [-200 * 0.1, 55 * 0.1]
    assert tensorrt_issues(_qdq_graph(np.array(0, np.int8))) == []


def _export_dir(tmp_path: Path, precisions: tuple[str, ...] = ("fp32",)) -> Path:
    """A hand-made export directory: a manifest and placeholder ONNX graphs."""
    d = tmp_path / "exp"
    d.mkdir()
    m = Manifest(model=variant_config("tiny"), tracker=TrackerConfig())
    for graph, stem in (("full", "model"), ("template_encoder", "template_encoder"), ("search_decoder", "search_decoder")):
        for p in precisions:
            name = f"{stem}.onnx" if p == "fp32" else f"{stem}.{p}.onnx"
            onnx.save(_graph([helper.make_node("Relu", ["x"], ["y"])]), str(d / name))
            m.add(Artifact(file=name, graph=graph, precision=p, format="onnx", inputs={"x": [1, 4]}, outputs={"y": [1, 4]}))
    m.save(d)
    return d


def test_plan_engines_picks_the_typed_sources(tmp_path: Path) -> None:
    d = _export_dir(tmp_path, ("fp32", "fp16"))
    [plan] = plan_engines(d, "fp16", ("search_decoder",))
    assert (plan.onnx.name, plan.engine.name, plan.strongly_typed) == ("search_decoder.fp16.onnx", "search_decoder.fp16.engine", True)
    [bf16] = plan_engines(d, "bf16", ("full",))
    assert (bf16.onnx.name, bf16.engine.name, bf16.strongly_typed) == ("model.onnx", "model.bf16.engine", False)
    with pytest.raises(ConfigError, match=r"has no model.int8.onnx; export it first: mfv2 export .*--precision fp32,int8"):
        plan_engines(d, "int8", ("full",))
    with pytest.raises(ConfigError, match="unknown TensorRT precision"):
        plan_engines(d, "fp8", ("full",))


DEV = DeviceInfo(0, "Fake GPU", "8.6", 16384, "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f", "12.9", "13.0")


@pytest.fixture
def cuda(monkeypatch: pytest.MonkeyPatch) -> FakeCudart:
    """Fake cuda-python and tensorrt modules in ``sys.modules`` (``cuda.trt`` is the tensorrt one)."""
    fake = FakeCudart(devices=(("Old GPU", 7, 5), ("Fake GPU", 8, 6)))
    for name, module in fake_cuda_package(fake).items():
        monkeypatch.setitem(sys.modules, name, module)
    fake.trt = fake_tensorrt(fake)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", fake.trt)  # type: ignore[attr-defined]
    return fake


def _trt() -> Any:
    return fake_tensorrt(FakeCudart())


def test_build_engine_writes_byte_pure_plan_and_sidecar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no nvidia-smi: nothing but the driver field changes
    d = _export_dir(tmp_path, ("fp32", "fp16"))
    fake = _trt()
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    [plan] = plan_engines(d, "fp16", ("full",))
    sidecar = build_engine(plan, device=DEV, workspace_mb=512, timing_cache=cache, trt=fake)
    assert plan.engine.read_bytes() == b"\x00PLAN\x01"  # nothing before or after the plan
    assert cache.read_bytes() == b"old+tuned"
    assert ("network", 1 << 5) in fake.calls and ("pool", "workspace", 512 << 20) in fake.calls
    assert ("parse", str(d / "model.fp16.onnx")) in fake.calls and ("clear", "tf32") in fake.calls
    on_disk = read_sidecar(plan.engine)
    assert on_disk == sidecar
    assert (on_disk["tensorrt"], on_disk["gpu"], on_disk["compute_capability"]) == ("10.13.3.9", "Fake GPU", "8.6")
    assert (on_disk["gpu_uuid"], on_disk["gpu_memory_mb"], on_disk["cuda"], on_disk["driver"]) == (DEV.uuid, 16384, "12.9", "")
    assert on_disk["onnx_sha256"] == sha256(d / "model.fp16.onnx") and on_disk["precision"] == "fp16" and on_disk["tf32"] is False


def test_one_process_wide_logger_into_logging(caplog: pytest.LogCaptureFixture) -> None:
    fake = _trt()
    logger = trt_logger(fake)
    assert trt_logger(fake) is logger and isinstance(logger, fake.ILogger) and fake.loggers == [logger]
    with caplog.at_level(logging.DEBUG, "mfv2.tensorrt"):
        logger.log(fake.ILogger.Severity.ERROR, "bad thing")
        logger.log(fake.ILogger.Severity.VERBOSE, "detail")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.ERROR, "TensorRT: bad thing"),
                                                                     (logging.DEBUG, "TensorRT: detail")]


def test_int8_engine_prefers_the_graph_exported_for_tensorrt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = _export_dir(tmp_path)
    onnx.save(_qdq_graph(np.array(128, np.uint8)), str(d / "model.int8.onnx"))
    fake = _trt()
    with caplog.at_level(logging.WARNING):
        [plan] = plan_engines(d, "int8", ("full",))
    assert any("a graph whose parity nobody measured" in r.getMessage() for r in caplog.records)
    sidecar = build_engine(plan, device=DEV, trt=fake)
    assert ("parse", str(d / "model.int8.engine.source.onnx")) in fake.calls
    assert not (d / "model.int8.engine.source.onnx").exists()
    assert sidecar["qdq"].startswith("uint8 activations re-expressed") and sidecar["onnx"] == "model.int8.onnx"
    onnx.save(_qdq_graph(np.array(0, np.int8)), str(d / f"model{TRT_INT8_SUFFIX}"))
    [plan] = plan_engines(d, "int8", ("full",))
    fake = _trt()
    sidecar = build_engine(plan, device=DEV, trt=fake)
    assert ("parse", str(d / "model.int8-trt.onnx")) in fake.calls  # parsed as exported and measured
    assert sidecar["onnx"] == "model.int8-trt.onnx" and sidecar["qdq"].startswith("as exported for TensorRT")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "bf16"])
def test_tf32_is_off_for_every_precision(tmp_path: Path, precision: str) -> None:
    d = _export_dir(tmp_path, ("fp32", "fp16"))
    onnx.save(_qdq_graph(np.array(0, np.int8)), str(d / f"model{TRT_INT8_SUFFIX}"))
    fake = _trt()
    build_engine(plan_engines(d, precision, ("full",))[0], device=DEV, trt=fake)
    assert ("clear", "tf32") in fake.calls and ("set", "tf32") not in fake.calls


def test_bf16_needs_weak_typing_and_an_ampere_gpu(tmp_path: Path) -> None:
    d = _export_dir(tmp_path)
    fake = _trt()
    build_engine(plan_engines(d, "bf16", ("full",))[0], device=DEV, trt=fake)
    assert ("network", 0) in fake.calls and ("set", "bf16") in fake.calls
    fake11 = fake_tensorrt(FakeCudart(), "11.4.0.106", bf16=False)
    with pytest.raises(ConfigError, match="TensorRT 11.4.0.106 builds bf16 only from a bf16-typed ONNX"):
        build_engine(plan_engines(d, "bf16", ("full",))[0], device=DEV, trt=fake11)
    turing = dataclasses.replace(DEV, name="Tesla T4", compute_capability="7.5")
    with pytest.raises(ConfigError, match=r"bf16 needs an Ampere or newer GPU .* Tesla T4 is sm 7.5: build with --fp16"):
        build_engine(plan_engines(d, "bf16", ("full",))[0], device=turing, trt=_trt())


def test_build_engine_reports_parser_errors_and_failed_builds(tmp_path: Path) -> None:
    d = _export_dir(tmp_path)
    plan = plan_engines(d, "fp32", ("full",))[0]
    fake = _trt()
    fake.parse_ok = False
    with pytest.raises(ExportError, match="could not parse model.onnx: unsupported node Foo"):
        build_engine(plan, device=DEV, trt=fake)
    fake = _trt()
    fake.plan = None
    with pytest.raises(ExportError, match="failed to build model.engine"):
        build_engine(plan, device=DEV, trt=fake)
    assert not plan.engine.exists()


def test_build_engines_builds_on_the_chosen_cuda_device_without_nvidia_smi(
    tmp_path: Path, cuda: FakeCudart, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    d = _export_dir(tmp_path, ("fp32",))
    for stem in ("template_encoder", "search_decoder"):
        onnx.save(_qdq_graph(np.array(0, np.int8)), str(d / f"{stem}{TRT_INT8_SUFFIX}"))
    engines = build_engines(d, "int8", graphs=("template_encoder", "search_decoder"), device_id=1)
    assert [e.name for e in engines] == ["template_encoder.int8.engine", "search_decoder.int8.engine"]
    assert [c[2] for c in cuda.trt.calls if c[0] == "builder logger"] == [1, 1]  # built with device 1 current
    m = load_manifest(d)
    a = m.find("search_decoder", "int8", "tensorrt")
    assert a is not None and a.sha256 == sha256(d / a.file)
    assert (a.extra["gpu"], a.extra["compute_capability"], a.extra["tf32"]) == ("Fake GPU", "8.6", False)
    assert m.find("full", "int8", "tensorrt") is None
    with pytest.raises(ConfigError, match=r"bf16 needs an Ampere or newer GPU .* Old GPU is sm 7.5"):
        build_engines(d, "bf16", device_id=0)
    with pytest.raises(ConfigError, match="CUDA device 5 does not exist"):
        build_engines(d, "fp32", device_id=5)


def test_build_engines_without_gpu_or_cuda_python_says_so(tmp_path: Path, cuda: FakeCudart, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _export_dir(tmp_path)
    cuda.fail["cudaGetDeviceCount"] = cudaError_t.cudaErrorNoDevice
    with pytest.raises(BackendUnavailableError, match=r"no CUDA device found \(cudaErrorNoDevice"):
        build_engines(d, "fp16")
    with pytest.raises(ConfigError, match="not an mfv2 export directory"):
        build_engines(tmp_path, "fp16")
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime"):
        monkeypatch.setitem(sys.modules, name, None)  # not installed
    with pytest.raises(BackendUnavailableError, match=r'needs cuda-python; install it with: pip install "mfv2\[tensorrt\]"'):
        build_engines(d, "fp16")


@pytest.mark.skipif(importlib.util.find_spec("cuda") is not None, reason="cuda-python is installed here")
def test_cli_build_engine_without_cuda_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mfv2.cli import main

    d = _export_dir(tmp_path)
    assert main(["build-engine", str(d), "--fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mfv2: error: the TensorRT path needs cuda-python") and "\n" not in err
    assert main(["build-engine", str(d), "--device", "-1"]) == 2


def test_int8_graph_for_tensorrt_is_symmetric_full_range_fp16_based_and_measured_as_parsed(tmp_path: Path) -> None:
    """The graph build_engine parses unchanged: int8 zero points, 8-bit weights, no Q/DQ on GEMM outputs, fp16 base."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from mfv2.exporters import export
    from mfv2.exporters.quantize import to_int8_tensorrt

    d = export(None, tmp_path / "exp", variant="tiny", seed=0)
    rng = np.random.default_rng(0)
    src = d / "search_decoder.onnx"
    model = onnx.load(str(src))
    feeds = [{i.name: rng.standard_normal([x.dim_value for x in i.type.tensor_type.shape.dim]).astype(np.float32)
              for i in model.graph.input} for _ in range(9)]
    dst = to_int8_tensorrt(src, d / f"search_decoder{TRT_INT8_SUFFIX}", feeds[:8])
    q = onnx.load(str(dst))
    assert tensorrt_issues(q) == [] and [o.version for o in q.opset_import if o.domain in ("", "ai.onnx")] == [19]
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    producer = {o: n for n in q.graph.node for o in n.output}
    qs = [n for n in q.graph.node if n.op_type == "QuantizeLinear"]
    assert qs and all(not inits[n.input[2]].any() and inits[n.input[2]].dtype == np.int8 for n in qs if len(n.input) > 2)
    assert not [n.name for n in qs if n.input[0] in producer and producer[n.input[0]].op_type in ("MatMul", "Gemm")]
    dqs = [n for n in q.graph.node if n.op_type == "DequantizeLinear"]
    assert {inits[n.input[1]].dtype for n in dqs if n.input[1] in inits} == {np.dtype(np.float16)}  # fp16 base
    weights = [inits[n.input[0]] for n in dqs if n.input[0] in inits]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == 127  # full 8-bit, not 7-bit
    half_matmuls = [n for n in q.graph.node if n.op_type == "MatMul"]
    assert half_matmuls
    # Parity measured on this very file, as TensorRT will parse it.
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, feeds[8])
    got = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, feeds[8])
    for r, g in zip(ref, got):
        assert g.dtype == np.float32 and np.isfinite(g).all()
        np.testing.assert_allclose(g, r, atol=0.02)
