"""--background-load: busy processes started and stopped by the bench, rows idle and loaded, x idle."""

from __future__ import annotations

import os
import time

import pytest

from mfv2.bench import matrix
from mfv2.bench.config import BenchConfig
from mfv2.bench.load import busy_processes
from mfv2.bench.report import auto_lines, compare_results, format_table
from mfv2.bench.rows import Artifacts
from mfv2.config import variant_config


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads CPU time from /proc")
def test_busy_processes_burn_cpu_and_are_reaped_on_every_exit():
    with busy_processes(2) as procs:
        time.sleep(0.5)
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
        assert all(_cpu_seconds(p.pid) > 0.05 for p in procs)  # really looping, not sleeping
    assert all(p.returncode is not None for p in procs)
    with pytest.raises(KeyboardInterrupt), busy_processes(1) as procs:
        raise KeyboardInterrupt
    assert procs[0].returncode is not None


def test_matrix_runs_every_row_idle_then_loaded(monkeypatch):
    seen = []

    def fake_spawn(args, timeout):
        if args[0] != "--row":
            return {"status": "failed: not in this test"}
        spec = __import__("json").loads(args[1])
        level = spec.get("background_load")
        seen.append((spec["backend"], level, len(matrix._active)))
        ms = (20.0 if spec["backend"] == "torch" else 4.0) * (2.0 if level else 1.0)
        return {"status": "ok", "median_ms": ms, "samples_ms": [ms], "first_ms": ms, "peak_rss_mb": 1.0}

    class Busy:  # records how many busy processes are running while each row runs
        def __init__(self, n):
            self.n = n

        def __enter__(self):
            matrix._active.extend([None] * self.n)

        def __exit__(self, *exc):
            del matrix._active[:]

    monkeypatch.setattr(matrix, "_active", [], raising=False)
    monkeypatch.setattr(matrix, "busy_processes", Busy)
    monkeypatch.setattr(matrix, "_spawn", fake_spawn)
    monkeypatch.setattr(matrix, "prepare_artifacts", lambda v, needed, config: Artifacts(v, variant_config("tiny"), 200, "ck", "dir"))
    config = BenchConfig(variants=("tiny",), backends=("onnxruntime",), precisions=("int8",), graphs=("split",),
                         threads=(1,), modes=("model",), background_load=1, auto=False)  # fmt: skip
    report = matrix.run_bench(config)
    assert seen == [("torch", 0, 0), ("onnxruntime", 0, 0), ("torch", 1, 1), ("onnxruntime", 1, 1)]
    rows = {(r["backend"], r["background_load"]): r for r in report["results"]}
    assert rows[("onnxruntime", 1)]["loaded_slowdown"] == pytest.approx(2.0)
    assert rows[("onnxruntime", 0)].get("loaded_slowdown") is None
    assert rows[("onnxruntime", 1)]["speedup"] == pytest.approx(5.0)  # against the baseline under the same load
    table = format_table(report["results"])
    assert "BG load" in table and "x idle" in table and "2.00x" in table
    assert any("busy-looping" in n for n in report["notes"])
    # Rows without a background load match old reports' rows (which had no such key) in --compare.
    old = [{k: v for k, v in r.items() if k not in ("background_load", "loaded_slowdown")} for r in report["results"][:2]]
    assert all(c.get("old_median_ms") is not None for c in compare_results(report["results"][:2], old))


def test_auto_lines_say_pick_reason_and_trials():
    report = {"auto": {"S": {"status": "ok", "backend": "openvino", "precision": "int8", "graph": "split", "threads": 2,
                             "median_ms": 10.0, "reason": "10.00 ms per frame, 2.70x the fastest fp32 path", "cached": True,
                             "load_average": 0.5, "trials": [{"backend": "openvino", "precision": "int8", "threads": 2,
                                                              "median_ms": 10.0}]},
                       "B": {"status": "failed: auto: no candidate path"}}}  # fmt: skip
    lines = auto_lines(report)
    assert lines[0].startswith("S: auto picked openvino int8 split, 2 thread(s): 10.00 ms") and "(cached)" in lines[0]
    assert "openvino int8 t2 10.00 ms" in lines[1] and lines[2] == "B: auto could not choose: failed: auto: no candidate path"


def test_busy_processes_end_when_the_bench_is_killed(tmp_path):
    import signal
    import subprocess
    import sys

    code = ("import sys, time\nfrom mfv2.bench.load import busy_processes\nwith busy_processes(1) as p:\n"
            "    print(p[0].pid, flush=True)\n    time.sleep(60)\n")  # fmt: skip
    bench = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(bench.stdout.readline())
    bench.send_signal(signal.SIGKILL)  # no finally runs
    bench.wait()
    deadline = time.time() + 10
    while time.time() < deadline and os.path.exists(f"/proc/{child}") and "Z" not in open(f"/proc/{child}/stat").read().split()[2]:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split()[2] == "Z"
