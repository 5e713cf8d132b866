"""``mfv2 eval --workers N`` and ``--shard I/N``: the same result files and figures as one process."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from tests._toolkit_env import demo_export_dir
from mfv2.evaluation.evaluate import parse_shard, shard_names, worker_threads
from mfv2.cli import main
from mfv2.errors import ConfigError
from mfv2.datasets.synthetic import write_benchmark

FIGURES = ("auc", "precision", "norm_precision", "op50", "op75", "sequences", "frames", "ao", "sr50", "sr75")


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory):
    """The shipped demo model exported once per session for ONNX Runtime (shared with the toolkit tests)."""
    return demo_export_dir(tmp_path_factory)


def test_shards_are_disjoint_cover_the_list_and_parse():
    names = [f"s{i}" for i in range(7)]
    parts = [shard_names(names, (i, 3)) for i in (1, 2, 3)]
    assert parts == [["s0", "s3", "s6"], ["s1", "s4"], ["s2", "s5"]]
    assert sorted(sum(parts, [])) == names and shard_names(names, None) == names
    assert parse_shard("2/4") == (2, 4) and parse_shard(" 1 / 1 ") == (1, 1)
    for bad in ("0/4", "5/4", "1-4", "a/b", "1/0"):
        with pytest.raises(ConfigError, match="--shard expects I/N"):
            parse_shard(bad)
    assert worker_threads(2, 3) == 3 and worker_threads(1) >= 1
    with pytest.raises(ConfigError, match="--workers"):
        worker_threads(0)


def test_bad_shard_and_workers_are_one_line_errors(tmp_path, capsys):
    root = write_benchmark(tmp_path / "d", "got10k", num_sequences=2, num_frames=5, height=72, width=96,
                        backgrounds="procedural")
    for extra in (["--shard", "3/2"], ["--workers", "0"], ["--shard", "x"]):
        assert main(["eval", str(root), "--baseline", "static", "--results", str(tmp_path / "r"), "--no-progress",
                     *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("mfv2: error: ") and len(err.strip().splitlines()) == 1


def _figures(path):
    body = json.loads(path.read_text())
    return {k: body.get(k) for k in FIGURES}, body


def test_sharded_and_parallel_runs_equal_one_run(tmp_path, demo_export, capsys, caplog):
    """Three ways to the same report on a GOT-10k-layout set (so AO/SR are in it too): one process,
    two workers, and two shards merged by --no-run; every result file is identical."""
    root = write_benchmark(tmp_path / "data", "got10k", num_sequences=5, num_frames=16, seed=1, height=120,
                        width=160, backgrounds="procedural", out_of_view=True)
    common = ["eval", str(root), "--backend", "onnxruntime", "--model", str(demo_export), "--no-progress"]
    single, parallel, sharded = tmp_path / "single", tmp_path / "parallel", tmp_path / "sharded"
    assert main([*common, "--threads", "1", "--results", str(single), "--json", str(tmp_path / "single.json")]) == 0
    caplog.set_level(logging.INFO, logger="mfv2.evaluation.evaluate")
    assert main([*common, "--workers", "2", "--results", str(parallel), "--json", str(tmp_path / "par.json")]) == 0
    assert f"tracking 5 sequences in 2 processes, {worker_threads(2)} runtime thread(s) each" in caplog.text
    assert "tracked 5 of 5 sequences" in capsys.readouterr().out
    for i in (1, 2):
        assert main([*common, "--threads", "1", "--shard", f"{i}/2", "--results", str(sharded),
                     "--json", str(tmp_path / f"shard{i}.json")]) == 0
    out = capsys.readouterr().out
    assert "tracked 3 of 3 sequences" in out and "tracked 2 of 2 sequences" in out
    shard1, body1 = _figures(tmp_path / "shard1.json")
    assert shard1["sequences"] == 3 and body1["run"]["shard"] == "1/2"
    merged = tmp_path / "merged.json"
    assert main(["eval", str(root), "--no-run", "--results", str(sharded), "--json", str(merged)]) == 0

    want, _ = _figures(tmp_path / "single.json")
    assert want["sequences"] == 5 and want["ao"] is not None
    for name in ("par.json", "merged.json"):
        got, _ = _figures(tmp_path / name)
        assert got == want, name
    for seq in sorted(p.name for p in single.glob("*.txt") if not p.name.endswith("_time.txt")):
        a = np.loadtxt(single / seq)
        np.testing.assert_array_equal(np.loadtxt(parallel / seq), a)
        np.testing.assert_array_equal(np.loadtxt(sharded / seq), a)
    # Resuming a finished shard tracks nothing.
    assert main([*common, "--threads", "1", "--shard", "2/2", "--results", str(sharded)]) == 0
    assert "tracked 0 of 2 sequences" in capsys.readouterr().out
