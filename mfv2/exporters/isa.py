"""Integer products as x86 CPUs compute them: why int8 weights keep to 7 bits (issue #16).

ONNX Runtime multiplies uint8 activations by int8 weights (``MatMulInteger`` and its fused forms)
with ``VPDPBUSD`` where AVX-512 VNNI exists, which adds four u8 x s8 products into an int32 exactly.
Without VNNI (AVX2, and AVX-512 without VNNI) it uses ``VPMADDUBSW``, which adds two adjacent
products into a *saturating* int16 before widening: ``2 * 255 * 127 = 64,770`` does not fit in
32,767. With weights in [-64, 64] a pair sum stays within ``2 * 255 * 64 = 32,640``, and both paths
give the same integers.

:func:`avx2_exact` checks that property on a quantized graph (the export gate records it);
:func:`run_as_avx2` runs a graph with ONNX's reference evaluator and the AVX2 pair saturation, so a
host with VNNI can measure what an AVX2 host would compute (``benchmarks/gates/``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

__all__ = ["AVX2_PAIR_LIMIT", "avx2_exact", "saturating_matmul_integer", "run_as_avx2"]

AVX2_PAIR_LIMIT = 32767  # int16 maximum: the largest pair sum VPMADDUBSW keeps exactly

_ROWS = 64  # activation rows per chunk of the emulated product (bounds its (rows, K/2, N) temporary)


def _int8_weights(model: onnx.ModelProto) -> list[tuple[str, np.ndarray]]:
    """The int8 weight matrices (2-D int8 initializers) of ``model``: ``MatMulInteger`` B inputs and the
    Q/DQ graph's quantized weights, which ONNX Runtime fuses into the same integer kernels."""
    from onnx import TensorProto, numpy_helper

    return [(i.name, numpy_helper.to_array(i)) for i in model.graph.initializer
            if i.data_type == TensorProto.INT8 and len(i.dims) == 2]  # fmt: skip


def avx2_exact(model: onnx.ModelProto) -> bool:
    """Whether every u8 x s8 pair sum of ``model``'s integer products fits AVX2's int16 (no saturation).

    True for a graph without int8 weights (float graphs).
    """
    for _, w in _int8_weights(model):
        # The worst pair: two u8 activations of 255 times the two largest weights of a column.
        mag = np.sort(np.abs(w.astype(np.int32)), axis=0)
        worst = 255 * (mag[-1] + (mag[-2] if len(mag) > 1 else 0))
        if np.any(worst > AVX2_PAIR_LIMIT):
            return False
    return True


def saturating_matmul_integer(
    a: np.ndarray, b: np.ndarray, a_zero: np.ndarray | int = 0, b_zero: np.ndarray | int = 0
) -> np.ndarray:
    """``MatMulInteger(a, b)`` as VPMADDUBSW computes it for uint8 ``a`` and int8 ``b`` (int32 result).

    Adjacent products along K are added in pairs with int16 saturation, then summed exactly; the
    zero-point terms are exact (MLAS applies them from row and column sums).

    Args:
        a: (..., M, K) uint8 activations. b: (K, N) int8 weights.
        a_zero: activation zero point (scalar). b_zero: weight zero point (scalar or (N,)).
    """
    az = np.asarray(a_zero, dtype=np.int64)
    bz = np.asarray(b_zero, dtype=np.int64)
    ai = a.astype(np.int64)
    bi = b.astype(np.int64)
    k = ai.shape[-1]
    if k % 2:  # the kernels pad K with zeros
        ai = np.concatenate([ai, np.zeros((*ai.shape[:-1], 1), np.int64)], axis=-1)
        bi = np.concatenate([bi, np.zeros((1, bi.shape[1]), np.int64)], axis=0)
    rows = ai.reshape(-1, ai.shape[-1]).astype(np.int32)  # (..., M, K) -> (R, K); |pair| <= 64,770 fits int32
    even, odd = bi[0::2].astype(np.int32), bi[1::2].astype(np.int32)
    raw = np.empty((rows.shape[0], bi.shape[1]), np.int64)
    for start in range(0, rows.shape[0], _ROWS):
        r = rows[start : start + _ROWS]
        pairs = r[:, 0::2, None] * even[None] + r[:, 1::2, None] * odd[None]  # (R, K/2, N)
        np.clip(pairs, -AVX2_PAIR_LIMIT - 1, AVX2_PAIR_LIMIT, out=pairs)
        raw[start : start + _ROWS] = pairs.sum(axis=1, dtype=np.int64)
    raw = raw.reshape(*ai.shape[:-1], bi.shape[1])
    # sum((a - az)(b - bz)) = sum(a b) - az sum(b) - bz sum(a) + K az bz
    out = raw - az * bi.sum(axis=0) - bz * ai.sum(axis=-1, keepdims=True) + k * az * bz
    return out.astype(np.int32)


def run_as_avx2(path: str | os.PathLike[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the ONNX file at ``path`` with the reference evaluator, integer products saturating as on AVX2."""
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    class MatMulInteger(OpRun):  # noqa: D401 - the op's name in the ONNX standard
        op_domain = ""

        def _run(self, a: np.ndarray, b: np.ndarray, a_zero: Any = None, b_zero: Any = None) -> tuple[np.ndarray]:
            if a.dtype == np.uint8 and b.dtype == np.int8:
                return (saturating_matmul_integer(a, b, 0 if a_zero is None else a_zero, 0 if b_zero is None else b_zero),)
            az = 0 if a_zero is None else a_zero.astype(np.int32)
            bz = 0 if b_zero is None else b_zero.astype(np.int32)
            return ((a.astype(np.int32) - az) @ (b.astype(np.int32) - bz),)

    evaluator = ReferenceEvaluator(str(path), new_ops=[MatMulInteger])
    names = [o.name for o in evaluator.proto_.graph.output]  # type: ignore[union-attr]
    return dict(zip(names, evaluator.run(None, feeds)))
