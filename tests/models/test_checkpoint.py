"""Checkpoint formats: official layout, native round trip, detection, errors, pickled code."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from mfv2.cli import main
from mfv2.config import VARIANTS
from mfv2.errors import ConfigError
from mfv2.models import build_model, read_checkpoint, save_native, save_official
from mfv2.models.mixformerv2.weights import detect_config, expected_shapes


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_native_round_trip(tmp_path, tiny_model):
    path = save_native(tiny_model.state_dict(), tiny_model.config, tmp_path / "m.pt", {"note": "x"})
    # The native format needs no pickled classes.
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "mfv2" and raw["config"]["name"] == "tiny"
    loaded = build_model(checkpoint=path)
    assert loaded.config == tiny_model.config
    assert _same_weights(loaded, tiny_model)
    assert read_checkpoint(path).meta == {"note": "x"}


def test_official_layout_with_ddp_prefix(tmp_path, tiny_model):
    path = tmp_path / "official.pth.tar"
    torch.save({"net": {f"module.{k}": v for k, v in tiny_model.state_dict().items()}, "epoch": 40}, path)
    ckpt = read_checkpoint(path)
    assert ckpt.format == "official" and ckpt.meta["epoch"] == 40
    assert _same_weights(build_model(None, path), tiny_model)


def test_a_loaded_model_is_the_file_in_the_model_s_own_dtypes_and_initialises_nothing(tmp_path, tiny_model, monkeypatch):
    """build_model(checkpoint=...) builds on the meta device and takes the file's tensors: no random init runs,
    an fp16 file gives an fp32 model (as copying into a fresh one did), requires_grad is the module's."""
    half = {k: v.half() if v.is_floating_point() else v for k, v in tiny_model.state_dict().items()}
    path = tmp_path / "half.pth.tar"
    torch.save({"net": half}, path)
    calls = []
    real = torch.nn.init.trunc_normal_
    monkeypatch.setattr(torch.nn.init, "trunc_normal_", lambda t, *a, **k: (calls.append(t.device.type), real(t, *a, **k))[1])
    loaded = build_model(None, path)
    assert set(calls) <= {"meta"}  # initialisers ran only on shapes
    assert not any(t.is_meta for t in (*loaded.parameters(), *loaded.buffers()))
    for k, v in loaded.state_dict().items():
        assert v.dtype == tiny_model.state_dict()[k].dtype and torch.equal(v, half[k].to(v.dtype)), k
    assert [p.requires_grad for p in loaded.parameters()] == [p.requires_grad for p in tiny_model.parameters()]


def test_save_official_loads_as_official(tmp_path, tiny_model):
    path = save_official(tiny_model.state_dict(), tmp_path / "o.pth.tar")
    assert set(torch.load(path, weights_only=True)) == {"net"}
    assert read_checkpoint(path).format == "official"


@pytest.mark.parametrize("variant", ["S", "B", "tiny", "S8"])
def test_detect_config_from_shapes(variant):
    cfg = VARIANTS.get(variant)
    shapes = {k: torch.empty(s, device="meta") for k, s in expected_shapes(cfg).items()}
    assert detect_config(shapes) == cfg


def test_detect_from_file_and_custom_name(tmp_path):
    cfg = VARIANTS.get("tiny").replace(name="mine", depth=3, template_size=48)
    model = build_model(cfg)
    path = tmp_path / "c.pth.tar"
    torch.save({"net": model.state_dict()}, path)
    detected = build_model(None, path).config
    assert detected.replace(name="mine") == cfg and detected.name == "custom"


def test_wrong_variant_names_the_differences(tmp_path, tiny_model):
    path = tmp_path / "tiny.pth.tar"
    torch.save({"net": tiny_model.state_dict()}, path)
    with pytest.raises(ConfigError) as err:
        build_model("S", path)
    msg = str(err.value)
    assert "does not fit MixFormerV2-S" in msg
    assert "mis-shaped" in msg and "backbone.patch_embed.proj.weight (128, 3, 16, 16) != (768, 3, 16, 16)" in msg
    assert "missing: backbone.blocks.2." in msg
    assert "looks like MixFormerV2-tiny" in msg
    assert "\n" not in msg


def test_missing_and_unexpected_keys(tmp_path, tiny_model):
    sd = dict(tiny_model.state_dict())
    sd.pop("score_head.layers.1.bias")
    sd["backbone.extra"] = torch.zeros(1)
    path = tmp_path / "bad.pth.tar"
    torch.save({"net": sd}, path)
    with pytest.raises(ConfigError, match=r"1 missing: score_head.layers.1.bias; 1 unexpected: backbone.extra"):
        build_model("tiny", path)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(junk)
    other = tmp_path / "other.pth"
    torch.save({"model": {"x": torch.zeros(1)}}, other)
    with pytest.raises(ConfigError, match="expected a dict with 'net'"):
        read_checkpoint(other)


class Settings:
    """Stands for the project objects official training checkpoints pickle."""

    def __init__(self) -> None:
        self.script_name = "mixformer2_vit"


class _Payload:
    """Pickles to a call of ``open(path, 'w')``: loading it with plain pickle creates a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _training_checkpoint(tmp_path, model) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "MixFormer_ep0040.pth.tar"
    torch.save(
        {"epoch": 40, "net_type": "MixFormer", "net": model.state_dict(), "settings": Settings(),
         "stats": {"train": _Payload(marker)}},
        path,
    )
    return path, marker


def test_training_checkpoint_loads_without_running_pickled_code(tmp_path, tiny_model):
    path, marker = _training_checkpoint(tmp_path, tiny_model)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    loaded = build_model(None, path)
    assert not marker.exists()
    assert _same_weights(loaded, tiny_model)


def test_the_payload_would_run_under_plain_pickle(tmp_path, tiny_model):
    """Guards the test above: the crafted file really does execute code when loaded naively."""
    path, marker = _training_checkpoint(tmp_path, tiny_model)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_convert_command(tmp_path, tiny_model, capsys):
    src = tmp_path / "o.pth.tar"
    torch.save({"net": tiny_model.state_dict()}, src)
    assert main(["convert", str(src), str(tmp_path / "n.pt")]) == 0
    assert read_checkpoint(tmp_path / "n.pt").format == "native"
    assert main(["convert", str(tmp_path / "n.pt"), str(tmp_path / "back.pth.tar"), "--official"]) == 0
    assert _same_weights(build_model(None, tmp_path / "back.pth.tar"), tiny_model)
    assert main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mfv2: error: checkpoint") and "does not exist" in err[0]
    assert main(["convert", str(src), str(tmp_path / "no" / "dir.pt")]) == 2
    assert not list(tmp_path.glob("**/*.tmp"))
