"""The export job: trace, simplify, check, derive the low-precision files, gate parity, write the manifest.

:func:`export_model` builds everything in a temporary directory next to the output and renames it into
place at the end, so a failed export (parity included) leaves nothing behind. TensorRT engines are built
later, on the GPU, by :mod:`mfv2.exporters.tensorrt`.

int8 ONNX comes in two forms from one flag: static Q/DQ files (``*.int8.onnx``, what TensorRT builds
int8 engines from) and dynamically quantized ones (``*.int8-dynamic.onnx``, format ``onnx-dynamic``,
what ONNX Runtime runs on CPUs); both pass the same int8 parity gate.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import platform
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mfv2.artifacts.families import runtime_family
from mfv2.config import ExportConfig, ModelConfig, TrackerConfig
from mfv2.errors import ConfigError
from mfv2.fileio import atomic_dir, sha256

if TYPE_CHECKING:
    from mfv2.exporters.validate import Runner
    from mfv2.models import MVT, MixFormerV2

__all__ = ["export_model"]

log = logging.getLogger(__name__)

_PARITY_RANDOM = 2  # random-input samples per parity check
_PARITY_CROPS = 12  # real-crop samples per parity check (they give iou_fraction)
_CALIBRATION_CROPS = 32  # int8 calibration samples (ONNX Runtime and NNCF), one per synthetic clip
_DYNAMIC_TRACE_BATCH = 2  # targets a dynamic-batch export is traced and checked at


def export_model(
    model_or_checkpoint: MixFormerV2 | MVT | str | os.PathLike[str] | None,
    output: str | os.PathLike[str],
    config: ExportConfig,
    calibration: Sequence[np.ndarray | tuple[np.ndarray, Sequence[float]]] | None = None,
) -> Path:
    """Run the export ``config`` describes into the directory ``output`` (see :func:`mfv2.export`)."""
    from mfv2.artifacts import SIMPLIFIERS, parse_precisions
    from mfv2.exporters.onnx import check_opset

    check_opset(config.opset, config.allow_low_opset)
    if config.simplify not in SIMPLIFIERS:
        raise ConfigError(f"unknown simplifier {config.simplify!r}; choose from {', '.join(SIMPLIFIERS)}")
    onnx_precisions = ("fp32",) + tuple(p for p in parse_precisions(config.precisions) if p != "fp32")
    ov_precisions = parse_precisions(config.openvino, "openvino")
    out = Path(output)
    _check_output(out, config.overwrite)
    model, source = _load_model(model_or_checkpoint, config.variant, config.seed)
    tracker = config.tracker.adapted_to(model.config) if config.tracker else TrackerConfig.for_model(model.config)
    with atomic_dir(out, overwrite=config.overwrite) as tmp:
        job = _Job(model, tmp, batch=config.batch, opset=config.opset, simplify=config.simplify, tracker=tracker,
                   frames=calibration, seed=config.seed, skip_failed=config.skip_failed)
        for precision in onnx_precisions:
            job.onnx(precision)
        if "int8" in onnx_precisions:
            job.onnx_dynamic()
            job.onnx_tensorrt()
        for precision in ov_precisions:
            job.openvino(precision)
        job.finish(source)
    log.info("export complete: %s", out)
    return out


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite (overwrite=True) or choose another --output")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a directory; choose another --output")
    parent = out.parent
    if not parent.is_dir():
        raise ConfigError(f"cannot write {out}: {parent} does not exist or is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {out}: folder {parent} is not writable; choose another --output")


def _load_model(
    model_or_checkpoint: Any, variant: str | ModelConfig | None, seed: int
) -> tuple[Any, dict[str, Any]]:
    """The model in eval mode (a private copy) and the manifest's ``source`` record."""
    import torch

    from torch import nn

    from mfv2.models import build_model, read_checkpoint
    from mfv2.models.family import family_of

    if isinstance(model_or_checkpoint, nn.Module):
        given: Any = model_or_checkpoint
        if variant is not None and family_of(variant).config(variant) != model_or_checkpoint.config:
            raise ConfigError(f"variant {variant!r} does not match the given model ({given.config.name})")
        model = copy.deepcopy(model_or_checkpoint)
        source: dict[str, Any] = {"checkpoint": None, "format": "in-memory model"}
    elif model_or_checkpoint is None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = build_model("S" if variant is None else variant)
        source = {"checkpoint": None, "format": f"random-init, seed {seed}", "seed": seed}
    else:
        path = Path(model_or_checkpoint)
        ckpt = read_checkpoint(path)  # a missing or unreadable file is a ConfigError
        model = build_model(variant, path)
        source = {"checkpoint": str(path), "sha256": sha256(path), "format": ckpt.format}
    return model.eval().requires_grad_(False), source


