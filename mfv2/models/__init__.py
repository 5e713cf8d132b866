"""The MixFormerV2 network, its parts and its checkpoint formats (needs torch)."""

from mfv2.models.checkpoint import read_checkpoint, save_native, save_official
from mfv2.models.mixformerv2 import MixFormerV2, build_model

__all__ = ["MixFormerV2", "build_model", "read_checkpoint", "save_native", "save_official"]
