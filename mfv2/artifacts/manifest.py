"""The export manifest: every fact about an exported model that a backend or the tracker needs.

An export directory holds ``manifest.json`` plus the graph files it lists. Each artifact is one file
(ONNX, OpenVINO IR, TensorRT engine) of one graph (``full``, ``template_encoder``,
``search_decoder``) at one precision, with the parity figures measured when it was written. Export
writes it; runtimes, the tracker and bench read it. This module needs neither torch nor any runtime.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from importlib import metadata
from typing import Any

from mfv2.artifacts.families import IMAGENET_MEAN, IMAGENET_STD, runtime_family, runtime_family_of
from mfv2.config import ModelConfig, MVTConfig, TrackerConfig
from mfv2.errors import ConfigError, UnknownNameError
from mfv2.fileio import atomic_write_text, read_json

__all__ = [
    "Artifact",
    "Manifest",
    "MANIFEST_NAME",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "load_manifest",
    "manifest_from_onnx",
    "onnx_metadata",
    "METADATA_KEY",
    "exporter_fingerprint",
]

MANIFEST_NAME = "manifest.json"
#: Key of the manifest JSON in an ONNX file's ``metadata_props`` (a single file is self-describing).
METADATA_KEY = "mfv2"
_FORMAT = "mfv2-export"
_VERSION = 1

# Subpackages of mfv2 whose sources make up the exporter (see exporter_fingerprint).
_EXPORTER_SOURCES = ("artifacts", "exporters", "models")


@dataclass
class Artifact:
    """One graph file.

    ``inputs``/``outputs`` map tensor names to shapes; ``parity`` holds max-abs errors against the
    PyTorch reference (``boxes``, ``score``; ``iou_fraction`` where a tracker-level check ran).
    """

    file: str
    graph: str
    precision: str
    format: str  # "onnx", "onnx-dynamic" (dynamic int8 for ONNX Runtime), "openvino", "tensorrt"
    inputs: dict[str, list[int]] = field(default_factory=dict)
    outputs: dict[str, list[int]] = field(default_factory=dict)
    parity: dict[str, float] = field(default_factory=dict)
    sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    """Contents of ``manifest.json``.

    Inputs are RGB NCHW float32, ``(x / 255 - mean) / std``. ``family`` names the model family
    (:mod:`mfv2.artifacts.families`), whose post-processing turns the graphs' outputs into ``boxes``
    (B, 4) cx, cy, w, h normalised to the search crop and ``score`` (B,), a probability.
    ``batch`` is the fixed batch B of the graphs (targets per call), or ``None`` for graphs with a
    dynamic batch axis (ONNX Runtime and OpenVINO run any B; TensorRT engines need a fixed one).
    """

    model: ModelConfig | MVTConfig
    tracker: TrackerConfig
    family: str = ""  # "" = the family of ``model`` (filled in by __post_init__)
    batch: int | None = 1
    opset: int = 17
    mean: tuple[float, ...] = ()  # () = the family's
    std: tuple[float, ...] = ()
    artifacts: list[Artifact] = field(default_factory=list)
    # Low-precision variants that missed their parity gate and were not written (``skip_failed``):
    # {"format", "precision", "graph", "file", "failed": [figures outside the limits], "parity", "tolerance"}.
    rejected: list[dict[str, Any]] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)  # checkpoint path, sha256, format
    toolkit: dict[str, str] = field(default_factory=dict)  # mfv2/torch/onnx versions at export
    score: str = "probability"
    boxes: str = "cxcywh, normalised to the search crop"

    def __post_init__(self) -> None:
        family = runtime_family(self.family) if self.family else runtime_family_of(self.model)
        self.family = family.name
        self.mean = tuple(self.mean) or family.mean
        self.std = tuple(self.std) or family.std

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        d["tracker"] = self.tracker.to_dict()
        return {"format": _FORMAT, "version": _VERSION, **d}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != _FORMAT:
            raise ConfigError(f"not an mfv2 export manifest (format {data.get('format')!r})")
        if data.get("version", 0) > _VERSION:
            raise ConfigError(f"manifest version {data['version']} is newer than this mfv2 reads ({_VERSION}); upgrade mfv2")
        body = {k: v for k, v in data.items() if k not in ("format", "version")}
        try:
            family = runtime_family(body.get("family") or "mixformerv2")  # manifests before MVT name none
            body["family"] = family.name
            body["model"] = family.config_from_dict(body["model"])
            body["tracker"] = TrackerConfig.from_dict(body["tracker"])
            body["artifacts"] = [Artifact(**a) for a in body.get("artifacts", [])]
            body["mean"], body["std"] = tuple(body["mean"]), tuple(body["std"])
            batch = body.get("batch", 1)
            if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
                raise ConfigError(f"malformed export manifest: batch must be a positive integer or null (dynamic), got {batch!r}")
            return cls(**body)
        except UnknownNameError as e:
            raise ConfigError(f"export manifest of an unknown model family: {e}; upgrade mfv2") from e
        except (KeyError, TypeError) as e:
            raise ConfigError(f"malformed export manifest: {e}") from e

    def find(self, graph: str, precision: str = "fp32", format: str = "onnx") -> Artifact | None:
        """The artifact of ``graph`` at ``precision`` in ``format``, if exported."""
        for a in self.artifacts:
            if (a.graph, a.precision, a.format) == (graph, precision, format):
                return a
        return None

    def add(self, artifact: Artifact) -> None:
        """Add or replace the artifact with the same graph, precision and format."""
        self.artifacts = [
            a for a in self.artifacts if (a.graph, a.precision, a.format) != (artifact.graph, artifact.precision, artifact.format)
        ]
        self.artifacts.append(artifact)

    def rejection(self, precision: str, formats: Sequence[str]) -> str | None:
        """Why the ``precision`` variant of any of ``formats`` was rejected at export, or None."""
        for r in self.rejected:
            if r["precision"] == precision and r["format"] in formats:
                return f"{r['file']} failed its parity gate at export ({'; '.join(r['failed'])})"
        return None

    def precisions(self, format: str = "onnx") -> list[str]:
        return sorted({a.precision for a in self.artifacts if a.format == format})

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``manifest.json`` atomically."""
        return atomic_write_text(Path(directory) / MANIFEST_NAME, json.dumps(self.to_dict(), indent=2) + "\n")


