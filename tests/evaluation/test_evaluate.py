"""``mfv2 eval``: OPE on a tiny synthetic benchmark, result files, headline JSON, resume after interruption."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mfv2.datasets import open_dataset, read_boxes, read_results, write_boxes
from mfv2.evaluation.evaluate import evaluate_results, finished, format_eval_table, run_dataset
from mfv2.evaluation.metrics import evaluate_sequences
from mfv2.cli import main
from mfv2.errors import ConfigError
from mfv2.datasets.synthetic import write_benchmark

SMALL = dict(height=96, width=128, max_size=0.45, backgrounds="procedural")


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    """Three 8-frame synthetic clips in the LaSOT layout."""
    return write_benchmark(tmp_path_factory.mktemp("data") / "syn", num_sequences=3, num_frames=8, **SMALL)


class StillTracker:
    """Reports its initial box every frame; counts the frames it saw."""

    frames = 0

    def init(self, frame: np.ndarray, bbox) -> None:
        self.box = tuple(bbox)

    def update(self, frame: np.ndarray):
        StillTracker.frames += 1
        return True, self.box


class Interrupting(StillTracker):
    """Stops the run (as Ctrl-C would) in the middle of its sequence."""

    def update(self, frame: np.ndarray):
        if StillTracker.frames >= 7 + 3:  # 7 updates per 8-frame clip: stop inside the second one
            raise KeyboardInterrupt
        return super().update(frame)


def test_run_and_score_still_tracker(bench_dir, tmp_path) -> None:
    ds = open_dataset(bench_dir, "synthetic")
    ran = run_dataset(StillTracker, ds, tmp_path)
    assert ran == ds.names and len(ran) == 3
    for seq in ds:
        boxes = read_boxes(tmp_path / f"{seq.name}.txt")
        np.testing.assert_allclose(boxes, np.repeat(seq.gt[:1], len(seq), axis=0), atol=1e-3)
        assert (tmp_path / f"{seq.name}_time.txt").is_file()
    s = evaluate_results(ds, tmp_path)
    # The same numbers straight from the metrics module on the files just written.
    ref = evaluate_sequences(read_results(tmp_path, ds.names), {q.name: q.gt for q in ds},
                             {q.name: q.visible for q in ds}, iou="continuous")  # fmt: skip
    assert s["auc"] == pytest.approx(ref.auc) and s["precision"] == pytest.approx(ref.precision)
    assert s["norm_precision"] == pytest.approx(ref.norm_precision)
    assert s["sequences"] == 3 and s["frames"] == 24 and s["fps"] > 0
    assert set(s["per_sequence"]) == set(ds.names) and all(v["fps"] > 0 for v in s["per_sequence"].values())
    assert "AUC" in format_eval_table({"still": s})


def test_resume_after_interruption(bench_dir, tmp_path) -> None:
    ds = open_dataset(bench_dir, "synthetic")
    StillTracker.frames = 0
    with pytest.raises(KeyboardInterrupt):
        run_dataset(Interrupting, ds, tmp_path)
    first, second, third = ds.names
    # Only the finished sequence has files; the interrupted one left nothing half-written.
    assert finished(tmp_path, ds[first]) and not (tmp_path / f"{second}.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{first}.txt", f"{first}_time.txt"])
    kept = (tmp_path / f"{first}.txt").stat().st_mtime_ns
    # A truncated file (e.g. from an older tool) is not a finished result either.
    write_boxes(tmp_path / f"{third}.txt", np.ones((3, 4)))
    StillTracker.frames = 0
    ran = run_dataset(StillTracker, ds, tmp_path)
    assert ran == [second, third] and StillTracker.frames == 2 * (8 - 1)
    assert (tmp_path / f"{first}.txt").stat().st_mtime_ns == kept
    assert all(finished(tmp_path, s) for s in ds)
    assert run_dataset(StillTracker, ds, tmp_path) == []  # everything done: nothing re-run
    assert len(run_dataset(StillTracker, ds, tmp_path, resume=False)) == 3


def test_evaluate_refuses_missing_results_and_first_frame_only_ground_truth(bench_dir, tmp_path) -> None:
    ds = open_dataset(bench_dir, "synthetic")
    with pytest.raises(ConfigError, match="no complete result"):
        evaluate_results(ds, tmp_path)
    copy = tmp_path / "test_split"
    write_benchmark(copy, num_sequences=1, num_frames=4, **SMALL)
    gt = next(copy.rglob("groundtruth.txt"))
    gt.write_text(gt.read_text().splitlines()[0] + "\n")  # a test split: only frame 1 annotated
    with pytest.raises(ConfigError, match="first frame only"):
        evaluate_results(open_dataset(copy, "lasot"), tmp_path)


def test_eval_cli_tiny_torch_tracker(tiny_checkpoint, tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    ckpt = tiny_checkpoint
    data, results, other = tmp_path / "syn", tmp_path / "res", tmp_path / "still"
    args = ["eval", str(data), "--synthetic", "2", "--frames", "6", "--backend", "torch", "--checkpoint", str(ckpt),
            "--results", str(results), "--json", str(tmp_path / "e.json"), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    ds = open_dataset(data, "lasot")  # --synthetic wrote the LaSOT layout
    assert len(ds) == 2
    assert all(read_boxes(results / f"{n}.txt").shape == (6, 4) for n in ds.names)
    head = json.loads((tmp_path / "e.json").read_text())
    for key in ("auc", "precision", "norm_precision", "op50", "op75", "fps", "curves"):
        assert key in head
    assert head["sequences"] == 2 and set(head["per_sequence"]) == set(ds.names)
    assert head["run"]["backend"] == "torch" and head["run"]["model"] == "tiny" and head["run"]["precision"] == "fp32"
    assert head["precision"] == evaluate_results(ds, results)["precision"]  # the metric, not the run's fp32
    assert 0 <= head["auc"] <= 100 and len(head["curves"]["success"]) == 21
    # Resume: a second run tracks nothing; --compare scores another result folder beside it.
    run_dataset(StillTracker, open_dataset(data, "synthetic"), other)
    stamp = os.stat(results / f"{ds.names[0]}.txt").st_mtime_ns
    capsys.readouterr()
    args += ["--compare", str(other), "--plot", str(tmp_path / "e.png")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "tracked 0 of 2 sequences" in out and "res " in out and "still " in out
    assert os.stat(results / f"{ds.names[0]}.txt").st_mtime_ns == stamp
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    assert set(json.loads((tmp_path / "e.json").read_text())["compare"]) == {"still"}


@pytest.mark.parametrize(
    "argv,message",
    [
        (["eval"], "give a DATASET folder"),
        (["eval", "/nonexistent/data"], "is not a directory"),
        (["eval", "--synthetic", "0"], "positive number of clips"),
    ],
)
def test_eval_rejects_bad_input(argv, message, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mfv2: error: ") and message in err


def test_eval_needs_a_model(bench_dir, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("mfv2.assets.demo_checkpoint", lambda: None)
    assert main(["eval", str(bench_dir), "--backend", "torch", "--results", str(tmp_path)]) == 2
    assert "--model EXPORT_DIR or --checkpoint" in capsys.readouterr().err


def test_static_baseline_equals_the_still_tracker(bench_dir, tmp_path, capsys) -> None:
    assert main(["eval", str(bench_dir), "--baseline", "static", "--results", str(tmp_path / "static"),
                 "--json", str(tmp_path / "s.json"), "--no-progress"]) == 0  # fmt: skip
    ds = open_dataset(bench_dir, "synthetic")
    run_dataset(StillTracker, ds, tmp_path / "still")
    for seq in ds:
        np.testing.assert_array_equal(read_boxes(tmp_path / "static" / f"{seq.name}.txt"),
                                      read_boxes(tmp_path / "still" / f"{seq.name}.txt"))  # fmt: skip
    head = json.loads((tmp_path / "s.json").read_text())
    assert head["run"]["baseline"] == "static" and head["auc"] == evaluate_results(ds, tmp_path / "still")["auc"]


def test_mil_baseline_follows_a_moving_target(tmp_path) -> None:
    from mfv2.evaluation.baselines import available_baselines, baseline_factory

    assert "mil" in available_baselines()  # opencv-python ships TrackerMIL
    # MIL samples at random with a seed OpenCV does not expose (cv2.setRNGSeed does not fix it): on one clip
    # moving at 0.01 its AUC spread over 34-77 between runs against the static box's 46.8, so the test failed
    # now and then. Three clips moving at 0.05: static 18.5, MIL at least 44.9 (median 65.8) over 40 runs (2026-12-08).
    data = write_benchmark(tmp_path / "syn", num_sequences=3, num_frames=30, distractors=0, occlusion=False,
                           max_speed=0.05, camera_drift=0.0, **{**SMALL, "height": 160, "width": 200})  # fmt: skip
    ds = open_dataset(data, "synthetic")
    run_dataset(baseline_factory("mil"), ds, tmp_path / "mil")
    run_dataset(baseline_factory("static"), ds, tmp_path / "static")
    mil, static = evaluate_results(ds, tmp_path / "mil"), evaluate_results(ds, tmp_path / "static")
    boxes = read_boxes(tmp_path / "mil" / f"{ds.names[0]}.txt")
    assert np.ptp(boxes[:, 0]) > 0 or np.ptp(boxes[:, 1]) > 0  # it moved
    assert mil["auc"] > static["auc"] + 10


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--baseline", "nope"], "unknown baseline 'nope'; known: static, mil, kcf, csrt"),
        (["--baseline", "static", "--checkpoint", "x.pt"], "--baseline scores a reference tracker"),
    ],
)
def test_eval_baseline_errors(bench_dir, tmp_path, capsys, extra, message) -> None:
    assert main(["eval", str(bench_dir), "--results", str(tmp_path / "r"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mfv2: error: ") and message in err


def test_missing_opencv_tracker_names_the_available_ones(monkeypatch) -> None:
    from mfv2.evaluation import baselines

    monkeypatch.setattr(baselines, "_opencv_constructor", lambda name: None)
    with pytest.raises(ConfigError, match="this OpenCV has no csrt tracker; available baselines: static$"):
        baselines.baseline_factory("csrt")
