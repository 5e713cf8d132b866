"""Deterministic synthetic tracking clips with ground truth, for tests, calibration, benchmarks and training.

A textured target (procedural pattern or photo crop) moves over a textured background with a bounded
random-walk velocity, smooth scale and aspect changes and a little camera drift; optionally an occluder
sweeps over it (partial and full occlusion), similar-looking distractors and other objects wander around,
and the target leaves the frame and comes back. All states are computed at construction; ``frame(i)`` renders one frame
on demand (random access, well under a millisecond at 480x360).

Same config and seed give byte-identical frames and boxes on any machine with the same NumPy/OpenCV
(and scikit-image for photos): randomness comes only from seeded ``numpy.random.Generator`` streams
and the maths avoids CPU-dependent functions (see :mod:`mfv2.synthetic.textures`).

Boxes are ``(x, y, w, h)`` float64 pixels, x/y the top-left corner, 0-based (pixel ``(0, 0)`` covers
``[0, 1) x [0, 1)``), rounded to 1/100 px. Files store exactly these numbers, without re-basing, as the
LaSOT toolkits read and write them. While the target is visible or occluded its box is clipped to the
frame; on out-of-view frames it is the true, mostly outside box. A frame is *out of view* when less than
a quarter of the target (or a strip under 8 px) is inside the frame, and *fully occluded* when the
occluder covers at least 98 % of the box; ``visible`` is neither. Frame 0 is always visible.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

import cv2
import numpy as np

from mfv2.config import Config
from mfv2.errors import ConfigError
from mfv2.geometry.boxes import box_intersection, cut_boxes
from mfv2.synthetic import textures as tx
from mfv2.synthetic.motion import smooth_factor, walk

__all__ = ["SyntheticConfig", "SyntheticSequence", "make_sequence", "benchmark_sequences"]

logger = logging.getLogger(__name__)

TEXTURE_SIZE: Final = 128
FULL_COVER: Final = 0.98  # occluded fraction of the target box from which a frame is "fully occluded"
MIN_IN_VIEW: Final = 0.25  # fraction of the target inside the frame below which it is "out of view"
MIN_SLIVER: Final = 8.0  # px; a thinner strip of the target inside the frame also counts as out of view
BACKGROUND_KINDS: Final = ("auto", "photo", "procedural", "blocks", "stripes", "flat", "cells", "unseen_photo")
TARGET_KINDS: Final = ("auto", "pattern", "photo", "flat", "camouflage", "cells", "unseen_photo")
SHAPES: Final = ("rect", "ellipse", "rounded")


@dataclass(frozen=True)
class SyntheticConfig(Config):
    """What to generate. ``backgrounds``: ``photo`` (skimage.data), ``procedural``, or ``auto``
    (photo when scikit-image is installed); a sequence stores the resolved choice in its config.

    Sizes are fractions of the frame side: target width/height stay within ``[max(12 px, min_size),
    max_size]``; ``scale_change`` and ``aspect_change`` are max/min ratios over the clip;
    ``max_speed`` is in frame diagonals per frame; ``camera_drift`` in pixels per frame (0 = still).
    ``distractors`` look like the target (its texture flipped and re-tinted); ``clutter`` objects have
    textures of their own, so that the target is not simply the one textured object in view (training
    data; the benchmark has none).

    Looks and camera (the clip families of :mod:`mfv2.synthetic.families` set them): ``backgrounds``
    also ``blocks``, ``stripes``, ``flat``, ``cells`` (Voronoi mosaic) and ``unseen_photo`` (the
    held-out photos); ``targets``: ``auto`` (a vivid pattern, or half the time a photo patch on photo
    backgrounds), ``pattern``, ``photo``, ``flat``, ``camouflage`` (a re-tinted piece of the background
    itself), ``cells``, ``unseen_photo``; ``shape``: ``auto`` or one of rect / ellipse / rounded.
    ``zoom``: max/min camera zoom over the clip (1 = none; the objects scale with it, and the camera
    pans over a wider canvas); ``lighting``: max/min brightness over the clip (1 = constant);
    ``blur``: the largest Gaussian blur sigma in pixels (0 = sharp); ``jpeg_quality``: every frame
    goes through a JPEG round trip at this quality (0 = off). Ground truth ignores these effects.
    """

    num_frames: int = 300
    height: int = 360
    width: int = 480
    seed: int = 0
    occlusion: bool = True
    distractors: int = 1
    clutter: int = 0
    out_of_view: bool = False
    backgrounds: Literal["auto", "photo", "procedural", "blocks", "stripes", "flat", "cells", "unseen_photo"] = "auto"
    name: str = ""
    max_speed: float = 0.02
    min_size: float = 0.06
    max_size: float = 0.35
    scale_change: float = 2.0
    aspect_change: float = 1.8
    camera_drift: float = 0.5
    targets: Literal["auto", "pattern", "photo", "flat", "camouflage", "cells", "unseen_photo"] = "auto"
    shape: Literal["auto", "rect", "ellipse", "rounded"] = "auto"
    zoom: float = 1.0
    lighting: float = 1.0
    blur: float = 0.0
    jpeg_quality: int = 0

    def __post_init__(self) -> None:
        for key, low in (("num_frames", 1), ("height", 48), ("width", 48), ("seed", 0), ("distractors", 0), ("clutter", 0),
                         ("jpeg_quality", 0)):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ConfigError(f"SyntheticConfig.{key} must be an integer >= {low}, got {v!r}")
        for key in ("max_speed", "min_size", "max_size", "scale_change", "aspect_change", "camera_drift", "zoom",
                    "lighting", "blur"):
            if not isinstance(getattr(self, key), (int, float)) or isinstance(getattr(self, key), bool):
                raise ConfigError(f"SyntheticConfig.{key} must be a number, got {getattr(self, key)!r}")
        for key in ("occlusion", "out_of_view"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"SyntheticConfig.{key} must be true or false, got {getattr(self, key)!r}")
        if not isinstance(self.name, str):
            raise ConfigError(f"SyntheticConfig.name must be a string, got {self.name!r}")
        for key in ("distractors", "clutter"):
            if getattr(self, key) > 16:
                raise ConfigError(f"SyntheticConfig.{key} is at most 16, got {getattr(self, key)}")
        for key, kinds in (("backgrounds", BACKGROUND_KINDS), ("targets", TARGET_KINDS), ("shape", ("auto", *SHAPES))):
            if getattr(self, key) not in kinds:
                raise ConfigError(f"{key} must be one of {', '.join(kinds)}, got {getattr(self, key)!r}")
        if self.jpeg_quality > 100:
            raise ConfigError(f"jpeg_quality is 1-100 (0 = off), got {self.jpeg_quality}")
        if self.zoom < 1 or self.lighting < 1 or self.blur < 0:
            raise ConfigError("zoom and lighting are max/min ratios (>= 1); blur is a sigma >= 0")
        if not 0 < self.min_size <= self.max_size <= 0.5:
            raise ConfigError(f"need 0 < min_size <= max_size <= 0.5, got {self.min_size}, {self.max_size}")
        if self.max_size * min(self.height, self.width) < 12:
            raise ConfigError(f"a {self.width}x{self.height} frame with max_size {self.max_size} cannot hold "
                              f"a 12 px target; use a larger frame or max_size")
        if self.scale_change < 1 or self.aspect_change < 1:
            raise ConfigError("scale_change and aspect_change are max/min ratios, >= 1")
        if self.max_speed < 0 or self.camera_drift < 0:
            raise ConfigError("max_speed and camera_drift must be >= 0")


def _round2(a: np.ndarray) -> np.ndarray:
    """Round to 1/100 through decimal text, so the values survive a write/read round trip exactly."""
    return np.array([float(f"{v:.2f}") + 0.0 for v in a.ravel()], dtype=np.float64).reshape(a.shape)


class SyntheticSequence:
    """A synthetic clip: per-frame ground truth computed up front, frames rendered on demand.

    Attributes:
        name: sequence name, e.g. ``synthetic-0007``.
        config: the config, with ``backgrounds`` resolved to ``photo`` or ``procedural``.
        boxes: ``(N, 4)`` float64 xywh pixels (see the module docstring).
        full_occlusion, out_of_view, visible: ``(N,)`` bool; ``visible = ~full_occlusion & ~out_of_view``.
        description: a short phrase about the target (written to ``nlp.txt``).
    """

    def __init__(self, config: SyntheticConfig) -> None:
        if config.backgrounds == "auto":
            config = config.replace(backgrounds="photo" if tx.photos_available() else "procedural")
        elif "photo" in (config.backgrounds + config.targets) and not tx.photos_available():
            raise ConfigError("photo backgrounds and targets need scikit-image: pip install 'mfv2[synth]', "
                              "or use backgrounds='procedural'")
        self.config = cfg = config
        self.name = cfg.name or f"synthetic-{cfg.seed:04d}"
        n, H, W = cfg.num_frames, cfg.height, cfg.width
        photo = cfg.backgrounds == "photo"
        # Child i of a SeedSequence does not depend on how many are spawned: adding streams keeps old clips.
        r_bg, r_tex, r_move, r_occ, r_dis, r_cam, r_oov, r_clu, r_look, r_zoom = (
            np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(10))

        # Background canvas, larger than the frame by the camera margin (wider when the camera zooms).
        m = int(min(32, 0.1 * min(H, W))) if cfg.camera_drift > 0 else 0
        if cfg.zoom > 1:
            m = int(0.2 * min(H, W))
        if cfg.backgrounds in ("photo", "unseen_photo"):
            names = tx.PHOTO_NAMES if photo else tx.HELD_OUT_PHOTOS
            bg_name = names[int(r_bg.integers(len(names)))]
            canvas = tx.photo_crop(r_bg, tx.load_photo(bg_name), H + 2 * m, W + 2 * m, zoom=r_bg.uniform(1, 1.5))
            canvas = tx.tint(canvas, r_bg.uniform(0.85, 1.15, 3))
            scene = f"a photo of {bg_name}"
        else:
            canvas = tx.background(cfg.backgrounds, r_bg, H + 2 * m, W + 2 * m)
            scene = "a cluttered background" if cfg.backgrounds == "procedural" else f"{cfg.backgrounds}"
        self._canvas = canvas
        drift = walk(r_cam.uniform(-1, 1, (n, 2)), (m, m), np.zeros((n, 2)), (2 * m, 2 * m), cfg.camera_drift)
        self._offsets = np.rint(drift).astype(np.intp)
        self._drift = drift
        # Camera zoom in [1, zoom]; objects scale with it (relative to frame 0).
        self._zoom = smooth_factor(r_zoom, n, cfg.zoom) * math.sqrt(cfg.zoom) if cfg.zoom > 1 else None
        self._zoom_rel = self._zoom / self._zoom[0] if self._zoom is not None else np.ones(n)
        # Per-frame lighting gains (n, 3) and blur sigmas (n,), or None when the clip has none.
        self._gain: np.ndarray | None = None
        if cfg.lighting > 1:
            cast = np.stack([smooth_factor(r_look, n, 1.2) for _ in range(3)], axis=1)
            self._gain = smooth_factor(r_look, n, cfg.lighting)[:, None] * cast
        self._sigma: np.ndarray | None = (smooth_factor(r_look, n, 4.0) - 0.5) / 1.5 * cfg.blur if cfg.blur > 0 else None

        # Target: texture, size path, centre path (with an optional out-of-view episode).
        tex, what = self._look(r_tex, photo)
        shape = SHAPES[int(r_tex.integers(3))] if cfg.shape == "auto" else cfg.shape
        self._target = tx.rgba_mipmaps(tex, shape)
        adjective = {"rect": "rectangular", "ellipse": "elliptical", "rounded": "rounded"}[shape]
        self.description = f"{'an' if shape == 'ellipse' else 'a'} {adjective} {what} moving over {scene}"
        smin, side = max(12.0, cfg.min_size * min(H, W)), cfg.max_size * min(H, W)
        base, aspect0 = math.sqrt(smin * side) * r_tex.uniform(0.8, 1.25), r_tex.uniform(0.6, 1.6)
        wh = self._sizes(r_tex, base, aspect0, smin)
        diag = math.sqrt(H * H + W * W)
        vmax = cfg.max_speed * diag
        exit_at, hold = -1, 0
        if cfg.out_of_view:
            exit_at, hold = int(r_oov.uniform(0.25, 0.55) * n), max(3, int(r_oov.uniform(0.04, 0.1) * n))
        start = (r_move.uniform(0.3, 0.7) * W, r_move.uniform(0.3, 0.7) * H)
        centre = walk(r_move.uniform(-1, 1, (n, 2)), start, wh / 2, (W, H), vmax,
                       exit_at=exit_at, hold=hold, vexit=max(0.75 * vmax, 0.012 * diag))
        self._geo = _round2(np.concatenate([centre - wh / 2, wh], axis=1))

        # Distractors: the target's texture flipped and re-tinted, on their own walks, drawn under it.
        self._others: list[tuple[tx.Levels, np.ndarray]] = []
        for _ in range(cfg.distractors):
            look = tx.tint(tex[::-1] if r_dis.random() < 0.5 else tex[:, ::-1], r_dis.uniform(0.75, 1.25, 3))
            dwh = self._sizes(r_dis, base * r_dis.uniform(0.8, 1.2), aspect0 * r_dis.uniform(0.8, 1.25), smin)
            for _ in range(20):  # start away from the target's first box
                p0 = (r_dis.uniform(0.1, 0.9) * W, r_dis.uniform(0.1, 0.9) * H)
                if abs(p0[0] - start[0]) > wh[0, 0] + dwh[0, 0] or abs(p0[1] - start[1]) > wh[0, 1] + dwh[0, 1]:
                    break
            path = walk(r_dis.uniform(-1, 1, (n, 2)), p0, dwh / 2, (W, H), vmax)
            self._others.append((tx.rgba_mipmaps(look, shape), np.concatenate([path - dwh / 2, dwh], 1)))
        # Clutter: objects with textures and shapes of their own, also drawn under the target.
        for _ in range(cfg.clutter):
            look = self._look(r_clu, photo)[0]
            kind = SHAPES[int(r_clu.integers(3))]
            cwh = self._sizes(r_clu, math.sqrt(smin * side) * r_clu.uniform(0.8, 1.25), r_clu.uniform(0.6, 1.6), smin)
            p0 = (r_clu.uniform(0.1, 0.9) * W, r_clu.uniform(0.1, 0.9) * H)
            path = walk(r_clu.uniform(-1, 1, (n, 2)), p0, cwh / 2, (W, H), vmax)
            self._others.append((tx.rgba_mipmaps(look, kind), np.concatenate([path - cwh / 2, cwh], 1)))

        # Occluder episodes, then the flags from the geometry.
        self._occluder: tx.Levels | None = None
        self._occ = np.full((n, 4), np.nan)
        if cfg.occlusion and n >= 30:
            self._occluder = tx.rgba_mipmaps(self._look(r_occ, photo)[0])
            self._add_occlusions(r_occ)
        inside = cut_boxes(self._geo, W, H)
        area = self._geo[:, 2] * self._geo[:, 3]
        out_of_view = (inside[:, 2] * inside[:, 3] < MIN_IN_VIEW * area) | (inside[:, 2:].min(1) < MIN_SLIVER)
        full = (np.nan_to_num(box_intersection(self._geo, self._occ)) >= FULL_COVER * area) & ~out_of_view
        self.boxes = _round2(np.where(out_of_view[:, None], self._geo, inside))
        self.out_of_view, self.full_occlusion = out_of_view, full
        self.visible = ~full & ~out_of_view
        for a in (self.boxes, self.out_of_view, self.full_occlusion, self.visible, self._geo, self._occ):
            a.setflags(write=False)
        logger.debug("%s: %d frames, %s, %d fully occluded, %d out of view", self.name, n,
                     cfg.backgrounds, int(full.sum()), int(out_of_view.sum()))

    def _look(self, rng: np.random.Generator, photo: bool) -> tuple[np.ndarray, str]:
        """An object texture of the configured ``targets`` kind and a few words about it."""
        kind, size = self.config.targets, TEXTURE_SIZE
        if kind in ("auto", "pattern"):
            return tx.object_texture(rng, size, photo=photo and kind == "auto")
        if kind in ("photo", "unseen_photo"):
            return tx.photo_patch(rng, size, tx.PHOTO_NAMES if kind == "photo" else tx.HELD_OUT_PHOTOS)
        if kind == "flat":
            return tx.flat_texture(rng, size), "flat-coloured object"
        if kind == "cells":
            return tx.cells(rng, size, size, vivid=True), "mosaic"
        # camouflage: a piece of the background itself, re-tinted a little
        ch, cw = self._canvas.shape[:2]
        side = int(min(ch, cw) * rng.uniform(0.15, 0.35))
        y0, x0 = int(rng.integers(0, ch - side + 1)), int(rng.integers(0, cw - side + 1))
        crop = cv2.resize(self._canvas[y0 : y0 + side, x0 : x0 + side], (size, size),
                          interpolation=cv2.INTER_LINEAR_EXACT)
        return tx.tint(crop, rng.uniform(0.8, 1.2, 3)), "piece of the background"

    def _sizes(self, rng: np.random.Generator, base: float, aspect0: float, smin: float) -> np.ndarray:
        """``(N, 2)`` widths and heights with smooth scale and aspect changes (and the camera zoom),
        within the size limits."""
        cfg, n = self.config, self.config.num_frames
        scale = smooth_factor(rng, n, cfg.scale_change) * self._zoom_rel
        aspect = np.sqrt(aspect0 * smooth_factor(rng, n, cfg.aspect_change))
        w = np.clip(base * scale * aspect, smin, cfg.max_size * cfg.width)
        h = np.clip(base * scale / aspect, smin, cfg.max_size * cfg.height)
        return np.stack([w, h], axis=1)

    def _add_occlusions(self, rng: np.random.Generator) -> None:
        """Sweep the occluder across the target: one episode per ~150 frames, full and partial."""
        n, geo = self.config.num_frames, self._geo
        count = max(1, round(n / 150))
        kinds = rng.permutation((["full", "partial"] * count)[:count]) if count > 1 else [
            "full" if rng.random() < 0.6 else "partial"]
        first, slot = min(10, n // 5), (n - min(10, n // 5)) / count
        for k, kind in enumerate(kinds):
            length = int(min(slot * 0.8, rng.uniform(30, 60)))
            t0 = int(first + k * slot + rng.uniform(0, slot - length))
            t = np.arange(t0, min(n, t0 + length))
            centre = geo[t, :2] + geo[t, 2:] / 2
            wmax, hmax = geo[t, 2].max(), geo[t, 3].max()
            ow = min(wmax * rng.uniform(1.4, 2.0), 0.6 * self.config.width)
            oh = min(hmax * rng.uniform(1.4, 2.0), 0.6 * self.config.height)
            ux, uy = tx.unit_vector(rng)
            along = (abs(ux) * (ow + wmax) + abs(uy) * (oh + hmax)) / 2 + 2
            if kind == "partial":  # overlap 30-70 % of the target's extent across the sweep
                t_across, o_across = abs(uy) * wmax + abs(ux) * hmax, abs(uy) * ow + abs(ux) * oh
                off = ((t_across + o_across) / 2 - rng.uniform(0.3, 0.7) * t_across) * rng.choice([-1, 1])
            else:
                off = min(ow - wmax, oh - hmax) / 4 * rng.uniform(-1, 1)
            s = -along + 2 * along * (t - t0) / max(len(t) - 1, 1)
            ox = centre[:, 0] + ux * s - uy * off
            oy = centre[:, 1] + uy * s + ux * off
            self._occ[t] = np.stack([ox - ow / 2, oy - oh / 2, np.full(len(t), ow), np.full(len(t), oh)], 1)

    def __len__(self) -> int:
        return self.config.num_frames

    def __repr__(self) -> str:
        c = self.config
        return f"SyntheticSequence({self.name!r}, {c.num_frames} frames, {c.width}x{c.height}, {c.backgrounds})"

    def _index(self, i: int) -> int:
        n = self.config.num_frames
        if not -n <= i < n:
            raise IndexError(f"frame {i} out of range for {n} frames")
        return i % n

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` (negative counts from the end) as BGR uint8 ``(H, W, 3)``."""
        i = self._index(i)
        img = self.background(i)
        for levels, boxes in self._others:
            tx.composite(img, levels, boxes[i])
        tx.composite(img, self._target, self._geo[i])
        if self._occluder is not None and not np.isnan(self._occ[i, 0]):
            tx.composite(img, self._occluder, self._occ[i])
        if self._gain is not None:
            img = tx.tint(img, self._gain[i])
        if self._sigma is not None and self._sigma[i] >= 0.3:
            img = cv2.GaussianBlur(img, (0, 0), sigmaX=float(self._sigma[i]))
        if self.config.jpeg_quality:
            buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])[1]
            img = np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR))
        return img

    def background(self, i: int) -> np.ndarray:
        """Frame ``i`` without target, distractors and occluder (the drifting background only)."""
        i = self._index(i)
        H, W = self.config.height, self.config.width
        if self._zoom is None:
            oy, ox = self._offsets[i, 1], self._offsets[i, 0]
            return self._canvas[oy : oy + H, ox : ox + W].copy()
        # zoom z about the window centre (canvas point drift + frame centre), which keeps it inside the canvas
        z, (cx, cy) = float(self._zoom[i]), self._drift[i] + (W / 2, H / 2)
        warp = np.array([[z, 0.0, W / 2 - z * cx], [0.0, z, H / 2 - z * cy]])
        return cv2.warpAffine(self._canvas, warp, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.frame(i) for i in range(len(self)))


