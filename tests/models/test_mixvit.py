"""The MixViT teacher: official key layout, checkpoint loading, corner heads, marginals, overfitting."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.conftest import read_key_list  # noqa: E402

from mfv2.errors import ConfigError  # noqa: E402
from mfv2.models.mixformerv2.corner_heads import CornerHead, soft_argmax  # noqa: E402
from mfv2.models.mixformerv2.mixvit import MIXVIT_VARIANTS, MixViT, build_mixvit, save_mixvit  # noqa: E402


@pytest.fixture(scope="module")
def tiny_teacher():
    torch.manual_seed(0)
    return build_mixvit("tiny")


def _inputs(cfg, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, 3, cfg.template_size, cfg.template_size, generator=g)
    return z, z.flip(0), torch.randn(batch, 3, cfg.search_size, cfg.search_size, generator=g)


def test_b_state_dict_matches_official_teacher_keys():
    with torch.device("meta"):
        model = MixViT(MIXVIT_VARIANTS.get("B"))
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert ours == read_key_list("teacher_mixvit_b_keys.txt")  # same names, shapes and order (312 keys)


def test_outputs_shapes_and_marginals(tiny_teacher):
    cfg = tiny_teacher.config
    out = tiny_teacher(*_inputs(cfg))
    M = cfg.map_size
    assert M == 16 and out["pred_boxes"].shape == (2, 4) and out["prob_tl"].shape == (2, M * M)
    grid = out["prob_tl"].reshape(2, M, M)
    torch.testing.assert_close(out["prob_l"], grid.sum(1))  # over rows -> distribution of x
    torch.testing.assert_close(out["prob_t"], grid.sum(2))
    for e in "ltrb":
        torch.testing.assert_close(out[f"prob_{e}"].sum(-1), torch.ones(2))
    # The box corners are the expectations of the marginals (coordinate of bin i = i / M).
    pos = torch.arange(M, dtype=torch.float32) / M
    x1, y1, x2, y2 = (out[f"prob_{e}"] @ pos for e in "ltrb")
    torch.testing.assert_close(out["pred_boxes"], torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], 1))
    assert len(out["features"]) == cfg.depth


def test_soft_argmax_of_a_peaked_map():
    score = torch.full((1, 8, 8), -50.0)
    score[0, 3, 5] = 50.0  # row 3 (y), column 5 (x)
    r = soft_argmax(score)
    assert r["x"].item() == pytest.approx(5 / 8) and r["y"].item() == pytest.approx(3 / 8)
    assert r["prob_x"][0].argmax().item() == 5 and r["prob_y"][0].argmax().item() == 3


def test_corner_head_map_sizes():
    x = torch.randn(1, 32, 4, 4)
    up = CornerHead(32, 16, "corner_up").eval()
    plain = CornerHead(32, 16, "corner").eval()
    assert up(x)[0].shape == (1, 16, 16) and plain(x)[1].shape == (1, 4, 4)
    assert not any("adjust" in k for k in plain.state_dict())


def test_official_checkpoint_loads_strictly(tiny_teacher, tmp_path):
    sd = {f"module.{k}": v.clone() for k, v in tiny_teacher.state_dict().items()}
    sd["module.score_branch.fc.weight"] = torch.zeros(1)  # the online model's score module is ignored
    path = tmp_path / "mixvit_online.pth.tar"
    torch.save({"net": sd, "epoch": 3}, path)
    loaded = build_mixvit(checkpoint=path)  # architecture detected from shapes
    assert loaded.config == tiny_teacher.config
    inputs = _inputs(tiny_teacher.config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(*inputs)["pred_boxes"], tiny_teacher(*inputs)["pred_boxes"], rtol=0, atol=0)


def test_checkpoint_mismatch_names_keys(tiny_teacher, tmp_path):
    sd = dict(tiny_teacher.state_dict())
    del sd["box_head.conv5_br.bias"]
    sd["backbone.blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    path = tmp_path / "broken.pth.tar"
    torch.save({"net": sd}, path)
    with pytest.raises(ConfigError, match=r"missing: box_head.conv5_br.bias.*mis-shaped: backbone.blocks.0.attn.qkv"):
        build_mixvit("tiny", path)
    with pytest.raises(ConfigError, match="does not exist"):
        build_mixvit("tiny", tmp_path / "nope.pth")


def test_native_round_trip(tiny_teacher, tmp_path):
    path = save_mixvit(tiny_teacher, tmp_path / "teacher.pth", {"epoch": 7})
    loaded = build_mixvit(checkpoint=path)
    assert loaded.config == tiny_teacher.config
    for k, v in tiny_teacher.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    assert not list(tmp_path.glob("*.tmp"))


def test_tiny_teacher_overfits_synthetic_samples():
    """L1 + GIoU on the corners; the loss must fall at least 5x on a few fixed samples."""
    from torch.utils.data import default_collate

    from mfv2.datasets import build_dataset
    from mfv2.training.data import ProcessingSettings, TrackingProcessing, TrackingSampler
    from mfv2.training.objectives import SupervisedObjective

    torch.manual_seed(0)
    model = build_mixvit("tiny").train()
    cfg = model.config
    sampler = TrackingSampler(
        [build_dataset("synthetic", num_sequences=4, num_frames=40, height=120, width=160)], [1.0],
        TrackingProcessing(ProcessingSettings(template_size=cfg.template_size, search_size=cfg.search_size)),
        samples_per_epoch=8, max_gap=20,
    )
    batch = {k: torch.as_tensor(v) for k, v in default_collate([sampler[i] for i in range(4)]).items()}
    objective = SupervisedObjective({"iou_loss": "giou"})
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0)
    losses = []
    for _ in range(200):  # stops as soon as the target is reached (about 40 steps)
        loss, _ = objective(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if losses[-1] * 5 <= losses[0]:
            break
    assert min(losses) * 5 <= losses[0], f"loss went from {losses[0]:.3f} to {min(losses):.3f}"
