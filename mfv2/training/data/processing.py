"""Turns sampled frames into network inputs: joint augmentation, jitter, crops, per-crop augmentation.

The steps of the official MixFormerV2 processing (pytracking's STARK processing), with two fixes:

1. joint transform on the full frames, one roll per sample: grayscale (p 0.05), horizontal flip (p 0.5);
2. jitter of the box the crop is centred on: ``wh' = wh * exp(N(0,1) * scale_jitter)``,
   ``centre' = centre + sqrt(w'h') * centre_jitter * (U - 0.5)`` (search 0.5 / 4.5, templates none);
3. square crop of side ``ceil(sqrt(w'h') * factor)`` around the jittered box, zero padding, bilinear
   resize to the model's input size;
4. the ground-truth box in crop coordinates, normalised by the crop size;
5. a sample whose crop is empty or entirely padding (also at patch resolution) is rejected, and the
   sampler draws another;
6. per crop: brightness ``x * U[0.8, 1.2]`` (clamped), optional flip, ImageNet normalisation.

Fixes (see ``spec`` quirk 7 of the official code): the crop maps pixel edges exactly (the official box
formula ignores the rounding of the crop corner and uses ``(out - 1) / 2`` as the centre, a bias of up
to half a pixel), padding does not drop the image's last row/column, and the per-crop flip defaults to
off because flipping the search crop independently of the templates mirrors the target between them;
the joint flip already provides the augmentation. Validation keeps the jitter and skips the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Crop",
    "ProcessingSettings",
    "TrackingProcessing",
    "jitter_box",
    "crop_around",
    "normalize",
]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class Crop:
    """A square crop resized to ``image.shape[0]``.

    ``mask`` (S, S) bool is True where the crop lies outside the frame (padding); ``x0, y0`` is the
    crop's top-left corner in frame pixels and ``scale`` = output size / crop side.
    """

    image: np.ndarray
    mask: np.ndarray
    x0: float
    y0: float
    scale: float

    def box_in_crop(self, box: np.ndarray) -> np.ndarray:
        """A frame box (x, y, w, h) in crop pixels."""
        x, y, w, h = box
        return np.array([(x - self.x0) * self.scale, (y - self.y0) * self.scale, w * self.scale, h * self.scale],
                        dtype=np.float32)


def jitter_box(box: np.ndarray, scale_jitter: float, centre_jitter: float, rng: np.random.Generator) -> np.ndarray:
    """Randomly rescale and shift a box (x, y, w, h) as the official processing does."""
    size = box[2:4] * np.exp(rng.standard_normal(2) * scale_jitter)
    max_offset = math.sqrt(max(float(size[0] * size[1]), 0.0)) * centre_jitter
    centre = box[0:2] + 0.5 * box[2:4] + max_offset * (rng.random(2) - 0.5)
    return np.concatenate([centre - 0.5 * size, size]).astype(np.float64)


def crop_around(image: np.ndarray, box: np.ndarray, factor: float, output_size: int) -> Crop | None:
    """Square crop of side ``ceil(sqrt(w*h) * factor)`` centred on ``box``, resized to ``output_size``.

    Args:
        image: (H, W, 3) uint8.
        box: (x, y, w, h) pixels; the crop is centred on its centre.
        factor: crop side over the box's geometric-mean side.
        output_size: side of the returned crop.

    Returns:
        The :class:`Crop`, or ``None`` when the box is too small (crop side < 1) or not finite.
    """
    x, y, w, h = (float(v) for v in box)
    area = w * h
    if not (np.isfinite([x, y, w, h]).all() and area > 0):
        return None
    side = math.ceil(math.sqrt(area) * factor)
    if side < 1:
        return None
    x0 = round(x + 0.5 * w - 0.5 * side)
    y0 = round(y + 0.5 * h - 0.5 * side)
    s = output_size / side
    # Pixel centres: out (j + 0.5) <-> frame x0 + (j + 0.5) / s, i.e. out = s * src + s * (0.5 - x0) - 0.5.
    matrix = np.array([[s, 0.0, s * (0.5 - x0) - 0.5], [0.0, s, s * (0.5 - y0) - 0.5]])
    crop = cv2.warpAffine(image, matrix, (output_size, output_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    centres = (np.arange(output_size) + 0.5) / s
    H, W = image.shape[:2]
    inside_x = (x0 + centres >= 0) & (x0 + centres < W)
    inside_y = (y0 + centres >= 0) & (y0 + centres < H)
    mask = ~(inside_y[:, None] & inside_x[None, :])
    return Crop(crop, mask, float(x0), float(y0), s)


def normalize(crop: np.ndarray) -> np.ndarray:
    """(S, S, 3) float32 RGB in [0, 1] -> (3, S, S) float32 with ImageNet mean/std."""
    return np.ascontiguousarray(((crop - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1), dtype=np.float32)


@dataclass(frozen=True)
class ProcessingSettings:
    """Sizes, factors and augmentation strengths of :class:`TrackingProcessing`."""

    template_size: int = 112
    search_size: int = 224
    template_factor: float = 2.0
    search_factor: float = 4.5
    search_scale_jitter: float = 0.5
    search_centre_jitter: float = 4.5
    template_scale_jitter: float = 0.0
    template_centre_jitter: float = 0.0
    grayscale_prob: float = 0.05
    joint_flip_prob: float = 0.5
    crop_flip_prob: float = 0.0
    brightness_jitter: float = 0.2
    mask_stride: int = 16


class TrackingProcessing:
    """Callable that makes one training sample from two template frames and one search frame.

    Args:
        settings: sizes, factors and augmentation strengths.
        augment: False for validation (jitter only, as the official validation processing).
    """

    def __init__(self, settings: ProcessingSettings, *, augment: bool = True) -> None:
        self.settings = settings
        self.augment = augment

    def _joint(
        self, frames: list[np.ndarray], boxes: list[np.ndarray], rng: np.random.Generator
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        st = self.settings
        gray = rng.random() < st.grayscale_prob
        flip = rng.random() < st.joint_flip_prob
        out_frames, out_boxes = [], []
        for img, box in zip(frames, boxes):
            box = np.asarray(box, dtype=np.float64).copy()
            if gray:
                img = np.repeat(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
            if flip:
                img = np.ascontiguousarray(img[:, ::-1])
                box[0] = img.shape[1] - box[0] - box[2]
            out_frames.append(img)
            out_boxes.append(box)
        return out_frames, out_boxes

    def _crop(
        self, img: np.ndarray, box: np.ndarray, template: bool, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray] | None:
        st = self.settings
        if template:
            factor, size, sj, cj = st.template_factor, st.template_size, st.template_scale_jitter, st.template_centre_jitter
        else:
            factor, size, sj, cj = st.search_factor, st.search_size, st.search_scale_jitter, st.search_centre_jitter
        crop = crop_around(img, jitter_box(box, sj, cj, rng), factor, size)
        if crop is None or crop.mask.all() or crop.mask[:: st.mask_stride, :: st.mask_stride].all():
            return None
        target = crop.box_in_crop(box) / size
        pixels = crop.image.astype(np.float32) / 255.0
        if self.augment:
            b = st.brightness_jitter
            pixels = np.clip(pixels * rng.uniform(max(0.0, 1.0 - b), 1.0 + b), 0.0, 1.0)
            if rng.random() < st.crop_flip_prob:
                pixels = pixels[:, ::-1]
                target[0] = 1.0 - target[0] - target[2]
        return normalize(pixels), target.astype(np.float32)

    def __call__(
        self,
        template_frames: list[np.ndarray],
        template_boxes: list[np.ndarray],
        search_frame: np.ndarray,
        search_box: np.ndarray,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray] | None:
        """Crops and targets of one sample, or ``None`` if a crop is unusable (the sampler resamples).

        Args:
            template_frames: the template and the online template frames, RGB uint8.
            template_boxes: their boxes (x, y, w, h) pixels.
            search_frame: the search frame, RGB uint8.
            search_box: the target box in it (x, y, w, h) pixels.
            rng: the sample's random generator.

        Returns:
            ``template``, ``online_template`` (3, Z, Z) and ``search`` (3, X, X) float32 normalised RGB;
            ``search_box`` (4,) float32 target (x, y, w, h) normalised to the search crop; ``template_box``
            (4,) the same for the template crop.
        """
        frames = [*template_frames, search_frame]
        boxes = [*template_boxes, search_box]
        if self.augment:
            frames, boxes = self._joint(frames, boxes, rng)
        else:
            boxes = [np.asarray(b, dtype=np.float64) for b in boxes]
        out = []
        for i, (img, box) in enumerate(zip(frames, boxes)):
            crop = self._crop(img, box, i < 2, rng)
            if crop is None:
                return None
            out.append(crop)
        (t, t_box), (ot, _), (s, s_box) = out
        return {"template": t, "online_template": ot, "search": s, "search_box": s_box, "template_box": t_box}
