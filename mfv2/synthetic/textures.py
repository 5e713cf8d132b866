"""Textures for :mod:`mfv2.synthetic`: seeded procedural patterns and bundled scikit-image photos.

Everything here is deterministic across machines: randomness comes from the caller's
``numpy.random.Generator``, float work uses only IEEE-exact operations (``+ - * /``, ``sqrt``,
``floor``; no ``sin``/``exp``, whose SIMD variants differ between CPUs), and OpenCV is used only for
uint8 operations with integer kernels (``INTER_LINEAR_EXACT`` and power-of-two ``INTER_AREA`` resize,
``warpAffine``).
Photos are the PNG files shipped inside scikit-image (JPEG decoders may differ between builds).
"""

from __future__ import annotations

import functools
import math
from typing import Final

import cv2
import numpy as np

from mfv2.errors import ConfigError

__all__ = [
    "PHOTO_NAMES",
    "HELD_OUT_PHOTOS",
    "PATTERNS",
    "BACKGROUNDS",
    "background",
    "cells",
    "flat_texture",
    "photo_patch",
    "photos_available",
    "load_photo",
    "palette",
    "pattern",
    "background_noise",
    "photo_crop",
    "tint",
    "rgba_mipmaps",
    "unit_vector",
    "composite",
    "object_texture",
]

# Bundled PNG images of skimage.data, in a fixed order: a seed indexes into this tuple, so changing
# it changes every photo sequence.
PHOTO_NAMES: Final[tuple[str, ...]] = (
    "astronaut", "chelsea", "coffee", "immunohistochemistry", "motorcycle",
    "grass", "gravel", "brick", "camera", "moon", "coins",
)
# Photos (PNG files of skimage.data too) that only the held-out clip families use: no training stage
# sees them (mfv2.synthetic.families keeps them out of every training family).
HELD_OUT_PHOTOS: Final[tuple[str, ...]] = ("clock", "page", "text", "cell", "microaneurysms")
PATTERNS: Final[tuple[str, ...]] = ("noise", "stripes", "checker", "blobs", "rings")

Levels = dict[tuple[int, int], np.ndarray]  # (width, height) -> premultiplied BGRA texture


