"""The training loop: datasets -> sampler -> DataLoader -> objective -> AdamW, on one or many processes.

Launch several processes (GPUs or CPU) with ``torchrun``::

    torchrun --standalone --nproc_per_node=8 -m mfv2 train --config stage1.yaml --output runs/s1

Each process draws its share of the epoch's samples through a ``DistributedSampler`` (``set_epoch``
every epoch), gradients are averaged by DDP, and rank 0 alone logs, writes the CSV/TensorBoard logs and
saves checkpoints (the others wait at a barrier). On CPU the gloo backend is used. ``data.batch_size``
is per process; ``data.global_batch_size`` is split over the processes (:func:`process_batch`). Each epoch reports the samples/s and how long a step waited for data versus computed, so a
user sees whether the data path or the model bounds training.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler, SequentialSampler

from mfv2.config import save_yaml
from mfv2.datasets import build_dataset
from mfv2.errors import ConfigError, Mfv2Error
from mfv2.fileio import atomic_path
from mfv2.training.checkpoints import LATEST, checkpoint_dir, load_training_state, rng_state, save_training_checkpoint, set_rng_state
from mfv2.training.config import DataConfig, DatasetSpec, TrainConfig
from mfv2.training.data import ProcessingSettings, TrackingProcessing, TrackingSampler
from mfv2.training.distributed import all_gather_objects, barrier, cleanup_distributed, setup_distributed
from mfv2.training.models import build_network, input_sizes
from mfv2.training.objectives import Objective, build_objective

__all__ = [
    "Trainer",
    "TrainResult",
    "param_groups",
    "build_sampler",
    "process_batch",
    "loader_worker_init",
    "WORKER_CONTEXT",
]

WORKER_CONTEXT = "forkserver"  # see loader_worker_init

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced: the output folder, the newest checkpoint, the last epoch and per-epoch stats."""

    output: Path
    last_checkpoint: Path | None
    epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


def param_groups(model: nn.Module, lr: float, backbone_lr_mult: float) -> list[dict[str, Any]]:
    """Trainable parameters: heads at ``lr``, names containing ``backbone`` at ``lr * backbone_lr_mult``."""
    heads = [p for n, p in model.named_parameters() if p.requires_grad and "backbone" not in n]
    body = [p for n, p in model.named_parameters() if p.requires_grad and "backbone" in n]
    groups = [g for g in ({"params": heads, "lr": lr}, {"params": body, "lr": lr * backbone_lr_mult}) if g["params"]]
    if not groups:
        raise ConfigError("the model has no trainable parameters; check the objective's freezing options")
    return groups


