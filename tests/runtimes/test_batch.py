"""Batched runners: dynamic-batch exports, row updates, and the template KV kept where it was computed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mfv2.artifacts import MANIFEST_NAME, Manifest
from mfv2.errors import ConfigError, ShapeError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _crops(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 32, 32), dtype=np.float32), rng.standard_normal((n, 3, 64, 64), dtype=np.float32)


def test_dynamic_export_is_recorded_and_runs_any_batch(tiny_dynamic_export, tiny_model):
    import torch

    from mfv2.artifacts import load_manifest
    from mfv2.runtimes import load_backend

    m = load_manifest(tiny_dynamic_export)
    assert m.batch is None and json.loads((tiny_dynamic_export / MANIFEST_NAME).read_text())["batch"] is None
    for backend in ("onnxruntime", "openvino"):
        with load_backend(backend, tiny_dynamic_export) as runner:
            assert runner.batch is None and runner._decoder.input_shapes["search"][0] is None
            for n in (1, 3):
                t, s = _crops(n, n)
                runner.set_templates(t, t)
                boxes, scores = runner.predict(s)
                with torch.no_grad():
                    ref = tiny_model.track_search(torch.from_numpy(s), tiny_model.encode_templates(torch.from_numpy(t), torch.from_numpy(t)))
                np.testing.assert_allclose(boxes, ref["pred_boxes"].numpy(), atol=1e-5)
                np.testing.assert_allclose(scores, ref["pred_scores"].sigmoid().numpy(), atol=1e-5)


@pytest.mark.parametrize("batch,graph_dims", [(8, "dynamic"), (None, "fixed")])
def test_manifest_batch_must_match_the_graphs(batch, graph_dims, tiny_dynamic_export, tiny_export, tmp_path):
    from mfv2.runtimes import load_backend

    d = tmp_path / "edited"
    shutil.copytree(tiny_dynamic_export if graph_dims == "dynamic" else tiny_export, d)
    data = json.loads((d / MANIFEST_NAME).read_text())
    data["batch"] = batch
    (d / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="but its manifest says"):
        load_backend("onnxruntime", d)


@pytest.mark.parametrize("bad", [0, -2, "x", True, 1.5])
def test_manifest_refuses_a_bad_batch(bad, tiny_export):
    data = json.loads((tiny_export / MANIFEST_NAME).read_text())
    data["batch"] = bad
    with pytest.raises(ConfigError, match="batch must be a positive integer or null"):
        Manifest.from_dict(data)


def test_row_updates_equal_a_whole_batch_and_write_in_place(tiny_dynamic_export):
    from mfv2.runtimes import load_backend

    t, s = _crops(3)
    with load_backend("onnxruntime", tiny_dynamic_export) as whole, load_backend("onnxruntime", tiny_dynamic_export) as rows:
        whole.set_templates(t, t)
        want = whole.predict(s)
        rows.set_templates(t[:1], t[:1], rows=[0])
        rows.set_templates(t[1:], t[1:], rows=[1, 2])  # appended
        assert rows.rows == 3
        kv_buffer = rows._decoder._host_bound("kv")
        for got, ref in zip(rows.predict(s), want):
            np.testing.assert_array_equal(got, ref)
        t2, _ = _crops(1, 9)
        rows.set_templates(t2, t2, rows=[1])  # one target's templates change: its KV rows only, in place
        assert np.shares_memory(rows._decoder._host_bound("kv"), kv_buffer)
        boxes, _ = rows.predict(s)
        np.testing.assert_array_equal(boxes[[0, 2]], want[0][[0, 2]])
        assert not np.allclose(boxes[1], want[0][1])
        rows.drop_rows([0])
        assert rows.rows == 2
        np.testing.assert_array_equal(rows.predict(s[1:])[0][1], want[0][2])


def test_rows_are_checked(tiny_dynamic_export):
    from mfv2.runtimes import load_backend

    t, s = _crops(2)
    with load_backend("onnxruntime", tiny_dynamic_export) as runner:
        with pytest.raises(ShapeError, match=r"need 1 distinct rows below 1 \(the bound rows plus the new ones\)"):
            runner.set_templates(t[:1], t[:1], rows=[1])
        with pytest.raises(ShapeError, match="need 2 distinct rows"):
            runner.set_templates(t, t, rows=[0, 0])
        runner.set_templates(t, t, rows=[0, 1])
        with pytest.raises(ShapeError, match=r"search: expected \(2, 3, 64, 64\)"):
            runner.predict(s[:1])


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_template_kv_goes_to_the_decoder_without_a_copy(backend, tiny_dynamic_export, tiny_model):
    """The decoder binds the encoder's own output buffer, and predict binds nothing again."""
    from mfv2.runtimes import load_backend
    from mfv2.runtimes.base import DeviceValue

    t, s = _crops(2)
    with load_backend(backend, tiny_model if backend == "torch" else tiny_dynamic_export) as runner:
        kv = runner._encoder.infer({"template": t, "online_template": t})["kv"]
        assert isinstance(kv, DeviceValue)
        runner.set_templates(t, t)
        enc_out = runner._kv_value
        if backend == "torch":
            assert runner._decoder._persistent["kv"] is enc_out.tensor
        else:
            assert np.shares_memory(runner._decoder._host_bound("kv"), enc_out.numpy())
        np.testing.assert_array_equal(np.asarray(enc_out), np.asarray(kv))  # the same encoder, the same KV
        first = runner.predict(s)
        bound = runner._decoder._persistent["kv"] if backend == "torch" else runner._decoder._host_bound("kv")
        second = runner.predict(s)
        after = runner._decoder._persistent["kv"] if backend == "torch" else runner._decoder._host_bound("kv")
        assert after is bound
        np.testing.assert_array_equal(first[0], second[0])
        # A row update after the zero-copy bind owns the buffer first: the other row keeps its KV.
        t2, _ = _crops(1, 5)
        runner.set_templates(t2, t2, rows=[0])
        np.testing.assert_array_equal(runner.predict(s)[0][1], first[0][1])


def test_tensorrt_refuses_a_dynamic_batch_before_looking_for_a_gpu(tiny_dynamic_export):
    from mfv2.exporters.tensorrt import build_engines

    with pytest.raises(ConfigError, match="dynamic batch; TensorRT engines are built from a fixed one: export with --batch N"):
        build_engines(tiny_dynamic_export, "fp32")
