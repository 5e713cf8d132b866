"""Shared fixtures: a live alternate signal stack, one torch thread per module, the tiny model and its export, and
the spec files of the official release."""

from __future__ import annotations

import ctypes
import importlib.util
import signal
import sys
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parent / "data"


def read_key_list(name: str) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) rows of a key list in tests/data (copied from the project's spec of the official release)."""
    rows = []
    path = DATA_DIR / name
    for line in path.read_text().splitlines():
        key, shape = line.split(" ", 1)
        rows.append((key, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    return rows


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_ALT_STACK: list = []  # the buffer _live_sigaltstack installs, kept for the life of the process


def _live_sigaltstack() -> None:
    """Make the main thread's alternate signal stack one that is alive (benchmarks/segfault/README.md).

    OpenVINO's CPU plugin (each ``ov.Core``, NNCF's included) installs a stack of its own and can leave
    the thread's pointing at memory it unmapped; every Python-level signal handler runs on it
    (SA_ONSTACK), so the next SIGCHLD or SIGINT would kill the process without a traceback. A plugin
    restores its saved stack only while its own is current, so one installed here stays in place.
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    current = _StackT()
    libc.sigaltstack(None, ctypes.byref(current))
    if not _ALT_STACK:
        _ALT_STACK.append(ctypes.create_string_buffer(1 << 16))  # > any x86 frame, AMX tiles included
    ours = _StackT(ctypes.addressof(_ALT_STACK[0]), 0, ctypes.sizeof(_ALT_STACK[0]))
    if current.ss_sp != ours.ss_sp and libc.sigaltstack(ctypes.byref(ours), None) != 0:
        raise OSError(ctypes.get_errno(), "sigaltstack")


@pytest.fixture(autouse=True)
def _sigaltstack_guard():
    """A live alternate signal stack before and after every test: the suite runs in one process."""
    _live_sigaltstack()
    yield
    _live_sigaltstack()


def pytest_configure(config: pytest.Config) -> None:
    """A shell starts background jobs with SIGINT ignored, and children inherit that; the Ctrl-C tests need
    the default, so the suite behaves the same in a terminal, under CI and under ``nohup make test &``."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One torch intra-op thread per test module (restored afterwards): the models here are tiny, and two
    OpenMP threads on a busy 2-core CI runner wait on each other for ~100 ms a call."""
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model():
    """A two-block MixFormerV2 with seeded random weights, in eval mode."""
    torch = pytest.importorskip("torch")
    from mfv2.models import build_model

    torch.manual_seed(0)
    return build_model("tiny")


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, tmp_path_factory):
    """``tiny_model``'s weights saved once per session in the native format. Read-only."""
    from mfv2.models import save_native

    return save_native(tiny_model.state_dict(), tiny_model.config, tmp_path_factory.mktemp("checkpoint") / "tiny.pt")


@pytest.fixture(scope="session")
def synthetic_video():
    """A 24-frame procedural synthetic clip (160x120) with ground truth, rendered once per session."""
    from mfv2.synthetic import make_sequence

    return make_sequence(num_frames=24, seed=2, height=120, width=160, backgrounds="procedural")


EXPORT_ONNX_PRECISIONS = ("fp32", "fp16", "int8")
EXPORT_OV_PRECISIONS = ("fp32", "fp16", "int8")


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """``tiny_model``'s weights (``export(None, variant="tiny", seed=0)``) exported once per session at
    every ONNX and OpenVINO precision. Read-only: tests that edit an export copy it first."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from mfv2.exporters import export

    out = tmp_path_factory.mktemp("export") / "tiny"
    return export(None, out, variant="tiny", precisions=EXPORT_ONNX_PRECISIONS, openvino=EXPORT_OV_PRECISIONS, seed=0)


@pytest.fixture(scope="session")
def tiny_dynamic_export(tmp_path_factory):
    """``tiny_model``'s weights exported once per session with a dynamic batch (``--batch dynamic``), fp32 ONNX + IR.
    Read-only."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from mfv2.exporters import export

    out = tmp_path_factory.mktemp("dynamic") / "tiny"
    return export(None, out, variant="tiny", batch="dynamic", openvino=("fp32",), seed=0)
