"""The torch backend's CUDA path, as far as a CPU can check it (issue 25).

fp16/bf16 module casts with float32 LayerNorm and heads, the template KV handed from encoder to decoder
without a host copy, the CUDA-graph capture sequence (through a recording fake of the CUDA calls),
``torch.compile``, one-line errors without CUDA, the bench options of GPU rows, and the GPU script's
dry run. The ``gpu`` tests run only where torch sees a CUDA GPU.
"""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mfv2.errors import BackendUnavailableError, ConfigError, Mfv2Error  # noqa: E402
from mfv2.runtimes import load_backend  # noqa: E402
from mfv2.runtimes import cuda_graphs  # noqa: E402
from mfv2.runtimes.cuda_graphs import GraphedStep  # noqa: E402
from mfv2.runtimes.torch_backend import DeviceArray, TorchBackend, _cast_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def feeds() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return (rng.standard_normal((1, 3, 32, 32), dtype=np.float32), rng.standard_normal((1, 3, 32, 32), dtype=np.float32),
            rng.standard_normal((1, 3, 64, 64), dtype=np.float32))  # fmt: skip


@pytest.fixture(scope="module")
def fp32_boxes(tiny_model, feeds) -> tuple[np.ndarray, np.ndarray]:
    with load_backend("torch", tiny_model, graph="full") as runner:
        runner.set_templates(*feeds[:2])
        return runner.predict(feeds[2])


# ----------------------------------------------------------------------------- precision


def test_low_precision_casts_keep_layernorm_and_heads_fp32(tiny_model) -> None:
    model = _cast_model(copy.deepcopy(tiny_model), torch.bfloat16)
    block = model.backbone.block_list[0]
    assert block.attn.qkv.weight.dtype == torch.bfloat16 and model.backbone.patch_embed.proj.weight.dtype == torch.bfloat16
    assert block.norm1.inner.weight.dtype == torch.float32  # a float32 island around the LayerNorm
    assert all(p.dtype == torch.float32 for p in model.box_head.parameters())
    assert all(p.dtype == torch.float32 for p in model.score_head.parameters())
    x = torch.randn(1, 5, block.norm1.inner.weight.shape[0], dtype=torch.bfloat16)
    assert block.norm1(x).dtype == torch.bfloat16  # computes in fp32, hands back the block's dtype
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32).bfloat16(), torch.randn(1, 3, 32, 32).bfloat16(), torch.randn(1, 3, 64, 64).bfloat16())
    assert out["pred_boxes"].dtype == torch.float32 and out["pred_scores"].dtype == torch.float32
    plain = _cast_model(copy.deepcopy(tiny_model), torch.bfloat16, keep_fp32=False)
    assert isinstance(plain.backbone.block_list[0].norm1, torch.nn.LayerNorm)
    assert next(plain.box_head.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize("precision,tol", [("bf16", 5e-3), ("fp16", 1e-3)])
@pytest.mark.parametrize("graph", ["split", "full"])
def test_low_precision_runs_on_cpu_near_fp32(tiny_model, feeds, fp32_boxes, precision, tol, graph) -> None:
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    errors = {}
    for keep in (True, False):
        with load_backend("torch", tiny_model, precision=precision, graph=graph, keep_fp32=keep) as runner:
            runner.set_templates(*feeds[:2])
            boxes, score = runner.predict(feeds[2])
        assert boxes.dtype == np.float32 and score.dtype == np.float32
        errors[keep] = float(np.abs(boxes - fp32_boxes[0]).max())
    assert 0 < errors[True] <= tol  # really ran in low precision, and close to fp32
    assert errors[True] < errors[False]  # the fp32 LayerNorms and heads are what make it closer
    state = tiny_model.state_dict()  # the caller's model was copied, not cast in place
    assert all(torch.equal(state[k], v) and state[k].dtype == torch.float32 for k, v in before.items())


# ----------------------------------------------------------------------------- KV on the device


def test_template_kv_stays_a_device_tensor_from_encoder_to_decoder(tiny_model, feeds, fp32_boxes, monkeypatch) -> None:
    _, sessions = TorchBackend().load(tiny_model, "split")
    encoder, decoder = sessions["template_encoder"], sessions["search_decoder"]
    kv = encoder.infer({"template": feeds[0], "online_template": feeds[1]})["kv"]
    assert isinstance(kv, DeviceArray) and kv.device == "cpu"
    with torch.no_grad():
        want = tiny_model.encode_templates(torch.from_numpy(feeds[0]), torch.from_numpy(feeds[1])).numpy()
    assert kv.shape == want.shape and kv.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(kv), want)  # readable as NumPy for anyone else
    decoder.bind({"kv": kv})
    assert decoder._persistent["kv"] is kv.tensor  # bound as it is: no copy, no host round trip

    def no_host_copy(self: DeviceArray) -> np.ndarray:
        raise AssertionError("the KV was read on the host")

    monkeypatch.setattr(DeviceArray, "numpy", no_host_copy)
    with load_backend("torch", tiny_model, graph="split") as runner:
        runner.set_templates(*feeds[:2])
        boxes, _ = runner.predict(feeds[2])
    np.testing.assert_allclose(boxes, fp32_boxes[0], atol=1e-5)


