"""Runtime backends and the ModelRunner: parity across backends and graphs, registry, options, bad artifacts."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mfv2.artifacts import load_manifest
from mfv2.errors import BackendUnavailableError, ConfigError, Mfv2Error, ShapeError, UnknownNameError
from mfv2.runtimes import BACKENDS, Backend, ModelRunner, available_backends, load_backend
from mfv2.runtimes import base as runtimes_base

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


@pytest.fixture(scope="module")
def export_dir(tiny_export):
    """The session's seed-0 tiny export (conftest.py): read-only, tests that edit one copy it."""
    return tiny_export


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(7)
    t = rng.standard_normal((1, 3, 32, 32), dtype=np.float32)
    ot = rng.standard_normal((1, 3, 32, 32), dtype=np.float32)
    s = rng.standard_normal((1, 3, 64, 64), dtype=np.float32)
    return t, ot, s


@pytest.fixture(scope="module")
def reference(tiny_model, inputs):
    """Full forward of the seed-0 tiny model, score through the sigmoid."""
    import torch

    with torch.no_grad():
        out = tiny_model(*(torch.from_numpy(x) for x in inputs))
    return out["pred_boxes"].numpy(), torch.sigmoid(out["pred_scores"]).numpy()


BACKEND_NAMES = ["torch", "onnxruntime", pytest.param("openvino", marks=pytest.mark.openvino)]


def _skip_missing(name: str) -> None:
    if name not in available_backends():
        pytest.skip(f"{name} is not installed")


@pytest.mark.parametrize("graph", ["split", "full"])
@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_every_backend_and_graph_matches_the_torch_full_forward(backend, graph, export_dir, inputs, reference):
    _skip_missing(backend)
    t, ot, s = inputs
    with load_backend(backend, export_dir, graph=graph, threads=1) as runner:
        assert runner.graph == graph
        runner.set_templates(t, ot)
        boxes, score = runner.predict(s)
        again = runner.predict(s)
    assert boxes.shape == (1, 4) and score.shape == (1,) and boxes.dtype == np.float32
    np.testing.assert_allclose(boxes, reference[0], atol=1e-4)
    np.testing.assert_allclose(score, reference[1], atol=1e-4)  # a probability on every backend
    np.testing.assert_array_equal(again[0], boxes)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_bound_templates_are_owned_and_replaceable(backend, export_dir, inputs):
    _skip_missing(backend)
    t, ot, s = (x.copy() for x in inputs)
    with load_backend(backend, export_dir) as runner:
        runner.set_templates(t, ot)
        before = runner.predict(s)[0]
        t += 1.0  # the runner keeps its own copy
        np.testing.assert_array_equal(runner.predict(s)[0], before)
        runner.set_templates(t, ot)
        assert not np.allclose(runner.predict(s)[0], before, atol=1e-6)


def test_runner_checks_order_and_shapes(export_dir, inputs):
    t, ot, s = inputs
    with load_backend("onnxruntime", export_dir) as runner:
        with pytest.raises(Mfv2Error, match="before set_templates"):
            runner.predict(s)
        with pytest.raises(ShapeError, match=r"template: expected \(1, 3, 32, 32\)"):
            runner.set_templates(t[:, :, :16], ot)
        with pytest.raises(ShapeError, match="takes 1 online template"):
            runner.set_templates(t, np.stack([ot, ot], axis=1))
        runner.set_templates(t, ot)
        with pytest.raises(ShapeError, match=r"search: expected \(1, 3, 64, 64\)"):
            runner.predict(s[:, :, :32, :32])


def test_torch_backend_takes_any_number_of_online_templates(tiny_model, inputs):
    t, ot, s = inputs
    runner = load_backend("torch", tiny_model)
    assert runner.online_templates is None
    split = load_backend("torch", tiny_model, graph="full")
    two = np.stack([ot, t], axis=1)
    runner.set_templates(t, two)
    split.set_templates(t, two)
    np.testing.assert_allclose(runner.predict(s)[0], split.predict(s)[0], atol=1e-5)


