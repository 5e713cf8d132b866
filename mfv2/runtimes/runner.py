"""ModelRunner: templates in once, one search crop per frame, for every backend; and ``load_backend``.

With the split graphs the template encoder runs only when a template changes and its KV output stays
bound inside the search decoder's runtime; with the full graph the templates stay bound instead. Both
paths give the same boxes (the split one is a re-ordering of the same arithmetic).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from mfv2.artifacts import MANIFEST_NAME, Manifest, exporter_fingerprint, load_manifest
from mfv2.errors import BackendUnavailableError, ConfigError, Mfv2Error, ShapeError
from mfv2.fileio import cache_dir as default_cache_dir
from mfv2.fileio import sha256
from mfv2.runtimes.base import SPLIT_GRAPHS, FileBackend, GraphMode, Session, get_backend

__all__ = ["ModelRunner", "load_backend", "cached_export", "CHECKPOINT_SUFFIXES"]

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".tar", ".ckpt")


class ModelRunner:
    """Runs one tracker network on one backend.

    Attributes:
        manifest: model and tracker facts (input sizes, mean/std, default tracker settings).
        graph: ``"split"`` (template encoder + search decoder) or ``"full"``.
        backend, precision: what was loaded.
        online_templates: number of online templates the graphs take, ``None`` if any number.
    """

    def __init__(self, sessions: Mapping[str, Session], manifest: Manifest, *, backend: str, precision: str) -> None:
        self.manifest = manifest
        self.backend = backend
        self.precision = precision
        self._sessions = dict(sessions)
        if all(g in sessions for g in SPLIT_GRAPHS):
            self.graph = "split"
            self._encoder: Session | None = sessions["template_encoder"]
            self._decoder = sessions["search_decoder"]
        elif "full" in sessions:
            self.graph = "full"
            self._encoder, self._decoder = None, sessions["full"]
        else:
            raise ConfigError(f"a runner needs the full graph or both of {', '.join(SPLIT_GRAPHS)}; got {', '.join(sessions)}")
        m, b = manifest.model, manifest.batch
        self._template_shape = (b, 3, m.template_size, m.template_size)
        self._search_shape = (b, 3, m.search_size, m.search_size)
        self.online_templates = self._declared_online_count()
        self.auto: Any = None  #: the :class:`~mfv2.runtimes.auto.AutoChoice` when loaded with ``auto``
        self._fixed: dict[str, np.ndarray] = {}  # bound inputs of sessions that cannot bind themselves
        self._ready = False

    @property
    def device(self) -> str:
        return self._decoder.device

    @property
    def template_size(self) -> int:
        return self.manifest.model.template_size

    @property
    def search_size(self) -> int:
        return self.manifest.model.search_size

    def _declared_online_count(self) -> int | None:
        """Check the graphs' declared input shapes against the manifest; return the online-template count they fix.

        ``None`` means any number (the torch backend, or a dynamic axis).
        """
        want = {"template": self._template_shape, "online_template": self._template_shape, "search": self._search_shape}
        count: int | None = None
        for name, session in self._sessions.items():
            for key, declared in getattr(session, "input_shapes", {}).items():
                if key not in want:
                    continue
                if key == "online_template" and len(declared) == 5:
                    count = declared[1] if isinstance(declared[1], int) else None
                    declared = declared[:1] + declared[2:]
                elif key == "online_template":
                    count = 1
                if len(declared) != 4 or any(isinstance(d, int) and d != w for d, w in zip(declared, want[key])):
                    raise ConfigError(
                        f"the {name} graph takes {key} {list(declared)} but its manifest says {list(want[key])}; "
                        "the export directory does not match its model, re-export it"
                    )
        return count

    def set_templates(self, template: np.ndarray, online_template: np.ndarray) -> None:
        """Set the templates used by every following :meth:`predict` call.

        Args:
            template: (B, 3, Z, Z) float32, RGB ImageNet-normalised crop of the first frame.
            online_template: (B, 3, Z, Z) or (B, K, 3, Z, Z) float32, the online template(s).
        """
        t = self._checked("template", template, self._template_shape)
        ot = np.ascontiguousarray(online_template, dtype=np.float32)
        k = ot.shape[1] if ot.ndim == 5 else 1
        inner = ot.shape[2:] if ot.ndim == 5 else ot.shape[1:]
        if ot.ndim not in (4, 5) or ot.shape[0] != t.shape[0] or inner != self._template_shape[1:]:
            raise ShapeError(
                f"online_template: expected {self._template_shape} or (B, K, 3, Z, Z) float32, got {ot.shape}"
            )
        if self.online_templates is not None and k != self.online_templates:
            raise ShapeError(
                f"this {self.backend} model takes {self.online_templates} online template(s), got {k}; "
                "use online_size 1 or the torch backend"
            )
        if self._encoder is not None:
            kv = self._encoder.infer({"template": t, "online_template": ot})["kv"]
            self._bind(self._decoder, {"kv": kv})
        else:
            self._bind(self._decoder, {"template": t, "online_template": ot})
        self._ready = True

    def _bind(self, session: Session, feeds: dict[str, np.ndarray]) -> None:
        bind = getattr(session, "bind", None)
        if bind is None:
            self._fixed = {k: np.array(v, copy=True) for k, v in feeds.items()}
        else:
            bind(feeds)

    def predict(self, search: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes and scores for a search crop.

        Args:
            search: (B, 3, X, X) float32, RGB ImageNet-normalised search crop.

        Returns:
            ``boxes`` (B, 4) float32 cx, cy, w, h normalised to the crop, and ``score`` (B,) float32
            probabilities. Non-finite values are passed through; the tracker handles them.
        """
        if not self._ready:
            raise Mfv2Error("ModelRunner.predict() called before set_templates(); set the templates first")
        s = self._checked("search", search, self._search_shape)
        out = self._decoder.infer({**self._fixed, "search": s})
        b = s.shape[0]
        return (
            np.asarray(out["boxes"], dtype=np.float32).reshape(b, 4),
            np.asarray(out["score"], dtype=np.float32).reshape(b),
        )

    @staticmethod
    def _checked(name: str, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if not isinstance(x, np.ndarray) or x.shape != shape:
            got = x.shape if isinstance(x, np.ndarray) else type(x).__name__
            raise ShapeError(f"{name}: expected {shape} float32, got {got}")
        return np.ascontiguousarray(x, dtype=np.float32)

    def close(self) -> None:
        """Release every session (idempotent)."""
        for s in self._sessions.values():
            s.close()
        self._sessions.clear()
        self._ready = False

    def __enter__(self) -> ModelRunner:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"ModelRunner(backend={self.backend!r}, graph={self.graph!r}, precision={self.precision!r}, "
            f"model={self.manifest.model.name!r}, device={self.device!r})"
        )