# ----------------------------------------------------------------------------- CUDA-graph capture, with a fake


class _FakeGraph:
    """Replays like a CUDA graph: reruns the captured call on the static inputs, writing the static outputs."""

    def __init__(self, fn: Callable[[], Mapping[str, Any]], outputs: Mapping[str, Any], events: list[str]) -> None:
        self._fn, self._outputs, self._events = fn, outputs, events

    def replay(self) -> None:
        self._events.append("replay")
        for k, v in self._fn().items():
            self._outputs[k].copy_(v)


class FakeGraphOps:
    """The call sequence of :class:`~mfv2.runtimes.cuda_graphs.TorchCudaGraphOps`, recorded, on the CPU."""

    def __init__(self, fail: str | None = None) -> None:
        self.events: list[str] = []
        self.fail = fail

    def warm_up(self, fn: Callable[[], object], times: int) -> None:
        self.events.append(f"warm_up x{times}")
        for _ in range(times):
            fn()

    def capture(self, fn: Callable[[], Mapping[str, Any]]) -> tuple[_FakeGraph, Mapping[str, Any]]:
        self.events.append("capture")
        if self.fail:
            raise RuntimeError(self.fail)
        out = dict(fn())
        return _FakeGraph(fn, out, self.events), out

    def synchronize(self) -> None:
        self.events.append("synchronize")


@pytest.fixture(scope="module")
def decode(tiny_model) -> Callable[..., dict[str, Any]]:
    def step(search: Any, kv: Any) -> dict[str, Any]:
        out = tiny_model.track_search(search, kv)
        return {"boxes": out["pred_boxes"], "score": out["pred_scores"].sigmoid()}

    return step


def _kv_of(tiny_model, t: np.ndarray, k: int = 1) -> Any:
    online = torch.from_numpy(np.repeat(t[:, None], k, axis=1)) if k > 1 else torch.from_numpy(t)
    return tiny_model.encode_templates(torch.from_numpy(t), online)


@torch.inference_mode()
def test_graphed_step_warms_up_captures_once_and_replays_new_inputs(tiny_model, feeds, decode) -> None:
    ops = FakeGraphOps()
    step = GraphedStep(decode, ops, warmup=2, name="search decoder")
    kv = _kv_of(tiny_model, feeds[0])
    rng = np.random.default_rng(0)
    searches = [torch.from_numpy(rng.standard_normal((1, 3, 64, 64), dtype=np.float32)) for _ in range(3)]
    outs = []
    for s in searches:
        out = step({"search": s, "kv": kv})
        outs.append(out["boxes"].clone())
        np.testing.assert_allclose(out["boxes"].numpy(), decode(s, kv)["boxes"].numpy(), atol=1e-6)
        assert out is step._outputs  # static outputs, overwritten by the next replay
    assert ops.events == ["warm_up x2", "capture", "replay", "replay", "replay"]
    assert step.mode == "replay" and step.captures == 1 and step.replays == 3
    assert not torch.equal(outs[0], outs[1])  # each replay saw its own search crop (copied into the static buffer)
    assert step._last["kv"] is kv  # the bound KV, passed again as the same tensor, was not copied again
    kv2 = _kv_of(tiny_model, feeds[1])  # a new template, same shape: copied in, no new capture
    np.testing.assert_allclose(step({"search": searches[0], "kv": kv2})["boxes"].numpy(),
                               decode(searches[0], kv2)["boxes"].numpy(), atol=1e-6)  # fmt: skip
    assert step.captures == 1
    kv3 = _kv_of(tiny_model, feeds[1], k=2)  # two online templates: a longer KV, so a new capture
    np.testing.assert_allclose(step({"search": searches[0], "kv": kv3})["boxes"].numpy(),
                               decode(searches[0], kv3)["boxes"].numpy(), atol=1e-6)  # fmt: skip
    assert step.captures == 2 and ops.events[-3:] == ["warm_up x2", "capture", "replay"]