def test_torch_backend_sources_agree(tiny_model, tiny_checkpoint, export_dir, inputs):
    t, ot, s = inputs
    ckpt = tiny_checkpoint
    outs = []
    for artifact, options in ((tiny_model, {}), (export_dir, {}), (None, {"variant": "tiny", "seed": 0}), (ckpt, {})):
        with load_backend("torch", artifact, **options) as runner:
            runner.set_templates(t, ot)
            outs.append(runner.predict(s)[0])
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    with load_backend("torch", None, variant="tiny", seed=1) as other:
        other.set_templates(t, ot)
        assert not np.allclose(other.predict(s)[0], outs[0])


def test_torch_backend_bad_sources(export_dir, tmp_path):
    with pytest.raises(ConfigError, match="needs a checkpoint"):
        load_backend("torch", None)
    with pytest.raises(ConfigError, match="not .onnx files"):
        load_backend("torch", export_dir / "model.onnx")
    with pytest.raises(ConfigError, match="does not exist"):
        load_backend("torch", tmp_path / "missing.pt")
    lost = tmp_path / "lost"
    shutil.copytree(export_dir, lost)
    data = json.loads((lost / "manifest.json").read_text())
    data["source"] = {"checkpoint": str(tmp_path / "gone.pth.tar"), "format": "official"}
    (lost / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="not available here"):
        load_backend("torch", lost)


def test_import_needs_no_torch_and_no_runtime():
    code = (
        "import sys, mfv2, mfv2.tracking, mfv2.runtimes; mfv2.Tracker; mfv2.load_backend; "
        "print(sorted(m for m in ('torch', 'onnxruntime', 'openvino', 'tensorrt', 'cuda') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_tracking_on_onnxruntime_loads_no_torch(export_dir):
    code = (
        "import sys, numpy as np; from mfv2 import Tracker; "
        "frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8); "
        "t = Tracker.create('onnxruntime', model=sys.argv[1], threads=1); t.init(frame, (60, 40, 30, 30)); "
        "ok, box = t.update(frame); print(len(box), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(export_dir)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["4", "False"]


def test_available_backends_are_the_installed_ones():
    names = available_backends()
    assert set(names) <= set(BACKENDS)
    for name in ("torch", "onnxruntime", "openvino", "tensorrt"):
        installed = BACKENDS.get(name).is_available()
        assert (name in names) == installed
    # TensorRT needs its bindings and cuda-python (import name "cuda"), which replaced pycuda
    assert ("tensorrt" in names) == all(importlib.util.find_spec(m) is not None for m in ("tensorrt", "cuda"))


def test_missing_runtime_names_the_extra(monkeypatch, export_dir):
    real = importlib.util.find_spec
    monkeypatch.setattr(runtimes_base.importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert "openvino" not in available_backends()
    with pytest.raises(BackendUnavailableError, match=r'pip install "mfv2\[openvino\]"'):
        load_backend("openvino", export_dir)


def test_unknown_backend_suggests_a_name(export_dir):
    with pytest.raises(UnknownNameError, match="did you mean onnxruntime"):
        load_backend("onnxruntim", export_dir)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"precision": "fp64"}, "runs precisions"),
        ({"threads": 0}, "threads must be >= 1"),
        ({"graph": "half"}, "graph must be"),
        ({"device": "gpu"}, "device must be one of"),
        ({"colour": "red"}, r"bad option for the onnxruntime backend: colour; valid options: precision, threads, device, "
                            r"cache_dir, spinning, graph, verify_hashes$"),
        ({"variant": "S"}, "bad option for the onnxruntime backend: variant;"),  # variant only with a checkpoint
    ],
)
def test_bad_backend_options(export_dir, options, message):
    with pytest.raises(ConfigError, match=message):
        load_backend("onnxruntime", export_dir, **options)


