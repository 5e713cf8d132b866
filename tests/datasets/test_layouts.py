"""The synthetic benchmark in each toolkit's layout (``mfv2 synth --layout``), read back by mfv2's readers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mfv2.datasets import detect_layout, open_dataset
from mfv2.datasets.vot import mask_box, parse_region, polygon_box
from mfv2.cli import main
from mfv2.errors import ConfigError
from mfv2.datasets.got10k import cover_labels
from mfv2.datasets.synthetic import write_benchmark
from mfv2.synthetic import benchmark_sequences

# Out-of-view episodes need frames; 60 frames also get an occluder (and so full occlusions).
SMALL = dict(num_sequences=2, num_frames=60, seed=3, height=72, width=96, backgrounds="procedural",
             out_of_view=True)
READ_AS = {"lasot": "synthetic", "got10k": "got10k", "otb": "otb", "vot": "vot"}


@pytest.fixture(scope="module")
def clips():
    opts = {k: v for k, v in SMALL.items() if k not in ("num_sequences", "num_frames", "seed")}
    return benchmark_sequences(SMALL["num_sequences"], SMALL["num_frames"], SMALL["seed"], **opts)


@pytest.mark.parametrize("layout", ["lasot", "got10k", "otb", "vot"])
def test_every_layout_reads_back_with_the_same_boxes_flags_and_frames(tmp_path, clips, layout):
    root = write_benchmark(tmp_path / layout, layout, ext=".png", **SMALL)
    assert detect_layout(root) == READ_AS[layout]
    ds = open_dataset(root)
    assert ds.names == [c.name for c in clips]
    for clip in clips:
        seq = ds[clip.name]
        assert len(seq) == len(clip)
        np.testing.assert_array_equal(seq.gt, clip.boxes)  # exact: boxes are written as shortest reprs
        if layout != "otb":  # OTB has no visibility flags
            np.testing.assert_array_equal(seq.visible, clip.visible)
        for i in (0, len(clip) - 1):
            assert np.array_equal(cv2.imread(str(seq.frame_paths[i])), clip.frame(i))
    assert any(not c.visible.all() for c in clips)  # the fixture exercises hidden frames


def test_got10k_labels_and_meta_are_what_the_toolkit_reads(tmp_path, clips):
    root = write_benchmark(tmp_path / "g", "got10k", **SMALL)
    ds = open_dataset(root, "got10k")
    for clip in clips:
        seq, d = ds[clip.name], root / "val" / clip.name
        cover = np.loadtxt(d / "cover.label")
        np.testing.assert_array_equal(cover, cover_labels(clip))
        np.testing.assert_array_equal(seq.cover, cover)
        assert ((cover == 0) == ~clip.visible).all() and cover.max() <= 8
        np.testing.assert_array_equal(np.loadtxt(d / "absence.label"), clip.out_of_view)
        meta = (d / "meta_info.ini").read_text().splitlines()
        assert meta[0] == "[METAINFO]" and "resolution: (96, 72)" in meta[1:]
        assert seq.image_size == (96, 72)
        assert sorted(p.name for p in d.glob("*.jpg"))[0] == "00000001.jpg"
    assert (root / "val" / "list.txt").read_text().split() == [c.name for c in clips]


def test_vot_sequence_file_and_workspace_root(tmp_path, clips):
    ws = tmp_path / "ws"
    write_benchmark(ws / "sequences", "vot", **SMALL)
    meta = dict(line.split("=", 1) for line in (ws / "sequences" / clips[0].name / "sequence").read_text().splitlines())
    assert meta["channels.color"] == "color/%08d.jpg" and (meta["width"], meta["height"]) == ("96", "72")
    assert int(meta["length"]) == SMALL["num_frames"]
    assert detect_layout(ws) == "vot" and open_dataset(ws).names == [c.name for c in clips]


def test_vot_regions_become_their_bounding_boxes(tmp_path):
    assert parse_region("1.5,2,10,20") == (1.5, 2.0, 10.0, 20.0)
    assert parse_region("10,20,30,20,30,50,10,50") == (10.0, 20.0, 20.0, 30.0)  # a rectangle as a polygon
    assert parse_region("0") is None and parse_region("nan,nan,nan,nan") is None
    m = np.zeros((5, 6), dtype=np.uint8)
    m[1:3, 2:5] = 1
    assert mask_box(m, (10, 20)) == (12.0, 21.0, 3.0, 2.0) and mask_box(np.zeros((2, 2))) is None
    # "m x0,y0,w,h, runs": a 6x5 mask at (10, 20); zeros then ones alternate row by row
    flat = m.ravel()
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    assert parse_region("m10,20,6,5," + ",".join(map(str, runs))) == (12.0, 21.0, 3.0, 2.0)
    assert polygon_box([(0, 0), (3, 4), (1, 9)]) == (0.0, 0.0, 3.0, 9.0)
    with pytest.raises(ConfigError, match="not a VOT region"):
        parse_region("1,2,3")
    # A VOT groundtruth with a polygon, a special and a mask line reads as boxes and a NaN row.
    d = tmp_path / "v" / "s"
    (d / "color").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(d / "color" / f"{i + 1:08d}.jpg"), np.zeros((40, 40, 3), np.uint8))
    (d / "groundtruth.txt").write_text("10,20,30,20,30,50,10,50\n0\nm10,20,6,5," + ",".join(map(str, runs)) + "\n")
    (d / "sequence").write_text("channels.color=color/%08d.jpg\n")
    seq = open_dataset(tmp_path / "v")["s"]
    np.testing.assert_array_equal(seq.gt[[0, 2]], [[10, 20, 20, 30], [12, 21, 3, 2]])
    assert np.isnan(seq.gt[1]).all() and seq.visible.tolist() == [True, False, True]


def test_synth_cli_writes_each_layout(tmp_path, capsys):
    for layout in ("got10k", "otb", "vot"):
        out = tmp_path / layout
        rc = main(["synth", str(out), "--layout", layout, "--sequences", "2", "--frames", "8", "--size", "96x72",
                   "--backgrounds", "procedural"])
        assert rc == 0 and "wrote 2 sequence(s)" in capsys.readouterr().out
        assert len(open_dataset(out)) == 2
    assert main(["synth", str(tmp_path / "vot"), "--layout", "vot", "--frames", "8"]) == 2  # not empty
    assert capsys.readouterr().err.startswith("mfv2: error: ")
