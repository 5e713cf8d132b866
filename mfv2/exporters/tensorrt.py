"""TensorRT engines from the exported ONNX graphs (TensorRT 10.12+ / 11 Python API), and the checks around them.

Engines are built from graphs that carry their precision, always as strongly typed networks
(TensorRT 10.12 deprecated the weak-typing builder flags and TensorRT 11 removed them; the
``STRONGLY_TYPED`` creation flag is required on 10.x and ignored on 11.x): ``*.onnx`` (fp32),
``*.fp16.onnx`` (typed fp16) and ``*.int8-trt.onnx`` (the int8 graph exported for TensorRT:
symmetric int8 Q/DQ on the weight GEMM inputs only, on an fp16 base, its parity measured at export
on this very file; see :func:`mfv2.exporters.quantize.to_int8_tensorrt`). Exports without that file
fall back to ``*.int8.onnx`` (ONNX Runtime's uint8 Q/DQ on an fp32 base) re-expressed with zero
zero-points, with a warning that nobody measured that graph. TF32 is off for every precision, so the
layers a low-precision graph keeps in fp32 stay fp32. bf16 has no typed graph yet: it uses the
deprecated ``BuilderFlag.BF16`` on the fp32 graph, is refused below compute capability 8.0 and where
that flag is gone.

The GPU is the CUDA device that builds the engine, read through cuda-python (name, compute
capability, memory, UUID); ``nvidia-smi`` is optional and only adds the driver version. Each
``.engine`` holds the serialized plan and nothing else, so ``trtexec --loadEngine`` and C++ loaders
read it; the facts a loader needs to refuse a foreign plan (TensorRT and CUDA versions, GPU and
compute capability, ONNX hash, precision) go to a sidecar ``<engine>.json`` (read and checked by
:mod:`mfv2.artifacts.engine`). TensorRT's messages go through one process-wide logger
(:func:`trt_logger`) into :mod:`logging`.

Unverified here: everything that runs TensorRT (this project's CI has no GPU). The op-set check,
the planning, the sidecar, the compatibility check and the builder calls (against a fake module
whose names are checked against the real bindings) are tested on CPU.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mfv2._tensorrt import environment, import_tensorrt, trt_logger
from mfv2.artifacts import FORMATS, GRAPH_STEMS, SIDECAR_FORMAT, artifact_name, file_precision, sidecar_path
from mfv2.errors import BackendUnavailableError, ConfigError, ExportError
from mfv2.fileio import atomic_write_bytes, atomic_write_text, sha256

if TYPE_CHECKING:
    import onnx

    from mfv2._cuda import DeviceInfo

__all__ = [
    "TRT_OPS_SOURCE",
    "TRT_OPSET_RANGE",
    "TRT_SUPPORTED_OPS",
    "FORBIDDEN_OPS",
    "TRT_INT8_SUFFIX",
    "EnginePlan",
    "tensorrt_issues",
    "plan_engines",
    "check_precision",
    "build_engine",
    "build_engines",
]

log = logging.getLogger(__name__)

TRT_OPS_SOURCE = "onnx-tensorrt docs/operators.md, TensorRT 10.15 (opset 9 to 24)"
TRT_OPSET_RANGE = (9, 24)
# ONNX ops (default domain) the TensorRT 10.15 ONNX parser supports, from the source above.
TRT_SUPPORTED_OPS: frozenset[str] = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization
    BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
    CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
    Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
    Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish
    Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
    LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
    MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
    ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
    RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
    ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RMSNormalization RNN
    RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink
    Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan
    Tanh TensorScatter ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
    """.split()
)
# Supported by recent parsers but kept out of our graphs: RoI pooling is slow, fp32/fp16 only and
# absent from older TensorRT releases and most NPU toolchains.
FORBIDDEN_OPS: frozenset[str] = frozenset({"RoiAlign", "MaxRoiPool"})
# The int8 graph exported for TensorRT (:func:`mfv2.exporters.quantize.to_int8_tensorrt`), beside ``*.int8.onnx``.
TRT_INT8_SUFFIX = ".int8-trt.onnx"


