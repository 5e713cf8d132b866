"""Files shipped with the package: the demo MixFormerV2 checkpoint trained by ``mfv2 distill --route demo_s``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

__all__ = ["ASSET_DIR", "DEMO_CHECKPOINT", "demo_checkpoint", "demo_model_for"]

ASSET_DIR: Final = Path(__file__).resolve().parent
DEMO_CHECKPOINT: Final = ASSET_DIR / "mixformerv2_demo_s.pt"


def demo_checkpoint() -> Path | None:
    """The demo checkpoint (an mfv2 native file for ``build_model``), or ``None`` if it is not installed.

    It is a small MixFormerV2 trained on synthetic clips only: good for trying the tools without
    downloads, not for real videos. ``mfv2/assets/README.md`` says how it was made.
    """
    return DEMO_CHECKPOINT if DEMO_CHECKPOINT.is_file() else None


def demo_model_for(command: str, missing: str) -> Path:
    """The demo checkpoint for a ``command`` given no model (logged as a warning).

    Raises:
        ConfigError: with the message ``missing`` when the demo model is not installed.
    """
    from mfv2.errors import ConfigError

    demo = demo_checkpoint()
    if demo is None:
        raise ConfigError(missing)
    logging.getLogger(f"mfv2.commands.{command}").warning(
        "no --model or --checkpoint: using the demo model %s (trained on synthetic clips only)", demo.name
    )
    return demo
