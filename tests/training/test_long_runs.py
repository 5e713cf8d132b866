"""What a long multi-GPU run needs, checked on CPU: fp16 overflow skips, batch over world size, LOCAL_RANK
devices, pruning only at gamma 0, checkpoint retention, persistent workers, the score stage's metric."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from mfv2.errors import ConfigError, Mfv2Error  # noqa: E402
from mfv2.training import TrainConfig, Trainer, apply_overrides  # noqa: E402
from mfv2.training.config import DataConfig, DatasetSpec  # noqa: E402
from mfv2.training.objectives import OBJECTIVES, SupervisedObjective  # noqa: E402
from mfv2.training.objectives.score import roc_auc  # noqa: E402
from mfv2.training.trainer import process_batch  # noqa: E402

SYNTH = {"name": "synthetic", "num_sequences": 3, "num_frames": 30, "height": 96, "width": 128}


def _config(**changes) -> dict:
    cfg = {
        "model": {"kind": "mixformerv2", "variant": "tiny", "drop_path_rate": 0.0},
        "data": {"datasets": [SYNTH], "max_gap": 10, "samples_per_epoch": 8, "val_samples": 0, "batch_size": 4,
                 "num_workers": 0},
        "optim": {"epochs": 1, "lr": 1e-3, "lr_drop_epoch": 5, "grad_clip": 1.0},
        "objective": {"name": "supervised"},
        "checkpoint_every": 0, "progress": False, "device": "cpu",
    }
    for key, value in changes.items():
        cfg = apply_overrides(cfg, [f"{key}={json.dumps(value)}"])
    return cfg


class _Overflowing(SupervisedObjective):
    """The supervised loss, times inf on the steps listed in ``bad`` (a forced fp16 overflow)."""

    bad: set[int] = set()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def __call__(self, model, batch):
        loss, stats = super().__call__(model, batch)
        self.calls += 1
        return (loss * float("inf") if self.calls in self.bad else loss), stats


@pytest.fixture
def overflowing(monkeypatch):
    monkeypatch.setitem(OBJECTIVES._items, "overflow_test", _Overflowing)
    return _Overflowing


def test_fp16_overflow_skips_the_step_and_counts_it(tmp_path, overflowing, monkeypatch):
    overflowing.bad = {2}
    cfg = TrainConfig.from_dict(_config(**{"objective.name": "overflow_test", "optim.amp": True,
                                           "optim.amp_dtype": "fp16", "data.samples_per_epoch": 12}))
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.scaler.is_enabled()  # fp16 on CPU: the GradScaler runs as on a GPU
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=16.0)  # low enough that only the forced step overflows
    weights: list[dict[str, torch.Tensor]] = []
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):  # the scaler calls optimizer.step only for a finite step
        weights.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
        return step(*args, **kwargs)

    monkeypatch.setattr(trainer.optimizer, "step", recording_step)
    scale = trainer.scaler.get_scale()
    row = trainer.fit().history[0]
    assert row["train/skipped_steps"] == 1.0
    assert len(weights) == 2  # three steps, the overflowing one skipped
    assert row["train/loss_scale"] == scale * 0.5  # the scaler backed off once


def test_many_overflows_in_a_row_stop_the_run(tmp_path, overflowing):
    overflowing.bad = set(range(1, 10))
    cfg = TrainConfig.from_dict(_config(**{"objective.name": "overflow_test", "optim.amp": True,
                                           "optim.amp_dtype": "fp16", "optim.max_skipped_steps": 2}))
    with pytest.raises(Mfv2Error, match="2 fp16 steps in a row overflowed.*amp_dtype: bf16"):
        Trainer(cfg, tmp_path / "run").fit()


def test_without_a_scaler_a_non_finite_gradient_stops_the_run(tmp_path, overflowing):
    overflowing.bad = {1}
    cfg = TrainConfig.from_dict(_config(**{"objective.name": "overflow_test"}))
    with pytest.raises(Mfv2Error, match="non-finite gradients at epoch 1, step 0"):
        Trainer(cfg, tmp_path / "run").fit()


def test_bf16_autocast_runs_without_a_scaler(tmp_path):
    cfg = TrainConfig.from_dict(_config(**{"optim.amp": True, "optim.amp_dtype": "bf16"}))
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    assert torch.isfinite(torch.tensor(trainer.fit().history[0]["train/Loss/total"]))


def test_global_batch_follows_the_world_size():
    data = DataConfig(datasets=(DatasetSpec("synthetic"),), global_batch_size=256)
    assert process_batch(data, 8) == (32, 1.0, None)
    assert process_batch(data, 4) == (64, 1.0, None)
    per, factor, warning = process_batch(data, 6)
    assert (per, factor) == (42, pytest.approx(252 / 256))
    assert "does not divide over 6 processes" in warning and "scaled by 0.9844" in warning
    plain = DataConfig(datasets=(DatasetSpec("synthetic"),), batch_size=16)
    assert process_batch(plain, 8) == (16, 1.0, None)  # per process, as before


def test_torchrun_ranks_take_their_local_rank_device(monkeypatch, caplog):
    from mfv2.training.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda:0", 3, distributed=True) == torch.device("cuda:3")
    assert "LOCAL_RANK 3" in caplog.text
    assert resolve_device("cuda", 5, distributed=True) == torch.device("cuda:5")
    assert resolve_device("auto", 2, distributed=True) == torch.device("cuda:2")
    assert resolve_device("cuda:1", 0) == torch.device("cuda:1")  # one process: the device asked for


def test_pruning_refuses_blocks_whose_gamma_is_not_zero(tmp_path):
    from mfv2.training.routes import load_route, plan_route
    from mfv2.training.routes.spec import scale_config

    with pytest.raises(ConfigError, match="removes blocks .* gamma is still 0.0381 .* reaches 0 at epoch 40"):
        plan_route(load_route("S"), tmp_path, overrides=["optim.epochs=35"])
    # --scale rounds 40 epochs down to 1: the decay shrinks with it instead of outlasting the run
    small = scale_config({"optim": {"epochs": 40}, "objective": {"options": {"decay_epochs": 40}}}, 0.03)
    assert small["optim"]["epochs"] == 1 and small["objective"]["options"]["decay_epochs"] == pytest.approx(1.0)
    plan_route(load_route("S"), tmp_path, scale=0.03)


def test_checkpoints_keep_the_last_full_states_and_weights_only_milestones(tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig.from_dict(_config(**{"optim.epochs": 4, "checkpoint_every": 2, "keep_full": 2,
                                           "data.samples_per_epoch": 4}))
    Trainer(cfg, out).fit()
    ckpt = out / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "ep0002.pth", "ep0004.pth", "full_ep0003.pth", "full_ep0004.pth", "latest.pth"]
    full, milestone = (torch.load(ckpt / n, weights_only=True) for n in ("full_ep0003.pth", "ep0004.pth"))
    assert "optimizer" in full["meta"]["trainer"] and "trainer" not in milestone["meta"]
    with pytest.raises(ConfigError, match="holds no trainer state"):
        Trainer(cfg.replace(optim=cfg.optim.__class__(epochs=5, lr=1e-3)), tmp_path / "other", resume=ckpt / "ep0004.pth")
    resumed = Trainer(cfg.replace(optim=cfg.optim.__class__(epochs=5, lr=1e-3)), out, resume=True)
    assert resumed.start_epoch == 5


def test_persistent_workers_still_draw_each_epochs_samples(tmp_path):
    cfg = TrainConfig.from_dict(_config(**{"data.num_workers": 1, "data.persistent_workers": True}))
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.train_loader.persistent_workers
    boxes = []
    for epoch in (1, 2):
        trainer.train_set.set_epoch(epoch)
        trainer.train_keys.epoch = epoch
        boxes.append(torch.cat([b["search_box"] for b in trainer.train_loader]))
    assert not torch.equal(boxes[0], boxes[1])  # the worker kept its dataset copy, yet epoch 2 is new
    trainer.train_keys.epoch = 1
    assert torch.equal(torch.cat([b["search_box"] for b in trainer.train_loader]), boxes[0])


def test_roc_auc_against_pairs():
    scores = torch.tensor([0.9, 0.8, 0.8, 0.1, 0.4, 0.8])
    labels = torch.tensor([1, 1, 0, 0, 1, 0])
    pairs = [(p, n) for p, lp in zip(scores, labels) if lp for n, ln in zip(scores, labels) if not ln]
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert roc_auc(scores, labels) == pytest.approx(expected)
    assert torch.isnan(torch.tensor(roc_auc(scores, torch.ones(6))))


def test_score_stage_validates_on_accuracy_and_auc_of_the_score(tiny_checkpoint, tmp_path):
    ckpt = tiny_checkpoint
    cfg = TrainConfig.from_dict(_config(**{
        "model.variant": None, "model.checkpoint": str(ckpt), "objective.name": "score", "data.mode": "trident_pro",
        "data.val_datasets": [{**SYNTH, "seed": 5}], "data.val_samples": 8, "val_every": 1}))
    row = Trainer(cfg, tmp_path / "run").fit().history[0]
    assert 0.0 <= row["val/Accuracy"] <= 1.0 and 0.0 <= row["val/AUC"] <= 1.0
    assert "val/IoU" not in row  # the box of a negative sample is not a metric
