"""The PyTorch backend: our models (any family) in eager mode, the reference every other backend is checked against.

Its sessions run the model's ``graphs()`` under the tensor names of the exported graphs (the family's
``graph_io``: MixFormerV2 ``template, online_template, search, kv -> boxes, score``; MVT ``template,
search, kv -> score_map, size_map, offset_map``), so the runner and the tracker cannot tell it from
an exported model. torch is imported on first use only.

On a CUDA device (issue 25):

* **fp16 / bf16** are module casts, not autocast: the network is cast once, while every LayerNorm
  and both heads stay float32 islands (``keep_fp32``); autocast would re-cast every weight on every
  call and pick ops by a per-device list, whereas the casts give the same numerics on CPU and GPU.
  Attention's softmax runs inside ``scaled_dot_product_attention``, whose kernels accumulate it in fp32.
* the template encoder's ``kv`` output is a :class:`DeviceArray`: the search decoder binds its tensor
  as it is, so the keys/values never leave the device between ``encode_templates`` and
  ``track_search`` (``np.asarray`` still reads it on the host).
* ``cuda_graph=True`` replays the per-frame step (the search decoder, or the full graph with bound
  templates) from a CUDA graph (:mod:`mfv2.runtimes.cuda_graphs`); ``compile=MODE`` wraps it in
  ``torch.compile``; fp32 runs with TF32 off unless ``tf32=True`` (parity with the CPU to 1e-4).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, cast

import numpy as np

from mfv2.artifacts import MANIFEST_NAME, Manifest, load_manifest, runtime_family
from mfv2.config import FamilyConfig, TrackerConfig
from mfv2.errors import BackendUnavailableError, ConfigError
from mfv2.runtimes.base import BACKENDS, Backend, BaseSession, DeviceValue, GraphMode, Session

__all__ = ["TorchBackend", "TorchSession", "DeviceArray", "COMPILE_MODES"]

log = logging.getLogger(__name__)

_DTYPES: Final = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
#: ``torch.compile`` modes; the last two replay CUDA graphs of their own.
COMPILE_MODES: Final = ("default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune")
_DEVICE_RE: Final = re.compile(r"cpu|cuda(:\d+)?")


class DeviceArray(DeviceValue):
    """A tensor output left on its device, readable as NumPy.

    The torch backend's template encoder returns ``kv`` as one: a :class:`TorchSession` given it
    binds ``tensor`` itself (no copy, no host round trip); ``np.asarray(a)`` copies it to the host
    as float32 for any other reader.

    Attributes:
        tensor: the torch tensor, on its device, in the session's dtype.
    """

    def __init__(self, tensor: Any) -> None:
        self.tensor = tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    @property
    def ndim(self) -> int:
        return int(self.tensor.dim())

    @property
    def dtype(self) -> np.dtype[Any]:
        """The dtype :meth:`numpy` returns (float32), whatever the tensor's."""
        return np.dtype(np.float32)

    @property
    def device(self) -> str:
        return str(self.tensor.device)

    def numpy(self) -> np.ndarray:
        """A float32 host copy."""
        return np.asarray(self.tensor.detach().float().cpu().numpy())

    def __len__(self) -> int:
        return int(self.tensor.shape[0])

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self.shape}, dtype={self.tensor.dtype}, device={self.device!r})"


@contextlib.contextmanager
def _tf32(allowed: bool) -> Iterator[None]:
    """TF32 for float32 matmuls and convolutions on or off for one call, restored afterwards."""
    import torch

    flags: tuple[Any, ...] = (torch.backends.cuda.matmul, torch.backends.cudnn)
    before = [f.allow_tf32 for f in flags]
    for f in flags:
        f.allow_tf32 = allowed
    try:
        yield
    finally:
        for f, was in zip(flags, before):
            f.allow_tf32 = was


