"""Low-precision ONNX: typed fp16 for GPUs, static int8 Q/DQ and dynamic int8 for CPUs.

TensorRT 10.12+ builds fp16/int8 only from graphs that carry their types (weak-typing builder flags
are deprecated, and removed in TensorRT 11), so the precision lives in the file:

* fp16: every float op in fp16 except LayerNormalization, Softmax, the reductions and the heads (box
  distribution, score), which stay fp32 where fp16 would overflow or flatten the bin distribution;
  inputs and outputs stay fp32 so callers feed the same arrays to every precision.
* int8: ``onnxruntime.quantization.quantize_static`` in Q/DQ format on the weight MatMul/Gemm nodes
  only: symmetric per-channel int8 weights in a 7-bit range (see below), asymmetric uint8
  activations (MinMax). Attention score
  products, LayerNorm, Softmax, GELU, the patch embedding and the heads stay float. uint8
  activations are what ONNX Runtime's x86 kernels are fast at (measured on MixFormerV2-S's decoder:
  u8s8 0.53x the fp32 latency, s8s8 1.24x); TensorRT needs zero zero-points, so
  :func:`symmetric_qdq` re-expresses each activation range symmetrically when an engine is built.
* dynamic int8 (``*.int8-dynamic.onnx``, what ONNX Runtime runs at int8 on CPUs): the same MatMuls
  with int8 weights quantized the same way, their uint8 activation range measured on every call
  (``quantize_dynamic``: DynamicQuantizeLinear -> MatMulInteger, fused by ONNX Runtime into
  DynamicQuantizeMatMul). No calibration, so no range fitted to the calibration crops clips or
  coarsens an activation: on MixFormerV2-S about half the Q/DQ file's box error, at the same speed
  (1-3 % less CPU time, one thread).

Weights use 7 of their 8 bits (``reduce_range``) so the files are exact on every x86 CPU. ONNX Runtime
multiplies uint8 activations by int8 weights with VPDPBUSD where AVX-512 VNNI exists (exact int32
sums) but with VPMADDUBSW on AVX2-only CPUs, which adds two u8 x s8 products into a *saturating*
int16: 2 x 255 x 127 = 64,770 overflows 32,767. Random-input parity samples of the demo model hit
that in 0.16 % of the pair sums and moved its boxes by 0.092 on AVX2 against 0.006 with VNNI
(issue #16; ``benchmarks/gates/measure.py`` reproduces it). With weights in [-64, 64] a pair sum
stays below 2 x 255 x 64 = 32,640, so both instruction paths compute the same integers, at the same
speed; the cost is one bit of weight resolution, measured in ``benchmarks/gates/``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mfv2.errors import ExportError
from mfv2.exporters.onnx import is_head_node
from mfv2.fileio import atomic_path

if TYPE_CHECKING:
    import onnx

__all__ = [
    "FP16_OP_BLOCK_LIST",
    "to_fp16",
    "to_int8",
    "to_int8_dynamic",
    "INT8_SCHEMES",
    "REDUCE_RANGE",
    "INT8_TENSORRT_SCHEME",
    "to_int8_tensorrt",
    "symmetric_qdq",
    "quantizable_nodes",
    "head_nodes",
    "FeedReader",
    "quiet_logger",
]

log = logging.getLogger(__name__)

# Ops kept in fp32 in the fp16 graph (the decomposed LayerNorm of opsets < 17 included).
FP16_OP_BLOCK_LIST: tuple[str, ...] = (
    "LayerNormalization",
    "Softmax",
    "ReduceMean",
    "Pow",
    "Sqrt",
)


# How each int8 ONNX format quantizes, for the manifest (``extra["quantization"]``).
INT8_SCHEMES: dict[str, dict[str, str]] = {
    "onnx": {"scheme": "static Q/DQ", "weights": "int8 symmetric per-channel, 7-bit range (reduce_range)",
             "activations": "uint8 asymmetric, MinMax-calibrated at export"},
    "onnx-dynamic": {"scheme": "dynamic", "weights": "int8 symmetric per-channel, 7-bit range (reduce_range)",
                     "activations": "uint8 asymmetric, range measured per call"},
}
# Weights in [-64, 64]: u8 x s8 pair sums fit AVX2's saturating int16 (VPMADDUBSW), see the module doc.
REDUCE_RANGE: bool = True


@contextlib.contextmanager
def quiet_logger(name: str, level: int = logging.WARNING) -> Iterator[None]:
    """Raise the level of a chatty third-party logger for the duration of a call, then restore it."""
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(max(old, level))
    try:
        yield
    finally:
        logger.setLevel(old)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Hide INFO records of the root logger and keep it unconfigured for the duration of a call.

    ``onnxruntime.quantization`` logs through the module-level ``logging.info``/``warning``, which
    call ``basicConfig`` when the root logger has no handler; a library must not configure logging.
    """
    root = logging.getLogger()
    guard = None if root.handlers else logging.NullHandler()
    if guard is not None:
        root.addHandler(guard)
    try:
        with quiet_logger(""):
            yield
    finally:
        if guard is not None:
            root.removeHandler(guard)


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes of the prediction heads and the final sigmoid (see ``HEAD_SCOPES``)."""
    names = [n.name for n in model.graph.node if is_head_node(n.name)]
    if not any("box_head" in n for n in names):
        raise ExportError("no box-head nodes found by name scope; was the graph exported by mfv2?")
    return names


def _toposort(model: onnx.ModelProto) -> None:
    """Reorder ``model.graph.node`` topologically in place (the fp16 converter appends input casts last)."""
    nodes = list(model.graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    order: list[int] = []
    state = [0] * len(nodes)  # 0 new, 1 visiting, 2 done
    for root in range(len(nodes)):
        stack = [(root, False)]
        while stack:
            i, expanded = stack.pop()
            if expanded:
                state[i] = 2
                order.append(i)
                continue
            if state[i]:
                continue
            state[i] = 1
            stack.append((i, True))
            stack.extend((producer[x], False) for x in nodes[i].input if x in producer and not state[producer[x]])
    del model.graph.node[:]
    model.graph.node.extend(nodes[i] for i in order)


def to_fp16(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Write the fp16-typed copy of the fp32 ONNX ``src`` to ``dst`` (fp32 inputs/outputs)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    has_heads = any(o.name in ("boxes", "score") for o in model.graph.output)
    block_nodes = head_nodes(model) if has_heads else []
    # The converter logs whole NodeProtos at INFO when constants are shared by fp32 and fp16 nodes
    # (deduplicated zero biases of untrained models); it then keeps an fp32 copy, which is correct.
    try:
        with quiet_logger("onnxruntime.transformers.float16"):
            half = convert_float_to_float16(
                model, keep_io_types=True, op_block_list=list(FP16_OP_BLOCK_LIST), node_block_list=block_nodes
            )
    except Exception as e:  # the converter raises assorted types
        raise ExportError(f"fp16 conversion of {Path(src).name} failed: {type(e).__name__}: {e}") from e
    _toposort(half)
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        onnx.save(half, str(tmp))
    return dst


class FeedReader:
    """``onnxruntime.quantization`` calibration reader over a list of feed dicts."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._feeds = list(feeds)
        self._it = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