def process_batch(data: DataConfig, world_size: int) -> tuple[int, float, str | None]:
    """Per-process batch, learning-rate factor and a warning (or ``None``) for ``world_size`` processes.

    With ``data.global_batch_size`` the global batch is split over the processes; a remainder rounds
    the per-process batch down and scales the learning rate linearly by the global batch actually run
    over the configured one. Without it ``data.batch_size`` is per process and nothing is scaled.
    """
    total = data.global_batch_size
    if total is None:
        return data.batch_size, 1.0, None
    per = max(total // world_size, 1)
    if per * world_size == total:
        return per, 1.0, None
    factor = per * world_size / total
    return per, factor, (
        f"data.global_batch_size {total} does not divide over {world_size} processes: each runs a batch of {per} "
        f"(global {per * world_size}) and the learning rate is scaled by {factor:.4g}; choose a global batch that "
        f"is a multiple of {world_size} to run the recipe as written"
    )


def crop_factors(data: DataConfig, model: nn.Module) -> tuple[float, float]:
    """Template and search crop factors of the training crops.

    A MixFormerV2 config may record the factors the network is trained with (the tracker then crops
    with them); they win over ``data.template_factor``. The search factor is the model's, else
    ``data.search_factor``, else the official one (5.0 for 288-pixel search crops, 4.5 otherwise).

    Raises:
        ConfigError: ``data.search_factor`` and the model's recorded factor differ.
    """
    cfg: Any = model.config
    recorded_t, recorded_s = getattr(cfg, "template_factor", None), getattr(cfg, "search_factor", None)
    if recorded_s is not None and data.search_factor is not None and recorded_s != data.search_factor:
        raise ConfigError(f"data.search_factor {data.search_factor:g} differs from the {recorded_s:g} the model "
                          "records; drop data.search_factor")  # fmt: skip
    search = recorded_s or data.search_factor or (5.0 if input_sizes(model)[1] == 288 else 4.5)
    return recorded_t or data.template_factor, search


def build_sampler(
    specs: tuple[DatasetSpec, ...],
    cfg: TrainConfig,
    model: nn.Module,
    *,
    samples: int,
    augment: bool,
    seed: int,
    sizes: tuple[int, int] | None = None,
) -> TrackingSampler:
    """The sampler dataset of ``specs`` with processing sized for ``model`` (or cut at ``sizes``,
    (template, search), with ``model``'s crop factors: what an objective's :meth:`crop_sizes` asks for)."""
    d = cfg.data
    template, search, patch = input_sizes(model)
    if sizes is not None:
        template, search = sizes
    template_factor, search_factor = crop_factors(d, model)
    settings = ProcessingSettings(
        template_size=template, search_size=search, template_factor=template_factor,
        search_factor=search_factor,
        search_scale_jitter=d.search_scale_jitter, search_centre_jitter=d.search_centre_jitter,
        grayscale_prob=d.grayscale_prob, joint_flip_prob=d.joint_flip_prob, crop_flip_prob=d.crop_flip_prob,
        brightness_jitter=d.brightness_jitter, mask_stride=patch,
    )
    datasets = [build_dataset(s.name, **s.options) for s in specs]
    return TrackingSampler(
        datasets, [s.ratio for s in specs], TrackingProcessing(settings, augment=augment), samples_per_epoch=samples,
        mode=d.mode, max_gap=d.max_gap, pos_prob=d.pos_prob, template_order=d.template_order, seed=seed,
    )


def loader_worker_init(_: int) -> None:
    """One torch thread per DataLoader worker: the main process already uses the cores for the model.

    Workers start from a fresh forkserver process rather than a fork of this one: forking a process
    that has loaded OpenVINO or ONNX Runtime thread pools can crash the child and the parent.
    OpenCV's thread count is left alone: ``cv2.setNumThreads`` in a forked worker can deadlock once the
    parent has used OpenCV's thread pool.
    """
    torch.set_num_threads(1)



def _model_name(model: nn.Module, variant: str | None) -> str:
    """The architecture's name for the log (a route's stage builds from a checkpoint, variant None)."""
    return str(getattr(getattr(model, "config", None), "name", None) or variant or "model")


def _dataset_name(spec: DatasetSpec) -> str:
    """``name`` or ``name/family`` of a dataset of the mix, for the log."""
    family = spec.options.get("family")
    return f"{spec.name}/{family}" if family else spec.name

class _EpochKeys(Sampler[tuple[int, int]]):
    """``(epoch, index)`` keys of another sampler's indices, so persistent workers draw the epoch's samples."""

    def __init__(self, indices: Sampler[int]) -> None:
        self.indices = indices
        self.epoch = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, i) for i in self.indices)

    def __len__(self) -> int:
        return len(self.indices)  # type: ignore[arg-type]


class _Meter:
    def __init__(self) -> None:
        self.sum, self.count = 0.0, 0

    def update(self, value: float, n: int) -> None:
        self.sum += value * n
        self.count += n


