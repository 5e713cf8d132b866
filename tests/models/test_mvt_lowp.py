"""A small MVT through fp16 and int8 export, every CPU backend, ``mfv2 track``, ``mfv2 eval`` and MultiTracker."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from mfv2.artifacts import load_manifest  # noqa: E402
from mfv2.cli import main  # noqa: E402
from mfv2.config import MVTConfig  # noqa: E402
from mfv2.models import build_model  # noqa: E402
from mfv2.synthetic import make_sequence  # noqa: E402
from mfv2.tracking import MultiTracker, Tracker  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SMALL = MVTConfig(name="MVT-64", template_size=64, search_size=128)  # 8x8 score map, the real widths
FRAMES = 4


@pytest.fixture(scope="module")
def small_mvt(tmp_path_factory):
    """One dynamic-batch export of a small MVT (fp32, fp16, int8 ONNX and int8 IR) and its checkpoint."""
    from mfv2 import export
    from mfv2.models import save_native

    torch.manual_seed(0)
    model = build_model(SMALL).peak_score_map()
    with torch.no_grad():
        model.box_head.get_submodule("conv5_size").bias.fill_(-2.5)  # boxes of ~8 % of the crop
    root = tmp_path_factory.mktemp("mvt_lowp")
    ckpt = save_native(model.state_dict(), SMALL, root / "mvt64.pt")  # type: ignore[arg-type]
    out = export(ckpt, root / "export", precisions=("fp32", "fp16", "int8"), openvino=("int8",), batch="dynamic", seed=0)
    return model, ckpt, out


def test_int8_keeps_the_convolution_only_template_stem_fp32_and_gates_every_file(small_mvt):
    _, _, out = small_mvt
    m = load_manifest(out)
    assert not m.rejected  # every variant passed its parity gate
    files = {a.file: a for a in m.artifacts}
    for name in ("template_encoder.int8.onnx", "template_encoder.int8-dynamic.onnx", "template_encoder.int8-trt.onnx"):
        assert files[name].extra["quantization"]["scheme"] == "none"
    assert files["search_decoder.int8.onnx"].extra["quantization"]["scheme"] == "static Q/DQ"
    assert files["search_decoder.int8.onnx"].extra["ops"].get("QuantizeLinear", 0) > 0
    for a in m.artifacts:
        assert a.parity["iou_fraction"] >= 0.9, a.file


@pytest.mark.parametrize("backend, precision", [("onnxruntime", "fp16"), ("onnxruntime", "int8"), ("openvino", "int8")])
def test_every_backend_tracks_the_low_precision_files(small_mvt, backend, precision):
    model, _, out = small_mvt
    seq = make_sequence(seed=3, num_frames=FRAMES + 1, width=160, height=120)
    runs = {}
    for name, artifact, prec in (("torch", model, "fp32"), (backend, out, precision)):
        with Tracker.create(name, model=artifact, precision=prec, threads=1) as tracker:
            assert tracker.runner.family.name == "mvt"
            tracker.init(seq.frame(0), seq.boxes[0])
            runs[name] = np.array([tracker.update(seq.frame(i))[1] for i in range(1, FRAMES + 1)])
    np.testing.assert_allclose(runs[backend], runs["torch"], atol=2.0)


def test_multitracker_batches_mvt_targets_like_independent_trackers(small_mvt):
    _, _, out = small_mvt
    seq = make_sequence(seed=5, num_frames=FRAMES + 1, width=160, height=120)
    boxes = [tuple(float(v) for v in seq.boxes[0]), (20.0, 30.0, 24.0, 20.0)]
    with Tracker.create("onnxruntime", model=out, threads=1) as single:
        alone = []
        for box in boxes:
            single.init(seq.frame(0), box)
            alone.append([single.update(seq.frame(i))[1] for i in range(1, FRAMES + 1)])
    from mfv2.runtimes import load_backend

    runner = load_backend("onnxruntime", out, threads=1)
    try:
        multi = MultiTracker(runner)
        ids = [multi.add(seq.frame(0), box) for box in boxes]
        got: list[list[tuple[float, ...]]] = [[], []]
        for i in range(1, FRAMES + 1):
            res = multi.update(seq.frame(i))
            for k, tid in enumerate(ids):
                got[k].append(res[tid].bbox)
    finally:
        runner.close()
    np.testing.assert_allclose(np.array(got, dtype=float), np.array(alone, dtype=float), atol=1e-2)


def test_track_command_takes_the_mvt_export(small_mvt, tmp_path):
    import cv2

    _, _, out = small_mvt
    seq = make_sequence(seed=6, num_frames=5, width=160, height=120)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(5):
        cv2.imwrite(str(frames / f"{i:04d}.png"), seq.frame(i))
    box = ",".join(f"{v:g}" for v in seq.boxes[0])
    result = tmp_path / "boxes.txt"
    assert main(["track", str(frames), "--model", str(out), "--backend", "onnxruntime", "--init", box,
                 "--output", str(result), "--no-progress"]) == 0  # fmt: skip
    got = np.loadtxt(result, delimiter=",")
    assert got.shape == (5, 4) and np.isfinite(got).all()


def test_eval_command_takes_the_mvt_export(small_mvt, tmp_path):
    pytest.importorskip("matplotlib")
    _, _, out = small_mvt
    args = ["eval", str(tmp_path / "syn"), "--synthetic", "2", "--frames", "5", "--model", str(out),
            "--backend", "onnxruntime", "--results", str(tmp_path / "res"), "--json", str(tmp_path / "e.json"),
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    head = json.loads((tmp_path / "e.json").read_text())
    assert head["sequences"] == 2 and 0 <= head["auc"] <= 100
    assert head["run"]["backend"] == "onnxruntime"
