"""Synthetic clips (:mod:`mfv2.synthetic`): written in the LaSOT layout, or rendered in memory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np

from mfv2.datasets import got10k, lasot, otb, vot
from mfv2.datasets.base import (
    Dataset,
    FrameRanges,
    TrackingSequence,
    box_lines,
    write_frames,
    write_generator_meta,
)
from mfv2.datasets.registry import DATASETS
from mfv2.errors import ConfigError
from mfv2.fileio import IMAGE_SUFFIXES, atomic_dir

if TYPE_CHECKING:
    from mfv2.synthetic import SyntheticSequence

__all__ = ["read_synthetic", "sequence_seed", "write_sequence", "write_benchmark", "LAYOUTS"]


LAYOUTS: Final = ("lasot", "got10k", "otb", "vot")
# The writer of each layout, in its layout module.
_WRITERS: dict[str, Callable[[list[Any], Path, str], None]] = {
    "lasot": lasot.write_synthetic, "got10k": got10k.write_synthetic, "otb": otb.write_synthetic,
    "vot": vot.write_synthetic,
}  # fmt: skip
# In-memory clips are smaller than the benchmark's by default: training renders many.
_IN_MEMORY: dict[str, Any] = dict(num_frames=100, height=240, width=320)


def sequence_seed(base_seed: int, index: int) -> int:
    """The generator seed of in-memory clip ``index``, derived from ``base_seed`` (independent streams per clip)."""
    return int(np.random.SeedSequence([base_seed, index]).generate_state(1)[0])


@DATASETS.register("synthetic")
def read_synthetic(root: Path | None, *, split: str | None = None, frame_ranges: FrameRanges | None = None,
                   num_sequences: int | None = None, seed: int | None = None, num_frames: int | None = None,
                   height: int | None = None, width: int | None = None, occlusion: bool | None = None,
                   distractors: int | None = None, clutter: int | None = None, out_of_view: bool | None = None,
                   backgrounds: str | None = None, family: str | None = None) -> Dataset:  # fmt: skip
    """The clips in ``root`` (as ``mfv2 synth`` writes them, in the LaSOT layout), or without ``root``
    ``num_sequences`` (default 16) clips rendered on demand, clip ``i`` from :func:`sequence_seed`.

    The other options are :class:`mfv2.synthetic.SyntheticConfig` fields of clips in memory (defaults:
    seed 0, 100 frames of 320x240, occlusion, one distractor). Use different seeds for training and
    held-out sets. With ``family`` (a training family of :mod:`mfv2.synthetic.families`) the clips are
    that family's, with only ``num_frames``, ``height`` and ``width`` taken from here; a held-out family
    is refused, so no training stage can see one.
    """
    given = {k: v for k, v in dict(num_frames=num_frames, height=height, width=width, occlusion=occlusion,
                                   distractors=distractors, clutter=clutter, out_of_view=out_of_view,
                                   backgrounds=backgrounds).items() if v is not None}  # fmt: skip
    if root is not None:
        if num_sequences is not None or seed is not None or given:
            raise ConfigError("synthetic clips on disk take no generator options; pass no root to render clips in memory")
        return lasot.lasot_layout(root, "synthetic", split, None, frame_ranges)
    from mfv2.synthetic import FAMILIES, TRAINING_FAMILIES, SyntheticConfig, family_config, make_sequence

    if family is not None:
        if family not in FAMILIES:
            raise ConfigError(f"unknown clip family {family!r}; training families: {', '.join(TRAINING_FAMILIES)}")
        if FAMILIES[family].held_out:
            raise ConfigError(f"clip family {family!r} is held out for evaluation and no training stage may use "
                              f"it; training families: {', '.join(TRAINING_FAMILIES)}")
        extra = sorted(set(given) - {"num_frames", "height", "width"})
        if extra:
            raise ConfigError(f"synthetic family {family!r} sets its own {', '.join(extra)}; pass only num_frames, "
                              "height and width")

    count, base = 16 if num_sequences is None else num_sequences, 0 if seed is None else seed
    options: dict[str, Any] = {**_IN_MEMORY, **given}
    if count < 1 or options["num_frames"] < 1:
        raise ConfigError("synthetic dataset: num_sequences and num_frames must be >= 1")
    SyntheticConfig(**options)  # a wrong value fails here, not in a DataLoader worker
    seeds = [sequence_seed(base, i) for i in range(count)]
    names = [f"synthetic-{s:04d}" for s in seeds]  # the generator's own names
    index = {n: i for i, n in enumerate(names)}

    def load(name: str) -> TrackingSequence:
        seed = seeds[index[name]]
        clip = make_sequence(family_config(family, seed=seed, num_frames=options["num_frames"],
                                           height=options["height"], width=options["width"])
                             if family is not None else SyntheticConfig(seed=seed, **options))
        gt = np.asarray(clip.boxes, dtype=np.float64).reshape(-1, 4)
        return TrackingSequence(name=name, dataset="synthetic", frame_paths=[], gt=gt,
                                visible=np.asarray(clip.visible, dtype=bool), render=clip.frame)  # fmt: skip

    return Dataset("synthetic", None, names, load)


def write_sequence(clip: SyntheticSequence, out_dir: str | os.PathLike[str], *,
                   layout: Literal["lasot", "frames"] = "lasot", ext: str = ".jpg", overwrite: bool = False) -> Path:
    """Write one clip atomically and return its resolved directory.

    ``lasot``: a LaSOT sequence folder (:func:`mfv2.datasets.lasot.write_clip`); ``frames``: the images
    ``00000001<ext>`` ... and ``groundtruth.txt`` directly in ``out_dir``. Both add ``synthetic.json``.

    Raises:
        ConfigError: bad layout or extension, or ``out_dir`` is not empty and ``overwrite`` is False.
    """
    if layout not in ("lasot", "frames"):
        raise ConfigError(f"layout must be 'lasot' or 'frames', got {layout!r}")
    ext = _check_ext(ext)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        if layout == "lasot":
            lasot.write_clip(clip, tmp, ext)
        else:
            write_frames(clip, tmp, "%08d", ext)
            (tmp / "groundtruth.txt").write_text(box_lines(clip.boxes))
            write_generator_meta(clip, tmp)
    return Path(out_dir).resolve()


def write_benchmark(out_dir: str | os.PathLike[str], layout: str = "lasot", *, num_sequences: int = 8,
                    num_frames: int = 300, seed: int = 0, ext: str = ".jpg", overwrite: bool = False,
                    **config_overrides: Any) -> Path:
    """Write the synthetic benchmark in ``layout`` atomically, through the layout module's writer.

    Every layout holds the same clips (:func:`mfv2.synthetic.benchmark_sequences`) and the same boxes
    (0-based, continuous, 1/100 px; on out-of-view frames the true, mostly outside box, with the flags
    saying the target is not visible), so a result scored by one toolkit compares with another's.

    Args:
        out_dir: the dataset folder (for ``vot``: a workspace's ``sequences`` folder).
        layout: ``lasot`` (``synthetic/synthetic-<k>/`` and ``testing_set.txt``), ``got10k``, ``otb`` or ``vot``.
        num_sequences, num_frames, seed: as :func:`mfv2.synthetic.benchmark_sequences`.
        ext: ``.jpg`` or ``.png`` (the VOT and got10k toolkits expect ``.jpg``).
        overwrite: replace a non-empty ``out_dir``.
        config_overrides: :class:`~mfv2.synthetic.SyntheticConfig` fields.

    Returns:
        The resolved ``out_dir``.

    Raises:
        ConfigError: unknown layout or extension, bad config, or ``out_dir`` not empty.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    ext = _check_ext(ext)
    from mfv2.synthetic import benchmark_sequences

    seqs = benchmark_sequences(num_sequences, num_frames, seed, **config_overrides)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        _WRITERS[layout](seqs, tmp, ext)  # the layout module's writer
    return Path(out_dir).resolve()


def _check_ext(ext: str) -> str:
    if ext.lower() not in IMAGE_SUFFIXES:
        raise ConfigError(f"image extension {ext!r} is not supported; use one of {', '.join(IMAGE_SUFFIXES)}")
    return ext.lower()
