"""mfv2.artifacts.manifest: the manifest round trip, its one-line errors, the exporter fingerprint, and the
floor's imports (no torch, ONNX or runtime; nothing of mfv2 above errors / config / fileio / registry)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mfv2.artifacts.manifest as manifest
from mfv2.artifacts import MANIFEST_NAME, Artifact, Manifest, load_manifest
from mfv2.config import TrackerConfig, variant_config
from mfv2.errors import ConfigError


def _manifest() -> Manifest:
    m = Manifest(model=variant_config("tiny"), tracker=TrackerConfig())
    m.add(Artifact(file="model.onnx", graph="full", precision="fp32", format="onnx", inputs={"search": [1, 3, 64, 64]}))
    m.add(Artifact(file="model.int8-dynamic.onnx", graph="full", precision="int8", format="onnx-dynamic"))
    m.rejected.append({"format": "onnx", "precision": "fp16", "graph": "full", "file": "model.fp16.onnx",
                       "failed": ["boxes 0.2 > 0.01"], "parity": {}, "tolerance": {}})
    return m


def test_manifest_round_trips_through_its_file(tmp_path: Path) -> None:
    m = _manifest()
    assert m.save(tmp_path) == tmp_path / MANIFEST_NAME
    back = load_manifest(tmp_path)
    assert back == m and back.to_dict() == m.to_dict()
    assert load_manifest(tmp_path / MANIFEST_NAME) == m  # the file itself, too
    assert back.find("full").file == "model.onnx" and back.find("full", "int8") is None
    assert back.precisions() == ["fp32"] and back.precisions("onnx-dynamic") == ["int8"]
    assert back.rejection("fp16", ("onnx",)) == "model.fp16.onnx failed its parity gate at export (boxes 0.2 > 0.01)"
    assert back.rejection("fp16", ("openvino",)) is None


def test_add_replaces_the_same_graph_precision_and_format() -> None:
    m = _manifest()
    m.add(Artifact(file="again.onnx", graph="full", precision="fp32", format="onnx"))
    assert [a.file for a in m.artifacts] == ["model.int8-dynamic.onnx", "again.onnx"]


def test_bad_manifests_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not an mfv2 export directory .*create one with 'mfv2 export'"):
        load_manifest(tmp_path)
    data = _manifest().to_dict()
    cases = {
        "not an mfv2 export manifest": {**data, "format": "other"},
        "newer than this mfv2 reads": {**data, "version": 99},
        "malformed export manifest": {k: v for k, v in data.items() if k != "model"},
    }
    for message, body in cases.items():
        (tmp_path / MANIFEST_NAME).write_text(json.dumps(body))
        with pytest.raises(ConfigError, match=message) as info:
            load_manifest(tmp_path)
        assert "\n" not in str(info.value)
    (tmp_path / MANIFEST_NAME).write_text("{")
    with pytest.raises(ConfigError, match=r"manifest.json is not valid JSON .*; export the model again with 'mfv2 export'$"):
        load_manifest(tmp_path)


def test_the_exporter_fingerprint_follows_the_traced_model_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = Path(manifest.__file__).parent.parent
    for sub in ("artifacts", "exporters", "models"):
        shutil.copytree(package / sub, tmp_path / sub)
    monkeypatch.setattr(manifest, "__file__", str(tmp_path / "artifacts" / "manifest.py"))
    fingerprint = manifest.exporter_fingerprint.__wrapped__  # the uncached function
    before = fingerprint()
    assert before == fingerprint() == manifest.exporter_fingerprint()
    for changed in ("models/mixformerv2/vit.py", "models/factory.py", "exporters/onnx.py", "artifacts/formats.py"):  # model graph, exporter, file names
        path = tmp_path / changed
        path.write_text(path.read_text() + "\n# a change\n")
        after = fingerprint()
        assert after != before, changed
        before = after


def test_artifacts_import_only_the_floor() -> None:
    heavy = ("torch", "onnx", "onnxruntime", "openvino", "tensorrt", "cv2")
    code = (
        "import json, sys, mfv2.artifacts; "
        f"print(json.dumps([sorted(m for m in sys.modules if m.startswith('mfv2')), [m for m in {heavy!r} if m in sys.modules]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    modules, loaded = json.loads(out)
    ours = {"mfv2", "mfv2.artifacts", "mfv2.artifacts.manifest", "mfv2.artifacts.formats", "mfv2.artifacts.engine",
            "mfv2.artifacts.families"}
    assert set(modules) - ours <= {"mfv2.errors", "mfv2.config", "mfv2.fileio", "mfv2.registry"}
    assert loaded == []


def test_a_stand_alone_onnx_without_mfv2_metadata_is_refused(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from mfv2.artifacts import manifest_from_onnx

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    onnx.save(model, str(tmp_path / "plain.onnx"))
    with pytest.raises(ConfigError, match="carries no mfv2 metadata; export it with 'mfv2 export'"):
        manifest_from_onnx(tmp_path / "plain.onnx")
    model.metadata_props.add(key="mfv2", value="{not json")
    onnx.save(model, str(tmp_path / "broken.onnx"))
    with pytest.raises(ConfigError, match="mfv2 metadata is not valid JSON"):
        manifest_from_onnx(tmp_path / "broken.onnx")
