"""Routes S and B from the released MixViT-B teacher (128/288 tables, pyramidal or plain corner head) and
stage-1 students from MAE ViT files (official and timm layouts)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from tests.conftest import read_key_list  # noqa: E402
from mfv2.errors import ConfigError  # noqa: E402
from mfv2.models.mixformerv2.mixvit import MIXVIT_VARIANTS, MixViT, detect_mixvit_config  # noqa: E402
from mfv2.training.mae import mae_backbone_weights  # noqa: E402

SYNTH = {"name": "synthetic", "num_sequences": 2, "num_frames": 24, "height": 96, "width": 128}


@pytest.fixture(scope="module")
def released_teacher(tmp_path_factory):
    """A file in the layout of the released ``mixformer_vit_base_online.pth.tar``: ``{'net': ...}`` with the
    spec's 312 keys and shapes (pos_embed_s 324 x 768, pos_embed_t 64 x 768), random weights."""
    torch.manual_seed(0)
    sd = MixViT(MIXVIT_VARIANTS.get("B")).state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == read_key_list("teacher_mixvit_b_keys.txt")
    path = tmp_path_factory.mktemp("teacher") / "mixformer_vit_base_online.pth.tar"
    torch.save({"net": sd, "epoch": 500, "net_type": "MixFormer"}, path)
    return path


def test_the_head_is_read_from_the_keys():
    with torch.device("meta"):
        pyramidal = MixViT(MIXVIT_VARIANTS.get("B")).state_dict()
        plain = MixViT(MIXVIT_VARIANTS.get("B").__class__(head="corner")).state_dict()
    assert any(k.startswith("box_head.adjust") for k in pyramidal)
    assert detect_mixvit_config(pyramidal).head == "corner_up"
    assert detect_mixvit_config(plain).head == "corner"


def _overrides() -> list[str]:
    return [f"data.datasets={json.dumps([SYNTH])}", "data.val_datasets=[]", "data.samples_per_epoch=2",
            "data.batch_size=2", "data.global_batch_size=null", "data.num_workers=0", "data.max_gap=10",
            "checkpoint_every=0", "progress=false", "device=cpu"]


def test_route_s_stage1_runs_from_the_released_teacher(tmp_path, released_teacher):
    from mfv2.models import build_model
    from mfv2.training.routes import load_route, plan_route, run_route

    route = load_route("S")
    plan = plan_route(route, tmp_path, scale=0.001, overrides=_overrides(), given={"teacher": released_teacher})
    stage1 = plan[1].config["objective"]["options"]
    assert stage1["teacher_variant"] is None and stage1["teacher_kind"] == "mixvit"  # the head comes from the file
    result = run_route(route, tmp_path, scale=0.001, overrides=_overrides(), given={"teacher": released_teacher},
                       stop_after="stage1", progress=False)
    student = build_model(None, result.stages[1].output)
    assert (student.config.template_size, student.config.search_size, student.config.depth) == (112, 224, 12)
    rows = [r for r in result.history if r["stage"] == "stage1"]
    assert len(rows) == 1 and float(rows[0]["train/Loss/kl"]) > 0


def test_route_b_loads_the_released_teacher_at_its_own_resolution_and_head(tmp_path, released_teacher):
    from mfv2.training.objectives import build_objective

    objective = build_objective("distill", {"teacher_checkpoint": str(released_teacher)}, device="cpu")
    assert (objective.teacher.config.template_size, objective.teacher.config.search_size) == (128, 288)
    assert objective.teacher.config.head == "corner_up"


def _mae_sd(depth: int, width: int, hidden: int) -> dict[str, torch.Tensor]:
    """An MAE ViT encoder state dict in the official key names (timm uses the same)."""
    g = torch.Generator().manual_seed(1)
    sd = {"cls_token": torch.zeros(1, 1, width), "pos_embed": torch.zeros(1, 5, width), "mask_token": torch.zeros(1, 1, width),
          "patch_embed.proj.weight": torch.randn(width, 3, 16, 16, generator=g), "patch_embed.proj.bias": torch.randn(width, generator=g)}
    for i in range(depth):
        for name, shape in (("norm1.weight", (width,)), ("norm1.bias", (width,)), ("attn.qkv.weight", (3 * width, width)),
                            ("attn.qkv.bias", (3 * width,)), ("attn.proj.weight", (width, width)), ("attn.proj.bias", (width,)),
                            ("norm2.weight", (width,)), ("norm2.bias", (width,)), ("mlp.fc1.weight", (hidden, width)),
                            ("mlp.fc1.bias", (hidden,)), ("mlp.fc2.weight", (width, hidden)), ("mlp.fc2.bias", (width,))):
            sd[f"blocks.{i}.{name}"] = torch.randn(*shape, generator=g)
    sd["decoder_embed.weight"] = torch.zeros(4, width)
    return sd


@pytest.mark.parametrize("layout", ["official", "timm"])
def test_a_stage1_student_starts_from_an_mae_vit(tmp_path, tiny_model, layout):
    cfg = tiny_model.config  # width 128, MLP 256, 2 blocks
    sd = _mae_sd(3, cfg.embed_dim, cfg.mlp_hidden)
    path = tmp_path / "mae.pth"
    torch.save({"model": sd} if layout == "official" else sd, path)
    student = tiny_model.state_dict()
    weights = mae_backbone_weights(path, student)
    assert set(weights) == {k for k in student if k.startswith(("backbone.patch_embed.", "backbone.blocks."))}
    assert torch.equal(weights["backbone.blocks.1.attn.qkv.weight"], sd["blocks.1.attn.qkv.weight"])
    assert torch.equal(weights["backbone.patch_embed.proj.weight"], sd["patch_embed.proj.weight"])
    wide = tmp_path / "wide.pth"
    torch.save({"model": _mae_sd(2, 64, 128)}, wide)
    with pytest.raises(ConfigError, match="MAE checkpoint .*differ in shape .*student's width"):
        mae_backbone_weights(wide, student)


def test_a_route_stage_takes_mae_weights(tmp_path, tiny_model):
    from mfv2.models import build_model
    from mfv2.training.routes import Route, run_route

    cfg = tiny_model.config
    sd = _mae_sd(2, cfg.embed_dim, cfg.mlp_hidden)
    torch.save({"model": sd}, tmp_path / "mae.pth")
    route = Route.from_dict({"name": "mae", "stages": [
        {"name": "s", "config": "tiny_synthetic", "init": {"variant": "tiny", "mae": str(tmp_path / "mae.pth")}}]})
    over = [f"data.datasets={json.dumps([SYNTH])}", "data.val_datasets=[]", "data.samples_per_epoch=2",
            "data.batch_size=2", "data.num_workers=0", "data.max_gap=10", "optim.epochs=1", "checkpoint_every=0",
            "progress=false", "device=cpu"]
    run_route(route, tmp_path / "run", overrides=over, progress=False)
    init = build_model(None, tmp_path / "run" / "01_s" / "init.pt")
    assert torch.equal(init.state_dict()["backbone.blocks.0.mlp.fc1.weight"], sd["blocks.0.mlp.fc1.weight"])
    with pytest.raises(ConfigError, match="backbone_from or mae, not both"):
        Route.from_dict({"stages": [{"name": "a", "config": "x", "init": {"mixvit": "tiny"}},
                                    {"name": "b", "config": "x", "init": {"variant": "tiny", "mae": "m.pth",
                                                                          "backbone_from": "a"}}]})
