"""Model families, the ``build_model`` factory and the checkpoint formats (needs torch).

Every family package is imported here, explicitly, and registers itself (:mod:`mfv2.models.family`).
"""

from mfv2.models.checkpoint import read_checkpoint, save_native, save_official
from mfv2.models.factory import build_model
from mfv2.models.family import ModelFamily, get_family, register_family
from mfv2.models.mixformerv2 import MixFormerV2  # importing a family package registers the family
from mfv2.models.mvt import MVT

__all__ = [
    "MixFormerV2",
    "MVT",
    "build_model",
    "read_checkpoint",
    "save_native",
    "save_official",
    "ModelFamily",
    "register_family",
    "get_family",
]
