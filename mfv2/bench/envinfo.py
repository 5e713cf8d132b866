"""Environment capture for benchmark reports: CPU, cores, threads, GPU, load and library versions.

Versions are read from package metadata, so capturing them imports neither torch nor any runtime.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["capture_env", "cpu_info", "cpu_isa", "gpu_names", "package_versions", "load_average", "INTERESTING_FLAGS"]

# CPU flags that decide which kernels the runtimes pick.
INTERESTING_FLAGS: tuple[str, ...] = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve",
)  # fmt: skip

_PACKAGES: tuple[str, ...] = (
    "mfv2", "numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "nncf", "tensorrt",
    "pycuda", "cuda-python", "opencv-python", "opencv-python-headless", "onnxsim", "onnxslim",
)  # fmt: skip


def _cpuinfo_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor block is enough
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_info(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> dict[str, Any]:
    """CPU model, the :data:`INTERESTING_FLAGS` it has, logical CPUs and physical cores.

    Falls back to :mod:`platform` where ``/proc/cpuinfo`` does not exist.
    """
    path = Path(cpuinfo)
    text = path.read_text() if path.is_file() else ""
    fields = _cpuinfo_fields(text)
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    cores = {
        (block.get("physical id", "0"), block.get("core id", str(i)))
        for i, block in enumerate(_blocks(text))
    }
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "flags": [f for f in INTERESTING_FLAGS if f in flags],
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "physical_cores": len(cores) or None,
        "mhz": float(fields["cpu MHz"]) if "cpu MHz" in fields else None,
    }


def cpu_isa(flags: list[str] | None = None) -> str:
    """The instruction set the int8/bf16 kernels get here, in words: e.g. ``"x86_64 AVX-512 VNNI BF16"``
    or ``"x86_64 AVX2 (no AVX-512)"``. The same host family exposes either, depending on the hypervisor."""
    info = cpu_info()
    have = set(info["flags"] if flags is None else flags)
    if "avx512f" in have:
        extra = [name for flag, name in (("avx512_vnni", "VNNI"), ("avx512_bf16", "BF16"), ("amx_int8", "AMX")) if flag in have]
        isa = " ".join(["AVX-512", *extra]) if extra else "AVX-512 (no VNNI)"
    elif "avx2" in have:
        isa = "AVX2 + AVX-VNNI (no AVX-512)" if "avx_vnni" in have else "AVX2 (no AVX-512)"
    elif "asimd" in have:
        isa = "NEON" + (" + SVE" if "sve" in have else "")
    else:
        isa = "no AVX2"
    return f"{info['arch']} {isa}"


def _blocks(text: str) -> list[dict[str, str]]:
    out = []
    for chunk in text.split("\n\n"):
        if chunk.strip():
            out.append(_cpuinfo_fields(chunk))
    return out


def gpu_names() -> list[str]:
    """Names of NVIDIA GPUs from ``nvidia-smi`` (empty when there is none)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def package_versions(packages: tuple[str, ...] = _PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that matter for speed; absent ones are left out."""
    versions: dict[str, str] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, where the OS reports them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        return None
    return None


def capture_env(threads: list[int] | int | None = None) -> dict[str, Any]:
    """Everything a reader needs to judge a benchmark figure, as a JSON-ready dict.

    Args:
        threads: the thread count(s) the benchmark used.
    """
    thread_env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE") if k in os.environ}
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu_info(),
        "isa": cpu_isa(),
        "memory_gb": _memory_gb(),
        "gpus": gpu_names(),
        "threads": threads,
        "thread_env": thread_env,
        "load_average": load_average(),
        "versions": package_versions(),
    }