def load_manifest(directory: str | os.PathLike[str]) -> Manifest:
    """Read ``DIR/manifest.json``; a missing or foreign directory is a one-line :class:`ConfigError`."""
    d = Path(directory)
    path = d / MANIFEST_NAME if d.is_dir() else d
    if not path.is_file():
        raise ConfigError(f"{d} is not an mfv2 export directory (no {MANIFEST_NAME}); create one with 'mfv2 export'")
    return Manifest.from_dict(read_json(path, "export manifest", "export the model again with 'mfv2 export'"))


@functools.cache
def exporter_fingerprint() -> str:
    """12 hex digits that change with the exporter: the sources of ``mfv2/exporters``, ``mfv2/models`` (the
    traced graphs) and ``mfv2/artifacts`` (the manifest and file names it writes), and the converter versions.

    Caches of exports (``cached_export``, ``mfv2 bench``) include it in their keys, so a changed
    quantizer, converter or model graph makes a fresh export instead of reusing a stale one.
    """
    h = hashlib.sha256()
    package = Path(__file__).parent.parent  # mfv2/
    sources = [path for sub in _EXPORTER_SOURCES for path in (package / sub).rglob("*.py")]  # subpackages too
    for path in sorted(sources):
        h.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    for dist in ("onnx", "onnxruntime", "onnxsim", "onnxslim", "openvino", "nncf", "torch"):
        try:
            h.update(f"{dist}={metadata.version(dist)};".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist}=-;".encode())
    return h.hexdigest()[:12]


def onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (weights are not loaded; needs the onnx package)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def manifest_from_onnx(path: str | os.PathLike[str]) -> Manifest:
    """Rebuild the manifest of a single self-describing ``.onnx`` from its metadata.

    The result lists one artifact, this file.

    Raises:
        ConfigError: an ONNX file that ``mfv2 export`` did not write.
        ImportError: the onnx package is missing.
    """
    props = onnx_metadata(path)
    if METADATA_KEY not in props:
        raise ConfigError(f"{path} carries no mfv2 metadata; export it with 'mfv2 export'")
    try:
        data = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: mfv2 metadata is not valid JSON: {e}") from e
    manifest = Manifest.from_dict(data)
    for artifact in manifest.artifacts:
        artifact.file = Path(path).name
    return manifest
