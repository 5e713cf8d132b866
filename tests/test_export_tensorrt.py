"""TensorRT engine builder: op-set check, planning, builder calls (against a stand-in module), sidecar, compatibility.

TensorRT itself cannot run here (no GPU); the stand-in records the calls the TensorRT 10/11 Python API
documents and returns a fake plan, so the builder's own logic is tested. Engines on a real GPU are
unverified in CI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import mfv2.export.tensorrt as trt_mod  # noqa: E402
from mfv2.config import TrackerConfig, variant_config  # noqa: E402
from mfv2.errors import BackendUnavailableError, ConfigError, ExportError  # noqa: E402
from mfv2.export.manifest import Artifact, Manifest, load_manifest  # noqa: E402
from mfv2.export.quantize import symmetric_qdq  # noqa: E402
from mfv2.export.tensorrt import (  # noqa: E402
    build_engine,
    build_engines,
    check_engine_compatible,
    plan_engines,
    read_sidecar,
    tensorrt_issues,
)
from mfv2.models.checkpoint import file_sha256  # noqa: E402


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


class _FakeTRT:
    """Stand-in for the ``tensorrt`` module: the TensorRT 10 Python builder API, recording calls."""

    def __init__(self, version: str = "10.13.0", bf16: bool = True, parse_ok: bool = True, plan: bytes = b"\x00PLAN\x01") -> None:
        self.__version__ = version
        self.calls: list[tuple] = []
        self._plan, self._parse_ok = plan, parse_ok
        self.Logger = type("Logger", (), {"WARNING": 2, "VERBOSE": 4, "__init__": lambda s, level: None})
        self.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=5)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
        flags = {"TF32": "tf32"} | ({"BF16": "bf16"} if bf16 else {})
        self.BuilderFlag = SimpleNamespace(**flags)
        fake = self

        class Cache:
            def __init__(self, data: bytes) -> None:
                self.data = data

            def serialize(self) -> bytes:
                return self.data + b"+tuned"

        class Config:
            def set_memory_pool_limit(self, pool: str, size: int) -> None:
                fake.calls.append(("pool", pool, size))

            def clear_flag(self, flag: str) -> None:
                fake.calls.append(("clear", flag))

            def set_flag(self, flag: str) -> None:
                fake.calls.append(("set", flag))

            def create_timing_cache(self, data: bytes) -> Cache:
                fake.calls.append(("cache", bytes(data)))
                return Cache(bytes(data))

            def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> bool:
                return True

        class Builder:
            def __init__(self, logger: Any) -> None:
                pass

            def create_network(self, flags: int) -> str:
                fake.calls.append(("network", flags))
                return "network"

            def create_builder_config(self) -> Config:
                return Config()

            def build_serialized_network(self, network: str, config: Config) -> bytes:
                return fake._plan

        class OnnxParser:
            num_errors = 1

            def __init__(self, network: str, logger: Any) -> None:
                pass

            def parse_from_file(self, path: str) -> bool:
                fake.calls.append(("parse", Path(path).name))
                fake.parsed_issues = tensorrt_issues(onnx.load(path))
                return fake._parse_ok

            def get_error(self, i: int) -> str:
                return "unsupported node Foo"

        self.Builder, self.OnnxParser = Builder, OnnxParser


def test_build_engine_writes_byte_pure_plan_and_sidecar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trt_mod, "gpu_info", lambda: {"gpu": "Fake GPU", "compute_capability": "8.6", "driver": "550"})
    d = _export_dir(tmp_path, ("fp32", "fp16"))
    fake = _FakeTRT()
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    [plan] = plan_engines(d, "fp16", ("full",))
    sidecar = build_engine(plan, workspace_mb=512, timing_cache=cache, trt=fake)
    assert plan.engine.read_bytes() == b"\x00PLAN\x01"  # nothing before or after the plan
    assert cache.read_bytes() == b"old+tuned"
    assert ("network", 1 << 5) in fake.calls and ("pool", "workspace", 512 << 20) in fake.calls
    assert ("parse", "model.fp16.onnx") in fake.calls and ("clear", "tf32") not in fake.calls
    on_disk = read_sidecar(plan.engine)
    assert on_disk == sidecar
    assert (on_disk["tensorrt"], on_disk["gpu"], on_disk["compute_capability"]) == ("10.13.0", "Fake GPU", "8.6")
    assert on_disk["onnx_sha256"] == file_sha256(d / "model.fp16.onnx") and on_disk["precision"] == "fp16"


def test_int8_engine_is_built_from_the_symmetric_qdq_graph(tmp_path: Path) -> None:
    d = _export_dir(tmp_path)
    onnx.save(_qdq_graph(np.array(128, np.uint8)), str(d / "model.int8.onnx"))
    fake = _FakeTRT()
    [plan] = plan_engines(d, "int8", ("full",))
    sidecar = build_engine(plan, trt=fake)
    assert ("parse", "model.int8.engine.source.onnx") in fake.calls and fake.parsed_issues == []
    assert not (d / "model.int8.engine.source.onnx").exists()
    assert sidecar["qdq"].startswith("uint8 activations re-expressed") and sidecar["onnx"] == "model.int8.onnx"


def test_build_engine_fp32_turns_tf32_off_and_bf16_needs_weak_typing(tmp_path: Path) -> None:
    d = _export_dir(tmp_path)
    fake = _FakeTRT()
    build_engine(plan_engines(d, "fp32", ("full",))[0], trt=fake)
    assert ("clear", "tf32") in fake.calls
    fake = _FakeTRT()
    build_engine(plan_engines(d, "bf16", ("full",))[0], trt=fake)
    assert ("network", 0) in fake.calls and ("set", "bf16") in fake.calls
    with pytest.raises(ConfigError, match="TensorRT 11.0.0 builds bf16 only from a bf16-typed ONNX"):
        build_engine(plan_engines(d, "bf16", ("full",))[0], trt=_FakeTRT("11.0.0", bf16=False))


def test_build_engine_reports_parser_errors_and_failed_builds(tmp_path: Path) -> None:
    d = _export_dir(tmp_path)
    plan = plan_engines(d, "fp32", ("full",))[0]
    with pytest.raises(ExportError, match="could not parse model.onnx: unsupported node Foo"):
        build_engine(plan, trt=_FakeTRT(parse_ok=False))
    with pytest.raises(ExportError, match="failed to build model.engine"):
        build_engine(plan, trt=_FakeTRT(plan=None))
    assert not plan.engine.exists()


def test_build_engines_lists_engines_in_the_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _export_dir(tmp_path, ("fp32", "int8"))
    monkeypatch.setattr(trt_mod, "gpu_info", lambda: {"gpu": "Fake GPU", "compute_capability": "8.9", "driver": "550"})
    monkeypatch.setattr(trt_mod, "_import_trt", lambda: _FakeTRT())
    engines = build_engines(d, "int8", graphs=("template_encoder", "search_decoder"))
    assert [e.name for e in engines] == ["template_encoder.int8.engine", "search_decoder.int8.engine"]
    m = load_manifest(d)
    a = m.find("search_decoder", "int8", "tensorrt")
    assert a is not None and a.sha256 == file_sha256(d / a.file) and a.extra["compute_capability"] == "8.9"
    assert m.find("full", "int8", "tensorrt") is None


def test_build_engines_without_gpu_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _export_dir(tmp_path)
    monkeypatch.setattr(trt_mod, "gpu_info", lambda: None)
    with pytest.raises(BackendUnavailableError, match="no NVIDIA GPU found"):
        build_engines(d, "fp16")
    with pytest.raises(ConfigError, match="not an mfv2 export directory"):
        build_engines(tmp_path, "fp16")


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA GPU")
def test_cli_build_engine_without_gpu_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mfv2.cli import main

    d = _export_dir(tmp_path)
    assert main(["build-engine", str(d), "--fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mfv2: error: no NVIDIA GPU found") and "\n" not in err


def test_engine_compatibility_check_says_how_to_rebuild(tmp_path: Path) -> None:
    sidecar = {"engine": "model.fp16.engine", "precision": "fp16", "tensorrt": "10.8.0", "gpu": "RTX A4000",
               "compute_capability": "8.6"}
    check_engine_compatible(sidecar, {"tensorrt": "10.8.0", "gpu": "RTX 3090", "compute_capability": "8.6"})
    with pytest.raises(ConfigError, match=r"built with TensorRT 10.8.0 for RTX A4000 \(sm 8.6\), but this machine has "
                       r"TensorRT 10.13.0 and L4 \(sm 8.9\); rebuild it here: mfv2 build-engine exports/S --fp16"):
        check_engine_compatible(sidecar, {"tensorrt": "10.13.0", "gpu": "L4", "compute_capability": "8.9"}, "exports/S")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ConfigError, match="has no sidecar model.engine.json"):
        read_sidecar(engine)
    (tmp_path / "model.engine.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ConfigError, match="not an mfv2 engine sidecar"):
        read_sidecar(engine)