def quantizable_nodes(model: onnx.ModelProto) -> list[str]:
    """MatMul/Gemm nodes with a weight initializer, outside the heads: the ones int8 may touch."""
    weights = {init.name for init in model.graph.initializer}
    weights |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    return [
        n.name
        for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in weights and not is_head_node(n.name)
    ]


@contextlib.contextmanager
def _quantizing(src: str | os.PathLike[str], dst: str | os.PathLike[str], kind: str) -> Iterator[tuple[Path, Path]]:
    """Yield ``(prepared, tmp)``: a scratch path for the pre-processed model and the temporary output,
    which becomes ``dst`` on success. Any failure is an :class:`ExportError`; the scratch file goes."""
    dst = Path(dst)
    prepared = dst.with_name(dst.name + ".pre.onnx")
    try:
        with atomic_path(dst) as tmp:
            yield prepared, tmp
    except Exception as e:  # quantization raises assorted types
        raise ExportError(f"{kind} quantization of {Path(src).name} failed: {type(e).__name__}: {e}") from e
    finally:
        prepared.unlink(missing_ok=True)


def to_int8(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], calibration: Sequence[dict[str, np.ndarray]]
) -> Path:
    """Statically quantize the fp32 ONNX ``src`` to a Q/DQ int8 ``dst``, calibrated on ``calibration`` feeds.

    Args:
        src: fp32 ONNX file.
        dst: output file.
        calibration: input dicts of ``src`` (real tracker crops; ~32 or more).

    Raises:
        ExportError: if there is nothing to quantize or quantization fails.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(src))
    nodes = quantizable_nodes(model)
    if not nodes:
        raise ExportError(f"{Path(src).name} has no weight MatMul/Gemm to quantize")
    # Shape inference only: ORT's optimizations would rename the nodes picked above.
    with _quantizing(src, dst, "int8") as (prepared, tmp):
        quant_pre_process(str(src), str(prepared), skip_optimization=True)
        quantize_static(
            str(prepared),
            str(tmp),
            FeedReader(calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_quantize=nodes,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            reduce_range=REDUCE_RANGE,
            extra_options={"WeightSymmetric": True},
        )
    log.debug("int8: %s, %d MatMul/Gemm quantized", Path(dst).name, len(nodes))
    return Path(dst)


def to_int8_dynamic(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Dynamically quantize the weight MatMuls of the fp32 ONNX ``src`` (those of :func:`to_int8`) into ``dst``.

    Raises:
        ExportError: if there is nothing to quantize or quantization fails.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(src))
    weights = set(quantizable_nodes(model))
    # ONNX Runtime has no dynamic Gemm; the weight layers of mfv2 graphs are all MatMul.
    nodes = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name in weights]
    if not nodes:
        raise ExportError(f"{Path(src).name} has no weight MatMul to quantize")
    with _quantizing(src, dst, "dynamic int8") as (prepared, tmp), _quiet_root_logger():
        # ONNX shape inference only: it marks the file pre-processed, else quantize_dynamic warns.
        quant_pre_process(str(src), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
        quantize_dynamic(
            str(prepared),
            str(tmp),
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=nodes,
            per_channel=True,
            weight_type=QuantType.QInt8,
            reduce_range=REDUCE_RANGE,
            extra_options={"MatMulConstBOnly": True},
        )
    log.debug("int8 dynamic: %s, %d MatMul quantized", Path(dst).name, len(nodes))
    return Path(dst)


def symmetric_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of a Q/DQ graph whose uint8 (asymmetric) quantizers are re-expressed as symmetric int8.

    A uint8 quantizer with scale ``s`` and zero point ``z`` covers ``[-z * s, (255 - z) * s]``; the
    int8 quantizer with zero point 0 and scale ``max(z, 255 - z) * s / 127`` covers that range too
    (with up to one bit less resolution). No data is needed, so this runs where the engine is built.
    """
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {i.name: i for i in out.graph.initializer}
    done: set[str] = set()
    for node in out.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        scale_name, zero_name = node.input[1], node.input[2]
        if {scale_name, zero_name} & done or zero_name not in inits or scale_name not in inits:
            continue
        zero = numpy_helper.to_array(inits[zero_name])
        if zero.dtype != np.uint8:
            continue
        scale = numpy_helper.to_array(inits[scale_name]).astype(np.float32)
        z = zero.astype(np.float32)
        new_scale = (np.maximum(z, 255.0 - z) * scale / 127.0).astype(np.float32)
        inits[scale_name].CopyFrom(numpy_helper.from_array(new_scale, scale_name))
        inits[zero_name].CopyFrom(numpy_helper.from_array(np.zeros_like(zero, dtype=np.int8), zero_name))
        done |= {scale_name, zero_name}
    return out


