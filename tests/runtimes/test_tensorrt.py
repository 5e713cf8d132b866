"""The TensorRT backend, as far as a CPU allows: driven through fake ``tensorrt`` and cuda-python modules.

The fakes (``tests/_tensorrt_fakes.py``, their names checked against the real packages in
``tests/runtimes/test_tensorrt_fakes.py``) keep device memory in real buffers and run a tiny engine (boxes from
the means of its inputs), so the tests check what the backend promises: buffers allocated and
addresses set once, the bound KV uploaded once, one upload and one execute per frame, CUDA-graph
capture once (thread-local) and replay afterwards, a failed capture ended and replaced by plain
enqueues with one warning, everything released in order on close. The real-GPU test is marked ``gpu``.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.util
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mfv2.artifacts import Manifest
from mfv2.config import VARIANTS, TrackerConfig
from mfv2.errors import BackendUnavailableError, ConfigError, Mfv2Error
from mfv2.runtimes import load_backend
from tests._tensorrt_fakes import OK, FakeCudart, cudaError_t, fake_cuda_package, fake_tensorrt

CFG = VARIANTS.get("tiny")
KV = (CFG.depth, 2, 1, CFG.num_heads, 2 * CFG.num_template_tokens, CFG.head_dim)
IO = {
    "template_encoder": {"template": ("input", (1, 3, 32, 32)), "online_template": ("input", (1, 3, 32, 32)), "kv": ("output", KV)},
    "search_decoder": {"search": ("input", (1, 3, 64, 64)), "kv": ("input", KV), "boxes": ("output", (1, 4)), "score": ("output", (1,))},
}
ENV = {"tensorrt": "10.13.3.9", "cuda": "12.9", "gpu": "Fake GPU", "compute_capability": "8.9", "driver": ""}


@pytest.fixture
def cudart(monkeypatch: pytest.MonkeyPatch) -> FakeCudart:
    fake = FakeCudart()
    for name, module in fake_cuda_package(fake).items():
        monkeypatch.setitem(sys.modules, name, module)
    trt = fake_tensorrt(fake)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    fake.trt = trt  # type: ignore[attr-defined]
    return fake


def write_engines(directory: Path, *, io=IO, sidecar=ENV, graphs=("template_encoder", "search_decoder"), capturable=True,
                  batch: int = 1) -> Path:
    """An export directory holding a manifest and fake engines with sidecars, as 'mfv2 build-engine' leaves them."""
    from mfv2.artifacts import SIDECAR_FORMAT

    directory.mkdir()
    Manifest(model=CFG, tracker=TrackerConfig(), batch=batch).save(directory)
    for graph in graphs:
        spec = {"graph": graph, "capturable": capturable, "io": {k: [m, list(s)] for k, (m, s) in io[graph].items()}}
        (directory / f"{graph}.engine").write_text(json.dumps(spec))
        meta = {"format": SIDECAR_FORMAT, "engine": f"{graph}.engine", "precision": "fp32", **sidecar}
        (directory / f"{graph}.engine.json").write_text(json.dumps(meta))
    return directory


def _inputs(value: float):
    t = np.full((1, 3, 32, 32), value, np.float32)
    return t, 2 * t, np.full((1, 3, 64, 64), 0.5, np.float32)


def _closed_cleanly(cudart: FakeCudart) -> None:
    assert cudart.leaks() == {"device": 0, "host": 0, "streams": 0, "graphs": 0, "execs": 0}
    assert all(not ops for ops in cudart.streams.values())  # no stream left capturing


def test_buffers_once_kv_bound_once_one_upload_and_execute_per_frame(cudart, tmp_path):
    runner = load_backend("tensorrt", write_engines(tmp_path / "exp"))
    assert runner.graph == "split" and runner.device == "cuda:0"
    assert cudart.calls["cudaMalloc"] == cudart.calls["set_tensor_address"] == 7  # 3 encoder + 4 decoder tensors
    assert len({id(c[1]) for c in cudart.trt.calls if c[0] == "runtime logger"}) == 1  # one logger for all
    t, ot, s = _inputs(1.0)
    runner.set_templates(t, ot)
    # Template + online template up; the kv stays in the encoder's output buffer, which the decoder reads.
    assert cudart.calls["cudaMemcpyAsync"] == 2 and cudart.calls["set_tensor_address"] == 7 + 1
    encoder, decoder = runner._encoder, runner._decoder
    assert decoder._context.addresses["kv"] == encoder._buffers["kv"].ptr != decoder._buffers["kv"].ptr
    for i in range(5):
        boxes, score = runner.predict(s + i)
        np.testing.assert_allclose(boxes, [[0.5 + i, 1.0 + 10 * 2.0, 0.25, 0.5]])
        np.testing.assert_allclose(score, [0.75])
    assert cudart.calls["execute"] == 1 + 5 and cudart.calls["cudaMemcpyAsync"] == 2 + 5 * 3  # search in, boxes + score out
    assert cudart.calls["cudaMalloc"] == 7 and cudart.calls["cudaStreamBeginCapture"] == 0
    runner.close()
    _closed_cleanly(cudart)
    # Per session: TensorRT's context goes while its buffers and stream exist, then the buffers, then the stream.
    assert len(cudart.trt.released) == 2 and all(r["device"] > 0 and r["streams"] > 0 for r in cudart.trt.released)
    last_malloc = max(i for i, e in enumerate(cudart.events) if e.startswith("malloc"))
    chunks = " ".join(cudart.events[last_malloc + 1:]).split("stream destroyed")
    assert len(chunks) == 3 and chunks[-1] == "" and all("free device" in c and set(c.split()) <= {"free", "device", "host"} for c in chunks[:2])


def test_cuda_graph_is_captured_once_thread_local_and_replayed(cudart, tmp_path):
    runner = load_backend("tensorrt", write_engines(tmp_path / "exp"), cuda_graph=True)
    t, ot, s = _inputs(1.0)
    runner.set_templates(t, ot)
    for _ in range(3):
        np.testing.assert_allclose(runner.predict(s)[0], [[0.5, 21.0, 0.25, 0.5]])
    runner.set_templates(*_inputs(2.0)[:2])  # new kv behind the same address: the graph stays valid
    np.testing.assert_allclose(runner.predict(s)[0], [[0.5, 42.0, 0.25, 0.5]])
    assert cudart.capture_modes == [1, 1]  # cudaStreamCaptureModeThreadLocal, one graph per session
    assert cudart.events.count("graph launch") == 1 + 3  # encoder: its second call; decoder: frames 2-4
    assert cudart.calls["execute"] == 2 + 4  # first calls plain, then replays
    runner.close()
    _closed_cleanly(cudart)
    assert cudart.events.index("graph exec destroyed") < cudart.events.index("graph destroyed") < cudart.events.index("free device")


@pytest.mark.parametrize("failure", ["not capturable", "cudaStreamBeginCapture", "cudaGraphInstantiate", "sync in capture"])
def test_failed_capture_is_ended_and_falls_back_to_plain_enqueues_with_one_warning(cudart, tmp_path, caplog, failure, monkeypatch):
    from mfv2 import _cuda as cuda_api

    if failure.startswith("cuda"):
        cudart.fail[failure] = cudaError_t.cudaErrorStreamCaptureUnsupported
    if failure == "sync in capture":  # work that synchronises the stream invalidates the capture
        real = cuda_api.capture_graph
        monkeypatch.setattr("mfv2.runtimes.tensorrt_backend.capture_graph",
                            lambda c, stream, enqueue: real(c, stream, lambda: (enqueue(), stream.synchronize())[0]))
    directory = write_engines(tmp_path / "exp", capturable=failure != "not capturable")
    with caplog.at_level(logging.WARNING, "mfv2.runtimes.tensorrt_backend"):
        runner = load_backend("tensorrt", directory, cuda_graph=True)
        t, ot, s = _inputs(1.0)
        runner.set_templates(t, ot)
        for i in range(4):
            np.testing.assert_allclose(runner.predict(s + i)[0], [[0.5 + i, 21.0, 0.25, 0.5]])
    warnings = [r.getMessage() for r in caplog.records if "CUDA graph" in r.getMessage()]
    assert len(warnings) == 2 and all("running plain enqueues" in w for w in warnings)  # once per engine
    assert cudart.calls["cudaStreamBeginCapture"] == 2 and "graph launch" not in cudart.events
    assert cudart.last_error == cudaError_t.cudaSuccess  # the failed capture's error was cleared
    if failure != "cudaStreamBeginCapture":
        assert cudart.calls["cudaStreamEndCapture"] == 2  # the capture was always ended
    assert not cudart.graphs and not cudart.execs  # partial graphs destroyed
    runner.close()
    _closed_cleanly(cudart)


def test_a_failed_enqueue_or_cuda_call_is_an_error_and_load_failures_release_everything(cudart, tmp_path):
    directory = write_engines(tmp_path / "exp")
    runner = load_backend("tensorrt", directory)
    cudart.trt.execute_ok = False
    with pytest.raises(Mfv2Error, match="execute_async_v3 failed"):
        runner.set_templates(*_inputs(1.0)[:2])
    cudart.trt.execute_ok = True
    cudart.fail["cudaMemcpyAsync"] = cudaError_t.cudaErrorInvalidValue
    with pytest.raises(Mfv2Error, match=r"cudaMemcpyAsync\(host -> device\) failed: cudaErrorInvalidValue"):
        runner.set_templates(*_inputs(1.0)[:2])
    del cudart.fail["cudaMemcpyAsync"]
    runner.close()
    cudart.fail["cudaMalloc"] = cudaError_t.cudaErrorMemoryAllocation
    with pytest.raises(Mfv2Error, match=r"cudaMalloc\(\d+\) failed: cudaErrorMemoryAllocation"):
        load_backend("tensorrt", directory)
    _closed_cleanly(cudart)


def test_close_goes_on_after_a_failed_release_step(cudart, tmp_path, caplog):
    runner = load_backend("tensorrt", write_engines(tmp_path / "exp"), cuda_graph=True)
    runner.set_templates(*_inputs(1.0)[:2])
    cudart.fail["cudaGraphExecDestroy"] = cudaError_t.cudaErrorInvalidValue
    with caplog.at_level(logging.WARNING):
        runner.close()
    assert any("could not destroy the CUDA graph" in r.getMessage() for r in caplog.records)
    assert cudart.leaks()["device"] == 0 and cudart.leaks()["streams"] == 0


def test_device_identity_comes_from_the_cuda_device_in_use(cudart, tmp_path):
    cudart.devices = (("Old GPU", 7, 5), ("Fake GPU", 8, 9))
    directory = write_engines(tmp_path / "exp")
    with pytest.raises(ConfigError, match=r"for Fake GPU \(sm 8.9\), but this machine has TensorRT 10.13.3.9 and Old GPU \(sm 7.5\)"):
        load_backend("tensorrt", directory)  # device 0
    runner = load_backend("tensorrt", directory, device_id=1)
    assert runner.device == "cuda:1" and cudart.current == 1
    runner.close()
    with pytest.raises(ConfigError, match="CUDA device 2 does not exist; this machine has 2"):
        load_backend("tensorrt", directory, device_id=2)


def test_no_gpu_or_driver_is_one_clear_error(cudart, tmp_path):
    cudart.fail["cudaGetDeviceCount"] = cudaError_t.cudaErrorInsufficientDriver
    with pytest.raises(BackendUnavailableError, match=r"no CUDA device found \(cudaErrorInsufficientDriver"):
        load_backend("tensorrt", write_engines(tmp_path / "exp"))


def test_full_graph_engine_and_discovery_by_file_name(cudart, tmp_path):
    io = {"full": {"template": ("input", (1, 3, 32, 32)), "online_template": ("input", (1, 3, 32, 32)),
                   "search": ("input", (1, 3, 64, 64)), "boxes": ("output", (1, 4)), "score": ("output", (1,))}}
    directory = tmp_path / "exp"
    write_engines(directory, io=io, graphs=("full",))
    (directory / "full.engine").rename(directory / "model.engine")
    (directory / "full.engine.json").rename(directory / "model.engine.json")
    with pytest.raises(ConfigError, match="has no split graphs the tensorrt backend"):
        load_backend("tensorrt", directory, graph="split")
    runner = load_backend("tensorrt", directory)
    assert runner.graph == "full"
    runner.close()


def test_engine_problems_are_one_line_errors(cudart, tmp_path):
    with pytest.raises(ConfigError, match="mfv2 build-engine"):
        load_backend("tensorrt", write_engines(tmp_path / "none", graphs=()))
    old = write_engines(tmp_path / "old", sidecar={**ENV, "tensorrt": "10.3.0"})
    with pytest.raises(ConfigError, match=r"built with TensorRT 10.3.0 .* rebuild it here"):
        load_backend("tensorrt", old)
    broken = write_engines(tmp_path / "broken")
    (broken / "search_decoder.engine").write_text("not a plan")
    with pytest.raises(ConfigError, match="cannot load search_decoder.engine"):
        load_backend("tensorrt", broken)
    dynamic = {**IO, "search_decoder": {**IO["search_decoder"], "search": ("input", (-1, 3, 64, 64))}}
    with pytest.raises(ConfigError, match="dynamic shapes"):
        load_backend("tensorrt", write_engines(tmp_path / "dynamic", io=dynamic))
    _closed_cleanly(cudart)  # failed loads release what they took


def _real_tensorrt() -> bool:
    from mfv2.runtimes.tensorrt_backend import TensorRtBackend

    return TensorRtBackend.is_available()


@pytest.mark.skipif(_real_tensorrt(), reason="TensorRT and cuda-python are installed here")
def test_missing_tensorrt_names_the_extra(tmp_path):
    with pytest.raises(BackendUnavailableError, match=r'pip install "mfv2\[tensorrt\]"'):
        load_backend("tensorrt", tmp_path)


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif(not _real_tensorrt(), reason="needs TensorRT, cuda-python and an NVIDIA GPU")
def test_real_engines_match_onnxruntime(tmp_path):  # pragma: no cover - GPU only
    from mfv2.exporters import export
    from mfv2.exporters.tensorrt import build_engines

    directory = export(None, tmp_path / "exp", variant="tiny")
    build_engines(directory, "fp32", graphs=("template_encoder", "search_decoder"))
    rng = np.random.default_rng(0)
    t, ot = (rng.standard_normal((1, 3, 32, 32), dtype=np.float32) for _ in range(2))
    s = rng.standard_normal((1, 3, 64, 64), dtype=np.float32)
    outs = []
    for backend, options in (("onnxruntime", {}), ("tensorrt", {}), ("tensorrt", {"cuda_graph": True})):
        with load_backend(backend, directory, **options) as runner:
            runner.set_templates(t, ot)
            outs.append([runner.predict(s + i) for i in range(3)])
    for got in outs[1:]:
        for (b, sc), (rb, rsc) in zip(got, outs[0]):
            np.testing.assert_allclose(b, rb, atol=1e-3)
            np.testing.assert_allclose(sc, rsc, atol=1e-3)


# Fixed-batch engines under a MultiTracker ---------------------------------------------------------------------------


class cudaMemcpyKindFull(enum.IntEnum):  # noqa: N801 - cuda-python's values
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3


class RowCudart(FakeCudart):
    """The fake runtime plus what row writes use: device-to-device copies, ``cudaMemcpy2DAsync`` and addresses
    inside an allocation; ``copies`` logs every copy as (kind, bytes, destination, source)."""

    cudaMemcpyKind = cudaMemcpyKindFull
    NAMES = ("cudaMemcpy2DAsync",)

    def __init__(self) -> None:
        super().__init__()
        self.copies: list[tuple[str, int, int, int]] = []
        for name in self.NAMES:
            setattr(self, name, self._wrap(name, getattr(self, "_" + name)))

    def _inside(self, ptr: int, count: int, table: dict[int, Any]) -> bool:
        return any(base <= int(ptr) and int(ptr) + count <= base + len(buf) for base, buf in table.items())

    def _tables(self, kind: Any) -> tuple[dict[int, Any], dict[int, Any]] | None:
        pairs = {1: (self.device, self.host), 2: (self.host, self.device), 3: (self.device, self.device)}
        return pairs.get(int(kind))

    def _cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: Any, stream: int) -> tuple[Any]:
        return self._cudaMemcpy2DAsync(dst, count, src, count, count, 1, kind, stream)

    def _cudaMemcpy2DAsync(self, dst: int, dpitch: int, src: int, spitch: int, width: int, height: int, kind: Any,
                           stream: int) -> tuple[Any]:  # fmt: skip
        tables = self._tables(kind)
        last_d, last_s = (height - 1) * dpitch + width, (height - 1) * spitch + width
        if tables is None or width > min(dpitch, spitch) or not (self._inside(dst, last_d, tables[0]) and self._inside(src, last_s, tables[1])):
            return (cudaError_t.cudaErrorInvalidValue,)
        self.copies.append((cudaMemcpyKindFull(int(kind)).name, width * height, int(dst), int(src)))

        def op() -> None:
            for i in range(height):
                ctypes.memmove(int(dst) + i * dpitch, int(src) + i * spitch, width)

        return (OK,) if self.record(stream, op) else (cudaError_t.cudaErrorInvalidValue,)


def _rowwise_compute(self: Any) -> None:
    """The fake engines, row by row: kv row b from the templates of row b; boxes of row b from search row b and kv row b."""
    cudart = self.engine.cudart
    cudart.calls["execute"] += 1
    if self.engine.graph == "template_encoder":
        t, ot, kv = (self._tensor(n) for n in ("template", "online_template", "kv"))
        for b in range(t.shape[0]):
            kv[:, :, b] = t[b].mean() + 10 * ot[b].mean()
    else:
        s, kv, boxes = (self._tensor(n) for n in ("search", "kv", "boxes"))
        for b in range(s.shape[0]):
            boxes[b] = [0.5 + 0.05 * np.tanh(s[b].mean()), 0.5 + 0.05 * np.tanh(kv[:, :, b].mean() / 10), 0.3, 0.4]
        self._tensor("score")[...] = 0.75


def _io(batch: int) -> dict:
    kv = (*KV[:2], batch, *KV[3:])
    return {
        "template_encoder": {"template": ("input", (batch, 3, 32, 32)), "online_template": ("input", (batch, 3, 32, 32)), "kv": ("output", kv)},
        "search_decoder": {"search": ("input", (batch, 3, 64, 64)), "kv": ("input", kv), "boxes": ("output", (batch, 4)),
                           "score": ("output", (batch,))},
    }


@pytest.fixture
def row_cudart(monkeypatch: pytest.MonkeyPatch) -> RowCudart:
    fake = RowCudart()
    for name, module in fake_cuda_package(fake).items():
        monkeypatch.setitem(sys.modules, name, module)
    trt = fake_tensorrt(fake)
    engine, context = trt.RETURNED_TYPES[:2]
    monkeypatch.setattr(engine, "cudart", fake, raising=False)
    monkeypatch.setattr(context, "_compute", _rowwise_compute)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return fake


def _clip(frames: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    return [np.roll(base, 3 * i, axis=1) for i in range(frames)]


def test_fixed_batch_multitracker_keeps_kv_on_the_device_and_writes_rows_in_place(row_cudart, tmp_path):
    from mfv2.tracking import MultiTracker, Tracker

    batch = 4
    fixed = write_engines(tmp_path / "fixed", io=_io(batch), batch=batch)
    single = write_engines(tmp_path / "single", io=_io(1))
    config = TrackerConfig.for_model(CFG).replace(update_interval=2)  # template rows rewritten mid-clip
    frames = _clip()
    boxes = [(10.0, 12.0, 20.0, 16.0), (60.0, 30.0, 24.0, 20.0), (40.0, 50.0, 16.0, 16.0), (80.0, 20.0, 18.0, 22.0)]
    with load_backend("tensorrt", fixed) as runner:
        decoder, kv_buffers = runner._decoder, (runner._encoder._buffers["kv"], runner._decoder._buffers["kv"])
        row_bytes = kv_buffers[0].nbytes // batch

        def kv_through_host() -> list[tuple[str, int, int, int]]:
            """Copies between the host and a kv buffer (either end)."""
            return [c for c in row_cudart.copies if c[0] != "cudaMemcpyDeviceToDevice"
                    and any(b.ptr <= p < b.ptr + b.nbytes for b in kv_buffers for p in c[2:])]

        tracker = MultiTracker(runner, config)
        ids = [tracker.add(frames[0], boxes[0])]
        # The first add pads the batch on the host: the runner reads the encoder's kv back once to build it
        # (runner.py _first_batch) and binds the padded batch, uploaded once.
        assert [c[0] for c in kv_through_host()] == ["cudaMemcpyDeviceToHost", "cudaMemcpyHostToDevice"]
        row_cudart.copies.clear()
        ids += [tracker.add(frames[0], b) for b in boxes[1:3]]
        got = {i: [] for i in range(4)}
        for f in range(1, 8):
            if f == 4:
                tracker.remove(ids[1])  # row 1 is free ...
                ids.append(tracker.add(frames[f - 1], boxes[3]))  # ... and the new target takes it
                assert tracker._rows[ids[3]] == 1
            for tid, result in tracker.update(frames[f]).items():
                got[ids.index(tid)].append(result)
        # No kv went through the host after the first add: every row write was a device-to-device copy of its rows.
        assert kv_through_host() == []
        writes = [c for c in row_cudart.copies if c[0] == "cudaMemcpyDeviceToDevice"]
        assert len(writes) >= 3 and all(c[1] % row_bytes == 0 for c in writes)  # whole rows (a run of rows per copy)
        assert decoder._context.addresses["kv"] == decoder._buffers["kv"].ptr  # its own buffer, written in place
        kv = row_cudart.view(decoder._buffers["kv"].ptr, decoder._buffers["kv"].host.shape)
        for i in (0, 2, 3):  # each live row holds its own target's kv
            state, row = tracker._targets[ids[i]], tracker._rows[ids[i]]
            want = np.float32(state.template.mean() + 10 * state.online.mean())
            np.testing.assert_allclose(kv[:, :, row], want, rtol=1e-6)
    starts = {0: 0, 1: 0, 2: 0, 3: 3}
    stops = {0: 8, 1: 4, 2: 8, 3: 8}
    with load_backend("tensorrt", single) as runner:
        for i in range(4):
            alone = Tracker(runner, config)
            alone.init(frames[starts[i]], boxes[i])
            want = []
            for f in range(starts[i] + 1, stops[i]):
                ok, bbox = alone.update(frames[f])
                want.append((ok, bbox, alone.score))
            assert len(got[i]) == len(want) > 0
            for (ok, bbox, score), (ok_ref, bbox_ref, score_ref) in zip(got[i], want):
                assert ok == ok_ref and score == pytest.approx(score_ref)
                np.testing.assert_allclose(bbox, bbox_ref, atol=1e-4)


def test_row_writes_from_the_host_into_a_shared_kv_and_outside_the_batch(row_cudart, tmp_path):
    from mfv2.errors import ShapeError

    with load_backend("tensorrt", write_engines(tmp_path / "exp", io=_io(3), batch=3)) as runner:
        encoder, decoder = runner._encoder, runner._decoder
        t = np.stack([np.full((3, 32, 32), v, np.float32) for v in (1.0, 2.0, 3.0)])
        runner.set_templates(t, 0 * t)  # the whole batch: the decoder reads the encoder's kv buffer itself
        assert decoder._context.addresses["kv"] == encoder._buffers["kv"].ptr
        shape = decoder._buffers["kv"].host.shape
        rows = np.stack([np.full(shape[:2] + shape[3:], v, np.float32) for v in (7.0, 9.0)], axis=2)
        decoder.write_rows("kv", 2, [2, 0], rows)  # taken over (device to device), then two runs of one row from the host
        assert decoder._context.addresses["kv"] == decoder._buffers["kv"].ptr
        kv = row_cudart.view(decoder._buffers["kv"].ptr, shape)
        assert [float(kv[:, :, r].mean()) for r in range(3)] == [9.0, 2.0, 7.0]
        assert [c[:2] for c in row_cudart.copies[-3:]] == [("cudaMemcpyDeviceToDevice", kv.nbytes),
                                                            *[("cudaMemcpyHostToDevice", rows.nbytes // 2)] * 2]
        enc = row_cudart.view(encoder._buffers["kv"].ptr, shape)
        assert [float(enc[:, :, r].mean()) for r in range(3)] == [1.0, 2.0, 3.0]  # the encoder's output untouched
        with pytest.raises(ShapeError, match="batch is fixed at 3"):
            decoder.write_rows("kv", 2, [3], rows[:, :, :1])
