"""The tracker loop: the official algorithm, template updates, backends agreeing, the OpenCV API, bad input, memory."""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from mfv2.artifacts import IMAGENET_MEAN, IMAGENET_STD, Manifest
from mfv2.config import VARIANTS, TrackerConfig
from mfv2.errors import ConfigError, Mfv2Error, ShapeError
from mfv2.runtimes import available_backends, cached_export, load_backend
from mfv2.tracking import STAGES, Tracker

torch = pytest.importorskip("torch")


def tracking_model():
    """The seed-0 tiny model with its box head set to predict a target-sized box that moves with the image.

    Random weights alone predict near-empty boxes, so the tracker would collapse to 10 px at once;
    these boxes keep several tens of frames of varied motion, which is what the comparisons need.
    """
    from mfv2.models import build_model

    torch.manual_seed(0)
    model = build_model("tiny")
    C, F = model.config.embed_dim, model.config.num_bins
    with torch.no_grad():
        model.backbone.pos_embed_reg.zero_()
        model.backbone.pos_embed_reg[0, range(4), range(4)] = 1.0  # tag the l, r, t, b tokens
        first, last, norm = model.box_head.layers[0][0], model.box_head.layers[1][0], model.box_head.layers[1][1]
        first.weight.copy_(torch.eye(C))
        first.bias.zero_()
        bins = torch.arange(F, dtype=torch.float32)
        for token, peak in enumerate((6.2, 9.8, 6.2, 9.8)):  # l, r, t, b near 0.39 / 0.61 of the crop
            last.weight[:, token] = -(((bins - peak) / 2.0) ** 2)
        last.weight[:, 4:] *= 100.0  # image-dependent part
        norm.weight.fill_(4.0)
    return model.eval()


