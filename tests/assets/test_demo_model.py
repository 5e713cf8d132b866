"""The shipped demo model on a clip family no training stage saw: it must beat a box left where the target started."""

from __future__ import annotations

import numpy as np
import pytest

from mfv2.assets import demo_checkpoint, demo_description
from mfv2.evaluation.metrics import evaluate_sequences

pytest.importorskip("torch")
pytest.importorskip("skimage")


def test_shipped_model_beats_a_static_box_on_a_held_out_family():
    import torch

    from mfv2 import Tracker, load_backend
    from mfv2.synthetic import HELD_OUT_FAMILIES, family_sequences

    ckpt = demo_checkpoint()
    if ckpt is None:
        pytest.skip("the demo model is not installed")
    assert "unseen_photos" in HELD_OUT_FAMILIES
    torch.set_num_threads(1)
    seqs = family_sequences("unseen_photos", 6, 30, seed=99)
    preds, static, gts, vis = {}, {}, {}, {}
    for seq in seqs:
        tracker = Tracker(load_backend("torch", ckpt, threads=1))  # the model's own tracker settings (3.0 crops)
        frames = [seq.frame(i) for i in range(len(seq))]
        tracker.init(frames[0], tuple(seq.boxes[0]))
        preds[seq.name] = np.array([seq.boxes[0]] + [tracker.update(f)[1] for f in frames[1:]], dtype=float)
        static[seq.name] = np.repeat(seq.boxes[:1], len(seq), 0)
        gts[seq.name], vis[seq.name] = seq.boxes, seq.visible
    model_auc = evaluate_sequences(preds, gts, vis).auc
    static_auc = evaluate_sequences(static, gts, vis).auc
    assert model_auc > static_auc + 10, (model_auc, static_auc)


def test_demo_description_says_what_the_model_is():
    text = demo_description()
    assert "not MixFormerV2-S" in text and "MIL" in text and "unseen_photos" in text