@torch.inference_mode()
def test_graphed_step_failed_capture_falls_back_once_or_raises(tiny_model, feeds, decode, caplog) -> None:
    kv, s = _kv_of(tiny_model, feeds[0]), torch.from_numpy(feeds[2])
    ops = FakeGraphOps(fail="operation not permitted when stream is capturing")
    step = GraphedStep(decode, ops, name="search decoder")
    with caplog.at_level(logging.WARNING, logger="mfv2.runtimes.cuda_graphs"):
        for _ in range(3):
            out = step({"search": s, "kv": kv})
    np.testing.assert_allclose(out["boxes"].numpy(), decode(s, kv)["boxes"].numpy(), atol=1e-6)
    assert step.mode == "eager" and "not permitted" in (step.failure or "")
    assert ops.events == ["warm_up x3", "capture", "synchronize"]  # never tried again
    assert len([r for r in caplog.records if "capture of the search decoder failed" in r.getMessage()]) == 1
    strict = GraphedStep(decode, FakeGraphOps(fail="cudaErrorStreamCaptureUnsupported"), fallback=False, name="search decoder")
    with pytest.raises(Mfv2Error, match="CUDA-graph capture of the search decoder failed: cudaErrorStreamCaptureUnsupported"):
        strict({"search": s, "kv": kv})


def test_backend_puts_the_graph_on_the_per_frame_session_only(tiny_model, feeds, fp32_boxes, monkeypatch) -> None:
    made: list[FakeGraphOps] = []

    def fake_ops(device: Any) -> FakeGraphOps:
        made.append(FakeGraphOps())
        return made[-1]

    monkeypatch.setattr(cuda_graphs, "TorchCudaGraphOps", fake_ops)
    for graph, per_frame in (("split", "search_decoder"), ("full", "full")):
        backend = TorchBackend(graph_warmup=1, cuda_graph_fallback=False)
        backend.cuda_graph = True  # what device='cuda' allows; the fake stands in for torch.cuda here
        manifest, sessions = backend.load(tiny_model, graph)
        step = sessions[per_frame].step
        assert isinstance(step, GraphedStep) and step._fallback is False and step._warmup == 1
        assert all(s.step is None for name, s in sessions.items() if name != per_frame)
        from mfv2.runtimes.runner import ModelRunner

        with ModelRunner(sessions, manifest, backend="torch", precision="fp32") as runner:
            runner.set_templates(*feeds[:2])
            for _ in range(3):
                boxes, score = runner.predict(feeds[2])
        np.testing.assert_allclose(boxes, fp32_boxes[0], atol=1e-5)
        np.testing.assert_allclose(score, fp32_boxes[1], atol=1e-5)
        assert made[-1].events == ["warm_up x1", "capture", "replay", "replay", "replay"]


# ----------------------------------------------------------------------------- torch.compile, options, errors


