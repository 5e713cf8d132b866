"""bench, demo and vot-config take their runtime options from the shared group (commands/_common.py)."""

from __future__ import annotations

import argparse

import pytest

from mfv2.commands import bench, demo, track, vot_config
from mfv2.commands._common import BACKENDS_HELP, csv_ints
from mfv2.errors import ConfigError
from mfv2.runtimes import BACKENDS


def _options(module) -> dict[str, argparse.Action]:  # noqa: ANN001
    p = argparse.ArgumentParser()
    module.add_arguments(p)
    return {s: a for a in p._actions for s in a.option_strings}


def test_backend_help_names_every_registered_backend() -> None:
    assert all(name in BACKENDS_HELP for name in BACKENDS.names())
    assert all(name in _options(bench)["--backends"].help for name in BACKENDS.names())


def test_vot_config_and_demo_declare_the_options_track_does() -> None:
    t, v, d = _options(track), _options(vot_config), _options(demo)
    for flag in ("--graph", "--threads", "--variant", "--precision"):
        assert (v[flag].choices, v[flag].type) == (t[flag].choices, t[flag].type), flag
    assert (v["--backend"].default, v["--precision"].default, v["--graph"].default) == ("onnxruntime", "fp32", "auto")
    assert (d["--threads"].type, d["--threads"].default) == (int, None)
    assert _options(bench)["--graphs"].default == "split,full"


def test_csv_ints_names_the_option() -> None:
    assert csv_ints("--threads", "1, 2,") == (1, 2)
    with pytest.raises(ConfigError, match=r"--targets must be comma-separated integers, e.g. 1,2,4,8 \(got 'a'\)"):
        csv_ints("--targets", "a", "1,2,4,8")