def _is_checkpoint(artifact: Any) -> bool:
    return isinstance(artifact, (str, os.PathLike)) and Path(artifact).is_file() and Path(artifact).suffix in CHECKPOINT_SUFFIXES


def load_backend(
    name: str,
    artifact: Any = None,
    *,
    precision: str = "fp32",
    threads: int | None = None,
    graph: GraphMode = "auto",
    verify_hashes: bool = True,
    **backend_options: Any,
) -> ModelRunner:
    """Load a model on a runtime backend.

    Args:
        name: ``torch``, ``onnxruntime``, ``openvino``, ``tensorrt``, a plugin backend, or ``auto``: the
            fastest CPU path whose accuracy gate passed, from a short calibration run cached per
            machine and model (:mod:`mfv2.runtimes.auto`).
        artifact: an export directory (or a graph file listed in one); for ``torch`` also a
            checkpoint, a ``MixFormerV2`` instance or ``None`` with ``variant=``. A checkpoint given to a
            file backend is exported on the fly into a cache (see :func:`cached_export`).
        precision: ``fp32``, ``fp16``, ``bf16`` or ``int8``, as the backend supports, or ``auto`` (chosen
            with the backend as ``name="auto"`` does).
        threads: CPU threads of the runtime (``None``: its default).
        graph: ``split``, ``full``, or ``auto`` (split when exported).
        verify_hashes: file backends refuse a graph whose SHA-256 differs from the one its manifest
            records (default True); pass False only for graphs edited on purpose after the export.
        **backend_options: backend-specific keyword options (e.g. ``device``, ``cache_dir``).

    Raises:
        UnknownNameError: unknown backend. BackendUnavailableError: its package is missing.
        ConfigError: a bad option, or an artifact the backend cannot run.
    """
    if "auto" in (name, precision):
        from mfv2.runtimes.auto import load_auto

        return load_auto(artifact, backend=name, precision=precision, threads=threads, graph=graph,
                         verify_hashes=verify_hashes, **backend_options)  # fmt: skip
    cls = get_backend(name)
    cls.require()
    if graph not in ("auto", "split", "full"):
        raise ConfigError(f"graph must be auto, split or full, got {graph!r}")
    export_first = issubclass(cls, FileBackend) and _is_checkpoint(artifact)
    cls.check_options(backend_options, ("graph", "verify_hashes", *(("variant",) if export_first else ())))
    variant = backend_options.pop("variant", None) if export_first else None
    try:
        backend = cls(precision=precision, threads=threads, **backend_options)
    except TypeError as e:
        raise ConfigError(f"bad option for the {name} backend: {e}") from e
    if export_first:
        artifact = cached_export(artifact, variant=variant, precision=precision)
    if isinstance(backend, FileBackend):
        manifest, sessions = backend.load(artifact, graph, verify_hashes=verify_hashes)
    else:
        manifest, sessions = backend.load(artifact, graph)
    return ModelRunner(sessions, manifest, backend=name, precision=precision)