def photos_available() -> bool:
    """True when scikit-image (the optional ``mfv2[synth]`` extra) can be imported."""
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=len(PHOTO_NAMES) + len(HELD_OUT_PHOTOS))
def load_photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as read-only BGR uint8 ``(H, W, 3)``.

    Raises:
        ConfigError: unknown name, scikit-image missing, or the file cannot be read.
    """
    if name not in PHOTO_NAMES + HELD_OUT_PHOTOS:
        raise ConfigError(f"unknown photo {name!r}; known: {', '.join(PHOTO_NAMES + HELD_OUT_PHOTOS)}")
    try:
        import skimage.data as data

        img = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    except ImportError as e:
        raise ConfigError(
            "photo textures need scikit-image: pip install 'mfv2[synth]', or use backgrounds='procedural'"
        ) from e
    except Exception as e:  # skimage raises various errors for a damaged or missing data file
        raise ConfigError(f"cannot load skimage.data.{name} ({e}); use backgrounds='procedural'") from e
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    out = np.ascontiguousarray(img[:, :, 2::-1], dtype=np.uint8)  # RGB(A) -> BGR
    out.setflags(write=False)
    return out


def palette(rng: np.random.Generator, n: int, *, vivid: bool) -> np.ndarray:
    """``(n, 3)`` float64 BGR colours in [0, 255]: saturated for targets, muted for backgrounds."""
    if vivid:
        cols = np.empty((n, 3))
        for i in range(n):
            c = np.array([rng.uniform(170, 255), rng.uniform(0, 255), rng.uniform(0, 70)])
            cols[i] = c[rng.permutation(3)]
        return cols
    grey = rng.uniform(60, 190, (n, 1))
    return np.clip(grey + rng.uniform(-35, 35, (n, 3)), 0, 255)


def _colourise(field: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Map a field in [0, 1] to BGR uint8 through a 1024-entry table interpolating the palette."""
    n = cols.shape[0]
    u = np.arange(1024) / 1023 * (n - 1)
    i0 = np.minimum(np.floor(u).astype(np.intp), n - 2)
    t = (u - i0)[:, None]
    lut = np.rint(np.clip(cols[i0] * (1.0 - t) + cols[i0 + 1] * t, 0, 255)).astype(np.uint8)
    return lut[np.rint(np.clip(field, 0.0, 1.0) * 1023).astype(np.intp)]


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth value noise in [0, 1]: a random lattice with smoothstep interpolation."""
    gh, gw = int(h / cell) + 3, int(w / cell) + 3
    grid = rng.random((gh, gw))
    ys, xs = (np.arange(h) + 0.5) / cell, (np.arange(w) + 0.5) / cell
    iy, ix = np.floor(ys).astype(np.intp), np.floor(xs).astype(np.intp)
    ty, tx = ys - iy, xs - ix
    sy, sx = (ty * ty * (3 - 2 * ty))[:, None], (tx * tx * (3 - 2 * tx))[None, :]
    iy, ix = iy[:, None], ix[None, :]
    top = grid[iy, ix] * (1 - sx) + grid[iy, ix + 1] * sx
    bottom = grid[iy + 1, ix] * (1 - sx) + grid[iy + 1, ix + 1] * sx
    return top * (1 - sy) + bottom * sy


def _fractal(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3) -> np.ndarray:
    acc, norm, amp = np.zeros((h, w)), 0.0, 1.0
    for _ in range(octaves):
        acc += amp * _value_noise(rng, h, w, max(cell, 2.0))
        norm += amp
        amp *= 0.5
        cell /= 2.0
    acc /= norm
    lo, hi = acc.min(), acc.max()
    return (acc - lo) / max(hi - lo, 1e-9)


def unit_vector(rng: np.random.Generator) -> tuple[float, float]:
    """A random unit vector without trigonometry (rejection sampling in the unit disc)."""
    while True:
        dx, dy = rng.uniform(-1, 1, 2)
        r2 = dx * dx + dy * dy
        if 0.05 < r2 <= 1.0:
            r = np.sqrt(r2)
            return float(dx / r), float(dy / r)


def pattern(rng: np.random.Generator, size: int, kind: str, cols: np.ndarray) -> np.ndarray:
    """A ``(size, size, 3)`` BGR uint8 procedural pattern of the given ``kind`` (see PATTERNS)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    period = size / rng.uniform(3.0, 9.0)
    if kind == "noise":
        field = _fractal(rng, size, size, size / rng.uniform(2.0, 5.0))
    elif kind == "stripes":
        dx, dy = unit_vector(rng)
        t = (xx * dx + yy * dy) / period
        tri = np.abs(2.0 * (t - np.floor(t)) - 1.0)
        field = np.clip((tri - 0.5) * rng.uniform(1.5, 4.0) + 0.5, 0, 1)
    elif kind == "checker":
        dx, dy = unit_vector(rng)
        a = np.floor((xx * dx + yy * dy) / period) + np.floor((yy * dx - xx * dy) / period)
        field = (a - 2.0 * np.floor(a / 2.0)) * 0.8 + 0.2 * _value_noise(rng, size, size, size / 4)
    elif kind == "blobs":
        field = np.zeros((size, size))
        for _ in range(int(rng.integers(4, 10))):
            cx, cy, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0.1, 0.3) * size
            d2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / (r * r)
            field = np.maximum(field, np.clip(1.0 - d2, 0, 1) ** 2)
    elif kind == "rings":
        cx, cy = rng.uniform(0.2, 0.8, 2) * size
        t = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / (period * 0.7)
        field = np.abs(2.0 * (t - np.floor(t)) - 1.0)
    else:
        raise ConfigError(f"unknown pattern {kind!r}; known: {', '.join(PATTERNS)}")
    return _colourise(field, cols)


def background_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A muted, cluttered ``(h, w, 3)`` BGR uint8 background: fractal noise, faint stripes, small patches."""
    field = _fractal(rng, h, w, max(h, w) / rng.uniform(4.0, 10.0), octaves=5)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = unit_vector(rng)
    t = (xx * dx + yy * dy) / rng.uniform(20.0, 60.0)
    field = 0.85 * field + 0.15 * np.abs(2.0 * (t - np.floor(t)) - 1.0)
    img = _colourise(field, palette(rng, int(rng.integers(3, 6)), vivid=False))
    side = min(h, w)
    for _ in range(int(rng.integers(6, 15))):  # clutter: muted pattern patches of object size
        kind = PATTERNS[int(rng.integers(len(PATTERNS)))]
        patch = pattern(rng, 64, kind, palette(rng, 3, vivid=False))
        levels = rgba_mipmaps(patch, ("rect", "ellipse", "rounded")[int(rng.integers(3))])
        bw, bh = rng.uniform(0.04, 0.2, 2) * side
        composite(img, levels, np.array([rng.uniform(-bw / 2, w - bw / 2), rng.uniform(-bh / 2, h - bh / 2), bw, bh]))
    return img


def tint(img: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Multiply each BGR channel by a gain (e.g. to colour grey photos), uint8 in and out."""
    g = np.rint(np.asarray(gains) * 128).astype(np.uint32)
    return np.minimum((img.astype(np.uint32) * g + 64) >> 7, 255).astype(np.uint8)


