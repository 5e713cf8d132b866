"""mfv2's OPE metrics against the got10k toolkit's own (0.1.3, in the toolkit environment), and mfv2 as a
``got10k.trackers.Tracker`` in the toolkit's GOT-10k experiment.

Agreement is to 1e-6 where the conventions agree; where mfv2 deliberately differs (the README lists
each difference per metric), the test pins it: the toolkit, given the input mfv2's rule makes of the
data, reproduces mfv2's number.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests._toolkit_env import demo_export_dir, run_toolkit, toolkit_env, toolkit_python
from mfv2.datasets import open_dataset, read_boxes, read_got10k_result, write_boxes, write_got10k_result
from mfv2.evaluation.metrics import evaluate_got10k, evaluate_sequences
from mfv2.cli import main
from mfv2.datasets.synthetic import write_benchmark

W, H = 160, 120

# The toolkit's OTB report over a stand-in for its dataset class (which accepts only the real OTB
# sequence names), and its GOT-10k report over a GOT-10k folder; both read the result files mfv2 wrote.
OTB_REPORT = """
import json, sys
import numpy as np
from got10k.experiments import ExperimentOTB

class Sequences(list):
    seq_names = []

out = {}
for run in json.load(open(sys.argv[1])):
    exp = ExperimentOTB.__new__(ExperimentOTB)
    exp.dataset = Sequences((None, np.array(a, dtype=float)) for a in run["gt"].values())
    exp.dataset.seq_names = list(run["gt"])
    exp.result_dir, exp.report_dir, exp.nbins_iou, exp.nbins_ce = run["results"], run["reports"], 21, 51
    out[run["name"]] = exp.report([run["name"]])[run["name"]]["overall"]
