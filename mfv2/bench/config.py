"""What ``mfv2 bench`` runs: the options of the benchmark matrix and the precisions worth timing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mfv2.artifacts.formats import GRAPH_SETS
from mfv2.config import Config
from mfv2.errors import ConfigError

__all__ = ["BenchConfig", "default_precisions", "MODES", "DEFAULT_MODES", "BASELINE"]

MODES: tuple[str, ...] = ("model", "tracker", "video")
DEFAULT_MODES: tuple[str, ...] = ("model", "tracker")
BASELINE = ("torch", "fp32", "full")


@dataclass(frozen=True)
class BenchConfig(Config):
    """What to benchmark and how long.

    ``backends``/``precisions`` None mean every installed backend at its sensible CPU precisions
    (:func:`default_precisions`); explicit lists run the full cross product and show what fails.
    ``iters`` and ``duration`` bound each model-only row (whichever comes first); ``frames`` is the
    tracker clip length. ``rounds`` > 1 runs the whole matrix again, interleaved, and pools samples.
    ``device``, ``cuda_graphs`` and ``compile`` apply to the torch rows (options of the torch backend):
    ``cuda_graphs=(False, True)`` runs each torch row eagerly and replayed from a CUDA graph.
    ``video`` mode tracks the first ``frames`` frames of the file ``video`` end to end (decode on a
    background thread + tracker). ``background_load`` N > 0 runs every row twice: on the machine as it
    is, and beside N busy-looping processes the bench starts and stops itself. ``auto`` also runs the
    ``backend="auto"`` calibration on each export and reports its pick.
    """

    variants: tuple[str, ...] = ("S",)
    model: str | None = None
    checkpoint: str | None = None
    backends: tuple[str, ...] | None = None
    precisions: tuple[str, ...] | None = None
    graphs: tuple[str, ...] = tuple(GRAPH_SETS)
    threads: tuple[int, ...] = ()
    modes: tuple[str, ...] = DEFAULT_MODES
    warmup: int = 10
    iters: int | None = 200
    duration: float | None = 10.0
    frames: int = 300
    rounds: int = 1
    cache_dir: str | None = None
    timeout: float = 1800.0
    probe_duration: float = 0.5
    probe_sizes: tuple[int, ...] = (1024, 2048)
    device: str = "cpu"
    cuda_graphs: tuple[bool, ...] = (False,)
    compile: str | None = None
    video: str | None = None
    background_load: int = 0
    auto: bool = True

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in MODES] + [g for g in self.graphs if g not in GRAPH_SETS]
        if bad:
            raise ConfigError(f"unknown mode/graph {', '.join(bad)}; modes: {', '.join(MODES)}; graphs: {', '.join(GRAPH_SETS)}")
        if self.frames < 2 or self.rounds < 1 or self.warmup < 0 or any(t < 1 for t in self.threads):
            raise ConfigError("frames must be >= 2, rounds >= 1, warmup >= 0 and threads >= 1")
        if "video" in self.modes and not (self.video and Path(self.video).is_file()):
            got = f"{self.video} is not a file" if self.video else "none given"
            raise ConfigError(f"video mode needs a video file ({got}): pass --video FILE, e.g. an H.264 .mp4")
        if self.background_load < 0:
            raise ConfigError(f"background_load must be >= 0 busy processes, got {self.background_load}")
        if self.iters is None and self.duration is None:
            raise ConfigError("give iters or duration to bound each model-only row")


def default_precisions(backend: str, flags: Sequence[str]) -> tuple[str, ...]:
    """The precisions worth timing on this CPU: bf16 only with AVX512-BF16/AMX, no fp16 on CPU."""
    bf16 = ("bf16",) if {"avx512_bf16", "amx_bf16"} & set(flags) else ()
    return {
        "torch": ("fp32", *bf16),
        "onnxruntime": ("fp32", "int8"),
        "openvino": ("fp32", *bf16, "int8"),
        "tensorrt": ("fp32", "fp16", "int8"),
    }.get(backend, ("fp32",))
