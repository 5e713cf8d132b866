"""CompressTracker: stage division, replacement sampling and schedule, gradients, the objective and its route."""

from __future__ import annotations

import pytest
import yaml

torch = pytest.importorskip("torch")

from mfv2.cli import main  # noqa: E402
from mfv2.config import variant_config  # noqa: E402
from mfv2.errors import ConfigError  # noqa: E402
from mfv2.models import MixFormerV2, build_model, save_native  # noqa: E402
from mfv2.training.objectives.compresstracker import (  # noqa: E402
    CompressObjective,
    init_student_from_teacher,
    keep_students,
    replaced_blocks,
    replacement_probability,
    sample_replacement,
    stage_division,
)
from mfv2.training.routes import load_route, run_route  # noqa: E402

TINY = variant_config("tiny")


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A 4-block tiny MixFormerV2 with seeded random weights, as a native checkpoint."""
    torch.manual_seed(1)
    cfg = TINY.replace(name="tiny-T4", depth=4)
    return save_native(MixFormerV2(cfg).state_dict(), cfg, tmp_path_factory.mktemp("ct") / "teacher.pt")


def _batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    boxes = torch.rand(n, 2, generator=g) * 0.3 + 0.2
    return {"template": torch.randn(n, 3, 32, 32, generator=g), "online_template": torch.randn(n, 3, 32, 32, generator=g),
            "search": torch.randn(n, 3, 64, 64, generator=g), "search_box": torch.cat([boxes, boxes], dim=1),
            "label": torch.ones(n)}


def _objective(teacher_file, **options):
    return CompressObjective({"teacher_checkpoint": str(teacher_file), **options})


def _student(objective):
    torch.manual_seed(2)
    student = MixFormerV2(TINY).train()
    objective.prepare(student)
    return student


@pytest.mark.parametrize(
    "teacher,student,stages",
    [
        (8, 4, ((0, 1), (2, 3), (4, 5), (6, 7))),
        (12, 4, ((0, 1, 2), (3, 4, 5), (6, 7, 8), (9, 10, 11))),
        (12, 5, ((0, 1), (2, 3), (4, 5, 6), (7, 8), (9, 10, 11))),
        (4, 4, ((0,), (1,), (2,), (3,))),
        (3, 1, ((0, 1, 2),)),
    ],
)
def test_stage_division_splits_the_teacher_into_consecutive_stages(teacher, student, stages):
    assert stage_division(teacher, student) == stages


@pytest.mark.parametrize("student", [0, 5])
def test_stage_division_rejects_impossible_students(student):
    with pytest.raises(ConfigError, match="between 1 and 4"):
        stage_division(4, student)


def test_replacement_probability_follows_the_authors_schedule():
    # p = 0.5 for the first 10 % of the run, falling to 0 (student only) at 90 %
    linear = [replacement_probability(e / 10, 0.5) for e in range(11)]
    assert linear == pytest.approx([0.5, 0.5, 0.4375, 0.375, 0.3125, 0.25, 0.1875, 0.125, 0.0625, 0.0, 0.0])
    cosine = [replacement_probability(e / 10, 0.5, ramp="cosine") for e in range(11)]
    assert cosine[:2] == [0.5, 0.5] and cosine[5] == pytest.approx(0.25) and cosine[9:] == [0.0, 0.0]
    assert cosine[3] > linear[3] and cosine[7] < linear[7]  # slow start, fast end
    assert replacement_probability(0.3, 0.8, 0.0, 1.0) == pytest.approx(0.56)


def test_at_least_one_student_block_runs():
    g = torch.Generator().manual_seed(0)
    masks = [keep_students((True, True, True, True), 1, g) for _ in range(400)]
    assert all(sum(m) == 3 for m in masks)
    assert {m.index(False) for m in masks} == {0, 1, 2, 3}  # the student block kept is random
    assert keep_students((True, False), 1, g) == (True, False) and keep_students((True, True), 0, g) == (True, True)
    assert keep_students((True, True, True), 2, g).count(False) == 2


def test_the_objective_samples_by_epoch_of_the_run_and_never_the_whole_teacher(teacher_file):
    objective = _objective(teacher_file, replace_prob=1.0)
    student = _student(objective)
    objective.set_total_epochs(10)
    objective.on_epoch_start(1, student)
    assert objective.probability == 1.0
    for _ in range(5):
        objective(student, _batch())
        assert objective.last_mask.count(False) >= 1  # p = 1 would replace both blocks
    objective.on_epoch_start(10, student)
    assert objective.probability == 0.0


def test_sample_replacement_draws_each_block_with_probability_p():
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([sample_replacement(4, 0.3, g) for _ in range(3000)], dtype=torch.float32)
    assert draws.mean(dim=0).tolist() == pytest.approx([0.3] * 4, abs=0.03)
    assert sample_replacement(4, 0.0, g) == (False,) * 4 and sample_replacement(4, 1.0, g) == (True,) * 4


def test_student_starts_from_the_last_block_of_each_stage(teacher_file):
    objective = _objective(teacher_file)
    student = _student(objective)
    teacher = objective.teacher
    assert objective.stages == ((0, 1), (2, 3))
    for i, j in ((0, 1), (1, 3)):
        assert torch.equal(student.backbone.blocks[i].mlp.fc1.weight, teacher.backbone.blocks[j].mlp.fc1.weight)
    assert torch.equal(student.box_head.layers[0][0].weight, teacher.box_head.layers[0][0].weight)
    first = MixFormerV2(TINY)
    assert init_student_from_teacher(first, teacher, objective.stages, layer="first") == [0, 2]
    assert torch.equal(first.backbone.blocks[1].attn.qkv.bias, teacher.backbone.blocks[2].attn.qkv.bias)
    with pytest.raises(ConfigError, match="init_from_teacher: false"):
        init_student_from_teacher(MixFormerV2(TINY.replace(mlp_ratio=1.0)), teacher, objective.stages)


def test_replaced_blocks_run_the_teacher_stage_and_are_restored(teacher_file):
    objective = _objective(teacher_file)
    student = _student(objective).eval()
    b = _batch()
    inputs = (b["template"], b["online_template"], b["search"])
    with torch.no_grad():
        t_out = objective.teacher(*inputs)
        own = list(student.backbone.blocks)
        with replaced_blocks(student, objective._stage_modules, (True, True)):
            everything = student(*inputs)
        with replaced_blocks(student, objective._stage_modules, (True, False)):
            first = student(*inputs)
        plain = student(*inputs)
    # Same embeddings and heads: with every block replaced the student computes the teacher exactly.
    torch.testing.assert_close(everything["pred_boxes"], t_out["pred_boxes"])
    torch.testing.assert_close(first["features"][0], t_out["features"][1])
    assert not torch.allclose(first["features"][1], t_out["features"][3])
    assert list(student.backbone.blocks) == own
    with pytest.raises(RuntimeError), replaced_blocks(student, objective._stage_modules, (True, False)):
        raise RuntimeError("boom")
    assert list(student.backbone.blocks) == own
    assert not torch.allclose(plain["pred_boxes"], t_out["pred_boxes"])


@pytest.mark.parametrize("mask", [(True, False), (False, True), (False, False), (True, True)])
def test_only_computed_student_blocks_get_gradients(teacher_file, mask, monkeypatch):
    objective = _objective(teacher_file, min_student_blocks=0)
    student = _student(objective)
    monkeypatch.setattr("mfv2.training.objectives.compresstracker.sample_replacement", lambda n, p: mask)
    loss, stats = objective(student, _batch())
    loss.backward()
    assert objective.last_mask == mask and stats["replaced"] == sum(mask) / 2
    for i, replaced in enumerate(mask):
        grads = [p.grad for p in student.backbone.blocks[i].parameters()]
        assert all(g is None for g in grads) if replaced else all(g is not None and g.abs().sum() > 0 for g in grads)
    assert student.backbone.patch_embed.proj.weight.grad is not None and student.box_head.layers[0][0].weight.grad is not None
    assert all(p.grad is None for p in objective.teacher.parameters())
    assert all(p.grad is None for p in student.score_head.parameters())
    assert ("Loss/feat" in stats) == (not all(mask))


def test_compress_loss_falls_on_a_fixed_batch(teacher_file):
    objective = _objective(teacher_file, replace_prob=0.5)
    student = _student(objective)
    batch = _batch(8, seed=3)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-3)

    def clean_loss():
        objective.probability = 0.0
        with torch.no_grad():
            return objective(student, batch)[0].item()

    before = clean_loss()
    torch.manual_seed(0)
    for _ in range(15):
        objective.on_epoch_start(1, student)
        loss, _ = objective(student, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert clean_loss() < 0.8 * before


def test_compress_options_are_checked(teacher_file):
    with pytest.raises(ConfigError, match="replace_prob"):
        _objective(teacher_file, replace_prob=1.5)
    with pytest.raises(ConfigError, match="MixFormerV2 teacher"):
        _objective(teacher_file, teacher_kind="mixvit")
    with pytest.raises(ConfigError, match="unknown objective.options .*key.*replace_probability"):
        _objective(teacher_file, replace_probability=0.5)
    objective = _objective(teacher_file, teacher_input="checkpoint")
    with pytest.raises(ConfigError, match="same crops"):
        objective.prepare(MixFormerV2(TINY.replace(search_size=48)))
    objective = _objective(teacher_file)  # teacher_input: student rebuilds the teacher's tables for 48
    objective.prepare(MixFormerV2(TINY.replace(search_size=48)))
    assert objective.teacher.config.search_size == 48


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


def test_compress_route_trains_a_shallower_student(teacher_file, tmp_path):
    # The layout of route_ct_demo: the teacher is a given stage-1 model.
    route = {"name": "ct_tiny", "stages": [
        {"name": "stage1", "config": "demo_stage1", "init": {"variant": "tiny"}},
        {"name": "compress", "config": "ct_demo_compress", "init": {"config": TINY.replace(name="tiny-CT2").to_dict()},
         "teacher": "stage1", "model_name": "tiny-CT2"},
    ]}
    path = tmp_path / "route_ct_tiny.yaml"
    path.write_text(yaml.safe_dump(route))
    result = run_route(load_route(path), tmp_path / "run", overrides=TINY_DATA, given={"stage1": teacher_file})
    model = build_model(checkpoint=result.final)
    assert (model.config.depth, model.config.name) == (2, "tiny-CT2")
    # replace_prob 0.5 held for the first 10 % of the 2 epochs, 0 at 90 %: epoch 2 starts half-way
    assert [float(r["train/replace_p"]) for r in result.history] == pytest.approx([0.5, 0.5 * (1 - 0.4 / 0.8)])
    teacher = build_model(checkpoint=teacher_file)
    # Trained from the teacher's blocks 1 and 3: close to them, but changed.
    for i, j in ((0, 1), (1, 3)):
        w, w0 = model.backbone.blocks[i].mlp.fc2.weight, teacher.backbone.blocks[j].mlp.fc2.weight
        assert not torch.equal(w, w0) and (w - w0).abs().max() < 0.05


def test_shipped_compress_routes_plan(tmp_path, capsys):
    assert [s.name for s in load_route("ct_demo").stages] == ["teacher", "stage1", "compress"]
    assert main(["distill", "--route", "ct_b", "--output", str(tmp_path / "b"), "--teacher", "b.pth.tar", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "compress" in out and "300 epochs x 60000 samples" in out and "teacher teacher" in out


@pytest.mark.parametrize("name", ["ct_demo_compress", "ct_compress"])
def test_shipped_compress_configs_are_valid(name):
    from mfv2.training.objectives.compresstracker import CompressOptions
    from mfv2.config import from_mapping
    from mfv2.training.config import load_train_config
    from mfv2.training.objectives import OBJECTIVES

    cfg = load_train_config(name)
    assert cfg.objective.name == "compress" and "compress" in OBJECTIVES
    options = from_mapping(CompressOptions, {**cfg.objective.options, "teacher_checkpoint": "t.pt"}, name)
    assert (options.replace_prob, options.hold_fraction, options.student_only_fraction) == (0.5, 0.1, 0.9)
    assert options.init_layer == "last" and options.min_student_blocks == 1