print(json.dumps(out))
"""
GOT_REPORT = """
import json, sys
from got10k.experiments import ExperimentGOT10k
root, results, reports, *names = sys.argv[1:]
perf = ExperimentGOT10k(root, subset="val", result_dir=results, report_dir=reports).report(names)
print(json.dumps(perf, default=float).replace("NaN", "null"))
"""
TRACK = """
import json, sys
from got10k.experiments import ExperimentGOT10k
from mfv2.integrations.got10k import GOT10kTracker
root, results, reports, model = sys.argv[1:]
tracker = GOT10kTracker(name="mfv2", model=model, threads=1)
exp = ExperimentGOT10k(root, subset="val", result_dir=results, report_dir=reports)
exp.run(tracker)
print(json.dumps(exp.report([tracker.name])["mfv2"]["overall"], default=float))
"""


def _last_json(stdout: str):
    """The JSON the script prints last (the toolkit prints progress before it)."""
    return json.loads(stdout.strip().splitlines()[-1])


def _walk(rng: np.random.Generator, n: int) -> np.ndarray:
    wh = np.clip(30 + np.cumsum(rng.normal(0, 0.8, (n, 2)), axis=0), 12, 50)
    xy = np.clip(60 + np.cumsum(rng.normal(0, 2.0, (n, 2)), axis=0), 0, [W - 12, H - 12])
    return np.round(np.concatenate([xy, wh], axis=1), 2)


def _noisy(rng: np.random.Generator, gt: np.ndarray) -> np.ndarray:
    """Predictions near ``gt``, some past the right border and the top of the image."""
    pred = gt + rng.normal(0, 4.0, gt.shape) * [1, 1, 0.5, 0.5]
    pred[:, 2:] = np.abs(pred[:, 2:]) + 1
    n = len(gt)
    pred[n // 2 : n // 2 + 6, 0] = W - 8.0
    pred[5:9, 1] = -20.0
    return pred


def _spoil(pred: np.ndarray) -> np.ndarray:
    """NaN, zero-area and negative-size predictions."""
    p = pred.copy()
    p[10:13] = np.nan
    p[20:22, 2] = 0.0
    p[30, 3] = -5.0
    return p


def _visible(n: int) -> np.ndarray:
    """Visibility flags of the hard case: the target is out of view in frames 33-35."""
    flags = np.ones(n, dtype=bool)
    flags[33:36] = False
    return flags


def _repeat_previous(pred: np.ndarray) -> np.ndarray:
    """mfv2's rule for unusable predictions (pytracking's): repeat the previous box."""
    out = pred.copy()
    for i in range(1, len(out)):
        if not (np.isfinite(out[i]).all() and out[i, 2] > 0 and out[i, 3] > 0):
            out[i] = out[i - 1]
    return out


def _otb_fixture() -> dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """name -> (predictions, ground truth). ``clean``: valid ground truth, boxes past the border.
    ``hard``: also NaN / zero-area predictions, and ground truth with absent (NaN) frames, zero-area
    frames, frames flagged invisible (``VISIBLE``, which the toolkit's OTB has no notion of) and a
    target leaving the image. ``pinned``: ``hard`` as mfv2's rules make it: unusable predictions
    repeat the previous box; a ground-truth frame without positive size, or not visible, is not annotated."""
    rng = np.random.default_rng(0)
    runs: dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = {
        k: ({}, {}) for k in ("clean", "hard", "pinned")}
    for k, n in enumerate((40, 55, 70)):
        seq, gt = f"s{k}", _walk(rng, n)
        pred = _noisy(rng, gt)
        runs["clean"][0][seq], runs["clean"][1][seq] = pred, gt
        hard_gt = gt.copy()
        hard_gt[15:18] = np.nan
        hard_gt[25:27, 2] = 0.0
        hard_gt[n - 4 :, 0] = W - 5.0
        runs["hard"][0][seq], runs["hard"][1][seq] = _spoil(pred), hard_gt
        pinned_gt = hard_gt.copy()
        pinned_gt[~(np.isfinite(hard_gt).all(axis=1) & (hard_gt[:, 2] > 0) & (hard_gt[:, 3] > 0))] = np.nan
        pinned_gt[~_visible(n)] = np.nan
        first = np.vstack([hard_gt[:1], _spoil(pred)[1:]])  # both toolkits start from the ground truth
        runs["pinned"][0][seq], runs["pinned"][1][seq] = _repeat_previous(first), pinned_gt
    return runs


@pytest.fixture(scope="module")
def toolkit():
    return toolkit_python()


def test_success_auc_precision_and_op50_against_the_toolkits_otb_report(tmp_path, toolkit):
    runs = _otb_fixture()
    spec = []
    for name, (preds, gts) in runs.items():
        for seq, p in preds.items():
            write_boxes(tmp_path / "results" / name / f"{seq}.txt", p, delimiter=",", fmt="%.6f")
        spec.append({"name": name, "gt": {k: v.tolist() for k, v in gts.items()}, "results": str(tmp_path / "results"),
                     "reports": str(tmp_path / "reports")})
    (tmp_path / "runs.json").write_text(json.dumps(spec))
    theirs = _last_json(run_toolkit(toolkit, ["-c", OTB_REPORT, str(tmp_path / "runs.json")], cwd=tmp_path,
                                    env=toolkit_env()))

    def check(o, t, what):
        print(f"{what}: mfv2 AUC {o.auc:.6f} P@20 {o.precision:.6f} OP50 {o.op50:.6f} | got10k "
              f"{100 * t['success_score']:.6f} {100 * t['precision_score']:.6f} {100 * t['success_rate']:.6f}")
        assert o.auc == pytest.approx(100 * t["success_score"], abs=1e-6), what
        assert o.precision == pytest.approx(100 * t["precision_score"], abs=1e-6), what
        assert o.op50 == pytest.approx(100 * t["success_rate"], abs=1e-6), what
        np.testing.assert_allclose(o.success_curve, t["success_curve"], atol=1e-9)
        np.testing.assert_allclose(o.precision_curve, t["precision_curve"], atol=1e-9)

    print()
    for iou in ("inclusive", "continuous"):  # the two conventions give the same IoU without clipping
        check(evaluate_sequences(*runs["clean"], iou=iou), theirs["clean"], f"clean, {iou} IoU")
    hard = evaluate_sequences(*runs["hard"], {k: _visible(len(v)) for k, v in runs["hard"][1].items()})
    check(hard, theirs["pinned"], "hard data vs the toolkit on mfv2's repaired input")
    raw = theirs["hard"]
    print(f"hard data, the toolkit as is: AUC {100 * raw['success_score']:.6f} P@20 {100 * raw['precision_score']:.6f}")
    # The deliberate differences are real on this data: repaired predictions score, zero-area ground truth does not.
    assert hard.auc - 100 * raw["success_score"] > 0.1
    assert abs(hard.precision - 100 * raw["precision_score"]) > 0.1


def test_got10k_ao_and_sr50_against_the_toolkits_got10k_report(tmp_path, toolkit):
    root = write_benchmark(tmp_path / "GOT-10k", "got10k", num_sequences=3, num_frames=60, seed=4, width=W, height=H,
                        backgrounds="procedural", out_of_view=True)
    ds = open_dataset(root)
    rng = np.random.default_rng(1)
    clean = {s.name: _noisy(rng, s.gt) for s in ds}
    preds = {"clean": clean, "nan": {k: _spoil(v) for k, v in clean.items()}}
    preds["nan_as_zero"] = {k: np.nan_to_num(v, nan=0.0) for k, v in preds["nan"].items()}
    for name, boxes in preds.items():
        for seq, b in boxes.items():
            # the toolkit's report needs the time file (it fails without one)
            write_got10k_result(tmp_path / "results" / "GOT-10k" / name, seq, b, np.full(len(b), 0.01))
    assert any((s.cover == 0)[1:].any() for s in ds)  # absent frames are in the data
    theirs = _last_json(run_toolkit(toolkit, ["-c", GOT_REPORT, str(root), str(tmp_path / "results"),
                                              str(tmp_path / "reports"), *preds], cwd=tmp_path, env=toolkit_env()))
    gts = {s.name: s.gt for s in ds}
    covers = {s.name: s.cover for s in ds}
    bounds = {s.name: s.image_size for s in ds}
    ours = {name: evaluate_got10k({s: read_got10k_result(tmp_path / "results" / "GOT-10k" / name, s) for s in gts},
                                  gts, covers, bounds=bounds) for name in preds}
    print()
    for name in preds:
        t = theirs[name]["overall"]
        ao = "nan" if t["ao"] is None else f"{100 * t['ao']:.6f}"
        print(f"{name}: mfv2 AO {ours[name].ao:.6f} SR0.5 {ours[name].sr50:.6f} | "
              f"got10k AO {ao} SR0.5 {100 * t['sr']:.6f}")
    for name in ("clean", "nan_as_zero"):
        t = theirs[name]
        assert ours[name].ao == pytest.approx(100 * t["overall"]["ao"], abs=1e-6)
        assert ours[name].sr50 == pytest.approx(100 * t["overall"]["sr"], abs=1e-6)
        for seq, v in t["seq_wise"].items():
            assert ours[name].per_sequence[seq]["ao"] == pytest.approx(100 * v["ao"], abs=1e-6)
    # A NaN prediction: the toolkit's AO turns NaN; mfv2 scores the frame IoU 0, as a (0, 0, 0, 0) box.
    assert theirs["nan"]["overall"]["ao"] is None
    assert ours["nan"].ao == ours["nan_as_zero"].ao and ours["nan"].sr50 == ours["nan_as_zero"].sr50


@pytest.mark.slow
def test_mfv2_runs_as_a_got10k_toolkit_tracker(tmp_path, toolkit, tmp_path_factory):
    model = demo_export_dir(tmp_path_factory)
    root = write_benchmark(tmp_path / "GOT-10k", "got10k", num_sequences=2, num_frames=20, seed=5, width=320, height=240)
    theirs = _last_json(run_toolkit(toolkit, ["-c", TRACK, str(root), str(tmp_path / "results"),
                                              str(tmp_path / "reports"), str(model)], cwd=tmp_path, env=toolkit_env()))
    ds = open_dataset(root)
    runs = {s.name: read_got10k_result(tmp_path / "results" / "GOT-10k" / "mfv2", s.name) for s in ds}
    assert all(len(r) == 1 for r in runs.values())  # deterministic: one repetition
    ours = evaluate_got10k(runs, {s.name: s.gt for s in ds}, {s.name: s.cover for s in ds},
                           bounds={s.name: s.image_size for s in ds})
    print(f"\ngot10k toolkit running mfv2: AO {100 * theirs['ao']:.4f} SR0.5 {100 * theirs['sr']:.4f}; "
          f"mfv2 on its files: AO {ours.ao:.4f} SR0.5 {ours.sr50:.4f}")
    assert ours.ao == pytest.approx(100 * theirs["ao"], abs=1e-6)
    static = evaluate_got10k({s.name: np.repeat(s.gt[:1], len(s), 0) for s in ds}, {s.name: s.gt for s in ds},
                             {s.name: s.cover for s in ds}, bounds={s.name: s.image_size for s in ds})
    assert ours.ao > static.ao + 10, (ours.ao, static.ao)  # the demo model follows the target
    # `mfv2 eval --no-run` scores the toolkit's result folder (its submission layout) the same way.
    assert main(["eval", str(root), "--no-run", "--results", str(tmp_path / "results" / "GOT-10k" / "mfv2"),
                 "--json", str(tmp_path / "theirs.json")]) == 0
    assert json.loads((tmp_path / "theirs.json").read_text())["ao"] == pytest.approx(ours.ao, abs=1e-9)
    # `mfv2 eval` (GOT-10k preset, frames decoded by OpenCV instead of PIL) tracks the same boxes.
    assert main(["eval", str(root), "--model", str(model), "--threads", "1", "--results", str(tmp_path / "eval"),
                 "--no-progress"]) == 0
    for s in ds:
        np.testing.assert_allclose(read_boxes(tmp_path / "eval" / f"{s.name}.txt"), runs[s.name][0], atol=2e-3)
