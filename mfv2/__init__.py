"""mfv2: MixFormerV2 tracking from training to edge devices.

Heavy parts (torch, ONNX Runtime, OpenVINO, TensorRT) load on first use of the name that needs them,
so ``import mfv2`` is cheap and a tracker on ONNX Runtime or OpenVINO needs no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from mfv2.config import ModelConfig, TrackerConfig
from mfv2.errors import (
    BackendUnavailableError,
    ConfigError,
    ExportError,
    Mfv2Error,
    ShapeError,
    UnknownNameError,
)

__version__ = "0.1.0"

# Public name -> module that defines it, imported on first access.
_LAZY: dict[str, str] = {
    "build_model": "mfv2.models",
    "MixFormerV2": "mfv2.models",
    "export": "mfv2.exporters",
    "load_backend": "mfv2.runtimes",
    "available_backends": "mfv2.runtimes",
    "ModelRunner": "mfv2.runtimes",
    "Tracker": "mfv2.tracking",
    "LatencyStats": "mfv2.bench.latency",
    "TrainConfig": "mfv2.training",
    "Trainer": "mfv2.training",
    "MixViT": "mfv2.models.mixformerv2.mixvit",
    "build_mixvit": "mfv2.models.mixformerv2.mixvit",
    "run_route": "mfv2.training.routes",
    "load_route": "mfv2.training.routes",
    "demo_checkpoint": "mfv2.assets",
    "lowres_config": "mfv2.training.objectives.loretrack",
}

__all__ = [
    "__version__",
    "ModelConfig",
    "TrackerConfig",
    "Mfv2Error",
    "ConfigError",
    "UnknownNameError",
    "BackendUnavailableError",
    "ExportError",
    "ShapeError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mfv2' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
