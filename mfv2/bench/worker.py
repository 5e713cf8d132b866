"""The child process of a benchmark row or of the GEMM peak probe.

``python -m mfv2.bench.worker --row SPEC --out RESULT`` runs one row (:func:`mfv2.bench.rows.run_row`)
``--probe SPEC`` the GEMM peak probe and ``--auto SPEC`` the ``backend="auto"`` calibration, each in a process of its own so its peak resident memory is
its own and an ONNX Runtime or OpenVINO row imports no torch; the JSON result goes to ``--out``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence

from mfv2.bench.rows import run_row


def _main(argv: Sequence[str] | None = None) -> int:
    """Child-process entry: run one row or the GEMM probe and write the JSON result to ``--out``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mfv2.bench.worker")
    job = parser.add_mutually_exclusive_group(required=True)
    job.add_argument("--row", help="JSON row spec")
    job.add_argument("--probe", help="JSON probe spec")
    job.add_argument("--auto", help='JSON {"artifact": EXPORT_DIR}: what backend="auto" picks there')
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.row:
        result = run_row(json.loads(args.row))
    elif args.auto:
        from mfv2.errors import Mfv2Error
        from mfv2.runtimes.auto import choose

        try:
            result = {"status": "ok", **choose(json.loads(args.auto)["artifact"]).to_dict()}
        except Mfv2Error as e:
            result = {"status": f"failed: {e}"}
    else:
        from mfv2.bench.probe import measure_peak

        spec = json.loads(args.probe)
        peaks = {
            p: measure_peak(p, threads=spec["threads"], sizes=spec["sizes"], duration=spec["duration"]).to_dict()
            for p in spec["precisions"]
        }
        result = {"status": "ok", "peaks": peaks}
    from mfv2.fileio import atomic_write_text

    atomic_write_text(args.out, json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
