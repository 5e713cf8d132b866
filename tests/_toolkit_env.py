"""A virtual environment with the VOT and GOT-10k toolkits, kept out of mfv2's own environment.

vot-toolkit pulls numba, shapely and the non-headless opencv-python; got10k pulls shapely too. They
go into one environment of their own, built once per set of pinned versions under
``$MFV2_TEST_CACHE`` (default ``~/.cache/mfv2-tests``) and reused; mfv2 itself is not installed
there but put on ``PYTHONPATH`` from the checkout under test (the environment outlives checkouts).
Tests that need it skip, saying so, when PyPI cannot be reached.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: vot-toolkit 0.9.0 breaks with attributee 0.1.10 on Python >= 3.11 (dataclass_transform); 0.1.9 works.
PINS = ("vot-toolkit==0.9.0", "vot-trax==4.0.2", "attributee==0.1.9", "got10k==0.1.3")
#: What mfv2 needs there to run an ONNX export: its runtime (the version of ours) and its small deps.
EXTRA = (f"onnxruntime=={importlib.metadata.version('onnxruntime')}", "pyyaml", "tqdm")
#: Runs the toolkit's command line without its update check (a GitHub request on every command).
VOT_CLI = "import sys, vot.utilities.cli as c; c.check_updates = lambda: (False, None); sys.argv[0] = 'vot'; c.main()"


def _cache_root() -> Path:
    return Path(os.environ.get("MFV2_TEST_CACHE") or Path.home() / ".cache" / "mfv2-tests")


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def toolkit_python() -> Path:
    """The interpreter of the toolkit environment, built on first use (about 45 s with pip's cache warm)."""
    key = hashlib.sha256(" ".join((*PINS, *EXTRA, sys.version)).encode()).hexdigest()[:12]
    root = _cache_root() / f"toolkits-py{sys.version_info[0]}{sys.version_info[1]}-{key}"
    python, stamp = root / "bin" / "python", root / ".complete"
    with _lock(root.with_name(root.name + ".lock")):
        if stamp.is_file() and python.is_file():
            return python
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        # a bounded question first: pip's default retries would spend minutes on a blocked network
        probe = subprocess.run([*pip, "index", "versions", "vot-toolkit", "--retries", "1", "--timeout", "10"],
                               capture_output=True, text=True, timeout=120)
        if probe.returncode != 0 or "0.9.0" not in probe.stdout:
            pytest.skip("PyPI is unreachable: cannot build the VOT/GOT-10k toolkit environment "
                        f"({(probe.stderr.strip().splitlines() or ['no answer'])[-1]})")
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PINS, *EXTRA],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"installing {' '.join(PINS)} failed:\n{done.stderr[-3000:]}")
        stamp.write_text(f"built in {time.perf_counter() - t0:.0f} s\n")
        return python


def demo_export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped demo model exported for ONNX Runtime, once per test session (the toolkit side has no torch)."""
    pytest.importorskip("onnx")
    from mfv2.assets import demo_checkpoint
    from mfv2.runtimes import cached_export

    ckpt = demo_checkpoint()
    if ckpt is None:
        pytest.skip("the demo model is not installed (mfv2/assets/mixformerv2_demo_s.pt)")
    return cached_export(ckpt, cache_dir=tmp_path_factory.getbasetemp() / "mfv2-cache" / "exports")


def toolkit_env(*paths: Path) -> dict[str, str]:
    """Environment for a toolkit process: mfv2 from this checkout (plus ``paths``) on PYTHONPATH, no
    persistent analysis cache (the VOT toolkit keys it by names only), one thread per runtime."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=os.pathsep.join(str(p) for p in (REPO, *paths)), VOT_PERSISTENT_CACHE="0",
               OMP_NUM_THREADS="1")
    return env


def run_toolkit(python: Path, args: list[str], *, cwd: Path, env: dict[str, str], timeout: int = 300) -> str:
    """Run ``python args`` and return its stdout; a failure shows the tail of both streams."""
    done = subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{args[:2]} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return done.stdout
