"""backend="auto" / precision="auto": calibration among gated paths, the fp32 floor, the cache."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mfv2.errors import ConfigError
from mfv2.runtimes import auto
from mfv2.runtimes.auto import AutoChoice, Trial, auto_candidates, choose

FAST = dict(warmup=1, iters=5, duration=0.2)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MFV2_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_decide_keeps_fp32_unless_a_low_precision_clearly_wins():
    fp32 = Trial("openvino", "fp32", 2, "split", 10.0)
    close = Trial("onnxruntime", "int8", 2, "split", 9.8)  # 2 % faster: not worth the precision
    pick, reason = auto._decide([fp32, close])
    assert (pick.backend, pick.precision) == ("openvino", "fp32") and "kept" in reason
    fast = Trial("onnxruntime", "int8", 1, "split", 4.0)
    pick, reason = auto._decide([fp32, close, fast, Trial("openvino", "int8", 2, "split", None, "failed: x")])
    assert pick == fast and "2.50x" in reason
    with pytest.raises(ConfigError, match="no candidate path could run"):
        auto._decide([Trial("openvino", "int8", 2, "split", None, "failed: broken")])


def test_candidates_follow_the_gate_and_the_cpu(tiny_export):
    from mfv2.artifacts import load_manifest

    m = load_manifest(tiny_export)
    paths = auto_candidates(m, flags=["avx2"])
    assert ("onnxruntime", "fp32", "split") in paths and ("onnxruntime", "int8", "split") in paths
    assert not any(p == "bf16" for _, p, _ in auto_candidates(m, flags=["avx512_bf16"]))  # no gate judges bf16
    assert auto_candidates(m, precision="bf16", flags=["avx2"]) == []  # asked for by name: only with bf16 hardware
    assert auto_candidates(m, precision="bf16", flags=["avx512_bf16"]) == [("openvino", "bf16", "split")]
    # An int8 graph whose weights saturate AVX2's int16 pair sums is left out without VNNI only.
    for a in m.artifacts:
        if a.precision == "int8" and a.format == "onnx-dynamic":
            a.extra["avx2_exact"] = False
    assert ("onnxruntime", "int8", "split") in auto_candidates(m, flags=["avx512_vnni"])
    assert [p for p in auto_candidates(m, backend="onnxruntime", flags=["avx2"])] == [("onnxruntime", "fp32", "split")]
    # A variant rejected at export is not in the manifest: never a candidate.
    m.artifacts = [a for a in m.artifacts if a.precision != "int8"]
    assert not any(p == "int8" for _, p, _ in auto_candidates(m, flags=["avx512_vnni"]))


def test_choose_times_gated_paths_never_slower_than_fp32_and_caches(tiny_export, cache):
    choice = choose(tiny_export, threads=1, **FAST)
    assert not choice.cached and choice.threads == 1 and choice.graph == "split"
    timed = [t for t in choice.trials if t.median_ms is not None]
    assert {t.precision for t in timed} >= {"fp32", "int8"} and {t.backend for t in timed} >= {"onnxruntime", "openvino"}
    fastest_fp32 = min(t.median_ms for t in timed if t.precision == "fp32")
    assert choice.median_ms <= fastest_fp32
    assert choice.precision == "fp32" or choice.median_ms <= (1 - auto.MIN_GAIN) * fastest_fp32
    files = list((cache / "auto").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["backend"] == choice.backend
    again = choose(tiny_export, threads=1, **FAST)
    assert again.cached and (again.backend, again.precision, again.threads) == (choice.backend, choice.precision, 1)
    assert "auto picked" in again.describe() and "(cached)" in again.describe()
    # Another request (fixed backend) is its own calibration.
    ov = choose(tiny_export, backend="openvino", threads=1, **FAST)
    assert ov.backend == "openvino" and not ov.cached and len(list((cache / "auto").glob("*.json"))) == 2


def test_cache_key_follows_the_model(tiny_export, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_export, other)
    key = auto.cache_key(tiny_export, backend="auto", precision="auto", threads=None, graph="auto")
    assert key == auto.cache_key(other, backend="auto", precision="auto", threads=None, graph="auto")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["source"]["note"] = "another model"
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert key != auto.cache_key(other, backend="auto", precision="auto", threads=None, graph="auto")
    assert key != auto.cache_key(tiny_export, backend="auto", precision="int8", threads=None, graph="auto")


def test_choice_round_trips():
    c = AutoChoice("openvino", "int8", 2, "split", 3.0, "why", [Trial("openvino", "int8", 2, "split", 3.0)], "k", 1.5)
    assert AutoChoice.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_load_backend_auto_runs_the_pick(tiny_export, cache):
    from mfv2.runtimes import load_backend

    with load_backend("auto", tiny_export, precision="auto", threads=1) as runner:
        assert runner.auto is not None and (runner.backend, runner.precision) == (runner.auto.backend, runner.auto.precision)
        m = runner.manifest.model
        t = np.zeros((1, 3, m.template_size, m.template_size), np.float32)
        runner.set_templates(t, t)
        boxes, score = runner.predict(np.zeros((1, 3, m.search_size, m.search_size), np.float32))
        assert boxes.shape == (1, 4) and np.isfinite(boxes).all()
    # A fixed backend with precision auto chooses the precision only.
    with load_backend("onnxruntime", tiny_export, precision="auto", threads=1) as runner:
        assert runner.backend == "onnxruntime" and runner.auto.precision in ("fp32", "int8")


def test_auto_without_an_export_is_the_official_path(tiny_model):
    from mfv2.runtimes import load_backend

    with load_backend("auto", tiny_model, precision="auto") as runner:
        assert (runner.backend, runner.precision) == ("torch", "fp32") and runner.auto is None


def test_tracker_create_defaults_to_auto(tiny_export, cache):
    from mfv2.tracking import Tracker

    with Tracker.create(model=tiny_export, threads=1) as tracker:
        runner = tracker.runner
        assert runner.auto is not None and runner.backend == runner.auto.backend
    with Tracker.create("onnxruntime", model=tiny_export, threads=1) as tracker:  # a named backend keeps fp32
        runner = tracker.runner
        assert (runner.backend, runner.precision, runner.auto) == ("onnxruntime", "fp32", None)


def test_mfv2_track_defaults_to_auto_and_says_what_it_picked(tiny_export, cache, tmp_path, capsys):
    import cv2

    from mfv2.cli import main

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((120, 160, 3), 40 * i, np.uint8))
    code = main(["track", str(folder), "--model", str(tiny_export), "--init", "40,30,40,40", "--threads", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "auto picked" in out
    assert any(f"fps on {b} {p}" in out for b in ("onnxruntime", "openvino") for p in ("fp32", "int8"))
