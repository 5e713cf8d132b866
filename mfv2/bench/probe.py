"""The machine's measured GEMM peak per precision, so a benchmark row can say how close it gets.

The probe times large square matrix products with the same thread count as the rows it serves:
fp32 and bf16 through ``torch.matmul`` (oneDNN/MKL; bf16 uses AVX512-BF16 or AMX where the CPU has
them), int8 through ONNX Runtime's ``MatMulInteger`` (u8 x s8 -> s32, the VNNI kernels the int8
graphs use). Without torch, fp32 falls back to NumPy's BLAS. A multiply-add counts as 2 operations,
so fp figures are GFLOP/s and int8 figures GOP/s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from mfv2.bench.latency import measure
from mfv2.errors import ConfigError

__all__ = ["PeakResult", "PEAK_PRECISIONS", "measure_peak", "measure_peaks", "peak_precision"]

logger = logging.getLogger(__name__)

PEAK_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")


@dataclass(frozen=True)
class PeakResult:
    """Best throughput of one precision's GEMM.

    Attributes:
        precision: ``fp32``, ``bf16`` or ``int8``.
        gops: GFLOP/s (GOP/s for int8); NaN when ``status`` is not ``ok``.
        engine: what ran the product, e.g. ``torch.matmul``.
        size: side of the square matrices of the best run.
        threads: threads used (None = library default).
        status: ``ok`` or why the probe could not run.
        gops_cpu: operations per second of process CPU time (all threads), which other load on the
            machine barely changes; with one thread it estimates the unloaded single-core peak.
    """

    precision: str
    gops: float
    engine: str
    size: int
    threads: int | None
    status: str = "ok"
    gops_cpu: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_precision(precision: str) -> str:
    """Which probed peak a model precision is compared with.

    fp16 maps to fp32: x86 CPUs without AVX512-FP16 compute fp16 graphs in fp32.
    """
    return {"fp16": "fp32"}.get(precision, precision)


def _torch_gemm(precision: str, n: int, threads: int | None) -> tuple[Callable[[], Any], str]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    out = torch.empty(n, n, dtype=dtype)

    def run() -> None:
        with torch.no_grad():
            torch.matmul(a, b, out=out)

    return run, "torch.matmul"


def _numpy_gemm(n: int) -> tuple[Callable[[], Any], str]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    return (lambda: np.matmul(a, b, out=out)), "numpy.matmul"


def _ort_int8_gemm(n: int, threads: int | None) -> tuple[Callable[[], Any], str]:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.integers(-127, 128, size=(n, n), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "int8_gemm_probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])],
        initializer=[numpy_helper.from_array(weight, "b")],  # constant B is pre-packed, as in real graphs
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 256, size=(n, n), dtype=np.uint8)
    return (lambda: sess.run(None, {"a": a})), "onnxruntime MatMulInteger"


def _gemm(precision: str, n: int, threads: int | None) -> tuple[Callable[[], Any], str]:
    if precision == "int8":
        return _ort_int8_gemm(n, threads)
    try:
        return _torch_gemm(precision, n, threads)
    except ImportError:
        if precision == "fp32":
            return _numpy_gemm(n)
        raise


def measure_peak(
    precision: str,
    *,
    threads: int | None = None,
    sizes: Iterable[int] = (1024, 2048),
    duration: float = 0.5,
) -> PeakResult:
    """Measure one precision's GEMM throughput: the best median over ``sizes``.

    A precision whose library is missing returns a result with ``status`` saying so.

    Raises:
        ConfigError: an unknown precision.
    """
    if precision not in PEAK_PRECISIONS:
        raise ConfigError(f"no GEMM probe for precision {precision!r}; probes: {', '.join(PEAK_PRECISIONS)}")
    best: PeakResult | None = None
    for n in sizes:
        try:
            fn, engine = _gemm(precision, n, threads)
        except ImportError as e:
            return PeakResult(precision, float("nan"), "", n, threads, status=f"unavailable: {e}")
        stats = measure(fn, warmup=2, duration=duration)
        cpu = measure(fn, warmup=0, duration=duration, clock=time.process_time_ns)
        gops = 2.0 * n**3 / (stats.median_ms / 1000.0) / 1e9
        logger.debug("GEMM %s n=%d: %.1f GOP/s (%s)", precision, n, gops, engine)
        if best is None or gops > best.gops:
            best = PeakResult(precision, gops, engine, n, threads, gops_cpu=2.0 * n**3 / (cpu.median_ms / 1000.0) / 1e9)
    if best is None:
        raise ConfigError("measure_peak needs at least one matrix size")
    return best


def measure_peaks(
    precisions: Iterable[str] = PEAK_PRECISIONS, *, threads: int | None = None, duration: float = 0.5
) -> dict[str, PeakResult]:
    """Measure several precisions' peaks in turn; see :func:`measure_peak`."""
    return {p: measure_peak(p, threads=threads, duration=duration) for p in precisions}