class Trainer:
    """Runs a :class:`TrainConfig`; build it, then call :meth:`fit` once.

    Args:
        cfg: the run's configuration.
        output: folder for checkpoints, logs and the config copy (default ``cfg.output`` or ``runs/train``).
        resume: ``True`` continues from ``<output>/checkpoints/latest.pth``, a path continues from that file.
        progress: tqdm bars on rank 0 (default ``cfg.progress``).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        output: str | os.PathLike[str] | None = None,
        *,
        resume: bool | str | os.PathLike[str] = False,
        progress: bool | None = None,
    ) -> None:
        self.cfg = cfg
        self.output = Path(output or cfg.output or "runs/train")
        self.progress = cfg.progress if progress is None else progress
        resume_path = self._resume_path(resume)
        self.dist, self.device = setup_distributed(cfg.device)
        try:
            self._build(resume_path)
        except BaseException:
            cleanup_distributed(self.dist)
            raise

    def _resume_path(self, resume: bool | str | os.PathLike[str]) -> Path | None:
        latest = checkpoint_dir(self.output) / LATEST
        if resume is True:
            if not latest.is_file():
                raise ConfigError(f"--resume: {latest} does not exist; start without --resume")
            return latest
        if resume:
            return Path(resume)
        if latest.is_file():
            raise ConfigError(f"{self.output} already holds a run; pass --resume to continue it or choose another --output")
        return None

    def _build(self, resume_path: Path | None) -> None:
        cfg, rank = self.cfg, self.dist.rank
        if cfg.log == "tensorboard":
            _require_tensorboard()  # on every rank, before any collective, so that all stop together
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        m = cfg.model
        self.model: nn.Module = build_network(m.kind, m.variant, m.checkpoint, m.drop_path_rate).to(self.device).train()
        self.objective: Objective = build_objective(cfg.objective.name, cfg.objective.options, device=self.device)
        self.objective.prepare(self.model)
        self.objective.set_total_epochs(cfg.optim.epochs)
        self.net: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=cfg.find_unused_parameters)
        o, d = cfg.optim, cfg.data
        self.batch_size, lr_factor, warning = process_batch(d, self.dist.world_size)
        if warning and self.dist.is_main:
            log.warning("%s", warning)
        lr = o.lr * lr_factor
        self.optimizer = torch.optim.AdamW(param_groups(self.model, lr, o.backbone_lr_mult), lr=lr, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=o.lr_drop_epoch, gamma=o.decay_rate)
        auto = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.amp_dtype = {"auto": auto, "fp16": torch.float16, "bf16": torch.bfloat16}[o.amp_dtype]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=o.amp and self.amp_dtype == torch.float16)
        self.skipped_in_a_row = 0
        sizes = self.objective.crop_sizes()
        self.train_set = build_sampler(d.datasets, cfg, self.model, samples=d.samples_per_epoch, augment=True,
                                       seed=cfg.seed, sizes=sizes)
        self.train_loader, self.train_keys = self._loader(self.train_set, shuffle=True, drop_last=True)
        if self.dist.is_main:
            log.info("training %s %s on %s; %d samples/epoch, batch %d x %d processes", m.kind, _model_name(self.model, m.variant),
                     ", ".join(f"{_dataset_name(s)} ({len(ds)} sequences, ratio {s.ratio:g})"
                               for ds, s in zip(self.train_set.datasets, d.datasets)),
                     d.samples_per_epoch, self.batch_size, self.dist.world_size)
        self.val_loader = None
        if d.val_datasets and d.val_samples:
            val_set = build_sampler(d.val_datasets, cfg, self.model, samples=d.val_samples, augment=False,
                                    seed=cfg.seed + 1, sizes=sizes)
            self.val_loader, _ = self._loader(val_set, shuffle=False, drop_last=False)
        self.start_epoch = 1
        self.history: list[dict[str, float]] = []
        if resume_path is not None:
            self._restore(resume_path)
        else:
            torch.manual_seed(cfg.seed + rank)  # per-rank stochastic depth

    def _loader(self, dataset: TrackingSampler, *, shuffle: bool, drop_last: bool) -> tuple[DataLoader, _EpochKeys]:
        """A loader whose sampler yields ``(epoch, index)`` keys: workers may persist across epochs."""
        d = self.cfg.data
        indices: Sampler[int] = SequentialSampler(dataset)
        if self.dist.enabled:
            indices = DistributedSampler(dataset, self.dist.world_size, self.dist.rank, shuffle=shuffle,
                                         seed=self.cfg.seed, drop_last=drop_last)
        keys = _EpochKeys(indices)
        # The loader's own generator (reseeded each epoch) keeps it from drawing on the global RNG, so
        # validation or a resume does not shift the stochastic-depth stream of the training steps.
        loader = DataLoader(dataset, batch_size=self.batch_size, sampler=keys, num_workers=d.num_workers,
                            drop_last=drop_last, pin_memory=self.device.type == "cuda",
                            worker_init_fn=loader_worker_init if d.num_workers else None,
                            multiprocessing_context=WORKER_CONTEXT if d.num_workers else None,
                            persistent_workers=d.persistent_workers and d.num_workers > 0,
                            generator=torch.Generator())
        return loader, keys

    # -- state -----------------------------------------------------------------------------------
    def _trainer_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": all_gather_objects(rng_state(), self.dist),
                "world_size": self.dist.world_size, "history": self.history}

    def _restore(self, path: Path) -> None:
        state_dict, meta = load_training_state(path, self.cfg.model.kind)
        self.model.load_state_dict(state_dict, strict=True)
        t = meta["trainer"]
        self.optimizer.load_state_dict(t["optimizer"])
        self.scheduler.load_state_dict(t["scheduler"])
        if t.get("scaler"):
            self.scaler.load_state_dict(t["scaler"])
        self.start_epoch = int(meta["epoch"]) + 1
        self.history = [dict(h) for h in t.get("history", [])]
        if t["world_size"] == self.dist.world_size:
            set_rng_state(t["rng"][self.dist.rank])
        else:
            log.warning("resuming on %d processes a run saved on %d: RNG streams are reseeded, not restored",
                        self.dist.world_size, t["world_size"])
            torch.manual_seed(self.cfg.seed + self.dist.rank + 1000 * self.start_epoch)
        if self.dist.is_main:
            log.info("resumed from %s at epoch %d", path, self.start_epoch)

    # -- loop --------------------------------------------------------------------------------------
    def _batches(self, loader: DataLoader, desc: str) -> Iterator[tuple[dict[str, torch.Tensor], float]]:
        """Batches on the device, with the seconds spent waiting for each."""
        from tqdm import tqdm

        bar = tqdm(loader, desc=desc, disable=not (self.progress and self.dist.is_main), leave=False, dynamic_ncols=True)
        self._bar = bar
        it = iter(bar)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            yield batch, time.perf_counter() - t0

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.cfg.optim.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _reduce(self, meters: dict[str, _Meter]) -> dict[str, float]:
        merged: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for part in all_gather_objects({k: (m.sum, m.count) for k, m in meters.items()}, self.dist):
            for k, (s, n) in part.items():
                merged[k][0] += s
                merged[k][1] += n
        return {k: s / n for k, (s, n) in merged.items() if n}

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.net.train()
        self.train_set.set_epoch(epoch)
        self.train_keys.epoch = epoch
        self.train_loader.generator.manual_seed(self.cfg.seed + 1_000_003 * epoch)
        if isinstance(self.train_keys.indices, DistributedSampler):
            self.train_keys.indices.set_epoch(epoch)
        self.objective.on_epoch_start(epoch, self.model)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        clip = self.cfg.optim.grad_clip or math.inf
        meters: dict[str, _Meter] = defaultdict(_Meter)
        data_time = step_time = 0.0
        samples = skipped = 0
        start = time.perf_counter()
        for step, (batch, waited) in enumerate(self._batches(self.train_loader, f"epoch {epoch}")):
            t0 = time.perf_counter()
            with self._autocast():
                loss, stats = self.objective(self.net, batch)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
            if torch.isfinite(norm):
                self.skipped_in_a_row = 0
            else:  # gradients are all-reduced, so every rank decides alike
                self._overflow(epoch, step)
                skipped += 1
            self.scaler.step(self.optimizer)  # skips the update itself when the scaler found inf/NaN
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            n = len(batch["search"])
            for k, v in stats.items():
                meters[k].update(v, n)
            data_time += waited
            step_time += time.perf_counter() - t0
            samples += n
            self._bar.set_postfix(loss=f"{meters['Loss/total'].sum / max(meters['Loss/total'].count, 1):.4f}",
                                  iou=f"{meters['IoU'].sum / max(meters['IoU'].count, 1):.3f}", refresh=False)
        elapsed = time.perf_counter() - start
        stats = {f"train/{k}": v for k, v in self._reduce(meters).items()}
        steps = max(len(self.train_loader), 1)
        timing = all_gather_objects((samples, data_time / steps, step_time / steps), self.dist)
        stats["train/samples_per_s"] = sum(t[0] for t in timing) / elapsed
        stats["train/data_s_per_step"] = max(t[1] for t in timing)
        stats["train/compute_s_per_step"] = max(t[2] for t in timing)
        if self.scaler.is_enabled():
            stats["train/skipped_steps"] = float(skipped)
            stats["train/loss_scale"] = float(self.scaler.get_scale())
        return stats

    def _overflow(self, epoch: int, step: int) -> None:
        """A step with non-finite gradients: skipped under fp16 loss scaling (until too many in a row), else fatal."""
        if not self.scaler.is_enabled():
            raise Mfv2Error(f"non-finite gradients at epoch {epoch}, step {step}; lower optim.lr or check the data")
        self.skipped_in_a_row += 1
        limit = self.cfg.optim.max_skipped_steps
        if self.skipped_in_a_row >= limit:
            raise Mfv2Error(
                f"{self.skipped_in_a_row} fp16 steps in a row overflowed (epoch {epoch}, step {step}, loss scale "
                f"{self.scaler.get_scale():g}); the loss itself is not finite: lower optim.lr, check the data, "
                "or use optim.amp_dtype: bf16"
            )
        if self.dist.is_main:
            log.info("epoch %d, step %d: fp16 gradients overflowed at loss scale %g; step skipped (%d in a row)",
                     epoch, step, self.scaler.get_scale(), self.skipped_in_a_row)

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        """The objective's validation metrics over the whole validation set (every rank's samples)."""
        assert self.val_loader is not None
        self.model.eval()  # the bare module: evaluation needs no gradient synchronisation
        self.val_loader.generator.manual_seed(self.cfg.seed)
        parts: dict[str, list[torch.Tensor]] = defaultdict(list)
        for batch, _ in self._batches(self.val_loader, "validation"):
            with self._autocast():
                values = self.objective.evaluate(self.model, batch)
            for k, v in values.items():
                parts[k].append(v.detach().float().cpu())
        gathered = all_gather_objects({k: torch.cat(v) for k, v in parts.items()}, self.dist)
        merged = {k: torch.cat([g[k] for g in gathered if k in g]) for k in parts}
        return {f"val/{k}": v for k, v in self.objective.summarize(merged).items()}

    def fit(self) -> TrainResult:
        """Train from ``start_epoch`` to ``optim.epochs``; returns the run's :class:`TrainResult`."""
        cfg, main = self.cfg, self.dist.is_main
        last: Path | None = None
        epoch = self.start_epoch - 1
        writer = _RunLog(self.output, cfg.log, self.history) if main else None
        try:
            if main:
                self.output.mkdir(parents=True, exist_ok=True)
                save_yaml(cfg.to_dict(), self.output / "config.yaml")
            for epoch in range(self.start_epoch, cfg.optim.epochs + 1):
                row: dict[str, float] = {"epoch": float(epoch), "lr": self.optimizer.param_groups[0]["lr"]}
                row.update(self._train_epoch(epoch))
                self.scheduler.step()
                final = epoch == cfg.optim.epochs
                if self.val_loader is not None and (final or (cfg.val_every and epoch % cfg.val_every == 0)):
                    row.update(self._validate())
                self.history.append(row)
                state = self._trainer_state()  # collective: every rank takes part
                if main:
                    assert writer is not None
                    writer.write(row)
                    _log_epoch(row)
                    milestone = final or bool(cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0)
                    last = save_training_checkpoint(
                        cfg.model.kind, self.model, checkpoint_dir(self.output), epoch=epoch, trainer_state=state,
                        train_config=cfg.to_dict(), stats=row, milestone=milestone, keep_full=cfg.keep_full,
                        official=cfg.official_checkpoint,
                    )
                barrier(self.dist)
        finally:
            if writer is not None:
                writer.close()
            cleanup_distributed(self.dist)
        return TrainResult(self.output, last, epoch, self.history)