def test_compile_wraps_the_per_frame_step(tiny_model, feeds, fp32_boxes, monkeypatch) -> None:
    calls: list[dict[str, Any]] = []
    real = torch.compile

    def spy(fn: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(fn, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    torch._dynamo.reset()
    # the "eager" backend runs TorchDynamo's capture for real without needing a C++ compiler
    with load_backend("torch", tiny_model, graph="split", compile="default", compile_backend="eager") as runner:
        runner.set_templates(*feeds[:2])
        boxes, _ = runner.predict(feeds[2])
    assert calls == [dict(mode="default", backend="eager", dynamic=False)]
    np.testing.assert_allclose(boxes, fp32_boxes[0], atol=1e-5)


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(device="gpu"), "torch device must be cpu, cuda or cuda:N"),
        (dict(cuda_graph=True), "cuda_graph replays CUDA graphs and needs a CUDA device"),
        (dict(compile="fastest"), "compile must be one of default"),
        (dict(device="cuda", cuda_graph=True, compile="reduce-overhead"), "replays CUDA graphs itself"),
        (dict(graph_warmup=0), "graph_warmup must be >= 1"),
    ],
)
def test_bad_torch_options_are_one_line_config_errors(tiny_model, options, message) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        load_backend("torch", tiny_model, **options)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(HAS_CUDA, reason="checks the error raised without CUDA")
def test_cuda_without_cuda_is_a_one_line_error(tiny_model, monkeypatch) -> None:
    if torch.version.cuda is None:
        with pytest.raises(BackendUnavailableError, match="CPU-only build.*use device 'cpu'") as e:
            load_backend("torch", tiny_model, device="cuda")
        assert "\n" not in str(e.value)
        monkeypatch.setattr(torch.version, "cuda", "12.8")  # a CUDA build on a machine without a GPU
    with pytest.raises(ConfigError, match="torch sees no CUDA GPU") as e2:
        load_backend("torch", tiny_model, device="cuda:0", precision="fp16")
    assert "\n" not in str(e2.value)


# ----------------------------------------------------------------------------- mfv2 bench on a GPU


def test_bench_plans_torch_gpu_rows_with_and_without_cuda_graphs() -> None:
    from mfv2.bench.config import BenchConfig
    from mfv2.bench.matrix import plan_rows

    cfg = BenchConfig(backends=("torch",), precisions=("fp32", "fp16"), graphs=("split", "full"), threads=(1,),
                      modes=("model",), device="cuda", cuda_graphs=(False, True))  # fmt: skip
    rows = plan_rows(cfg, ["S"], [])
    key = [(r["precision"], r["graph"], r["cuda_graph"], r["baseline"]) for r in rows]
    assert key == [("fp32", "full", False, True), ("fp32", "split", False, False), ("fp32", "split", True, False),
                   ("fp32", "full", True, False), ("fp16", "split", False, False), ("fp16", "split", True, False),
                   ("fp16", "full", False, False), ("fp16", "full", True, False)]  # fmt: skip
    assert {r["device"] for r in rows} == {"cuda"}
    cpu = plan_rows(BenchConfig(backends=("torch",), graphs=("full",), threads=(1,), modes=("model",)), ["S"], [])
    assert "device" not in cpu[0] and "cuda_graph" not in cpu[0]  # CPU reports keep their rows


def test_bench_gpu_row_without_cuda_reports_why(tiny_checkpoint) -> None:
    from mfv2.bench.rows import run_row

    ckpt = tiny_checkpoint
    spec = dict(variant="tiny", backend="torch", precision="fp16", graph="split", mode="model", threads=1, artifact=str(ckpt),
                device="cuda", cuda_graph=True, warmup=1, iters=2, duration=1.0, frames=4)  # fmt: skip
    result = run_row(spec)
    if HAS_CUDA:
        assert result["status"] == "ok" and result["median_ms"] > 0
    else:
        assert result["status"].startswith(("unavailable: ", "failed: ")) and "CUDA" in result["status"]


