"""OpenVINO IR from the exported ONNX graphs: fp32 and fp16 weights, and int8 through NNCF.

``ov.convert_model`` reads the fp32 ONNX file; ``ov.save_model`` writes the IR with fp32 weights or
fp16-compressed weights (decompressed to fp32 at load time, so the fp16 IR is an fp32 network with
half-size weights). int8 is NNCF post-training quantization with ``ModelType.TRANSFORMER`` (it keeps
LayerNorm/Softmax paths in float) on the same real tracker crops as the ONNX int8 file, the heads
ignored. The mfv2 metadata goes into ``rt_info['mfv2']`` of each IR.

OpenVINO and NNCF are imported through :mod:`mfv2._openvino`, with their telemetry off.

Parity runs with ``INFERENCE_PRECISION_HINT = f32``: on CPUs with AVX512-BF16 or AMX, OpenVINO's
default is bf16 inference, which would mix that rounding into the figure of the file itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mfv2._openvino import core as shared_core
from mfv2._openvino import import_nncf, import_openvino
from mfv2.errors import ExportError
from mfv2.exporters.quantize import quiet_logger
from mfv2.fileio import atomic_path

__all__ = ["to_openvino", "set_ov_metadata", "compile_ir", "ov_runner", "OV_METADATA_KEY", "HEAD_PATTERNS"]

OV_METADATA_KEY = "mfv2"
# NNCF ignored scope: the heads (friendly names keep the ONNX node names).
HEAD_PATTERNS: tuple[str, ...] = (r".*/box_head/.*", r".*/score_head/.*", r"/Sigmoid")


def _ov() -> Any:
    """The ``openvino`` module, imported with its telemetry off (see :mod:`mfv2._openvino`)."""
    return import_openvino()


def _save(ov: Any, model: Any, xml: Path, compress_to_fp16: bool) -> None:
    """``ov.save_model`` to temporary names, then rename .bin and .xml (the .xml last)."""
    with atomic_path(xml, suffix=".xml", sidecars=(".bin",)) as tmp_xml:
        ov.save_model(model, str(tmp_xml), compress_to_fp16=compress_to_fp16)


def to_openvino(
    onnx_path: str | os.PathLike[str],
    xml: str | os.PathLike[str],
    precision: str,
    calibration: Sequence[dict[str, np.ndarray]] | None = None,
) -> Path:
    """Convert an fp32 ONNX graph to an OpenVINO IR at ``precision`` (``fp32``, ``fp16`` or ``int8``).

    Args:
        onnx_path: the fp32 ONNX file.
        xml: output ``.xml`` path (the ``.bin`` goes beside it).
        precision: weight precision; ``int8`` needs ``calibration``.
        calibration: input dicts for NNCF (real tracker crops).

    Raises:
        BackendUnavailableError: OpenVINO (or NNCF for int8) is not installed.
        ExportError: conversion or quantization failed.
    """
    ov = _ov()
    xml = Path(xml)
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as e:  # the frontend raises its own types
        raise ExportError(f"OpenVINO could not convert {Path(onnx_path).name}: {e}") from e
    if precision == "int8":
        if not calibration:
            raise ExportError("OpenVINO int8 needs calibration inputs")
        model = _nncf_int8(model, calibration)
    _save(ov, model, xml, compress_to_fp16=precision == "fp16")
    return xml


# How the OpenVINO int8 IR is quantized, for the manifest (``extra["quantization"]``, as the ONNX int8 files).
OPENVINO_INT8_SCHEME: dict[str, str] = {
    "scheme": "NNCF post-training static (TRANSFORMER model type)",
    "weights": "int8 symmetric per-channel",
    "activations": "8-bit, NNCF's mixed preset, min/max ranges of the calibration crops",
    "float": "box and score heads",
}


def _nncf_int8(model: Any, calibration: Sequence[dict[str, np.ndarray]]) -> Any:
    """NNCF post-training int8 with activation ranges from the calibration minima and maxima.

    NNCF's default range estimator for transformers clips the tails of each activation; the tracker's
    off-centre crops live in those tails. With min/max ranges the demo model's box keeps IoU >= 0.9
    with fp32 on 99.0 % of the crops the fp32 tracker fed, against 96.2 % with the default estimator
    (benchmarks/cpu_profile/calibration/), at the same speed.
    """
    nncf = import_nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    names = [p.get_any_name() for p in model.inputs]
    dataset = nncf.Dataset(list(calibration), lambda feeds: {n: feeds[n] for n in names})
    try:
        with quiet_logger("nncf"):  # NNCF logs every ignored node at INFO on its own stdout handler
            return nncf.quantize(
                model,
                dataset,
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(calibration),
                ignored_scope=nncf.IgnoredScope(patterns=list(HEAD_PATTERNS), validate=False),
                advanced_parameters=AdvancedQuantizationParameters(
                    activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
                ),
            )
    except Exception as e:  # NNCF raises assorted types
        raise ExportError(f"NNCF int8 quantization failed: {type(e).__name__}: {e}") from e


def set_ov_metadata(xml: str | os.PathLike[str], metadata: str) -> None:
    """Store the mfv2 metadata JSON in the IR's ``rt_info['mfv2']`` (rewrites the IR in place)."""
    ov = _ov()
    xml = Path(xml)
    model = shared_core().read_model(str(xml))
    model.set_rt_info(metadata, [OV_METADATA_KEY])
    # The weights are already in their final type: saving must not compress them again.
    _save(ov, model, xml, compress_to_fp16=False)


def compile_ir(xml: str | os.PathLike[str], threads: int = 0, precision_hint: str = "f32") -> Any:
    """Compile an IR (or ONNX file) on the CPU with an explicit inference precision (f32 for parity)."""
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision_hint}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return shared_core().compile_model(str(xml), "CPU", config)


def ov_runner(files: dict[str, Path], threads: int = 0) -> Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Runs ``graph -> IR`` compiled at f32 inference precision: named inputs -> named outputs."""
    compiled = {g: compile_ir(p, threads) for g, p in files.items()}

    def run(graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        model = compiled[graph]
        result = model(feeds)
        return {out.get_any_name(): np.asarray(result[out]) for out in model.outputs}

    return run
