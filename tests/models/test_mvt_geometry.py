"""MVT's tracker crops, maps back and clips with the very functions MixFormerV2's does (mfv2.geometry)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import mfv2.tracking.tracker as tracker_module  # noqa: E402
from mfv2.config import MVTConfig  # noqa: E402
from mfv2.geometry import boxes, crop  # noqa: E402
from mfv2.models import build_model  # noqa: E402
from mfv2.synthetic import make_sequence  # noqa: E402
from mfv2.tracking import Tracker  # noqa: E402


def _calls(monkeypatch, model) -> dict[str, list[tuple]]:
    """Track two frames with ``model``, recording the geometry calls (factor, size / margin) the loop makes."""
    seen: dict[str, list[tuple]] = {"sample_target": [], "map_box_back": [], "clip_box": []}

    def spy(name, fn, keep):
        def wrapped(*a, **k):
            seen[name].append(keep(a))
            return fn(*a, **k)

        monkeypatch.setattr(tracker_module, name, wrapped)

    assert tracker_module.sample_target is crop.sample_target and tracker_module.clip_box is boxes.clip_box
    assert tracker_module.map_box_back is crop.map_box_back  # the loop holds mfv2.geometry's own functions
    spy("sample_target", crop.sample_target, lambda a: a[2:4])
    spy("map_box_back", crop.map_box_back, lambda a: a[3:4])
    spy("clip_box", boxes.clip_box, lambda a: a[3:4])
    seq = make_sequence(seed=1, num_frames=3, width=160, height=120)
    with Tracker.create("torch", model=model, threads=1) as tracker:
        tracker.init(seq.frame(0), seq.boxes[0])
        for i in (1, 2):
            tracker.update(seq.frame(i))
    monkeypatch.undo()
    return seen


def test_mvt_and_mixformerv2_share_the_crop_geometry(monkeypatch):
    torch.manual_seed(0)
    mvt = _calls(monkeypatch, build_model(MVTConfig(name="MVT-64", template_size=64, search_size=128)))
    mix = _calls(monkeypatch, build_model("tiny"))
    for name in mvt:
        assert mvt[name] and mix[name], name  # both loops go through each function
    # MVT's official factors and sizes through the same sample_target: template 2 at 64, search 4 at 128.
    assert mvt["sample_target"][0] == (2.0, 64) and set(mvt["sample_target"][1:]) == {(4.0, 128)}
    assert set(mvt["map_box_back"]) == {(128,)} and set(mvt["clip_box"]) == set(mix["clip_box"]) == {(10,)}
