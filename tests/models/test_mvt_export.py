"""MVT through export and every CPU backend: parity gates, the manifest's family, one tracker loop."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from mfv2.artifacts import load_manifest  # noqa: E402
from mfv2.geometry.crop import sample_target  # noqa: E402
from mfv2.models import build_model  # noqa: E402
from mfv2.synthetic import make_sequence  # noqa: E402
from mfv2.tracking import Tracker  # noqa: E402

FRAMES = 4


def _mvt():
    torch.manual_seed(0)
    model = build_model("MVT")
    with torch.no_grad():
        model.box_head.conv5_size.bias.fill_(-2.5)  # random weights, but boxes of ~8 % of the crop
    return model


@pytest.fixture(scope="module")
def mvt_export(tmp_path_factory):
    """One MVT export per test module (fp32 ONNX and OpenVINO IR: a 256-pixel MVT is not free on 2 cores)."""
    pytest.importorskip("openvino")
    from mfv2 import export

    model = _mvt()
    out = export(model, tmp_path_factory.mktemp("mvt") / "export", precisions=("fp32",), openvino=("fp32",), seed=0)
    return model, out


def test_manifest_records_the_family_and_its_preprocessing(mvt_export):
    _, out = mvt_export
    m = load_manifest(out)
    assert (m.family, m.mean, m.std) == ("mvt", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert (m.tracker.template_factor, m.tracker.search_factor) == (2.0, 4.0)
    art = {a.file: a for a in m.artifacts}
    assert art["template_encoder.onnx"].inputs == {"template": [1, 3, 128, 128]}  # the stem, once per init
    assert art["template_encoder.onnx"].outputs == {"kv": [1, 64, 32, 32]}
    assert list(art["search_decoder.onnx"].outputs) == ["score_map", "size_map", "offset_map"]
    for a in m.artifacts:  # the fp32 parity gate passed and its figures are recorded
        assert a.parity["boxes"] <= 1e-4 and a.parity["score"] <= 1e-4
    from mfv2.exporters.onnx import read_metadata

    meta = read_metadata(out / "model.onnx")
    assert meta["family"] == "mvt" and json.loads(meta["mfv2"])["family"] == "mvt"


def test_clip_through_torch_onnxruntime_and_openvino_agrees_within_a_pixel(mvt_export):
    model, out = mvt_export
    seq = make_sequence(seed=3, num_frames=FRAMES + 1)
    runs = {}
    for name, artifact, graph in (("torch", model, "split"), ("onnxruntime", out, "split"), ("onnxruntime-full", out, "full"),
                                  ("openvino", out, "split")):  # fmt: skip
        backend = name.split("-")[0]
        with Tracker.create(backend, model=artifact, graph=graph, threads=1) as tracker:
            assert tracker.runner.family.name == "mvt"
            tracker.init(seq.frame(0), seq.boxes[0])
            runs[name] = np.array([tracker.update(seq.frame(i))[1] for i in range(1, FRAMES + 1)])
    for name, boxes in runs.items():
        np.testing.assert_allclose(boxes, runs["torch"], atol=1.0, err_msg=name)
    assert runs["torch"][:, 2].max() < seq.frame(0).shape[1] - 20  # a real box, not the clipped frame


def test_tracker_loop_reproduces_the_official_steps(mvt_export):
    """Crop with factor 4 at 256, pixel/255 RGB, Hann-windowed decode, map back, 10 px clip; no template update."""
    from mfv2.artifacts import decode_center, hann2d
    from mfv2.geometry.boxes import clip_box
    from mfv2.geometry.crop import map_box_back

    model, _ = mvt_export
    seq = make_sequence(seed=4, num_frames=3)
    frame0, box = seq.frame(0), tuple(float(v) for v in seq.boxes[0])
    with Tracker.create("torch", model=model, threads=1) as tracker:
        encodes = []
        real = tracker.runner.set_templates
        tracker.runner.set_templates = lambda *a, **k: (encodes.append(1), real(*a, **k))[1]
        tracker.init(frame0, box)
        z = sample_target(frame0, box, 2.0, 128).image[:, :, ::-1].transpose(2, 0, 1)[None] / 255.0
        feat = model.encode_template(torch.from_numpy(z.astype(np.float32)))
        prev = box
        for i in range(1, 3):
            frame = seq.frame(i)
            _, got = tracker.update(frame)
            crop = sample_target(frame, prev, 4.0, 256)
            x = torch.from_numpy((crop.image[:, :, ::-1].transpose(2, 0, 1)[None] / 255.0).astype(np.float32))
            with torch.no_grad():
                out = model.track_search(x, feat)
            b, _ = decode_center(*(out[k].numpy() for k in ("score_map", "size_map", "offset_map")), hann2d(16))
            h, w = frame.shape[:2]
            prev = clip_box(map_box_back(b[0], prev, crop.resize_factor, 256), h, w, 10)
            np.testing.assert_allclose(got, prev, atol=1e-3)
        assert encodes == [1]  # template policy none: the stem ran once, at init


def test_build_engine_takes_the_mvt_graphs(mvt_export, tmp_path, monkeypatch):
    """``mfv2 build-engine``'s planning, TensorRT op-set check and manifest listing on MVT's real graphs
    (TensorRT itself is the fake of ``tests/_tensorrt_fakes.py``: no GPU here)."""
    import shutil
    import sys

    from mfv2.exporters.tensorrt import build_engines
    from tests._tensorrt_fakes import FakeCudart, fake_cuda_package, fake_tensorrt

    fake = FakeCudart(devices=(("Fake GPU", 8, 6),))
    for name, module in fake_cuda_package(fake).items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(fake))
    _, out = mvt_export
    d = shutil.copytree(out, tmp_path / "export")
    assert all(not a.extra.get("tensorrt_issues") for a in load_manifest(d).artifacts if a.format == "onnx")
    engines = build_engines(d, "fp32", graphs=("template_encoder", "search_decoder"))
    assert [e.name for e in engines] == ["template_encoder.engine", "search_decoder.engine"]
    m = load_manifest(d)
    assert m.family == "mvt"
    for graph in ("template_encoder", "search_decoder"):
        a = m.find(graph, "fp32", "tensorrt")
        assert a is not None and a.inputs == m.find(graph, "fp32").inputs
