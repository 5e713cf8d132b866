"""MVT (MobileViT-S backbone with Siam-MoViT blocks, pixel-wise correlation, centre head)."""

from mfv2.models.mvt.model import MVT, STEM_CHANNELS

__all__ = ["MVT", "STEM_CHANNELS"]
