"""MVT checkpoints: the official training file (``['net']`` beside a pickled ``settings``), strict keys, native format."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from mfv2.config import MVTConfig  # noqa: E402
from mfv2.errors import ConfigError  # noqa: E402
from mfv2.models import MVT, build_model, read_checkpoint, save_native  # noqa: E402


class Settings:
    """Stands for the ``settings`` object the official MVT trainer pickles into its checkpoints."""

    def __init__(self, marker: Path) -> None:
        self.script_name = "mobilevit_track"
        self.hook = _Payload(marker)


class _Payload:
    """Pickles to ``open(path, 'w')``: plain pickle would create the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def weights():
    torch.manual_seed(0)
    return MVT().state_dict()


def _official(path: Path, sd, marker: Path) -> Path:
    torch.save({"epoch": 100, "actor_type": "MobileViTTrackActor", "net_type": "MobileViT_Track", "net": sd,
                "net_info": None, "constructor": None, "optimizer": {}, "stats": {}, "settings": Settings(marker)}, path)  # fmt: skip
    return path


def test_official_training_file_loads_strictly_without_running_its_pickles(tmp_path, weights):
    marker = tmp_path / "pwned"
    path = _official(tmp_path / "MobileViT_Track_ep0100.pth.tar", weights, marker)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # the settings object: not a weights-only file
    ckpt = read_checkpoint(path)
    assert (ckpt.family, ckpt.format, ckpt.config, ckpt.meta["epoch"]) == ("mvt", "official", MVTConfig(), 100)
    model = build_model(checkpoint=path)
    assert isinstance(model, MVT) and not model.training
    assert not marker.exists()
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def test_the_payload_would_run_under_plain_pickle(tmp_path, weights):
    """Guards the test above: the crafted file does run code when loaded naively."""
    marker = tmp_path / "pwned"
    torch.load(_official(tmp_path / "o.pth.tar", weights, marker), weights_only=False)
    assert marker.exists()


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path, weights):
    sd = dict(weights)
    del sd["backbone.layer_4.1.global_rep.4.bias"]
    sd["box_head.extra.weight"] = torch.zeros(1)
    sd["box_head.conv5_size.bias"] = torch.zeros(3)
    path = tmp_path / "bad.pth.tar"
    torch.save({"net": sd}, path)
    with pytest.raises(ConfigError) as err:
        build_model(checkpoint=path)
    text = str(err.value)
    assert "1 missing: backbone.layer_4.1.global_rep.4.bias" in text
    assert "1 unexpected: box_head.extra.weight" in text
    assert "box_head.conv5_size.bias (3,) != (2,)" in text


def test_ddp_prefix_and_native_round_trip(tmp_path, weights):
    torch.save({"net": {f"module.{k}": v for k, v in weights.items()}}, tmp_path / "ddp.pth.tar")
    assert read_checkpoint(tmp_path / "ddp.pth.tar").family == "mvt"
    save_native(weights, MVTConfig(), tmp_path / "mvt.pt")
    torch.load(tmp_path / "mvt.pt", weights_only=True)  # the native format holds plain data only
    ckpt = read_checkpoint(tmp_path / "mvt.pt")
    assert (ckpt.family, ckpt.format, ckpt.config) == ("mvt", "native", MVTConfig())
    assert isinstance(build_model(checkpoint=tmp_path / "mvt.pt"), MVT)


def test_a_mixformer_variant_for_an_mvt_file_is_refused(tmp_path, weights):
    torch.save({"net": weights}, tmp_path / "mvt.pth.tar")
    with pytest.raises(ConfigError, match="MixFormerV2-S"):
        build_model("S", tmp_path / "mvt.pth.tar")