# How the TensorRT int8 graph (``*.int8-trt.onnx``) quantizes, for the manifest (``extra["quantization"]``).
INT8_TENSORRT_SCHEME: dict[str, str] = {
    "scheme": "static Q/DQ for TensorRT",
    "weights": "int8 symmetric per-channel, full 8-bit range",
    "activations": "int8 symmetric (zero point 0), MinMax-calibrated at export, on weight MatMul/Gemm inputs only",
    "base": "fp16 where the fp16 graph is fp16 (LayerNorm, softmax, reductions, heads fp32), fp16 Q/DQ scales, opset 19",
}
_TRT_INT8_OPSET = 19  # Q/DQ with fp16 scales (TensorRT reads them; opset 13 allowed fp32 scales only)


def to_int8_tensorrt(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], calibration: Sequence[dict[str, np.ndarray]]
) -> Path:
    """Write the int8 graph TensorRT builds from: the fp32 ONNX ``src`` quantized for TensorRT's explicit Q/DQ.

    Unlike :func:`to_int8` (uint8 activations and 7-bit weights, for ONNX Runtime's x86 kernels) this
    follows NVIDIA's placement guidance for TensorRT: symmetric int8 activations and full-range int8
    weights (TensorRT's int8 GEMMs accumulate exactly), Q/DQ only on the inputs of the weight
    MatMul/Gemm nodes (never on their outputs, which TensorRT fuses with the bias and the next op),
    and an fp16 base: what the fp16 graph runs in fp16 runs in fp16 here, with fp16 Q/DQ scales at
    opset 19, so a strongly typed engine does not fall back to fp32 around the int8 GEMMs. The file is
    what :func:`mfv2.exporters.tensorrt.build_engine` parses, unchanged, so the parity gate measured on
    it (ONNX Runtime, CPU) is the parity of the graph TensorRT receives.

    Args:
        src: fp32 ONNX file (opset 17).
        dst: output file (``*.int8-trt.onnx``).
        calibration: input dicts of ``src`` (real tracker crops; ~32 or more).

    Raises:
        ExportError: if there is nothing to quantize, quantization or the conversions fail.
    """
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    nodes = quantizable_nodes(model)
    if not nodes:
        raise ExportError(f"{Path(src).name} has no weight MatMul/Gemm to quantize")
    has_heads = any(o.name in ("boxes", "score") for o in model.graph.output)
    block_nodes = head_nodes(model) if has_heads else []
    quantized = Path(dst).with_name(Path(dst).name + ".q.onnx")
    try:
        with _quantizing(src, dst, "TensorRT int8") as (prepared, tmp):
            quant_pre_process(str(src), str(prepared), skip_optimization=True)
            quantize_static(
                str(prepared),
                str(quantized),
                FeedReader(calibration),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["MatMul", "Gemm"],
                nodes_to_quantize=nodes,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                reduce_range=False,
                extra_options={
                    "WeightSymmetric": True,
                    "ActivationSymmetric": True,
                    "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"],
                },
            )
            qdq = version_converter.convert_version(onnx.load(str(quantized)), _TRT_INT8_OPSET)
            with quiet_logger("onnxruntime.transformers.float16"):
                half = convert_float_to_float16(
                    qdq, keep_io_types=True, op_block_list=list(FP16_OP_BLOCK_LIST), node_block_list=block_nodes
                )
            _toposort(half)
            onnx.save(half, str(tmp))
    finally:
        quantized.unlink(missing_ok=True)
    log.debug("TensorRT int8: %s, %d MatMul/Gemm quantized", Path(dst).name, len(nodes))
    return Path(dst)