def _edited_copy(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    data = json.loads((dst / "manifest.json").read_text())
    edit(data)
    (dst / "manifest.json").write_text(json.dumps(data))
    return dst


def test_graph_selection_and_missing_artifacts(export_dir, tmp_path):
    only_full = _edited_copy(export_dir, tmp_path / "full", lambda d: d.update(
        artifacts=[a for a in d["artifacts"] if a["graph"] == "full" and a["precision"] == "fp32"]))
    assert load_backend("onnxruntime", only_full).graph == "full"
    with pytest.raises(ConfigError, match="has no split graphs the onnxruntime backend can run at fp32"):
        load_backend("onnxruntime", only_full, graph="split")
    with pytest.raises(ConfigError, match=r"at int8 \(it has: model.onnx \(full, fp32, onnx\)"):
        load_backend("onnxruntime", only_full, precision="int8")
    (only_full / "model.onnx").unlink()
    with pytest.raises(ConfigError, match="is listed in .* but missing"):
        load_backend("onnxruntime", only_full)


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=pytest.mark.openvino)])
def test_corrupt_graph_file_is_a_one_line_error(export_dir, tmp_path, backend):
    _skip_missing(backend)
    broken = _edited_copy(export_dir, tmp_path / "broken", lambda d: None)
    for name in ("search_decoder.onnx", "search_decoder.xml"):
        (broken / name).write_bytes(b"\x08\x07garbage")
    with pytest.raises(ConfigError, match=r"search_decoder\.\w+ does not match the SHA-256"):
        load_backend(backend, broken)
    with pytest.raises(ConfigError, match=f"the {backend} backend cannot load .*search_decoder"):
        load_backend(backend, broken, verify_hashes=False)  # the runtime's own error, one line too


def test_artifact_that_does_not_match_its_manifest(export_dir, tmp_path):
    bad = _edited_copy(export_dir, tmp_path / "bad", lambda d: d["model"].update(search_size=128))
    with pytest.raises(ConfigError, match="takes search .* but its manifest says"):
        load_backend("onnxruntime", bad)


def test_not_an_export_directory(tmp_path):
    with pytest.raises(ConfigError, match="not an mfv2 export directory"):
        load_backend("onnxruntime", tmp_path)
    stray = tmp_path / "x.xml"
    stray.write_bytes(b"")
    with pytest.raises(ConfigError, match="not part of an mfv2 export"):
        load_backend("openvino", stray)
    if importlib.util.find_spec("onnx") is not None:
        (tmp_path / "empty.onnx").write_bytes(b"")
        with pytest.raises(ConfigError, match="carries no mfv2 metadata"):
            load_backend("onnxruntime", tmp_path / "empty.onnx")
        (tmp_path / "junk.onnx").write_bytes(b"\xff\xfe junk")
        with pytest.raises(ConfigError, match="not a readable ONNX file|carries no mfv2 metadata"):
            load_backend("onnxruntime", tmp_path / "junk.onnx")


def test_a_self_describing_onnx_file_alone(export_dir, tmp_path, inputs, reference):
    pytest.importorskip("onnx")
    shutil.copy(export_dir / "model.onnx", tmp_path / "model.onnx")
    t, ot, s = inputs
    with load_backend("onnxruntime", tmp_path / "model.onnx") as runner:
        assert runner.graph == "full" and runner.manifest.model.name == "tiny"
        runner.set_templates(t, ot)
        np.testing.assert_allclose(runner.predict(s)[0], reference[0], atol=1e-4)
    shutil.copy(export_dir / "search_decoder.onnx", tmp_path / "search_decoder.onnx")
    with pytest.raises(ConfigError, match="has no split graphs"):
        load_backend("onnxruntime", tmp_path / "search_decoder.onnx")


def test_a_graph_file_fixes_graph_and_precision(export_dir):
    assert load_backend("onnxruntime", export_dir / "model.onnx").graph == "full"
    assert load_backend("onnxruntime", export_dir / "search_decoder.onnx").graph == "split"
    with pytest.raises(ConfigError, match="is a fp32 graph"):
        load_backend("onnxruntime", export_dir / "model.onnx", precision="int8")
    with pytest.raises(ConfigError, match="belongs to the full graph"):
        load_backend("onnxruntime", export_dir / "model.onnx", graph="split")


def test_onnxruntime_optimised_model_cache(export_dir, tmp_path, inputs, reference):
    t, ot, s = inputs
    cache = tmp_path / "ort-cache"
    with load_backend("onnxruntime", export_dir, cache_dir=cache) as runner:
        runner.set_templates(t, ot)
        np.testing.assert_allclose(runner.predict(s)[0], reference[0], atol=1e-4)
    files = sorted(cache.iterdir())
    assert [f.name.split(".")[0] for f in files] == ["search_decoder", "template_encoder"]
    stamps = [f.stat().st_mtime_ns for f in files]
    with load_backend("onnxruntime", export_dir, cache_dir=cache) as runner:  # reuses the cached files
        runner.set_templates(t, ot)
        np.testing.assert_allclose(runner.predict(s)[0], reference[0], atol=1e-4)
    assert [f.stat().st_mtime_ns for f in sorted(cache.iterdir())] == stamps


