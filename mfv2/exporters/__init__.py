"""The exporters: ONNX (full and split graphs), fp16/int8, OpenVINO IR, TensorRT engines, parity gates.

:func:`export` is the public entry (``mfv2.export``); the job itself is :mod:`mfv2.exporters.pipeline`.
The package is not named ``export``: a subpackage ``mfv2.export`` would rebind the attribute
``mfv2.export`` from the function to itself the first time one of its modules loads. Importing this
package stays light (no torch, ONNX or runtimes); readers use :mod:`mfv2.artifacts`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mfv2.config import ExportConfig

if TYPE_CHECKING:
    from mfv2.models import MixFormerV2

__all__ = ["export", "ExportConfig"]


def export(
    model_or_checkpoint: MixFormerV2 | str | os.PathLike[str] | None,
    output: str | os.PathLike[str],
    config: ExportConfig | None = None,
    *,
    calibration: Sequence[np.ndarray | tuple[np.ndarray, Sequence[float]]] | None = None,
    **options: Any,
) -> Path:
    """Export a model to the directory ``output``.

    Args:
        model_or_checkpoint: a :class:`~mfv2.models.MixFormerV2`, a checkpoint path (official or
            native), or ``None`` for seeded random weights of ``variant`` (demos and tests).
        output: export directory to create.
        config: an :class:`~mfv2.config.ExportConfig`; keyword ``options`` override its fields:
        calibration: BGR uint8 frames, or ``(frame, box_xywh)`` pairs, for the real crops of parity
            and int8 calibration; ``None`` uses a synthetic clip. A bare frame gets a centred box.
        variant: architecture; ``None`` detects it from the checkpoint (``"S"`` for random weights).
        batch: fixed batch size, the number of targets tracked per call (padded with inactive rows
            when fewer are live), or ``"dynamic"``: graphs with a dynamic batch axis, for ONNX
            Runtime and OpenVINO (TensorRT engines need a fixed batch). The manifest records it
            (``batch``: the number, or null for dynamic).
        opset: ONNX opset, >= 17 so LayerNormalization stays one op.
        allow_low_opset: accept opsets below 17 (with a warning about TensorRT fp16 overflow).
        precisions: ONNX precisions among ``fp32``, ``fp16``, ``int8``; the fp32 graphs are always
            written, every other artifact derives from them. ``int8`` writes the Q/DQ and the
            dynamically quantized files.
        openvino: OpenVINO IR precisions among ``fp32``, ``fp16``, ``int8`` (NNCF).
        simplify: ``onnxsim``, ``onnxslim`` or ``none``.
        tracker: tracker settings recorded in the manifest, whose crop factors make the real crops;
            default ``TrackerConfig.for_model`` of the model (the official yaml of its size class).
            Crop factors the model records override the given ones.
        seed: seed of random weights, random inputs and the synthetic clip.
        overwrite: replace an existing ``output``.
        skip_failed: a low-precision variant (format and precision) that misses its parity gate is
            left out and listed under ``rejected`` in the manifest, with its figures, instead of
            failing the export. fp32 always fails the export: every other file derives from it.

    Returns:
        The export directory.

    Raises:
        ConfigError: a bad option (an unknown name lists the valid ones), checkpoint or output path.
        ExportError: tracing, simplification, checking or parity failed (nothing is written).
    """
    from mfv2.exporters.pipeline import export_model

    cfg = (config or ExportConfig()).replace(**options)
    return export_model(model_or_checkpoint, output, cfg, calibration)

