"""Files shipped with the package: the demo MixFormerV2 checkpoint trained by ``mfv2 distill --route demo_s``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

__all__ = ["ASSET_DIR", "DEMO_CHECKPOINT", "DEMO_CARD", "demo_checkpoint", "demo_description", "demo_model_for"]

ASSET_DIR: Final = Path(__file__).resolve().parent
DEMO_CHECKPOINT: Final = ASSET_DIR / "mixformerv2_demo_s.pt"
DEMO_CARD: Final = ASSET_DIR / "mixformerv2_demo_s.json"  # what the demo model is and how it scored held out


def demo_description() -> str:
    """One line saying what the shipped demo model is: size, training data, held-out accuracy against MIL.

    Read from ``mixformerv2_demo_s.json`` next to the checkpoint (figures of
    ``benchmarks/demo_model/heldout.py``), so no user mistakes it for the released MixFormerV2-S.
    """
    import json

    try:
        card = json.loads(DEMO_CARD.read_text())
        held = "; ".join(f"{name} AUC {r['auc']:.1f} vs MIL {r['mil_auc']:.1f}" for name, r in card["held_out"].items())
        return (f"the demo model ({card['size']}; trained on {card['trained_on']}; not MixFormerV2-S; "
                f"on clip families it never saw: {held})")
    except (OSError, ValueError, KeyError, TypeError):
        return "the demo model (a tiny MixFormerV2 trained on synthetic clips only; not MixFormerV2-S)"


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
        "no --model or --checkpoint: using %s, %s", demo_description(), demo.name
    )
    return demo
