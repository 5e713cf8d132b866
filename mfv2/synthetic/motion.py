"""Motion paths for :mod:`mfv2.synthetic`: bounded random walks and smooth scale/aspect factors.

Plain Python floats and ``math.sqrt`` only (IEEE-exact), so paths are identical on every machine.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["walk", "smooth_factor"]


def _reflect(p: float, v: float, lo: float, hi: float) -> tuple[float, float]:
    if lo > hi:
        return (lo + hi) / 2, 0.0
    if p < lo:
        return min(2 * lo - p, hi), -v
    if p > hi:
        return max(2 * hi - p, lo), -v
    return p, v


def walk(noise: np.ndarray, start: tuple[float, float], half: np.ndarray, extent: tuple[float, float],
         vmax: float, *, exit_at: int = -1, hold: int = 0, vexit: float = 0.0) -> np.ndarray:
    """Centres ``(N, 2)`` of a damped random-walk velocity (|v| <= vmax) reflected inside ``extent``.

    At frame ``exit_at`` the object leaves through the nearest border at ``vexit`` px/frame, stays
    out for ``hold`` frames, re-enters, and walks on.
    """
    n, steps = noise.shape[0], noise.tolist()
    out = np.empty((n, 2))
    p, v = [float(start[0]), float(start[1])], [0.0, 0.0]
    for a in (0, 1):  # start inside the bounds
        p[a] = _reflect(p[a], 0.0, float(half[0, a]), extent[a] - float(half[0, a]))[0]
    mode, axis, sign, count = "walk", 0, 1.0, 0
    for t in range(n):
        out[t] = p
        h = (float(half[min(t + 1, n - 1), 0]), float(half[min(t + 1, n - 1), 1]))
        if mode == "walk" and t == exit_at:
            gaps = [p[0] - h[0], extent[0] - h[0] - p[0], p[1] - h[1], extent[1] - h[1] - p[1]]
            k = int(np.argmin(gaps))
            mode, axis, sign = "exit", k // 2, (-1.0 if k % 2 == 0 else 1.0)
        for a in (0, 1):
            v[a] = 0.95 * v[a] + 0.25 * vmax * steps[t][a]
        speed = math.sqrt(v[0] * v[0] + v[1] * v[1])
        if speed > vmax:
            v = [v[0] * vmax / speed, v[1] * vmax / speed]
        free = (0, 1) if mode == "walk" else (1 - axis,)
        for a in free:
            p[a], v[a] = _reflect(p[a] + v[a], v[a], h[a], extent[a] - h[a])
        if mode == "exit":
            p[axis] += sign * vexit
            if p[axis] < -h[axis] - 2 or p[axis] > extent[axis] + h[axis] + 2:
                mode, count = "out", hold
        elif mode == "out":
            count -= 1
            if count <= 0:
                mode = "enter"
        elif mode == "enter":
            p[axis] -= sign * vexit
            if h[axis] <= p[axis] <= extent[axis] - h[axis]:
                mode, v[axis] = "walk", -sign * min(vexit, vmax) * 0.5
    return out


def smooth_factor(rng: np.random.Generator, n: int, ratio: float) -> np.ndarray:
    """A factor in ``[1/sqrt(ratio), sqrt(ratio)]`` easing towards a new random goal every 40-100 frames."""
    lo, hi = 1 / math.sqrt(ratio), math.sqrt(ratio)
    s, rate, goal, switch = 1.0, 0.0, 1.0, 0
    out = np.empty(n)
    for t in range(n):
        out[t] = s
        if t >= switch and ratio > 1:
            for _ in range(8):  # prefer goals far from the current value, so the change is visible
                goal = float(rng.uniform(lo, hi))
                if abs(goal / s - 1) > (hi / lo - 1) / 4:
                    break
            switch = t + int(rng.integers(40, 100))
        rate = 0.85 * rate + 0.15 * min(max(0.05 * (goal / s - 1), -0.012), 0.012)
        s = min(max(s * (1 + rate), lo), hi)
    return out
