"""The MixFormerV2 network against the official release's facts and its own KV-cache path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mfv2.config import VARIANTS
from mfv2.models import build_model
from mfv2.models.mixformerv2.heads import expected_coordinate
from mfv2.models.mixformerv2.vit import sincos_pos_table
from tests.conftest import read_key_list

STATE_DICT_NUMEL = {"S": 16_228_897, "B": 58_855_201}


def _inputs(cfg, batch: int, seed: int = 0, online: int | None = None):
    g = torch.Generator().manual_seed(seed)
    z = cfg.template_size
    t = torch.randn(batch, 3, z, z, generator=g)
    shape = (batch, 3, z, z) if online is None else (batch, online, 3, z, z)
    ot = torch.randn(*shape, generator=g)
    s = torch.randn(batch, 3, cfg.search_size, cfg.search_size, generator=g)
    return t, ot, s


@pytest.fixture(scope="module", params=["S", "B"])
def released(request):
    torch.manual_seed(1)
    return build_model(request.param)


def test_state_dict_matches_official_keys_in_order(released):
    want = read_key_list(f"official_keys_{released.config.name}.txt")
    sd = released.state_dict()
    assert list(sd) == [k for k, _ in want]
    assert {k: tuple(v.shape) for k, v in sd.items()} == dict(want)


def test_state_dict_numel(released):
    assert sum(v.numel() for v in released.state_dict().values()) == STATE_DICT_NUMEL[released.config.name]


def test_pos_tables_are_frozen_sincos(released):
    cfg = released.config
    bb = released.backbone
    assert not bb.pos_embed_s.requires_grad and not bb.pos_embed_t.requires_grad
    assert bb.pos_embed_s.shape == (1, cfg.num_search_tokens, 768)


def _sincos_reference(dim: int, grid: int) -> np.ndarray:
    """Direct transcription of the spec: x in dims [0, C/2), y in [C/2, C); sin then cos in each half."""
    quarter = dim // 4
    table = np.zeros((grid * grid, dim))
    for n in range(grid * grid):
        row, col = divmod(n, grid)
        for d in range(quarter):
            w = 10000 ** (-d / quarter)
            table[n, d] = math.sin(col * w)
            table[n, quarter + d] = math.cos(col * w)
            table[n, 2 * quarter + d] = math.sin(row * w)
            table[n, 3 * quarter + d] = math.cos(row * w)
    return table


@pytest.mark.parametrize("dim,grid", [(768, 7), (64, 4)])
def test_sincos_table_against_formula(dim, grid):
    np.testing.assert_allclose(sincos_pos_table(dim, grid).numpy(), _sincos_reference(dim, grid), atol=1e-6)


def test_template_tokens_ignore_the_search(tiny_model):
    cfg = tiny_model.config
    t, ot, s = _inputs(cfg, 2)
    num_t = 2 * cfg.num_template_tokens
    with torch.no_grad():
        a = tiny_model(t, ot, s)["features"]
        b = tiny_model(t, ot, s + torch.randn_like(s))["features"]
    for fa, fb in zip(a, b):
        torch.testing.assert_close(fa[:, :num_t], fb[:, :num_t], rtol=0, atol=0)
        assert (fa[:, num_t:] - fb[:, num_t:]).abs().max() > 1e-3  # the search side did change


@pytest.mark.parametrize("variant", ["S", "B", "tiny"])
@pytest.mark.parametrize("batch", [1, 3])
def test_kv_cache_path_equals_full_forward(variant, batch):
    torch.manual_seed(2)
    model = build_model(variant)
    t, ot, s = _inputs(model.config, batch, seed=batch)
    with torch.no_grad():
        full = model(t, ot, s)
        kv = model.encode_templates(t, ot)
        cached = model.track_search(s, kv)
    cfg = model.config
    assert kv.shape == (cfg.depth, 2, batch, cfg.num_heads, 2 * cfg.num_template_tokens, cfg.head_dim)
    assert set(cached) == set(full) - {"features"}
    for key in cached:
        assert (cached[key] - full[key]).abs().max().item() <= 1e-5, key


def test_kv_cache_with_several_online_templates(tiny_model):
    t, ot, s = _inputs(tiny_model.config, 2, online=3)
    with torch.no_grad():
        full = tiny_model(t, ot, s)
        cached = tiny_model.track_search(s, tiny_model.encode_templates(t, ot))
    assert full["features"][0].shape[1] == 4 * tiny_model.config.num_template_tokens + 64 // 16 * (64 // 16) + 4
    torch.testing.assert_close(cached["pred_boxes"], full["pred_boxes"], atol=1e-5, rtol=0)


def test_batch_rows_are_independent(tiny_model):
    t, ot, s = _inputs(tiny_model.config, 3)
    with torch.no_grad():
        batched = tiny_model(t, ot, s)["pred_boxes"]
        single = tiny_model(t[1:2], ot[1:2], s[1:2])["pred_boxes"]
    torch.testing.assert_close(batched[1:2], single, atol=1e-5, rtol=0)


def test_box_is_the_expectation_of_the_edge_distributions(tiny_model):
    with torch.no_grad():
        out = tiny_model(*_inputs(tiny_model.config, 2))
    F = tiny_model.config.num_bins
    bins = torch.arange(F, dtype=torch.float32) / F
    l, r, t, b = (out[f"prob_{e}"] @ bins for e in "lrtb")
    expected = torch.stack([(l + r) / 2, (t + b) / 2, r - l, b - t], dim=1)
    torch.testing.assert_close(out["pred_boxes"], expected)
    for e in "lrtb":
        torch.testing.assert_close(out[f"prob_{e}"], out[f"logits_{e}"].softmax(-1))
        assert out[f"prob_{e}"].shape == (2, F)


def test_expected_coordinate_range():
    logits = torch.full((1, 10), -1e4)
    logits[0, 9] = 0.0  # all mass on the last bin
    _, coord = expected_coordinate(logits)
    assert coord.item() == pytest.approx(0.9)


def test_score_is_mean_of_per_token_logits(tiny_model):
    with torch.no_grad():
        out = tiny_model(*_inputs(tiny_model.config, 2))
        per_token = tiny_model.score_head.layers[1](tiny_model.score_head.layers[0](out["reg_tokens"]))
    torch.testing.assert_close(out["pred_scores"], per_token.mean(dim=(1, 2)))
    assert out["pred_scores"].shape == (2,)


def test_wrong_input_size_is_reported(tiny_model):
    t, ot, s = _inputs(tiny_model.config, 1)
    with pytest.raises(Exception, match=r"search: expected \(B, 3, 64, 64\)"):
        tiny_model(t, ot, s[..., :32, :32])


def test_variants_are_the_released_ones():
    s, b = VARIANTS.get("S"), VARIANTS.get("B")
    assert (s.depth, s.mlp_hidden, s.template_size, s.search_size, s.num_bins) == (4, 768, 112, 224, 96)
    assert (b.depth, b.mlp_hidden, b.template_size, b.search_size, b.num_bins) == (8, 3072, 128, 288, 96)
