"""ModelRunner: templates in once, one search crop per frame, for every backend; and ``load_backend``.

With the split graphs the template encoder runs only when a template changes and its KV output stays
bound inside the search decoder's runtime; with the full graph the templates stay bound instead. Both
paths give the same boxes (the split one is a re-ordering of the same arithmetic).

The KV goes from the encoder to the decoder without a host round trip: the encoder leaves it on the
device (an ``OrtValue``, an OpenVINO tensor, a torch tensor) and the decoder binds that very buffer.
A batch of targets (``set_templates(..., rows=)``) keeps one bound batch in the decoder whose rows
are rewritten in place when one target's templates change; per frame only the search crops move.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from mfv2.artifacts import FORMATS, GRAPH_MODES, GRAPHS, MANIFEST_NAME, Manifest, exporter_fingerprint, load_manifest, runtime_family
from mfv2.errors import BackendUnavailableError, ConfigError, Mfv2Error, ShapeError
from mfv2.fileio import cache_dir as default_cache_dir
from mfv2.fileio import sha256
from mfv2.runtimes.base import SPLIT_GRAPHS, DeviceValue, FileBackend, GraphMode, Session, get_backend

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
        batch: the fixed batch of the graphs, ``None`` for a dynamic batch (any number of targets).
        rows: batch rows bound now (the targets :meth:`predict` expects crops for).
    """

    def __init__(self, sessions: Mapping[str, Session], manifest: Manifest, *, backend: str, precision: str) -> None:
        self.manifest = manifest
        self.backend = backend
        self.precision = precision
        self._sessions = dict(sessions)
        self.family = runtime_family(manifest.family)  #: pre/post-processing and template policy
        if all(g in sessions for g in SPLIT_GRAPHS):
            self.graph = "split"
            self._encoder: Session | None = sessions["template_encoder"]
            self._decoder = sessions["search_decoder"]
        elif "full" in sessions:
            self.graph = "full"
            self._encoder, self._decoder = None, sessions["full"]
        else:
            raise ConfigError(f"a runner needs the full graph or both of {', '.join(SPLIT_GRAPHS)}; got {', '.join(sessions)}")
        m = manifest.model
        self.batch: int | None = manifest.batch
        self._template_shape = (self.batch, 3, m.template_size, m.template_size)
        self._search_shape = (self.batch, 3, m.search_size, m.search_size)
        self.online_templates = self._declared_online_count()
        self.auto: Any = None  #: the :class:`~mfv2.runtimes.auto.AutoChoice` when loaded with ``auto``
        self._fixed: dict[str, np.ndarray] = {}  # bound inputs of sessions that cannot bind themselves
        if self._encoder is not None and hasattr(self._encoder, "keep_on_device"):
            self._encoder.keep_on_device(["kv"])
        self._kv_shared = False  # the decoder's KV is the encoder's output buffer (rewritten by its next run)
        self._kv_value: Any = None
        self._scratch: dict[str, np.ndarray] = {}  # fixed-batch encoder inputs for row updates
        self.rows = 0
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
                batch_differs = isinstance(declared[0], int) != isinstance(want[key][0], int)  # fixed vs dynamic
                if len(declared) != 4 or batch_differs or any(isinstance(d, int) and d != w for d, w in zip(declared, want[key])):
                    raise ConfigError(
                        f"the {name} graph takes {key} {_dims(declared)} but its manifest says {_dims(want[key])}; "
                        "the export directory does not match its model, re-export it"
                    )
        return count

    def set_templates(self, template: np.ndarray, online_template: np.ndarray | None = None,
                      rows: Sequence[int] | None = None) -> None:  # fmt: skip
        """Set the templates used by every following :meth:`predict` call.

        Args:
            template: (B, 3, Z, Z) float32, RGB ImageNet-normalised crop of the first frame.
            online_template: (B, 3, Z, Z) or (B, K, 3, Z, Z) float32, the online template(s), for
                families whose graphs take one (``online_template`` in ``family.template_inputs``);
                the others (MVT) ignore it.
            rows: the batch rows these B templates are for; the other rows keep theirs. ``None``
                (default) replaces the whole batch. A fixed batch takes rows below :attr:`batch`; a
                dynamic one also row :attr:`rows` (and on), which appends targets.

        Raises:
            ShapeError: arrays of the wrong shape, or rows outside the batch.
        """
        t, ot = self._template_pair(template, online_template)
        b = t.shape[0]
        if rows is None:
            if self.batch is not None and b != self.batch:
                raise ShapeError(f"template: expected {_dims(self._template_shape)} float32, got {t.shape}")
            self._set_all(t, ot)
            self.rows = b
        else:
            rows = [int(r) for r in rows]
            limit = self.batch if self.batch is not None else self.rows + b
            if len(rows) != b or len(set(rows)) != b or min(rows) < 0 or max(rows) >= limit:
                raise ShapeError(
                    f"rows {rows} for {b} template(s): need {b} distinct rows below {limit} "
                    f"({'the fixed batch' if self.batch is not None else 'the bound rows plus the new ones'})"
                )
            self._set_rows(t, ot, rows)
            self.rows = self.batch if self.batch is not None else max(self.rows, max(rows) + 1)
        self._ready = True

    def drop_rows(self, rows: Sequence[int]) -> None:
        """Forget batch rows: a dynamic batch shrinks (later rows move up, in order); a fixed batch keeps
        them as padding, whose outputs are to be ignored until they are set again."""
        gone = {int(r) for r in rows}
        if self.batch is not None or not gone:
            return
        keep = [r for r in range(self.rows) if r not in gone]
        if not keep:
            self.rows, self._ready = 0, False
            return
        for session, name, axis in self._batch_inputs():
            if name in self._fixed:
                self._fixed[name] = np.take(self._fixed[name], keep, axis=axis)
            else:
                session.keep_rows(name, axis, keep)  # type: ignore[attr-defined]
        self.rows = len(keep)

    def _template_pair(self, template: np.ndarray, online_template: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        if not isinstance(template, np.ndarray) or template.ndim != 4 or template.shape[1:] != self._template_shape[1:]:
            got = template.shape if isinstance(template, np.ndarray) else type(template).__name__
            raise ShapeError(f"template: expected {_dims(self._template_shape)} float32, got {got}")
        t = np.ascontiguousarray(template, dtype=np.float32)
        if "online_template" not in self.family.template_inputs:
            return t, None
        if online_template is None:
            raise ShapeError(f"this {self.family.title} model takes an online template; pass online_template")
        ot = np.ascontiguousarray(online_template, dtype=np.float32)
        k = ot.shape[1] if ot.ndim == 5 else 1
        inner = ot.shape[2:] if ot.ndim == 5 else ot.shape[1:]
        if ot.ndim not in (4, 5) or ot.shape[0] != t.shape[0] or inner != self._template_shape[1:]:
            raise ShapeError(
                f"online_template: expected {_dims(self._template_shape)} or (B, K, 3, Z, Z) float32, got {ot.shape}"
            )
        if self.online_templates is not None and k != self.online_templates:
            raise ShapeError(
                f"this {self.backend} model takes {self.online_templates} online template(s), got {k}; "
                "use online_size 1 or the torch backend"
            )
        return t, ot

    def _feeds(self, t: np.ndarray, ot: np.ndarray | None) -> dict[str, np.ndarray]:
        """The template inputs of the family's graphs."""
        return {"template": t} if ot is None else {"template": t, "online_template": ot}

    def _set_all(self, t: np.ndarray, ot: np.ndarray | None) -> None:
        if self._encoder is not None:
            kv = self._encoder.infer(self._feeds(t, ot))["kv"]
            self._bind(self._decoder, {"kv": kv})  # a DeviceValue: bound as it is, no copy
            self._kv_shared = isinstance(kv, DeviceValue) and "kv" not in self._fixed
            self._kv_value = kv
        else:
            self._bind(self._decoder, self._feeds(t, ot))

    def _set_rows(self, t: np.ndarray, ot: np.ndarray | None, rows: list[int]) -> None:
        """Encode the templates of ``rows`` only and write their KV (or, full graph, the templates) into the bound batch."""
        if self._kv_shared and self._ready:
            # The decoder reads the encoder's output buffer, which the encoder run below rewrites: own it once.
            self._bind(self._decoder, {"kv": np.array(self._kv_value, dtype=np.float32)})
        self._kv_shared, self._kv_value = False, None
        if self._encoder is None:
            updates = self._feeds(t, ot)
            source = None
        elif self.batch is None:
            updates, source = {"kv": self._encoder.infer(self._feeds(t, ot))["kv"]}, None
        else:
            # A fixed-batch encoder runs all its rows: the changed templates go in at their own rows.
            feeds = self._feeds(t, ot)
            for name, x in feeds.items():
                buf = self._scratch.get(name)
                if buf is None or buf.shape[1:] != x.shape[1:]:
                    buf = self._scratch[name] = np.zeros((self.batch, *x.shape[1:]), np.float32)
                buf[rows] = x
            kv = self._encoder.infer({name: self._scratch[name] for name in feeds})["kv"]
            updates, source = {"kv": kv}, rows
        fresh = not self._ready or (self.batch is None and self.rows == 0)
        for session, name, axis in self._batch_inputs():
            value = updates[name]
            if fresh:
                self._bind(session, {name: self._first_batch(value, axis, rows, source)})
                continue
            if name in self._fixed:
                held = self._fixed[name]
                v = np.asarray(value) if source is None else np.take(np.asarray(value), source, axis=axis)
                if max(rows) >= held.shape[axis]:
                    pad = list(held.shape)
                    pad[axis] = max(rows) + 1 - held.shape[axis]
                    held = self._fixed[name] = np.concatenate([held, np.zeros(pad, held.dtype)], axis=axis)
                held[(slice(None),) * axis + (rows,)] = v
            else:
                session.write_rows(name, axis, rows, value, source)  # type: ignore[attr-defined]

    def _first_batch(self, value: Any, axis: int, rows: list[int], source: list[int] | None) -> np.ndarray:
        """The first bound batch: zeros for the padding rows, ``value``'s rows at ``rows``."""
        v = np.asarray(value)
        if source is not None:
            v = np.take(v, source, axis=axis)
        shape = list(v.shape)
        shape[axis] = self.batch if self.batch is not None else max(rows) + 1
        batch = np.zeros(shape, np.float32)
        batch[(slice(None),) * axis + (rows,)] = v
        return batch

    def _batch_inputs(self) -> list[tuple[Session, str, int]]:
        """(session, input, batch axis) of every bound per-target input."""
        if self._encoder is not None:
            return [(self._decoder, "kv", self.family.kv_batch_axis)]
        return [(self._decoder, name, 0) for name in self.family.template_inputs]

    def _bind(self, session: Session, feeds: dict[str, Any]) -> None:
        bind = getattr(session, "bind", None)
        if bind is None:
            self._fixed.update({k: np.array(v, dtype=np.float32, copy=True) for k, v in feeds.items()})
        else:
            bind(feeds)

    def predict(self, search: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes and scores for a search crop.

        Args:
            search: (B, 3, X, X) float32, RGB search crop normalised as the manifest says.

        Returns:
            ``boxes`` (B, 4) float32 cx, cy, w, h normalised to the crop, and ``score`` (B,) float32
            probabilities, made from the graph outputs by the family's post-processing (MVT: Hann
            window, argmax, decode). Non-finite values are passed through; the tracker handles them.
        """
        if not self._ready:
            raise Mfv2Error("ModelRunner.predict() called before set_templates(); set the templates first")
        if not isinstance(search, np.ndarray) or search.shape[1:] != self._search_shape[1:] or search.shape[0] != self.rows:
            got = search.shape if isinstance(search, np.ndarray) else type(search).__name__
            raise ShapeError(f"search: expected {_dims((self.rows, *self._search_shape[1:]))} float32, got {got}")
        s = np.ascontiguousarray(search, dtype=np.float32)
        out = self._decoder.infer({**self._fixed, "search": s} if self._fixed else {"search": s})
        return self.family.postprocess(out, s.shape[0])

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


def _dims(shape: Sequence[Any]) -> str:
    """A shape for messages, a dynamic axis shown as ``B``."""
    return "(" + ", ".join(str(d) if isinstance(d, int) else "B" for d in shape) + ")"


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
    if graph not in GRAPH_MODES:
        raise ConfigError(f"graph must be one of {', '.join(GRAPH_MODES)}, got {graph!r}")
    export_first = issubclass(cls, FileBackend) and _is_checkpoint(artifact)
    cls.check_options(backend_options, ("graph", "verify_hashes", *(("variant",) if export_first else ())))
    variant = backend_options.pop("variant", None) if export_first else None
    try:
        backend = cls(precision=precision, threads=threads, **backend_options)
    except TypeError as e:
        raise ConfigError(f"bad option for the {name} backend: {e}") from e
    if export_first:
        artifact = cached_export(artifact, variant=variant, precisions=(precision,))
    if isinstance(backend, FileBackend):
        manifest, sessions = backend.load(artifact, graph, verify_hashes=verify_hashes)
    else:
        manifest, sessions = backend.load(artifact, graph)
    return ModelRunner(sessions, manifest, backend=name, precision=precision)


def cached_export(
    checkpoint: str | os.PathLike[str],
    *,
    variant: str | None = None,
    precisions: Sequence[str] = ("fp32",),
    openvino: Sequence[str] = (),
    skip_failed: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Export ``checkpoint`` once into the export cache and reuse it afterwards (track, eval, bench, demo).

    The cache lives in ``cache_dir``, else :func:`mfv2.fileio.cache_dir` (``$MFV2_CACHE`` or
    ``~/.cache/mfv2``) under ``exports/``, one folder per checkpoint SHA-256, variant, toolkit version
    and :func:`~mfv2.artifacts.manifest.exporter_fingerprint` (a changed exporter re-exports). A cached
    export lacking an asked ONNX ``precisions`` or ``openvino`` precision is exported again with the
    union of what it held and what is asked. ``skip_failed``: a low-precision variant that misses its
    parity gate is left out and recorded in the manifest (it then counts as present); otherwise the
    gate error is raised. Needs torch and onnx (``pip install "mfv2[onnx]"``).
    """
    from mfv2 import __version__

    src = Path(checkpoint)
    key = f"{sha256(src)[:16]}-{variant or 'auto'}-{__version__}-{exporter_fingerprint()}"
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir("exports")
    out = target / key
    # bf16 is a runtime setting, not a file: a precision a format cannot hold asks for nothing
    wanted = {f: tuple(p for p in dict.fromkeys(ps) if p in FORMATS.get(f).precisions)
              for f, ps in (("onnx", ("fp32", *precisions)), ("openvino", openvino))}  # fmt: skip

    def held() -> dict[str, set[str]] | None:
        """Per format, the precisions the cached export holds for every graph (or left out, with skip_failed)."""
        if not (out / MANIFEST_NAME).is_file():
            return None
        m = load_manifest(out)
        return {f: {p for p in FORMATS.get(f).precisions
                    if all(m.find(g, p, f) for g in GRAPHS) or (skip_failed and m.rejection(p, (f,)))}
                for f in wanted}  # fmt: skip

    have = held()
    if have is not None and all(set(ps) <= have[f] for f, ps in wanted.items()):
        log.info("using the cached export %s", out)
        return out
    missing = [m for m in ("torch", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendUnavailableError(
            f"exporting {src} on the fly needs {' and '.join(missing)}; install them with: pip install \"mfv2[onnx]\", "
            "or pass an export directory made elsewhere"
        )
    from mfv2.exporters import export

    from mfv2.fileio import cleanup_on_terminate, output_error

    union = {f: tuple(p for p in FORMATS.get(f).precisions if p in set(ps) | (have or {}).get(f, set()))
             for f, ps in wanted.items()}  # fmt: skip
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(target, e) from e
    with cleanup_on_terminate():  # SIGTERM removes the unfinished export as Ctrl-C does
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=target))
        try:
            log.info("exporting %s into the cache %s (once per checkpoint)", src, out)
            export(src, tmp / "export", variant=variant, precisions=union["onnx"], openvino=union["openvino"],
                   overwrite=True, skip_failed=skip_failed)  # fmt: skip
            shutil.rmtree(out, ignore_errors=True)  # an unfinished export, or one without these precisions
            try:
                os.replace(tmp / "export", out)
            except OSError:
                if held() is None:  # else another process finished the same export first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out