def cached_export(
    checkpoint: str | os.PathLike[str],
    *,
    variant: str | None = None,
    precision: str = "fp32",
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Export ``checkpoint`` once into a cache keyed by its SHA-256 and reuse it afterwards.

    The cache lives in ``cache_dir``, else ``$MFV2_CACHE``, else ``~/.cache/mfv2`` (under ``exports/``);
    its key also holds :func:`~mfv2.artifacts.manifest.exporter_fingerprint`, so a changed exporter re-exports.
    Needs torch and onnx (``pip install "mfv2[onnx]"``).
    """
    from mfv2 import __version__

    src = Path(checkpoint)
    key = f"{sha256(src)[:16]}-{variant or 'auto'}-{__version__}-{exporter_fingerprint()}"
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir("exports")
    out = target / key
    precisions = tuple(dict.fromkeys(("fp32", precision if precision in ("fp16", "int8") else "fp32")))

    def usable() -> bool:
        return (out / MANIFEST_NAME).is_file() and all(load_manifest(out).find("full", p) for p in precisions)

    if usable():
        log.info("using the cached export %s", out)
        return out
    missing = [m for m in ("torch", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendUnavailableError(
            f"exporting {src} on the fly needs {' and '.join(missing)}; install them with: pip install \"mfv2[onnx]\", "
            "or pass an export directory made elsewhere"
        )
    from mfv2.export import export

    from mfv2.fileio import cleanup_on_terminate, output_error

    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(target, e) from e
    with cleanup_on_terminate():  # SIGTERM removes the unfinished export as Ctrl-C does
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=target))
        try:
            log.info("exporting %s into the cache %s (once per checkpoint)", src, out)
            export(src, tmp / "export", variant=variant, precisions=precisions, overwrite=True)
            shutil.rmtree(out, ignore_errors=True)  # an unfinished export, or one without this precision
            try:
                os.replace(tmp / "export", out)
            except OSError:
                if not usable():  # else another process finished the same export first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out
