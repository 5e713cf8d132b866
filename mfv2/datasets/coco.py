"""COCO as a tracking dataset: every non-crowd object annotation is a one-frame sequence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mfv2.datasets.base import Dataset, TrackingSequence, read_text
from mfv2.datasets.registry import DATASETS
from mfv2.errors import ConfigError

__all__ = ["read_coco"]


@DATASETS.register("coco")
def read_coco(root: Path, *, split: str = "train", version: str = "2017") -> Dataset:
    """COCO ``<root>/annotations/instances_<split><version>.json`` with images in ``<root>/<split><version>/``.

    Each annotation with ``iscrowd == 0`` becomes a sequence of one frame named ``coco_<id>`` (the
    sampler repeats the image for the templates and the search). Boxes are the annotation's ``bbox``
    (x, y, w, h pixels); the segmentation masks are not read.
    """
    ann_file = root / "annotations" / f"instances_{split}{version}.json"
    image_dir = root / f"{split}{version}"
    if not ann_file.is_file() or not image_dir.is_dir():
        raise ConfigError(f"COCO: expected {ann_file} and the image folder {image_dir}; point root at the COCO folder "
                          "holding annotations/ and train2017/")  # fmt: skip
    try:
        data = json.loads(read_text(ann_file, "COCO instances file"))
        files = {img["id"]: img["file_name"] for img in data["images"]}
        anns = [a for a in data["annotations"] if not a.get("iscrowd", 0)]
        image_files = {f"coco_{int(a['id'])}": files[a["image_id"]] for a in anns}
        boxes = {f"coco_{int(a['id'])}": np.asarray(a["bbox"], dtype=np.float64).reshape(1, 4) for a in anns}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"COCO: {ann_file} is not a COCO instances file ({type(e).__name__}: {e})") from e
    if not boxes:
        raise ConfigError(f"COCO: {ann_file} holds no non-crowd annotations")

    def load(name: str) -> TrackingSequence:
        gt = boxes[name]
        return TrackingSequence(name=name, dataset="coco", frame_paths=[image_dir / image_files[name]], gt=gt,
                                visible=np.asarray(np.isfinite(gt).all(axis=1)))  # fmt: skip

    return Dataset("coco", root, list(boxes), load, is_video=False)
