"""``mfv2 bench`` on the tiny model: rows in their own processes, a well-formed JSON, failures kept, --compare."""

from __future__ import annotations

import json

import pytest

from mfv2.bench.config import BenchConfig, default_precisions
from mfv2.bench.matrix import _run_one, plan_rows
from mfv2.bench.rows import Artifacts
from mfv2.bench.flops import frame_flops, graph_flops
from mfv2.bench.report import RESULT_FIELDS
from mfv2.cli import main
from mfv2.config import variant_config
from mfv2.errors import ConfigError

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

# Rows per mode: the torch fp32 full baseline (always added), onnxruntime split and tensorrt split
# (not installed here, or unbuildable without a GPU: a row that must show a status, not vanish).
ARGS = ["--variant", "tiny", "--quick", "--backends", "onnxruntime,tensorrt", "--precisions", "fp32",
        "--graphs", "split", "--threads", "1", "--iters", "5", "--frames", "6", "--warmup", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as mp:  # the backend=auto calibration caches its pick here
        mp.setenv("MFV2_CACHE", str(d / "cache"))
        code = main(["bench", *ARGS, "--cache", str(d / "cache"), "--json", str(d / "b.json"), "--markdown",
                     str(d / "b.md"), "--plot", str(d / "b.png")])  # fmt: skip
    return code, d


def test_bench_exports_into_the_one_export_cache(bench_run, monkeypatch) -> None:
    """The bench's export of its random checkpoint is the one track and eval find for that file."""
    from mfv2.artifacts import MANIFEST_NAME
    from mfv2.runtimes import cached_export

    _, d = bench_run
    exports = [p for p in (d / "cache").iterdir() if (p / MANIFEST_NAME).is_file()]
    assert len(exports) == 1 and (d / "cache" / "tiny-seed0.pt").is_file()
    monkeypatch.setattr("mfv2.exporters.export", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-exported")))
    assert cached_export(d / "cache" / "tiny-seed0.pt", cache_dir=d / "cache") == exports[0]
    with pytest.raises(AssertionError, match="re-exported"):  # a precision it lacks: exported again, with fp32
        cached_export(d / "cache" / "tiny-seed0.pt", precisions=("int8",), cache_dir=d / "cache")


def test_bench_reports_what_auto_picked(bench_run) -> None:
    code, d = bench_run
    pick = json.loads((d / "b.json").read_text())["auto"]["tiny"]
    assert pick["status"] == "ok" and pick["backend"] in ("onnxruntime", "openvino") and pick["trials"]
    fp32 = min(t["median_ms"] for t in pick["trials"] if t["precision"] == "fp32" and t["median_ms"] is not None)
    assert pick["median_ms"] <= fp32
    assert "## What backend=auto picked" in (d / "b.md").read_text() and "auto picked" in (d / "b.md").read_text()


def test_bench_json_is_well_formed(bench_run) -> None:
    code, d = bench_run
    assert code == 0
    report = json.loads((d / "b.json").read_text())
    assert report["format"] == "mfv2-bench" and report["env"]["cpu"]["model"]
    assert report["env"]["threads"] == [1] and "onnxruntime" in report["env"]["versions"]
    assert report["peaks"]["1"]["fp32"]["gops"] > 0
    results = report["results"]
    assert [(r["mode"], r["backend"], r["graph"]) for r in results] == [
        (m, b, g) for m in ("model", "tracker")
        for b, g in (("torch", "full"), ("onnxruntime", "split"), ("tensorrt", "split"))
    ]  # fmt: skip
    for r in results:
        assert set(RESULT_FIELDS) <= set(r), set(RESULT_FIELDS) - set(r)
        assert r["variant"] == "tiny" and r["precision"] == "fp32" and r["threads"] == 1
        if r["backend"] == "tensorrt":
            assert r["status"] != "ok" and r["median_ms"] is None and r["speedup"] is None
            continue
        assert r["status"] == "ok", r["status"]
        assert r["count"] == 5  # model: --iters 5; tracker: 6 frames = init + 5 timed updates
        assert r["min_ms"] <= r["median_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["fps"] == pytest.approx(1000 / r["mean_ms"])
        assert r["peak_rss_mb"] > 0 and r["pct_peak"] > 0
    by = {(r["mode"], r["backend"], r["graph"]): r for r in results}
    for mode in ("model", "tracker"):
        base, split = by[(mode, "torch", "full")], by[(mode, "onnxruntime", "split")]
        assert base["baseline"] and base["speedup"] == pytest.approx(1.0)
        assert split["speedup"] == pytest.approx(base["median_ms"] / split["median_ms"])
        # Each row ran in its own process: the ONNX Runtime one never imported torch, so its peak memory is its own.
        assert split["torch_loaded"] is False and base["torch_loaded"] is True
        assert split["peak_rss_mb"] < base["peak_rss_mb"]
    assert by[("model", "torch", "full")]["gflops_per_frame"] == pytest.approx(graph_flops("tiny", "full").total / 1e9)
    assert by[("model", "onnxruntime", "split")]["gflops_per_frame"] == pytest.approx(
        graph_flops("tiny", "search_decoder").total / 1e9
    )
    assert by[("tracker", "onnxruntime", "split")]["gflops_per_frame"] == pytest.approx(
        frame_flops("tiny", "split", update_interval=200) / 1e9
    )
    # Same weights, same inputs: the exported split graphs reproduce the torch full forward (model mode) ...
    assert by[("model", "onnxruntime", "split")]["box_err"] < 1e-3
    # ... and the tracker follows the same boxes, with the per-stage split of each frame.
    tracker = by[("tracker", "onnxruntime", "split")]
    assert tracker["fidelity"]["mean_iou"] > 0.95
    assert {"crop", "preprocess", "infer", "postprocess"} <= set(tracker["stages"])
    assert tracker["stages"]["infer"]["median_ms"] <= tracker["max_ms"]


def test_bench_markdown_and_plot(bench_run) -> None:
    _, d = bench_run
    md = (d / "b.md").read_text()
    assert "## Environment" in md and "### Model only" in md and "### Tracker loop" in md and "unavailable" in md
    assert (d / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_compare(bench_run) -> None:
    """--compare matches rows by key and gives the latency change (on two result lists, no second bench)."""
    import copy

    from mfv2.bench.report import compare_results, format_compare, load_report

    _, d = bench_run
    old = load_report(d / "b.json")["results"]
    new = copy.deepcopy(old)
    ok = [r for r in new if r["status"] == "ok"]
    for r in ok:
        r["median_ms"] *= 0.5
    new.append({**new[0], "threads": 7})  # a row the old report does not have
    changes = compare_results(new, old)
    assert len(changes) == len(new)
    matched = [c for c in changes if c["old_median_ms"] is not None and c["new_median_ms"] is not None]
    assert len(matched) == len(ok) and all(c["change_pct"] == pytest.approx(-50.0) for c in matched)
    assert changes[-1]["old_median_ms"] is None and changes[-1]["change_pct"] is None
    failed = [c for r, c in zip(new, changes) if r["status"] != "ok"]
    assert failed and all(c["new_median_ms"] is None for c in failed)  # a failed row is never a change
    assert "-50.0%" in format_compare(changes)


def test_bench_compare_reads_the_old_report_before_the_run(tmp_path, capsys) -> None:
    (tmp_path / "old.json").write_text("{not json")
    assert main(["bench", "--variant", "tiny", "--quick", "--compare", str(tmp_path / "old.json"), "--cache", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("mfv2: error: ")


def test_plan_rows_baseline_first_and_default_precisions() -> None:
    cfg = BenchConfig(variants=("S",), backends=("onnxruntime", "openvino"), graphs=("split", "full"), threads=(1, 2),
                      modes=("model",))  # fmt: skip
    rows = plan_rows(cfg, ["S"], ["avx2"])
    assert rows[0] == dict(variant="S", backend="torch", precision="fp32", graph="full", mode="model", threads=1, baseline=True)
    per_thread = [r for r in rows if r["threads"] == 1]
    # no bf16 without AVX512-BF16 / AMX; onnxruntime fp32+int8, openvino fp32+int8, each split and full
    assert len(per_thread) == 1 + 2 * 2 + 2 * 2
    assert {r["precision"] for r in rows if r["backend"] == "openvino"} == {"fp32", "int8"}
    assert "bf16" in default_precisions("openvino", ["avx512_bf16"])
    explicit = plan_rows(BenchConfig(backends=("torch",), precisions=("fp32", "int8"), graphs=("full",), threads=(2,)), ["S"], [])
    # the baseline is not repeated; torch int8 stays in the matrix, and its status says why it does not run
    assert [(r["precision"], r["baseline"]) for r in explicit if r["mode"] == "model"] == [("fp32", True), ("int8", False)]
    status = _run_one(BenchConfig(), Artifacts("S", variant_config("S"), 200), explicit[1])["status"]
    assert status == "not run: the torch backend runs fp32, fp16, bf16, not int8"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--threads", "two"], "--threads must be comma-separated integers"),
        (["--precisions", "fp64"], "--precisions: unknown precision fp64; choose from fp32, fp16, int8, bf16"),
        (["--graphs", "split,half"], "--graphs: unknown graph half; choose from split, full"),
        (["--mode", "bogus"], "unknown mode/graph bogus"),
        (["--mode", "video"], "video mode needs a video file (none given)"),
        (["--video", "/nonexistent.mp4"], "/nonexistent.mp4 is not a file"),
        (["--background-load", "-1"], "background_load must be >= 0"),
        (["--compare", "/nonexistent/old.json"], "does not exist"),
    ],
)
def test_bench_rejects_bad_input(argv, message, capsys, tmp_path) -> None:
    assert main(["bench", *argv, "--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mfv2: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_bench_config_requires_a_bound() -> None:
    with pytest.raises(ConfigError, match="iters or duration"):
        BenchConfig(iters=None, duration=None)
