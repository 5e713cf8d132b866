"""The docker images' install recipe (docker/install.sh) in a fresh virtual environment."""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_cpu_image_recipe_installs_a_torch_free_tracker(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    result = subprocess.run(
        ["bash", str(ROOT / "docker" / "install.sh"), str(ROOT), "onnxruntime,openvino"],
        env={**{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}, "PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "mfv2 backends: onnxruntime, openvino" in result.stdout
    probe = subprocess.run([str(bin_dir / "python"), "-c", "import torch"], capture_output=True, timeout=60)
    assert probe.returncode != 0  # the CPU image carries no torch
