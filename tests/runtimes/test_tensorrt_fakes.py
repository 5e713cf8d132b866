"""The TensorRT and cuda-python fakes follow the real packages: every name they offer exists there.

TensorRT's Python bindings (``tensorrt-cu12-bindings``, ~1.3 MB) install without the TensorRT
libraries but do not import without them, so the fake ``tensorrt`` module's names are looked up in
the strings the extension module registers (pybind11 keeps every class, method, property and enum
member name as a NUL-terminated string; the linker may share a name's bytes with the tail of a
longer string, so a name counts as present when a string ends with it) and in the package's
``__init__.py``. cuda-python's runtime module imports without a GPU, so the fake is compared with
the real module: names, enum values, and what each call returns on a machine without a driver
(``(error,)`` or ``(error, value)``); mfv2's own ``device_info`` runs against it too.

The wheels are downloaded once into ``~/.cache/mfv2-tests/tensorrt-api`` (about 20 MB, test-only, not
an mfv2 dependency); without PyPI the tests skip and say so.
"""

from __future__ import annotations

import ast
import enum
import json
import os
import re
import subprocess
import sys
import types
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests._tensorrt_fakes import CUDART_NAMES, VALUE_CALLS, FakeCudart, fake_tensorrt
from tests.runtimes.test_tensorrt import RowCudart

TRT_VERSIONS = ("10.13.3.9", "11.4.0.106")  # the 10.12+ line mfv2 targets and the newest release
CUDA_BINDINGS = ("12.9.4", "13.5.0")  # cuda-python for CUDA 12 and for CUDA 13 drivers
PATHFINDER = "1.9.1"  # imported by cuda-bindings
CACHE = Path(os.environ.get("MFV2_TEST_CACHE", Path.home() / ".cache" / "mfv2-tests")) / "tensorrt-api"
ROOT = Path(__file__).resolve().parents[2]
# Attributes of the fakes that are test instrumentation, not API.
FAKE_ONLY = {"calls", "loggers", "execute_ok", "released", "parse_ok", "plan", "RETURNED_TYPES"}


def _wheel(name: str, version: str) -> Path:
    """The wheel ``name==version`` for this Python, downloaded into the cache on first use."""
    stem = name.replace("-", "_")
    found = sorted(CACHE.glob(f"{stem}-{version}-*.whl"))
    if found:
        return found[0]
    CACHE.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d", str(CACHE),
           f"{name}=={version}"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
    except (subprocess.SubprocessError, OSError) as e:
        pytest.skip(f"cannot download {name}=={version} from PyPI ({type(e).__name__}); the real-API check needs it once")
    found = sorted(CACHE.glob(f"{stem}-{version}-*.whl"))
    if not found:
        pytest.skip(f"pip found no {name}=={version} wheel for this Python")
    return found[0]


def _unpacked(wheel: Path) -> Path:
    target = wheel.with_suffix("")
    if not target.is_dir():
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tmp)
        tmp.rename(target)
    return target


