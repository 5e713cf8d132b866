"""The synthetic clip generator: determinism, ground truth, flags, files and the ``mfv2 synth`` command."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mfv2.synthetic import textures as _textures
from mfv2.cli import main
from mfv2.errors import ConfigError
from mfv2.synthetic import (
    SyntheticConfig,
    SyntheticSequence,
    benchmark_sequences,
    make_sequence,
)
from mfv2.datasets.synthetic import write_benchmark, write_sequence

SMALL = dict(num_frames=40, height=120, width=160, backgrounds="procedural")


def _backgrounds(kind: str) -> str:
    if kind == "photo":
        pytest.importorskip("skimage")
    return kind


@pytest.mark.parametrize("kind", ["procedural", "photo"])
def test_two_builds_are_byte_identical_and_random_access_matches(kind):
    cfg = SyntheticConfig(**{**SMALL, "backgrounds": _backgrounds(kind)}, seed=7, distractors=2, out_of_view=True)
    a, b = make_sequence(cfg), make_sequence(cfg)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.visible, b.visible)
    sequential = list(a)
    assert len(sequential) == len(a) == 40
    for i in np.random.default_rng(0).permutation(len(b)):  # b renders in random order, a in sequence
        assert np.array_equal(b.frame(int(i)), sequential[i])
    assert sequential[0].shape == (120, 160, 3) and sequential[0].dtype == np.uint8
    assert np.array_equal(a.frame(-1), sequential[-1])
    with pytest.raises(IndexError):
        a.frame(40)


def test_seeds_give_different_clips():
    a, b = make_sequence(**SMALL, seed=1), make_sequence(**SMALL, seed=2)
    assert a.name == "synthetic-0001" and b.name == "synthetic-0002"
    assert not np.array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a.frame(0), b.frame(0))


def test_visible_boxes_lie_inside_the_frame_and_respect_size_limits():
    for seed in range(4):
        seq = make_sequence(seed=seed, out_of_view=True, backgrounds="procedural", height=180, width=240)
        b, v = seq.boxes, seq.visible
        assert b.shape == (300, 4) and b.dtype == np.float64
        assert v[0], "the first frame (tracker init) must show the target"
        assert (b[v, 0] >= 0).all() and (b[v, 1] >= 0).all()
        assert (b[v, 0] + b[v, 2] <= 240 + 1e-9).all() and (b[v, 1] + b[v, 3] <= 180 + 1e-9).all()
        assert (b[v, 2:] >= 8).all()
        assert (b[:, 2] <= 0.35 * 240 + 1e-9).all() and (b[:, 3] <= 0.35 * 180 + 1e-9).all()


@pytest.mark.parametrize("seed", range(4))
def test_target_is_where_the_box_says(seed):
    seq = make_sequence(**SMALL, seed=seed, distractors=0, occlusion=False)
    for i in range(0, 40, 3):
        diff = np.any(seq.frame(i) != seq.background(i), axis=2)
        ys, xs = np.nonzero(diff)
        x, y, w, h = seq.boxes[i]
        assert xs.size > 0.3 * w * h  # the target covers most of its box
        # every changed pixel is inside the box, and the changes reach its sides (1.5 px tolerance)
        assert xs.min() >= np.floor(x) and xs.max() < np.ceil(x + w)
        assert ys.min() >= np.floor(y) and ys.max() < np.ceil(y + h)
        assert abs(xs.min() - x) < 1.5 and abs(xs.max() + 1 - (x + w)) < 1.5
        assert abs(ys.min() - y) < 1.5 and abs(ys.max() + 1 - (y + h)) < 1.5


def test_occlusion_and_out_of_view_flags_are_consistent():
    kw = dict(height=180, width=240, backgrounds="procedural", seed=3, distractors=0)
    seq = make_sequence(**kw, out_of_view=True)
    clear = make_sequence(**kw, out_of_view=True, occlusion=False)  # same target path, no occluder
    np.testing.assert_array_equal(seq.boxes, clear.boxes)
    assert not clear.full_occlusion.any()
    np.testing.assert_array_equal(seq.visible, ~seq.full_occlusion & ~seq.out_of_view)
    assert seq.full_occlusion.any() and seq.out_of_view.any()
    assert not (seq.full_occlusion & seq.out_of_view).any()
    # out of view: at most a quarter (or a thin strip) of the box is inside the frame
    b = seq.boxes[seq.out_of_view]
    iw = np.clip(b[:, 0] + b[:, 2], 0, 240) - np.clip(b[:, 0], 0, 240)
    ih = np.clip(b[:, 1] + b[:, 3], 0, 180) - np.clip(b[:, 1], 0, 180)
    assert ((iw * ih < 0.25 * b[:, 2] * b[:, 3]) | (np.minimum(iw, ih) < 8)).all()
    last_out = np.nonzero(seq.out_of_view)[0].max()
    assert seq.visible[last_out + 1 :].any(), "the target comes back"
    # fully occluded: the occluder hides the whole box, so the target's pixels are gone
    for i in np.nonzero(seq.full_occlusion)[0][:5]:
        x, y, w, h = np.round(seq.boxes[i]).astype(int)
        assert not np.array_equal(seq.frame(i)[y : y + h, x : x + w], clear.frame(i)[y : y + h, x : x + w])
    # partial occlusion also happens: frames that differ from the clear clip but are still visible
    partial = [i for i in range(0, 300, 2) if seq.visible[i] and not np.array_equal(seq.frame(i), clear.frame(i))]
    assert partial


def test_size_and_aspect_change_over_the_clip():
    for seed in range(3):
        b = make_sequence(seed=seed, occlusion=False, backgrounds="procedural").boxes
        area, aspect = b[:, 2] * b[:, 3], b[:, 2] / b[:, 3]
        assert area.max() / area.min() > 1.3
        assert aspect.max() / aspect.min() > 1.15
        assert np.abs(np.diff(b[:, :2], axis=0)).max() < 0.05 * 600  # smooth motion: bounded speed


def test_clutter_adds_objects_of_their_own_and_leaves_the_clip_otherwise_unchanged():
    plain = make_sequence(**SMALL, seed=4)
    busy = make_sequence(**SMALL, seed=4, clutter=3)
    np.testing.assert_array_equal(busy.boxes, plain.boxes)
    np.testing.assert_array_equal(busy.visible, plain.visible)
    changed = np.any(busy.frame(5) != plain.frame(5), axis=2)
    x, y, w, h = np.round(plain.boxes[5]).astype(int)
    assert changed.mean() > 0.02  # three more objects in view
    assert not changed[y + h // 4 : y + 3 * h // 4, x + w // 4 : x + 3 * w // 4].any()  # drawn under the target
    assert make_sequence(**SMALL, seed=4, clutter=0).frame(5).tobytes() == plain.frame(5).tobytes()


def test_config_round_trip_and_rejections():
    cfg = SyntheticConfig(seed=3, distractors=2)
    assert SyntheticConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown SyntheticConfig key"):
        SyntheticConfig.from_dict({"seeds": 1})
    with pytest.raises(ConfigError):
        make_sequence(speed=2)
    for bad in (dict(height=10), dict(backgrounds="video"), dict(distractors=-1), dict(clutter=17), dict(num_frames=0),
                dict(min_size=0.5, max_size=0.2), dict(seed=-1), dict(occlusion="yes")):
        with pytest.raises(ConfigError):
            SyntheticConfig(**bad)


def test_backgrounds_choice_is_resolved_and_explicit(monkeypatch):
    monkeypatch.setattr(_textures, "photos_available", lambda: False)
    seq = make_sequence(**{**SMALL, "backgrounds": "auto"})
    assert seq.config.backgrounds == "procedural"
    np.testing.assert_array_equal(seq.boxes, make_sequence(**SMALL).boxes)
    with pytest.raises(ConfigError, match="scikit-image"):
        make_sequence(**{**SMALL, "backgrounds": "photo"})


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_lasot_files_load_back(tmp_path, ext):
    seq = make_sequence(**{**SMALL, "num_frames": 12}, seed=5, out_of_view=True)
    out = write_sequence(seq, tmp_path / "seq", ext=ext)
    assert out == (tmp_path / "seq").resolve()
    np.testing.assert_array_equal(np.loadtxt(out / "groundtruth.txt", delimiter=","), seq.boxes)
    flags = {n: np.loadtxt(out / f"{n}.txt", delimiter=",").astype(bool) for n in ("full_occlusion", "out_of_view")}
    np.testing.assert_array_equal(flags["full_occlusion"], seq.full_occlusion)
    np.testing.assert_array_equal(flags["out_of_view"], seq.out_of_view)
    assert (out / "nlp.txt").read_text().strip()
    names = sorted(p.name for p in (out / "img").iterdir())
    assert names == [f"{i:08d}{ext}" for i in range(1, 13)]
    for i in (0, 11):
        img = cv2.imread(str(out / "img" / names[i]))
        if ext == ".png":
            assert np.array_equal(img, seq.frame(i))
        else:
            assert np.abs(img.astype(int) - seq.frame(i)).mean() < 6


def test_frames_layout_and_overwrite(tmp_path):
    seq = make_sequence(**{**SMALL, "num_frames": 5})
    out = tmp_path / "frames"
    out.mkdir()
    (out / "old.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        write_sequence(seq, out, layout="frames")
    write_sequence(seq, out, layout="frames", ext=".png", overwrite=True)
    assert not (out / "old.txt").exists() and (out / "00000005.png").is_file()
    assert np.loadtxt(out / "groundtruth.txt", delimiter=",").shape == (5, 4)
    with pytest.raises(ConfigError):
        write_sequence(seq, tmp_path / "x", ext=".gif")
    with pytest.raises(ConfigError):
        write_sequence(seq, tmp_path / "x", layout="got10k")  # type: ignore[arg-type]


def test_failed_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    seq = make_sequence(**{**SMALL, "num_frames": 8})
    render = SyntheticSequence.frame

    def flaky(self, i):
        if i == 5:
            raise RuntimeError("disk on fire")
        return render(self, i)

    monkeypatch.setattr(SyntheticSequence, "frame", flaky)
    with pytest.raises(RuntimeError):
        write_sequence(seq, tmp_path / "new")
    assert list(tmp_path.iterdir()) == []
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "data.txt").write_text("precious")
    with pytest.raises(RuntimeError):
        write_sequence(seq, keep, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]
    assert (keep / "data.txt").read_text() == "precious"


def test_benchmark_in_memory_matches_files(tmp_path):
    kw = dict(num_sequences=3, num_frames=10, seed=4, height=96, width=128, backgrounds="procedural")
    seqs = benchmark_sequences(**kw)
    assert [s.name for s in seqs] == ["synthetic-1", "synthetic-2", "synthetic-3"]
    assert len({s.config.seed for s in seqs}) == 3
    assert not np.array_equal(seqs[0].boxes, seqs[1].boxes)
    again = benchmark_sequences(**kw)
    assert all(np.array_equal(a.boxes, b.boxes) for a, b in zip(seqs, again))
    root = write_benchmark(tmp_path / "bench", **kw)
    assert (root / "testing_set.txt").read_text().split() == [s.name for s in seqs]
    for s in seqs:
        d = root / "synthetic" / s.name
        np.testing.assert_array_equal(np.loadtxt(d / "groundtruth.txt", delimiter=","), s.boxes)
        assert len(list((d / "img").glob("*.jpg"))) == 10
    with pytest.raises(ConfigError):
        benchmark_sequences(2, 10, name="x")


def test_cli_writes_a_sequence_and_a_benchmark(tmp_path, capsys):
    out = tmp_path / "one"
    args = ["synth", str(out), "--frames", "6", "--size", "96x64", "--backgrounds", "procedural", "--seed", "2"]
    assert main(args) == 0
    assert "wrote 1 sequence(s), 6 frames" in capsys.readouterr().out
    assert len(list((out / "img").iterdir())) == 6
    expected = make_sequence(num_frames=6, width=96, height=64, backgrounds="procedural", seed=2).boxes
    np.testing.assert_array_equal(np.loadtxt(out / "groundtruth.txt", delimiter=","), expected)
    bench = tmp_path / "bench"
    assert main(["synth", str(bench), "--frames", "4", "--size", "96x64", "--sequences", "2",
                 "--backgrounds", "procedural", "--no-occlusion", "--distractors", "0", "--out-of-view"]) == 0
    assert (bench / "testing_set.txt").read_text().split() == ["synthetic-1", "synthetic-2"]


@pytest.mark.parametrize("extra", [["--size", "0x5"], ["--size", "big"], ["--frames", "0"], ["--distractors", "-2"],
                                   ["--sequences", "2", "--layout", "frames"]])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra):
    assert main(["synth", str(tmp_path / "o"), "--backgrounds", "procedural", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mfv2: error: ") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_cli_refuses_non_empty_output(tmp_path, capsys):
    (tmp_path / "f.txt").write_text("x")
    assert main(["synth", str(tmp_path), "--frames", "3", "--size", "96x64", "--backgrounds", "procedural"]) == 2
    assert "not empty" in capsys.readouterr().err
