"""MVT against the spec of the official release: keys, sizes, token order, correlation, head decoding."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import read_key_list

torch = pytest.importorskip("torch")

from mfv2.artifacts import decode_center, hann2d  # noqa: E402
from mfv2.models.mvt import MVT  # noqa: E402
from mfv2.models.mvt.backbone import SiamMoViTBlock, fold, unfold  # noqa: E402
from mfv2.models.mvt.head import decode_boxes  # noqa: E402
from mfv2.models.mvt.neck import pixelwise_correlation  # noqa: E402


@pytest.fixture(scope="module")
def mvt():
    torch.manual_seed(0)
    model = MVT().eval()
    # Non-trivial BatchNorm statistics, so that eval-mode BN is not an identity.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def test_state_dict_is_the_official_one(mvt):
    ours = [(k, tuple(v.shape)) for k, v in mvt.state_dict().items()]
    assert ours == read_key_list("official_keys_mvt.txt")  # names, shapes and order
    assert sum(p.numel() for p in mvt.parameters()) == 5_480_405
    assert sum(v.numel() for v in mvt.state_dict().values()) == 5_491_484


def test_activations_and_norms_are_the_spec_inventory(mvt):
    kinds = [type(m).__name__ for m in mvt.modules()]
    assert kinds.count("BatchNorm2d") == 39 and kinds.count("LayerNorm") == 14
    assert not {"SiLU", "GELU", "Hardswish", "GroupNorm"} & set(kinds)
    assert all(m.eps == 1e-5 for m in mvt.modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)))


def test_unfold_layout_and_fold_round_trip():
    fm = torch.randn(2, 5, 6, 8)
    t = unfold(fm)
    assert t.shape == (2 * 4, 3 * 4, 5)
    for b in range(2):
        for jh in range(2):
            for jw in range(2):
                # sequence 2 * jh + jw of image b is the sub-sampled map, flattened row-major
                want = fm[b, :, jh::2, jw::2].reshape(5, -1).T
                torch.testing.assert_close(t[b * 4 + 2 * jh + jw], want, rtol=0, atol=0)
    torch.testing.assert_close(fold(t, 6, 8), fm, rtol=0, atol=0)


def test_siam_block_tokens_are_search_then_template():
    """The transformer sees [search; template]: a spy on the final LayerNorm reads the joint sequence."""
    torch.manual_seed(1)
    block = SiamMoViTBlock(8, 16, 32, layers=1, heads=2).eval()
    x, z = torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4)
    seen = {}
    block.global_rep[0].register_forward_pre_hook(lambda m, args: seen.setdefault("tokens", args[0]))
    with torch.no_grad():
        block(x, z)
        want = torch.cat([unfold(block.local_rep(x)), unfold(block.local_rep(z))], dim=1)
    torch.testing.assert_close(seen["tokens"], want)
    assert seen["tokens"].shape == (4, 16 + 4, 16)


def test_siam_block_attention_is_joint_and_fusion_takes_the_input_first():
    torch.manual_seed(2)
    block = SiamMoViTBlock(8, 16, 32, layers=1, heads=2).eval()
    x, z = torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        x1, _ = block(x, z)
        x2, _ = block(x, z + 1.0)  # the search output depends on the template: attention is joint
        assert not torch.allclose(x1, x2)
        # fusion(cat[input, projected]), the block input first
        tx, tz = unfold(block.local_rep(x)), unfold(block.local_rep(z))
        fx = block.conv_proj(fold(block.global_rep(torch.cat([tx, tz], 1))[:, : tx.shape[1]], 8, 8))
        torch.testing.assert_close(x1, block.fusion(torch.cat([x, fx], 1)))


def test_correlation_equals_a_direct_einsum():
    z, x = torch.randn(2, 7, 3, 3), torch.randn(2, 7, 5, 4)
    want = torch.einsum("bck,bcij->bkij", z.flatten(2), x)
    torch.testing.assert_close(pixelwise_correlation(z, x), want)
    # channel k is the row-major template position (r, s) = divmod(k, 3)
    torch.testing.assert_close(pixelwise_correlation(z, x)[:, 5], (z[:, :, 1, 2, None, None] * x).sum(1))


def test_hann_window_values():
    w = hann2d(16)
    one = np.array([0.0338, 0.1305, 0.2771, 0.4539, 0.6368, 0.8013, 0.9251, 0.9915])
    np.testing.assert_allclose(np.sqrt(np.diag(w))[:8], one, atol=1e-4)
    np.testing.assert_allclose(w, w[::-1, ::-1])  # symmetric
    np.testing.assert_allclose(w, np.outer(w[7] / w[7, 7] ** 0.5, w[7] / w[7, 7] ** 0.5), rtol=1e-6)
    assert 0 < w.min() and w.max() < 1


def _maps(peak: tuple[int, int], second: tuple[int, int] | None = None):
    score = np.full((1, 1, 16, 16), 1e-4, np.float32)
    score[0, 0, peak[0], peak[1]] = 0.9
    if second is not None:
        score[0, 0, second[0], second[1]] = 0.95
    size = np.zeros((1, 2, 16, 16), np.float32)
    offset = np.zeros((1, 2, 16, 16), np.float32)
    size[0, :, peak[0], peak[1]] = (0.25, 0.5)
    offset[0, :, peak[0], peak[1]] = (0.3, 0.7)
    return score, size, offset


def test_decode_on_hand_made_maps():
    score, size, offset = _maps((4, 10))  # row 4, column 10
    boxes, s = decode_center(score, size, offset)
    np.testing.assert_allclose(boxes[0], [(10 + 0.3) / 16, (4 + 0.7) / 16, 0.25, 0.5], rtol=1e-6)  # no half-cell term
    assert s[0] == pytest.approx(0.9)
    t = decode_boxes(*(torch.from_numpy(a) for a in (score, size, offset)))  # the model's decode agrees
    np.testing.assert_allclose(t.numpy(), boxes, rtol=1e-6)
    # the window moves the argmax: a slightly higher peak at the border loses to the one near the centre
    score, size, offset = _maps((8, 8), second=(0, 0))
    assert decode_center(score, size, offset)[1][0] == pytest.approx(0.95)  # un-windowed: the corner
    boxes, s = decode_center(score, size, offset, hann2d(16))
    np.testing.assert_allclose(boxes[0], [8.3 / 16, 8.7 / 16, 0.25, 0.5], rtol=1e-6)
    assert s[0] == pytest.approx(0.9)  # the un-windowed score of the chosen cell
    ties = np.full((1, 1, 16, 16), 0.5, np.float32)
    assert decode_center(ties, size, offset)[0][0, 0] == 0.0  # ties: the first cell, as torch.max


def test_forward_shapes_batch_and_split_path(mvt):
    torch.manual_seed(3)
    z, x = torch.rand(2, 3, 128, 128), torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        full = mvt(z, x)
        feat = mvt.encode_template(z)
        split = mvt.track_search(x, feat)
        one = mvt(z[1:], x[1:])
    assert feat.shape == (2, 64, 32, 32)
    assert {k: tuple(v.shape) for k, v in full.items()} == {
        "score_map": (2, 1, 16, 16), "size_map": (2, 2, 16, 16), "offset_map": (2, 2, 16, 16), "pred_boxes": (2, 4)}
    for k in full:
        torch.testing.assert_close(split[k], full[k])
        torch.testing.assert_close(one[k], full[k][1:], rtol=1e-4, atol=1e-5)  # batch rows are independent
    s = full["score_map"]
    assert float(s.min()) >= 1e-4 and float(s.max()) <= 1 - 1e-4
    torch.testing.assert_close(full["pred_boxes"], decode_boxes(s, full["size_map"], full["offset_map"]))


def test_wrong_input_sizes_name_the_expected_shape(mvt):
    with pytest.raises(Exception, match=r"template: expected \(B, 3, 128, 128\)"):
        mvt.encode_template(torch.rand(1, 3, 112, 112))
