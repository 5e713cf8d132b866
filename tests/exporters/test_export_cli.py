"""``mfv2 export`` on the command line: user errors are one line and exit 2; a good run writes a directory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from mfv2.artifacts import load_manifest  # noqa: E402
from mfv2.cli import main  # noqa: E402
from mfv2.config import TrackerConfig  # noqa: E402


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("mfv2: error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--checkpoint", "{tmp}/missing.pth.tar"], "checkpoint {tmp}/missing.pth.tar does not exist"),
        (["--random-init", "--variant", "tiny", "--opset", "15"], "opset 15 decomposes LayerNormalization"),
        (["--random-init", "--variant", "tiny", "--opset", "11", "--allow-low-opset"], "opset 11 is outside"),
        (["--random-init", "--variant", "tiny", "--opset", "21"], "opset 21 is outside"),
        (["--random-init", "--variant", "tiny", "--precision", "fp32,fp8"], "unknown onnx precision 'fp8'"),
        (["--random-init", "--variant", "tiny", "--openvino", "bf16"], "unknown openvino precision 'bf16'"),
        (["--random-init", "--variant", "Q"], "unknown model variant 'Q'"),
        (["--random-init", "--variant", "tiny", "--batch", "0"], "batch must be a positive integer"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["export", *argv, "--output", str(tmp_path / "out")]) == 2
    assert message.replace("{tmp}", str(tmp_path)) in _error(capsys)
    assert not (tmp_path / "out").exists()


def test_not_a_checkpoint_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "model.pth.tar"
    bogus.write_bytes(b"not a checkpoint")
    assert main(["export", "--checkpoint", str(bogus), "--output", str(tmp_path / "out")]) == 2
    assert "is not a readable PyTorch checkpoint" in _error(capsys)


def test_unwritable_output_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    assert main(["export", "--random-init", "--variant", "tiny", "--output", str(tmp_path / "file" / "out")]) == 2
    assert "cannot write" in _error(capsys)
    (tmp_path / "taken").mkdir()
    assert main(["export", "--random-init", "--variant", "tiny", "--output", str(tmp_path / "taken")]) == 2
    assert "already exists; pass --overwrite" in _error(capsys)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_folder_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["export", "--random-init", "--variant", "tiny", "--output", str(locked / "out")]) == 2
    assert "is not writable" in _error(capsys)


def test_cli_export_with_batch_user_frames_and_onnxslim(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cv2 = pytest.importorskip("cv2")
    from mfv2.synthetic import make_sequence

    seq = make_sequence(num_frames=6, seed=4)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(len(seq)):
        cv2.imwrite(str(frames / f"{i:04d}.png"), seq.frame(i))
    out = tmp_path / "exp"
    argv = ["export", "--random-init", "--variant", "tiny", "--output", str(out), "--batch", "2",
            "--simplify", "onnxslim", "--calibration", str(frames), "--preset", "got10k"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert f"exported MixFormerV2-tiny to {out}" in stdout and "search_decoder.onnx" in stdout
    m = load_manifest(out)
    assert m.batch == 2 and m.tracker == TrackerConfig.preset("got10k", "tiny") and "onnxslim" in m.toolkit
    assert m.find("search_decoder").inputs["kv"][2] == 2
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.zeros(i.shape, np.float32) for i in sess.get_inputs()}
    boxes, score = sess.run(None, feeds)
    assert boxes.shape == (2, 4) and score.shape == (2,)
    # A second run refuses the directory, --overwrite replaces it.
    assert main(argv) == 2
    assert "already exists" in _error(capsys)
    (out / "stale.txt").write_text("old")
    assert main([*argv, "--overwrite"]) == 0
    assert not (out / "stale.txt").exists() and (out / "manifest.json").is_file()