def tensorrt_issues(model: onnx.ModelProto) -> list[str]:
    """What would stop TensorRT's ONNX parser (or our portability rules) on ``model``; empty if nothing.

    Checks the opset range, ops outside :data:`TRT_SUPPORTED_OPS` or in :data:`FORBIDDEN_OPS`, ops of
    other domains, and Q/DQ zero points (TensorRT requires zero).
    """
    from onnx import numpy_helper

    issues: list[str] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    lo, hi = TRT_OPSET_RANGE
    if not lo <= opset <= hi:
        issues.append(f"opset {opset} outside TensorRT's {lo}..{hi}")
    ops = {(n.domain, n.op_type) for n in model.graph.node}
    for domain, op in sorted(ops):
        if domain not in ("", "ai.onnx"):
            issues.append(f"{domain}::{op} is not a standard ONNX op")
        elif op in FORBIDDEN_OPS:
            issues.append(f"{op} (RoI pooling) is not allowed in mfv2 graphs")
        elif op not in TRT_SUPPORTED_OPS:
            issues.append(f"{op} is not supported by TensorRT")
    values = {i.name: i for i in model.graph.initializer}
    values.update({n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant" and n.attribute})
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in values:
            if numpy_helper.to_array(values[n.input[2]]).any():
                issues.append(f"{n.op_type} {n.name} has a non-zero zero point (TensorRT needs symmetric Q/DQ)")
    return issues


@dataclass(frozen=True)
class EnginePlan:
    """One engine to build: the ONNX source, the ``.engine`` target, precision and network typing."""

    graph: str
    precision: str
    onnx: Path
    engine: Path
    strongly_typed: bool


def plan_engines(export_dir: str | os.PathLike[str], precision: str, graphs: tuple[str, ...]) -> list[EnginePlan]:
    """The engines ``mfv2 build-engine`` would build for ``graphs`` at ``precision``.

    Raises:
        ConfigError: an unknown precision or graph, or a source ONNX file that is not in the directory.
    """
    d = Path(export_dir)
    known = FORMATS.get("tensorrt").precisions
    if precision not in known:
        raise ConfigError(f"unknown TensorRT precision {precision!r}; choose from {', '.join(known)}")
    plans = []
    for graph in graphs:
        if graph not in GRAPH_STEMS:
            raise ConfigError(f"unknown graph {graph!r}; known: {', '.join(GRAPH_STEMS)}")
        source_precision = file_precision(precision)
        onnx_path = d / artifact_name(graph, source_precision, "onnx")
        targeted = d / (GRAPH_STEMS[graph] + TRT_INT8_SUFFIX)
        if precision == "int8" and targeted.is_file():
            onnx_path = targeted  # the int8 graph made for TensorRT, measured at export as it is parsed
        elif precision == "int8" and onnx_path.is_file():
            log.warning("%s has no %s: building from %s re-expressed symmetrically, a graph whose parity nobody "
                        "measured; re-export with this mfv2 for the TensorRT int8 graph", d, targeted.name, onnx_path.name)
        if not onnx_path.is_file():
            raise ConfigError(
                f"{d} has no {onnx_path.name}; export it first: mfv2 export ... --output {d} --precision fp32,{source_precision}"
            )
        plans.append(
            EnginePlan(graph, precision, onnx_path, d / artifact_name(graph, precision, "tensorrt"), precision != "bf16")
        )
    return plans


def check_precision(precision: str, device: DeviceInfo) -> None:
    """Refuse, before any work, a precision the GPU cannot run: bf16 needs compute capability 8.0 (Ampere) or later.

    Raises:
        ConfigError: naming the GPU and the precisions to use instead.
    """
    if precision == "bf16" and device.capability < (8, 0):
        raise ConfigError(
            f"bf16 needs an Ampere or newer GPU (compute capability 8.0+); {device.name} is sm {device.compute_capability}: "
            "build with --fp16 instead"
        )


def build_engine(
    plan: EnginePlan,
    *,
    device: DeviceInfo,
    workspace_mb: int | None = None,
    timing_cache: str | os.PathLike[str] | None = None,
    trt: Any = None,
) -> dict[str, Any]:
    """Build one engine on ``device`` and write the byte-pure ``.engine`` and its sidecar JSON.

    Args:
        plan: what to build (see :func:`plan_engines`).
        device: the CUDA device that builds (and will run) the engine, from
            :func:`mfv2._cuda.device_info`; it must be the current device.
        workspace_mb: builder workspace limit in MiB (TensorRT's default when ``None``).
        timing_cache: a timing-cache file to read (if present) and update, shared across builds.
        trt: the ``tensorrt`` module (imported when ``None``).

    Returns:
        The sidecar contents.

    Raises:
        BackendUnavailableError: TensorRT is not installed.
        ConfigError: bf16 on a GPU before Ampere, or of a TensorRT without weak typing.
        ExportError: parsing or building failed.
    """

    trt = trt or import_tensorrt()
    check_precision(plan.precision, device)
    parse_path = _symmetric_copy(plan) if plan.precision == "int8" else None
    try:
        serialized, cache, seconds = _build(trt, plan, parse_path or plan.onnx, workspace_mb, timing_cache)
    finally:
        if parse_path is not None:
            parse_path.unlink(missing_ok=True)
    atomic_write_bytes(plan.engine, memoryview(serialized))
    if timing_cache and cache is not None:
        atomic_write_bytes(timing_cache, memoryview(cache.serialize()))
    if parse_path is not None:
        qdq = "uint8 activations re-expressed as symmetric int8 (parity of this graph not measured; re-export for *.int8-trt.onnx)"
    elif plan.onnx.name.endswith(TRT_INT8_SUFFIX):
        qdq = "as exported for TensorRT (symmetric int8, fp16 base, parity measured at export)"
    else:
        qdq = "as exported"
    sidecar = {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "engine": plan.engine.name,
        "engine_sha256": sha256(plan.engine),
        "graph": plan.graph,
        "precision": plan.precision,
        "strongly_typed": plan.strongly_typed,
        "tf32": False,
        "onnx": plan.onnx.name,
        "onnx_sha256": sha256(plan.onnx),
        "qdq": qdq,
        "workspace_mb": workspace_mb,
        "build_seconds": round(seconds, 2),
        **environment(trt, device),
    }
    atomic_write_text(sidecar_path(plan.engine), json.dumps(sidecar, indent=2) + "\n")
    log.info("built %s in %.1f s (%.1f MB)", plan.engine.name, seconds, plan.engine.stat().st_size / 1e6)
    return sidecar


def _symmetric_copy(plan: EnginePlan) -> Path | None:
    """A temporary symmetric-Q/DQ copy of an int8 graph with uint8 zero points (TensorRT needs zero), else None."""
    import onnx

    from mfv2.exporters.quantize import symmetric_qdq

    model = onnx.load(str(plan.onnx))
    converted = symmetric_qdq(model)
    if converted == model:
        return None
    path = plan.engine.with_name(plan.engine.name + ".source.onnx")
    onnx.save(converted, str(path))
    return path


def _build(
    trt: Any, plan: EnginePlan, onnx_path: Path, workspace_mb: int | None, timing_cache: str | os.PathLike[str] | None
) -> tuple[Any, Any, float]:
    """Parse and build; returns the serialized plan, the timing cache (or None) and the build time."""
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    if not plan.strongly_typed and not hasattr(trt.BuilderFlag, "BF16"):
        raise ConfigError(
            f"TensorRT {trt.__version__} builds bf16 only from a bf16-typed ONNX, which mfv2 does not export yet; use --fp16"
        )
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {plan.onnx.name}: {errors}")
    config = builder.create_builder_config()
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    # TF32 is on by default in TensorRT 10 and 11; whatever the precision, the layers kept in fp32
    # (heads, LayerNorm, softmax, everything outside the int8 GEMMs) must run in fp32 (MixFormerV2#24).
    config.clear_flag(trt.BuilderFlag.TF32)
    if plan.precision == "bf16":
        log.warning("bf16 uses the deprecated weak-typing flag BuilderFlag.BF16 (removed in TensorRT 11)")
        config.set_flag(trt.BuilderFlag.BF16)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = None
    if cache_path is not None:
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            log.warning("timing cache %s was made elsewhere; starting a fresh one", cache_path)
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, ignore_mismatch=False)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        raise ExportError(f"TensorRT failed to build {plan.engine.name}; rerun with -vv to see the builder log")
    return serialized, cache, seconds


def build_engines(
    export_dir: str | os.PathLike[str],
    precision: str = "fp32",
    *,
    graphs: tuple[str, ...] | None = None,
    workspace_mb: int | None = None,
    timing_cache: str | os.PathLike[str] | None = None,
    device_id: int = 0,
) -> list[Path]:
    """Build the engines of an export directory on this machine's GPU and list them in its manifest.

    Args:
        export_dir: a directory written by :func:`mfv2.exporters.export`.
        precision: ``fp32``, ``fp16``, ``int8`` (from the typed / Q/DQ ONNX files) or ``bf16``.
        graphs: graphs to build; default every ONNX graph of the manifest.
        workspace_mb: builder workspace limit in MiB.
        timing_cache: timing-cache file to reuse and update.
        device_id: the CUDA device to build on (and for), after ``CUDA_VISIBLE_DEVICES``.

    Raises:
        BackendUnavailableError: no CUDA device or driver, or TensorRT / cuda-python not installed.
        ConfigError: not an export directory, a missing source graph, a graph TensorRT cannot parse,
            or bf16 on a GPU before Ampere.
    """
    import onnx

    from mfv2.artifacts import Artifact, load_manifest
    from mfv2.exporters.quantize import symmetric_qdq
    from mfv2._cuda import check, device_info, import_cudart

    d = Path(export_dir)
    manifest = load_manifest(d)
    if manifest.batch is None:
        raise ConfigError(f"{d} has a dynamic batch; TensorRT engines are built from a fixed one: export with --batch N")
    cudart = import_cudart()
    device = device_info(device_id, cudart)  # no GPU, no driver: one line saying so; nvidia-smi is not needed
    check_precision(precision, device)
    trt = import_tensorrt()
    wanted = graphs or tuple(g for g in GRAPH_STEMS if manifest.find(g, "fp32") is not None)
    plans = plan_engines(d, precision, wanted)
    for plan in plans:
        model = onnx.load(str(plan.onnx))
        issues = tensorrt_issues(symmetric_qdq(model) if plan.precision == "int8" else model)
        if issues:
            raise ConfigError(f"{plan.onnx.name} cannot be built by TensorRT: {'; '.join(issues)}")
    # TensorRT builds on the calling thread's current CUDA device.
    check(cudart, cudart.cudaSetDevice(device.device_id), f"cudaSetDevice({device.device_id})")
    built = []
    for plan in plans:
        sidecar = build_engine(plan, device=device, workspace_mb=workspace_mb, timing_cache=timing_cache, trt=trt)
        source = manifest.find(plan.graph, "fp32")
        manifest.add(
            Artifact(
                file=plan.engine.name,
                graph=plan.graph,
                precision=plan.precision,
                format="tensorrt",
                inputs=dict(source.inputs) if source else {},
                outputs=dict(source.outputs) if source else {},
                sha256=sha256(plan.engine),
                extra={k: sidecar[k] for k in ("onnx", "onnx_sha256", "tensorrt", "cuda", "gpu", "compute_capability", "tf32")}
                | {"sidecar": sidecar_path(plan.engine).name, "parity": "not measured at build time"},
            )
        )
        built.append(plan.engine)
    manifest.save(d)
    return built
