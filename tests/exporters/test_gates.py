"""Parity gates that judge what a tracker needs and hold on every x86 instruction set (issue #16).

The int8 files must compute the same integers where AVX-512 VNNI exists and where only AVX2 does:
:mod:`mfv2.exporters.isa` emulates AVX2's saturating products, so these tests check both on any host.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from mfv2.artifacts import load_manifest  # noqa: E402
from mfv2.config import TrackerConfig  # noqa: E402
from mfv2.errors import ExportError  # noqa: E402
from mfv2.exporters import export  # noqa: E402
from mfv2.exporters import quantize  # noqa: E402
from mfv2.exporters.isa import avx2_exact, run_as_avx2, saturating_matmul_integer  # noqa: E402
from mfv2.exporters.validate import (  # noqa: E402
    CALIBRATION_SCALE,
    CALIBRATION_SHIFT,
    TOLERANCES,
    Sample,
    calibration_crops,
    check_parity,
    make_samples,
    measure,
    parity_failures,
    torch_reference,
)


def test_avx2_pair_sums_saturate_at_int16_and_7_bit_weights_never_do() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(5, 64), dtype=np.uint8)
    a[0] = 255
    b8 = rng.integers(-127, 128, size=(64, 7)).astype(np.int8)
    b8[:, 0] = 127
    exact = (a.astype(np.int32) - 3) @ b8.astype(np.int32)
    sat = saturating_matmul_integer(a, b8, 3)
    # Row 0 x column 0: 32 pairs of 2 x 255 x 127 = 64,770, each clipped to 32,767.
    assert sat[0, 0] == 32 * 32767 - 3 * 64 * 127 and exact[0, 0] == 64 * 255 * 127 - 3 * 64 * 127
    assert not np.array_equal(sat, exact)
    b7 = rng.integers(-64, 65, size=(64, 7)).astype(np.int8)
    np.testing.assert_array_equal(saturating_matmul_integer(a, b7, 3, 0), (a.astype(np.int32) - 3) @ b7.astype(np.int32))


def test_int8_exports_compute_the_same_on_avx2_and_vnni(tiny_export: Path, tiny_model: torch.nn.Module) -> None:
    from onnx.reference import ReferenceEvaluator

    m = load_manifest(tiny_export)
    for a in m.artifacts:
        if a.precision == "int8" and a.format in ("onnx", "onnx-dynamic"):
            assert a.extra["avx2_exact"] is True, a.file
            assert avx2_exact(onnx.load(str(tiny_export / a.file)))
    path = tiny_export / "model.int8-dynamic.onnx"
    exact = ReferenceEvaluator(str(path))
    for s in make_samples(tiny_model.config, TrackerConfig(), random=2, crops=2, seed=5):
        avx2 = run_as_avx2(path, s.feeds)["boxes"]
        np.testing.assert_array_equal(avx2, exact.run(["boxes"], s.feeds)[0])
        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["boxes"], s.feeds)[0]
        # ONNX Runtime's fused DynamicQuantizeMatMul rounds activations in its own order: the two agree to
        # activation rounding (5.9e-4 of the crop side measured here), far inside the int8 gate.
        np.testing.assert_allclose(avx2, got, atol=2e-3)


@pytest.fixture()
def eight_bit_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """int8 files quantized as before issue #16: full 8-bit weights, which saturate on AVX2."""
    monkeypatch.setattr(quantize, "REDUCE_RANGE", False)


def test_a_variant_that_saturates_on_avx2_fails_the_export_and_nothing_is_written(eight_bit_weights: None, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"saturate AVX2.*--skip-failed"):
        export(None, tmp_path / "out", variant="tiny", precisions=("fp32", "int8"))
    assert list(tmp_path.iterdir()) == []


