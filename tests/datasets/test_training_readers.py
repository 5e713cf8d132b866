"""Dataset readers on tiny on-disk fixtures in each dataset's real layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("torch")

from mfv2.errors import ConfigError  # noqa: E402
from mfv2.datasets import DATASETS, build_dataset, open_dataset  # noqa: E402

BGR = (255, 0, 0)  # pure blue in OpenCV order -> (0, 0, 255) in RGB


def _frames(folder: Path, n: int, name: str = "{:08d}.jpg", start: int = 1) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    img = np.zeros((24, 32, 3), np.uint8)
    img[:] = BGR
    for i in range(n):
        cv2.imwrite(str(folder / name.format(i + start)), img)


def _boxes(n: int) -> np.ndarray:
    return np.array([[1 + i, 2, 10, 8] for i in range(n)], dtype=np.float32)


def _write_boxes(path: Path, boxes: np.ndarray) -> None:
    path.write_text("\n".join(",".join(f"{v:g}" for v in b) for b in boxes) + "\n")


def _assert_rgb(frame: np.ndarray) -> None:
    assert frame.shape == (24, 32, 3) and frame.dtype == np.uint8
    assert abs(int(frame[5, 5, 2]) - 255) <= 3 and frame[5, 5, 0] <= 3  # blue ends up in channel 2


@pytest.fixture
def got10k_root(tmp_path):
    train = tmp_path / "got10k" / "train"
    names = ["GOT-10k_Train_000001", "GOT-10k_Train_000002", "GOT-10k_Train_000003"]
    for name in names:
        seq = train / name
        _frames(seq, 20)
        boxes = _boxes(20)
        boxes[4, 2] = 0  # zero width -> not visible
        _write_boxes(seq / "groundtruth.txt", boxes)
        absence = np.zeros(20, int)
        absence[2] = 1
        cover = np.full(20, 8)
        cover[3] = 0
        (seq / "absence.label").write_text("\n".join(map(str, absence)))
        (seq / "cover.label").write_text("\n".join(map(str, cover)))
        (seq / "meta_info.ini").write_text("[METAINFO]\nresolution: (32, 24)\n")
    (train / "list.txt").write_text("\n".join(names) + "\n")
    return tmp_path / "got10k"


def test_got10k_reader(got10k_root):
    ds = build_dataset("got10k", root=str(got10k_root))
    assert len(ds) == 3 and ds.sequence_name(1) == "GOT-10k_Train_000002" and ds.is_video
    info = ds.sequence_info(0)
    assert len(info) == 20
    np.testing.assert_array_equal(np.flatnonzero(~info.visible), [2, 3, 4])  # absent, cover 0, zero width
    np.testing.assert_allclose(info.boxes[5], [6, 2, 10, 8])
    frames = ds.frames(0, [0, 19, 0])
    assert len(frames) == 3
    _assert_rgb(frames[1])


def test_got10k_split_files(got10k_root, tmp_path):
    specs = tmp_path / "data_specs"
    specs.mkdir()
    (specs / "got10k_vot_val_split.txt").write_text("2\n0\n")
    ds = build_dataset("got10k", root=str(got10k_root), subset="vot-val", split_dir=str(specs))
    assert [ds.sequence_name(i) for i in range(len(ds))] == ["GOT-10k_Train_000003", "GOT-10k_Train_000001"]
    with pytest.raises(ConfigError, match="got10k_vot_train_split.txt.*pytracking"):
        build_dataset("got10k", root=str(got10k_root), subset="vot-train")
    (specs / "bad.txt").write_text("7\n")
    with pytest.raises(ConfigError, match="outside list.txt"):
        build_dataset("got10k", root=str(got10k_root), subset="val", split_file=str(specs / "bad.txt"))
    with pytest.raises(ConfigError, match="unknown GOT-10k subset 'test'; choose from vot-train"):
        build_dataset("got10k", root=str(got10k_root), subset="test")
    with pytest.raises(ConfigError, match="unknown GOT-10k split 'vot-train'.*subset: vot-train"):
        build_dataset("got10k", root=str(got10k_root), split="vot-train")
    with pytest.raises(ConfigError, match="no GOT-10k split test under"):  # a split is a folder
        build_dataset("got10k", root=str(got10k_root), split="test")


def test_got10k_errors(tmp_path, got10k_root):
    with pytest.raises(ConfigError, match="dataset root .*missing is not a directory"):
        build_dataset("got10k", root=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no GOT-10k split train under .*train\|val\|test>/list.txt"):
        build_dataset("got10k", root=str(tmp_path / "empty"))
    ds = build_dataset("got10k", root=str(got10k_root / "train"))  # the train folder itself works too
    (got10k_root / "train" / "GOT-10k_Train_000002" / "cover.label").write_text("1\n2\n")
    with pytest.raises(ConfigError, match="cover.label: 2 labels for 20 frames"):
        ds.sequence_info(1)
    (got10k_root / "train" / "GOT-10k_Train_000003" / "00000004.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ConfigError, match="cannot read image .*00000004.jpg"):
        ds.frames(2, [3])


@pytest.fixture
def lasot_root(tmp_path):
    root = tmp_path / "lasot"
    for cls, n in (("airplane", 1), ("airplane", 2), ("bird", 3)):
        seq = root / cls / f"{cls}-{n}"
        _frames(seq / "img", 20)
        _write_boxes(seq / "groundtruth.txt", _boxes(20))
        occ = np.zeros(20, int)
        occ[0] = 1
        oov = np.zeros(20, int)
        oov[1] = 1
        (seq / "full_occlusion.txt").write_text(",".join(map(str, occ)))
        (seq / "out_of_view.txt").write_text(",".join(map(str, oov)))
        (seq / "nlp.txt").write_text("a thing")
    return root


def test_lasot_reader(lasot_root, tmp_path):
    with pytest.raises(ConfigError, match="training_set.txt or testing_set.txt"):
        build_dataset("lasot", root=str(lasot_root))
    ds = build_dataset("lasot", root=str(lasot_root), split="all")
    assert [ds.sequence_name(i) for i in range(len(ds))] == ["airplane-1", "airplane-2", "bird-3"]
    (lasot_root / "testing_set.txt").write_text("airplane-2\n")
    ds = build_dataset("lasot", root=str(lasot_root))
    assert [ds.sequence_name(i) for i in range(len(ds))] == ["airplane-1", "bird-3"]
    info = ds.sequence_info(1)
    np.testing.assert_array_equal(np.flatnonzero(~info.visible), [0, 1])
    _assert_rgb(ds.frames(1, [19])[0])
    split = tmp_path / "lasot_train.txt"
    split.write_text("bird-3\n")
    assert len(build_dataset("lasot", root=str(lasot_root), split_file=str(split))) == 1
    split.write_text("cat-1\n")
    with pytest.raises(ConfigError, match="lists cat-1 but .* has no such sequence folder"):
        build_dataset("lasot", root=str(lasot_root), split_file=str(split))


def test_trackingnet_reader(tmp_path):
    root = tmp_path / "trackingnet"
    for k, vid in ((0, "a1"), (0, "a2"), (1, "b1")):
        _frames(root / f"TRAIN_{k}" / "frames" / vid, 20, name="{}.jpg", start=0)
        (root / f"TRAIN_{k}" / "anno").mkdir(parents=True, exist_ok=True)
        boxes = _boxes(20)
        boxes[7, 3] = 0
        _write_boxes(root / f"TRAIN_{k}" / "anno" / f"{vid}.txt", boxes)
    ds = build_dataset("trackingnet", root=str(root), sets=[0, 1])
    assert open_dataset(root / "TRAIN_1").names == ["b1"]  # one chunk: the evaluation view
    assert [ds.sequence_name(i) for i in range(len(ds))] == ["TRAIN_0/a1", "TRAIN_0/a2", "TRAIN_1/b1"]
    assert np.flatnonzero(~ds.sequence_info(2).visible).tolist() == [7]
    _assert_rgb(ds.frames(2, [0])[0])  # frames are 0-based
    with pytest.raises(ConfigError, match=r"TRAIN_2/anno not found.*set 'sets'"):
        build_dataset("trackingnet", root=str(root))  # default: all twelve chunks


def test_coco_reader(tmp_path):
    root = tmp_path / "coco"
    _frames(root / "train2017", 2, name="{:012d}.jpg")
    (root / "annotations").mkdir()
    ann = {
        "images": [{"id": 1, "file_name": "000000000001.jpg"}, {"id": 2, "file_name": "000000000002.jpg"}],
        "annotations": [
            {"id": 10, "image_id": 1, "bbox": [1, 2, 5, 6], "iscrowd": 0},
            {"id": 11, "image_id": 2, "bbox": [0, 0, 30, 20], "iscrowd": 1},
            {"id": 12, "image_id": 2, "bbox": [3, 4, 7, 8], "iscrowd": 0},
        ],
    }
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(ann))
    ds = build_dataset("coco", root=str(root))
    assert len(ds) == 2 and not ds.is_video
    assert ds.sequence_name(1) == "coco_12"
    info = ds.sequence_info(1)
    assert len(info) == 1 and info.visible.all()
    np.testing.assert_allclose(info.boxes[0], [3, 4, 7, 8])
    _assert_rgb(ds.frames(1, [0, 0])[1])
    (root / "annotations" / "instances_train2017.json").write_text("{}")
    with pytest.raises(ConfigError, match="is not a COCO instances file"):
        build_dataset("coco", root=str(root))
    with pytest.raises(ConfigError, match="expected .*instances_val2017.json"):
        build_dataset("coco", root=str(root), split="val")


def test_synthetic_dataset_is_deterministic_and_rgb():
    from mfv2.synthetic import make_sequence
    from mfv2.datasets.synthetic import sequence_seed

    ds = build_dataset("synthetic", num_sequences=3, seed=5, num_frames=30, height=96, width=128)
    again = build_dataset("synthetic", num_sequences=3, seed=5, num_frames=30, height=96, width=128)
    assert len(ds) == 3
    np.testing.assert_array_equal(ds.sequence_info(2).boxes, again.sequence_info(2).boxes)
    assert not np.array_equal(ds.sequence_info(0).boxes, ds.sequence_info(1).boxes)
    clip = make_sequence(seed=sequence_seed(5, 2), num_frames=30, height=96, width=128)
    np.testing.assert_array_equal(ds.frames(2, [7])[0], clip.frame(7)[..., ::-1])  # BGR -> RGB


def test_build_dataset_checks_options():
    assert set(DATASETS.names()) >= {"got10k", "lasot", "trackingnet", "coco", "synthetic"}
    with pytest.raises(ConfigError, match="unknown option.*rooot.*valid: root"):
        build_dataset("got10k", rooot="/x")
    with pytest.raises(ConfigError, match="needs option.*root"):
        build_dataset("lasot")
    with pytest.raises(ConfigError, match="unknown dataset kind 'got10'.*did you mean got10k"):
        build_dataset("got10")


def test_datasets_pickle_for_dataloader_workers(lasot_root):
    """DataLoader workers get a copy that opens the same sequences again (readers load through closures)."""
    import pickle

    ds = build_dataset("lasot", root=str(lasot_root), split="all")
    first = ds.sequence_info(2)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.names == ds.names and copy.source == ds.source
    np.testing.assert_array_equal(copy.sequence_info(2).boxes, first.boxes)
    syn = pickle.loads(pickle.dumps(build_dataset("synthetic", num_sequences=2, seed=3, num_frames=20, height=64, width=80)))
    again = build_dataset("synthetic", num_sequences=2, seed=3, num_frames=20, height=64, width=80)
    np.testing.assert_array_equal(syn.frames(1, [5])[0], again.frames(1, [5])[0])