def make_sequence(config: SyntheticConfig | None = None, **overrides: Any) -> SyntheticSequence:
    """Build a sequence from ``config`` (default :class:`SyntheticConfig`) with field ``overrides``.

    Raises:
        ConfigError: an unknown or invalid field, or photos requested without scikit-image.
    """
    cfg = config or SyntheticConfig()
    if overrides:
        cfg = SyntheticConfig.from_dict({**cfg.to_dict(), **overrides})
    return SyntheticSequence(cfg)


def benchmark_sequences(num_sequences: int = 8, num_frames: int = 300, seed: int = 0,
                        **overrides: Any) -> list[SyntheticSequence]:
    """``num_sequences`` clips named ``synthetic-1`` ...; clip k's seed derives from ``(seed, k)``.

    Raises:
        ConfigError: a bad count or config override (``name`` is set here and cannot be overridden).
    """
    if not isinstance(num_sequences, int) or num_sequences < 1:
        raise ConfigError(f"num_sequences must be an integer >= 1, got {num_sequences!r}")
    if "name" in overrides:
        raise ConfigError("benchmark sequences are named synthetic-<k>; do not pass name")
    base = SyntheticConfig.from_dict({**overrides, "num_frames": num_frames, "seed": seed})
    return [
        SyntheticSequence(base.replace(seed=int(np.random.SeedSequence([seed, k]).generate_state(1)[0]),
                                       name=f"synthetic-{k}"))
        for k in range(1, num_sequences + 1)
    ]