def _log_epoch(row: dict[str, float]) -> None:
    data, compute = row.get("train/data_s_per_step", 0.0), row.get("train/compute_s_per_step", 0.0)
    bound = "data-bound: add data.num_workers" if data > compute else "model-bound"
    val = "".join(f", {k} {v:.3f}" for k, v in row.items() if k.startswith("val/"))
    log.info(
        "epoch %d: loss %.4f, IoU %.3f%s, %.1f samples/s (data wait %.3f s/step, compute %.3f s/step, %s)",
        int(row["epoch"]), row.get("train/Loss/total", float("nan")), row.get("train/IoU", float("nan")), val,
        row.get("train/samples_per_s", 0.0), data, compute, bound,
    )


def _require_tensorboard() -> Any:
    """TensorBoard's ``SummaryWriter``, or a :class:`ConfigError` naming the package to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ConfigError("log: tensorboard needs the tensorboard package: pip install tensorboard") from e
    return SummaryWriter


class _RunLog:
    """``log.csv`` rewritten atomically each epoch, plus TensorBoard scalars on request."""

    def __init__(self, output: Path, kind: str, history: list[dict[str, float]]) -> None:
        self.path = output / "log.csv"
        self.rows = [dict(h) for h in history]
        self.tb = _require_tensorboard()(str(output / "tensorboard")) if kind == "tensorboard" else None

    def write(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        columns = list(dict.fromkeys(k for r in self.rows for k in r))
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows(self.rows)
        if self.tb is not None:
            for k, v in row.items():
                if k != "epoch":
                    self.tb.add_scalar(k, v, int(row["epoch"]))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
