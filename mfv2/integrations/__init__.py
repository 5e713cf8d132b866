"""mfv2 trackers inside the evaluation toolkits people already use: the VOT toolkit (:mod:`.vot`) and the
GOT-10k toolkit (:mod:`.got10k`). Each module imports its toolkit only when used."""

from __future__ import annotations

__all__: list[str] = []
