"""Shared fixtures: one torch thread per module, a tiny random model and the spec files of the official release."""

from __future__ import annotations

import importlib.util
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


EXPORT_ONNX_PRECISIONS = ("fp32", "fp16", "int8")
EXPORT_OV_PRECISIONS = ("fp32", "fp16", "int8")


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """``tiny_model``'s weights (``export(None, variant="tiny", seed=0)``) exported once per session at
    every ONNX and OpenVINO precision. Read-only: tests that edit an export copy it first."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from mfv2.export import export

    out = tmp_path_factory.mktemp("export") / "tiny"
    return export(None, out, variant="tiny", precisions=EXPORT_ONNX_PRECISIONS, openvino=EXPORT_OV_PRECISIONS, seed=0)