def _trt_names(version: str) -> set[str]:
    """Identifier strings of the bindings' extension module plus the names its ``__init__.py`` defines."""
    root = _unpacked(_wheel("tensorrt-cu12-bindings", version)) / "tensorrt_bindings"
    data = next(root.glob("tensorrt*.so")).read_bytes()
    names = {m.group().decode() for m in re.finditer(rb"[A-Za-z_][A-Za-z0-9_]{1,80}(?=\x00)", data)}
    tree = ast.parse((root / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def _present(name: str, names: set[str]) -> bool:
    return name in names or any(n.endswith(name) for n in names)


def _public(obj: Any) -> list[str]:
    return [k for k in vars(obj) if not k.startswith("_") and k not in FAKE_ONLY]


def _fake_trt_api() -> list[str]:
    """Every name the fake ``tensorrt`` offers: module attributes, their members, the returned types' methods."""
    trt = fake_tensorrt(FakeCudart())
    names = []
    for attr in _public(trt):
        names.append(attr)
        value = getattr(trt, attr)
        if isinstance(value, type) and issubclass(value, enum.Enum):
            names += list(value.__members__)
        elif isinstance(value, (type, types.SimpleNamespace)):
            names += [k for k in _public(value) if not callable(getattr(value, k)) or isinstance(value, type)]
    names += [m for m in trt.ILogger.Severity.__members__]
    for cls in trt.RETURNED_TYPES:
        names.append(cls.__name__)
        names += [k for k in _public(cls)]
    return sorted(set(names + ["num_io_tensors", "num_errors", "Severity", "__version__"]))


@pytest.fixture(scope="module")
def trt_names() -> dict[str, set[str]]:
    return {v: _trt_names(v) for v in TRT_VERSIONS}


def test_every_name_of_the_fake_tensorrt_is_in_the_real_bindings(trt_names: dict[str, set[str]]) -> None:
    api = _fake_trt_api()
    assert {"execute_async_v3", "set_tensor_address", "STRONGLY_TYPED", "TF32", "ILogger", "ICudaEngine"} <= set(api)
    for version, names in trt_names.items():
        missing = [n for n in api if not _present(n, names) and n != "BF16"]
        assert not missing, f"the fake tensorrt offers names TensorRT {version}'s bindings lack: {missing}"
    # bf16's weak-typing flag is what the builder probes for: present in 10.x, gone in 11.
    assert _present("BF16", trt_names["10.13.3.9"])


def test_the_name_check_catches_a_name_tensorrt_does_not_have(trt_names: dict[str, set[str]]) -> None:
    names = trt_names[TRT_VERSIONS[-1]]
    for wrong in ("execute_async_v4", "begin_capture", "set_binding_address", "enqueueV3"):
        assert not _present(wrong, names)
    for gone in ("execute_async_v2", "get_binding_shape"):  # removed in 10.0; the check sees them as absent
        assert not _present(gone, names)


_PROBE = r"""
import json, sys
from cuda.bindings import runtime as c
fake = json.loads(sys.argv[1])
out = {"version": __import__("cuda.bindings").bindings.__version__, "missing": [], "values": {}, "results": {}}
for name in fake["names"]:
    if not hasattr(c, name):
        out["missing"].append(name)
for enum_name, members in fake["enums"].items():
    for member in members:
        out["values"][enum_name + "." + member] = int(getattr(getattr(c, enum_name), member))
out["values"]["cudaStreamNonBlocking"] = int(c.cudaStreamNonBlocking)
calls = {
    "cudaGetDeviceCount": (), "cudaRuntimeGetVersion": (), "cudaDriverGetVersion": (), "cudaSetDevice": (0,),
    "cudaGetDeviceProperties": (0,), "cudaStreamCreateWithFlags": (1,), "cudaStreamSynchronize": (0,),
    "cudaStreamDestroy": (0,), "cudaMallocHost": (16,), "cudaMalloc": (16,), "cudaFree": (0,), "cudaFreeHost": (0,),
    "cudaMemcpyAsync": (0, 0, 0, c.cudaMemcpyKind.cudaMemcpyHostToDevice, 0),
    "cudaMemcpy2DAsync": (0, 0, 0, 0, 0, 0, c.cudaMemcpyKind.cudaMemcpyDeviceToDevice, 0),
    "cudaStreamBeginCapture": (0, c.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
    "cudaStreamEndCapture": (0,), "cudaGraphInstantiate": (0, 0), "cudaGraphLaunch": (0, 0),
    "cudaGraphExecDestroy": (0,), "cudaGraphDestroy": (0,), "cudaGetLastError": (),
    "cudaGetErrorName": (c.cudaError_t.cudaErrorNoDevice,), "cudaGetErrorString": (c.cudaError_t.cudaErrorNoDevice,),
}
for name, args in calls.items():
    r = getattr(c, name)(*args)
    out["results"][name] = [type(r).__name__, len(r), type(r[0]).__name__, type(r[-1]).__name__]
sys.path.insert(0, fake["root"])
from mfv2 import _cuda as cuda_api
try:
    cuda_api.device_info(0)
    out["device_info"] = "no error"
except Exception as e:
    out["device_info"] = type(e).__name__ + ": " + str(e)
print(json.dumps(out))
"""


@pytest.mark.parametrize("version", CUDA_BINDINGS)
def test_the_fake_cuda_python_matches_the_real_runtime_module(version: str) -> None:
    path = os.pathsep.join(str(_unpacked(_wheel(n, v))) for n, v in (("cuda-bindings", version), ("cuda-pathfinder", PATHFINDER)))
    fake = RowCudart()  # the fake runtime with the row-write calls of tests/runtimes/test_tensorrt.py
    enums = {e: list(getattr(fake, e).__members__) for e in ("cudaError_t", "cudaStreamCaptureMode", "cudaMemcpyKind")}
    names = sorted(set(CUDART_NAMES) | set(RowCudart.NAMES) | set(enums) | {n for n in _public(type(fake)) if n.startswith("cuda")})
    spec = json.dumps({"names": names, "enums": enums, "root": str(ROOT)})
    env = {**os.environ, "PYTHONPATH": path, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a machine that has one
    done = subprocess.run([sys.executable, "-c", _PROBE, spec], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    real = json.loads(done.stdout.splitlines()[-1])
    assert real["version"] == version and real["missing"] == []
    for key, value in real["values"].items():
        enum_name, _, member = key.partition(".")
        ours = getattr(fake, enum_name) if not member else getattr(getattr(fake, enum_name), member)
        assert int(ours) == value, f"{key}: fake {int(ours)}, cuda-python {version} {value}"
    for name, (kind, length, first, _last) in real["results"].items():
        assert kind == "tuple" and first == "cudaError_t", (name, kind, first)
        # Failed calls still return (error, None) where the call has a value: the fake does the same.
        assert length == (2 if name in VALUE_CALLS else 1), f"{name} returns {length} items in cuda-python {version}"
    assert real["device_info"].startswith("BackendUnavailableError: no CUDA device found (cudaError")
