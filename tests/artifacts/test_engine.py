"""mfv2.artifacts.engine: the TensorRT engine sidecar (its path, reading it) and the check of an engine
against this machine, without TensorRT or CUDA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mfv2.artifacts import SIDECAR_FORMAT, check_engine_compatible, read_sidecar, sidecar_path
from mfv2.errors import ConfigError


def test_engine_compatibility_check_says_how_to_rebuild(tmp_path: Path) -> None:
    sidecar = {"engine": "model.fp16.engine", "precision": "fp16", "tensorrt": "10.8.0", "gpu": "RTX A4000",
               "compute_capability": "8.6"}
    check_engine_compatible(sidecar, {"tensorrt": "10.8.0", "gpu": "RTX 3090", "compute_capability": "8.6"})
    with pytest.raises(ConfigError, match=r"built with TensorRT 10.8.0 for RTX A4000 \(sm 8.6\), but this machine has "
                       r"TensorRT 10.13.0 and L4 \(sm 8.9\); rebuild it here: mfv2 build-engine exports/S --fp16"):
        check_engine_compatible(sidecar, {"tensorrt": "10.13.0", "gpu": "L4", "compute_capability": "8.9"}, "exports/S")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ConfigError, match="has no sidecar model.engine.json"):
        read_sidecar(engine)
    (tmp_path / "model.engine.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ConfigError, match="not an mfv2 engine sidecar"):
        read_sidecar(engine)


def test_sidecar_sits_beside_its_engine_and_reads_back(tmp_path: Path) -> None:
    engine = tmp_path / "search_decoder.fp16.engine"
    assert sidecar_path(engine) == tmp_path / "search_decoder.fp16.engine.json"
    assert sidecar_path(str(engine)) == sidecar_path(engine)
    data = {"format": SIDECAR_FORMAT, "engine": engine.name, "precision": "fp16", "tensorrt": "10.13.3.9"}
    sidecar_path(engine).write_text(json.dumps(data))
    assert read_sidecar(engine) == data


def test_same_capability_on_another_gpu_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    sidecar = {"engine": "model.engine", "precision": "fp32", "tensorrt": "10.13.3.9", "gpu": "RTX A4000",
               "compute_capability": "8.6"}
    with caplog.at_level("WARNING", logger="mfv2.artifacts.engine"):
        check_engine_compatible(sidecar, {"tensorrt": "10.13.3.9", "gpu": "RTX 3090", "compute_capability": "8.6"})
    assert "built on RTX A4000, running on RTX 3090" in caplog.text
    with pytest.raises(ConfigError, match=r"rebuild it here: mfv2 build-engine DIR$"):  # fp32: no precision flag
        check_engine_compatible(sidecar, {"tensorrt": "10.8.0", "gpu": "RTX A4000", "compute_capability": "8.6"})
