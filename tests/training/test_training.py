"""The trainer end to end on the tiny variant: configs, checkpoints, exact resume, objectives, CLI.

Run in one pytest process after the OpenVINO tests, the interpreter used to die here with a silent
SIGSEGV (si_code SI_KERNEL, in poll under mp.spawn): OpenVINO's CPU plugin leaves the main thread's
alternate signal stack pointing at memory it has unmapped (two ``ov.Core`` dropped in creation order),
and the SIGCHLD of an exiting child, handled by the Python handler torch's DataLoader leaves installed,
is delivered on that stack. conftest.py's ``_sigaltstack_guard`` gives the thread a stack that stays
alive around every test, so the suite runs in one process; the cause, a reproduction and the versions
are in benchmarks/segfault/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")

from mfv2.cli import main  # noqa: E402
from mfv2.config import load_yaml  # noqa: E402
from mfv2.errors import ConfigError  # noqa: E402
from mfv2.training import (  # noqa: E402
    OBJECTIVES,
    TrainConfig,
    Trainer,
    apply_overrides,
    builtin_configs,
    load_train_config,
    param_groups,
)


SYNTH = {"name": "synthetic", "num_sequences": 3, "num_frames": 30, "height": 96, "width": 128}


def tiny_config(**changes) -> dict:
    cfg = {
        "model": {"kind": "mixformerv2", "variant": "tiny", "drop_path_rate": 0.1},
        "data": {"datasets": [SYNTH], "val_datasets": [{**SYNTH, "seed": 99}], "max_gap": 10,
                 "samples_per_epoch": 8, "val_samples": 4, "batch_size": 4, "num_workers": 0},
        "optim": {"epochs": 2, "lr": 1e-3, "lr_drop_epoch": 1, "decay_rate": 0.5, "grad_clip": 1.0},
        "objective": {"name": "supervised", "options": {"l1": 5.0, "iou": 2.0}},
        "checkpoint_every": 1, "val_every": 2, "progress": False, "device": "cpu",
    }
    for key, value in changes.items():
        cfg = apply_overrides(cfg, [f"{key}={json.dumps(value)}"])
    return cfg


def _params(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_config_round_trip_and_errors(tmp_path):
    cfg = TrainConfig.from_dict(tiny_config())
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.data.datasets[0].options["num_frames"] == 30
    with pytest.raises(ConfigError, match="unknown config.optim key.*epoch; valid keys: epochs"):
        TrainConfig.from_dict(tiny_config(**{"optim.epoch": 3}))
    with pytest.raises(ConfigError, match="data.mode must be one of causal"):
        TrainConfig.from_dict(tiny_config(**{"data.mode": "random"}))
    with pytest.raises(ConfigError, match="--set expects section.key=value"):
        apply_overrides({}, ["optim.epochs"])
    with pytest.raises(ConfigError, match="does not exist; pass a YAML file or one of: .*tiny_synthetic"):
        load_train_config(tmp_path / "nope.yaml")


def test_yaml_exponent_floats_and_a_variant_read_from_the_checkpoint(tmp_path, tiny_model):
    from mfv2.models import save_native
    from mfv2.training.models import build_network

    (tmp_path / "c.yaml").write_text("optim:\n  lr: 1e-4\n")
    assert load_yaml(tmp_path / "c.yaml")["optim"]["lr"] == 1e-4  # PyYAML alone reads the string '1e-4'
    assert apply_overrides({}, ["optim.lr=5E-5", "model.variant=null"]) == {"optim": {"lr": 5e-5}, "model": {"variant": None}}
    ckpt = save_native(tiny_model.state_dict(), tiny_model.config.replace(name="mine"), tmp_path / "mine.pt")
    cfg = TrainConfig.from_dict(tiny_config(**{"model.variant": None, "model.checkpoint": str(ckpt)}))
    assert cfg.model.variant is None
    assert build_network(cfg.model.kind, cfg.model.variant, cfg.model.checkpoint).config.name == "mine"


def test_shipped_configs_load():
    names = ["tiny_synthetic", "mixvit_tiny_synthetic", "mixvit_b_teacher", "mixformerv2_b_stage1",
             "mixformerv2_b_supervised"]
    assert set(names) <= set(builtin_configs())
    for name in names:
        cfg = load_train_config(name, ["optim.epochs=3"])
        assert cfg.optim.epochs == 3 and cfg.objective.name in OBJECTIVES


def test_unknown_objective_lists_the_known_ones():
    from mfv2.training import build_objective

    with pytest.raises(ConfigError, match="unknown objective 'supervize'.*did you mean supervised"):
        build_objective("supervize", {}, device="cpu")
    with pytest.raises(ConfigError, match="unknown objective.options .*key.*weight.*valid keys: l1, iou, iou_loss, score"):
        build_objective("supervised", {"weight": 1}, device="cpu")


def test_param_groups_backbone_multiplier(tiny_model):
    model = tiny_model
    groups = param_groups(model, 1e-3, 0.1)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-4)]
    heads = {id(p) for p in groups[0]["params"]}
    assert {id(p) for p in model.box_head.parameters()} <= heads
    assert id(model.backbone.reg_tokens) not in heads
    assert id(model.backbone.pos_embed_s) not in {id(p) for g in groups for p in g["params"]}  # frozen table


def test_train_checkpoints_logs_and_schedule(tmp_path):
    from mfv2.models import build_model

    out = tmp_path / "run"
    trainer = Trainer(TrainConfig.from_dict(tiny_config(official_checkpoint=True)), out)
    before = _params(trainer.model)
    result = trainer.fit()
    assert result.epoch == 2
    ckpt = out / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "ep0001.pth", "ep0001.pth.tar", "ep0002.pth", "ep0002.pth.tar", "full_ep0001.pth", "full_ep0002.pth",
        "latest.pth", "latest.pth.tar",
    ]
    assert (ckpt / "latest.pth").samefile(ckpt / "full_ep0002.pth")  # a link, not a second copy
    milestone = torch.load(ckpt / "ep0002.pth", weights_only=True)
    assert "trainer" not in milestone["meta"] and milestone["meta"]["epoch"] == 2  # weights only
    assert result.last_checkpoint == ckpt / "ep0002.pth"
    loaded = build_model(checkpoint=ckpt / "latest.pth")  # the native file loads for inference
    official = build_model(checkpoint=ckpt / "latest.pth.tar")  # and so does the {'net': ...} layout
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v) and torch.equal(official.state_dict()[k], v)
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    rows = (out / "log.csv").read_text().splitlines()
    assert len(rows) == 3 and "val/IoU" in rows[0] and "train/samples_per_s" in rows[0]
    # lr_drop_epoch 1 with decay_rate 0.5 (the official code would use 0.1 whatever the config says)
    assert [h["lr"] for h in result.history] == [1e-3, pytest.approx(5e-4)]
    assert "val/IoU" in result.history[1] and "val/IoU" not in result.history[0]
    assert 0.0 <= result.history[1]["val/IoU"] <= 1.0
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["decay_rate"] == 0.5
    assert not list(out.rglob("*.tmp"))
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        Trainer(TrainConfig.from_dict(tiny_config()), out)


def test_resume_continues_bit_exactly(tmp_path):
    cfg2 = TrainConfig.from_dict(tiny_config(**{"data.num_workers": 1}))
    straight = Trainer(cfg2, tmp_path / "a")
    straight.fit()
    cfg1 = TrainConfig.from_dict(tiny_config(**{"data.num_workers": 1, "optim.epochs": 1}))
    Trainer(cfg1, tmp_path / "b").fit()
    resumed = Trainer(cfg2, tmp_path / "b", resume=True)
    assert resumed.start_epoch == 2
    result = resumed.fit()
    assert result.epoch == 2 and len(result.history) == 2
    for k, v in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    assert straight.optimizer.state_dict()["state"][0]["step"] == resumed.optimizer.state_dict()["state"][0]["step"]
    with pytest.raises(ConfigError, match="does not exist; start without --resume"):
        Trainer(cfg2, tmp_path / "c", resume=True)


def test_mixvit_teacher_and_distill_objective(tmp_path):
    teacher_cfg = tiny_config(**{"model.kind": "mixvit", "objective.options": {"iou_loss": "giou"},
                                 "optim.epochs": 1})
    teacher = Trainer(TrainConfig.from_dict(teacher_cfg), tmp_path / "teacher").fit()
    student_cfg = tiny_config(**{
        "optim.epochs": 1,
        "objective": {"name": "distill", "options": {
            "teacher_checkpoint": str(teacher.last_checkpoint), "feat": 0.2, "feat_pairs": [[0, 0], [1, 1]]}},
    })
    result = Trainer(TrainConfig.from_dict(student_cfg), tmp_path / "student").fit()
    stats = result.history[0]
    for key in ("train/Loss/kl", "train/Loss/feat", "train/Loss/ciou", "train/Loss/l1"):
        assert key in stats and stats[key] == stats[key]  # present and not NaN
    assert stats["train/Loss/kl"] > 0


def test_distill_rejects_mismatched_teacher(tmp_path):
    from mfv2.models.mixformerv2.mixvit import MIXVIT_VARIANTS, MixViT, save_mixvit

    wide = MIXVIT_VARIANTS.get("tiny").__class__(**{**MIXVIT_VARIANTS.get("tiny").to_dict(), "search_size": 96})
    path = save_mixvit(MixViT(wide), tmp_path / "teacher96.pth")
    options = {"teacher_checkpoint": str(path), "teacher_input": "checkpoint"}
    cfg = tiny_config(objective={"name": "distill", "options": options})
    with pytest.raises(ConfigError, match=r"teacher's inputs .*\(32, 96, 16\) differ from the student's \(32, 64, 16\)"):
        Trainer(TrainConfig.from_dict(cfg), tmp_path / "run")
    cfg = tiny_config(objective={"name": "distill", "options": {"teacher_checkpoint": str(path)}})
    trainer = Trainer(TrainConfig.from_dict(cfg), tmp_path / "run2")  # the default runs it at the student's sizes
    assert trainer.objective.teacher.config.search_size == 64


def test_amp_bf16_on_cpu(tmp_path):
    cfg = TrainConfig.from_dict(tiny_config(**{"optim.amp": True, "optim.epochs": 1, "data.val_datasets": []}))
    result = Trainer(cfg, tmp_path / "amp").fit()
    assert result.history[0]["train/Loss/total"] == result.history[0]["train/Loss/total"]


def test_tensorboard_log_names_the_missing_package(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            Trainer(TrainConfig.from_dict(tiny_config(log="tensorboard")), tmp_path / "tb")
    else:
        result = Trainer(TrainConfig.from_dict(tiny_config(log="tensorboard", **{"optim.epochs": 1})), tmp_path / "tb").fit()
        assert list((result.output / "tensorboard").iterdir())


def test_cli_train_and_errors(tmp_path, capsys):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(**{"optim.epochs": 1})))
    assert main(["train", "--config", str(cfg_path), "--output", str(tmp_path / "run"), "--no-progress"]) == 0
    assert "trained to epoch 1" in capsys.readouterr().out
    assert (tmp_path / "run" / "checkpoints" / "ep0001.pth").is_file()
    assert main(["train", "--config", str(cfg_path), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mfv2: error:") and "--resume" in err[0]
    assert main(["train", "--config", str(cfg_path), "--set", "optim.lr=-1"]) == 2
    assert "optim.lr must be > 0" in capsys.readouterr().err


def test_cli_benchmark_prints_throughput(tmp_path, capsys):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config()))
    assert main(["train", "--config", str(cfg_path), "--benchmark", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["data_samples_per_s"] > 0 and report["step_s"] > 0 and report["bound"] in ("data", "model")


def _ddp_worker(rank: int, world: int, port: int, cfg: dict, out: str) -> None:
    """One rank: train, then save its weights (BatchNorm statistics stay per rank, as DDP leaves them)."""
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    trainer = Trainer(TrainConfig.from_dict(cfg), Path(out) / "run")
    trainer.fit()
    torch.save(trainer.model.state_dict(), Path(out) / f"rank{rank}.pt")


def test_ddp_two_processes_keep_parameters_identical(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tiny_config(**{"model.kind": "mixvit", "objective.options": {"iou_loss": "giou"}, "optim.epochs": 1})
    mp.spawn(_ddp_worker, args=(2, port, cfg, str(tmp_path)), nprocs=2, join=True)
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    start = Trainer(TrainConfig.from_dict(cfg), tmp_path / "fresh").model
    params = [k for k, p in start.named_parameters() if p.requires_grad]
    for k in params:
        assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(start.state_dict()[k], a[k]) for k in params)  # the ranks did train
    assert (tmp_path / "run" / "checkpoints" / "latest.pth").is_file()
