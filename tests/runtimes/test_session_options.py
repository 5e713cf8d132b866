"""Runtime defaults for shared cores: no ORT spinning, no OpenVINO pinning, one LATENCY stream."""

from __future__ import annotations

import pytest

from mfv2.errors import ConfigError


def test_onnxruntime_threads_do_not_spin_by_default():
    pytest.importorskip("onnxruntime")
    from mfv2.runtimes.onnxruntime_backend import OnnxRuntimeBackend, _session_options

    assert OnnxRuntimeBackend().spinning is False
    off, on = _session_options(2, False), _session_options(2, True)
    assert off.intra_op_num_threads == 2 and off.inter_op_num_threads == 1
    for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
        assert off.get_session_config_entry(key) == "0" and on.get_session_config_entry(key) == "1"


def test_openvino_config_unpinned_one_latency_stream(tiny_export):
    pytest.importorskip("openvino")
    from mfv2.runtimes import load_backend
    from mfv2.runtimes.openvino_backend import OpenVinoBackend

    config = OpenVinoBackend(precision="int8", threads=2).config()
    assert config["ENABLE_CPU_PINNING"] is False and config["NUM_STREAMS"] == 1 and config["INFERENCE_NUM_THREADS"] == 2
    assert "NUM_STREAMS" not in OpenVinoBackend(hint="throughput").config()
    assert OpenVinoBackend(pinning=True, streams=2).config()["ENABLE_CPU_PINNING"] is True
    with pytest.raises(ConfigError, match="streams"):
        OpenVinoBackend(streams=0)
    with load_backend("openvino", tiny_export, threads=1) as runner:  # the compiled model took the settings
        compiled = runner._decoder._compiled
        assert compiled.get_property("ENABLE_CPU_PINNING") is False and compiled.get_property("NUM_STREAMS") == 1
