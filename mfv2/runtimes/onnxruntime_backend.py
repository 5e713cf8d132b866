"""The ONNX Runtime backend: the exported ONNX graphs on the CPU execution provider (CUDA/TensorRT EPs on request).

Sessions use graph optimisation level ALL, sequential execution and an explicit intra-op thread
count. Idle intra-op threads do not spin by default: on a machine whose cores other work shares, a
spinning thread takes a core from that work and then waits for it (issue #23: dynamic int8 S decoder,
2 threads, host at load 10 on 2 cores: 91.6 ms without spinning, 122.9 ms with it, same run). Inputs go through an IOBinding, so a bound input (the template KV) is handed to ONNX Runtime
once per template update instead of being copied on every frame; an output kept on the device (the
encoder's KV) comes back as the ``OrtValue`` ONNX Runtime wrote, which the decoder binds as it is. At int8 the CPU runs the
dynamically quantized graphs (``*.int8-dynamic.onnx``) when the export has them, else (older exports)
the static Q/DQ ones; the CUDA and TensorRT providers always take the Q/DQ graphs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mfv2.artifacts import FORMATS, Artifact, Manifest
from mfv2.errors import BackendUnavailableError, ConfigError
from mfv2.fileio import atomic_path, sha256
from mfv2.runtimes.base import BACKENDS, BaseSession, DeviceValue, FileBackend

__all__ = ["OnnxRuntimeBackend", "OrtSession", "OrtDeviceValue", "PROVIDERS"]

log = logging.getLogger(__name__)

# device option -> execution providers, in priority order (ORT falls back along the list per node).
PROVIDERS: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class OrtDeviceValue(DeviceValue):
    """An ``OrtValue`` output of an :class:`OrtSession` (each run writes kept outputs into a new one)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape())

    @property
    def device(self) -> str:
        return str(self.value.device_name()).lower()

    def numpy(self) -> np.ndarray:
        return np.asarray(self.value.numpy())  # on the CPU a view of ONNX Runtime's buffer


class OrtSession(BaseSession):
    """One ONNX graph in an ``onnxruntime.InferenceSession`` driven through an IOBinding."""

    def __init__(self, path: str | os.PathLike[str], *, providers: tuple[str, ...], threads: int | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, spinning: bool = False) -> None:
        import onnxruntime as ort

        self._ort = ort
        path = Path(path)
        model_path = _optimized_model(path, providers, cache_dir) if cache_dir is not None else path
        options = _session_options(threads, spinning)
        self._session = ort.InferenceSession(str(model_path), options, providers=list(providers))
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        used = self._session.get_providers()[0]
        device = "cpu" if used == "CPUExecutionProvider" else "cuda:0"
        self.path = path  #: the graph file this session runs
        super().__init__([i.name for i in inputs], [o.name for o in outputs], device,
                         {i.name: [d if isinstance(d, int) else None for d in i.shape] for i in inputs})
        self._types = {i.name: _NUMPY_TYPES.get(i.type, np.float32) for i in inputs}
        self._binding = self._session.io_binding()
        for name in self.output_names:
            self._binding.bind_output(name)
        self._held: dict[str, Any] = {}  # OrtValues bound across calls, kept alive here
        self._last_shapes: tuple[tuple[int, ...], ...] | None = None
        log.debug("onnxruntime: %s on %s", path.name, used)

    def _bind(self, feeds: Mapping[str, Any]) -> None:
        for name, array in feeds.items():
            if isinstance(array, OrtDeviceValue) and array.device == self.device.split(":")[0]:
                # bound as it is: the same buffer, no copy (on the CPU, host edits reach it)
                value, owned = array.value, array.numpy() if self.device == "cpu" else None
            else:
                owned = np.array(array, dtype=self._types[name], copy=True, order="C")
                value = self._ort.OrtValue.ortvalue_from_numpy(owned, self.device.split(":")[0], 0)
            self._binding.bind_ortvalue_input(name, value)
            self._held[name] = (owned, value)

    def _host_bound(self, name: str) -> np.ndarray | None:
        owned = self._held[name][0] if name in self._held else None
        return owned if self.device == "cpu" else None

    def _bound_value(self, name: str) -> Any:
        return self._held[name][1].numpy()

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        for name, array in feeds.items():
            self._binding.bind_cpu_input(name, np.ascontiguousarray(array, dtype=self._types[name]))
        shapes = tuple(np.shape(a) for a in feeds.values())
        # Kept outputs get a fresh buffer per run (the last one stays valid wherever it is bound); the
        # others keep theirs while the input shapes do (a dynamic batch that changes needs new ones).
        for name in self.output_names if shapes != self._last_shapes else self._keep:
            self._binding.bind_output(name, self.device.split(":")[0])
        self._last_shapes = shapes
        self._session.run_with_iobinding(self._binding)
        if not self._keep:
            return dict(zip(self.output_names, self._binding.copy_outputs_to_cpu()))
        return {n: OrtDeviceValue(v) if n in self._keep else np.array(v.numpy())
                for n, v in zip(self.output_names, self._binding.get_outputs())}

    def close(self) -> None:
        super().close()
        self._held.clear()