def test_bench_cli_rejects_a_bad_cuda_graph_value(capsys, tmp_path) -> None:
    from mfv2.cli import main

    assert main(["bench", "--variant", "tiny", "--cuda-graph", "sometimes", "--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mfv2: error: --cuda-graph takes off, on or off,on") and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- the GPU script


# Packages the GPU machine does not have (it has torch, numpy, onnx, onnxruntime, OpenCV, PyYAML, tqdm):
# hidden from the script's processes so that they look uninstalled, as there.
_HIDE = """
import sys
from importlib.machinery import PathFinder
HIDDEN = {hidden!r}
class _Hiding(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.split(".")[0] in HIDDEN else PathFinder.find_spec(name, path, target)
sys.meta_path[:] = [_Hiding if f is PathFinder else f for f in sys.meta_path]
"""
GPU_MACHINE_LACKS = ("openvino", "nncf", "onnxsim", "onnxslim", "matplotlib", "skimage", "tensorrt", "pycuda", "cuda",
                     "trax", "vot", "pytest")  # fmt: skip


def _script_env(tmp_path: Path) -> dict[str, str]:
    """The environment of run.sh: this interpreter, and the packages the GPU machine lacks hidden."""
    site = tmp_path / "site"
    site.mkdir(parents=True)
    (site / "sitecustomize.py").write_text(_HIDE.format(hidden=set(GPU_MACHINE_LACKS)))
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "PYTHONPATH")}
    env.update(PYTHON=sys.executable, PYTHONPATH=str(site))
    return env


@pytest.mark.skipif(HAS_CUDA, reason="checks the refusal without CUDA")
def test_gpu_script_without_cuda_stops_at_once(tmp_path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks/gpu/run.sh"), str(out)], capture_output=True, text=True,
                          env=_script_env(tmp_path), timeout=120)  # fmt: skip
    assert proc.returncode == 2
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gpu_check: error: no CUDA device") and "--dry-run" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["log.txt"]  # nothing measured, nothing written
    probe = "import importlib.util as u; print([m for m in ('openvino', 'matplotlib', 'torch') if u.find_spec(m)])"
    seen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_script_env(tmp_path / "again"))
    assert seen.stdout.split() == ["['torch']"]  # the hiding the dry run relies on works


@pytest.mark.slow
def test_gpu_script_dry_run_writes_every_promised_file(tmp_path) -> None:
    import json

    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks/gpu/run.sh"), str(out), "--dry-run"], capture_output=True,
                          text=True, env=_script_env(tmp_path), timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:]
    names = {p.name for p in out.iterdir()}
    assert {"env.json", "parity.json", "tracker.json", "bench.json", "bench_tiny_model.json", "bench_tiny_model.md",
            "summary.json", "summary.md", "log.txt"} <= names  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "dry run" and summary["env"]["dry_run"] is True and summary["env"]["device"] == "cpu"
    assert "gpu" not in summary["env"]  # no GPU figures in a dry run
    assert all(g["ok"] for g in summary["gates"]) and len(summary["gates"]) == 3
    parity = summary["parity"]["tiny"]
    assert {r["check"] for r in parity} == {"fp32 vs cpu", "kv vs cpu", "bf16 vs fp32"}
    assert all(r["box_err"] == 0.0 for r in parity if r["check"] == "fp32 vs cpu")  # the CPU against itself
    assert [r["precision"] for r in summary["tracker"]["rows"]] == ["fp32", "bf16"]
    rows = summary["bench"]["bench_tiny_model"]["rows"]
    assert [(r["graph"], r["status"]) for r in rows] == [("full", "ok"), ("split", "ok")]
    md = (out / "summary.md").read_text()
    assert md.startswith("# mfv2 GPU check (DRY RUN on the CPU: checks the script, not GPU figures)")
    assert "| tiny | fp32 | split | no |" in md


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_fp32_matches_cpu_and_graph_replay_matches_eager(tiny_model, feeds, fp32_boxes) -> None:
    for options in (dict(), dict(cuda_graph=True, cuda_graph_fallback=False)):
        for graph in ("split", "full"):
            with load_backend("torch", tiny_model, device="cuda", graph=graph, **options) as runner:
                runner.set_templates(*feeds[:2])
                for _ in range(3):
                    boxes, score = runner.predict(feeds[2])
            np.testing.assert_allclose(boxes, fp32_boxes[0], atol=1e-4)
            np.testing.assert_allclose(score, fp32_boxes[1], atol=1e-4)
