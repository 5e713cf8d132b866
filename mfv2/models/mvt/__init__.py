"""The MVT family: MobileViT-S backbone with Siam-MoViT blocks, pixel-wise correlation, centre head."""

from mfv2.config import MVT_VARIANTS, MVTConfig
from mfv2.models.family import ModelFamily, register_family
from mfv2.models.mvt import weights
from mfv2.models.mvt.model import MVT, STEM_CHANNELS

__all__ = ["MVT", "STEM_CHANNELS", "FAMILY"]

FAMILY = register_family(
    ModelFamily(
        name="mvt",
        config_type=MVTConfig,
        variants=MVT_VARIANTS,
        default_variant="MVT",
        build=lambda cfg, drop_path_rate: MVT(cfg),  # no stochastic depth in MVT
        claims=weights.claims,
        detect=weights.detect_config,
        check_state_dict=weights.check_state_dict,
    )
)
