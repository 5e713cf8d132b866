"""The latency harness, analytic FLOPs, the GEMM probe, environment capture and the report writers."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from mfv2.bench.envinfo import capture_env, cpu_info
from mfv2.bench.flops import frame_flops, graph_flops
from mfv2.bench.latency import LatencyStats, measure, summarize_stages, time_calls
from mfv2.bench.probe import measure_peak, peak_precision
from mfv2.bench import report as R
from mfv2.config import ModelConfig
from mfv2.errors import ConfigError

# ------------------------------------------------------------------------------ harness


class FakeClock:
    """A nanosecond clock that only moves when the timed function says so."""

    def __init__(self, steps_ms: list[float]) -> None:
        self.now = 0
        self.steps = iter(steps_ms)
        self.calls = 0

    def __call__(self) -> int:
        return self.now

    def work(self) -> None:
        self.calls += 1
        self.now += int(next(self.steps) * 1e6)


def test_stats_of_a_known_list() -> None:
    x = np.arange(1, 101, dtype=float)  # 1..100 ms
    s = LatencyStats.from_samples(x, first_ms=250.0)
    assert s.count == 100 and s.first_ms == 250.0 and (s.min_ms, s.max_ms) == (1.0, 100.0)
    assert s.mean_ms == 50.5 and s.median_ms == s.p50_ms == 50.5
    # Linear interpolation between order statistics: rank q*(n-1) -> 89.1 -> 90.1, 98.01 -> 99.01.
    assert s.p90_ms == pytest.approx(90.1) and s.p99_ms == pytest.approx(99.01)
    assert s.std_ms == pytest.approx(math.sqrt((100**2 - 1) / 12))
    assert s.fps == pytest.approx(1000 / 50.5) and s.total_s == pytest.approx(5.05)
    with pytest.raises(ConfigError, match="no timed samples"):
        LatencyStats.from_samples([])


def test_measure_times_first_call_apart_and_skips_warmup() -> None:
    # first call 100 ms, 2 warm-up calls (never timed), then 5, 1, 3 ms
    clock = FakeClock([100, 7, 7, 5, 1, 3])
    s = measure(clock.work, warmup=2, iters=3, clock=clock)
    assert clock.calls == 6
    assert s.first_ms == 100.0 and s.count == 3
    assert (s.min_ms, s.median_ms, s.max_ms) == (1.0, 3.0, 5.0)


def test_measure_stops_on_duration_or_iterations_whichever_first() -> None:
    clock = FakeClock([1] + [4] * 50)
    first, samples = time_calls(clock.work, warmup=0, duration=0.010, clock=clock)
    assert first == 1.0 and samples.tolist() == [4.0, 4.0, 4.0]  # 12 ms >= 10 ms budget
    clock = FakeClock([1] + [4] * 50)
    _, samples = time_calls(clock.work, warmup=0, iters=2, duration=10.0, clock=clock)
    assert len(samples) == 2


def test_measure_calls_sync_before_reading_the_clock() -> None:
    clock = FakeClock([1.0] * 10)
    s = measure(lambda: None, warmup=0, iters=2, sync=clock.work, clock=clock)
    # fn itself takes no time; the 1 ms each sync waits for is inside every sample
    assert s.first_ms == 1.0 and s.min_ms == s.max_ms == 1.0 and s.count == 2


@pytest.mark.parametrize("kwargs", [{}, {"iters": 0}, {"duration": 0.0}, {"iters": 3, "warmup": -1}])
def test_measure_rejects_bad_limits(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        measure(lambda: None, **kwargs)


def test_summarize_stages() -> None:
    frames = [{"crop": 0.001, "infer": 0.009}, {"crop": 0.003, "infer": 0.011}, {"crop": 0.002, "infer": 0.010}]
    s = summarize_stages(frames)
    assert list(s) == ["crop", "infer"]
    assert s["crop"]["median_ms"] == pytest.approx(2.0) and s["infer"]["mean_ms"] == pytest.approx(10.0)
    assert s["crop"]["share"] == pytest.approx(2 / 12) and s["infer"]["share"] == pytest.approx(10 / 12)


# ------------------------------------------------------------------------------ FLOPs


def _counted(fn) -> int:
    torch = pytest.importorskip("torch")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    # The math SDPA backend decomposes attention into bmm calls, which the counter sees.
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize(
    "cfg,online",
    [
        ("tiny", 1),
        (ModelConfig(name="odd", depth=3, embed_dim=96, num_heads=3, mlp_ratio=1.5, template_size=48, search_size=80,
                     num_bins=12), 1),  # fmt: skip
        ("tiny", 2),
    ],
)
def test_analytic_flops_match_a_brute_force_count(cfg, online: int) -> None:
    torch = pytest.importorskip("torch")
    from mfv2.models import build_model

    torch.manual_seed(0)
    model = build_model(cfg)
    c = model.config
    t = torch.randn(1, 3, c.template_size, c.template_size)
    ot = torch.randn(1, online, 3, c.template_size, c.template_size) if online > 1 else t
    s = torch.randn(1, 3, c.search_size, c.search_size)
    assert graph_flops(c, "full", online_templates=online).total == _counted(lambda: model(t, ot, s))
    assert graph_flops(c, "template_encoder", online_templates=online).total == _counted(lambda: model.encode_templates(t, ot))
    kv = model.encode_templates(t, ot)
    assert graph_flops(c, "search_decoder", online_templates=online).total == _counted(lambda: model.track_search(s, kv))


def test_frame_flops_split_against_full() -> None:
    enc, dec = graph_flops("S", "template_encoder"), graph_flops("S", "search_decoder")
    assert frame_flops("S", "full") == graph_flops("S", "full").total
    assert frame_flops("S", "split") == dec.total
    assert frame_flops("S", "split", update_interval=200) == dec.total + enc.total // 200
    # The full graph recomputes every template token and the last block's search tokens each frame.
    assert dec.total < graph_flops("S", "full").total
    assert graph_flops("S", "full", batch=3).total == 3 * graph_flops("S", "full").total
    assert set(dec.to_dict()) == {"patch_embed", "qkv", "attention", "proj", "mlp", "heads", "total"}
    with pytest.raises(ConfigError, match="unknown graph"):
        graph_flops("S", "decoder")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ probe and environment


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_gemm_probe_reports_a_throughput(precision: str) -> None:
    if precision == "int8":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
    r = measure_peak(precision, threads=1, sizes=(64, 128), duration=0.01)
    assert r.status == "ok" and r.size in (64, 128) and r.threads == 1
    assert math.isfinite(r.gops) and r.gops > 0 and r.engine
    assert json.loads(json.dumps(r.to_dict()))["precision"] == precision


def test_gemm_probe_rejects_unknown_precision_and_maps_fp16() -> None:
    with pytest.raises(ConfigError, match="no GEMM probe"):
        measure_peak("fp8")
    assert peak_precision("fp16") == "fp32" and peak_precision("bf16") == "bf16"


def test_cpu_info_parses_cpuinfo(tmp_path) -> None:
    block = "processor\t: {i}\nmodel name\t: Test CPU 9000\nphysical id\t: 0\ncore id\t: {c}\ncpu MHz\t\t: 2500.0\nflags\t\t: fpu avx2 avx512f avx512_bf16 foo\n"
    text = "\n".join(block.format(i=i, c=i // 2) for i in range(4))  # 4 logical CPUs, 2 cores
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    info = cpu_info(path)
    assert info["model"] == "Test CPU 9000" and info["physical_cores"] == 2 and info["mhz"] == 2500.0
    assert info["flags"] == ["avx2", "avx512f", "avx512_bf16"]


def test_capture_env_is_json_and_imports_no_runtime() -> None:
    code = (
        "import json, sys; from mfv2.bench.envinfo import capture_env; e = capture_env([2]); json.dumps(e); "
        "print(json.dumps([e['threads'], 'numpy' in e['versions'], sorted(m for m in ('torch', 'onnxruntime', 'openvino') if m in sys.modules)]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [[2], True, []]
    env = capture_env(2)
    assert env["cpu"]["logical_cpus"] >= 1 and isinstance(env["gpus"], list)


# ------------------------------------------------------------------------------ reports


def _row(**kw) -> dict:
    base = dict(variant="S", backend="onnxruntime", precision="fp32", graph="split", mode="model", threads=2,
                status="ok", median_ms=10.0, mean_ms=11.0, std_ms=1.0, p90_ms=12.0, p99_ms=15.0, min_ms=9.0,
                max_ms=16.0, first_ms=50.0, count=100, fps=90.9, speedup=4.0, gflops_per_frame=5.5, pct_peak=30.0,
                peak_rss_mb=150.0)  # fmt: skip
    return {**base, **kw}


def test_table_shows_failed_rows_with_their_status() -> None:
    rows = [_row(backend="torch", graph="full", speedup=1.0, baseline=True),
            _row(backend="tensorrt", status="unavailable: install tensorrt", median_ms=None, fps=None, speedup=None)]  # fmt: skip
    text = R.format_table(rows)
    assert "unavailable: install tensorrt" in text and "tensorrt" in text
    assert "4.00x" not in text and "1.00x" in text
    md = R.format_table(rows, markdown=True)
    assert md.count("| S |") == 2 and "|---|" in md


def test_compare_and_json_round_trip(tmp_path) -> None:
    old = [_row(median_ms=20.0), _row(precision="int8", median_ms=8.0)]
    new = [_row(median_ms=10.0), _row(precision="int8", status="failed: x", median_ms=None), _row(threads=1)]
    changes = R.compare_results(new, old)
    assert changes[0]["change_pct"] == pytest.approx(-50.0)
    assert changes[1]["change_pct"] is None and changes[1]["old_median_ms"] == 8.0
    assert changes[2]["old_median_ms"] is None  # no such row before
    assert "-50.0%" in R.format_compare(changes)
    path = R.write_json(tmp_path / "r.json", {"env": {}, "results": [_row(pct_peak=float("nan"))]})
    data = R.load_report(path)
    assert data["format"] == "mfv2-bench" and data["results"][0]["pct_peak"] is None
    assert not list(tmp_path.glob(".*tmp"))  # nothing half-written left behind


def test_load_report_rejects_foreign_files(tmp_path) -> None:
    (tmp_path / "x.json").write_text('{"a": 1}')
    (tmp_path / "bad.json").write_text("{")
    for name in ("x.json", "bad.json", "missing.json"):
        with pytest.raises(ConfigError, match="mfv2 bench --json"):
            R.load_report(tmp_path / name)


def test_markdown_and_plot(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    cv2 = pytest.importorskip("cv2")
    report = {
        "command": "mfv2 bench --quick",
        "env": capture_env([2]),
        "peaks": {"2": {"fp32": {"gops": 180.0, "engine": "torch.matmul", "status": "ok"}}},
        "notes": ["a note"],
        "results": [_row(baseline=True), _row(mode="tracker", stages={"crop": {"median_ms": 1.0}},
                                              fidelity={"iou_ge_0.9": 0.5, "mean_iou": 0.8}),
                    _row(status="export failed: boom", median_ms=None)],  # fmt: skip
    }
    md = R.to_markdown(report)
    for part in ("# mfv2 benchmark", "mfv2 bench --quick", "| 2 | fp32 | 180 | - |", "### Tracker loop", "50% / 0.800",
                 "export failed: boom", "- a note"):  # fmt: skip
        assert part in md
    png = R.plot_bars(tmp_path / "b.png", report)
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 200


def test_time_tracker_warms_up_then_times_every_update_from_a_fresh_init():
    from mfv2.bench.latency import time_tracker

    class Fake:
        def __init__(self):
            self.calls, self.score, self.last_timings = [], 0.0, {}

        def init(self, frame, box):
            self.calls.append(("init", int(frame[0]), box))
            self.x = box[0]

        def update(self, frame):
            self.calls.append(("update", int(frame[0])))
            self.x += 1.0
            self.score = float(frame[0]) / 10
            self.last_timings = {"crop": 0.001, "infer": 0.002, "total": 0.003}
            return True, (self.x, 2.0, 3.0, 4.0)

    tracker = Fake()
    frames = [np.full(1, i) for i in range(6)]
    run = time_tracker(tracker, frames.__getitem__, 6, (10.0, 2.0, 3.0, 4.0), warmup=2)
    # warm-up: init + 2 updates (frames 1, 2); then a fresh init on frame 0 and every frame timed
    assert tracker.calls[:4] == [("init", 0, (10.0, 2.0, 3.0, 4.0)), ("update", 1), ("update", 2),
                                 ("init", 0, (10.0, 2.0, 3.0, 4.0))]  # fmt: skip
    assert [c[1] for c in tracker.calls[4:]] == [1, 2, 3, 4, 5]
    assert run.boxes.shape == (6, 4) and run.boxes[:, 0].tolist() == [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]
    assert run.scores == [1.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert len(run.samples_ms) == len(run.cpu_ms) == 5 and np.isfinite(run.first_ms) and run.init_ms >= 0
    assert run.stages[0] == {"crop": 0.001, "infer": 0.002} and run.stats().count == 5