@pytest.mark.openvino
def test_openvino_options(export_dir, tmp_path, inputs, reference):
    _skip_missing("openvino")
    t, ot, s = inputs
    cache = tmp_path / "ov-cache"
    with load_backend("openvino", export_dir, cache_dir=cache, threads=1) as runner:
        runner.set_templates(t, ot)
        np.testing.assert_allclose(runner.predict(s)[0], reference[0], atol=1e-4)
        assert runner.device == "CPU"
    assert any(cache.rglob("*.blob"))
    with load_backend("openvino", export_dir, precision="bf16") as runner:  # bf16 runs the fp32 file
        runner.set_templates(t, ot)
        np.testing.assert_allclose(runner.predict(s)[0], reference[0], atol=0.05)
    with pytest.raises(ConfigError, match="device 'NPU9' not found"):
        load_backend("openvino", export_dir, device="NPU9")


class _NumpySession:
    """A third-party session implementing only the Session protocol: boxes = per-channel means."""

    input_names = ["template", "online_template", "search"]
    output_names = ["boxes", "score"]
    device = "cpu"

    def infer(self, feeds):
        means = [feeds[k].mean() for k in self.input_names]
        return {"boxes": np.array([[means[0], means[1], means[2], 1.0]], np.float32), "score": np.array([0.25], np.float32)}

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _PluginBackend(Backend):
    name = "numpy-plugin"
    module = "numpy"
    extra = "numpy"

    def load(self, artifact, graph):
        return load_manifest(artifact), {"full": _NumpySession()}


def test_plugin_backend_from_the_entry_point_group(monkeypatch, export_dir):
    class EntryPoint:
        name, value = "numpy-plugin", "tests:_PluginBackend"

        def load(self):
            return _PluginBackend

    monkeypatch.setattr(runtimes_base, "entry_points", lambda group: [EntryPoint()] if group == "mfv2.backends" else [])
    monkeypatch.setattr(runtimes_base, "_plugins_loaded", False)
    monkeypatch.setattr(runtimes_base.BACKENDS, "_items", dict(runtimes_base.BACKENDS._items))
    assert "numpy-plugin" in available_backends()
    runner = load_backend("numpy-plugin", export_dir)
    assert isinstance(runner, ModelRunner) and runner.graph == "full"
    t = np.full((1, 3, 32, 32), 2.0, np.float32)
    runner.set_templates(t, t * 3)  # the session cannot bind: the runner feeds the templates each call
    boxes, score = runner.predict(np.ones((1, 3, 64, 64), np.float32))
    np.testing.assert_allclose(boxes, [[2.0, 6.0, 1.0, 1.0]])
    assert score.tolist() == [0.25]


@pytest.mark.openvino
def test_ctrl_c_after_openvino_sessions_close_is_a_keyboard_interrupt(export_dir):
    """Two OpenVINO runners closed in creation order, then SIGINT: a KeyboardInterrupt, not a SIGSEGV.

    Each ov.Core's CPU plugin installs an alternate signal stack and unmaps it when dropped; with one
    Core per runner the thread was left on unmapped memory (benchmarks/segfault/). mfv2 keeps one Core.
    """
    pytest.importorskip("openvino")
    code = (
        "import gc, os, signal, sys, time\n"
        "from mfv2.runtimes import load_backend\n"
        "a = load_backend('openvino', sys.argv[1]); b = load_backend('openvino', sys.argv[1])\n"
        "a.close(); del a; gc.collect(); b.close(); del b; gc.collect()\n"
        "try:\n    os.kill(os.getpid(), signal.SIGINT); time.sleep(2)\n"
        "except KeyboardInterrupt:\n    print('interrupted')\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(export_dir)], capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stdout.strip()) == (0, "interrupted"), out.stderr[-2000:]
