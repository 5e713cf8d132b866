"""The contract between the producer of an export directory and its consumers.

:mod:`mfv2.exporters` writes export directories; the runtimes, the tracker, bench and eval read them
through this floor alone: ``manifest`` (what ``manifest.json`` holds and how it is read),
``formats`` (the one format / precision / graph table, graph modes and the file-naming rule) and ``engine`` (the
TensorRT engine sidecar and its check against this machine). It imports nothing of mfv2 but
``errors``, ``config``, ``fileio`` and ``registry``, and no torch, ONNX or runtime.
"""

from __future__ import annotations

from mfv2.artifacts import engine, families, formats, manifest
from mfv2.artifacts.engine import SIDECAR_FORMAT, check_engine_compatible, read_sidecar, sidecar_path
from mfv2.artifacts.families import (
    RUNTIME_FAMILIES,
    GraphIO,
    RuntimeFamily,
    TemplatePolicy,
    decode_center,
    hann2d,
    runtime_family,
    runtime_family_of,
)
from mfv2.artifacts.formats import (
    FORMATS,
    GRAPH_MODES,
    GRAPH_SETS,
    GRAPH_STEMS,
    GRAPHS,
    SIMPLIFIERS,
    SPLIT_GRAPHS,
    ExportFormat,
    GraphMode,
    GraphName,
    GraphSet,
    artifact_name,
    file_precision,
    parse_precisions,
)
from mfv2.artifacts.manifest import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MANIFEST_NAME,
    Artifact,
    Manifest,
    METADATA_KEY,
    exporter_fingerprint,
    load_manifest,
    manifest_from_onnx,
    onnx_metadata,
)

__all__ = [*manifest.__all__, *formats.__all__, *engine.__all__, *(n for n in families.__all__ if n not in manifest.__all__)]
