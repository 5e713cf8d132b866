"""Any grid from any checkpoint: fixed sin-cos tables rebuilt for other input sizes, learned tables refused."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mfv2.errors import ConfigError  # noqa: E402
from mfv2.models import build_model, save_official  # noqa: E402
from mfv2.models.mixformerv2.mixvit import MIXVIT_VARIANTS, MixViT, build_mixvit  # noqa: E402
from mfv2.models.mixformerv2.vit import sincos_pos_table  # noqa: E402


def formula(dim: int, grid: int) -> np.ndarray:
    """The MAE table as the spec words it: token n = row * g + col; dims [0, C/2) encode the column, [C/2, C)
    the row; in each half the first C/4 are sin(p * w_d), the next C/4 cos(p * w_d), w_d = 10000^(-d / (C/4))."""
    quarter = dim // 4
    table = np.zeros((grid * grid, dim))
    for n in range(grid * grid):
        row, col = divmod(n, grid)
        for half, p in enumerate((col, row)):
            for d in range(quarter):
                w = 10000.0 ** (-d / quarter)
                table[n, half * 2 * quarter + d] = np.sin(p * w)
                table[n, half * 2 * quarter + quarter + d] = np.cos(p * w)
    return table


def test_the_table_is_the_formula():
    for dim, grid in ((16, 3), (128, 5)):
        np.testing.assert_allclose(sincos_pos_table(dim, grid).numpy(), formula(dim, grid), atol=1e-6)


def test_an_official_file_loads_at_another_resolution(tmp_path, tiny_model):
    path = save_official(tiny_model.state_dict(), tmp_path / "tiny.pth.tar")  # template 32, search 64
    model = build_model(None, path, template_size=48, search_size=96)
    assert (model.config.template_size, model.config.search_size, model.config.name) == (48, 96, "tiny-96")
    bb = model.backbone
    np.testing.assert_allclose(bb.pos_embed_t[0].numpy(), formula(128, 3), atol=1e-6)
    np.testing.assert_allclose(bb.pos_embed_s[0].numpy(), formula(128, 6), atol=1e-6)
    for key, value in tiny_model.state_dict().items():  # every other tensor is the file's
        if "pos_embed_s" not in key and "pos_embed_t" not in key:
            assert torch.equal(model.state_dict()[key], value), key
    out = model(torch.zeros(1, 3, 48, 48), torch.zeros(1, 3, 48, 48), torch.zeros(1, 3, 96, 96))
    assert out["pred_boxes"].shape == (1, 4)
    # and back: the rebuilt model at the file's own size is the file
    back = build_model(model.config.replace(template_size=32, search_size=64, name="tiny"), path)
    assert all(torch.equal(back.state_dict()[k], v) for k, v in tiny_model.state_dict().items())


def test_a_learned_table_is_refused_with_the_reason(tmp_path, tiny_model):
    sd = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    sd["backbone.pos_embed_s"] += 0.05 * torch.randn_like(sd["backbone.pos_embed_s"])
    path = save_official(sd, tmp_path / "learned.pth.tar")
    with pytest.raises(ConfigError, match=r"pos_embed_s is not the fixed 2-D sin-cos table of a 4x4 grid .*learned "
                                          r"table cannot be rebuilt for a 6x6 grid"):
        build_model(None, path, template_size=48, search_size=96)
    assert build_model(None, path).config.search_size == 64  # at its own size it loads as before


def test_the_mixvit_teacher_loads_at_another_resolution(tmp_path):
    torch.manual_seed(0)
    teacher = MixViT(MIXVIT_VARIANTS.get("tiny"))  # template 32, search 64
    path = tmp_path / "teacher.pth.tar"
    torch.save({"net": teacher.state_dict()}, path)  # the official layout
    low = build_mixvit(None, path, template_size=16, search_size=48)
    assert (low.config.template_size, low.config.search_size) == (16, 48)
    np.testing.assert_allclose(low.backbone.pos_embed_s[0].numpy(), formula(128, 3), atol=1e-6)
    np.testing.assert_allclose(low.backbone.pos_embed_t[0].numpy(), formula(128, 1), atol=1e-6)
    assert torch.equal(low.backbone.pos_embed, teacher.backbone.pos_embed)  # the unused 224 table stays
    out = low(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 48, 48))
    assert out["prob_l"].shape == (1, low.config.map_size)
