"""CUDA-graph replay of one per-frame step: fixed shapes, static input buffers, capture once, replay.

:class:`GraphedStep` wraps a step ``fn(**tensors) -> {name: tensor}`` (the search decoder, or the full
graph with its templates bound) and follows PyTorch's documented recipe:

1. **static inputs**: the first call's inputs are copied into buffers that live as long as the graph;
2. **warm-up**: a few eager calls on a side stream (that waits for the current stream, and the current
   stream for it afterwards), so lazy initialisation (cuBLAS handles, kernel choice, allocator
   growth) happens outside the capture;
3. **capture**: one call recorded into a ``torch.cuda.CUDAGraph``; its outputs become static outputs;
4. **replay**: each call copies its inputs into the static buffers (an input passed again as the very
   same tensor object, such as the bound template keys/values, is not copied again), replays the
   graph and returns the static outputs, which the next replay overwrites.

A call whose input names, shapes or dtypes differ from the captured ones captures again (the torch
backend takes any number of online templates, so the KV length can change). A failed capture either
falls back to eager calls with one warning or raises :class:`~mfv2.errors.Mfv2Error`
(``fallback=False``), so a benchmark never reports eager figures under a CUDA-graph label.

The CUDA calls go through a :class:`GraphOps` object, so the sequence is tested on CPU with a fake
that records it; :class:`TorchCudaGraphOps` is the real one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from mfv2.errors import Mfv2Error

__all__ = ["GraphOps", "Replayable", "TorchCudaGraphOps", "GraphedStep"]

log = logging.getLogger(__name__)

StepFn = Callable[..., Mapping[str, Any]]


class Replayable(Protocol):
    """A captured graph."""

    def replay(self) -> None: ...


class GraphOps(Protocol):
    """The CUDA calls a capture needs (real: :class:`TorchCudaGraphOps`; tests: a recording fake)."""

    def warm_up(self, fn: Callable[[], object], times: int) -> None:
        """Run ``fn`` ``times`` times on a side stream and make the current stream wait for it."""

    def capture(self, fn: Callable[[], Mapping[str, Any]]) -> tuple[Replayable, Mapping[str, Any]]:
        """Record one call of ``fn`` into a graph; return the graph and the call's (static) outputs."""

    def synchronize(self) -> None:
        """Wait for the device (after a failed capture, before eager calls resume)."""


class TorchCudaGraphOps:
    """:class:`GraphOps` on ``torch.cuda`` for one device."""

    def __init__(self, device: Any) -> None:
        import torch

        self._torch = torch
        self.device = torch.device(device)

    def warm_up(self, fn: Callable[[], object], times: int) -> None:
        cuda = self._torch.cuda
        side = cuda.Stream(device=self.device)
        side.wait_stream(cuda.current_stream(self.device))
        with cuda.stream(side):
            for _ in range(times):
                fn()
        cuda.current_stream(self.device).wait_stream(side)

    def capture(self, fn: Callable[[], Mapping[str, Any]]) -> tuple[Replayable, Mapping[str, Any]]:
        cuda = self._torch.cuda
        graph = cuda.CUDAGraph()
        with cuda.device(self.device), cuda.graph(graph):  # captures on its own side stream
            out = fn()
        return graph, out

    def synchronize(self) -> None:
        self._torch.cuda.synchronize(self.device)


def _signature(inputs: Mapping[str, Any]) -> tuple[tuple[str, tuple[int, ...], str, str], ...]:
    return tuple(sorted((k, tuple(v.shape), str(v.dtype), str(v.device)) for k, v in inputs.items()))


class GraphedStep:
    """``fn`` replayed from a CUDA graph; called with and returning ``{name: tensor}``.

    Args:
        fn: the step; called with keyword tensors, returns a mapping of tensors. It must be
            capturable: no host synchronisation, no data-dependent shapes.
        ops: the CUDA calls (:class:`TorchCudaGraphOps` for real).
        warmup: eager calls on a side stream before the capture (at least 1).
        fallback: after a failed capture, warn once and call ``fn`` eagerly from then on (True), or
            raise :class:`~mfv2.errors.Mfv2Error` (False).
        name: what the step is, for messages.

    Attributes:
        captures: how many graphs were captured (a new input signature captures again).
        replays: how many calls replayed a graph.
        failure: why the capture failed (None while replaying or before the first call).
    """

    def __init__(self, fn: StepFn, ops: GraphOps, *, warmup: int = 3, fallback: bool = True,
                 name: str = "step") -> None:  # fmt: skip
        if warmup < 1:
            raise Mfv2Error(f"CUDA-graph warm-up needs at least 1 call, got {warmup}")
        self._fn = fn
        self._ops = ops
        self._warmup = warmup
        self._fallback = fallback
        self.name = name
        self._graph: Replayable | None = None
        self._static: dict[str, Any] = {}
        self._outputs: Mapping[str, Any] = {}
        self._last: dict[str, Any] = {}  # the tensor objects last copied in, kept alive so identity is sound
        self._sig: tuple[Any, ...] = ()
        self.captures = 0
        self.replays = 0
        self.failure: str | None = None

    @property
    def mode(self) -> str:
        """``"replay"``, ``"eager"`` (the capture failed and ``fallback``) or ``"pending"``."""
        if self.failure is not None:
            return "eager"
        return "replay" if self._graph is not None else "pending"

    def __call__(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        if self.failure is not None:
            return self._fn(**inputs)
        if self._graph is None or _signature(inputs) != self._sig:
            self._capture(inputs)
            if self.failure is not None:
                return self._fn(**inputs)
        self._load(inputs)
        assert self._graph is not None  # set by _capture unless it failed (handled above)
        self._graph.replay()
        self.replays += 1
        return self._outputs

    def _load(self, inputs: Mapping[str, Any]) -> None:
        for k, v in inputs.items():
            if self._last.get(k) is not v:
                self._static[k].copy_(v)
                self._last[k] = v

    def _capture(self, inputs: Mapping[str, Any]) -> None:
        self._graph, self._outputs, self._last = None, {}, {}
        self._static = {k: v.clone() for k, v in inputs.items()}
        self._last = dict(inputs)
        self._sig = _signature(inputs)

        def call() -> Mapping[str, Any]:
            return self._fn(**self._static)

        try:
            self._ops.warm_up(call, self._warmup)
            self._graph, self._outputs = self._ops.capture(call)
        except Exception as e:  # CUDA and torch raise RuntimeError subclasses of their own for uncapturable ops
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            self._graph, self._static, self._last, self._outputs = None, {}, {}, {}
            try:
                self._ops.synchronize()
            except Exception:  # a sticky CUDA error shows again on the next eager call, with its own message
                log.debug("synchronize after a failed capture failed", exc_info=True)
            if not self._fallback:
                raise Mfv2Error(
                    f"CUDA-graph capture of the {self.name} failed: {reason}; run without cuda_graph "
                    "(or allow the eager fallback)"
                ) from e
            self.failure = reason
            log.warning("CUDA-graph capture of the %s failed (%s); running it eagerly from now on", self.name, reason)
            return
        self.captures += 1
        log.debug("captured the %s as CUDA graph %d (inputs %s)", self.name, self.captures, self._sig)
