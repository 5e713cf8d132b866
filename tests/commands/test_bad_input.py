"""Hostile and broken inputs (issue #18): every case here must keep failing cleanly, or the build fails.

Crafted checkpoints that would run code, manifests that reach outside their folder or name replaced
graphs, unwritable outputs, binary text files, signals during an export, tiny frames, and no network
from any backend. The cases that already behaved are kept here too, so they stay that way.
"""

from __future__ import annotations

import io
import json
import operator
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mfv2.artifacts import MANIFEST_NAME  # noqa: E402
from mfv2.cli import main  # noqa: E402
from mfv2.errors import ConfigError, ShapeError  # noqa: E402
from mfv2.fileio import check_output_dir, check_output_file  # noqa: E402
from mfv2.models import build_model, read_checkpoint  # noqa: E402

HAS_OPENVINO = __import__("importlib.util").util.find_spec("openvino") is not None
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
UNWRITABLE = Path("/sys")  # creating a file there fails for every user, root included (sysfs)
REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def sd(tiny_model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in tiny_model.state_dict().items()}


@pytest.fixture(scope="module")
def export_dir(tiny_export) -> Path:
    """The session's seed-0 tiny export (conftest.py); tests that edit it work on ``export_copy``."""
    return tiny_export


@pytest.fixture()
def export_copy(export_dir, tmp_path) -> Path:
    d = tmp_path / "copy"
    shutil.copytree(export_dir, d)
    return d


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory) -> Path:
    """Eight 96x80 frames with a bright square drifting right."""
    import cv2

    d = tmp_path_factory.mktemp("frames")
    for i in range(8):
        img = np.full((80, 96, 3), 40, np.uint8)
        img[30:50, 20 + 2 * i : 40 + 2 * i] = (40, 200, 240)
        cv2.imwrite(str(d / f"{i:04d}.png"), img)
    return d


def _one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mfv2: error: "), err
    for w in words:
        assert w in err[0], (w, err[0])
    return err[0]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------- crafted checkpoints


