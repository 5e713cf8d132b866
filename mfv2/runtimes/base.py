"""Sessions and the backend registry: what every runtime backend implements.

A :class:`Session` runs one graph: named NumPy inputs in, named NumPy outputs out. A :class:`Backend`
turns an artifact (an export directory, or for ``torch`` a checkpoint or a model) into the sessions
of the ``full`` graph or of the split pair ``template_encoder`` + ``search_decoder``. Built-in backends
register in :data:`BACKENDS`; third-party ones come from the entry-point group ``mfv2.backends``.
Nothing here imports torch or any runtime package.

A manifest is data from disk, not a trusted index: every file it names is resolved with
:func:`artifact_path`, which refuses names that leave the export directory (``..``, absolute paths,
symbolic links pointing out), and checked against the SHA-256 recorded at export unless the caller
opts out (``verify_hashes=False``, ``mfv2 track --no-verify``) after editing graphs on purpose.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from mfv2.artifacts import MANIFEST_NAME, SPLIT_GRAPHS, Artifact, GraphMode, Manifest, load_manifest
from mfv2.errors import BackendUnavailableError, ConfigError, Mfv2Error, ShapeError
from mfv2.fileio import sha256
from mfv2.registry import Registry

__all__ = [
    "Session",
    "BaseSession",
    "DeviceValue",
    "Backend",
    "FileBackend",
    "BACKENDS",
    "GraphMode",
    "SPLIT_GRAPHS",
    "get_backend",
    "available_backends",
    "resolve_export",
    "artifact_path",
    "verify_artifact",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mfv2.backends"


@runtime_checkable
class Session(Protocol):
    """One loaded graph: ``infer({name: array}) -> {name: array}``."""

    input_names: list[str]
    output_names: list[str]
    device: str

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Session: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class DeviceValue(ABC):
    """An output left where the runtime computed it (an ``OrtValue``, an OpenVINO tensor, a torch tensor,
    a TensorRT device buffer), readable as NumPy.

    A session of the same backend binds it as it is (no copy, no host round trip); ``np.asarray``
    copies it to the host for any other reader. Values from ONNX Runtime and OpenVINO live in the
    session's output buffer, so they hold until that session's next :meth:`~BaseSession.infer`.
    """

    @property
    @abstractmethod
    def shape(self) -> tuple[int, ...]: ...

    @abstractmethod
    def numpy(self) -> np.ndarray:
        """The value on the host (a view where the device is the host)."""

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        a = self.numpy()
        return a if dtype is None else a.astype(dtype, copy=False)


def _rows_index(ndim: int, axis: int, rows: Any) -> tuple[Any, ...]:
    return (slice(None),) * axis + (rows,) + (slice(None),) * (ndim - axis - 1)


class BaseSession(ABC):
    """Input checking, persistent inputs and context-manager support shared by the built-in sessions.

    :meth:`bind` keeps inputs that change rarely (the template KV) inside the runtime so that
    :meth:`infer` needs only the per-frame ones; :meth:`write_rows` and :meth:`keep_rows` change some
    batch rows of a bound input in place (one target's templates in a batch). Subclasses implement
    ``_bind`` (hand bound inputs to the runtime: arrays copied once, :class:`DeviceValue` objects of
    their own backend as they are), ``_run`` (one inference on the per-call inputs) and, for the
    in-place row edits, ``_host_bound`` (the host array a bound input lives in).
    """

    def __init__(self, input_names: Sequence[str], output_names: Sequence[str], device: str,
                 input_shapes: Mapping[str, Sequence[int | str | None]] | None = None) -> None:
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.device = device
        #: Shapes the graph declares; non-int entries are dynamic axes.
        self.input_shapes = {k: tuple(v) for k, v in (input_shapes or {}).items()}
        self._bound: set[str] = set()
        self._keep: frozenset[str] = frozenset()  # outputs returned as DeviceValues
        self._checked_keys: tuple[str, ...] | None = None  # the per-call feed names last checked

    def keep_on_device(self, names: Collection[str]) -> None:
        """Return the outputs ``names`` of every following :meth:`infer` as :class:`DeviceValue` objects."""
        unknown = [n for n in names if n not in self.output_names]
        if unknown:
            raise ShapeError(f"{type(self).__name__} has outputs {', '.join(self.output_names)}, not {', '.join(unknown)}")
        self._keep = frozenset(names)

    def bind(self, feeds: Mapping[str, Any]) -> None:
        """Keep ``feeds`` as inputs of every following :meth:`infer` call until bound again."""
        self._check_names(feeds, partial=True)
        self._bind(feeds)
        self._bound.update(feeds)
        self._checked_keys = None

    @abstractmethod
    def _bind(self, feeds: Mapping[str, Any]) -> None: ...

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        """Run the graph on ``feeds`` plus the bound inputs (the names are checked once per set of names)."""
        keys = tuple(feeds)
        if keys != self._checked_keys:
            self._check_names(feeds, partial=False)
            self._checked_keys = keys
        return self._run(feeds)

    @abstractmethod
    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]: ...

    def _host_bound(self, name: str) -> np.ndarray | None:
        """The host array the bound input ``name`` lives in (edits reach the runtime), or None."""
        return None

    def write_rows(self, name: str, axis: int, rows: Sequence[int], value: Any, source: Sequence[int] | None = None) -> None:
        """Overwrite rows ``rows`` along ``axis`` of the bound input ``name`` with rows ``source`` of ``value``
        (default all of them, in order); a row one past the end appends one.

        Rows already there are written in place where the runtime reads a host array; otherwise
        (and to append) the input is bound again.
        """
        current = self._host_bound(name)
        held = current if current is not None else np.asarray(self._bound_value(name))
        v = np.asarray(value) if source is None else np.take(np.asarray(value), list(source), axis=axis)
        size = held.shape[axis]
        if max(rows) >= size:
            pad = list(held.shape)
            pad[axis] = max(rows) + 1 - size
            held = np.concatenate([held, np.zeros(pad, held.dtype)], axis=axis)
            current = None
        held[_rows_index(held.ndim, axis, list(rows))] = v
        if current is None:
            self.bind({name: held})

    def keep_rows(self, name: str, axis: int, rows: Sequence[int]) -> None:
        """Bind ``name`` again with only the rows ``rows`` (in that order) along ``axis``."""
        held = self._host_bound(name)
        self.bind({name: np.take(held if held is not None else np.asarray(self._bound_value(name)), list(rows), axis=axis)})

    def _bound_value(self, name: str) -> Any:
        raise ShapeError(f"{type(self).__name__} cannot edit rows of its bound input {name!r}")

    def _check_names(self, feeds: Mapping[str, Any], partial: bool) -> None:
        unknown = [k for k in feeds if k not in self.input_names]
        missing = [] if partial else [k for k in self.input_names if k not in feeds and k not in self._bound]
        if unknown or missing:
            raise ShapeError(
                f"{type(self).__name__} takes inputs {', '.join(self.input_names)}; "
                f"unknown: {', '.join(unknown) or '-'}, missing: {', '.join(missing) or '-'}"
            )

    def close(self) -> None:
        self._bound.clear()
        self._checked_keys = None

    def __enter__(self) -> BaseSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class Backend(ABC):
    """A runtime that opens the graphs of an artifact as :class:`Session` objects.

    Subclasses set ``name``, the Python ``module`` they need, the pip ``extra`` that installs it and
    the ``precisions`` they run, and implement :meth:`load`.
    """

    name: ClassVar[str]
    module: ClassVar[str]
    extra: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    def __init__(self, *, precision: str = "fp32", threads: int | None = None) -> None:
        if precision not in self.precisions:
            raise ConfigError(f"the {self.name} backend runs precisions {', '.join(self.precisions)}, not {precision!r}")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        self.precision = precision
        self.threads = threads

    @classmethod
    def option_names(cls) -> tuple[str, ...] | None:
        """The keyword options this backend takes (its constructor's), or None if it takes any."""
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)

    @classmethod
    def check_options(cls, options: Mapping[str, Any], extra: Sequence[str] = ()) -> None:
        """Raise :class:`ConfigError` for option names the backend does not take, listing the valid ones
        (``extra``: names the caller handles itself, such as ``graph``)."""
        names = cls.option_names()
        if names is None:
            return
        valid = [*names, *extra]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ConfigError(
                f"bad option for the {cls.name} backend: {', '.join(unknown)}; valid options: {', '.join(valid)}"
            )

    @classmethod
    def is_available(cls) -> bool:
        """True if the runtime package can be imported (checked without importing it)."""
        return importlib.util.find_spec(cls.module) is not None

    @classmethod
    def require(cls) -> None:
        """Raise :class:`BackendUnavailableError` naming the extra to install if the runtime is missing."""
        if not cls.is_available():
            raise BackendUnavailableError(
                f"the {cls.name} backend needs the {cls.module!r} package; install it with: pip install \"mfv2[{cls.extra}]\""
            )

    @abstractmethod
    def load(self, artifact: Any, graph: GraphMode) -> tuple[Manifest, dict[str, Session]]:
        """Open ``artifact``: its manifest and sessions keyed by graph name (``full`` or the split pair)."""


class FileBackend(Backend):
    """A backend that runs graph files listed in an export directory's manifest."""

    #: Artifact formats this backend reads, in order of preference.
    formats: ClassVar[tuple[str, ...]] = ("onnx",)

    def missing_hint(self, directory: Path) -> str:
        """How to make the files this backend looks for in ``directory``."""
        return f"export them with: mfv2 export --checkpoint CK --output {directory} --precision {self.candidates()[0][0]}"

    def candidates(self) -> list[tuple[str, str]]:
        """(file precision, format) pairs that can serve ``self.precision``, best first."""
        return [(self.precision, f) for f in self.formats]

    @abstractmethod
    def open(self, path: Path, artifact: Artifact, manifest: Manifest) -> Session:
        """Open one graph file."""

    def discover(self, directory: Path, manifest: Manifest) -> Manifest:
        """The manifest, completed with files this backend finds beside it (default: as it is)."""
        return manifest

    def load(self, artifact: Any, graph: GraphMode, *, verify_hashes: bool = True) -> tuple[Manifest, dict[str, Session]]:
        """Open the graphs of an export directory.

        Args:
            artifact: an export directory, its manifest, or one graph file listed in it.
            graph: ``auto``, ``split`` or ``full``.
            verify_hashes: compare every file with the SHA-256 its manifest records (default); turn
                it off only for graphs edited on purpose after the export.

        Raises:
            ConfigError: a file the manifest names that is missing, lies outside the directory or
                does not match its recorded hash, or a graph the runtime cannot load.
        """
        directory, manifest, graph = resolve_export(artifact, graph, self.precision)
        manifest = self.discover(directory, manifest)
        chosen = select_artifacts(manifest, graph, self.candidates())
        if chosen is None:
            have = "; ".join(f"{a.file} ({a.graph}, {a.precision}, {a.format})" for a in manifest.artifacts) or "nothing"
            want = {"auto": "full or split graphs", "split": "split graphs", "full": "full graph"}[graph]
            raise ConfigError(
                f"{directory} has no {want} the {self.name} backend can run at {self.precision} "
                f"(it has: {have}); {self.missing_hint(directory)}"
            )
        sessions: dict[str, Session] = {}
        try:
            for name, art in chosen.items():
                path = verify_artifact(directory, art, check_hash=verify_hashes)
                log.debug("%s: opening %s (%s, %s)", self.name, path.name, art.graph, art.precision)
                try:
                    sessions[name] = self.open(path, art, manifest)
                except Mfv2Error:
                    raise
                except Exception as e:  # each runtime raises its own types for unreadable files
                    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    raise ConfigError(f"the {self.name} backend cannot load {path}: {reason[:300]}; re-export the model") from e
        except BaseException:
            for s in sessions.values():
                s.close()
            raise
        return manifest, sessions


def artifact_path(directory: str | os.PathLike[str], name: str) -> Path:
    """The file ``name`` of an export directory, refused unless it lies inside ``directory``.

    ``name`` comes from a manifest: it must be a plain relative path without ``..`` and, once
    symbolic links are followed, still point into ``directory`` (also followed).

    Raises:
        ConfigError: the name leaves the directory, or the file is missing.
    """
    d = Path(directory)
    manifest = d / MANIFEST_NAME
    text = str(name)
    rel = Path(text)
    if not text or "\0" in text or rel.is_absolute() or rel.drive or ".." in rel.parts or "\\" in text:
        raise ConfigError(
            f"{manifest} names the file {text!r}, which is not inside the export directory; "
            "a manifest may only name files beside it (re-export the model, or fix the manifest)"
        )
    path = d / rel
    root = d.resolve()
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        raise ConfigError(f"{path} is listed in {manifest} but missing; re-export the model") from None
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise ConfigError(f"{path} (listed in {manifest}) cannot be resolved: {e}") from e
    if not resolved.is_relative_to(root):
        raise ConfigError(
            f"{path} is listed in {manifest} but is a link to {resolved}, outside the export directory; "
            "mfv2 reads only files inside it (copy the file in instead of linking it)"
        )
    if not resolved.is_file():
        raise ConfigError(f"{path} is listed in {manifest} but is not a file; re-export the model")
    return path


def verify_artifact(directory: str | os.PathLike[str], artifact: Artifact, *, check_hash: bool = True) -> Path:
    """The path of ``artifact`` inside ``directory``, checked: inside the directory and, with
    ``check_hash``, equal to the SHA-256 its manifest records (also the OpenVINO ``.bin`` beside an IR).

    Files without a recorded hash (a stand-alone ``.onnx``, an engine found beside the manifest)
    are checked for their place only.

    Raises:
        ConfigError: see :func:`artifact_path`; or a file whose content differs from its recorded hash.
    """
    path = artifact_path(directory, artifact.file)
    files = [(path, artifact.sha256)]
    if artifact.format == "openvino":
        # OpenVINO reads the weights from the .bin of the same stem; it must obey the same rules.
        bin_name = str(artifact.extra.get("bin") or path.with_suffix(".bin").name)
        bin_path = artifact_path(directory, bin_name)
        if bin_path.resolve() != path.with_suffix(".bin").resolve():
            raise ConfigError(f"{Path(directory) / MANIFEST_NAME} pairs {artifact.file} with {bin_name}, not with "
                              f"{path.with_suffix('.bin').name} that OpenVINO reads; re-export the model")
        files.append((bin_path, str(artifact.extra.get("bin_sha256", ""))))
    for file, recorded in files if check_hash else ():
        if not recorded:
            log.debug("%s: no hash recorded in the manifest; not verified", file.name)
            continue
        actual = _cached_sha256(file.resolve(), *_stat_key(file))
        if actual != recorded.lower():
            raise ConfigError(
                f"{file} does not match the SHA-256 recorded in {Path(directory) / MANIFEST_NAME} "
                f"({actual[:12]}... != {recorded[:12]}...): the file was changed or replaced after the export. "
                "Re-export the model; if you edited the graph on purpose, pass --no-verify (verify_hashes=False)"
            )
    return path


def _stat_key(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


@functools.lru_cache(maxsize=64)
def _cached_sha256(path: Path, size: int, mtime_ns: int, inode: int) -> str:
    """Hex SHA-256 of ``path``; cached per (path, size, mtime, inode) so reloading an export does not re-read it."""
    return sha256(path)


def resolve_export(artifact: str | os.PathLike[str], graph: GraphMode, precision: str) -> tuple[Path, Manifest, GraphMode]:
    """Export directory, manifest and graph mode of ``artifact``.

    ``artifact`` is an export directory, its ``manifest.json``, or one graph file listed in a manifest
    (which then fixes the graph and the precision).
    """
    if not isinstance(artifact, (str, os.PathLike)):
        got = "nothing" if artifact is None else f"a {type(artifact).__name__}"
        raise ConfigError(f"this backend runs an export directory made by 'mfv2 export' (or a graph file in one), got {got}")
    path = Path(artifact)
    if not path.exists():
        raise ConfigError(f"{path} does not exist; pass an export directory made by 'mfv2 export'")
    if path.is_dir() or path.name == MANIFEST_NAME:
        directory = path if path.is_dir() else path.parent
        return directory, load_manifest(directory), graph
    directory = path.parent
    if (directory / MANIFEST_NAME).is_file():
        manifest = load_manifest(directory)
    elif path.suffix == ".onnx":
        manifest = _standalone_manifest(path)
    else:
        raise ConfigError(
            f"{path} is not part of an mfv2 export (no {MANIFEST_NAME} beside it); pass the export directory, "
            "or a checkpoint with a backend that exports on the fly"
        )
    entry = next((a for a in manifest.artifacts if a.file == path.name), None)
    if entry is None:
        raise ConfigError(f"{path.name} is not listed in {directory / MANIFEST_NAME}; pass the export directory instead")
    if entry.precision != precision:
        raise ConfigError(f"{path.name} is a {entry.precision} graph but precision {precision!r} was asked; pass --precision {entry.precision}")
    file_graph: GraphMode = "full" if entry.graph == "full" else "split"
    if graph not in ("auto", file_graph):
        raise ConfigError(f"{path.name} belongs to the {file_graph} graph(s) but graph {graph!r} was asked")
    return directory, manifest, file_graph


def _standalone_manifest(path: Path) -> Manifest:
    """The manifest an mfv2 ``.onnx`` carries in its metadata (for a file copied out of its export directory)."""
    from mfv2.artifacts import manifest_from_onnx

    try:
        return manifest_from_onnx(path)
    except ImportError as e:
        raise BackendUnavailableError(
            f"reading the metadata of a stand-alone {path.name} needs the onnx package (pip install \"mfv2[onnx]\"); "
            "or pass its export directory"
        ) from e
    except Mfv2Error:
        raise
    except Exception as e:  # protobuf decoding errors of a file that is not ONNX
        raise ConfigError(f"{path} is not a readable ONNX file ({type(e).__name__}); pass an export directory made by 'mfv2 export'") from e


def select_artifacts(manifest: Manifest, graph: GraphMode, candidates: Sequence[tuple[str, str]]) -> dict[str, Artifact] | None:
    """The artifacts to open: the split pair when asked for or available under ``auto``, else the full graph."""

    def pick(name: str) -> Artifact | None:
        return next((a for p, f in candidates if (a := manifest.find(name, p, f)) is not None), None)

    if graph in ("auto", "split"):
        pair = {name: pick(name) for name in SPLIT_GRAPHS}
        if all(pair.values()):
            return pair  # type: ignore[return-value]
    if graph in ("auto", "full") and (full := pick("full")) is not None:
        return {"full": full}
    return None


BACKENDS: Registry[type[Backend]] = Registry("backend")
_plugins_loaded = False


def _load_plugins() -> None:
    """Register backends from the ``mfv2.backends`` entry-point group (once; broken plugins are logged)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BACKENDS:
            continue
        try:
            cls = ep.load()
        except Exception as e:  # a broken third-party plugin must not break the built-in backends
            log.warning("backend plugin %s (%s) failed to load: %s", ep.name, ep.value, e)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            log.warning("backend plugin %s does not point to an mfv2.runtimes.Backend subclass; skipped", ep.name)
            continue
        BACKENDS.add(ep.name, cls)


def get_backend(name: str) -> type[Backend]:
    """The backend class registered as ``name`` (built-in or plugin)."""
    _load_plugins()
    return BACKENDS.get(name)


def available_backends() -> list[str]:
    """Names of the registered backends whose runtime package is installed."""
    _load_plugins()
    return [n for n in BACKENDS if BACKENDS.get(n).is_available()]