class TorchSession(BaseSession):
    """One graph of a PyTorch model; bound inputs stay on the device as tensors.

    Args:
        fn: the graph, ``fn(**tensors) -> {name: tensor}``.
        device, dtype: where and in what the inputs go (``dtype`` a torch dtype).
        device_outputs: outputs returned as :class:`DeviceArray` (left on the device).
        step: what runs ``fn`` per call (default ``fn`` itself); a
            :class:`~mfv2.runtimes.cuda_graphs.GraphedStep` replays it from a CUDA graph.
        tf32: allow TF32 in float32 matmuls/convolutions (CUDA only; default off).
    """

    def __init__(self, fn: Callable[..., Mapping[str, Any]], input_names: Sequence[str], output_names: Sequence[str],
                 device: str, dtype: Any, *, device_outputs: Sequence[str] = (),
                 step: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None, tf32: bool = False) -> None:  # fmt: skip
        super().__init__(input_names, output_names, device)
        self._fn = fn
        self._dtype = dtype
        self._keep = frozenset(device_outputs)
        self.step = step
        self._tf32 = tf32
        self._cuda = device.startswith("cuda")
        self._persistent: dict[str, Any] = {}  # bound inputs, as tensors on the device

    def _tensor(self, x: Any, copy: bool) -> Any:
        import torch

        if isinstance(x, DeviceArray):  # the encoder's KV: taken as it is (it is never modified in place)
            return x.tensor.to(self.device, self._dtype)
        if copy:
            return torch.tensor(np.asarray(x), device=self.device, dtype=self._dtype)
        return torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self._dtype)

    def _bind(self, feeds: Mapping[str, Any]) -> None:
        self._persistent.update({k: self._tensor(v, copy=True) for k, v in feeds.items()})

    def write_rows(self, name: str, axis: int, rows: Sequence[int], value: Any, source: Sequence[int] | None = None) -> None:
        """Rows of the bound ``name`` replaced on the device (a new tensor: a CUDA graph sees the change)."""
        import torch

        held = self._persistent[name]
        v = self._tensor(value, copy=False)
        if source is not None:
            v = v.index_select(axis, torch.tensor(list(source), device=v.device))
        size = held.shape[axis]
        if max(rows) >= size:
            pad = list(held.shape)
            pad[axis] = max(rows) + 1 - size
            held = torch.cat([held, held.new_zeros(pad)], dim=axis)
        self._persistent[name] = held.index_copy(axis, torch.tensor(list(rows), device=held.device), v)

    def keep_rows(self, name: str, axis: int, rows: Sequence[int]) -> None:
        import torch

        held = self._persistent[name]
        self._persistent[name] = held.index_select(axis, torch.tensor(list(rows), device=held.device))

    def _call(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        return self.step(args) if self.step is not None else self._fn(**args)

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        import torch

        args = {**self._persistent, **{k: self._tensor(v, copy=False) for k, v in feeds.items()}}
        with torch.inference_mode(), _tf32(self._tf32) if self._cuda else contextlib.nullcontext():
            out = self._call(args)
            kept = {k: DeviceArray(out[k]) for k in self.output_names if k in self._keep}
            host = [k for k in self.output_names if k not in self._keep]
            # One device-to-host copy for every host output (each .cpu() is a synchronisation).
            flat = [out[k].reshape(out[k].shape[0], -1).float() for k in host]
            both = torch.cat(flat, dim=1).cpu().numpy() if flat else np.zeros((0, 0), np.float32)
            if kept and not flat and self._cuda:
                # Outputs left on the device: wait for them, so that a template update returns (and is
                # timed) when its KV is ready rather than when its kernels are queued.
                torch.cuda.current_stream(self.device).synchronize()
        result: dict[str, Any] = dict(kept)
        start = 0
        for k, f in zip(host, flat):
            # (B, sum of widths) -> each output's own shape
            result[k] = both[:, start:start + f.shape[1]].reshape(tuple(out[k].shape)).copy()
            start += f.shape[1]
        return result

    def close(self) -> None:
        super().close()
        self._persistent.clear()
        self.step = None


def _float32_island(module: Any, *, restore: bool) -> Any:
    """``module`` run in float32: the input is cast up and (``restore``) the output back to the input dtype."""
    import torch
    from torch import nn

    class Float32(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner.float()

        def forward(self, x: torch.Tensor) -> Any:
            out = self.inner(x.float())
            return out.to(x.dtype) if restore else out

    return Float32(module)


def _cast_model(model: Any, dtype: Any, *, keep_fp32: bool = True) -> Any:
    """``model`` cast to ``dtype`` in place, with LayerNorms and the heads kept float32 (``keep_fp32``).

    The LayerNorms take and return ``dtype`` (they compute in float32); the heads take the
    prediction tokens in ``dtype`` and return float32 boxes, logits and score.
    """
    import torch
    from torch import nn

    model = model.to(dtype)
    if not keep_fp32 or dtype == torch.float32:
        return model
    for parent in list(model.backbone.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LayerNorm):
                setattr(parent, name, _float32_island(child, restore=True))
    for head in ("box_head", "score_head"):  # the heads a family has (MVT: box_head only)
        if hasattr(model, head):
            setattr(model, head, _float32_island(getattr(model, head), restore=False))
    return model


@BACKENDS.register("torch")
class TorchBackend(Backend):
    """Eager PyTorch on the CPU or a CUDA GPU.

    Options:
        device: ``"cpu"`` (default), ``"cuda"`` or ``"cuda:N"``.
        variant: architecture for a checkpoint (default: detected) or for random weights.
        seed: seed of random weights when no checkpoint is given.
        keep_fp32: under fp16/bf16, keep every LayerNorm and both heads in float32 (default True;
            False casts everything, like ``model.half()``).
        cuda_graph: replay the per-frame step from a CUDA graph (CUDA devices only).
        cuda_graph_fallback: after a failed capture, warn once and run eagerly (default True);
            False raises instead (benchmarks, so a failure is not timed as a graph).
        graph_warmup: eager calls on a side stream before a capture (default 3).
        compile: a ``torch.compile`` mode for the per-frame step (:data:`COMPILE_MODES`), or None.
        compile_backend: the ``torch.compile`` backend (default ``"inductor"``).
        tf32: allow TF32 in fp32 matmuls and convolutions on CUDA (default False: the fp32 path
            matches the CPU to 1e-4; TF32 would not).
    """

    name = "torch"
    module = "torch"
    extra = "torch"
    precisions = ("fp32", "fp16", "bf16")

    def __init__(self, *, precision: str = "fp32", threads: int | None = None, device: str = "cpu",
                 variant: str | None = None, seed: int = 0, keep_fp32: bool = True, cuda_graph: bool = False,
                 cuda_graph_fallback: bool = True, graph_warmup: int = 3, compile: str | None = None,
                 compile_backend: str = "inductor", tf32: bool = False) -> None:  # fmt: skip
        super().__init__(precision=precision, threads=threads)
        if not isinstance(device, str) or not _DEVICE_RE.fullmatch(device):
            raise ConfigError(f"torch device must be cpu, cuda or cuda:N, got {device!r}")
        if cuda_graph and device == "cpu":
            raise ConfigError("cuda_graph replays CUDA graphs and needs a CUDA device; pass device 'cuda' or drop cuda_graph")
        if compile is not None and compile not in COMPILE_MODES:
            raise ConfigError(f"compile must be one of {', '.join(COMPILE_MODES)} (or None), got {compile!r}")
        if cuda_graph and compile in ("reduce-overhead", "max-autotune"):
            raise ConfigError(f"compile mode {compile!r} replays CUDA graphs itself; drop cuda_graph or use compile 'default'")
        if graph_warmup < 1:
            raise ConfigError(f"graph_warmup must be >= 1, got {graph_warmup}")
        self.device = device
        self.variant = variant
        self.seed = seed
        self.keep_fp32 = keep_fp32
        self.cuda_graph = cuda_graph
        self.cuda_graph_fallback = cuda_graph_fallback
        self.graph_warmup = graph_warmup
        self.compile = compile
        self.compile_backend = compile_backend
        self.tf32 = tf32

    def _check_device(self) -> None:
        """Refuse a CUDA device this torch cannot use, in one line that says what to do."""
        import torch

        if not self.device.startswith("cuda"):
            return
        if torch.version.cuda is None:
            raise BackendUnavailableError(
                f"device {self.device!r} asked but this torch ({torch.__version__}) is a CPU-only build; "
                "install a CUDA build of PyTorch (https://pytorch.org/get-started/locally/) or use device 'cpu'"
            )
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {self.device!r} asked but torch sees no CUDA GPU (driver missing, or CUDA_VISIBLE_DEVICES "
                "hides it); use device 'cpu'"
            )
        index = int(self.device.partition(":")[2] or torch.cuda.current_device())
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {self.device!r} asked but torch sees {torch.cuda.device_count()} CUDA GPU(s)")
        if self.precision == "bf16" and not torch.cuda.is_bf16_supported():
            name = torch.cuda.get_device_name(index)
            raise ConfigError(f"{name} has no bf16 (it needs compute capability 8.0 or later); use precision fp16 or fp32")

    def load(self, artifact: Any, graph: GraphMode) -> tuple[Manifest, dict[str, Session]]:
        import torch

        from torch import nn

        self._check_device()
        if self.threads:
            torch.set_num_threads(self.threads)
        model, manifest = self._model(artifact)
        dtype = getattr(torch, _DTYPES[self.precision])
        if isinstance(artifact, nn.Module) and (dtype != torch.float32 or self.device != "cpu"):
            model = copy.deepcopy(model)  # the caller's model stays as it was
        model = _cast_model(model.to(self.device).eval(), dtype, keep_fp32=self.keep_fp32)
        log.info("torch: %s-%s on %s, %s%s, %s graph%s%s", runtime_family(manifest.family).title, model.config.name, self.device, self.precision,
                 " (LayerNorm and heads fp32)" if self.keep_fp32 and self.precision != "fp32" else "",
                 "full" if graph == "full" else "split", ", CUDA graph" if self.cuda_graph else "",
                 f", torch.compile {self.compile}" if self.compile else "")  # fmt: skip
        graphs = model.graphs()
        io = runtime_family(manifest.family).graph_io(model.config, 1)

        def session(name: str, desc: str | None, **kw: Any) -> TorchSession:
            fn, (ins, outs) = graphs[name], io[name]
            step = self._step(fn, desc) if desc else None
            return TorchSession(fn, list(ins), list(outs), self.device, dtype, step=step, tf32=self.tf32, **kw)

        if graph == "full":
            return manifest, {"full": session("full", "full graph")}
        # The encoder's state (``kv``) stays on the device for the decoder.
        return manifest, {"template_encoder": session("template_encoder", None, device_outputs=["kv"]),
                          "search_decoder": session("search_decoder", "search decoder")}  # fmt: skip

    def _step(self, fn: Callable[..., Mapping[str, Any]], name: str) -> Callable[[Mapping[str, Any]], Mapping[str, Any]] | None:
        """How the per-frame graph runs: compiled and/or replayed from a CUDA graph (None: plain calls)."""
        if self.compile:
            import torch

            fn = torch.compile(fn, mode=self.compile, backend=self.compile_backend, dynamic=False)
        if self.cuda_graph:
            from mfv2.runtimes.cuda_graphs import GraphedStep, TorchCudaGraphOps

            return GraphedStep(fn, TorchCudaGraphOps(self.device), warmup=self.graph_warmup,
                               fallback=self.cuda_graph_fallback, name=name)  # fmt: skip
        if self.compile:
            compiled = fn
            return lambda args: compiled(**args)
        return None

    def _model(self, artifact: Any) -> tuple[Any, Manifest]:
        """The network and its manifest from a model, a checkpoint, an export directory or nothing."""
        import torch

        from torch import nn

        from mfv2.models import build_model

        if isinstance(artifact, nn.Module):
            return artifact, self._manifest(cast(FamilyConfig, artifact.config), {"kind": "model"})
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

    def _manifest(self, cfg: FamilyConfig, source: dict[str, Any]) -> Manifest:
        if self.variant is not None and source["kind"] != "random":
            from mfv2.models.family import family_of

            want = family_of(self.variant).config(self.variant)
            if want.replace(name=cfg.name) != cfg:
                raise ConfigError(f"variant {self.variant} ({want.describe()}) does not match the model ({cfg.describe()})")
        return Manifest(model=cfg, tracker=TrackerConfig.for_model(cfg), batch=None, source=source)  # eager: any batch

