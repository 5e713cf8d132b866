"""Atomic writes: the target appears only on success, failures leave the old target and no temporary files;
and the shared file helpers sha256, read_json, cache_dir."""

from __future__ import annotations

import hashlib
import os

import pytest

from mfv2.bench import report
from mfv2.errors import ConfigError
from mfv2.fileio import atomic_dir, atomic_path, atomic_write_bytes, atomic_write_text, cache_dir, read_json, sha256


class Boom(Exception):
    pass


def test_atomic_path_publishes_only_when_the_block_ends(tmp_path):
    target = tmp_path / "model.onnx"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".model.onnx.") and tmp.suffix == ".tmp"
        tmp.write_bytes(b"new")
        assert not target.exists()
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["model.onnx"]


@pytest.mark.parametrize("previous", [None, b"old"])
def test_atomic_path_failure_keeps_the_previous_target_and_no_temp(tmp_path, previous):
    target = tmp_path / "ckpt.pth"
    if previous is not None:
        target.write_bytes(previous)
    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise Boom
    assert (target.read_bytes() if target.exists() else None) == previous
    assert sorted(os.listdir(tmp_path)) == ([] if previous is None else ["ckpt.pth"])


def test_atomic_path_writer_that_writes_nothing_fails(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "out.bin"):
        pass
    assert os.listdir(tmp_path) == []


def test_atomic_path_keeps_the_suffix_and_moves_sidecars_first(tmp_path):
    xml = tmp_path / "model.fp16.xml"
    with atomic_path(xml, suffix=".xml", sidecars=(".bin",)) as tmp:
        assert tmp.suffix == ".xml" and tmp.parent == tmp_path
        tmp.with_suffix(".bin").write_bytes(b"weights")
        tmp.write_text("<net/>")
    assert xml.read_text() == "<net/>"
    assert (tmp_path / "model.fp16.bin").read_bytes() == b"weights"
    assert sorted(os.listdir(tmp_path)) == ["model.fp16.bin", "model.fp16.xml"]


def test_atomic_path_failure_removes_sidecars(tmp_path):
    xml = tmp_path / "model.xml"
    with pytest.raises(Boom), atomic_path(xml, suffix=".xml", sidecars=(".bin",)) as tmp:
        tmp.with_suffix(".bin").write_bytes(b"weights")
        tmp.write_text("<net/>")
        raise Boom
    assert os.listdir(tmp_path) == []


def test_two_temp_names_for_one_target_differ(tmp_path):
    with atomic_path(tmp_path / "a") as t1, atomic_path(tmp_path / "a") as t2:
        assert t1 != t2
        t1.write_text("1")
        t2.write_text("2")
    assert (tmp_path / "a").read_text() == "1"  # the outer block ends last


def test_write_bytes_and_text_create_the_folder_and_replace(tmp_path):
    path = tmp_path / "sub" / "dir" / "r.json"
    assert atomic_write_text(path, "{}\n") == path
    assert path.read_text() == "{}\n"
    assert atomic_write_bytes(path, memoryview(b"\x00\x01")) == path
    assert path.read_bytes() == b"\x00\x01"
    assert os.listdir(path.parent) == ["r.json"]


def test_report_keeps_the_old_names():
    assert report.atomic_write_text is atomic_write_text and report.atomic_write_bytes is atomic_write_bytes


def _fill(folder, name, text):
    (folder / name).write_text(text)


def test_atomic_dir_creates_then_refuses_a_non_empty_folder_without_overwrite(tmp_path):
    out = tmp_path / "parent" / "out"
    with atomic_dir(out, overwrite=False) as tmp:
        assert tmp.parent == out.parent and not out.exists()
        _fill(tmp, "a.txt", "1")
    assert os.listdir(out) == ["a.txt"]
    with pytest.raises(ConfigError, match="exists and is not empty; pass overwrite=True"):
        with atomic_dir(out, overwrite=False):
            pytest.fail("the block must not run")
    assert os.listdir(out) == ["a.txt"] and os.listdir(out.parent) == ["out"]


def test_atomic_dir_fills_an_existing_empty_folder_without_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with atomic_dir(out, overwrite=False) as tmp:
        _fill(tmp, "a.txt", "1")
    assert os.listdir(out) == ["a.txt"]


def test_atomic_dir_refuses_a_file(tmp_path):
    out = tmp_path / "out"
    out.write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        with atomic_dir(out, overwrite=True):
            pytest.fail("the block must not run")


def test_atomic_dir_overwrite_replaces_the_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    _fill(out, "old.txt", "old")
    with atomic_dir(out, overwrite=True) as tmp:
        _fill(tmp, "new.txt", "new")
        assert (out / "old.txt").read_text() == "old"  # untouched until the block ends
    assert os.listdir(out) == ["new.txt"]
    assert os.listdir(tmp_path) == ["out"]


def test_atomic_dir_failure_in_the_block_keeps_the_old_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    _fill(out, "old.txt", "old")
    with pytest.raises(Boom), atomic_dir(out, overwrite=True) as tmp:
        _fill(tmp, "new.txt", "new")
        raise Boom
    assert os.listdir(out) == ["old.txt"]
    assert os.listdir(tmp_path) == ["out"]


def test_atomic_dir_failed_swap_restores_the_old_folder(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    _fill(out, "old.txt", "old")
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the new folder moving into place
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk gone"), atomic_dir(out, overwrite=True) as tmp:
        _fill(tmp, "new.txt", "new")
    assert len(calls) == 3  # aside, (failed) into place, back
    assert os.listdir(out) == ["old.txt"]
    assert os.listdir(tmp_path) == ["out"]


def test_sha256_of_a_file_read_in_chunks(tmp_path):
    data = os.urandom((1 << 20) + 123)  # more than one 1 MiB chunk
    (tmp_path / "blob").write_bytes(data)
    assert sha256(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256(str(tmp_path / "empty")) == hashlib.sha256(b"").hexdigest()


def test_read_json_errors_are_one_line_naming_the_file_and_the_fix(tmp_path):
    good = tmp_path / "good.json"
    good.write_text('{"a": [1, 2]}')
    assert read_json(good, "report", "pass a report") == {"a": [1, 2]}
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "folder.json").mkdir()
    cases = {"missing.json": "does not exist", "bad.json": "is not valid JSON", "binary.json": "is not valid JSON",
             "folder.json": "is a folder"}  # fmt: skip
    for name, problem in cases.items():
        with pytest.raises(ConfigError) as info:
            read_json(tmp_path / name, "engine sidecar", "rebuild it with: mfv2 build-engine DIR")
        message = str(info.value)
        assert message.startswith(f"engine sidecar {tmp_path / name} {problem}"), message
        assert message.endswith("; rebuild it with: mfv2 build-engine DIR") and "\n" not in message


def test_cache_dir_from_the_environment_or_home(monkeypatch, tmp_path):
    monkeypatch.setenv("MFV2_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and cache_dir("bench") == tmp_path / "c" / "bench"
    assert not (tmp_path / "c").exists()  # resolved, not created
    monkeypatch.setenv("MFV2_CACHE", "")  # empty means unset
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir("exports") == tmp_path / "home" / ".cache" / "mfv2" / "exports"
    monkeypatch.delenv("MFV2_CACHE")
    assert cache_dir() == tmp_path / "home" / ".cache" / "mfv2"
