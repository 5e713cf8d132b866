"""The TensorRT backend, as far as a CPU allows: driven through fake ``tensorrt`` and ``pycuda`` modules.

The fakes keep "device memory" in a dict keyed by address and run a tiny engine (boxes from the
means of its inputs) so the tests can check what the backend promises: buffers allocated and
addresses set once, the bound KV uploaded once, one upload and one execute per frame, CUDA-graph
capture once and replay afterwards, everything freed on close. The real-GPU test is marked ``gpu``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import shutil
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mfv2.config import VARIANTS, TrackerConfig
from mfv2.errors import BackendUnavailableError, ConfigError
from mfv2.export.manifest import Manifest
from mfv2.runtimes import load_backend

CFG = VARIANTS.get("tiny")
KV = (CFG.depth, 2, 1, CFG.num_heads, 2 * CFG.num_template_tokens, CFG.head_dim)
IO = {
    "template_encoder": {"template": ("in", (1, 3, 32, 32)), "online_template": ("in", (1, 3, 32, 32)), "kv": ("out", KV)},
    "search_decoder": {"search": ("in", (1, 3, 64, 64)), "kv": ("in", KV), "boxes": ("out", (1, 4)), "score": ("out", (1,))},
}
ENV = {"tensorrt": "10.9.0", "cuda": "12.6", "gpu": "Fake GPU", "compute_capability": "8.9", "driver": "560"}


class FakeCuda:
    """pycuda.driver: device memory is a dict address -> bytes; streams can capture work into graphs."""

    def __init__(self):
        self.memory: dict[int, np.ndarray] = {}
        self.calls: Counter[str] = Counter()
        self.streams: dict[int, FakeCuda.Stream] = {}
        self.contexts_alive = 0
        cuda = self

        class Allocation:
            def __init__(self, nbytes):
                self.address = 0x1000 * (len(cuda.memory) + 1)
                cuda.memory[self.address] = np.zeros(nbytes, np.uint8)

            def __int__(self):
                return self.address

            def free(self):
                cuda.calls["free"] += 1
                del cuda.memory[self.address]

        class Stream:
            def __init__(self):
                self.handle = 0xABC0 + len(cuda.streams)
                self.captured: list | None = None
                cuda.streams[self.handle] = self

            def synchronize(self):
                cuda.calls["sync"] += 1

            def begin_capture(self, mode):
                assert mode == "thread-local"
                self.captured = []

            def end_capture(self):
                ops, self.captured = self.captured, None
                cuda.calls["capture"] += 1
                return types.SimpleNamespace(instantiate=lambda: types.SimpleNamespace(launch=lambda stream: cuda._launch(ops)))

        class Context:
            @staticmethod
            def pop():
                cuda.calls["pop"] += 1

        class PrimaryContext:
            def push(self):
                cuda.calls["push"] += 1

            def detach(self):
                cuda.contexts_alive -= 1

        def device(ordinal):
            def retain():
                cuda.contexts_alive += 1
                return PrimaryContext()

            return types.SimpleNamespace(retain_primary_context=retain)

        self.Stream, self.Context, self.Device = Stream, Context, device
        self.capture_mode = types.SimpleNamespace(GLOBAL="global", THREAD_LOCAL="thread-local", RELAXED="relaxed")
        self._Allocation = Allocation

    def _launch(self, ops):
        self.calls["graph_launch"] += 1
        for op in ops:
            op()

    def init(self):
        self.calls["init"] += 1

    def pagelocked_empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def mem_alloc(self, nbytes):
        self.calls["mem_alloc"] += 1
        return self._Allocation(nbytes)

    def memcpy_htod_async(self, dst, src, stream):
        self.calls["htod"] += 1
        self.memory[int(dst)][:] = np.frombuffer(src.tobytes(), np.uint8)

    def memcpy_dtoh_async(self, dst, src, stream):
        self.calls["dtoh"] += 1
        dst[...] = np.frombuffer(self.memory[int(src)].tobytes(), dst.dtype).reshape(dst.shape)


def fake_tensorrt(cuda: FakeCuda) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = ENV["tensorrt"]
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.nptype = lambda dtype: np.float32

    class Engine:
        def __init__(self, spec):
            self.io = {k: (mode, tuple(shape)) for k, (mode, shape) in spec["io"].items()}
            self.names = list(self.io)
            self.num_io_tensors = len(self.names)
            self.graph = spec["graph"]

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return self.io[name][0]

        def get_tensor_shape(self, name):
            return self.io[name][1]

        def get_tensor_dtype(self, name):
            return "float"

        def create_execution_context(self):
            return Context(self)

    class Context:
        def __init__(self, engine):
            self.engine, self.addresses = engine, {}

        def set_tensor_address(self, name, ptr):
            cuda.calls["set_tensor_address"] += 1
            self.addresses[name] = ptr

        def _tensor(self, name):
            shape = self.engine.io[name][1]
            return cuda.memory[self.addresses[name]].view(np.float32).reshape(shape)

        def _compute(self):
            cuda.calls["execute"] += 1
            if self.engine.graph == "template_encoder":
                self._tensor("kv")[...] = self._tensor("template").mean() + 10 * self._tensor("online_template").mean()
            else:
                self._tensor("boxes")[...] = [[self._tensor("search").mean(), self._tensor("kv").mean(), 0.25, 0.5]]
                self._tensor("score")[...] = 0.75

        def execute_async_v3(self, stream_handle):
            stream = cuda.streams[stream_handle]
            if stream.captured is not None:
                stream.captured.append(self._compute)
            else:
                self._compute()
            return True

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            try:
                return Engine(json.loads(data))
            except ValueError:
                return None

    trt.Runtime = Runtime
    return trt


@pytest.fixture
def fakes(monkeypatch):
    import mfv2.export.tensorrt as export_trt

    cuda = FakeCuda()
    pycuda = types.ModuleType("pycuda")
    pycuda.__spec__ = importlib.machinery.ModuleSpec("pycuda", None)
    pycuda.driver = cuda
    monkeypatch.setitem(__import__("sys").modules, "pycuda", pycuda)
    monkeypatch.setitem(__import__("sys").modules, "pycuda.driver", cuda)
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", fake_tensorrt(cuda))
    monkeypatch.setattr(export_trt, "environment", lambda trt=None: dict(ENV))
    return cuda


def write_engines(directory: Path, *, io=IO, sidecar=ENV, graphs=("template_encoder", "search_decoder")) -> Path:
    """An export directory holding a manifest and fake engines with sidecars, as 'mfv2 build-engine' leaves them."""
    from mfv2.export.tensorrt import SIDECAR_FORMAT

    directory.mkdir()
    Manifest(model=CFG, tracker=TrackerConfig()).save(directory)
    for graph in graphs:
        spec = {"graph": graph, "io": {k: [m, list(s)] for k, (m, s) in io[graph].items()}}
        (directory / f"{graph}.engine").write_text(json.dumps(spec))
        meta = {"format": SIDECAR_FORMAT, "engine": f"{graph}.engine", "precision": "fp32", **sidecar}
        (directory / f"{graph}.engine.json").write_text(json.dumps(meta))
    return directory


def _inputs(value: float):
    t = np.full((1, 3, 32, 32), value, np.float32)
    return t, 2 * t, np.full((1, 3, 64, 64), 0.5, np.float32)


def test_buffers_once_kv_bound_once_one_upload_and_execute_per_frame(fakes, tmp_path):
    runner = load_backend("tensorrt", write_engines(tmp_path / "exp"))
    assert runner.graph == "split" and runner.device == "cuda:0"
    assert fakes.calls["mem_alloc"] == fakes.calls["set_tensor_address"] == 7  # 3 encoder + 4 decoder tensors
    t, ot, s = _inputs(1.0)
    runner.set_templates(t, ot)
    assert fakes.calls["htod"] == 3  # template + online template, then the kv once into the decoder
    for i in range(5):
        boxes, score = runner.predict(s + i)
        np.testing.assert_allclose(boxes, [[0.5 + i, 1.0 + 10 * 2.0, 0.25, 0.5]])
        np.testing.assert_allclose(score, [0.75])
    assert fakes.calls["htod"] == 3 + 5 and fakes.calls["execute"] == 1 + 5
    assert fakes.calls["mem_alloc"] == 7  # nothing allocated per frame
    runner.close()
    assert fakes.calls["free"] == 7 and fakes.contexts_alive == 0 and not fakes.memory


def test_cuda_graph_is_captured_once_and_replayed(fakes, tmp_path):
    runner = load_backend("tensorrt", write_engines(tmp_path / "exp"), cuda_graph=True)
    t, ot, s = _inputs(1.0)
    runner.set_templates(t, ot)
    for _ in range(3):
        np.testing.assert_allclose(runner.predict(s)[0], [[0.5, 21.0, 0.25, 0.5]])
    runner.set_templates(*_inputs(2.0)[:2])  # new kv behind the same address: the graph stays valid
    np.testing.assert_allclose(runner.predict(s)[0], [[0.5, 42.0, 0.25, 0.5]])
    assert fakes.calls["capture"] == 2  # one graph per session (encoder and decoder)
    assert fakes.calls["graph_launch"] == 2 + 4


def test_full_graph_engine_and_discovery_by_file_name(fakes, tmp_path):
    io = {"full": {"template": ("in", (1, 3, 32, 32)), "online_template": ("in", (1, 3, 32, 32)),
                   "search": ("in", (1, 3, 64, 64)), "boxes": ("out", (1, 4)), "score": ("out", (1,))}}
    directory = tmp_path / "exp"
    write_engines(directory, io=io, graphs=("full",))
    (directory / "full.engine").rename(directory / "model.engine")
    (directory / "full.engine.json").rename(directory / "model.engine.json")
    with pytest.raises(ConfigError, match="has no split graphs the tensorrt backend"):
        load_backend("tensorrt", directory, graph="split")
    runner = load_backend("tensorrt", directory)
    assert runner.graph == "full"


def test_engine_problems_are_one_line_errors(fakes, tmp_path):
    with pytest.raises(ConfigError, match="mfv2 build-engine"):
        load_backend("tensorrt", write_engines(tmp_path / "none", graphs=()))
    old = write_engines(tmp_path / "old", sidecar={**ENV, "tensorrt": "10.3.0"})
    with pytest.raises(ConfigError, match=r"built with TensorRT 10.3.0 .* rebuild it here"):
        load_backend("tensorrt", old)
    broken = write_engines(tmp_path / "broken")
    (broken / "search_decoder.engine").write_text("not a plan")
    with pytest.raises(ConfigError, match="cannot load search_decoder.engine"):
        load_backend("tensorrt", broken)
    dynamic = {**IO, "search_decoder": {**IO["search_decoder"], "search": ("in", (-1, 3, 64, 64))}}
    with pytest.raises(ConfigError, match="dynamic shapes"):
        load_backend("tensorrt", write_engines(tmp_path / "dynamic", io=dynamic))
    assert fakes.contexts_alive == 0 and not fakes.memory  # failed loads release what they took


@pytest.mark.skipif(all(importlib.util.find_spec(m) is not None for m in ("tensorrt", "pycuda")),
                    reason="TensorRT is installed here")
def test_missing_tensorrt_names_the_extra(tmp_path):
    with pytest.raises(BackendUnavailableError, match=r'pip install "mfv2\[tensorrt\]"'):
        load_backend("tensorrt", tmp_path)


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None or shutil.which("nvidia-smi") is None,
                    reason="needs TensorRT and an NVIDIA GPU")
def test_real_engines_match_onnxruntime(tmp_path):  # pragma: no cover - GPU only
    from mfv2.export import export
    from mfv2.export.tensorrt import build_engine, plan_engines

    directory = export(None, tmp_path / "exp", variant="tiny")
    for plan in plan_engines(directory, "fp32", ("template_encoder", "search_decoder")):
        build_engine(plan)
    rng = np.random.default_rng(0)
    t, ot = (rng.standard_normal((1, 3, 32, 32), dtype=np.float32) for _ in range(2))
    s = rng.standard_normal((1, 3, 64, 64), dtype=np.float32)
    outs = []
    for backend, options in (("onnxruntime", {}), ("tensorrt", {"cuda_graph": True})):
        with load_backend(backend, directory, **options) as runner:
            runner.set_templates(t, ot)
            outs.append(runner.predict(s))
    np.testing.assert_allclose(outs[1][0], outs[0][0], atol=1e-3)
