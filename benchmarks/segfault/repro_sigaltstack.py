"""Minimal reproduction: OpenVINO's CPU plugin leaves the calling thread's alternate signal stack
(sigaltstack) pointing at memory it has unmapped; the next signal whose handler runs on the alternate
stack (every Python-level handler: CPython installs them with SA_ONSTACK) kills the process with a
SIGSEGV the kernel raises itself (si_code SI_KERNEL, no faulting instruction, faulthandler silent).

Each CPU plugin instance (one per ``ov.Core`` that touches the CPU device) mmaps a stack and installs
it with ``sigaltstack(&new, &old)``; its destructor restores ``old`` only if ``new`` is still the current
stack, and unmaps ``new`` either way. Two instances destroyed in creation order (not LIFO) therefore
leave the thread on the first one's stack, already unmapped.

    python benchmarks/segfault/repro_sigaltstack.py            # the matrix below, one child per case
    python benchmarks/segfault/repro_sigaltstack.py --case fifo,sigchld,subprocess   # one case, in-process

A case is ORDER,SIGNAL,LAUNCHER[,repair]: ORDER fifo|lifo|one (how two Cores are dropped, or a single
Core), SIGNAL sigchld (a Python SIGCHLD handler, as torch's DataLoader installs) | sigint (Python's own
KeyboardInterrupt handler) | none, LAUNCHER subprocess|mp-spawn|torch-spawn (the child whose exit sends
SIGCHLD), ``repair`` re-installs a valid alternate stack before the signal.
"""

from __future__ import annotations

import ctypes
import faulthandler
import itertools
import multiprocessing
import os
import signal
import subprocess
import sys


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.getauxval.restype = ctypes.c_ulong
_KEEP: list = []  # alternate stacks installed by repair(), alive for the process


def altstack() -> str:
    """The calling thread's alternate signal stack, and whether its memory is still mapped."""
    s = _StackT()
    _libc.sigaltstack(None, ctypes.byref(s))
    if s.ss_flags & 2:  # SS_DISABLE
        return "disabled"
    sp = s.ss_sp or 0
    with open("/proc/self/maps") as f:
        mapped = any(int(lo, 16) <= sp < int(hi, 16) for lo, hi in (line.split()[0].split("-") for line in f))
    return f"sp={sp:#x} size={s.ss_size} {'mapped' if mapped else 'UNMAPPED'}"


def repair(size: int = 64 * 1024) -> None:
    """Install a fresh alternate stack that lives as long as the process."""
    buf = ctypes.create_string_buffer(size)
    _KEEP.append(buf)
    s = _StackT(ctypes.cast(buf, ctypes.c_void_p), 0, size)
    if _libc.sigaltstack(ctypes.byref(s), None) != 0:
        raise OSError(ctypes.get_errno(), "sigaltstack")


def _child(*_args) -> None:
    pass


def run_case(order: str, sig: str, launcher: str, do_repair: bool) -> None:
    if launcher == "torch-spawn":
        import torch.multiprocessing  # noqa: F401  (first, as in the suite: imported after the damage, its
        # libraries can be mapped over the freed stack, which then no longer faults but gets overwritten)
    import openvino as ov

    print("start:", altstack(), "faulthandler", faulthandler.is_enabled(), flush=True)
    cores = [ov.Core() for _ in range(1 if order == "one" else 2)]
    for core in cores:
        core.get_property("CPU", "FULL_DEVICE_NAME")  # creates this Core's CPU plugin instance
        print("CPU plugin loaded:", altstack(), flush=True)
    del core
    if order == "lifo":
        cores.reverse()
    while cores:
        del cores[0]
        print("a Core dropped:", altstack(), flush=True)
    if do_repair:
        repair()
        print("repaired:", altstack(), flush=True)
    if sig == "sigint":
        try:
            os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C
        except KeyboardInterrupt:
            print("KeyboardInterrupt raised as it should be", flush=True)
        return
    if sig == "sigchld":
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    if launcher == "subprocess":
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    elif launcher == "mp-spawn":
        p = multiprocessing.get_context("spawn").Process(target=_child)
        p.start()
        p.join()
    elif launcher == "torch-spawn":
        import torch.multiprocessing as mp

        mp.spawn(_child, nprocs=2, join=True)
    print("child exited, parent alive", flush=True)


def versions() -> str:
    import platform

    out = [f"python {platform.python_version()}", f"kernel {platform.release()}",
           f"AT_MINSIGSTKSZ {_libc.getauxval(51)}"]
    for mod in ("openvino", "torch", "onnxruntime", "cv2"):
        try:
            out.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            out.append(f"{mod} -")
    return ", ".join(out)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--case"]:
        order, sig, launcher, *rest = argv[1].split(",")
        run_case(order, sig, launcher, rest == ["repair"])
        return 0
    print(versions())
    cases = [("fifo", "sigchld", "subprocess"), ("fifo", "none", "subprocess"), ("lifo", "sigchld", "subprocess"),
             ("one", "sigchld", "subprocess"), ("fifo", "sigchld", "mp-spawn"), ("fifo", "sigint", "-")]
    if "--torch" in argv:
        cases.append(("fifo", "sigchld", "torch-spawn"))
    for (order, sig, launcher), fh, rep in itertools.product(cases, ("-Xfaulthandler", ""), ("", ",repair")):
        cmd = [sys.executable, *([fh] if fh else []), __file__, "--case", f"{order},{sig},{launcher}{rep}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        verdict = "ok" if r.returncode == 0 else ("SIGSEGV" if r.returncode == -signal.SIGSEGV else f"rc {r.returncode}")
        print(f"{order:4s} {sig:7s} {launcher:11s} faulthandler={'on ' if fh else 'off'} "
              f"{'repair' if rep else '      '} -> {verdict}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
