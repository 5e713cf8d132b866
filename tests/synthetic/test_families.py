"""Clip families and still-image pairs: deterministic per seed, valid ground truth, held-out families kept out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from mfv2.errors import ConfigError
from mfv2.synthetic import FAMILIES, HELD_OUT_FAMILIES, TRAINING_FAMILIES, family_sequences

pytest.importorskip("skimage")

CONFIGS = Path(__file__).resolve().parents[2] / "mfv2" / "training" / "configs"


def _box_contrast(seq, i: int) -> tuple[float, float]:
    """Mean |frame - background| inside the central half of box i, and the median over the frame."""
    d = np.abs(seq.frame(i).astype(np.int16) - seq.background(i).astype(np.int16)).mean(axis=2)
    x, y, w, h = seq.boxes[i]
    inner = d[int(y + h / 4) : int(np.ceil(y + 3 * h / 4)), int(x + w / 4) : int(np.ceil(x + 3 * w / 4))]
    return float(inner.mean()), float(np.median(d))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_is_deterministic_per_seed_with_valid_ground_truth(name):
    a, b = family_sequences(name, 2, 32, seed=3), family_sequences(name, 2, 32, seed=3)
    for s, t in zip(a, b):
        np.testing.assert_array_equal(s.boxes, t.boxes)
        for i in (0, 17, 31):
            np.testing.assert_array_equal(s.frame(i), t.frame(i))
    assert not np.array_equal(a[0].boxes, a[1].boxes), "clips of one family must differ"
    assert not np.array_equal(family_sequences(name, 1, 32, seed=4)[0].frame(0), a[0].frame(0))
    for s in a:
        H, W = s.config.height, s.config.width
        v, box = s.visible, s.boxes
        assert s.frame(0).shape == (H, W, 3) and v[0] and np.isfinite(box).all()
        assert (box[v, 2:] > 0).all() and (box[v, :2] >= 0).all()
        assert (box[v, 0] + box[v, 2] <= W + 1e-9).all() and (box[v, 1] + box[v, 3] <= H + 1e-9).all()
        inside, typical = _box_contrast(s, 0)
        assert inside > typical + 8, f"{s.name}: the target is not drawn where its first box says"


def test_families_differ_from_each_other():
    firsts = {n: family_sequences(n, 1, 8, seed=0)[0] for n in FAMILIES}
    frames = [f.frame(0) for f in firsts.values()]
    assert all(not np.array_equal(frames[i], frames[j]) for i in range(len(frames)) for j in range(i))


def test_held_out_families_use_looks_no_training_family_has():
    held = {"cells", "unseen_photo"}
    for name in TRAINING_FAMILIES:
        o = FAMILIES[name].overrides
        assert o.get("backgrounds") not in held and o.get("targets") not in held, name
    for name in HELD_OUT_FAMILIES:
        o = FAMILIES[name].overrides
        assert {o.get("backgrounds"), o.get("targets")} & held, name
    assert len(HELD_OUT_FAMILIES) >= 2


def _dataset_specs(node):
    if isinstance(node, dict):
        if node.get("name") == "synthetic":
            yield node
        for v in node.values():
            yield from _dataset_specs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _dataset_specs(v)


def test_no_training_config_names_a_held_out_family():
    used = set()
    for path in sorted(CONFIGS.glob("*.yaml")):
        for spec in _dataset_specs(yaml.safe_load(path.read_text())):
            fam = spec.get("family", "")
            assert fam not in HELD_OUT_FAMILIES, f"{path.name} trains on held-out family {fam}"
            assert spec.get("backgrounds") not in ("cells", "unseen_photo"), path.name
            used.add(fam)
    assert set(TRAINING_FAMILIES) <= used, "the demo route trains on every training family"


def test_training_dataset_refuses_held_out_and_unknown_families():
    from mfv2.datasets import build_dataset

    for name in HELD_OUT_FAMILIES:
        with pytest.raises(ConfigError, match="held out"):
            build_dataset("synthetic", family=name)
    with pytest.raises(ConfigError, match="unknown clip family"):
        build_dataset("synthetic", family="nope")
    with pytest.raises(ConfigError, match="sets its own distractors"):
        build_dataset("synthetic", family="camera", distractors=2)
    ds = build_dataset("synthetic", num_sequences=2, num_frames=12, family="camera", seed=5)
    seq = ds[1]
    assert len(seq) == 12 and seq.visible[0]
    assert seq.render is not None and seq.render(0).shape == (240, 320, 3)
