"""Progressive depth pruning and MLP reduction."""

from __future__ import annotations

import math

import pytest
import torch

from mfv2.config import VARIANTS
from mfv2.errors import ConfigError
from mfv2.models import build_model
from mfv2.training.pruning import depth_gamma, remove_blocks, remove_blocks_state_dict, set_branch_scale, slice_mlp


def _inputs(cfg, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    z, x = cfg.template_size, cfg.search_size
    return torch.randn(batch, 3, z, z, generator=g), torch.randn(batch, 3, z, z, generator=g), torch.randn(
        batch, 3, x, x, generator=g
    )


@pytest.fixture()
def deep_tiny():
    torch.manual_seed(3)
    return build_model(VARIANTS.get("tiny").replace(depth=4))


def test_gamma_schedule_values():
    assert depth_gamma(0) == 1.0
    assert depth_gamma(20) == pytest.approx(0.5)
    assert depth_gamma(21) == pytest.approx(0.4608, abs=1e-4)  # the official epoch-20 value (it uses epoch + 1)
    assert depth_gamma(1) == pytest.approx(0.5 * (1 + math.cos(math.pi / 40)))
    assert depth_gamma(40) == 0.0 and depth_gamma(400) == 0.0
    assert depth_gamma(5, m=10) == pytest.approx(0.5)
    with pytest.raises(ConfigError):
        depth_gamma(1, m=0)


def test_block_at_gamma_zero_is_identity(deep_tiny):
    set_branch_scale(deep_tiny, [1, 2], 0.0)
    with torch.no_grad():
        feats = deep_tiny(*_inputs(deep_tiny.config))["features"]
    torch.testing.assert_close(feats[1], feats[0], rtol=0, atol=0)
    torch.testing.assert_close(feats[2], feats[0], rtol=0, atol=0)
    assert (feats[3] - feats[2]).abs().max() > 1e-3


def test_gamma_scales_the_residual_branches(deep_tiny):
    inputs = _inputs(deep_tiny.config)
    with torch.no_grad():
        before = deep_tiny(*inputs)["pred_boxes"]
        set_branch_scale(deep_tiny, [0], 0.5)
        half = deep_tiny(*inputs)["pred_boxes"]
        set_branch_scale(deep_tiny, [0], 1.0)
        again = deep_tiny(*inputs)["pred_boxes"]
    assert (half - before).abs().max() > 1e-5
    torch.testing.assert_close(again, before)


def test_removing_zeroed_blocks_leaves_outputs_unchanged(deep_tiny):
    inputs = _inputs(deep_tiny.config)
    set_branch_scale(deep_tiny, [0, 2], 0.0)
    pruned = remove_blocks(deep_tiny, [0, 2])
    assert pruned.config.depth == 2 and len(pruned.backbone.blocks) == 2
    with torch.no_grad():
        a, b = deep_tiny(*inputs), pruned(*inputs)
        kv_path = pruned.track_search(inputs[2], pruned.encode_templates(*inputs[:2]))
    torch.testing.assert_close(b["pred_boxes"], a["pred_boxes"], atol=1e-6, rtol=0)
    torch.testing.assert_close(b["pred_scores"], a["pred_scores"], atol=1e-6, rtol=0)
    torch.testing.assert_close(kv_path["pred_boxes"], a["pred_boxes"], atol=1e-5, rtol=0)


def test_renumbering_keeps_the_right_weights(deep_tiny):
    sd = deep_tiny.state_dict()
    out = remove_blocks_state_dict(sd, [0, 3])
    assert torch.equal(out["backbone.blocks.0.attn.qkv.weight"], sd["backbone.blocks.1.attn.qkv.weight"])
    assert torch.equal(out["backbone.blocks.1.mlp.fc2.bias"], sd["backbone.blocks.2.mlp.fc2.bias"])
    assert not any(k.startswith(("backbone.blocks.2.", "backbone.blocks.3.")) for k in out)
    assert torch.equal(out["box_head.layers.1.0.weight"], sd["box_head.layers.1.0.weight"])
    assert remove_blocks_state_dict(sd, []) == dict(sd)


def test_official_12_to_8_route_indices():
    sd = {f"backbone.blocks.{i}.norm1.weight": torch.full((1,), float(i)) for i in range(12)}
    out = remove_blocks_state_dict(sd, [0, 3, 6, 9])
    assert [int(out[f"backbone.blocks.{j}.norm1.weight"]) for j in range(8)] == [1, 2, 4, 5, 7, 8, 10, 11]


def test_remove_rejects_bad_indices(deep_tiny):
    with pytest.raises(ConfigError, match="out of range"):
        remove_blocks(deep_tiny, [4])
    with pytest.raises(ConfigError, match="every block"):
        remove_blocks(deep_tiny, [0, 1, 2, 3])


def test_mlp_slicing(deep_tiny):
    student = slice_mlp(deep_tiny, 0.5)
    h = student.config.mlp_hidden
    assert h == 64 and student.config.mlp_ratio == 0.5
    t, s = deep_tiny.backbone.blocks[1].mlp, student.backbone.blocks[1].mlp
    assert torch.equal(s.fc1.weight, t.fc1.weight[:h]) and torch.equal(s.fc1.bias, t.fc1.bias[:h])
    assert torch.equal(s.fc2.weight, t.fc2.weight[:, :h]) and torch.equal(s.fc2.bias, t.fc2.bias)
    assert torch.equal(student.box_head.layers[0][0].weight, deep_tiny.box_head.layers[0][0].weight)
    with torch.no_grad():
        out = student(*_inputs(student.config))
    assert out["pred_boxes"].shape == (2, 4)
    with pytest.raises(ConfigError, match="cannot grow"):
        slice_mlp(deep_tiny, 4.0)
