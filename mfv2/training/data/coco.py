"""COCO as a tracking dataset: every non-crowd object annotation is a one-frame sequence."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from mfv2.errors import ConfigError
from mfv2.training.data.datasets import DATASETS, SequenceInfo, TrackingDataset, read_image_rgb

__all__ = ["Coco"]


@DATASETS.register("coco")
class Coco(TrackingDataset):
    """COCO ``<root>/annotations/instances_<split><version>.json`` with images in ``<root>/<split><version>/``.

    Each annotation with ``iscrowd == 0`` becomes a sequence of one frame (the sampler repeats the image
    for the templates and the search). Boxes are the annotation's ``bbox`` (x, y, w, h pixels); the
    segmentation masks are not read.
    """

    name = "coco"
    is_video = False

    def __init__(self, root: str | os.PathLike[str], split: str = "train", version: str = "2017") -> None:
        super().__init__()
        self.root = Path(root)
        ann_file = self.root / "annotations" / f"instances_{split}{version}.json"
        self.image_dir = self.root / f"{split}{version}"
        if not ann_file.is_file() or not self.image_dir.is_dir():
            raise ConfigError(
                f"COCO: expected {ann_file} and the image folder {self.image_dir}; point root at the COCO folder "
                "holding annotations/ and train2017/"
            )
        try:
            data = json.loads(ann_file.read_text())
            files = {img["id"]: img["file_name"] for img in data["images"]}
            anns = [a for a in data["annotations"] if not a.get("iscrowd", 0)]
            self.image_files = [files[a["image_id"]] for a in anns]
            boxes = np.asarray([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"COCO: {ann_file} is not a COCO instances file ({type(e).__name__}: {e})") from e
        if not len(boxes):
            raise ConfigError(f"COCO: {ann_file} holds no non-crowd annotations")
        self.boxes = boxes
        self.ann_ids = [int(a["id"]) for a in anns]

    def __len__(self) -> int:
        return len(self.boxes)

    def sequence_name(self, index: int) -> str:
        return f"coco_{self.ann_ids[index]}"

    def _load_info(self, index: int) -> SequenceInfo:
        box = self.boxes[index : index + 1]
        return SequenceInfo(box.copy(), (box[:, 2] > 0) & (box[:, 3] > 0))

    def _frame(self, index: int, frame_id: int) -> np.ndarray:
        return read_image_rgb(self.image_dir / self.image_files[index])
