"""The OpenVINO backend: IR (``.xml``) or ONNX graphs compiled for the CPU with the LATENCY hint.

``precision`` picks both the file and the CPU's inference precision: ``fp32`` runs f32, ``bf16`` runs
the fp32 graph in bfloat16 (on CPUs with AVX512-BF16/AMX; others fall back to f32, with a warning),
``fp16`` the fp16-compressed IR, ``int8`` the quantized graph. A bound input (the template KV) is set
on the infer request once; only the search crop is set per frame. An output kept on the device (the
encoder's KV) is handed over as the request's own output tensor, which the decoder sets as it is.
Threads are not pinned to cores by
default (``ENABLE_CPU_PINNING`` off) and one stream serves the LATENCY hint: a pinned thread whose core
is busy with other work cannot move, and the whole parallel op waits for it (issue #23: int8 S
decoder, 2 threads, one busy-looping process beside it on a loaded 2-core host: 141 ms unpinned,
173 ms pinned, same run). OpenVINO is imported with its
telemetry off (:mod:`mfv2._openvino`): tracking opens no network connection.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mfv2._openvino import core as shared_core
from mfv2._openvino import import_openvino
from mfv2.artifacts import Artifact, Manifest, file_precision
from mfv2.errors import ConfigError
from mfv2.runtimes.base import BACKENDS, BaseSession, DeviceValue, FileBackend

__all__ = ["OpenVinoBackend", "OpenVinoSession", "OpenVinoDeviceValue"]

log = logging.getLogger(__name__)

# precision -> INFERENCE_PRECISION_HINT (None: the device default, i.e. what the graph holds).
_INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": None, "int8": None}


class OpenVinoDeviceValue(DeviceValue):
    """An output tensor of an :class:`OpenVinoSession`'s request, valid until that session's next run."""

    def __init__(self, tensor: Any, device: str) -> None:
        self.tensor = tensor
        self.device = device

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    def numpy(self) -> np.ndarray:
        return np.asarray(self.tensor.data)  # a view of the tensor's host memory


class OpenVinoSession(BaseSession):
    """One graph compiled by OpenVINO, run through a single synchronous infer request."""

    def __init__(self, path: str | os.PathLike[str], *, device: str = "CPU", config: Mapping[str, Any] | None = None,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        ov = import_openvino()

        self._ov = ov
        options = dict(config or {})
        if cache_dir is not None:  # per model, not on the shared Core
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            options["CACHE_DIR"] = str(cache_dir)
        self._compiled = shared_core().compile_model(str(path), device, options)
        self._request = self._compiled.create_infer_request()
        names = {p.get_any_name(): p for p in self._compiled.inputs}
        super().__init__(list(names), [p.get_any_name() for p in self._compiled.outputs], device,
                         {n: [d.get_length() if d.is_static else None for d in p.get_partial_shape()] for n, p in names.items()})
        self._types = {n: p.get_element_type().to_dtype() for n, p in names.items()}
        self._held: dict[str, np.ndarray] = {}  # arrays shared with bound tensors, kept alive here
        log.debug("openvino: %s on %s, inference precision %s", Path(path).name, device, self.inference_precision)

    @property
    def inference_precision(self) -> str:
        """The inference precision the compiled model actually uses (e.g. ``f32``, ``bf16``)."""
        value = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        return value.to_string() if hasattr(value, "to_string") else str(value)

    def _tensor(self, name: str, array: np.ndarray, copy: bool) -> Any:
        a = np.array(array, dtype=self._types[name], copy=True, order="C") if copy else np.ascontiguousarray(array, dtype=self._types[name])
        if copy:
            self._held[name] = a
        return self._ov.Tensor(a, shared_memory=True)

    def _bind(self, feeds: Mapping[str, Any]) -> None:
        for name, array in feeds.items():
            if isinstance(array, OpenVinoDeviceValue) and array.device == self.device:
                self._request.set_tensor(name, array.tensor)  # the same memory, no copy
                self._held[name] = array.numpy()
            else:
                self._request.set_tensor(name, self._tensor(name, array, copy=True))

    def _host_bound(self, name: str) -> np.ndarray | None:
        return self._held.get(name)

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        for name, array in feeds.items():
            self._request.set_tensor(name, self._tensor(name, array, copy=False))
        self._request.infer()
        return {n: OpenVinoDeviceValue(self._request.get_tensor(n), self.device) if n in self._keep
                else self._request.get_tensor(n).data.copy() for n in self.output_names}

    def close(self) -> None:
        super().close()
        self._held.clear()


@BACKENDS.register("openvino")
class OpenVinoBackend(FileBackend):
    """OpenVINO.

    Options:
        device: OpenVINO device name (default ``"CPU"``).
        hint: ``PERFORMANCE_HINT``, ``"LATENCY"`` (default; one frame at a time) or ``"THROUGHPUT"``.
        cache_dir: folder for compiled blobs, reused across runs (default: none).
        pinning: pin inference threads to cores (``ENABLE_CPU_PINNING``; default False, see above).
        streams: ``NUM_STREAMS`` (default: 1 with the LATENCY hint, OpenVINO's choice with THROUGHPUT).
    """

    name = "openvino"
    module = "openvino"
    extra = "openvino"
    precisions = ("fp32", "bf16", "fp16", "int8")
    formats: ClassVar[tuple[str, ...]] = ("openvino", "onnx")

    def __init__(self, *, precision: str = "fp32", threads: int | None = None, device: str = "CPU",
                 hint: str = "LATENCY", cache_dir: str | os.PathLike[str] | None = None, pinning: bool = False,
                 streams: int | None = None) -> None:
        super().__init__(precision=precision, threads=threads)
        if hint.upper() not in ("LATENCY", "THROUGHPUT"):
            raise ConfigError(f"openvino hint must be LATENCY or THROUGHPUT, got {hint!r}")
        self.device = device
        if streams is not None and streams < 1:
            raise ConfigError(f"openvino streams must be >= 1, got {streams}")
        self.hint = hint.upper()
        self.cache_dir = cache_dir
        self.pinning = pinning
        self.streams = streams if streams is not None else (1 if self.hint == "LATENCY" else None)

    def candidates(self) -> list[tuple[str, str]]:
        stored = file_precision(self.precision)
        return [(stored, f) for f in self.formats]

    def missing_hint(self, directory: Path) -> str:
        precision = self.candidates()[0][0]
        return f"export them with: mfv2 export --checkpoint CK --output {directory} --openvino {precision} (or --precision {precision})"

    def config(self) -> dict[str, Any]:
        """Compile options for ``compile_model``."""
        devices = shared_core().available_devices
        if self.device.split(".")[0] not in devices and self.device not in ("AUTO", "MULTI", "HETERO"):
            raise ConfigError(f"OpenVINO device {self.device!r} not found; available: {', '.join(devices)}")
        config: dict[str, Any] = {"PERFORMANCE_HINT": self.hint, "ENABLE_CPU_PINNING": self.pinning}
        if self.streams is not None:
            config["NUM_STREAMS"] = self.streams
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        if (precision := _INFERENCE_PRECISION[self.precision]) is not None:
            config["INFERENCE_PRECISION_HINT"] = precision
        return config

    def open(self, path: Path, artifact: Artifact, manifest: Manifest) -> OpenVinoSession:
        session = OpenVinoSession(path, device=self.device, config=self.config(), cache_dir=self.cache_dir)
        want = _INFERENCE_PRECISION[self.precision]
        if want is not None and session.inference_precision != want:
            log.warning("openvino: %s asked, but %s runs %s on this device", want, path.name, session.inference_precision)
        return session
