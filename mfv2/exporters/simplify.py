"""Graph simplification with onnxsim or onnxslim (selectable, as Ultralytics users ask for both).

Both fold the constants the tracer leaves (shape arithmetic, the attention scale) and drop dead
nodes. Their MatMul+Add -> Gemm fusions are switched off: they wrap every batched Linear in
Reshape/Gemm/Reshape under new node names, which loses the ``/net/box_head/...`` scopes that fp16
conversion and int8 quantization use to keep the heads in float, and gains nothing (ONNX Runtime,
OpenVINO and TensorRT fuse MatMul+Add themselves).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mfv2.artifacts import SIMPLIFIERS
from mfv2.errors import ConfigError, ExportError
from mfv2.fileio import atomic_path

__all__ = ["simplify"]

log = logging.getLogger(__name__)

_ONNXSIM_SKIP = ["fuse_matmul_add_bias_into_gemm", "fuse_matmul_add_bias_into_gemm_batched"]
_ONNXSLIM_SKIP = ["FusionGemm", "FusionGemmMul", "FusionGemmAdd"]


def simplify(path: str | os.PathLike[str], method: str = "onnxsim") -> Path:
    """Simplify the ONNX file at ``path`` in place with ``method`` (``onnxsim``, ``onnxslim`` or ``none``).

    Raises:
        ConfigError: for an unknown method or a simplifier that is not installed.
        ExportError: if the simplifier fails or cannot prove its result equal to the input.
    """
    if method not in SIMPLIFIERS:
        raise ConfigError(f"unknown simplifier {method!r}; choose from {', '.join(SIMPLIFIERS)}")
    p = Path(path)
    if method == "none":
        return p
    import onnx

    model = onnx.load(str(p))
    before = len(model.graph.node)
    try:
        if method == "onnxsim":
            import onnxsim

            model, ok = onnxsim.simplify(model, skipped_optimizers=_ONNXSIM_SKIP)
            if not ok:
                raise ExportError(f"onnxsim could not validate the simplified {p.name}; try --simplify onnxslim")
        else:
            import onnxslim

            model = onnxslim.slim(model, skip_fusion_patterns=_ONNXSLIM_SKIP)
    except ImportError as e:
        raise ConfigError(f"{method} is not installed; pip install \"mfv2[onnx]\" or pass --simplify none") from e
    except ExportError:
        raise
    except Exception as e:  # both tools raise assorted types from native code
        other = "onnxslim" if method == "onnxsim" else "onnxsim"
        raise ExportError(f"{method} failed on {p.name}: {type(e).__name__}: {e}; try --simplify {other}") from e
    with atomic_path(p) as tmp:
        onnx.save(model, str(tmp))
    log.debug("%s: %s %d -> %d nodes", method, p.name, before, len(model.graph.node))
    return p
