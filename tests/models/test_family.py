"""The model-family registry: a second family builds, saves, detects and loads through the same factory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from mfv2.config import ModelConfig  # noqa: E402
from mfv2.errors import ConfigError  # noqa: E402
from mfv2.models import MixFormerV2, build_model, read_checkpoint, save_native, save_official  # noqa: E402
from mfv2.models import family as families  # noqa: E402
from mfv2.registry import Registry  # noqa: E402


@dataclass(frozen=True)
class ToyConfig:
    name: str = "toy"
    width: int = 3

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToyConfig:
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "width": self.width}


def _check(sd: Mapping[str, Any], cfg: ToyConfig, source: str) -> None:
    if tuple(sd["toy.weight"].shape) != (cfg.width, cfg.width):
        raise ConfigError(f"{source} does not fit toy-{cfg.name}")


@pytest.fixture
def toy_family(monkeypatch: pytest.MonkeyPatch) -> families.ModelFamily:
    monkeypatch.setattr(families.FAMILIES, "_items", dict(families.FAMILIES._items))  # restored after the test
    variants: Registry[ToyConfig] = Registry("toy variant")
    variants.add("toy", ToyConfig())
    return families.register_family(
        families.ModelFamily(
            name="toy",
            config_type=ToyConfig,
            variants=variants,
            default_variant="toy",
            build=lambda cfg, _drop: torch.nn.ModuleDict({"toy": torch.nn.Linear(cfg.width, cfg.width, bias=False)}),
            claims=lambda sd: set(sd) == {"toy.weight"},
            detect=lambda sd, _source: ToyConfig(width=sd["toy.weight"].shape[0]),
            check_state_dict=_check,
        )
    )


def test_a_second_family_goes_through_the_factory_and_the_checkpoint_reader(toy_family: Any, tmp_path: Path) -> None:
    toy = build_model("toy")
    assert isinstance(toy, torch.nn.ModuleDict) and not toy.training
    assert isinstance(build_model(), MixFormerV2)  # the first family stays the default
    assert isinstance(build_model(ModelConfig.from_dict({"name": "t", "depth": 1, "embed_dim": 64, "num_heads": 1})), MixFormerV2)

    native = save_native(toy.state_dict(), ToyConfig(), tmp_path / "toy.pt")
    ckpt = read_checkpoint(native)
    assert (ckpt.family, ckpt.config, ckpt.format) == ("toy", ToyConfig(), "native")
    official = save_official(build_model(ToyConfig(width=5)).state_dict(), tmp_path / "toy5.pth.tar")
    assert read_checkpoint(official).config == ToyConfig(width=5)  # detected by the family that claims the keys
    loaded = build_model(checkpoint=official)
    assert torch.equal(loaded.state_dict()["toy.weight"], read_checkpoint(official).state_dict["toy.weight"])
    with pytest.raises(ConfigError, match="does not fit toy-toy"):
        build_model("toy", official)


def test_registering_a_family_twice_or_naming_an_unknown_one_is_an_error(toy_family: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model family 'toy' is already registered"):
        families.register_family(toy_family)
    with pytest.raises(ConfigError, match="unknown model variant 'nope'; known: mixformerv2: S, B.*; toy: toy"):
        build_model("nope")
    torch.save({"head.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="holds no model of a known family"):
        read_checkpoint(tmp_path / "other.pt")


def test_native_checkpoints_name_their_family_and_old_ones_read_as_mixformerv2(
    tiny_model: Any, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    model = tiny_model
    raw = torch.load(tiny_checkpoint, weights_only=True)
    assert raw["family"] == "mixformerv2"
    del raw["family"]  # as written before families existed
    torch.save(raw, tmp_path / "old.pt")
    ckpt = read_checkpoint(tmp_path / "old.pt")
    assert (ckpt.family, ckpt.config) == ("mixformerv2", model.config)
