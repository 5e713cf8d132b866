"""Still-image pairs: deterministic photo composites whose target lies exactly where the box says."""

from __future__ import annotations

import numpy as np
import pytest

from mfv2.errors import ConfigError

pytest.importorskip("skimage")


def test_still_pair_target_fills_its_box_and_nothing_else():
    from mfv2.synthetic.stills import still_pair

    for seed in range(6):
        img, box, mask = still_pair(seed, height=120, width=160)
        again = still_pair(seed, height=120, width=160)
        np.testing.assert_array_equal(img, again[0])
        np.testing.assert_array_equal(box, again[1])
        x, y, w, h = box
        assert img.shape == (120, 160, 3) and w > 4 and h > 4
        assert x >= 0 and y >= 0 and x + w <= 160 and y + h <= 120
        ys, xs = np.nonzero(mask > 0)
        # the pasted object's extent is the box, to within the one antialiased pixel at its edges
        assert xs.min() >= np.floor(x) and xs.max() <= np.ceil(x + w) - 1
        assert ys.min() >= np.floor(y) and ys.max() <= np.ceil(y + h) - 1
        assert xs.max() - xs.min() + 1 >= w - 2 and ys.max() - ys.min() + 1 >= h - 2
        assert mask[int(y + h / 2), int(x + w / 2)] == 1.0
    assert not np.array_equal(still_pair(0, height=120, width=160)[0], still_pair(1, height=120, width=160)[0])
    with pytest.raises(ConfigError, match="48 x 48"):
        still_pair(0, height=40, width=160)


def test_stills_dataset_serves_one_frame_sequences():
    from mfv2.datasets import build_dataset
    from mfv2.synthetic.stills import still_pair

    ds = build_dataset("stills", num_images=3, seed=10, height=96, width=128)
    assert len(ds) == 3 and not ds.is_video
    seq = ds[2]
    img, box, _ = still_pair(12, height=96, width=128)
    np.testing.assert_array_equal(seq.gt[0], box)
    assert seq.visible.tolist() == [True] and len(seq) == 1
    assert seq.render is not None
    np.testing.assert_array_equal(seq.render(0), img)
    with pytest.raises(ConfigError, match="num_images"):
        build_dataset("stills", num_images=0)
