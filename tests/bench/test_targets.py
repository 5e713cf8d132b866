"""``mfv2 bench --targets``: batched against independent trackers in the same run."""

from __future__ import annotations

import json

import pytest

from mfv2.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_targets_rows(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "targets.json"
    argv = ["bench", "--targets", "1,3", "--variant", "tiny", "--backends", "onnxruntime", "--precisions", "fp32",
            "--frames", "6", "--warmup", "1", "--threads", "1", "--cache", str(tmp_path / "cache"), "--json", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "speed-up" in text and "onnxruntime" in text
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [(r["backend"], r["precision"], r["threads"], r["targets"], r["batch"]) for r in rows] == [
        ("onnxruntime", "fp32", 1, n, batch) for n in (1, 3) for batch in ("dynamic", 3)]
    for dynamic, fixed in zip(rows[::2], rows[1::2]):  # both layouts against the same independent timing
        assert dynamic["independent_ms"] == fixed["independent_ms"]
    for r in rows:
        assert r["frames"] == 4 and r["rounds"] == 2
        assert r["batched_fps"] == pytest.approx(1e3 / r["batched_ms"])
        assert r["batched_ms_per_target"] == pytest.approx(r["batched_ms"] / r["targets"])
        assert r["speedup"] == pytest.approx(r["independent_ms"] / r["batched_ms"])
    assert report["env"]["isa"]
    # One cached export per batch layout: batch 1 for the independent trackers, dynamic and the largest N for the batched ones.
    assert sorted(p.name.split("-")[2] for p in (tmp_path / "cache").iterdir()) == ["batch1", "batch3", "batchdynamic"]


@pytest.mark.parametrize("value,words", [("0", "positive counts"), ("a,b", "comma-separated integers")])
def test_targets_bad_input(value, words, capsys):
    assert main(["bench", "--targets", value, "--variant", "tiny", "--backends", "onnxruntime"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