def model_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, export directory) of :func:`tracking_model`, shared by the tracking test modules."""
    from mfv2.models import save_native

    base = tmp_path_factory.getbasetemp()
    ckpt = base / "mfv2-tracking-model.pt"
    if not ckpt.is_file():
        model = tracking_model()
        save_native(model.state_dict(), model.config, ckpt)
    return ckpt, cached_export(ckpt, cache_dir=base / "mfv2-cache" / "exports")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    return model_files(tmp_path_factory)


@pytest.fixture(scope="module")
def clip():
    from mfv2.synthetic import make_sequence

    seq = make_sequence(num_frames=80, seed=5, height=360, width=480, backgrounds="procedural")
    return [seq.frame(i) for i in range(len(seq))], tuple(float(v) for v in seq.boxes[0])


# --------------------------------------------------------------------- the official tracker, transcribed


def _official_crop(im, box, factor, out):
    x, y, w, h = box
    crop_sz = math.ceil(math.sqrt(w * h) * factor)
    x1, y1 = round(x + 0.5 * w - crop_sz * 0.5), round(y + 0.5 * h - crop_sz * 0.5)
    x2, y2 = x1 + crop_sz, y1 + crop_sz
    x1_pad, y1_pad = max(0, -x1), max(0, -y1)
    x2_pad, y2_pad = max(x2 - im.shape[1] + 1, 0), max(y2 - im.shape[0] + 1, 0)
    crop = im[y1 + y1_pad : y2 - y2_pad, x1 + x1_pad : x2 - x2_pad, :]
    padded = cv2.copyMakeBorder(crop, y1_pad, y2_pad, x1_pad, x2_pad, cv2.BORDER_CONSTANT)
    return cv2.resize(padded, (out, out)), out / crop_sz


def _official_process(patch_rgb):
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((torch.tensor(patch_rgb).float().permute(2, 0, 1).unsqueeze(0) / 255.0 - mean) / std).contiguous()


def official_tracker(model, frames, init_box, cfg: TrackerConfig):
    """MixFormerV2's online tracker (initialize + track) on RGB images, full forward every frame.

    online_size > 1 follows the official code's intent (append, then replace the oldest) where the
    official code itself crashes.
    """
    Z, X = model.config.template_size, model.config.search_size
    images = [f[:, :, ::-1].copy() for f in frames]  # the official tracker is fed RGB
    template = _official_process(_official_crop(images[0], init_box, cfg.template_factor, Z)[0])
    online, online_max, max_score, forget, state = template, template, -1.0, 0, list(init_box)
    boxes, scores, qualified = [list(init_box)], [], 0
    for frame_id, image in enumerate(images[1:], start=1):
        H, W, _ = image.shape
        patch, resize_factor = _official_crop(image, state, cfg.search_factor, X)
        ot = online if online.shape[0] == 1 else online.unsqueeze(0)
        with torch.no_grad():
            out = model(template, ot, _official_process(patch))
        pred = (out["pred_boxes"].view(-1, 4).mean(dim=0) * X / resize_factor).tolist()
        score = out["pred_scores"].view(1).sigmoid().item()
        cx_prev, cy_prev = state[0] + 0.5 * state[2], state[1] + 0.5 * state[3]
        half = 0.5 * X / resize_factor
        cx, cy, w, h = pred[0] + cx_prev - half, pred[1] + cy_prev - half, pred[2], pred[3]
        x1, y1, x2, y2 = cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h
        m = cfg.clip_margin
        x1, x2 = min(max(0, x1), W - m), min(max(m, x2), W)
        y1, y2 = min(max(0, y1), H - m), min(max(m, y2), H)
        state = [x1, y1, max(m, x2 - x1), max(m, y2 - y1)]
        max_score *= cfg.max_score_decay
        if score > cfg.update_threshold and score > max_score:
            online_max = _official_process(_official_crop(image, state, cfg.template_factor, Z)[0])
            max_score = score
            qualified += 1
        if frame_id % cfg.update_interval == 0:
            if cfg.online_size == 1:
                online = online_max
            elif online.shape[0] < cfg.online_size:
                online = torch.cat([online, online_max])
            else:
                online = online.clone()
                online[forget : forget + 1] = online_max
                forget = (forget + 1) % cfg.online_size
            max_score, online_max = -1.0, template
        boxes.append(state)
        scores.append(score)
    return np.array(boxes), np.array(scores), qualified


def _track(tracker, frames, init_box):
    tracker.init(frames[0], init_box)
    boxes, scores = [list(init_box)], []
    for frame in frames[1:]:
        ok, box = tracker.update(frame)
        boxes.append(list(box))
        scores.append(tracker.score)
    return np.array(boxes), np.array(scores)


@pytest.mark.parametrize("online_size", [1, 2])
def test_tracker_reproduces_the_official_loop(clip, online_size):
    frames, init_box = clip
    model = tracking_model()
    probe = official_tracker(model, frames[:30], init_box, TrackerConfig(update_interval=4))[1]
    # a threshold inside the score range, so that some frames qualify for the online template and some do not
    cfg = TrackerConfig(update_interval=4, update_threshold=float(np.median(probe)), online_size=online_size)
    ref_boxes, ref_scores, qualified = official_tracker(model, frames, init_box, cfg)
    assert 0.2 * len(ref_scores) < qualified < 0.8 * len(ref_scores)
    assert np.ptp(ref_boxes[:, 0]) > 50 and np.ptp(ref_boxes[:, 2]) > 10  # the target moves and changes size
    for graph, atol in (("full", 1e-3), ("split", 1e-2)):
        boxes, scores = _track(Tracker(load_backend("torch", model, graph=graph), cfg), frames, init_box)
        np.testing.assert_allclose(boxes, ref_boxes, atol=atol, err_msg=f"{graph} graph")
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


# --------------------------------------------------------------------------- template updates, scripted


class ScriptedRunner:
    """A ModelRunner stand-in: a fixed centred box, scores from a script; records set_templates calls."""

    def __init__(self, scores, online_templates=1, box=(0.5, 0.5, 0.25, 0.25)):
        self.manifest = Manifest(model=VARIANTS.get("tiny"), tracker=TrackerConfig())
        self.backend, self.online_templates = "scripted", online_templates
        self.template_size, self.search_size = 32, 64
        self.scores, self.box, self.calls = iter(scores), box, []

    def set_templates(self, template, online):
        self.calls.append((template, online))

    def predict(self, search):
        return np.array([self.box], np.float32), np.array([next(self.scores)], np.float32)

    def close(self):
        self.closed = True


def _frame_of(template: np.ndarray) -> int:
    """Index of the uniform frame (value 10 * i) a template crop was cut from."""
    red = template[0, 0, 16, 16] * IMAGENET_STD[0] + IMAGENET_MEAN[0]  # the centre is never padding
    return round(red * 255 / 10)


def _uniform(i: int) -> np.ndarray:
    return np.full((120, 160, 3), 10 * i, np.uint8)


def test_online_template_is_the_best_confident_crop_of_each_interval():
    scores = [0.4, 0.7, 0.6, 0.9, 0.3, *[0.2] * 5, 0.6, 0.55, 0.8, 0.8, 0.2, *[0.1] * 5]
    runner = ScriptedRunner(scores)
    tracker = Tracker(runner, TrackerConfig(update_interval=5))
    tracker.init(_uniform(0), (60, 40, 30, 30))
    for i in range(1, len(scores) + 1):
        tracker.update(_uniform(i))
    # init; frame 5 -> crop of frame 4 (0.9); frame 10 -> back to frame 0 (nothing > 0.5);
    # frame 15 -> frame 13 (0.8; the equal 0.8 of frame 14 does not replace it); frame 20: still frame 0, no call
    assert [(_frame_of(t), _frame_of(o)) for t, o in runner.calls] == [(0, 0), (0, 4), (0, 0), (0, 13), (0, 0)]
    assert all(t is runner.calls[0][0] for t, _ in runner.calls)


def test_max_score_decay_lets_later_frames_win():
    runner = ScriptedRunner([0.9, 0.6, 0.55, 0.3])
    tracker = Tracker(runner, TrackerConfig(update_interval=4, max_score_decay=0.5))
    tracker.init(_uniform(0), (60, 40, 30, 30))
    for i in range(1, 5):
        tracker.update(_uniform(i))
    # 0.9 -> decays to 0.45 < 0.6 (frame 2 wins) -> 0.3 < 0.55 (frame 3 wins)
    assert _frame_of(runner.calls[-1][1]) == 3


def test_online_size_above_one_appends_then_replaces_the_oldest():
    runner = ScriptedRunner([0.9] * 10, online_templates=None)
    tracker = Tracker(runner, TrackerConfig(update_interval=2, online_size=3))
    tracker.init(_uniform(0), (60, 40, 30, 30))
    for i in range(1, 11):
        tracker.update(_uniform(i))
    seen = []
    for _, online in runner.calls[1:]:
        stack = online[:, None] if online.ndim == 4 else online
        seen.append([_frame_of(stack[:, k]) for k in range(stack.shape[1])])
    # each interval's best is its first frame (0.9 is not > 0.9 afterwards)
    assert seen == [[0, 1], [0, 1, 3], [5, 1, 3], [5, 7, 3], [5, 7, 9]]


def test_tracker_needs_a_single_target_model_with_one_online_template():
    with pytest.raises(ConfigError, match="online_size 3 needs"):
        Tracker(ScriptedRunner([], online_templates=1), TrackerConfig(online_size=3))
    with pytest.raises(ConfigError, match="takes 2"):
        Tracker(ScriptedRunner([], online_templates=2))
    runner = ScriptedRunner([])
    runner.manifest.batch = 2
    with pytest.raises(ConfigError, match="exported for batch 2"):
        Tracker(runner)


def test_lost_threshold_and_non_finite_outputs():
    runner = ScriptedRunner([0.3, 0.7, float("nan")])
    tracker = Tracker(runner, TrackerConfig(lost_threshold=0.5))
    tracker.init(_uniform(0), (60, 40, 30, 30))
    ok, box = tracker.update(_uniform(1))
    assert not ok and tracker.getTrackingScore() == pytest.approx(0.3)  # low score: lost, box still estimated
    ok, box = tracker.update(_uniform(2))
    assert ok and tracker.score == pytest.approx(0.7)
    ok, after = tracker.update(_uniform(3))
    assert not ok and after == box and tracker.score == 0.0 and tracker.nonfinite_frames == 1
    runner.box = (float("nan"), 0.5, 0.2, 0.2)
    runner.scores = iter([0.9])
    ok, still = tracker.update(_uniform(4))
    assert not ok and still == box


# ------------------------------------------------------------------------------------ backends agree


def test_backends_agree_on_a_clip(files, clip):
    _, export_dir = files
    frames, init_box = clip
    results = {}
    for backend in ("torch", "onnxruntime", "openvino"):
        if backend not in available_backends():
            continue
        with Tracker.create(backend, model=export_dir, threads=1) as tracker:
            assert tracker.runner.graph == "split"
            results[backend] = _track(tracker, frames, init_box)[0]
    assert {"torch", "onnxruntime"} <= set(results)
    ref = results.pop("torch")
    assert np.ptp(ref[:, 0]) > 50  # a moving target, not a box stuck in a corner
    for backend, boxes in results.items():
        within = (np.abs(boxes - ref).max(axis=1) <= 1.0).mean()
        assert within >= 0.95, f"{backend}: only {within:.0%} of frames within 1 px of torch"


def test_checkpoint_on_a_file_backend_is_exported_once(files, clip, tmp_path, monkeypatch, capsys):
    import mfv2.exporters
    from mfv2.cli import main

    ckpt, export_dir = files
    frames, init_box = clip
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames[:8]):
        cv2.imwrite(str(folder / f"{i:08d}.png"), frame)

    def no_export(*args, **kwargs):
        raise AssertionError("exported again instead of using the cache")

    monkeypatch.setattr(mfv2.exporters, "export", no_export)
    monkeypatch.setenv("MFV2_CACHE", str(export_dir.parent.parent))  # the cache the fixture filled
    out = tmp_path / "boxes.txt"
    code = main(["track", str(folder), "--backend", "onnxruntime", "--checkpoint", str(ckpt), "--threads", "1",
                 "--init", ",".join(map(str, init_box)), "--output", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    with Tracker.create("onnxruntime", model=export_dir, threads=1) as tracker:
        boxes = _track(tracker, frames[:8], init_box)[0]
    np.testing.assert_allclose(np.loadtxt(out, delimiter=","), boxes, atol=0.006)


def test_the_export_cache_is_keyed_by_the_exporter(files, monkeypatch):
    import mfv2.runtimes.runner as runner
    from mfv2.artifacts import exporter_fingerprint

    ckpt, export_dir = files
    fingerprint = exporter_fingerprint()
    assert len(fingerprint) == 12 and export_dir.name.endswith(fingerprint)
    assert cached_export(ckpt, cache_dir=export_dir.parent) == export_dir  # same exporter: reused
    # A changed exporter (code or converter versions) must not reuse files the old one wrote.
    monkeypatch.setattr(runner, "exporter_fingerprint", lambda: "0" * 12)
    monkeypatch.setattr("mfv2.exporters.export", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-exported")))
    with pytest.raises(AssertionError, match="re-exported"):
        cached_export(ckpt, cache_dir=export_dir.parent)



# -------------------------------------------------------------------------------------- the OpenCV API


def test_opencv_api_and_timings(files, clip):
    _, export_dir = files
    frames, init_box = clip
    with Tracker.create("onnxruntime", model=export_dir, config="got10k") as tracker:
        assert tracker.config.update_interval == TrackerConfig.preset("got10k", "tiny").update_interval
        assert tracker.init(frames[0], init_box) is None
        assert tracker.box == init_box and tracker.getTrackingScore() == 1.0
        sums = dict.fromkeys((*STAGES, "total"), 0.0)
        for frame in frames[1:6]:
            ok, box = tracker.update(frame)
            assert ok is True and len(box) == 4 and all(isinstance(v, float) for v in box)
            assert set(tracker.last_timings) == {*STAGES, "total"}
            assert all(v >= 0 for v in tracker.last_timings.values()) and tracker.last_timings["infer"] > 0
            for k, v in tracker.last_timings.items():
                sums[k] += v
        assert tracker.frames == 5
        assert tracker.total_timings == pytest.approx(sums)
        assert 0.0 <= tracker.getTrackingScore() <= 1.0 and tracker.getTrackingScore() == tracker.score
        runner = tracker.runner
    with pytest.raises(Mfv2Error):
        runner.predict(np.zeros((1, 3, 64, 64), np.float32))  # closed with the tracker that created it


def test_update_before_init_and_conflicting_create_arguments(files):
    _, export_dir = files
    tracker = Tracker(load_backend("onnxruntime", export_dir))
    with pytest.raises(Mfv2Error, match="before init"):
        tracker.update(_uniform(1))
    with pytest.raises(ConfigError, match="either model= .* or checkpoint="):
        Tracker.create("onnxruntime", model=export_dir, checkpoint=export_dir)


@pytest.mark.parametrize(
    "box, message",
    [
        ((10, 10, 0, 20), "width and height > 0"),
        ((10, 10, 20, -5), "width and height > 0"),
        ((10, float("nan"), 20, 20), "finite"),
        ((200, 10, 20, 20), "outside the 160x120 frame"),
        ((-30, -30, 20, 20), "outside the 160x120 frame"),
        ((1, 2, 3), "four numbers"),
    ],
)
def test_bad_init_boxes(box, message):
    with pytest.raises(ConfigError, match=message):
        Tracker(ScriptedRunner([])).init(_uniform(1), box)


def test_frame_formats():
    gray = np.random.default_rng(0).integers(0, 255, (120, 160), dtype=np.uint8)
    bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    results = []
    for frame in (bgr, gray, gray[:, :, None], cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)):
        runner = ScriptedRunner([0.9])
        tracker = Tracker(runner)
        tracker.init(frame, (60, 40, 30, 30))
        results.append((runner.calls[0][0], tracker.update(frame)))
    for template, out in results[1:]:
        np.testing.assert_array_equal(template, results[0][0])  # grayscale and BGRA become the same BGR image
        assert out == results[0][1]
    tracker = Tracker(ScriptedRunner([0.9, 0.9]))
    with pytest.raises(ShapeError, match="uint8"):
        tracker.init(bgr.astype(np.float32), (60, 40, 30, 30))
    with pytest.raises(ShapeError, match=r"\(H, W, 3\)"):
        tracker.init(np.zeros((120, 160, 2), np.uint8), (60, 40, 30, 30))
    tracker.init(bgr, (60, 40, 30, 30))
    with pytest.raises(ShapeError, match="frame size changed from 160x120 to 80x60"):
        tracker.update(bgr[:60, :80])


# ------------------------------------------------------------------------------------------- memory


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident set size from /proc")
def test_memory_does_not_grow_over_2000_frames(files, clip):
    _, export_dir = files
    frames, init_box = clip
    frames = [cv2.resize(f, (240, 180)) for f in frames[:40]]
    init_box = tuple(v / 2 for v in init_box)
    with Tracker.create("onnxruntime", model=export_dir, threads=1, config=TrackerConfig(update_interval=10)) as tracker:
        tracker.init(frames[0], init_box)
        rss = []
        for i in range(2000):
            tracker.update(frames[1 + i % (len(frames) - 1)])
            if i in (299, 1999):
                rss.append(_rss_mb())
        assert tracker.frames == 2000
    assert rss[1] - rss[0] < 8.0, f"resident memory grew {rss[1] - rss[0]:.1f} MB from frame 300 to 2000"