class _Touch:
    """Pickles to ``open(path, 'w')``: a loader that runs pickled code creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class _System:
    """Pickles to ``os.system('touch marker')``, the form of issue #18."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _MagicAfterTouch:
    """Pickles to ``(open(marker), MAGIC_NUMBER)[1]``: runs the payload, then yields torch's legacy magic number."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        from torch.serialization import MAGIC_NUMBER

        return (operator.getitem, ((_Touch(self.marker), MAGIC_NUMBER), 1))


def _stock_pickle(path: Path, marker: Path, sd) -> None:
    with open(path, "wb") as f:
        pickle.dump({"net": sd, "settings": _Touch(marker)}, f)


def _stock_pickle_os_system(path: Path, marker: Path, sd) -> None:
    with open(path, "wb") as f:
        pickle.dump(_System(marker), f)


def _legacy_with_payload(path: Path, marker: Path, sd) -> None:
    torch.save({"net": sd, "settings": _Touch(marker)}, path, _use_new_zipfile_serialization=False)


def _legacy_header_payload(path: Path, marker: Path, sd) -> None:
    """The legacy file of valid weights whose first pickle (the magic number) runs the payload (issue #18)."""
    buf = io.BytesIO()
    torch.save({"net": sd}, buf, _use_new_zipfile_serialization=False)
    from torch.serialization import MAGIC_NUMBER

    magic = pickle.dumps(MAGIC_NUMBER, protocol=2)
    data = buf.getvalue()
    assert data.startswith(magic)
    path.write_bytes(pickle.dumps(_MagicAfterTouch(marker), protocol=2) + data[len(magic):])


def _zip_payload_only(path: Path, marker: Path, sd) -> None:
    torch.save(_Touch(marker), path)


def _zip_nested_in_training_checkpoint(path: Path, marker: Path, sd) -> None:
    torch.save({"epoch": 3, "net_type": "MixFormer", "net": sd, "stats": {"train": [_Touch(marker)]}}, path)


def _legacy_nested_in_training_checkpoint(path: Path, marker: Path, sd) -> None:
    torch.save({"epoch": 3, "net": sd, "stats": {"train": [_Touch(marker)]}}, path, _use_new_zipfile_serialization=False)


def _tar_archive(path: Path, marker: Path, sd) -> None:
    """PyTorch's pre-1.0 ``.pth.tar`` tar format, its 'storages' member a pickle that runs the payload."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, obj in (("sys_info", {"protocol_version": 1001}), ("storages", _Touch(marker)),
                          ("tensors", 0), ("pickle", {"net": {}})):
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# form -> (writer, loads with the weights intact?)
CRAFTED = {
    "stock-pickle": (_stock_pickle, False),
    "stock-pickle-os-system": (_stock_pickle_os_system, False),
    "torch-legacy": (_legacy_with_payload, True),
    "torch-legacy-header": (_legacy_header_payload, False),
    "torch-zip": (_zip_payload_only, False),
    "zip-training-checkpoint": (_zip_nested_in_training_checkpoint, True),
    "legacy-training-checkpoint": (_legacy_nested_in_training_checkpoint, True),
    "pth-tar-archive": (_tar_archive, False),
}


@pytest.mark.parametrize("form", list(CRAFTED))
def test_crafted_checkpoint_runs_no_code(form, tmp_path, sd, tiny_model):
    write, loads = CRAFTED[form]
    marker = tmp_path / "pwned"
    path = tmp_path / "crafted.pth.tar"
    write(path, marker, sd)
    if loads:  # the payload sits beside valid weights: they load, the payload stays inert
        model = build_model(None, path)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    else:
        with pytest.raises(ConfigError, match=str(path.name)):
            read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "form", ["stock-pickle", "stock-pickle-os-system", "torch-legacy-header", "zip-training-checkpoint", "pth-tar-archive"]
)
def test_crafted_payloads_are_real(form, tmp_path, sd):
    """Guards the test above: each crafted file does run its payload under a naive ``torch.load``."""
    write, _ = CRAFTED[form]
    marker = tmp_path / "pwned"
    write(tmp_path / "f", marker, sd)
    try:
        torch.load(tmp_path / "f", weights_only=False)
    except Exception:  # the stock pickle and tar files are no valid torch files beyond the payload
        pass
    assert marker.exists()


def test_legacy_header_variant_gives_valid_weights_to_a_naive_loader(tmp_path, sd):
    """The worst form of issue #18: a naive loader runs the payload and still gets the right weights."""
    marker = tmp_path / "pwned"
    _legacy_header_payload(tmp_path / "f", marker, sd)
    obj = torch.load(tmp_path / "f", weights_only=False)
    assert marker.exists() and torch.equal(obj["net"]["box_head.layers.1.0.weight"], sd["box_head.layers.1.0.weight"])


def test_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    with pytest.raises(ConfigError, match="TorchScript archive"):
        read_checkpoint(path)


@pytest.mark.parametrize("form", ["stock-pickle-os-system", "torch-legacy-header"])
@pytest.mark.parametrize("entry", ["convert", "export", "track-torch", "distill-teacher"])
def test_every_checkpoint_entry_point_refuses_a_crafted_file(entry, form, tmp_path, sd, frames_dir, capsys):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pth.tar"
    CRAFTED[form][0](path, marker, sd)
    if entry == "distill-teacher":
        from mfv2.models.mixformerv2.mixvit import load_mixvit_state

        with pytest.raises(ConfigError, match="not a torch.save file"):
            load_mixvit_state(path)
    else:
        argv = {
            "convert": ["convert", str(path), str(tmp_path / "out.pt")],
            "export": ["export", "--checkpoint", str(path), "--output", str(tmp_path / "exp")],
            "track-torch": ["track", str(frames_dir), "--backend", "torch", "--checkpoint", str(path), "--init", "20,30,20,20"],
        }[entry]
        assert main(argv) == 2
        _one_line_error(capsys, "evil.pth.tar", "not a torch.save file")
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"\x80\x02", b"PK\x03\x04 truncated zip", os.urandom(512), b'{"net": {}}'],
    ids=["empty", "truncated-pickle", "truncated-zip", "random", "json"],
)
def test_broken_checkpoints_are_one_line_errors(content, tmp_path, capsys):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    assert main(["convert", str(path), str(tmp_path / "out.pt")]) == 2
    _one_line_error(capsys, str(path))
    assert not (tmp_path / "out.pt").exists()


def test_truncated_real_checkpoint_and_wrong_variant(tmp_path, sd):
    path = tmp_path / "ok.pth.tar"
    torch.save({"net": sd}, path)
    cut = tmp_path / "cut.pth.tar"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ConfigError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(cut)
    with pytest.raises(ConfigError, match="does not fit MixFormerV2-S"):
        build_model("S", path)