def _toolkit(*extra: str) -> dict[str, str]:
    from mfv2 import __version__

    versions = {"mfv2": __version__, "python": platform.python_version()}
    for name in ("torch", "onnx", "onnxruntime", *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


class _Job:
    """One export in progress in ``tmp``: samples and references are computed once, then each artifact."""

    def __init__(
        self, model: Any, tmp: Path, *, batch: int | str, opset: int, simplify: str, tracker: TrackerConfig,
        frames: Sequence[Any] | None, seed: int, skip_failed: bool = False,
    ) -> None:
        from mfv2.artifacts import Manifest
        from mfv2.exporters.onnx import graph_io
        from mfv2.exporters.validate import make_samples, torch_reference

        # A dynamic batch is traced, calibrated and checked at _DYNAMIC_TRACE_BATCH targets.
        self.dynamic = batch == "dynamic"
        self.batch = _DYNAMIC_TRACE_BATCH if batch == "dynamic" else int(batch)
        self.model, self.tmp, self.opset, self.simplify = model, tmp, opset, simplify
        self.frames, self.seed, self.skip_failed = frames, seed, skip_failed
        self.io = graph_io(model.config, -1 if self.dynamic else self.batch)
        self.samples = make_samples(model.config, tracker, batch=self.batch, random=_PARITY_RANDOM, crops=_PARITY_CROPS,
                                    frames=frames, seed=seed)
        self.refs = torch_reference(model, self.samples)
        self.manifest = Manifest(model=model.config, tracker=tracker, batch=None if self.dynamic else self.batch, opset=opset)
        self._extra: dict[str, dict[str, Any]] = {}  # file name -> facts for its artifact's ``extra``
        self._calibration: dict[str, list[dict[str, np.ndarray]]] | None = None
        self._unquantized: set[str] = set()  # int8 file names kept fp32 (see _kept_fp32)
        self._no_weights: dict[str, bool] = {}  # graph -> it has no weight MatMul/Gemm to quantize

    def _files(self, precision: str, format: str) -> dict[str, Path]:
        from mfv2.artifacts import GRAPH_STEMS, artifact_name

        return {g: self.tmp / artifact_name(g, precision, format) for g in GRAPH_STEMS}

    def calibration(self) -> dict[str, list[dict[str, np.ndarray]]]:
        """Calibration feeds per graph: crops, and the fp32 reference ``kv`` for the decoder."""
        if self._calibration is None:
            import torch

            from mfv2.exporters.validate import calibration_crops

            crops = calibration_crops(self.model.config, self.manifest.tracker, batch=self.batch,
                                      count=_CALIBRATION_CROPS, frames=self.frames, seed=self.seed)
            encode = self.model.graphs()["template_encoder"]
            templates = [{k: v for k, v in c.items() if k != "search"} for c in crops]
            with torch.no_grad():
                kvs = [encode(**{k: torch.from_numpy(v) for k, v in t.items()})["kv"].numpy() for t in templates]
            self._calibration = {
                "full": crops,
                "template_encoder": templates,
                "search_decoder": [{"search": c["search"], "kv": kv} for c, kv in zip(crops, kvs)],
            }
        return self._calibration

    def _kept_fp32(self, graph: str, path: Path) -> bool:
        """Copy the fp32 graph to the int8 ``path`` when it has no weight MatMul/Gemm (MVT's convolution-only
        template stem): int8 quantizes those nodes only, so the file stays fp32 and the manifest says so."""
        import shutil

        import onnx

        from mfv2.exporters.quantize import quantizable_nodes

        src = self._files("fp32", "onnx")[graph]
        if graph not in self._no_weights:  # asked once per int8 format: read each fp32 graph once
            self._no_weights[graph] = not quantizable_nodes(onnx.load(str(src)))
        if not self._no_weights[graph]:
            return False
        shutil.copyfile(src, path)
        self._unquantized.add(path.name)
        log.info("%s: no weight MatMul/Gemm to quantize, kept fp32", path.name)
        return True

    def _scheme(self, path: Path, scheme: dict[str, str]) -> dict[str, str]:
        """The ``quantization`` record of an int8 file: ``scheme``, or what a file kept fp32 is."""
        if path.name in self._unquantized:
            return {"scheme": "none", "weights": "fp32 (no weight MatMul/Gemm in the graph)", "activations": "fp32"}
        return scheme

    def onnx(self, precision: str) -> None:
        import onnx

        from mfv2.errors import ExportError
        from mfv2.exporters.isa import avx2_exact
        from mfv2.exporters.onnx import check_model, export_graph, op_counts
        from mfv2.exporters.quantize import INT8_SCHEMES, symmetric_qdq, to_fp16, to_int8
        from mfv2.exporters.simplify import simplify
        from mfv2.exporters.tensorrt import tensorrt_issues
        from mfv2.exporters.validate import ort_runner

        files = self._files(precision, "onnx")
        started = time.perf_counter()
        for graph, path in files.items():
            if precision == "fp32":
                export_graph(self.model, graph, path, batch=self.batch, opset=self.opset, dynamic_batch=self.dynamic)
                simplify(path, self.simplify)
            elif precision == "fp16":
                to_fp16(self._files("fp32", "onnx")[graph], path)
            elif not self._kept_fp32(graph, path):
                to_int8(self._files("fp32", "onnx")[graph], path, self.calibration()[graph])
            check_model(path)
            proto = onnx.load(str(path))
            # int8 engines are built from the symmetric form of the Q/DQ graph (see symmetric_qdq).
            issues = tensorrt_issues(symmetric_qdq(proto) if precision == "int8" else proto)
            if issues and precision == "fp32":
                raise ExportError(f"{path.name} has ops TensorRT lacks: {'; '.join(issues)}")
            if issues:
                log.warning("%s will not build on TensorRT: %s", path.name, "; ".join(issues))
            self._extra[path.name] = {
                "nodes": len(proto.graph.node),
                "ops": dict(sorted(op_counts(proto).items())),
                "tensorrt_issues": issues,
                **({"quantization": self._scheme(path, INT8_SCHEMES["onnx"]), "avx2_exact": avx2_exact(proto)}
                   if precision == "int8" else {}),
            }
        self._measure("onnx", precision, files, ort_runner(files), started)

    def onnx_dynamic(self) -> None:
        """The dynamically quantized int8 graphs for ONNX Runtime, held to the Q/DQ int8 files' tolerance."""
        import onnx

        from mfv2.exporters.isa import avx2_exact
        from mfv2.exporters.onnx import check_model, op_counts
        from mfv2.exporters.quantize import INT8_SCHEMES, to_int8_dynamic
        from mfv2.exporters.validate import ort_runner

        files = self._files("int8", "onnx-dynamic")
        started = time.perf_counter()
        for graph, path in files.items():
            if not self._kept_fp32(graph, path):
                to_int8_dynamic(self._files("fp32", "onnx")[graph], path)
            check_model(path)
            proto = onnx.load(str(path))
            self._extra[path.name] = {
                "nodes": len(proto.graph.node),
                "ops": dict(sorted(op_counts(proto).items())),
                "quantization": self._scheme(path, INT8_SCHEMES["onnx-dynamic"]),
                "avx2_exact": avx2_exact(proto),
            }
        self._measure("onnx-dynamic", "int8", files, ort_runner(files), started)

    def onnx_tensorrt(self) -> None:
        """The int8 graphs TensorRT builds from (``*.int8-trt.onnx``), gated on the very file TensorRT parses."""
        import onnx

        from mfv2.exporters.onnx import check_model, op_counts
        from mfv2.exporters.quantize import INT8_TENSORRT_SCHEME, to_int8_tensorrt
        from mfv2.exporters.tensorrt import tensorrt_issues
        from mfv2.exporters.validate import ort_runner

        files = self._files("int8", "onnx-tensorrt")
        started = time.perf_counter()
        for graph, path in files.items():
            if not self._kept_fp32(graph, path):
                to_int8_tensorrt(self._files("fp32", "onnx")[graph], path, self.calibration()[graph])
            check_model(path)
            proto = onnx.load(str(path))
            self._extra[path.name] = {
                "nodes": len(proto.graph.node),
                "ops": dict(sorted(op_counts(proto).items())),
                "tensorrt_issues": tensorrt_issues(proto),
                "quantization": self._scheme(path, INT8_TENSORRT_SCHEME),
            }
        # TensorRT's int8 products are exact: measure the graph as written, not ONNX Runtime's fused kernels.
        self._measure("onnx-tensorrt", "int8", files, ort_runner(files, simulate_qdq=True), started)

    def openvino(self, precision: str) -> None:
        from mfv2.exporters.openvino import OPENVINO_INT8_SCHEME, ov_runner, to_openvino

        files = self._files(precision, "openvino")
        started = time.perf_counter()
        for graph, path in files.items():
            calib = self.calibration()[graph] if precision == "int8" else None
            to_openvino(self._files("fp32", "onnx")[graph], path, precision, calib)
            self._extra[path.name] = {"bin": path.with_suffix(".bin").name,
                                      **({"quantization": dict(OPENVINO_INT8_SCHEME)} if precision == "int8" else {})}  # fmt: skip
        self._measure("openvino", precision, files, ov_runner(files), started)

    def _measure(self, format: str, precision: str, files: dict[str, Path], run: Runner, started: float) -> None:
        """Measure, record and gate parity against the ``TOLERANCES`` row of ``(format, precision)``.

        A low-precision variant that misses its gate is removed and listed in ``manifest.rejected``
        when ``skip_failed`` is set; otherwise (and always for fp32) the export fails.
        """
        from mfv2.errors import ExportError
        from mfv2.artifacts import Artifact
        from mfv2.exporters.validate import TOLERANCES, measure, parity_failures

        figures = measure(run, list(files), self.samples, self.refs, postprocess=runtime_family(self.manifest.family).postprocess)
        tol = TOLERANCES[(format, precision)]
        seconds = time.perf_counter() - started
        artifacts = []
        for graph, path in files.items():
            parity = {k: float(f"{v:.4g}") for k, v in figures[graph].items()}
            ins, outs = self.io[graph]
            artifacts.append(Artifact(
                file=path.name, graph=graph, precision=precision, format=format, inputs=ins, outputs=outs,
                parity=parity,
                extra={"tolerance": dataclasses.asdict(tol), "export_seconds": round(seconds, 2), **self._extra.get(path.name, {})},
            ))  # fmt: skip
            size = path.stat().st_size + (path.with_suffix(".bin").stat().st_size if format == "openvino" else 0)
            iou = f"{parity['iou_mean']:.3f}" if "iou_mean" in parity else "n/a (degenerate reference boxes)"
            log.info("%s: %.1f MB, %.1f s, max error boxes %.2g (real crops %.2g), score %.2g, mean IoU %s",
                     path.name, size / 1e6, seconds, parity["boxes"], parity["crop_boxes"], parity["score"], iou)
        failures = {a.file: parity_failures(figures[a.graph], tol) for a in artifacts}
        for a in artifacts:  # exact on one instruction set is not enough: the export may run on another
            if a.extra.get("avx2_exact") is False:
                failures[a.file].append("int8 weights past [-64, 64] saturate AVX2's int16 pair sums (mfv2.exporters.isa)")
        failed = {f: bad for f, bad in failures.items() if bad}
        if not failed:
            for a in artifacts:
                self.manifest.add(a)
            return
        text = "; ".join(f"{f}: {', '.join(bad)}" for f, bad in failed.items())
        if precision == "fp32" or not self.skip_failed:
            hint = "" if precision == "fp32" else " (pass --skip-failed / skip_failed=True to write the export without it)"
            raise ExportError(f"parity check failed for {text}{hint}")
        log.warning("%s %s left out of the export, parity gate missed: %s", format, precision, text)
        for a in artifacts:
            (self.tmp / a.file).unlink(missing_ok=True)
            if format == "openvino":
                (self.tmp / a.file).with_suffix(".bin").unlink(missing_ok=True)
            self.manifest.rejected.append({
                "format": format, "precision": precision, "graph": a.graph, "file": a.file,
                "failed": failures[a.file] or ["left out with the rest of its variant"], "parity": a.parity, "tolerance": a.extra["tolerance"],
            })  # fmt: skip

    def finish(self, source: dict[str, Any]) -> None:
        """Write the metadata into every file, hash the files and save ``manifest.json``."""
        from mfv2.artifacts import FORMATS
        from mfv2.exporters.onnx import METADATA_KEY, artifact_metadata, write_metadata
        from mfv2.exporters.openvino import OV_METADATA_KEY, set_ov_metadata

        tools = [] if self.simplify == "none" else [self.simplify]
        if any(a.format == "openvino" for a in self.manifest.artifacts):
            tools += ["openvino", "nncf"]
        self.manifest.source = source
        self.manifest.toolkit = _toolkit(*tools)
        for artifact in self.manifest.artifacts:
            path = self.tmp / artifact.file
            props = artifact_metadata(self.manifest, artifact)
            if FORMATS.get(artifact.format).suffix == ".onnx":
                write_metadata(path, props)
                artifact.extra["metadata"] = f"metadata_props[{METADATA_KEY!r}]"
            else:
                set_ov_metadata(path, props[METADATA_KEY])
                artifact.extra["metadata"] = f"rt_info[{OV_METADATA_KEY!r}]"
                artifact.extra["bin_sha256"] = sha256(path.with_suffix(".bin"))
            artifact.sha256 = sha256(path)
        self.manifest.save(self.tmp)

