"""The PyTorch backend: our MixFormerV2 in eager mode, the reference every other backend is checked against.

Its sessions have the tensor names of the exported graphs (``template``, ``online_template``,
``search``, ``kv`` -> ``boxes``, ``score``) and apply the sigmoid, so the runner and the tracker
cannot tell it from an exported model. torch is imported on first use only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mfv2.config import ModelConfig, TrackerConfig
from mfv2.errors import ConfigError
from mfv2.export.manifest import MANIFEST_NAME, Manifest, load_manifest
from mfv2.runtimes.base import BACKENDS, Backend, BaseSession, GraphMode, Session

__all__ = ["TorchBackend", "TorchSession"]

log = logging.getLogger(__name__)

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class TorchSession(BaseSession):
    """One graph of a PyTorch model; bound inputs stay on the device as tensors."""

    def __init__(self, fn: Callable[..., dict[str, Any]], input_names: Sequence[str], output_names: Sequence[str],
                 device: str, dtype: Any) -> None:
        super().__init__(input_names, output_names, device)
        self._fn = fn
        self._dtype = dtype
        self._persistent: dict[str, Any] = {}  # bound inputs, as tensors on the device

    def _tensor(self, x: np.ndarray, copy: bool) -> Any:
        import torch

        if copy:
            return torch.tensor(np.asarray(x), device=self.device, dtype=self._dtype)
        return torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self._dtype)

    def _bind(self, feeds: Mapping[str, np.ndarray]) -> None:
        self._persistent.update({k: self._tensor(v, copy=True) for k, v in feeds.items()})

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = {**self._persistent, **{k: self._tensor(v, copy=False) for k, v in feeds.items()}}
        with torch.inference_mode():
            out = self._fn(**args)
        return {k: out[k].float().cpu().numpy() for k in self.output_names}

    def close(self) -> None:
        super().close()
        self._persistent.clear()


@BACKENDS.register("torch")
class TorchBackend(Backend):
    """Eager PyTorch.

    Options:
        device: ``"cpu"`` (default) or a CUDA device such as ``"cuda:0"``.
        variant: architecture for a checkpoint (default: detected) or for random weights.
        seed: seed of random weights when no checkpoint is given.
    """

    name = "torch"
    module = "torch"
    extra = "torch"
    precisions = ("fp32", "fp16", "bf16")

    def __init__(self, *, precision: str = "fp32", threads: int | None = None, device: str = "cpu",
                 variant: str | None = None, seed: int = 0) -> None:
        super().__init__(precision=precision, threads=threads)
        self.device = device
        self.variant = variant
        self.seed = seed

    def load(self, artifact: Any, graph: GraphMode) -> tuple[Manifest, dict[str, Session]]:
        import torch

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r} asked but torch sees no CUDA GPU; use device 'cpu'")
        if self.threads:
            torch.set_num_threads(self.threads)
        model, manifest = self._model(artifact)
        dtype = getattr(torch, _DTYPES[self.precision])
        model = model.to(self.device, dtype).eval()
        log.info("torch: MixFormerV2-%s on %s, %s, %s graph", model.config.name, self.device, self.precision,
                 "full" if graph == "full" else "split")
        if graph == "full":
            full = TorchSession(lambda template, online_template, search: _outputs(model(template, online_template, search)),
                                ["template", "online_template", "search"], ["boxes", "score"], self.device, dtype)
            return manifest, {"full": full}
        encoder = TorchSession(lambda template, online_template: {"kv": model.encode_templates(template, online_template)},
                               ["template", "online_template"], ["kv"], self.device, dtype)
        decoder = TorchSession(lambda search, kv: _outputs(model.track_search(search, kv)),
                               ["search", "kv"], ["boxes", "score"], self.device, dtype)
        return manifest, {"template_encoder": encoder, "search_decoder": decoder}

    def _model(self, artifact: Any) -> tuple[Any, Manifest]:
        """The network and its manifest from a model, a checkpoint, an export directory or nothing."""
        import torch

        from mfv2.models import MixFormerV2, build_model

        if isinstance(artifact, MixFormerV2):
            return artifact, self._manifest(artifact.config, {"kind": "model"})
        if artifact is None:
            if self.variant is None:
                raise ConfigError("the torch backend needs a checkpoint, an export directory, a model, or variant= for random weights")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                model = build_model(self.variant)
            return model, self._manifest(model.config, {"kind": "random", "seed": self.seed})
        path = Path(artifact)
        if not path.exists():
            raise ConfigError(f"{path} does not exist; pass a checkpoint (.pth.tar, .pt) or an export directory")
        if path.is_dir() or path.name == MANIFEST_NAME:
            return self._from_export(path if path.is_dir() else path.parent)
        if path.suffix in (".onnx", ".xml", ".bin", ".engine", ".plan"):
            raise ConfigError(f"the torch backend runs checkpoints, not {path.suffix} files; use --backend onnxruntime, openvino or tensorrt")
        model = build_model(self.variant, path)
        return model, self._manifest(model.config, {"kind": "checkpoint", "path": str(path)})

    def _from_export(self, directory: Path) -> tuple[Any, Manifest]:
        """Rebuild the PyTorch model an export was made from (its checkpoint, or its seeded random weights)."""
        import torch

        from mfv2.models import build_model

        manifest = load_manifest(directory)
        src = manifest.source
        ckpt = src.get("checkpoint") or src.get("path")
        if ckpt and Path(ckpt).is_file():
            return build_model(manifest.model, ckpt), manifest
        if "seed" in src and not ckpt:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(src["seed"]))
                return build_model(manifest.model), manifest
        raise ConfigError(
            f"{directory} was exported from {ckpt or 'an unknown source'}, which is not available here; "
            "pass the checkpoint to the torch backend instead"
        )

    def _manifest(self, cfg: ModelConfig, source: dict[str, Any]) -> Manifest:
        if self.variant is not None and source["kind"] != "random":
            from mfv2.config import variant_config

            want = variant_config(self.variant)
            if want.replace(name=cfg.name) != cfg:
                raise ConfigError(f"variant {self.variant} ({want.describe()}) does not match the model ({cfg.describe()})")
        return Manifest(model=cfg, tracker=TrackerConfig.for_model(cfg), source=source)


def _outputs(out: dict[str, Any]) -> dict[str, Any]:
    """Model outputs under the exported graphs' names, with the score as a probability."""
    return {"boxes": out["pred_boxes"], "score": out["pred_scores"].sigmoid()}