# ------------------------------------------------------------------------------------ manifests


def _edit_manifest(d: Path, graph: str, **changes: object) -> None:
    data = json.loads((d / MANIFEST_NAME).read_text())
    for a in data["artifacts"]:
        if a["graph"] == graph and a["format"] == "onnx":
            a.update(changes)
    (d / MANIFEST_NAME).write_text(json.dumps(data))


def _onnx_only(d: Path) -> None:
    """Drop the OpenVINO artifacts so that every backend choice below reads the ONNX entries."""
    data = json.loads((d / MANIFEST_NAME).read_text())
    data["artifacts"] = [a for a in data["artifacts"] if a["format"] == "onnx"]
    (d / MANIFEST_NAME).write_text(json.dumps(data))


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "../other/model.onnx", "sub/../../x.onnx"])
def test_manifest_names_outside_the_folder_are_refused(name, export_copy, tmp_path):
    from mfv2.runtimes import load_backend

    other = tmp_path / "other"
    shutil.copytree(export_copy, other)
    _onnx_only(export_copy)
    _edit_manifest(export_copy, "full", file=name)
    with pytest.raises(ConfigError, match="not inside the export directory"):
        load_backend("onnxruntime", export_copy, graph="full")
    with pytest.raises(ConfigError, match="not inside the export directory"):  # the opt-out does not lift it
        load_backend("onnxruntime", export_copy, graph="full", verify_hashes=False)


def test_symlink_out_of_the_folder_is_refused(export_copy, tmp_path, frames_dir, capsys):
    from mfv2.runtimes import load_backend

    other = tmp_path / "elsewhere"
    shutil.copytree(export_copy, other)
    _onnx_only(export_copy)
    (export_copy / "search_decoder.onnx").unlink()
    (export_copy / "search_decoder.onnx").symlink_to(other / "search_decoder.onnx")
    with pytest.raises(ConfigError, match="outside the export directory"):
        load_backend("onnxruntime", export_copy, graph="split", verify_hashes=False)
    assert main(["track", str(frames_dir), "--model", str(export_copy), "--graph", "split", "--init", "20,30,20,20"]) == 2
    _one_line_error(capsys, "search_decoder.onnx", "outside the export directory")
    # A link that stays inside the folder is fine.
    (export_copy / "search_decoder.onnx").unlink()
    shutil.copy(other / "search_decoder.onnx", export_copy / "real.onnx")
    (export_copy / "search_decoder.onnx").symlink_to("real.onnx")
    load_backend("onnxruntime", export_copy, graph="split").close()


