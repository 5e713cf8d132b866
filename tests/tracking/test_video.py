"""Frame sources, the video sink and the ``mfv2 track`` command (torch backend on a tiny checkpoint)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mfv2.cli import main
from mfv2.errors import ConfigError
from mfv2.tracking import FrameSource, Tracker, VideoSink
from mfv2.tracking.video import natural_key

pytest.importorskip("torch")


def _write_video(path: Path, frames, fps: float = 25.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, frames[0].shape[1::-1])
    for f in frames:
        writer.write(f)
    writer.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory, synthetic_video):
    """24 synthetic frames as a folder of PNGs (names 1..24, unpadded) and as an mp4, plus the first box."""
    seq = synthetic_video
    frames = [seq.frame(i) for i in range(len(seq))]
    root = tmp_path_factory.mktemp("clip")
    folder = root / "frames"
    folder.mkdir()
    for i, f in enumerate(frames, start=1):
        cv2.imwrite(str(folder / f"{i}.png"), f)
    video = _write_video(root / "clip.mp4", frames)
    box = ",".join(f"{v:.2f}" for v in seq.boxes[0])
    return frames, folder, video, box


# ------------------------------------------------------------------------------------------- sources


def test_image_folder_is_read_in_natural_order(tmp_path):
    for i in (10, 2, 1):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), np.full((8, 8, 3), i, np.uint8))
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((8, 8), 7, np.uint8))  # "gray" sorts after "img..."
    (tmp_path / "notes.txt").write_text("not an image")
    with FrameSource(tmp_path) as source:
        assert source.kind == "images" and source.length == 4 and source.fps is None
        frames = list(source)
    assert [int(f[0, 0, 0]) for f in frames] == [7, 1, 2, 10]
    assert all(f.shape == (8, 8, 3) and f.dtype == np.uint8 for f in frames)  # grayscale read as BGR
    assert sorted(["a10", "a2", "a1"], key=natural_key) == ["a1", "a2", "a10"]


def test_single_image_and_video_sources(clip, tmp_path):
    frames, folder, video, _ = clip
    with FrameSource(folder / "3.png") as source:
        assert source.length == 1
        np.testing.assert_array_equal(next(iter(source)), frames[2])
    with FrameSource(video) as source:
        assert source.kind == "video" and source.length == len(frames) and source.fps == pytest.approx(25.0)
        read = list(source)
    assert len(read) == len(frames) and read[0].shape == frames[0].shape
    assert np.abs(read[5].astype(int) - frames[5]).mean() < 12  # lossy mp4v, same picture


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.mp4", "does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "holds no images"),
        (lambda p: (p / "bad.mp4").write_text("not a video") and p / "bad.mp4", "cannot open the video|gave no frame"),
        (lambda p: "99", "camera 99 cannot be opened"),
    ],
)
def test_unreadable_sources(tmp_path, make, message):
    with pytest.raises(ConfigError, match=message):
        FrameSource(make(tmp_path))


def test_corrupt_image_is_reported_when_reached(tmp_path):
    cv2.imwrite(str(tmp_path / "1.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "2.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ConfigError, match=r"cannot read the image .*2\.png"):
        list(FrameSource(tmp_path))


def test_video_sink_draws_and_is_atomic(clip, tmp_path):
    frames = clip[0][:6]
    out = tmp_path / "out.mp4"
    with VideoSink(out, fps=10) as sink:
        for f in frames:
            sink.write(f, (40, 30, 50, 40), 0.8)
    with FrameSource(out) as source:
        written = list(source)
    assert len(written) == 6
    edge = written[0][30, 50:80].astype(int)  # the top edge of the box is green
    assert (edge[:, 1] > 150).all() and (edge[:, 0] < 100).all() and (edge[:, 2] < 100).all()
    broken = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError), VideoSink(broken) as sink:
        sink.write(frames[0])
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == [out]  # neither the file nor its temporary
    with pytest.raises(ConfigError, match="does not exist"):
        VideoSink(tmp_path / "no" / "x.mp4")


# ------------------------------------------------------------------------------------------- mfv2 track


def _track(argv, capsys):
    code = main(["track", *map(str, argv), "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_track_writes_boxes_log_and_video(clip, tiny_checkpoint, tmp_path, capsys):
    frames, folder, _, box = clip
    out, log, video = tmp_path / "boxes.txt", tmp_path / "log.jsonl", tmp_path / "out.mp4"
    code, stdout, err = _track([folder, "--backend", "torch", "--checkpoint", tiny_checkpoint, "--init", box,
                                "--update-interval", "5", "--output", out, "--jsonl", log, "--save-video", video], capsys)
    assert code == 0, err
    assert "24 frames" in stdout and "tracker loop" in stdout
    lines = out.read_text().splitlines()
    assert len(lines) == 24 and lines[0] == box
    # the same boxes as the Python API gives
    from mfv2.runtimes import load_backend
    from mfv2.config import TrackerConfig

    tracker = Tracker(load_backend("torch", tiny_checkpoint), TrackerConfig(update_interval=5))
    tracker.init(frames[0], tuple(float(v) for v in box.split(",")))
    for frame, line in zip(frames[1:], lines[1:]):
        _, b = tracker.update(frame)
        np.testing.assert_allclose([float(v) for v in line.split(",")], b, atol=0.006)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(24))
    assert set(records[1]["ms"]) == {"crop", "preprocess", "infer", "postprocess", "template", "total"}
    assert all(0.0 <= r["score"] <= 1.0 for r in records)
    with FrameSource(video) as source:
        assert source.length == 24
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_track_a_video_with_max_frames(clip, tiny_checkpoint, tmp_path, capsys):
    _, _, video, box = clip
    out = tmp_path / "boxes.txt"
    code, _, err = _track([video, "--backend", "torch", "--checkpoint", tiny_checkpoint, "--init", box, "--max-frames", "10",
                           "--output", out], capsys)
    assert code == 0, err
    assert len(out.read_text().splitlines()) == 10


def _mixed_sizes(tmp_path: Path) -> Path:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i, shape in enumerate([(120, 160, 3)] * 3 + [(60, 80, 3)], start=1):
        cv2.imwrite(str(folder / f"{i}.png"), np.full(shape, 90, np.uint8))
    return folder


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}/missing"], "does not exist"),
        (["{tmp}/empty"], "holds no images"),
        (["{tmp}/bad.mp4"], "cannot open the video|gave no frame"),
        (["{folder}", "--init", "1,2,3"], "four comma-separated numbers"),
        (["{folder}", "--init", "1000,1000,10,10"], "outside the 160x120 frame"),
        (["{folder}", "--init", "10,10,0,5"], "width and height > 0"),
        (["{folder}", "--init", "{box}", "--update-interval", "0"], "update_interval must be >= 1"),
        (["{folder}"], "no display"),
        (["{folder}", "--init", "{box}", "--show"], "no display"),
        (["{folder}", "--init", "{box}", "--output", "{tmp}/no/boxes.txt"], "folder .* does not exist"),
        (["{folder}", "--init", "{box}", "--variant", "B"], "does not fit MixFormerV2-B"),
        (["{mixed}", "--init", "10,10,40,40", "--output", "{tmp}/boxes.txt"], "frame size changed from 160x120 to 80x60"),
    ],
)
def test_track_bad_input_is_one_line_and_exit_2(clip, tiny_checkpoint, tmp_path, capsys, args, message):
    _, folder, _, box = clip
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.mp4").write_text("not a video")
    subs = {"tmp": tmp_path, "folder": folder, "box": box, "mixed": _mixed_sizes(tmp_path)}
    argv = [a.format(**subs) for a in args]
    code, stdout, err = _track([*argv, "--backend", "torch", "--checkpoint", tiny_checkpoint], capsys)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("mfv2: error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert __import__("re").search(message, errors[0]), errors[0]
    assert not (tmp_path / "boxes.txt").exists() and not list(tmp_path.glob(".boxes*"))  # nothing half-written


def test_track_without_a_model_uses_the_demo_model(clip, tiny_checkpoint, tmp_path, capsys, caplog, monkeypatch):
    _, folder, _, box = clip
    monkeypatch.setattr("mfv2.assets.demo_checkpoint", lambda: None)
    code, _, err = _track([folder, "--backend", "torch", "--init", box], capsys)
    assert code == 2 and "the demo model is not installed; pass --model DIR or --checkpoint CK" in err

    monkeypatch.setattr("mfv2.assets.demo_checkpoint", lambda: Path(tiny_checkpoint))
    out = tmp_path / "boxes.txt"
    code, _, err = _track([folder, "--backend", "torch", "--init", box, "--output", out, "--max-frames", "5"], capsys)
    assert code == 0, err
    assert "using the demo model (" in caplog.text and "not MixFormerV2-S" in caplog.text and "tiny.pt" in caplog.text
    assert len(out.read_text().splitlines()) == 5


def test_track_model_that_is_not_an_export(clip, tmp_path, capsys):
    _, folder, _, box = clip
    code, _, err = _track([folder, "--model", tmp_path, "--init", box], capsys)
    assert code == 2 and "not an mfv2 export directory" in err


@pytest.mark.skipif(all(importlib.util.find_spec(m) is not None for m in ("tensorrt", "cuda")),
                    reason="TensorRT is installed here")
def test_track_with_a_missing_runtime_names_the_extra(clip, tmp_path, capsys):
    _, folder, _, box = clip
    code, _, err = _track([folder, "--backend", "tensorrt", "--model", tmp_path, "--init", box], capsys)
    assert code == 2 and 'pip install "mfv2[tensorrt]"' in err


def test_track_help_shows_an_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["track", "--help"])
    assert exit_info.value.code == 0
    assert "mfv2 track clip.mp4 --backend onnxruntime --model" in capsys.readouterr().out
