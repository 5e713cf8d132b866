"""mfv2 inside the real VOT toolkit (vot-toolkit 0.9.0 + vot-trax 4.0.2, in an environment of their own):
``vot evaluate`` runs the demo model over TraX and over the toolkit's python protocol on synthetic
sequences mfv2 wrote, ``vot analysis`` scores them, and mfv2 reproduces the toolkit's accuracy."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from tests._toolkit_env import VOT_CLI, demo_export_dir, run_toolkit, toolkit_env, toolkit_python
from mfv2.datasets import open_dataset, read_boxes
from mfv2.cli import main
from mfv2.errors import ConfigError
from mfv2.integrations.vot import VOTTracker, region_box, trackers_ini, vot_accuracy, vot_overlaps
from mfv2.datasets.synthetic import write_benchmark

SIZE = (320, 240)
STATIC = '''
class Static:
    """Reports the initial box in every frame."""
    multiobject = False

    def init(self, frame, new, properties=None):
        self.box = tuple(new[0])
        return self.box

    def update(self, frame, new=None, properties=None):
        return self.box
'''
DUMP = '''
import json, os, sys
from vot.region import Special
from vot.region.io import read_trajectory
ws, out = sys.argv[1], {}
for tracker in sys.argv[2:]:
    base = os.path.join(ws, "results", tracker, "baseline")
    for seq in sorted(os.listdir(base)):
        traj = read_trajectory(os.path.join(base, seq, seq + "_001.bin"))
        out.setdefault(tracker, {})[seq] = [None if isinstance(r, Special) else [r.x, r.y, r.width, r.height]
                                            for r in traj]
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory):
    return demo_export_dir(tmp_path_factory)


def test_regions_and_overlaps_follow_the_toolkit_conventions():
    assert region_box((1.0, 2.0, 3.0, 4.0)) == (1.0, 2.0, 3.0, 4.0)
    assert region_box([(10.0, 20.0), (30.0, 20.0), (30.0, 50.0)]) == (10.0, 20.0, 20.0, 30.0)
    mask = np.zeros((4, 5), np.uint8)
    mask[1:3, 1:4] = 1
    assert region_box(mask.tolist()) == (1.0, 1.0, 3.0, 2.0)
    with pytest.raises(ConfigError, match="empty"):
        region_box(np.zeros((3, 3), np.uint8))
    # Rounded to whole pixels, clipped to the image, inclusive: 10.4 -> 10, width 9.6 -> 10 pixels.
    ov = vot_overlaps([[10.4, 0, 9.6, 10], [-5, -5, 10, 10], [0, 0, 0, 0]], [[10, 0, 10, 10], [0, 0, 5, 5],
                                                                             [0, 0, 0, 0]], (100, 100))
    np.testing.assert_allclose(ov, [1.0, 1.0, 1.0])  # the box past the border is clipped to 5x5; empty = empty
    ini = trackers_ini("m", options=["--model", "/x y"], python="/py", paths=["/repo"])
    assert "env_MFV2_VOT_ARGS = --model '/x y'" in ini and "python = /py" in ini and "paths = /repo" in ini
    with pytest.raises(ConfigError, match="identifier"):
        trackers_ini("bad name")


def test_vot_config_prints_a_section_and_rejects_bad_input(tmp_path, capsys):
    assert main(["vot-config", "--model", str(tmp_path), "--backend", "openvino", "--threads", "2", "--name", "s"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[s]\n") and "protocol = traxpython" in out and "--threads 2" in out
    assert main(["vot-config", "--protocol", "python"]) == 0
    assert "command = mfv2.integrations.vot:VOTTracker" in capsys.readouterr().out
    ini = tmp_path / "ws" / "trackers.ini"
    for name in ("a", "b"):
        assert main(["vot-config", "--name", name, "--output", str(ini)]) == 0
        assert f"added tracker [{name}]" in capsys.readouterr().out
    import configparser

    parser = configparser.ConfigParser()
    parser.read(ini)
    assert parser.sections() == ["a", "b"] and parser["b"]["command"] == "mfv2.integrations.vot"
    for bad in (["--model", str(tmp_path / "missing")], ["--backend", "nope"], ["--threads", "0"],
                ["--name", "a", "--output", str(ini)], ["--output", str(tmp_path)], ["--name", "x y"]):
        assert main(["vot-config", *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("mfv2: error: ") and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_vot_evaluate_and_analysis_run_mfv2_and_agree_with_mfv2(tmp_path, demo_export, capsys):
    python = toolkit_python()
    ws, extra = tmp_path / "ws", tmp_path / "trackers"
    ws.mkdir()
    extra.mkdir()
    (extra / "static_tracker.py").write_text(STATIC)
    env = toolkit_env(extra)
    # The toolkit's own `import vot` still works with mfv2 (and its integrations.vot) importable.
    found = run_toolkit(python, ["-c", "import mfv2.integrations.vot, vot, trax; print(vot.__file__)"], cwd=ws, env=env)
    assert "site-packages" in found

    run_toolkit(python, ["-c", VOT_CLI, "initialize", "custom", "--workspace", str(ws)], cwd=ws, env=env)
    seqs = write_benchmark(ws / "sequences", "vot", num_sequences=4, num_frames=60, seed=0, width=SIZE[0], height=SIZE[1])
    (ws / "stack.yaml").write_text(textwrap.dedent("""\
        title: mfv2 synthetic smoke test
        experiments:
          baseline:
            type: unsupervised
            repetitions: 1
            analyses:
              - type: average_accuracy
                name: accuracy
        """))
    common = ["vot-config", "--model", str(demo_export), "--threads", "1"]
    sections = []
    for args in (["--name", "mfv2", "--python", str(python)], ["--name", "mfv2py", "--protocol", "python"]):
        assert main([*common, *args]) == 0
        sections.append(capsys.readouterr().out)
    sections.append("[static]\nlabel = static box\nprotocol = python\ncommand = static_tracker:Static\n")
    (ws / "trackers.ini").write_text("\n".join(sections))

    trackers = ["mfv2", "mfv2py", "static"]
    log = run_toolkit(python, ["-c", VOT_CLI, "evaluate", "--workspace", str(ws), *trackers], cwd=ws, env=env)
    run_toolkit(python, ["-c", VOT_CLI, "analysis", "--workspace", str(ws), "--format", "json", "--name", "an",
                         *trackers], cwd=ws, env=env)
    run_toolkit(python, ["-c", VOT_CLI, "report", "--workspace", str(ws), "--format", "html", "--name", "rep",
                         *trackers], cwd=ws, env=env)
    assert "mfv2" in (ws / "reports" / "rep" / "report.html").read_text()
    report = json.loads((ws / "analysis" / "an.json").read_text())
    order = list(report["trackers"])
    accuracy = {t: report["results"]["baseline"]["results"][0][order.index(t)][0] for t in trackers}
    print(f"\nVOT average accuracy (burn-in 10): {accuracy}")

    # The demo model follows the target; a box left where it started does not.
    assert accuracy["mfv2"] > accuracy["static"] + 0.1, (accuracy, log[-500:])
    # TraX and the python protocol run the same tracker (the TraX region is float32: a hair apart).
    assert accuracy["mfv2py"] == pytest.approx(accuracy["mfv2"], abs=2e-3)

    # mfv2 reproduces the toolkit's accuracy from the toolkit's own trajectories, exactly.
    dump = json.loads(run_toolkit(python, ["-c", DUMP, str(ws), *trackers], cwd=ws, env=env))
    ds = open_dataset(seqs)
    gts = {s: ds[s].gt for s in ds.names}
    sizes = dict.fromkeys(ds.names, SIZE)
    as_boxes = {t: {s: np.array([[np.nan] * 4 if r is None else r for r in v]) for s, v in d.items()}
                for t, d in dump.items()}
    for t in trackers:
        assert vot_accuracy(as_boxes[t], gts, sizes) == pytest.approx(accuracy[t], abs=1e-9), t

    # `mfv2 eval` on the same sequences (VOT layout, vot20 preset) tracks as the toolkit's run did,
    # and the same accuracy follows from its result files.
    results = tmp_path / "eval"
    assert main(["eval", str(seqs), "--model", str(demo_export), "--threads", "1", "--results", str(results),
                 "--no-progress", "--json", str(tmp_path / "eval.json")]) == 0
    ours = {s: read_boxes(results / f"{s}.txt") for s in ds.names}
    for s in ds.names:
        np.testing.assert_allclose(ours[s][1:], as_boxes["mfv2"][s][1:], atol=0.05)
    assert vot_accuracy(ours, gts, sizes) == pytest.approx(accuracy["mfv2"], abs=2e-3)
    per_seq = json.loads((tmp_path / "eval.json").read_text())["per_sequence"]
    mean_iou = np.mean([v["mean_iou"] for v in per_seq.values()])
    print(f"mfv2 on the toolkit's run: {vot_accuracy(as_boxes['mfv2'], gts, sizes):.6f}; mfv2 eval's files: "
          f"{vot_accuracy(ours, gts, sizes):.6f}; mfv2 eval mean IoU (continuous, visible frames, frame 0 "
          f"included, unweighted): {mean_iou:.6f}")
    conf = np.loadtxt(ws / "results" / "mfv2" / "baseline" / ds.names[0] / f"{ds.names[0]}_001_confidence.value")
    assert conf.shape == (60,) and ((conf >= 0) & (conf <= 1)).all()


def test_python_protocol_tracker_in_process(demo_export, tmp_path):
    """VOTTracker as the toolkit's python worker calls it: a frame path and (region, properties)."""
    seqs = write_benchmark(tmp_path / "v", "vot", num_sequences=1, num_frames=6, seed=2, width=SIZE[0], height=SIZE[1],
                        backgrounds="procedural")
    seq = open_dataset(seqs)[0]
    tracker = VOTTracker(model=str(demo_export), threads="1")  # trackers.ini hands strings over
    polygon = [(seq.gt[0, 0], seq.gt[0, 1]), (seq.gt[0, 0] + seq.gt[0, 2], seq.gt[0, 1] + seq.gt[0, 3]),
               (seq.gt[0, 0], seq.gt[0, 1] + seq.gt[0, 3])]
    box, props = tracker.init(str(seq.frame_paths[0]), (polygon, {}))
    np.testing.assert_allclose(box, seq.gt[0])  # the polygon's bounding box is the box
    for path in seq.frame_paths[1:]:
        box, props = tracker.update(str(path))
        assert len(box) == 4 and 0.0 <= props["confidence"] <= 1.0


def test_trax_entry_options_come_from_the_backend_registry_and_format_table():
    from mfv2.artifacts.formats import PRECISIONS
    from mfv2.integrations.vot import get_parser
    from mfv2.runtimes import BACKENDS

    p = get_parser()
    backend = next(a for a in p._actions if a.dest == "backend")
    precision = next(a for a in p._actions if a.dest == "precision")
    assert all(name in backend.help for name in BACKENDS.names())
    assert set(precision.choices) == {*PRECISIONS, "auto"} and "int8" in PRECISIONS
    with pytest.raises(SystemExit):
        p.parse_args(["--precision", "int4"])
