"""The typed config base; crop factors a model records (``ModelConfig.search_factor`` / ``template_factor``) reach training and tracking."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mfv2.config import VARIANTS, ExportConfig, ModelConfig, TrackerConfig, variant_config
from mfv2.errors import ConfigError

TINY = variant_config("tiny")


def test_official_models_keep_the_official_factors():
    assert (TrackerConfig.for_model(variant_config("S")).search_factor, TrackerConfig.for_model(variant_config("B")).search_factor) == (4.5, 5.0)
    assert TrackerConfig.preset("lasot", variant_config("S")).search_factor == 4.4  # the official S test script
    assert TrackerConfig.preset("lasot", "B").search_factor == 5.0


def test_recorded_factors_win_over_defaults_and_presets():
    cfg = TINY.replace(search_factor=3.5, template_factor=2.5)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    tracker = TrackerConfig.for_model(cfg)
    assert (tracker.search_factor, tracker.template_factor) == (3.5, 2.5)
    preset = TrackerConfig.preset("got10k", cfg)
    assert (preset.search_factor, preset.template_factor) == (3.5, 2.5)
    assert preset.update_interval == TrackerConfig.preset("got10k", TINY).update_interval
    assert "template factor 2.5, search factor 3.5" in cfg.describe()


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_factors_must_be_positive(value):
    with pytest.raises(ConfigError, match="ModelConfig.search_factor must be positive"):
        TINY.replace(search_factor=value)


def test_training_crops_use_the_recorded_factor():
    torch = pytest.importorskip("torch")
    from mfv2.models import build_model
    from mfv2.training.config import DataConfig, DatasetSpec
    from mfv2.training.trainer import crop_factors

    torch.manual_seed(0)
    data = DataConfig(datasets=(DatasetSpec("synthetic", 1.0, {}),))
    assert crop_factors(data, build_model(TINY)) == (2.0, 4.5)
    assert crop_factors(dataclasses.replace(data, search_factor=4.0), build_model(TINY)) == (2.0, 4.0)
    recorded = build_model(TINY.replace(search_factor=3.5, template_factor=2.5))
    assert crop_factors(data, recorded) == (2.5, 3.5)
    with pytest.raises(ConfigError, match="data.search_factor 4 differs from the 3.5 the model records"):
        crop_factors(dataclasses.replace(data, search_factor=4.0), recorded)


def test_a_checkpoint_with_recorded_factors_tracks_with_them(tmp_path):
    torch = pytest.importorskip("torch")
    from mfv2.models import build_model, save_native
    from mfv2.runtimes import load_backend

    torch.manual_seed(0)
    model = build_model(TINY.replace(search_factor=3.0))
    ckpt = save_native(model.state_dict(), model.config, tmp_path / "m.pt")
    with load_backend("torch", ckpt) as runner:
        assert runner.manifest.model.search_factor == 3.0
        assert runner.manifest.tracker.search_factor == 3.0


def test_presets_keep_the_recorded_factors_in_track_eval_and_export(tmp_path):
    """`mfv2 eval`, `mfv2 track --preset`, ``Tracker.create(config="lasot")`` and ``export(tracker=...)``
    all crop as the model was trained, not at the preset's official factor."""
    import argparse

    torch = pytest.importorskip("torch")
    from mfv2.commands.eval import _tracker_spec
    from mfv2.exporters import export
    from mfv2.artifacts import load_manifest
    from mfv2.models import build_model, save_native
    from mfv2.tracking import Tracker

    torch.manual_seed(0)
    model = build_model(TINY.replace(search_factor=3.0))
    ckpt = save_native(model.state_dict(), model.config, tmp_path / "m.pt")
    with Tracker.create("torch", checkpoint=ckpt, config="lasot") as tracker:
        assert tracker.config.search_factor == 3.0
    args = argparse.Namespace(model=None, checkpoint=str(ckpt), baseline=None, variant=None, backend="torch",
                              precision="fp32", threads=1, graph="auto", preset="got10k")
    runner, make_tracker, preset = _tracker_spec(args, threads=1).open("lasot")
    try:
        config = make_tracker().config
        assert (preset, config.search_factor, config.update_interval) == ("got10k", 3.0, TrackerConfig.preset("got10k", TINY).update_interval)
    finally:
        runner.close()
    out = export(ckpt, tmp_path / "export", tracker=TrackerConfig.preset("lasot", "S"), simplify="none")
    assert load_manifest(out).tracker.search_factor == 3.0


def test_every_config_round_trips_through_its_dict() -> None:
    for cfg in (VARIANTS.get("B"), TrackerConfig.preset("got10k", "B"), ExportConfig(variant=VARIANTS.get("tiny"), tracker=TrackerConfig())):
        assert type(cfg).from_dict(cfg.to_dict()) == cfg


def test_values_are_typed_and_nested_configs_built() -> None:
    cfg = ExportConfig.from_dict({"variant": VARIANTS.get("tiny").to_dict(), "tracker": {"search_factor": 5}, "precisions": ["fp32", "int8"]})
    assert cfg.variant == VARIANTS.get("tiny") and cfg.tracker == TrackerConfig(search_factor=5.0)
    assert cfg.precisions == ("fp32", "int8") and isinstance(cfg.tracker.search_factor, float)
    assert ExportConfig.from_dict({"variant": "S"}).variant == "S"
    assert ExportConfig(precisions="fp32,fp16").precisions == ("fp32", "fp16")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"ModelConfig.depth must be int, got '4'"):
        ModelConfig.from_dict({"depth": "4"})
    with pytest.raises(ConfigError, match=r"ExportConfig.tracker.update_interval must be int, got 2.5"):
        ExportConfig.from_dict({"tracker": {"update_interval": 2.5}})
    with pytest.raises(ConfigError, match=r"ExportConfig.simplify must be one of onnxsim, onnxslim, none, got 'x'"):
        ExportConfig.from_dict({"simplify": "x"})


def test_unknown_keys_and_options_list_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown TrackerConfig key\(s\) intervall; valid keys: template_factor, search_factor, update_interval,"):
        TrackerConfig.from_dict({"intervall": 3})
    with pytest.raises(ConfigError, match=r"unknown ExportConfig.tracker key\(s\) x; valid keys: template_factor"):
        ExportConfig.from_dict({"tracker": {"x": 1}})
    with pytest.raises(ConfigError, match=r"unknown ExportConfig option\(s\) precision; valid: variant, batch, opset, .*skip_failed$"):
        ExportConfig().replace(precision="fp16")
    with pytest.raises(ConfigError, match="batch must be a positive integer, got 0"):
        ExportConfig(batch=0)


def test_export_takes_a_config_or_keywords_and_names_a_misspelt_one(tmp_path: Path) -> None:
    import mfv2

    with pytest.raises(ConfigError, match=r"unknown ExportConfig option\(s\) precison; valid: variant, batch"):
        mfv2.export(None, tmp_path / "out", precison="fp16")
    with pytest.raises(ConfigError, match="opset 15 decomposes LayerNormalization"):
        mfv2.export(None, tmp_path / "out", ExportConfig(opset=15), variant="tiny")
    assert not (tmp_path / "out").exists()
