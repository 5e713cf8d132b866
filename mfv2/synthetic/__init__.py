"""Deterministic synthetic tracking clips with ground truth, for tests, calibration, benchmarks and training.

:mod:`~mfv2.synthetic.clip` makes one clip from a :class:`SyntheticConfig`; :mod:`~mfv2.synthetic.families`
names seeded presets of it (and the held-out ones no training stage sees); :mod:`~mfv2.synthetic.stills`
makes still-image pairs from photographs; :mod:`mfv2.datasets.synthetic` writes clips to disk in
each dataset layout.
"""

from mfv2.synthetic.clip import SyntheticConfig, SyntheticSequence, benchmark_sequences, make_sequence
from mfv2.synthetic.families import (
    FAMILIES,
    HELD_OUT_FAMILIES,
    TRAINING_FAMILIES,
    Family,
    family_config,
    family_sequences,
)

__all__ = [
    "SyntheticConfig",
    "SyntheticSequence",
    "make_sequence",
    "benchmark_sequences",
    "Family",
    "FAMILIES",
    "TRAINING_FAMILIES",
    "HELD_OUT_FAMILIES",
    "family_config",
    "family_sequences",
]
