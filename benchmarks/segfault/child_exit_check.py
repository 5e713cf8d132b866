"""Run after tests that use OpenVINO, in the same pytest process: a child process exits while a Python
SIGCHLD handler is installed (torch's DataLoader leaves one for the rest of the process), i.e. what
tests/training/test_training.py's DDP test does after test_resume_continues_bit_exactly.

    python -m pytest -q -p no:cacheprovider tests/runtimes/test_runtimes.py benchmarks/segfault/child_exit_check.py

Dies with SIGSEGV (rc 139) while OpenVINO has left the main thread's alternate signal stack unmapped.
"""

import signal
import subprocess
import sys

from repro_sigaltstack import altstack  # noqa: E402  (pytest puts this folder on sys.path)


def test_a_child_exits_under_a_python_sigchld_handler():
    print("alternate stack before:", altstack())
    previous = signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    try:
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    finally:
        signal.signal(signal.SIGCHLD, previous)
