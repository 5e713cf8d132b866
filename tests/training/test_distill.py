"""The distillation stage objectives on the tiny variant: the layer rule, losses that fall, gamma, freezing."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mfv2.errors import ConfigError  # noqa: E402
from mfv2.models import MixFormerV2, build_model, save_native  # noqa: E402
from mfv2.training import build_objective, param_groups  # noqa: E402
from mfv2.datasets import build_dataset  # noqa: E402
from mfv2.training.data import ProcessingSettings, TrackingProcessing, TrackingSampler  # noqa: E402
from mfv2.training.objectives.depth_prune import prune_plan  # noqa: E402
from mfv2.training.pruning import depth_gamma, remove_blocks  # noqa: E402
from mfv2.models.mixformerv2.vit import BranchScale  # noqa: E402


def _samples(mode: str, seed: int) -> dict[str, torch.Tensor]:
    """Eight training samples of synthetic clips at the tiny variant's crop sizes."""
    ds = build_dataset("synthetic", num_sequences=3, seed=5, num_frames=40, height=120, width=160)
    settings = ProcessingSettings(template_size=32, search_size=64, search_scale_jitter=0.25,
                                  search_centre_jitter=2.0, mask_stride=16)
    sampler = TrackingSampler([ds], [1.0], TrackingProcessing(settings), samples_per_epoch=8, mode=mode,
                              max_gap=20, seed=seed)
    items = [sampler[i] for i in range(8)]
    return {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    """Positive samples (the causal sampler of the distillation stages)."""
    return _samples("causal", 3)


@pytest.fixture(scope="module")
def score_batch() -> dict[str, torch.Tensor]:
    """Positive and negative samples (the trident_pro sampler of the score stage)."""
    return _samples("trident_pro", 4)


def _fit(objective, model, batch, steps: int = 20, lr: float = 1e-3) -> list[float]:
    """Losses of ``steps`` AdamW steps on one batch, set up as the trainer does."""
    torch.manual_seed(0)
    objective.prepare(model)
    model.train()
    objective.on_epoch_start(1, model)
    opt = torch.optim.AdamW(param_groups(model, lr, 1.0), lr=lr)
    losses = []
    for _ in range(steps):
        loss, stats = objective(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(stats["Loss/total"])
    return losses


def _tiny_student(seed: int = 0) -> MixFormerV2:
    torch.manual_seed(seed)
    return build_model("tiny")


def _saved(model: MixFormerV2, path) -> str:
    save_native(model.state_dict(), model.config, path)
    return str(path)


def test_prune_plan_reproduces_the_official_12_to_8_layers():
    plan = prune_plan(12, 8)
    assert plan.remove == (0, 3, 6, 9)
    assert plan.pairs_during == ((2, 2), (5, 5), (8, 8), (11, 11))
    assert plan.pairs_after == ((1, 2), (3, 5), (5, 8), (7, 11))


def test_prune_plan_8_to_4_eliminates_every_other_block():
    plan = prune_plan(8, 4)
    assert plan.remove == (0, 2, 4, 6)
    assert plan.pairs_during == ((1, 1), (3, 3), (5, 5), (7, 7))
    assert plan.pairs_after == ((0, 1), (1, 3), (2, 5), (3, 7))


@pytest.mark.parametrize("depth,target", [(12, 7), (8, 8), (4, 0)])
def test_prune_plan_rejects_depths_the_rule_cannot_split(depth, target):
    with pytest.raises(ConfigError, match="cannot prune"):
        prune_plan(depth, target)


def test_stage1_dense_to_sparse_loss_falls(batch):
    objective = build_objective("distill", {"teacher_kind": "mixvit", "teacher_variant": "tiny"}, device="cpu")
    losses = _fit(objective, _tiny_student(), batch)
    assert np.mean(losses[-3:]) < 0.9 * losses[0]


def test_depth_prune_applies_gamma_freezes_and_loss_falls(batch, tmp_path):
    teacher = _tiny_student(1)
    student = build_model(checkpoint=_saved(teacher, tmp_path / "t.pt"))  # the student starts as the teacher
    objective = build_objective(
        "depth_prune",
        {"teacher_kind": "mixformerv2", "teacher_checkpoint": str(tmp_path / "t.pt"), "feat": 0.2,
         "feat_pairs": [[1, 1]], "remove_blocks": [0], "decay_epochs": 4},
        device="cpu",
    )
    before = {k: v.clone() for k, v in student.backbone.blocks[0].state_dict().items()}
    losses = _fit(objective, student, batch)
    assert np.mean(losses[-3:]) < 0.9 * losses[0]
    block0, block1 = student.backbone.blocks
    assert isinstance(block0.branch_scale, BranchScale) and block0.branch_scale.gamma == pytest.approx(depth_gamma(1, 4))
    assert not isinstance(block1.branch_scale, BranchScale)
    for k, v in block0.state_dict().items():  # eliminated blocks are frozen
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    for epoch, want in ((2, 0.5), (4, 0.0), (9, 0.0)):
        objective.on_epoch_start(epoch, student)
        assert block0.branch_scale.gamma == pytest.approx(want, abs=1e-12)
    # At gamma 0 the eliminated block is an identity: removing it leaves the outputs unchanged.
    student.eval()
    pruned = remove_blocks(student, [0]).eval()
    with torch.no_grad():
        a = student(batch["template"], batch["online_template"], batch["search"])
        b = pruned(batch["template"], batch["online_template"], batch["search"])
    torch.testing.assert_close(a["pred_boxes"], b["pred_boxes"], rtol=1e-5, atol=1e-6)


def test_depth_prune_rejects_blocks_the_student_does_not_have(tmp_path):
    objective = build_objective(
        "depth_prune", {"teacher_kind": "mixformerv2", "teacher_variant": "tiny", "remove_blocks": [5]}, device="cpu"
    )
    with pytest.raises(ConfigError, match="does not fit a 2-block student"):
        objective.prepare(_tiny_student())


def test_mlp_reduction_stage_loss_falls(batch, tmp_path):
    from mfv2.training.pruning import slice_mlp

    teacher = _tiny_student(2)
    path = _saved(teacher, tmp_path / "t.pt")
    student = slice_mlp(teacher, 1.0)
    assert student.config.mlp_hidden == 128 and teacher.config.mlp_hidden == 256
    objective = build_objective(
        "distill",
        {"teacher_kind": "mixformerv2", "teacher_checkpoint": path, "feat": 0.2, "feat_pairs": [[0, 0], [1, 1]]},
        device="cpu",
    )
    losses = _fit(objective, student, batch)
    assert np.mean(losses[-3:]) < 0.9 * losses[0]


def test_score_stage_trains_only_the_score_head(score_batch):
    batch = score_batch
    model = _tiny_student(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert 0 < batch["label"].sum() < len(batch["label"])  # positives and negatives
    objective = build_objective("score", {"bce": 1.0}, device="cpu")
    losses = _fit(objective, model, batch, lr=1e-2)
    assert np.mean(losses[-3:]) < 0.9 * losses[0]
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("score_head.") for k in changed)
    assert len(changed) == len([k for k in before if k.startswith("score_head.")])


def test_score_stage_needs_a_score_head():
    from mfv2.models.mixformerv2.mixvit import build_mixvit

    with pytest.raises(ConfigError, match="score head"):
        build_objective("score", {}, device="cpu").prepare(build_mixvit("tiny"))


def test_corner_token_maps_pool_the_teacher_map_onto_the_token_grid():
    from mfv2.training.objectives.distill import corner_token_maps

    prob = torch.zeros(1, 8, 8)
    prob[0, 2, 5] = 0.75  # (row 2, col 5) of an 8x8 map -> token (1, 2) of a 4x4 grid
    prob[0, 7, 0] = 0.25  # -> token (3, 0)
    tl, br = corner_token_maps({"prob_tl": prob.reshape(1, 64), "prob_br": prob.reshape(1, 64)}, 4)
    want = torch.zeros(1, 16)
    want[0, 1 * 4 + 2], want[0, 3 * 4 + 0] = 0.75, 0.25
    torch.testing.assert_close(tl, want)
    torch.testing.assert_close(br, want)
    with pytest.raises(ConfigError, match="does not pool"):
        corner_token_maps({"prob_tl": prob.reshape(1, 64), "prob_br": prob.reshape(1, 64)}, 3)


def test_prediction_token_attention_matches_the_last_block(batch):
    from mfv2.training.objectives.distill import prediction_token_attention

    model = _tiny_student(4)
    with torch.no_grad():
        out = model(batch["template"], batch["online_template"], batch["search"])
        attn = prediction_token_attention(model, out["features"], 2 * model.config.num_template_tokens)
        last = model.backbone.blocks[-1]
        x = last.norm1(out["features"][0])
        q, k, _ = last.attn.qkv_heads(x)
        full = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1).mean(1)  # (B, N, N)
    t = 2 * model.config.num_template_tokens
    torch.testing.assert_close(attn, full[:, -4:, t:-4])
    assert attn.shape == (len(batch["search"]), 4, model.config.num_search_tokens)


def test_dense_to_sparse_attention_distillation_loss_falls(batch):
    objective = build_objective(
        "dense_to_sparse", {"teacher_kind": "mixvit", "teacher_variant": "tiny", "attn": 1.0}, device="cpu"
    )
    model = _tiny_student(5)
    objective.prepare(model)
    model.train()
    opt = torch.optim.AdamW(param_groups(model, 3e-3, 1.0), lr=3e-3)
    attn = []
    for _ in range(20):
        loss, stats = objective(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        attn.append(stats["Loss/attn"])
    assert {"Loss/kl", "Loss/l1", "Loss/attn"} <= set(stats)
    assert np.mean(attn[-3:]) < 0.9 * attn[0]
    assert isinstance(objective.teacher, torch.nn.Module)  # the capture wrapper is removed again
