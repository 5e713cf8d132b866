"""``backend="auto"`` / ``precision="auto"``: the fastest path that passed its accuracy gate, measured here.

A short calibration run times one search-decoder call (the per-frame work) of every candidate path of
an export directory: each installed CPU backend at each precision the export holds *and* whose gate
passed (a low-precision variant that missed its gate is not in the manifest), at the usable thread
count, then the two fastest again at fewer threads. The fastest wins, except that a low precision
must beat the fastest fp32 path by :data:`MIN_GAIN`, else fp32 is kept: no path slower than fp32 is
ever chosen, and a tie goes to the faithful one. int8 is tried only where its weights are exact on
this CPU's integer instructions (``avx2_exact``, issue #16) or the CPU has VNNI. bf16 is not a
candidate: it runs the fp32 files at a precision no export gate has judged (ask for it by name).

The choice is cached as JSON under :func:`mfv2.fileio.cache_dir` (``auto/``), keyed by the CPU (model
name and flags), the runtime versions, mfv2's version and the export's manifest hash, so it is made
once per machine and model. Nothing here imports a runtime before a candidate is loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from mfv2.artifacts import MANIFEST_NAME, Manifest
from mfv2.errors import ConfigError, Mfv2Error
from mfv2.fileio import atomic_write_text, cache_dir, sha256
from mfv2.runtimes.base import GraphMode

if TYPE_CHECKING:
    from mfv2.runtimes.runner import ModelRunner

__all__ = ["AUTO", "MIN_GAIN", "AutoChoice", "Trial", "choose", "load_auto", "auto_candidates", "cpu_flags", "cache_key"]

log = logging.getLogger(__name__)

AUTO = "auto"
#: A low-precision path must be at least this much faster than the fastest fp32 one to be chosen.
MIN_GAIN = 0.05
_CPU_BACKENDS = ("onnxruntime", "openvino")
_PRECISIONS = ("fp32", "int8")  # the precisions an export gate judges
_RUNTIMES = ("onnxruntime", "openvino")
_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}
_VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}
_CACHE_VERSION = 1


@dataclass(frozen=True)
class Trial:
    """One timed candidate: ``median_ms`` of a search-decoder call, or ``status`` saying why it did not run."""

    backend: str
    precision: str
    threads: int
    graph: str
    median_ms: float | None = None
    status: str = "ok"


@dataclass
class AutoChoice:
    """What ``auto`` picked, why, and every trial it compared (fastest first)."""

    backend: str
    precision: str
    threads: int
    graph: str
    median_ms: float | None
    reason: str
    trials: list[Trial] = field(default_factory=list)
    key: str = ""
    load_average: float | None = None
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "trials": [asdict(t) for t in self.trials]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoChoice:
        body = dict(data)
        body["trials"] = [Trial(**t) for t in body.get("trials", [])]
        return cls(**body)

    def describe(self) -> str:
        """One line: the pick, its time and the reason."""
        where = f"{self.backend} {self.precision} {self.graph}, {self.threads} thread(s)"
        return f"auto picked {where}: {self.reason}" + (" (cached)" if self.cached else "")


def cpu_flags(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> tuple[str, str]:
    """(CPU model name, its flags as one sorted string) of the first CPU in ``/proc/cpuinfo``, else :mod:`platform`."""
    path = Path(cpuinfo)
    fields: dict[str, str] = {}
    for line in (path.read_text(errors="replace") if path.is_file() else "").splitlines():
        if not line.strip() and fields:
            break
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or platform.processor() or platform.machine()
    return model, " ".join(sorted((fields.get("flags") or fields.get("Features") or "").split()))


def _runtime_versions() -> dict[str, str]:
    out = {}
    for name in (*_RUNTIMES, "mfv2"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def cache_key(directory: str | os.PathLike[str], *, backend: str, precision: str, threads: int | None, graph: GraphMode) -> str:
    """The calibration cache key: CPU, runtime versions, model (manifest hash) and the request."""
    model, flags = cpu_flags()
    parts = [str(_CACHE_VERSION), model, flags, json.dumps(_runtime_versions(), sort_keys=True),
             sha256(Path(directory) / MANIFEST_NAME), backend, precision, str(threads), graph,
             str(len(_usable_cpus()))]  # fmt: skip
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def _usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def auto_candidates(manifest: Manifest, *, backend: str = AUTO, precision: str = AUTO,
                    flags: Sequence[str] = (), graph: GraphMode = "auto") -> list[tuple[str, str, str]]:
    """(backend, precision, graph) paths the export can run here whose accuracy gate passed.

    A path is in the manifest only if its parity gate passed at export; on top of that int8 needs
    weights exact on this CPU (``avx2_exact``) unless it has VNNI. A fixed ``precision="bf16"`` is
    honoured only where the CPU has bf16 hardware (elsewhere it runs at a fraction of fp32's speed).
    """
    from mfv2.runtimes.base import FileBackend, get_backend, select_artifacts

    have = set(flags)
    backends = _CPU_BACKENDS if backend == AUTO else (backend,)
    out = []
    for name in backends:
        cls = get_backend(name)
        if not cls.is_available() or not issubclass(cls, FileBackend):
            continue
        for p in (_PRECISIONS if precision == AUTO else (precision,)):
            if p not in cls.precisions or (p == "bf16" and not _BF16_FLAGS & have):
                continue
            try:
                b = cls(precision=p)
            except Mfv2Error:
                continue
            chosen = select_artifacts(manifest, graph, b.candidates())
            if chosen is None:
                continue
            if p == "int8" and not _VNNI_FLAGS & have and any(a.extra.get("avx2_exact") is False for a in chosen.values()):
                continue
            out.append((name, p, "split" if "search_decoder" in chosen else "full"))
    return out


def _verify(directory: Path, manifest: Manifest, paths: list[tuple[str, str, str]], check_hash: bool) -> None:
    """Every file of every candidate inside the export and unchanged: a bad file fails the call, as with a
    named backend, instead of quietly losing its path to the calibration."""
    from mfv2.runtimes.base import get_backend, select_artifacts, verify_artifact

    for backend, precision, graph in paths:
        chosen = select_artifacts(manifest, cast(GraphMode, graph), get_backend(backend)(precision=precision).candidates())  # type: ignore[attr-defined]
        for art in (chosen or {}).values():
            verify_artifact(directory, art, check_hash=check_hash)


def _time_path(directory: Path, backend: str, precision: str, threads: int, graph: str, *,
               warmup: int, iters: int, duration: float, verify_hashes: bool = True) -> Trial:  # fmt: skip
    from mfv2.runtimes.runner import load_backend

    # A candidate that does not load is a broken export: its error is the caller's, as with a named backend.
    runner = load_backend(backend, directory, precision=precision, threads=threads, graph=cast(GraphMode, graph),
                          verify_hashes=verify_hashes)  # fmt: skip
    try:
        m = runner.manifest.model
        rng = np.random.default_rng(0)
        b = runner.manifest.batch or 1  # a dynamic batch is timed with one target
        t = rng.standard_normal((b, 3, m.template_size, m.template_size), dtype=np.float32)
        s = rng.standard_normal((b, 3, m.search_size, m.search_size), dtype=np.float32)
        runner.set_templates(t, t)
        for _ in range(warmup):
            runner.predict(s)
        samples: list[float] = []
        start = time.perf_counter()
        while len(samples) < iters and (time.perf_counter() - start < duration or len(samples) < 3):
            t0 = time.perf_counter_ns()
            runner.predict(s)
            samples.append((time.perf_counter_ns() - t0) / 1e6)
        return Trial(backend, precision, threads, runner.graph, float(np.median(samples)))
    except Exception as e:  # a runtime's own error types: the trial reports, the others still run
        return Trial(backend, precision, threads, graph, None, f"error: {type(e).__name__}: {e}"[:200])
    finally:
        runner.close()


def _decide(trials: list[Trial]) -> tuple[Trial, str]:
    ok = sorted((t for t in trials if t.median_ms is not None), key=lambda t: t.median_ms or 0.0)
    if not ok:
        raise ConfigError("auto: no candidate path could run; " + "; ".join(f"{t.backend} {t.precision}: {t.status}" for t in trials))
    best = ok[0]
    fp32 = next((t for t in ok if t.precision == "fp32"), None)
    if fp32 is None:
        return best, f"{best.median_ms:.2f} ms per frame, the fastest of {len(ok)} gated path(s) (no fp32 path to compare)"
    if best.precision != "fp32" and best.median_ms is not None and fp32.median_ms is not None:
        gain = 1.0 - best.median_ms / fp32.median_ms
        if gain < MIN_GAIN:
            return fp32, (f"{fp32.median_ms:.2f} ms per frame; {best.backend} {best.precision} was only "
                          f"{100 * gain:.0f} % faster (< {100 * MIN_GAIN:.0f} %), so the fp32 path is kept")  # fmt: skip
        return best, (f"{best.median_ms:.2f} ms per frame, {fp32.median_ms / best.median_ms:.2f}x the fastest fp32 path "
                      f"({fp32.backend}, {fp32.median_ms:.2f} ms), fastest of {len(ok)} gated path(s)")  # fmt: skip
    return best, f"{best.median_ms:.2f} ms per frame, the fastest of {len(ok)} gated path(s)"


def choose(
    directory: str | os.PathLike[str],
    *,
    backend: str = AUTO,
    precision: str = AUTO,
    threads: int | None = None,
    graph: GraphMode = "auto",
    use_cache: bool = True,
    verify_hashes: bool = True,
    warmup: int = 3,
    iters: int = 30,
    duration: float = 1.0,
) -> AutoChoice:
    """Pick backend, precision, graph and threads for the export ``directory`` on this machine.

    Args:
        directory: an export directory written by ``mfv2 export``.
        backend, precision: ``"auto"`` or a fixed choice (then only the other one is chosen).
        threads: a fixed thread count, or ``None`` to try the usable CPUs and fewer.
        graph: ``auto`` (split when exported), ``split`` or ``full``.
        use_cache: reuse (and write) the cached choice for this CPU, runtimes and model.
        verify_hashes: check every candidate's files against the manifest's SHA-256 (default).
        warmup, iters, duration: per candidate, untimed calls, then at most ``iters`` timed calls or
            ``duration`` seconds.

    Raises:
        ConfigError: no candidate path (nothing installed that runs the export), none could run, or a
            candidate's file lies outside the export or differs from its recorded hash.
    """
    from mfv2.artifacts import load_manifest

    d = Path(directory)
    manifest = load_manifest(d)
    _, flag_text = cpu_flags()
    paths = auto_candidates(manifest, backend=backend, precision=precision, flags=flag_text.split(), graph=graph)
    _verify(d, manifest, paths, verify_hashes)
    key = cache_key(d, backend=backend, precision=precision, threads=threads, graph=graph)
    cached = cache_dir("auto") / f"{key}.json"
    if use_cache and cached.is_file():
        try:
            choice = AutoChoice.from_dict(json.loads(cached.read_text()))
            choice.cached = True
            return choice
        except (OSError, ValueError, TypeError) as e:
            log.warning("auto: ignoring the unreadable cached choice %s (%s)", cached, e)
    if not paths:
        raise ConfigError(f"auto: {d} has no path an installed CPU backend can run here "
                          f"(backend {backend}, precision {precision}); install mfv2[onnxruntime] or mfv2[openvino]")  # fmt: skip
    n = len(_usable_cpus())
    first = threads or n
    timing: dict[str, Any] = {"warmup": warmup, "iters": iters, "duration": duration, "verify_hashes": verify_hashes}
    log.info("auto: calibrating %d path(s) of %s at %d thread(s)", len(paths), d, first)
    trials = [_time_path(d, b, p, first, g, **timing) for b, p, g in paths]
    if threads is None and n > 1:  # the two fastest again with fewer threads (cores shared with other work)
        ranked = sorted((t for t in trials if t.median_ms is not None), key=lambda t: t.median_ms or 0.0)[:2]
        for t in ranked:
            trials += [_time_path(d, t.backend, t.precision, k, t.graph, **timing) for k in range(1, n) if k in (1, n // 2)]
    pick, reason = _decide(trials)
    trials.sort(key=lambda t: (t.median_ms is None, t.median_ms or 0.0))
    choice = AutoChoice(pick.backend, pick.precision, pick.threads, pick.graph, pick.median_ms, reason, trials, key,
                        round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None)  # fmt: skip
    log.info("auto: %s", choice.describe())
    if use_cache:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(cached, json.dumps(choice.to_dict(), indent=1) + "\n")
        except OSError as e:  # a read-only cache is not an error: the next run calibrates again
            log.warning("auto: could not cache the choice in %s (%s)", cached, e)
    return choice


def load_auto(artifact: Any, *, backend: str = AUTO, precision: str = AUTO, threads: int | None = None,
              graph: GraphMode = "auto", verify_hashes: bool = True, **options: Any) -> ModelRunner:
    """:func:`~mfv2.runtimes.load_backend` with ``backend`` and/or ``precision`` ``"auto"``: calibrate (or
    read the cached choice), then load the chosen path. The runner's ``auto`` attribute holds the choice.

    A checkpoint is exported once into the cache first (fp32 and int8); a model object, ``None`` or an
    export nothing installed can run falls back to the torch backend at fp32 (the official path).
    """
    from mfv2.runtimes.runner import _is_checkpoint, cached_export, load_backend

    if _is_checkpoint(artifact) and backend in (AUTO, *_CPU_BACKENDS):
        artifact = cached_export(artifact, variant=options.pop("variant", None),
                                 precisions=("int8",) if precision in (AUTO, "int8") else (precision,))  # fmt: skip
    is_export = isinstance(artifact, (str, os.PathLike)) and (Path(artifact) / MANIFEST_NAME).is_file()
    if not is_export or backend not in (AUTO, *_CPU_BACKENDS) or options.get("device", "cpu").lower() != "cpu":
        if backend == AUTO:
            if is_export:
                raise ConfigError("--backend auto chooses among the CPU backends; pass --backend for a GPU device")
            backend = "torch"
        fixed = "fp32" if precision == AUTO else precision
        return load_backend(backend, artifact, precision=fixed, threads=threads, graph=graph,
                            verify_hashes=verify_hashes, **options)  # fmt: skip
    choice = choose(artifact, backend=backend, precision=precision, threads=threads, graph=graph, verify_hashes=verify_hashes)
    log.info("%s", choice.describe())
    runner = load_backend(choice.backend, artifact, precision=choice.precision, threads=choice.threads,
                          graph=cast(GraphMode, choice.graph), verify_hashes=verify_hashes, **options)  # fmt: skip
    runner.auto = choice
    return runner
