"""track, eval and bench declare the runtime and model options once (commands/_common.py), from the format table."""

from __future__ import annotations

import argparse

import pytest

from mfv2.artifacts import FORMATS
from mfv2.commands import bench, eval as eval_cmd, track
from mfv2.commands._common import GRAPHS, PRECISIONS
from mfv2.cli import main


def _options(module) -> dict[str, argparse.Action]:  # noqa: ANN001
    p = argparse.ArgumentParser()
    module.add_arguments(p)
    return {s: a for a in p._actions for s in a.option_strings}


def test_the_choices_come_from_the_format_table() -> None:
    assert set(PRECISIONS) == {p for name in FORMATS for p in FORMATS.get(name).precisions} == {"fp32", "fp16", "bf16", "int8"}
    assert GRAPHS == ("auto", "split", "full")


def test_track_and_eval_declare_the_same_runtime_options() -> None:
    t, e = _options(track), _options(eval_cmd)
    for flag in ("--backend", "--precision", "--graph", "--threads", "--model", "--checkpoint", "--variant"):
        assert (t[flag].choices, t[flag].type) == (e[flag].choices, e[flag].type), flag
        if flag not in ("--backend", "--precision"):
            assert t[flag].default == e[flag].default, flag
    assert t["--precision"].choices == (*PRECISIONS, "auto")
    # track picks the path for the machine unless told (issue #23); eval scores the path it is given.
    assert (t["--backend"].default, t["--precision"].default) == ("auto", None)
    assert (e["--backend"].default, e["--precision"].default) == ("onnxruntime", "fp32")
    from mfv2.commands._common import precision_of

    assert precision_of(argparse.Namespace(backend="auto", precision=None)) == "auto"
    assert precision_of(argparse.Namespace(backend="openvino", precision=None)) == "fp32"
    assert precision_of(argparse.Namespace(backend="auto", precision="int8")) == "int8"
    assert "--device" in t and "--device" in _options(bench)


@pytest.mark.parametrize("command", ["track", "eval"])
def test_model_and_checkpoint_exclude_each_other(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "x", "--model", "a", "--checkpoint", "b"])
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
