"""The TensorRT engine sidecar: where it lives, how it is read, and the check of an engine against this machine.

``mfv2 build-engine`` (:mod:`mfv2.exporters.tensorrt`) writes each byte-pure ``<engine>`` with a
sidecar ``<engine>.json`` holding the facts a loader needs to refuse a foreign plan (TensorRT and
CUDA versions, GPU and compute capability, ONNX hash, precision); the TensorRT backend reads it and
refuses an engine built for another TensorRT or compute capability before deserializing it. This
module needs neither TensorRT nor CUDA.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from mfv2.errors import ConfigError
from mfv2.fileio import read_json

__all__ = ["SIDECAR_FORMAT", "sidecar_path", "read_sidecar", "check_engine_compatible"]

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "mfv2-engine"


def sidecar_path(engine: str | os.PathLike[str]) -> Path:
    """The sidecar of ``engine``: ``model.fp16.engine`` -> ``model.fp16.engine.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_sidecar(engine: str | os.PathLike[str]) -> dict[str, Any]:
    """The sidecar of ``engine``; a missing or foreign one is a :class:`ConfigError` that says how to rebuild."""
    path = sidecar_path(engine)
    rebuild = f"rebuild it with: mfv2 build-engine {Path(engine).parent}"
    if not path.is_file():
        raise ConfigError(f"{Path(engine).name} has no sidecar {path.name}, so its GPU and TensorRT are unknown; {rebuild}")
    data = read_json(path, "engine sidecar", rebuild)
    if data.get("format") != SIDECAR_FORMAT:
        raise ConfigError(f"{path} is not an mfv2 engine sidecar; {rebuild}")
    return data


def check_engine_compatible(sidecar: dict[str, Any], env: dict[str, Any], export_dir: str | os.PathLike[str] = "DIR") -> None:
    """Refuse an engine built with another TensorRT version or for another compute capability.

    Args:
        sidecar: the engine's sidecar (:func:`read_sidecar`).
        env: this machine's facts, as :func:`mfv2._tensorrt.environment` records them
            (``tensorrt``, ``gpu``, ``compute_capability``).
        export_dir: the export directory, named in the rebuild command.

    Raises:
        ConfigError: one line naming both sides and the command that rebuilds the engine here.
    """
    built = (sidecar.get("tensorrt"), sidecar.get("compute_capability"))
    here = (env.get("tensorrt"), env.get("compute_capability"))
    if built == here:
        if sidecar.get("gpu") != env.get("gpu"):
            log.warning("%s was built on %s, running on %s (same compute capability)", sidecar.get("engine"), sidecar.get("gpu"), env.get("gpu"))
        return
    flag = "" if sidecar.get("precision") == "fp32" else f" --{sidecar.get('precision')}"
    raise ConfigError(
        f"{sidecar.get('engine')} was built with TensorRT {built[0]} for {sidecar.get('gpu')} (sm {built[1]}), "
        f"but this machine has TensorRT {here[0]} and {env.get('gpu')} (sm {here[1]}); "
        f"rebuild it here: mfv2 build-engine {export_dir}{flag}"
    )
