"""LoReTrack: low-resolution configs, grid alignment, QKV-KD, the discrimination mask, the objective and its route."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from mfv2.config import ModelConfig, variant_config  # noqa: E402
from mfv2.errors import ConfigError  # noqa: E402
from mfv2.models import MixFormerV2, build_model, save_native  # noqa: E402
from mfv2.models.mixformerv2.vit import sincos_pos_table  # noqa: E402
from mfv2.training.objectives.loretrack import (  # noqa: E402
    LoReTrackObjective,
    disc_kd_loss,
    discrimination_mask,
    init_lowres_from_teacher,
    lowres_config,
    qkv_kd_loss,
    resize_crops,
    resize_token_grid,
    token_distance,
)
from mfv2.training.routes import load_route, run_route  # noqa: E402

TINY = variant_config("tiny")
LOW = lowres_config("tiny", 48, template_size=32)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """The tiny MixFormerV2 (template 32, search 64) with seeded random weights, as a native checkpoint."""
    torch.manual_seed(1)
    return save_native(MixFormerV2(TINY).state_dict(), TINY, tmp_path_factory.mktemp("lr") / "teacher.pt")


def _batch(n=4, seed=0, search=48):
    g = torch.Generator().manual_seed(seed)
    boxes = torch.rand(n, 2, generator=g) * 0.3 + 0.2
    return {"template": torch.randn(n, 3, 32, 32, generator=g), "online_template": torch.randn(n, 3, 32, 32, generator=g),
            "search": torch.randn(n, 3, search, search, generator=g), "search_box": torch.cat([boxes, boxes], dim=1),
            "label": torch.ones(n)}


def _centres(grid):
    """(grid*grid, 2) token-cell centres (x, y) in [0, 1], row-major."""
    c = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)


def test_lowres_config_names_the_resolution_scalable_variants():
    for search, template in ((192, 96), (160, 80), (128, 64)):
        cfg = lowres_config("S", search)
        assert (cfg.name, cfg.search_size, cfg.template_size) == (f"S-{search}", search, template)
        assert cfg.replace(name="S", search_size=224, template_size=112) == variant_config("S")
    with pytest.raises(ConfigError, match="multiple of the patch size 16"):
        lowres_config("S", 200)
    with pytest.raises(ConfigError, match="pass template_size"):
        lowres_config("S", 112)
    assert lowres_config("S", 112, template_size=64).template_size == 64


@pytest.mark.parametrize("src,dst", [(8, 6), (14, 10), (4, 3), (6, 8)])
def test_resized_grid_aligns_token_centres(src, dst):
    # A teacher grid whose tokens hold their own cell centres: resized, each student token holds its own.
    tokens = _centres(src)[None].repeat(2, 1, 1)  # (2, src*src, 2)
    resized = resize_token_grid(tokens, dst)
    inner = (_centres(dst) >= _centres(src).min()).all(1) & (_centres(dst) <= _centres(src).max()).all(1)
    assert resized.shape == (2, dst * dst, 2)
    torch.testing.assert_close(resized[:, inner], _centres(dst)[inner][None].expand(2, -1, -1))
    assert inner.all() == (dst < src)  # shrinking never extrapolates
    same = torch.randn(1, 3, 16, 5)
    assert resize_token_grid(same, 4) is same
    with pytest.raises(ValueError, match="square"):
        resize_token_grid(torch.zeros(1, 10, 3), 3)


def test_resize_token_grid_keeps_row_major_order():
    grid = torch.zeros(1, 16, 1)
    grid[0, 1 * 4 + 3] = 1.0  # row 1, column 3: right edge, upper half
    out = resize_token_grid(grid, 2).reshape(2, 2)
    assert out[0, 1] > 0 and out[0, 0] == out[1, 0] == out[1, 1] == 0


def test_qkv_kd_compares_resized_teacher_queries_keys_and_values():
    c = 4
    teacher = torch.zeros(2, 16, 3 * c)  # 4x4 teacher grid, constant per part: q = 1, k = 2, v = 3
    teacher[..., :c], teacher[..., c:2 * c], teacher[..., 2 * c:] = 1.0, 2.0, 3.0
    student = torch.zeros(2, 9, 3 * c, requires_grad=True)  # 3x3 student grid
    loss = qkv_kd_loss(student, teacher, form="mse")  # the paper text's form
    assert loss.item() == pytest.approx(1 + 4 + 9)
    # the authors' code: KL with temperature 4 over the channels; constant tokens give equal softmaxes
    assert qkv_kd_loss(student, teacher).item() == pytest.approx(0.0, abs=1e-7)
    loss.backward()
    assert student.grad is not None
    assert qkv_kd_loss(resize_token_grid(teacher, 3), teacher).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="width"):
        qkv_kd_loss(torch.zeros(1, 9, 6), teacher)


def test_discrimination_mask_on_a_hand_made_feature_map():
    grid = torch.full((4, 4, 2), 0.1)  # background energy 0.01
    grid[1:3, 1:3] = 1.0  # the target: energy 1
    grid[0, 3] = 0.5  # energy 0.25, normalised (0.25 - 0.01) / 0.99 = 0.24 > 0.2
    grid[3, 0] = 0.4  # energy 0.16, normalised 0.15 < 0.2
    mask = discrimination_mask(grid.reshape(1, 16, 2), tau=0.2, normalise=True).reshape(4, 4)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1:3, 1:3] = True
    expected[0, 3] = True
    assert torch.equal(mask, expected)
    assert not discrimination_mask(torch.ones(1, 9, 3), normalise=True).any()  # nothing stands out
    # the authors' code thresholds the raw energy: 1 and 0.25 pass 0.2, 0.16 and 0.01 do not
    assert torch.equal(discrimination_mask(grid.reshape(1, 16, 2), tau=0.2).reshape(4, 4), expected)
    assert discrimination_mask(torch.ones(1, 9, 3)).all()  # raw energy 1 > 0.2 everywhere


def test_disc_kd_weights_the_mask_alpha_and_the_rest_beta():
    teacher = torch.full((1, 16, 2), 0.1)
    teacher[0, 5] = 1.0  # one discriminative token
    student = teacher + 0.5  # squared error 0.25 on every token
    loss, mask = disc_kd_loss(student, teacher, tau=0.2, alpha=0.6, beta=0.4, form="mse")
    assert mask.sum() == 1 and mask[0, 5]
    assert loss.item() == pytest.approx((0.6 * 0.25 + 15 * 0.4 * 0.25) / 16)
    # The teacher's grid is resized before the mask: a 4x4 teacher against a 2x2 student.
    loss, mask = disc_kd_loss(torch.zeros(1, 4, 2), teacher, normalise=True)
    assert mask.shape == (1, 4) and mask[0, 0] and not mask[0, 3]


def test_kl_distance_with_temperature_against_a_hand_computation():
    s, t = torch.tensor([[[1.0, 0.0, -1.0]]]), torch.tensor([[[0.0, 2.0, 0.5]]])
    T = 4.0
    ps, pt = torch.softmax(s / T, -1), torch.softmax(t / T, -1)
    expected = T * T * float((pt * (pt.log() - ps.log())).sum())
    assert token_distance(s, t, "kl", T, "channels").item() == pytest.approx(expected, rel=1e-5)
    # over the tokens (each channel a distribution over the tokens): the token mean is the channel-mean KL
    s2, t2 = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    ps2, pt2 = torch.softmax(s2 / T, 1), torch.softmax(t2 / T, 1)
    per_channel = T * T * (pt2 * (pt2.log() - ps2.log())).sum(dim=1)  # (B, C)
    torch.testing.assert_close(token_distance(s2, t2, "kl", T).mean(dim=1), per_channel.mean(dim=1))
    assert token_distance(s, t, "mse").item() == pytest.approx(float(((s - t) ** 2).mean()))
    assert token_distance(t, t).item() == pytest.approx(0.0, abs=1e-7)


def test_resize_crops_handles_both_directions():
    x = torch.rand(2, 3, 64, 64)
    assert resize_crops(x, 64) is x
    assert resize_crops(x, 48).shape == (2, 3, 48, 48) and resize_crops(x[:, None], 96).shape == (2, 1, 3, 96, 96)
    flat = torch.full((1, 3, 32, 32), 0.25)
    torch.testing.assert_close(resize_crops(flat, 48), torch.full((1, 3, 48, 48), 0.25))


def test_student_starts_from_the_teacher_with_its_own_position_tables(teacher_file):
    objective = LoReTrackObjective({"teacher_checkpoint": str(teacher_file)})
    student = MixFormerV2(LOW)
    objective.prepare(student)
    t_sd, s_sd = objective.teacher.state_dict(), student.state_dict()
    for key, value in s_sd.items():
        if key == "backbone.pos_embed_s":
            torch.testing.assert_close(value[0], sincos_pos_table(LOW.embed_dim, 3))
        else:
            assert torch.equal(value, t_sd[key]), key
    with pytest.raises(ConfigError, match="teacher's architecture"):
        objective.prepare(MixFormerV2(LOW.replace(depth=1)))
    with pytest.raises(ConfigError, match="init_from_teacher: false"):
        init_lowres_from_teacher(MixFormerV2(LOW.replace(num_bins=8)), objective.teacher)


def test_distillation_terms_vanish_for_an_identical_student(teacher_file):
    objective = LoReTrackObjective({"teacher_checkpoint": str(teacher_file), "mask_norm": "minmax"})
    same = MixFormerV2(TINY).eval()
    objective.prepare(same)
    _, stats = objective(same, _batch(search=64))
    assert stats["Loss/qkv_kd"] == pytest.approx(0.0, abs=1e-10) and stats["Loss/disc_kd"] == pytest.approx(0.0, abs=1e-10)
    low = MixFormerV2(LOW).eval()
    objective.prepare(low)
    _, stats = objective(low, _batch())
    assert stats["Loss/qkv_kd"] > 1e-4 and stats["Loss/disc_kd"] > 1e-4 and 0 < stats["disc_mask"] < 1


def test_plain_low_resolution_training_skips_the_teacher(teacher_file, monkeypatch):
    objective = LoReTrackObjective({"teacher_checkpoint": str(teacher_file), "qkv": 0, "disc": 0})
    student = MixFormerV2(LOW).train()
    objective.prepare(student)
    monkeypatch.setattr(objective, "teacher", None)
    loss, stats = objective(student, _batch())
    loss.backward()
    assert "Loss/qkv_kd" not in stats and stats["Loss/total"] > 0


def test_loretrack_loss_falls_on_a_fixed_batch(teacher_file):
    objective = LoReTrackObjective({"teacher_checkpoint": str(teacher_file), "qkv": 1.0, "disc": 1.0})
    torch.manual_seed(0)
    student = MixFormerV2(LOW).train()
    objective.prepare(student)
    batch = _batch(8, seed=3, search=64)  # crops at the teacher's size: the student gets them resized
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(15):
        loss, stats = objective(student, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(stats)
    for key in ("Loss/total", "Loss/qkv_kd", "Loss/disc_kd"):
        assert losses[-1][key] < 0.8 * losses[0][key], key
    assert objective.evaluate(student, batch)["IoU"].shape == (8,)


TINY_DATA = [
    "data.datasets=[{name: synthetic, num_sequences: 2, seed: 3, num_frames: 40, height: 120, width: 160}]",
    "data.val_datasets=[]",
    "data.samples_per_epoch=8",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.max_gap=20",
    "optim.epochs=2",
    "progress=false",
    "device=cpu",
]


@pytest.fixture(scope="module")
def lowres_run(teacher_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("lr_route")
    route = {"name": "lr_tiny", "stages": [
        {"name": "stage1", "config": "demo_stage1", "init": {"variant": "tiny"}},
        {"name": "loretrack", "config": "lr_demo_loretrack", "init": {"config": LOW.to_dict()}, "teacher": "stage1",
         "model_name": LOW.name},
    ]}
    path = root / "route_lr_tiny.yaml"
    path.write_text(yaml.safe_dump(route))
    return run_route(load_route(path), root / "run", overrides=TINY_DATA, given={"stage1": teacher_file})


def test_loretrack_route_trains_a_low_resolution_student(lowres_run):
    model = build_model(checkpoint=lowres_run.final)
    assert (model.config.name, model.config.template_size, model.config.search_size) == ("tiny-48", 32, 48)
    assert {"train/Loss/qkv_kd", "train/Loss/disc_kd"} <= set(lowres_run.history[0])


def test_low_resolution_student_exports_and_tracks_at_its_own_size(lowres_run, tmp_path):
    from mfv2.config import TrackerConfig
    from mfv2.exporters import export
    from mfv2.artifacts import load_manifest
    from mfv2.runtimes import load_backend
    from mfv2.synthetic import make_sequence
    from mfv2.tracking import Tracker

    out = export(lowres_run.final, tmp_path / "export", simplify="none")
    model = load_manifest(out).model
    assert (model.name, model.template_size, model.search_size) == ("tiny-48", 32, 48)
    seq = make_sequence(seed=9, num_frames=6, height=120, width=160)
    boxes = {}
    for backend, artifact in (("torch", lowres_run.final), ("onnxruntime", out)):
        tracker = Tracker(load_backend(backend, artifact), TrackerConfig())
        tracker.init(seq.frame(0), seq.boxes[0])
        boxes[backend] = np.array([tracker.update(seq.frame(i))[1] for i in range(1, len(seq))])
    assert np.isfinite(boxes["torch"]).all()
    np.testing.assert_allclose(boxes["onnxruntime"], boxes["torch"], atol=0.05)


@pytest.mark.parametrize("name, kd", [("lr_demo_loretrack", (2.0, 0.5)), ("lr_loretrack", (0.01, 0.01))])
def test_shipped_loretrack_configs_kd_weights(name, kd):
    """The S recipe keeps the paper's KD weights; the demo scale's are retuned (benchmarks/compression/loretrack_kd)."""
    from mfv2.config import from_mapping
    from mfv2.training.config import load_train_config
    from mfv2.training.objectives.loretrack import LoReTrackOptions

    cfg = load_train_config(name)
    o = from_mapping(LoReTrackOptions, {**cfg.objective.options, "teacher_checkpoint": "t.pt"}, name)
    assert cfg.objective.name == "loretrack"
    assert (o.qkv, o.disc) == kd and (o.tau, o.alpha, o.beta) == (0.2, 0.6, 0.4)


def test_shipped_loretrack_route_plans_s160(tmp_path):
    from mfv2.training.routes import plan_route

    plan = {s.name: s for s in plan_route(load_route("lr_s"), tmp_path, given={"teacher": tmp_path / "s.pth.tar"})}
    student = plan["loretrack"].spec.init.config
    assert (student["template_size"], student["search_size"]) == (80, 160)
    assert lowres_config("S", 160) == ModelConfig.from_dict({**student, "name": "S-160"})
    assert plan["loretrack"].config["objective"]["options"]["teacher_checkpoint"] == str(tmp_path / "s.pth.tar")


def test_the_trainer_cuts_crops_at_the_teachers_resolution(teacher_file, tmp_path):
    from mfv2.training import TrainConfig, Trainer

    student = save_native(MixFormerV2(LOW).state_dict(), LOW, tmp_path / "low.pt")
    synth = {"name": "synthetic", "num_sequences": 2, "num_frames": 24, "height": 96, "width": 128}
    cfg = TrainConfig.from_dict({
        "model": {"variant": None, "checkpoint": str(student), "drop_path_rate": 0.0},
        "data": {"datasets": [synth], "max_gap": 10, "samples_per_epoch": 4, "val_samples": 0, "batch_size": 2,
                 "num_workers": 0},
        "optim": {"epochs": 1, "lr": 1e-3}, "progress": False, "device": "cpu",
        "objective": {"name": "loretrack", "options": {"teacher_checkpoint": str(teacher_file)}}})
    trainer = Trainer(cfg, tmp_path / "run")
    settings = trainer.train_set.processing.settings
    assert (settings.template_size, settings.search_size) == (32, 64)  # the teacher's, not the student's 32/48
    batch = trainer.train_set[0]
    assert batch["search"].shape[-1] == 64
    row = trainer.fit().history[0]
    shares = [row[f"train/share/{k}"] for k in ("l1", "ciou", "qkv_kd", "disc_kd")]
    assert sum(shares) == pytest.approx(1.0, rel=1e-4) and all(s > 0 for s in shares)


@pytest.mark.parametrize(("route", "sizes"), [("lr_s192", (96, 192)), ("lr_s", (80, 160)), ("lr_s128", (64, 128))])
def test_the_three_loretrack_s_routes_ship(route, sizes, tmp_path):
    from mfv2.training.routes import plan_route

    stage = {s.name: s for s in plan_route(load_route(route), tmp_path, given={"teacher": tmp_path / "s.pth.tar"})}
    init = stage["loretrack"].spec.init.config
    assert (init["template_size"], init["search_size"]) == sizes and stage["loretrack"].spec.model_name == f"S-{sizes[1]}"
    assert stage["loretrack"].config["objective"]["options"]["loss_form"] == "kl"