def _session_options(threads: int | None, spinning: bool, level: str = "ORT_ENABLE_ALL") -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    flag = "1" if spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", flag)
    options.add_session_config_entry("session.inter_op.allow_spinning", flag)
    return options


def _optimized_model(path: Path, providers: tuple[str, ...], cache_dir: str | os.PathLike[str]) -> Path:
    """The graph with ONNX Runtime's portable (extended-level) optimisations applied, cached on disk.

    Layout optimisations depend on the CPU, so they are left to session creation; the cache key is
    the file's hash, the ONNX Runtime version, the providers and the machine type.
    """
    import onnxruntime as ort

    digest = sha256(path)[:16]
    tag = hashlib.sha256(f"{ort.__version__}|{','.join(providers)}|{platform.machine()}".encode()).hexdigest()[:8]
    cached = Path(cache_dir) / f"{path.stem}.{digest}.{tag}.onnx"
    if cached.is_file():
        log.debug("onnxruntime: optimised model from cache %s", cached)
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    options = _session_options(None, False, "ORT_ENABLE_EXTENDED")
    with atomic_path(cached) as tmp:
        options.optimized_model_filepath = str(tmp)
        ort.InferenceSession(str(path), options, providers=list(providers))
    log.info("onnxruntime: cached the optimised %s as %s", path.name, cached)
    return cached


@BACKENDS.register("onnxruntime")
class OnnxRuntimeBackend(FileBackend):
    """ONNX Runtime.

    Options:
        device: ``"cpu"`` (default), ``"cuda"`` or ``"tensorrt"`` (the CUDA / TensorRT execution
            providers of ``onnxruntime-gpu``, with CPU fallback).
        cache_dir: folder for optimised graphs, reused across runs (default: none).
        spinning: let idle intra-op threads spin between ops (default False: a spinning thread holds a
            core that other work on a shared machine needs; True can shave a little latency on a
            machine that runs nothing else).
    """

    name = "onnxruntime"
    module = "onnxruntime"
    extra = "onnxruntime"
    precisions = FORMATS.get("onnx").precisions
    formats: ClassVar[tuple[str, ...]] = ("onnx-dynamic", "onnx")

    def __init__(self, *, precision: str = "fp32", threads: int | None = None, device: str = "cpu",
                 cache_dir: str | os.PathLike[str] | None = None, spinning: bool = False) -> None:
        super().__init__(precision=precision, threads=threads)
        if device not in PROVIDERS:
            raise ConfigError(f"onnxruntime device must be one of {', '.join(PROVIDERS)}, got {device!r}")
        self.device = device
        self.cache_dir = cache_dir
        self.spinning = spinning

    def candidates(self) -> list[tuple[str, str]]:
        """Dynamic int8 graphs first on the CPU; TensorRT builds int8 from Q/DQ and has no MatMulInteger."""
        if self.precision == "int8" and self.device == "cpu":
            return [("int8", f) for f in self.formats]
        return [(self.precision, "onnx")]

    def providers(self) -> tuple[str, ...]:
        """Execution providers for ``device``; raises if the first one is not in this onnxruntime build."""
        import onnxruntime as ort

        wanted = PROVIDERS[self.device]
        have = ort.get_available_providers()
        if wanted[0] not in have:
            raise BackendUnavailableError(
                f"this onnxruntime has no {wanted[0]} (it has {', '.join(have)}); "
                "install onnxruntime-gpu for CUDA/TensorRT, or use device 'cpu'"
            )
        return wanted

    def open(self, path: Path, artifact: Artifact, manifest: Manifest) -> OrtSession:
        return OrtSession(path, providers=self.providers(), threads=self.threads, cache_dir=self.cache_dir,
                          spinning=self.spinning)