def photo_crop(rng: np.random.Generator, img: np.ndarray, h: int, w: int, *, zoom: float = 1.0) -> np.ndarray:
    """A random ``(h, w)`` BGR crop of ``img``, rescaled so the crop covers ``zoom`` x the output size."""
    ih, iw = img.shape[:2]
    scale = max(h / ih, w / iw) * max(zoom, 1.0)
    sw, sh = max(w, int(np.ceil(iw * scale))), max(h, int(np.ceil(ih * scale)))
    big = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_LINEAR_EXACT)
    y0, x0 = int(rng.integers(0, sh - h + 1)), int(rng.integers(0, sw - w + 1))
    out = big[y0 : y0 + h, x0 : x0 + w]
    return np.ascontiguousarray(out[:, ::-1] if rng.random() < 0.5 else out)


def rgba_mipmaps(bgr: np.ndarray, shape: str = "rect", min_size: int = 12) -> Levels:
    """Premultiplied BGRA copies of a square texture cut to ``shape`` (rect, ellipse, rounded), box-filtered
    to every (width, height) pair of the sizes side, side/2, ... >= ``min_size`` (a "rip-map").

    Premultiplied colour lets :func:`composite` warp with a zero border and blend with
    ``out = c + dst * (1 - a)``, which antialiases the edges at the box boundary; a level per axis keeps
    the sampling close to 1:1 in both directions, so the edges land within a fraction of a pixel.
    """
    side = bgr.shape[0]
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    u, v = (xx + 0.5) / side * 2 - 1, (yy + 0.5) / side * 2 - 1  # -1..1 across the texture
    if shape == "ellipse":
        alpha = u * u + v * v <= 1.0
    elif shape == "rounded":
        du, dv = np.maximum(np.abs(u) - 0.6, 0) / 0.4, np.maximum(np.abs(v) - 0.6, 0) / 0.4
        alpha = du * du + dv * dv <= 1.0
    else:
        alpha = np.ones((side, side), dtype=bool)
    a = alpha.astype(np.uint16) * 255
    rgba = np.empty((side, side, 4), dtype=np.uint8)
    rgba[..., :3] = (bgr.astype(np.uint16) * a[..., None] + 127) // 255
    rgba[..., 3] = a
    sizes = [side]
    while sizes[-1] // 2 >= min_size and sizes[-1] % 2 == 0:
        sizes.append(sizes[-1] // 2)
    # power-of-two factors take OpenCV's integer box-filter path, which is exact
    return {(sw, sh): cv2.resize(rgba, (sw, sh), interpolation=cv2.INTER_AREA) for sw in sizes for sh in sizes}


def _level_size(sizes: list[int], extent: float) -> int:
    """The smallest size that is at least 0.8 x ``extent`` (minify <= 1.6x, magnify <= 1.25x), else the largest."""
    fits = [s for s in sizes if s >= 0.8 * extent]
    return min(fits) if fits else max(sizes)


def composite(img: np.ndarray, levels: Levels, box: np.ndarray) -> None:
    """Draw a texture's premultiplied BGRA ``levels`` onto ``img`` in place, filling ``box`` (xywh, subpixel)."""
    x, y, w, h = (float(v) for v in box)
    if not (w > 0 and h > 0):
        return
    x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
    x1, y1 = min(img.shape[1], math.ceil(x + w)), min(img.shape[0], math.ceil(y + h))
    if x1 <= x0 or y1 <= y0:
        return
    sizes = sorted({k[0] for k in levels})
    tex = levels[(_level_size(sizes, w), _level_size(sizes, h))]
    th, tw = tex.shape[:2]
    sx, sy = tw / w, th / h
    # destination pixel k (centre at x0 + k + 0.5 in frame coordinates) -> texture pixel (centre j + 0.5)
    inv = np.array([[sx, 0.0, (x0 + 0.5 - x) * sx - 0.5], [0.0, sy, (y0 + 0.5 - y) * sy - 0.5]])
    warped = cv2.warpAffine(tex, inv, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
    roi = img[y0:y1, x0:x1]
    keep = 255 - warped[..., 3:].astype(np.uint16)
    mixed = warped[..., :3].astype(np.uint16) + (roi.astype(np.uint16) * keep + 127) // 255
    roi[...] = np.minimum(mixed, 255).astype(np.uint8)


def object_texture(rng: np.random.Generator, size: int, *, photo: bool) -> tuple[np.ndarray, str]:
    """A ``(size, size, 3)`` BGR target/occluder texture (a vivid pattern, or half the time a tinted
    photo patch when ``photo``) and a few words describing it."""
    if photo and rng.random() < 0.5:
        return photo_patch(rng, size)
    kind = PATTERNS[int(rng.integers(len(PATTERNS)))]
    return pattern(rng, size, kind, palette(rng, int(rng.integers(2, 5)), vivid=True)), f"{kind} pattern"


def photo_patch(rng: np.random.Generator, size: int, names: tuple[str, ...] = PHOTO_NAMES) -> tuple[np.ndarray, str]:
    """A ``(size, size, 3)`` tinted square crop of one of the photos ``names``, and a few words about it."""
    name = names[int(rng.integers(len(names)))]
    src = load_photo(name)
    side = int(min(src.shape[:2]) * rng.uniform(0.2, 0.45))
    y0, x0 = int(rng.integers(0, src.shape[0] - side + 1)), int(rng.integers(0, src.shape[1] - side + 1))
    crop = cv2.resize(src[y0 : y0 + side, x0 : x0 + side], (size, size), interpolation=cv2.INTER_LINEAR_EXACT)
    return tint(crop, rng.uniform(0.6, 1.3, 3)), f"patch of the {name} photo"


def cells(rng: np.random.Generator, h: int, w: int, *, vivid: bool) -> np.ndarray:
    """A Voronoi mosaic ``(h, w, 3)`` BGR uint8: each pixel takes the colour of its nearest random site."""
    n = int(rng.integers(12, 40))
    sites = rng.uniform(0, 1, (n, 2)) * (w, h)
    cols = np.rint(palette(rng, n, vivid=vivid)).astype(np.uint8)
    ys, xs = np.arange(h) + 0.5, np.arange(w) + 0.5
    d2 = (xs[None, None, :] - sites[:, 0, None, None]) ** 2 + (ys[None, :, None] - sites[:, 1, None, None]) ** 2
    idx = np.argmin(d2, axis=0)  # (n, h, w) distances -> (h, w) nearest site
    img = cols[idx]
    edge = (np.diff(idx, axis=1, prepend=idx[:, :1]) != 0) | (np.diff(idx, axis=0, prepend=idx[:1]) != 0)
    img[edge] = img[edge] // 2  # dark cell borders
    return img


def flat_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """One vivid colour with a faint linear shading: a target with almost no texture."""
    col = palette(rng, 1, vivid=True)[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    dx, dy = unit_vector(rng)
    shade = 0.85 + 0.15 * (xx * dx + yy * dy + 1.0) / 2.0
    return np.rint(np.clip(col[None, None, :] * shade[..., None], 0, 255)).astype(np.uint8)


def _blocks(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[...] = np.rint(palette(rng, 1, vivid=False)[0]).astype(np.uint8)
    side = min(h, w)
    for _ in range(int(rng.integers(25, 60))):
        bw, bh = rng.uniform(0.05, 0.35, 2) * side
        x0, y0 = int(rng.uniform(-bw / 2, w)), int(rng.uniform(-bh / 2, h))
        col = palette(rng, 1, vivid=bool(rng.random() < 0.3))[0]
        img[max(y0, 0) : max(y0 + int(bh), 0), max(x0, 0) : max(x0 + int(bw), 0)] = np.rint(col).astype(np.uint8)
    return img


def _stripes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = unit_vector(rng)
    t = (xx * dx + yy * dy) / rng.uniform(6.0, 40.0)
    field = np.clip((np.abs(2.0 * (t - np.floor(t)) - 1.0) - 0.5) * rng.uniform(1.5, 6.0) + 0.5, 0, 1)
    return _colourise(field, palette(rng, int(rng.integers(2, 4)), vivid=bool(rng.random() < 0.5)))


def _flat(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    col = palette(rng, 1, vivid=False)[0]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = unit_vector(rng)
    shade = 0.9 + 0.1 * ((xx * dx + yy * dy) / max(h, w) + 1.0) / 2.0
    return np.rint(np.clip(col[None, None, :] * shade[..., None], 0, 255)).astype(np.uint8)


# Procedural background kinds (photo backgrounds are cut by photo_crop): name -> (rng, h, w) -> BGR uint8.
BACKGROUNDS: Final = {
    "procedural": background_noise,
    "blocks": _blocks,
    "stripes": _stripes,
    "flat": _flat,
    "cells": lambda rng, h, w: cells(rng, h, w, vivid=False),
}


def background(kind: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A ``(h, w, 3)`` BGR uint8 procedural background of ``kind`` (a key of :data:`BACKGROUNDS`)."""
    if kind not in BACKGROUNDS:
        raise ConfigError(f"unknown background {kind!r}; known: {', '.join(BACKGROUNDS)}")
    return np.asarray(BACKGROUNDS[kind](rng, h, w))
