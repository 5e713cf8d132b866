"""Dataset readers on tiny fixtures in each layout, auto-detection, errors and result files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mfv2 import datasets as D
from mfv2.errors import ConfigError, ShapeError, UnknownNameError


def _frames(folder: Path, numbers: range, fmt: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in numbers:
        (folder / (fmt % i)).write_bytes(b"")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _lasot(root: Path) -> Path:
    a = root / "airplane" / "airplane-1"
    _frames(a / "img", range(1, 4), "%08d.jpg")
    _write(a / "groundtruth.txt", "1,2,30,40\n2,3,30,40\n3,4,30,41\n")
    _write(a / "full_occlusion.txt", "0,1,0\n")
    _write(a / "out_of_view.txt", "0,0,1")
    b = root / "bird" / "bird-2"
    _frames(b / "img", range(1, 3), "%08d.jpg")
    _write(b / "groundtruth.txt", "5\t6\t7\t8\n9\t10\t11\t12\n\n")  # tabs, trailing blank line
    return root


# ---------------------------------------------------------------------------------- LaSOT


def test_lasot_reader(tmp_path: Path) -> None:
    ds = D.open_dataset(_lasot(tmp_path))
    assert ds.name == "lasot" and ds.names == ["airplane-1", "bird-2"] and len(ds) == 2
    seq = ds["airplane-1"]
    assert [p.name for p in seq.frame_paths] == ["00000001.jpg", "00000002.jpg", "00000003.jpg"]
    np.testing.assert_array_equal(seq.gt, [[1, 2, 30, 40], [2, 3, 30, 40], [3, 4, 30, 41]])
    assert seq.gt.dtype == np.float64 and seq.cover is None
    np.testing.assert_array_equal(seq.visible, [True, False, False])  # occluded, out of view
    np.testing.assert_array_equal(ds[1].gt, [[5, 6, 7, 8], [9, 10, 11, 12]])
    assert ds[1].visible.all() and [s.name for s in ds] == ds.names


def test_lasot_testing_set_selects(tmp_path: Path) -> None:
    _write(_lasot(tmp_path) / "testing_set.txt", "bird-2\n")
    assert D.open_dataset(tmp_path, "lasot").names == ["bird-2"]
    _write(tmp_path / "testing_set.txt", "bird-2\ncat-9\n")
    with pytest.raises(ConfigError, match="lists cat-9 but"):
        D.open_dataset(tmp_path, "lasot")


def test_lasot_errors_name_what_is_expected(tmp_path: Path) -> None:
    _lasot(tmp_path)
    (tmp_path / "bird" / "bird-2" / "groundtruth.txt").unlink()
    ds = D.open_dataset(tmp_path)
    with pytest.raises(ConfigError) as e:
        ds["bird-2"]
    msg = str(e.value)
    assert "groundtruth.txt not found" in msg and "LaSOT" in msg and "\n" not in msg
    _write(tmp_path / "airplane" / "airplane-1" / "groundtruth.txt", "1,2,3,4\n1,2,3\n5,5,5,5\n")
    with pytest.raises(ConfigError, match="line 2 does not hold 4 numbers"):
        ds["airplane-1"]
    _write(tmp_path / "airplane" / "airplane-1" / "groundtruth.txt", "1,2,3,4\n1,2,3,4\n")
    with pytest.raises(ConfigError, match="3 frames in .* but 2 boxes"):
        D.open_dataset(tmp_path)["airplane-1"]


def test_synthetic_is_lasot_layout_flat_or_nested(tmp_path: Path) -> None:
    seq = tmp_path / "synth-0"
    _frames(seq / "img", range(0, 12), "%d.jpg")  # 0-based, unpadded: numeric sort
    _write(seq / "groundtruth.txt", "".join(f"{i} {i} 10 10\n" for i in range(12)))
    assert D.detect_layout(tmp_path) == "lasot"
    ds = D.open_dataset(tmp_path, "synthetic")
    assert ds.name == "synthetic" and ds["synth-0"].dataset == "synthetic"
    assert [p.stem for p in ds["synth-0"].frame_paths] == [str(i) for i in range(12)]
    np.testing.assert_array_equal(ds["synth-0"].gt[:, 0], np.arange(12))


def test_reads_what_the_synthetic_generator_writes(tmp_path: Path) -> None:
    from mfv2.datasets.synthetic import write_benchmark

    write_benchmark(tmp_path / "bench", num_sequences=2, num_frames=4)
    ds = D.open_dataset(tmp_path / "bench")  # detected from synthetic.json beside img/
    assert ds.name == "synthetic" and len(ds) == 2
    seq = ds[0]
    assert len(seq) == 4 and seq.gt.shape == (4, 4) and seq.visible.shape == (4,)
    assert seq.frame_paths[0].is_file() and (seq.gt[:, 2:] > 0).all()


# -------------------------------------------------------------------------------- GOT-10k


def _got(root: Path) -> Path:
    val = root / "val"
    s = val / "GOT-10k_Val_000001"
    _frames(s, range(1, 5), "%08d.jpg")
    _write(s / "groundtruth.txt", "1.5,2,30,40\n1,2,30,40\n0,0,0,0\n1,2,30,40\n")
    _write(s / "absence.label", "0\n0\n1\n0\n")
    _write(s / "cover.label", "8\n5\n0\n2\n")
    _write(s / "meta_info.ini", "[METAINFO]\nurl: x\nresolution: (1280, 720)\n")
    _write(val / "list.txt", "GOT-10k_Val_000001\n")
    t = root / "test" / "GOT-10k_Test_000001"
    _frames(t, range(1, 4), "%08d.jpg")
    _write(t / "groundtruth.txt", "10,20,30,40\n")
    _write(root / "test" / "list.txt", "GOT-10k_Test_000001\n")
    return root


def test_got10k_reader_val_and_test(tmp_path: Path) -> None:
    _got(tmp_path)
    assert D.detect_layout(tmp_path) == "got10k"
    ds = D.open_dataset(tmp_path)  # two splits present: val is the default
    seq = ds["GOT-10k_Val_000001"]
    assert ds.root == tmp_path / "val" and seq.image_size == (1280, 720)
    np.testing.assert_array_equal(seq.cover, [8, 5, 0, 2])
    np.testing.assert_array_equal(seq.visible, [True, True, False, True])
    assert seq.gt[0, 0] == 1.5
    test = D.open_dataset(tmp_path, "got-10k", split="test")["GOT-10k_Test_000001"]
    assert test.gt.shape == (3, 4) and np.isnan(test.gt[1:]).all()  # only frame 1 annotated
    np.testing.assert_array_equal(test.init_box, [10, 20, 30, 40])
    np.testing.assert_array_equal(test.visible, [True, False, False])
    assert D.open_dataset(tmp_path / "test").names == ["GOT-10k_Test_000001"]  # split folder
    with pytest.raises(ConfigError, match="no GOT-10k split train"):
        D.open_dataset(tmp_path, "got10k", split="train")


def test_got10k_cover_alone_marks_absence_and_bad_label_length(tmp_path: Path) -> None:
    _got(tmp_path)
    (tmp_path / "val" / "GOT-10k_Val_000001" / "absence.label").unlink()
    seq = D.open_dataset(tmp_path)[0]
    np.testing.assert_array_equal(seq.visible, [True, True, False, True])  # cover 0 = absent
    _write(tmp_path / "val" / "GOT-10k_Val_000001" / "absence.label", "0\n0\n")
    with pytest.raises(ConfigError, match="absence.label: 2 labels for 4 frames"):
        D.open_dataset(tmp_path, "got10k")[0]


# --------------------------------------------------------------------- TrackingNet, OTB, UAV


def test_trackingnet_zero_based_numeric_frames(tmp_path: Path) -> None:
    _frames(tmp_path / "TEST" / "frames" / "vid_b", range(0, 11), "%d.jpg")
    _write(tmp_path / "TEST" / "anno" / "vid_b.txt", "1 2 3 4\n")
    assert D.detect_layout(tmp_path) == "trackingnet"
    seq = D.open_dataset(tmp_path)["vid_b"]
    assert [p.name for p in seq.frame_paths][:3] == ["0.jpg", "1.jpg", "2.jpg"]
    assert seq.frame_paths[-1].name == "10.jpg" and len(seq) == 11
    assert seq.gt.shape == (11, 4) and seq.visible.sum() == 1
    with pytest.raises(ConfigError, match="anno not found: a TrackingNet split"):
        D.open_dataset(tmp_path, "trackingnet", split="TRAIN_0")


def test_otb_delimiters_multi_target_and_frame_range(tmp_path: Path) -> None:
    _frames(tmp_path / "Basketball" / "img", range(1, 4), "%04d.jpg")
    _write(tmp_path / "Basketball" / "groundtruth_rect.txt", "1 2 3 4\n5  6 7 8\n9 10 11 12\n")
    _frames(tmp_path / "Jogging" / "img", range(1, 3), "%04d.jpg")
    _write(tmp_path / "Jogging" / "groundtruth_rect.1.txt", "1,1,5,5\n2,2,5,5\n")
    _write(tmp_path / "Jogging" / "groundtruth_rect.2.txt", "1\t1\t6\t6\n2\t2\t6\t6\n")
    _frames(tmp_path / "David" / "img", range(1, 6), "%04d.jpg")
    _write(tmp_path / "David" / "groundtruth_rect.txt", "1, 1, 9, 9\n2, 2, 9, 9\n3, 3, 9, 9\n")
    assert D.detect_layout(tmp_path) == "otb"
    ds = D.open_dataset(tmp_path)
    assert sorted(ds.names) == ["Basketball", "David", "Jogging_1", "Jogging_2"]
    np.testing.assert_array_equal(ds["Basketball"].gt[1], [5, 6, 7, 8])
    np.testing.assert_array_equal(ds["Jogging_2"].gt[:, 2], [6, 6])
    with pytest.raises(ConfigError, match=r"5 frames .* but 3 boxes .*frame_ranges=\{'David'"):
        ds["David"]
    david = D.open_dataset(tmp_path, "otb", frame_ranges={"David": (3, 5)})["David"]
    assert [p.name for p in david.frame_paths] == ["0003.jpg", "0004.jpg", "0005.jpg"]
    np.testing.assert_array_equal(david.gt[:, 0], [1, 2, 3])


def test_uav123_nan_rows_and_split_sequences(tmp_path: Path) -> None:
    _frames(tmp_path / "data_seq" / "UAV123" / "car1", range(1, 5), "%06d.jpg")
    _write(tmp_path / "anno" / "UAV123" / "car1.txt",
           "1,2,3,4\nNaN,NaN,NaN,NaN\n1,2,3,4\n1,2,3,4\n")
    _frames(tmp_path / "data_seq" / "UAV123" / "bird1", range(1, 7), "%06d.jpg")
    _write(tmp_path / "anno" / "UAV123" / "bird1_1.txt", "1,1,4,4\n2,2,4,4\n")
    assert D.detect_layout(tmp_path) == "uav123"
    ds = D.open_dataset(tmp_path)
    np.testing.assert_array_equal(ds["car1"].visible, [True, False, True, True])
    assert np.isnan(ds["car1"].gt[1]).all()
    with pytest.raises(ConfigError, match="bird1_1: no folder .*part of .*bird1"):
        ds["bird1_1"]
    bird = D.open_dataset(tmp_path, "uav", frame_ranges={"bird1_1": (4, 5)})["bird1_1"]
    assert [p.name for p in bird.frame_paths] == ["000004.jpg", "000005.jpg"]


# ----------------------------------------------------------------------- detection, errors


def test_open_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a directory"):
        D.open_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="cannot tell the dataset layout") as e:
        D.open_dataset(tmp_path / "empty")
    assert "\n" not in str(e.value)
    with pytest.raises(UnknownNameError, match="did you mean lasot"):
        D.open_dataset(tmp_path / "empty", "lasott")
    with pytest.raises(ConfigError, match="no LaSOT sequence under"):
        D.open_dataset(tmp_path / "empty", "lasot")
    assert set(D.dataset_kinds()) == {"lasot", "got10k", "trackingnet", "otb", "uav123", "vot", "coco",
                                      "synthetic", "stills"}


# --------------------------------------------------------------------------- result files


def test_pytracking_result_roundtrip_and_delimiters(tmp_path: Path) -> None:
    boxes = np.array([[1.25, 2.5, 30.125, 40.0], [3.0, 4.0, 5.0, 6.0]])
    path = D.write_result(tmp_path / "res", "seq", boxes, times=[0.01, 0.02])
    assert path == tmp_path / "res" / "seq.txt" and "\t" in path.read_text()
    np.testing.assert_allclose(D.read_boxes(path), boxes, atol=5e-4)
    np.testing.assert_allclose(D.read_times(tmp_path / "res" / "seq_time.txt"), [0.01, 0.02])
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == ["seq.txt", "seq_time.txt"]
    for text in ("1,2,3,4\n5,6,7,8\n", "1 2 3 4\n5 6 7 8\n", "1\t2\t3\t4\r\n5\t6\t7\t8\r\n"):
        _write(tmp_path / "x.txt", text)
        np.testing.assert_array_equal(D.read_boxes(tmp_path / "x.txt"),
                                      [[1, 2, 3, 4], [5, 6, 7, 8]])
    D.write_boxes(tmp_path / "int.txt", [[1.9, 2.2, 3.7, -0.5]], fmt="%d")
    assert (tmp_path / "int.txt").read_text() == "1\t2\t3\t0\n"  # truncation, as pytracking
    with pytest.raises(ShapeError, match=r"\(N, 4\)"):
        D.write_boxes(tmp_path / "bad.txt", np.zeros((4, 5)))
    assert not (tmp_path / "bad.txt").exists()
    got = D.read_results(tmp_path / "res", ["seq"])
    assert list(got) == ["seq"]
    with pytest.raises(ConfigError, match="other.txt not found .*1 of 2"):
        D.read_results(tmp_path / "res", ["seq", "other"])


def test_got10k_submission_layout(tmp_path: Path) -> None:
    seq = "GOT-10k_Test_000001"
    b1 = np.array([[1.0, 2.0, 3.0, 4.0]] * 3)
    D.write_got10k_result(tmp_path, seq, b1, [0.1, 0.2, 0.3])
    D.write_got10k_result(tmp_path, seq, b1 + 1, [0.4, 0.5, 0.6], repetition=2)
    d = tmp_path / seq
    assert sorted(p.name for p in d.iterdir()) == [f"{seq}_001.txt", f"{seq}_002.txt",
                                                   f"{seq}_time.txt"]
    assert (d / f"{seq}_001.txt").read_text().splitlines()[0] == "1.000,2.000,3.000,4.000"
    runs = D.read_got10k_result(tmp_path, seq)
    assert len(runs) == 2
    np.testing.assert_array_equal(runs[1], b1 + 1)
    assert (d / f"{seq}_time.txt").read_text().splitlines()[0] == "0.10000000,0.40000000"
    np.testing.assert_allclose(D.read_times(d / f"{seq}_time.txt"),
                               [[0.1, 0.4], [0.2, 0.5], [0.3, 0.6]])
    with pytest.raises(ConfigError, match="_001.txt not found"):
        D.read_got10k_result(tmp_path, "missing")


def test_open_dataset_rejects_unknown_options_with_the_valid_list(tmp_path: Path) -> None:
    """A misspelt or misplaced option is an error naming the valid ones, never silently dropped."""
    from mfv2.datasets.synthetic import write_benchmark

    root = write_benchmark(tmp_path / "bench", num_sequences=1, num_frames=4, height=64, width=80)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) splt for dataset 'synthetic'; valid: root, split, "
                                          r"frame_ranges, num_sequences"):
        D.open_dataset(root, splt="test")
    otb = tmp_path / "otb" / "Seq"
    otb.mkdir(parents=True)
    (otb / "groundtruth_rect.txt").write_text("1,2,3,4\n")
    with pytest.raises(ConfigError, match="unknown option.*split for dataset 'otb'; valid: root, frame_ranges$"):
        D.open_dataset(tmp_path / "otb", split="train")
    assert len(D.open_dataset(tmp_path / "otb", split=None)) == 1  # None: the reader's default
    with pytest.raises(ConfigError, match="synthetic clips on disk take no generator options"):
        D.open_dataset(root, "synthetic", num_frames=10)
