"""Every ``mfv2`` command of the README that can run on a CPU runs here, so the docs cannot rot."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Commands that cannot run in CI, and why; matched as substrings of the command line.
SKIPPED = {
    "build-engine": "needs an NVIDIA GPU and TensorRT",
    "--backend tensorrt": "needs an NVIDIA GPU and TensorRT",
    "eval /data/": "needs the LaSOT dataset on disk",
    "--route S ": "needs a MixViT teacher checkpoint and days of GPU training",
    "--route demo_s": "about an hour of CPU training; tests/training/test_routes.py runs a route at tiny scale",
}
# Commands run at a smaller size in CI: same subcommand and flags, less work.
SHRINK = {
    # the matrix itself is tested in tests/bench/test_bench.py: here the command and its outputs, on two rows
    "mfv2 bench --variant S": ("--variant S", "--variant tiny --quick --backends onnxruntime --precisions fp32 "
                               "--graphs split --mode model --iters 5"),
    "mfv2 eval --synthetic 16": ("--synthetic 16", "--synthetic 2 --frames 12"),
}


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("mfv2 ")]


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_quickstart_is_make_demo_then_make_test_and_ci_runs_make_test():
    blocks = re.findall(r"```bash\n(.*?)```", _section("Quickstart"), flags=re.S)
    commands = [line.split("#")[0].strip() for block in blocks for line in block.splitlines() if line.split("#")[0].strip()]
    assert commands == ["make demo", "make test"]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip
    assert ci[-1] == "make test" and not any("pytest" in line for line in ci)  # the same command, nothing else
    make = (ROOT / "Makefile").read_text()
    demo = re.search(r"^demo:.*\n((?:\t.*\n)+)", make, flags=re.M)
    assert demo is not None and demo.group(1).strip() == "$(BIN)/mfv2 demo"  # what tests/bench/test_demo.py runs


def test_readme_has_the_task_commands():
    commands = readme_commands()
    for sub in ("export", "track", "bench", "eval", "build-engine", "distill", "convert", "synth"):
        assert any(c.split()[1] == sub for c in commands), sub


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model):
    """A folder holding the files the README's commands name: official-layout checkpoints under the
    README's file names. The MixFormerV2 file holds the tiny variant (detected from its tensors like S),
    so the commands run as written at a size CI affords (S's official layout is tested in
    tests/models/test_checkpoint.py); the MVT file holds a full MVT with seeded random weights."""
    torch = pytest.importorskip("torch")

    from mfv2.models import build_model

    d = tmp_path_factory.mktemp("readme")
    torch.save({"net": tiny_model.state_dict()}, d / "mixformerv2_small.pth.tar")
    torch.manual_seed(0)  # MVT at full size (its tensors do not depend on the input size): the official layout
    torch.save({"net": build_model("MVT").state_dict()}, d / "MobileViT_Track_ep0100.pth.tar")
    return d


def test_readme_commands_run(workdir, monkeypatch, capsys):
    from mfv2.cli import main

    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MFV2_CACHE", str(workdir / "cache"))
    ran = []
    for command in readme_commands():
        if any(key in command + " " for key in SKIPPED):
            continue
        for prefix, (old, new) in SHRINK.items():
            if command.startswith(prefix):
                command = command.replace(old, new)
        code = main(shlex.split(command)[1:])
        assert code == 0, f"{command!r} exited {code}: {capsys.readouterr().err[-2000:]}"
        ran.append(command.split()[1])
    assert {"export", "synth", "track", "bench", "eval", "convert"} <= set(ran)
    boxes = (workdir / "boxes.txt").read_text().splitlines()
    assert len(boxes) == 60 and boxes[0].split(",")[0].startswith("164.45")