def _perturb_onnx(path: Path) -> None:
    """Rewrite ``path`` as a same-shaped model with other weights (a replaced graph)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(init).copy()
    init.CopyFrom(numpy_helper.from_array(arr + 0.5, init.name))
    onnx.save(model, str(path))


def test_replaced_graph_fails_its_hash_and_the_opt_out_loads_it(export_copy, frames_dir, tmp_path, capsys):
    from mfv2.runtimes import load_backend

    _onnx_only(export_copy)
    _perturb_onnx(export_copy / "model.onnx")
    with pytest.raises(ConfigError, match=r"model\.onnx does not match the SHA-256"):
        load_backend("onnxruntime", export_copy, graph="full")
    argv = ["track", str(frames_dir), "--model", str(export_copy), "--graph", "full", "--init", "20,30,20,20"]
    assert main(argv) == 2
    _one_line_error(capsys, "model.onnx", "SHA-256", "--no-verify")
    out = tmp_path / "boxes.txt"
    assert main([*argv, "--no-verify", "--output", str(out), "--no-progress"]) == 0
    assert len(out.read_text().splitlines()) == 8


@pytest.mark.openvino
@pytest.mark.skipif(not HAS_OPENVINO, reason="OpenVINO is not installed")
def test_replaced_openvino_weights_fail_their_hash(export_copy):
    from mfv2.runtimes import load_backend

    data = bytearray((export_copy / "model.bin").read_bytes())
    data[-1] ^= 0xFF
    (export_copy / "model.bin").write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"model\.bin does not match the SHA-256"):
        load_backend("openvino", export_copy, graph="full")


@pytest.mark.parametrize("damage", ["empty-folder", "no-manifest", "truncated-manifest", "truncated-graph", "missing-graph"])
def test_broken_exports_are_one_line_errors(damage, export_copy, frames_dir, capsys):
    _onnx_only(export_copy)
    if damage == "empty-folder":
        shutil.rmtree(export_copy)
        export_copy.mkdir()
    elif damage == "no-manifest":
        (export_copy / MANIFEST_NAME).unlink()
    elif damage == "truncated-manifest":
        text = (export_copy / MANIFEST_NAME).read_text()
        (export_copy / MANIFEST_NAME).write_text(text[: len(text) // 2])
    elif damage == "truncated-graph":
        data = (export_copy / "model.onnx").read_bytes()
        (export_copy / "model.onnx").write_bytes(data[: len(data) // 2])
    else:
        (export_copy / "model.onnx").unlink()
    # A named path: backend auto may have cached a pick whose files are intact and never load this one.
    argv = ["track", str(frames_dir), "--model", str(export_copy), "--backend", "onnxruntime", "--graph", "full",
            "--init", "20,30,20,20"]  # fmt: skip
    assert main(argv) == 2
    _one_line_error(capsys)
    assert main([*argv, "--no-verify"]) == 2  # without the hash check the damage is still caught
    _one_line_error(capsys)


def test_tracker_create_without_a_model_is_a_config_error():
    from mfv2.tracking import Tracker

    for backend in ("onnxruntime", "torch"):
        with pytest.raises(ConfigError, match="needs a model"):
            Tracker.create(backend)
    from mfv2.runtimes import load_backend

    with pytest.raises(ConfigError, match="export directory"):
        load_backend("onnxruntime", None)


# --------------------------------------------------------------------------------------- outputs


def _unwritable_folder(tmp_path: Path, kind: str) -> Path:
    if kind == "sysfs":
        return UNWRITABLE
    if IS_ROOT:
        pytest.skip("root writes into a mode-555 folder; the sysfs case covers root")
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    return d


@pytest.mark.parametrize("kind", ["sysfs", "mode-555"])
def test_check_output_refuses_unwritable_folders(kind, tmp_path):
    folder = _unwritable_folder(tmp_path, kind)
    with pytest.raises(ConfigError, match=f"cannot write {folder}"):
        check_output_file(folder / "boxes.txt")
    with pytest.raises(ConfigError, match="cannot write"):
        check_output_dir(folder / "results")
    with pytest.raises(ConfigError, match="it is a folder"):
        check_output_file(tmp_path)


def test_read_only_filesystem_is_a_one_line_error(tmp_path, monkeypatch):
    """EROFS (a read-only mount) reported by the OS, injected at os.open and os.replace."""
    import errno

    import mfv2.fileio as fileio

    real_open, real_replace = os.open, os.replace

    def ro_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(tmp_path)) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    def ro_replace(src, dst, *args, **kwargs):
        if str(dst).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(src), None, str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(fileio.os, "open", ro_open)
    with pytest.raises(ConfigError, match="Read-only file system"):
        check_output_file(tmp_path / "x.jsonl")
    monkeypatch.setattr(fileio.os, "open", real_open)
    monkeypatch.setattr(fileio.os, "replace", ro_replace)
    with pytest.raises(ConfigError, match=r"cannot write .*x\.json: Read-only file system"):
        fileio.atomic_write_text(tmp_path / "x.json", "{}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--output", "--jsonl", "--save-video"])
@pytest.mark.parametrize("target", ["folder", "unwritable", "missing-folder"])
def test_track_outputs_are_checked_before_loading(flag, target, tmp_path, frames_dir, export_dir, capsys, monkeypatch):
    import mfv2.runtimes

    calls = []
    monkeypatch.setattr(mfv2.runtimes, "load_backend", lambda *a, **k: calls.append(a))
    path = {"folder": tmp_path, "unwritable": UNWRITABLE / "boxes.txt", "missing-folder": tmp_path / "no" / "b.txt"}[target]
    assert main(["track", str(frames_dir), "--model", str(export_dir), "--init", "20,30,20,20", flag, str(path)]) == 2
    _one_line_error(capsys, "cannot write")
    assert calls == [] and _leftovers(tmp_path) == []


def test_track_jsonl_on_a_read_only_filesystem(tmp_path, frames_dir, export_dir, capsys, monkeypatch):
    import errno

    import mfv2.fileio as fileio

    real_open = os.open

    def ro_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(tmp_path)) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(fileio.os, "open", ro_open)
    argv = ["track", str(frames_dir), "--model", str(export_dir), "--init", "20,30,20,20", "--jsonl", str(tmp_path / "l.jsonl")]
    assert main(argv) == 2
    _one_line_error(capsys, "l.jsonl", "Read-only file system")


@pytest.mark.parametrize("argv", [["train", "--config", "tiny_synthetic"], ["distill", "--route", "demo_s"]])
def test_training_run_folders_are_checked_first(argv, capsys):
    assert main([*argv, "--output", str(UNWRITABLE / "run")]) == 2
    _one_line_error(capsys, "cannot write")


def test_track_refuses_one_file_for_two_outputs_or_the_source(tmp_path, frames_dir, export_dir, capsys):
    base = ["track", str(frames_dir), "--model", str(export_dir), "--init", "20,30,20,20"]
    same = tmp_path / "x.txt"
    assert main([*base, "--output", str(same), "--jsonl", str(same)]) == 2
    _one_line_error(capsys, "--jsonl", "same file as --output")
    frame = next(frames_dir.iterdir())
    assert main(["track", str(frame), "--model", str(export_dir), "--init", "20,30,20,20", "--output", str(frame)]) == 2
    _one_line_error(capsys, "same file as SRC")
    assert not same.exists() and _leftovers(tmp_path) == []


def test_track_writes_outputs_atomically_with_unique_temp_names(tmp_path, frames_dir, export_dir):
    boxes, log = tmp_path / "b.txt", tmp_path / "l.jsonl"
    argv = ["track", str(frames_dir), "--model", str(export_dir), "--init", "20,30,20,20", "--no-progress"]
    assert main([*argv, "--output", str(boxes), "--jsonl", str(log)]) == 0
    assert len(boxes.read_text().splitlines()) == 8 and len(log.read_text().splitlines()) == 8
    assert all(json.loads(line)["frame"] == i for i, line in enumerate(log.read_text().splitlines()))
    assert _leftovers(tmp_path) == []
    from mfv2.fileio import PendingFile

    a, b = PendingFile(tmp_path / "same"), PendingFile(tmp_path / "same")
    assert a.tmp != b.tmp
    a.discard(), b.discard()


@pytest.mark.parametrize("target", ["folder", "unwritable"])
def test_convert_output_is_checked_before_reading(target, tmp_path, sd, capsys):
    src = tmp_path / "ok.pth.tar"
    torch.save({"net": sd}, src)
    out = tmp_path if target == "folder" else UNWRITABLE / "x.pt"
    assert main(["convert", str(src), str(out)]) == 2
    _one_line_error(capsys, "cannot write")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("target", ["file", "unwritable"])
def test_synth_output_is_checked_before_rendering(target, tmp_path, capsys):
    out = tmp_path / "f.txt" if target == "file" else UNWRITABLE / "synth"
    if target == "file":
        out.write_text("x")
    assert main(["synth", str(out), "--frames", "2", "--size", "64x48"]) == 2
    _one_line_error(capsys, "cannot write")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    from mfv2.datasets.synthetic import write_benchmark

    return write_benchmark(tmp_path_factory.mktemp("ds") / "bench", num_sequences=1, num_frames=4, height=64, width=80)


@pytest.mark.parametrize("flag", ["--results", "--json", "--plot"])
def test_eval_outputs_are_checked_before_tracking(flag, tiny_dataset, tmp_path, capsys):
    res = tmp_path / "res"
    argv = ["eval", str(tiny_dataset), "--baseline", "static", "--no-progress"]
    if flag == "--results":
        argv += ["--results", str(UNWRITABLE / "res")]
    else:
        argv += ["--results", str(res), flag, str(tmp_path) if flag == "--json" else str(UNWRITABLE / "plot.png")]
    assert main(argv) == 2
    _one_line_error(capsys, "cannot write")
    assert not res.exists()  # nothing was tracked


# ------------------------------------------------------------------------------------- text files


def test_binary_annotation_and_result_files(tiny_dataset, tmp_path, capsys):
    from mfv2.datasets import open_dataset, read_boxes

    bad = tmp_path / "bench"
    shutil.copytree(tiny_dataset, bad)
    gt = next(bad.rglob("groundtruth.txt"))
    gt.write_bytes(b"\xff\xfe\x00\x81binary\x00")
    with pytest.raises(ConfigError, match="is not a text file"):
        open_dataset(bad)[0]
    results = tmp_path / "res.txt"
    results.write_bytes(os.urandom(64) + b"\xff")
    with pytest.raises(ConfigError, match="is not a text file"):
        read_boxes(results)
    res_dir = tmp_path / "res"
    res_dir.mkdir()
    (res_dir / f"{open_dataset(tiny_dataset)[0].name}.txt").write_bytes(b"\x00\xff\xfe\xfa")
    assert main(["eval", str(tiny_dataset), "--no-run", "--results", str(res_dir)]) == 2
    _one_line_error(capsys, "no complete result")  # a binary result counts as unfinished (resume re-tracks it)
    assert main(["eval", str(bad), "--no-run", "--results", str(res_dir)]) == 2
    _one_line_error(capsys, "groundtruth.txt", "is not a text file")


# ----------------------------------------------------------------------------------------- signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_export_leaves_nothing(sig, tmp_path):
    out = tmp_path / "exp"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mfv2", "-q", "export", "--random-init", "--variant", "tiny", "--output", str(out),
         "--simplify", "none"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(".exp.") for p in tmp_path.iterdir()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the export never started"
            time.sleep(0.02)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == {signal.SIGTERM: 143, signal.SIGINT: 130}[sig], err.decode()[-2000:]
    assert b"Traceback" not in err, err.decode()[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "partial export left behind"


# ------------------------------------------------------------------------------------------ frames


@pytest.fixture(scope="module")
def torch_runner(tiny_model):
    from mfv2.runtimes import load_backend

    with load_backend("torch", tiny_model) as runner:
        yield runner


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 40), (9, 9), (10, 10)])
def test_frames_smaller_than_the_clip_margin_keep_the_box_inside(size, torch_runner):
    from mfv2.tracking import Tracker

    h, w = size
    rng = np.random.default_rng(0)
    tracker = Tracker(torch_runner)
    tracker.init(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (0, 0, w, h))
    for _ in range(4):
        ok, (x, y, bw, bh) = tracker.update(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        assert 0 <= x and 0 <= y and bw > 0 and bh > 0 and x + bw <= w + 1e-9 and y + bh <= h + 1e-9, (x, y, bw, bh)


def test_clip_box_is_the_official_one_on_normal_frames():
    from mfv2.geometry.boxes import clip_box

    assert clip_box((-5, -5, 3, 3), 1, 1) == (0.0, 0.0, 1.0, 1.0)
    assert clip_box((600, 400, 80, 90), 480, 640) == (600.0, 400.0, 40.0, 80.0)
    assert clip_box((700, 500, 30, 30), 480, 640) == (630.0, 470.0, 10.0, 10.0)
    assert clip_box((-30, 20, 20, 40), 480, 640) == (0.0, 20.0, 10.0, 40.0)
    assert clip_box((4, 2, 20, 30), 6, 640) == (4.0, 0.0, 20.0, 6.0)


@pytest.mark.parametrize(
    "frame, error",
    [(np.zeros((32, 32), np.uint8), None), (np.zeros((32, 32, 4), np.uint8), None),
     (np.zeros((32, 32, 3), np.uint16), ShapeError), (np.zeros((0, 32, 3), np.uint8), ShapeError),
     (np.zeros((32, 32, 2), np.uint8), ShapeError)],
    ids=["gray", "bgra", "16-bit", "empty", "two-channel"],
)
def test_frame_kinds(frame, error, torch_runner):
    from mfv2.tracking import Tracker

    tracker = Tracker(torch_runner)
    if error is None:
        tracker.init(frame, (4, 4, 10, 10))
        assert tracker.update(frame)[1] is not None
        with pytest.raises(ShapeError, match="frame size changed"):
            tracker.update(np.zeros((40, 32, 3), np.uint8))
    else:
        with pytest.raises(error):
            tracker.init(frame, (4, 4, 10, 10))


@pytest.mark.parametrize("init", ["1,2,3", "a,b,c,d", "0,0,0,10", "nan,0,10,10", "500,500,10,10", "-50,-50,10,10"])
def test_bad_init_boxes(init, frames_dir, export_dir, capsys):
    assert main(["track", str(frames_dir), "--model", str(export_dir), f"--init={init}"]) == 2
    _one_line_error(capsys)


def test_text_named_mp4(export_dir, tmp_path, capsys):
    fake = tmp_path / "clip.mp4"
    fake.write_text("not a video")
    assert main(["track", str(fake), "--model", str(export_dir), "--init", "1,1,5,5"]) == 2
    _one_line_error(capsys, "clip.mp4")


# ----------------------------------------------------------------------------------------- network


_NO_NETWORK = textwrap.dedent(
    """
    import socket, sys, threading, time
    calls = []
    def deny(*args, **kwargs):
        calls.append(repr(args[:2]))
        raise OSError("network access attempted")
    socket.getaddrinfo = deny
    socket.socket.connect = lambda self, *a: deny(*a)
    socket.socket.connect_ex = lambda self, *a: deny(*a)
    socket.create_connection = deny
    import mfv2.runtimes.torch_backend, mfv2.runtimes.onnxruntime_backend, mfv2.runtimes.tensorrt_backend
    import mfv2.runtimes.openvino_backend, mfv2.exporters.openvino
    from mfv2.runtimes import load_backend
    export = sys.argv[1]
    for name in sys.argv[2:]:
        with load_backend(name, export, graph="full") as runner:
            pass
    if "openvino" in sys.argv[2:]:
        mfv2.exporters.openvino.compile_ir(export + "/model.xml")
        from mfv2._openvino import import_nncf
        import_nncf()  # NNCF has telemetry of its own, through the same package
    time.sleep(0.5)  # telemetry sends from a background thread
    print("CALLS", calls, "THREADS", [t.name for t in threading.enumerate() if t is not threading.main_thread()])
    """
)


def test_backends_open_no_network_connection(export_dir, tmp_path):
    backends = ["onnxruntime", *(["openvino"] if HAS_OPENVINO else [])]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}  # no telemetry consent file in HOME
    result = subprocess.run([sys.executable, "-c", _NO_NETWORK, str(export_dir), *backends], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("CALLS"))
    assert line == "CALLS [] THREADS []", line
    assert not (tmp_path / "intel").exists()  # nor does OpenVINO's telemetry write its client id


@pytest.mark.openvino
@pytest.mark.skipif(not HAS_OPENVINO, reason="OpenVINO is not installed")
def test_telemetry_loaded_before_mfv2_is_silenced(tmp_path):
    code = textwrap.dedent(
        """
        import socket
        def deny(*args, **kwargs):
            raise OSError("network access attempted")
        socket.getaddrinfo = deny
        socket.socket.connect = lambda self, *a: deny(*a)
        import openvino_telemetry as tm
        from mfv2._openvino import import_openvino
        ov = import_openvino()
        t = tm.Telemetry(app_name="x", app_version="1", tid="G-0", backend="ga4", enable_opt_in_dialog=False)
        t.init(app_name="y", app_version="1", tid="G-0", backend="ga4", enable_opt_in_dialog=False)
        print("CONSENT", t.consent, t.send_event("a", "b", "c"))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert "CONSENT False None" in result.stdout, result.stdout + result.stderr[-2000:]


# ------------------------------------------------------------------------------------ source scan


def _calls(tree):
    import ast

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f"{getattr(f.value, 'id', '?')}.{f.attr}" if isinstance(f, ast.Attribute) else "?"
            yield name, node


def test_no_unsafe_loader_or_shell_anywhere_in_the_package():
    """The restricted unpickler is the only pickle loader; no eval/exec, shell=True or unsafe YAML."""
    import ast

    found = []
    for path in sorted((REPO / "mfv2").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for name, call in _calls(ast.parse(path.read_text(), rel)):
            kw = {k.arg: k.value for k in call.keywords}
            unsafe = (
                name in ("eval", "exec", "pickle.load", "pickle.loads", "marshal.loads", "dill.load", "joblib.load")
                or name == "pickle.Unpickler"
                or (name == "yaml.load" and "Loader" not in kw)
                or ("shell" in kw and not (isinstance(kw["shell"], ast.Constant) and kw["shell"].value is False))
                or (name == "torch.load" and not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value)
                    and not (rel == "mfv2/models/checkpoint.py" and "pickle_module" in kw))
                or (name == "torch.jit.load" or name == "jit.load")
            )
            if unsafe:
                found.append(f"{rel}:{call.lineno} {name}")
    assert found == []
