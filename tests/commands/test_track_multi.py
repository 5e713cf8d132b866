"""``mfv2 track`` with several targets: one results file per target, a JSON-lines stream with target ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mfv2.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BOXES = ["20,30,20,20", "50,20,16,24", "20,30,20,20"]  # the third repeats the first


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory) -> Path:
    import cv2

    d = tmp_path_factory.mktemp("frames")
    for i in range(6):
        img = np.full((80, 96, 3), 40, np.uint8)
        img[30:50, 20 + 2 * i : 40 + 2 * i] = (40, 200, 240)
        img[20:44, 50 - i : 66 - i] = (200, 60, 60)
        cv2.imwrite(str(d / f"{i:04d}.png"), img)
    return d


def test_several_targets_one_file_each_and_one_jsonl(frames_dir, tiny_dynamic_export, tmp_path, capsys):
    argv = ["track", str(frames_dir), "--model", str(tiny_dynamic_export), "--no-progress"]
    for box in BOXES:
        argv += ["--init", box]
    assert main([*argv, "--output", str(tmp_path / "boxes.txt"), "--jsonl", str(tmp_path / "log.jsonl")]) == 0
    assert "6 frames, 3 targets" in capsys.readouterr().out
    files = [tmp_path / f"boxes_{i}.txt" for i in range(3)]
    lines = [f.read_text().splitlines() for f in files]
    for box, text in zip(BOXES, lines):
        assert len(text) == 6 and [float(v) for v in text[0].split(",")] == [float(v) for v in box.split(",")]
    assert lines[0] == lines[2]  # the same box twice: tracked apart, the same boxes
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(records) == 18 and {r["target"] for r in records} == {0, 1, 2}
    assert [r["frame"] for r in records if r["target"] == 1] == list(range(6))
    # Each target's file equals tracking it alone.
    for i in range(2):
        single = tmp_path / f"single_{i}.txt"
        assert main(["track", str(frames_dir), "--model", str(tiny_dynamic_export), "--no-progress", "--init", BOXES[i],
                     "--output", str(single)]) == 0
        got = np.loadtxt(files[i], delimiter=",")
        np.testing.assert_allclose(got, np.loadtxt(single, delimiter=","), atol=1e-2)  # files hold 2 decimals


def test_output_name_with_id_placeholder(frames_dir, tiny_dynamic_export, tmp_path):
    argv = ["track", str(frames_dir), "--model", str(tiny_dynamic_export), "--no-progress", "--init", BOXES[0], "--init", BOXES[1],
            "--output", str(tmp_path / "t{id}.txt"), "--max-frames", "3"]
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t0.txt", "t1.txt"]
    assert len((tmp_path / "t1.txt").read_text().splitlines()) == 3


def test_several_targets_need_a_batched_export(frames_dir, tiny_export, tmp_path, capsys):
    out = tmp_path / "boxes.txt"
    argv = ["track", str(frames_dir), "--model", str(tiny_export), "--init", BOXES[0], "--init", BOXES[1], "--output", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fixed batch of 1; export with --batch N" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_multi_without_boxes_needs_show(frames_dir, tiny_dynamic_export, capsys):
    assert main(["track", str(frames_dir), "--model", str(tiny_dynamic_export), "--multi"]) == 2
    assert "--multi draws the boxes and needs --show" in capsys.readouterr().err
