"""The MixFormerV2 family: the one-stream ViT tracker, its parts, and the MixViT teacher (``mixvit``)."""

from mfv2.config import VARIANTS, ModelConfig
from mfv2.models.family import ModelFamily, register_family
from mfv2.models.mixformerv2 import weights
from mfv2.models.mixformerv2.model import NUM_PRED_TOKENS, Backbone, MixFormerV2

__all__ = ["MixFormerV2", "Backbone", "NUM_PRED_TOKENS", "FAMILY"]

FAMILY = register_family(
    ModelFamily(
        name="mixformerv2",
        config_type=ModelConfig,
        variants=VARIANTS,
        default_variant="S",
        build=MixFormerV2,
        claims=weights.claims,
        detect=weights.detect_config,
        check_state_dict=weights.check_state_dict,
        resize=weights.resize_inputs,
    )
)