def test_skip_failed_leaves_the_variant_out_and_says_why(eight_bit_weights: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mfv2.bench.rows import rejected_status
    from mfv2.cli import main

    out = tmp_path / "out"
    code = main(["export", "--random-init", "--variant", "tiny", "--output", str(out), "--precision", "fp32,int8", "--skip-failed"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "model.int8-dynamic.onnx" in stdout and "not written: parity gate missed" in stdout
    m = load_manifest(out)
    # The TensorRT int8 files keep full 8-bit weights on purpose: they are measured as an exact int8
    # engine computes them (unfused Q/DQ), not on ONNX Runtime's AVX2 kernels, and pass.
    assert {(a.format, a.precision) for a in m.artifacts} == {("onnx", "fp32"), ("onnx-tensorrt", "int8")}
    assert {a.graph for a in m.artifacts if a.format == "onnx-tensorrt"} == {"full", "template_encoder", "search_decoder"}
    assert not any(p.name.endswith((".int8.onnx", ".int8-dynamic.onnx")) for p in out.iterdir())
    assert {(r["format"], r["graph"]) for r in m.rejected} == {(f, g) for f in ("onnx", "onnx-dynamic")
                                                              for g in ("full", "template_encoder", "search_decoder")}  # fmt: skip
    assert all("saturate AVX2" in "; ".join(r["failed"]) and "crop_boxes" in r["parity"] for r in m.rejected)
    status = rejected_status(m, "onnxruntime", "int8", "split")
    assert status is not None and status.startswith("exported, validation failed: ") and "saturate" in status
    assert rejected_status(m, "onnxruntime", "fp32", "split") is None
    # without the flag the CLI says which variant failed and how to keep going, in one line, exit 1
    assert main(["export", "--random-init", "--variant", "tiny", "--output", str(tmp_path / "b"), "--precision", "int8"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mfv2: error: parity check failed for model.int8.onnx") and "--skip-failed" in err
    assert "\n" not in err and not (tmp_path / "b").exists()


def _fake_runner(random_boxes: np.ndarray, crop_boxes: np.ndarray):
    def run(graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        boxes = random_boxes if feeds["kind"] == "random" else crop_boxes
        return {"boxes": boxes, "score": np.full(len(boxes), 0.5, np.float32)}
    return run


def _samples_and_refs(ref: np.ndarray) -> tuple[list[Sample], list[dict[str, np.ndarray]]]:
    samples = [Sample({"kind": "random"}, "random"), Sample({"kind": "crop"}, "crop")]  # type: ignore[dict-item]
    return samples, [{"boxes": ref, "score": np.full(len(ref), 0.5, np.float32)}] * 2


def test_low_precision_is_judged_on_real_crops_fp32_on_everything() -> None:
    ref = np.array([[0.5, 0.5, 0.2, 0.3], [0.4, 0.6, 0.25, 0.2]], np.float32)
    samples, refs = _samples_and_refs(ref)
    figures = measure(_fake_runner(ref + 0.09, ref + 0.004), ["full"], samples, refs)["full"]
    assert figures["boxes"] == pytest.approx(0.09, abs=1e-6) and figures["crop_boxes"] == pytest.approx(0.004, abs=1e-6)
    assert figures["iou_mean"] > 0.9 and figures["nonfinite"] == 0
    assert parity_failures(figures, TOLERANCES[("onnx-dynamic", "int8")]) == []
    with pytest.raises(ExportError, match=r"boxes 0.09 > 0.0001"):
        check_parity("model.onnx", figures, TOLERANCES[("onnx", "fp32")])
    # a crop box that drifts is caught by the mean IoU even when its max-abs error looks small
    drift = ref.copy()
    drift[:, 2:] *= 0.55
    figures = measure(_fake_runner(ref, drift), ["full"], samples, refs)["full"]
    assert any(f.startswith("iou_mean") for f in parity_failures(figures, TOLERANCES[("onnx", "int8")]))


def test_calibration_crops_come_from_many_clips_cut_around_a_missed_estimate(tiny_model: torch.nn.Module) -> None:
    from mfv2.artifacts import runtime_family_of
    from mfv2.geometry.crop import preprocess, sample_target
    from mfv2.synthetic import benchmark_sequences

    cfg, tracker = tiny_model.config, TrackerConfig()
    family = runtime_family_of(cfg)
    crops = calibration_crops(cfg, tracker, batch=1, count=6, frames=None, seed=0)
    again = calibration_crops(cfg, tracker, batch=1, count=6, frames=None, seed=0)
    assert len(crops) == 6 and all(np.array_equal(a[k], b[k]) for a, b in zip(crops, again) for k in a)
    assert crops[0]["search"].shape == (1, 3, cfg.search_size, cfg.search_size)
    assert crops[0]["template"].shape == (1, 3, cfg.template_size, cfg.template_size)

    def cut(frame: np.ndarray, box: tuple, factor: float, size: int) -> np.ndarray:
        return preprocess(sample_target(frame, box, factor, size).image, family.mean, family.std)

    # one clip each (calibration clip seed = seed + 1): the template is cut at the true box, as the tracker's
    # init cuts it; the search crop around a box moved and rescaled like a tracker's estimate, never the true one
    for feed, seq in zip(crops, benchmark_sequences(6, 2, seed=1)):
        box = tuple(float(v) for v in seq.boxes[0])
        np.testing.assert_allclose(feed["template"], cut(seq.frame(0), box, tracker.template_factor, cfg.template_size), atol=1e-6)
        assert np.array_equal(feed["online_template"], feed["template"])
        assert not np.allclose(feed["search"], cut(seq.frame(1), box, tracker.search_factor, cfg.search_size), atol=1e-3)
    assert len({feed["template"].tobytes() for feed in crops}) == 6
    assert 0 < CALIBRATION_SHIFT <= 1 and 0 < CALIBRATION_SCALE <= 0.5
    # the user's own frames: one clip, so one template for every crop
    frames = [np.full((96, 128, 3), 40 * i, np.uint8) for i in range(5)]
    user = calibration_crops(cfg, tracker, batch=2, count=3, frames=frames, seed=0)
    assert len(user) == 3 and user[0]["search"].shape[0] == 2
    assert all(np.array_equal(f["template"][0], user[0]["template"][0]) for f in user)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_outputs_fail_every_gate(bad: float) -> None:
    ref = np.array([[0.5, 0.5, 0.2, 0.3]], np.float32)
    samples, refs = _samples_and_refs(ref)
    broken = ref.copy()
    broken[0, 1] = bad
    figures = measure(_fake_runner(broken, ref), ["full"], samples, refs)["full"]
    assert figures["nonfinite"] == 1 and not figures["boxes"] <= 1.0  # NaN/Inf never turns into 0
    for key in (("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp16")):
        with pytest.raises(ExportError, match="1 non-finite output values"):
            check_parity("model.onnx", figures, TOLERANCES[key])


def test_nan_weights_fail_the_export(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    import copy

    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "blocks.0" in n and p.ndim == 2).view(-1)[0] = float("nan")
    with pytest.raises(ExportError, match="non-finite output values"):
        export(model, tmp_path / "nan")
    assert list(tmp_path.iterdir()) == []


def test_gate_limits_match_the_committed_measurement() -> None:
    """The low-precision limits keep the margins benchmarks/gates/README.md states over every healthy
    figure measured there: errors at most 1/1.5 of their limit, mean IoU 0.05 and the IoU >= 0.9
    share 0.1 above theirs; and the variants measured as broken stay rejected."""
    data = json.loads((Path(__file__).resolve().parents[2] / "benchmarks" / "gates" / "gates.json").read_text())
    low = [r for r in data["cases"] if r["precision"] != "fp32"]
    healthy = [r for r in low if r["status"] == "ok"]
    assert len(healthy) > 100 and {r["case"].split()[0] for r in healthy} == {"tiny", "demo", "S", "B"}
    for r in healthy:
        tol = TOLERANCES[(r["format"], r["precision"])]
        assert r["crop_boxes"] <= tol.boxes / 1.5 and r["crop_score"] <= tol.score / 1.5, r
        if "iou_mean" in r:
            assert r["iou_mean"] >= tol.iou_mean + 0.05 and r["iou_fraction"] >= tol.iou_fraction + 0.1, r
    for r in low:
        if r["status"] != "ok":
            assert parity_failures(r, TOLERANCES[(r["format"], r["precision"])]), r
    # the former 8-bit weights, as an AVX2 host computes them, miss the int8 gate on the demo model
    assert min(r["iou_mean"] for r in data["avx2"] if r["scheme"].startswith("8-bit") and r["case"].startswith("demo")) < TOLERANCES[("onnx", "int8")].iou_mean

