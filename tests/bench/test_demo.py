"""``mfv2 demo``: the main job end to end as the README runs it, and its ``--quick`` form."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mfv2.cli import main

pytest.importorskip("torch")
pytest.importorskip("matplotlib")


def _rows(out):
    return {r["label"]: r for r in json.loads((out / "demo.json").read_text())["rows"]}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One mfv2 cache for the quick demos of this module: the tiny model is exported once."""
    return tmp_path_factory.mktemp("demo-cache")


def test_quick_demo_writes_the_report(tiny_checkpoint, tmp_path, cache, capsys, monkeypatch):
    from mfv2.runtimes import available_backends
    from mfv2.tracking import FrameSource

    monkeypatch.setenv("MFV2_CACHE", str(cache))
    out = tmp_path / "report"
    assert main(["demo", "--quick", "--output", str(out), "--checkpoint", str(tiny_checkpoint), "--threads", "1"]) == 0
    stdout = capsys.readouterr().out
    assert "| torch fp32 full | ok |" in stdout and f"report: {out}/summary.md" in stdout
    rows = _rows(out)
    assert set(rows) == {"torch fp32 full", "torch fp32 split", "onnxruntime fp32 full", "onnxruntime fp32 split",
                         "openvino fp32 split"}  # fmt: skip
    for label, row in rows.items():
        if label.split()[0] not in available_backends():
            assert row["status"].startswith("not installed")
            continue
        assert row["status"] == "ok", (label, row["status"])
        # fp32 paths of one model give the official path's boxes (seeded weights make the boxes wander,
        # so agreement is the check that the paths compute the same thing).
        assert row["agreement"] >= 0.95 and row["same_input"] >= 0.95, (label, row["agreement"], row["same_input"])
        assert row["fps"] > 0 and 0 <= row["auc"] <= 100
    assert rows["torch fp32 full"]["speedup"] == pytest.approx(1.0)
    summary = (out / "summary.md").read_text()
    assert str(tiny_checkpoint) in summary and "| onnxruntime fp32 split | ok |" in summary
    assert (out / "fps.png").read_bytes()[:4] == b"\x89PNG"
    with FrameSource(out / "tracked.mp4") as video:
        assert video.length == json.loads((out / "demo.json").read_text())["frames"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    from mfv2.runtimes import cached_export

    report = json.loads((out / "demo.json").read_text())  # the export is the cache's, as track would find it
    assert cached_export(tiny_checkpoint, cache_dir=cache / "exports") == Path(report["export"])


def test_a_path_that_computes_something_else_fails_the_tracker_check(tiny_checkpoint, tmp_path, cache, monkeypatch):
    from mfv2.runtimes import available_backends
    from mfv2.runtimes.runner import ModelRunner

    if "onnxruntime" not in available_backends():
        pytest.skip("needs onnxruntime")
    predict = ModelRunner.predict

    def broken(self, search):  # ONNX Runtime's split path returns a fixed corner box, every frame
        boxes, scores = predict(self, search)
        if self.backend == "onnxruntime" and self.graph == "split":
            boxes = np.tile(np.array([0.1, 0.1, 0.05, 0.05], np.float32), (len(boxes), 1))
        return boxes, scores

    monkeypatch.setattr(ModelRunner, "predict", broken)
    monkeypatch.setenv("MFV2_CACHE", str(cache))
    out = tmp_path / "report"
    assert main(["demo", "--quick", "--output", str(out), "--checkpoint", str(tiny_checkpoint), "--threads", "1"]) == 0
    rows = _rows(out)
    bad = rows["onnxruntime fp32 split"]
    assert bad["status"].startswith("tracker check failed: mean IoU ") and "on its own inputs < 0.8" in bad["status"]
    assert bad["same_input_iou"] < 0.8
    assert rows["onnxruntime fp32 full"]["status"] == "ok" and rows["onnxruntime fp32 full"]["same_input"] == 1.0


def test_demo_and_bench_check_their_outputs_before_any_work(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["demo", "--quick", "--output", str(tmp_path / "file")]) == 2
    assert "it exists and is not a folder" in capsys.readouterr().err
    (tmp_path / "dir.json").mkdir()
    assert main(["bench", "--variant", "tiny", "--quick", "--json", str(tmp_path / "dir.json"), "--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mfv2: error: ") and "dir.json" in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.json", "file"]  # nothing was exported or benched


def test_demo_refuses_a_non_empty_report_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert main(["demo", "--quick", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mfv2: error: ") and "is not empty" in err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


# The statuses a row of the main job may honestly end with besides "ok".
HONEST = ("not installed", "exported, validation failed: ", "tracker check failed: ")


def test_main_job_as_the_readme_runs_it(tmp_path):
    """``make demo`` runs ``mfv2 demo`` with no options: run exactly that (full, every installed path,
    int8 and bf16 included) and check its report."""
    import subprocess
    import sys
    from pathlib import Path

    from mfv2.assets import demo_checkpoint
    from mfv2.bench.envinfo import cpu_isa
    from mfv2.evaluation.metrics import evaluate_sequences
    from mfv2.runtimes import available_backends
    from mfv2.synthetic import make_sequence

    mfv2 = Path(sys.executable).with_name("mfv2")
    env = {**os.environ, "MFV2_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([str(mfv2), "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "demo_report"
    assert {p.name for p in out.iterdir()} == {"summary.md", "demo.json", "fps.png", "tracked.mp4"}
    assert f"machine: {cpu_isa()}" in proc.stderr and f"Machine: {cpu_isa()}." in (out / "summary.md").read_text()
    report = json.loads((out / "demo.json").read_text())
    assert Path(report["export"]).parent == tmp_path / "cache" / "exports"  # the one export cache
    assert (Path(report["export"]) / "manifest.json").is_file()
    shipped = demo_checkpoint()
    assert report["weights"].startswith(f"checkpoint {shipped}" if shipped else "") and report["isa"] == cpu_isa()
    rows = _rows(out)
    assert {label.split()[1] for label in rows} == {"fp32", "int8", "bf16"}  # the full demo, not --quick
    for label, row in rows.items():
        if label.split()[0] not in available_backends():
            assert row["status"].startswith("not installed"), (label, row["status"])
            continue
        assert row["status"] == "ok" or row["status"].startswith(HONEST), (label, row["status"])
        if label.split()[1] == "fp32":
            assert row["status"] == "ok" and row["agreement"] >= 0.95 and row["same_input"] >= 0.95, (label, row)
        if row["status"] == "ok":
            assert row["fps"] > 0 and 0 <= row["iou_vs_base"] <= 1 and f"| {label} | ok |" in proc.stdout
            # fed the official path's own crops, every healthy path gives its boxes (the demo's gate)
            assert row["same_input_iou"] >= 0.8, (label, row)
    assert (out / "fps.png").read_bytes()[:4] == b"\x89PNG"
    from mfv2.bench.demo import BF16_FLAGS
    from mfv2.bench.envinfo import cpu_info

    bf16, fp32 = rows["openvino bf16 split"], rows["openvino fp32 split"]
    slow = bf16["status"] == fp32["status"] == "ok" and bf16["ms_per_frame"] > fp32["ms_per_frame"]
    emulated = slow and not set(cpu_info()["flags"]) & BF16_FLAGS  # the summary says why that row is slow
    assert ("Note: bf16: this CPU has no bf16 instructions" in (out / "summary.md").read_text()) == emulated
    if shipped is None:
        return
    # the demo's clip (photo textures with the synth extra, as the model's training clips); a box left
    # where the target started scores about 13 on it, seeded random weights about 3
    seq = make_sequence(num_frames=report["frames"], seed=7)
    assert report["clip"] == f"seed 7, {seq.config.backgrounds} textures"
    gt = np.asarray(seq.boxes, float)
    static = evaluate_sequences({"c": np.repeat(gt[:1], len(gt), 0)}, {"c": gt}, {"c": seq.visible}).auc
    official = rows["torch fp32 full"]
    assert official["status"] == "ok" and official["auc"] >= 2 * static, (official["auc"], static)  # it follows the target
