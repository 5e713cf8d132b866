"""Checkpoint formats: official release/training files and the mfv2 native format (any registered family).

Official files are ``{'net': state_dict, ...}``; training checkpoints also pickle project objects
(``settings``, ``stats``). Those load through a restricted unpickler that rebuilds tensors and plain
containers only and turns every other pickled global into an inert placeholder, so no code in the
file runs. The native format is a plain dict that loads with ``torch.load(weights_only=True)``.

Every pickle a file holds goes through a restricted unpickler: PyTorch's own ``weights_only`` one
first, then :class:`_RestrictedUnpickler`; the stock ``pickle.load`` never sees a checkpoint. That
covers the zip format (PyTorch >= 1.6) and the legacy stream format, whose magic number, protocol
and system-info pickles are read with the restricted unpickler too (issue #18). Plain pickles (not
written by ``torch.save``), the pre-1.0 tar format and TorchScript archives are refused: PyTorch
unpacks a tar-format file into a temporary folder before checking it, and hands a TorchScript
archive to ``torch.jit.load``.
"""

from __future__ import annotations

import logging
import os
import pickle
import tarfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

import torch

from mfv2.config import ModelConfig
from mfv2.errors import ConfigError, Mfv2Error
from mfv2.fileio import atomic_path, check_output_file
from mfv2.models.family import FAMILIES, detect_family, family_of, get_family

__all__ = [
    "Checkpoint",
    "read_checkpoint",
    "save_native",
    "save_official",
    "load_pickled",
    "assign_state_dict",
    "NATIVE_FORMAT",
]

M = TypeVar("M", bound=torch.nn.Module)

log = logging.getLogger(__name__)

NATIVE_FORMAT = "mfv2"
_NATIVE_VERSION = 1


def assign_state_dict(model: M, state_dict: Mapping[str, torch.Tensor]) -> M:
    """``model``, built on the meta device (``with torch.device("meta")``: no random initialisation, which the
    weights would overwrite, seconds for a ViT-B), holding ``state_dict`` loaded strictly, as contiguous CPU
    tensors in the module's own dtypes. Every tensor the model holds must be a parameter or buffer of the
    state dict (the model families' are), else it stays on the meta device."""
    want = model.state_dict()
    sd = {k: v.to(device="cpu", dtype=want[k].dtype if k in want else v.dtype).contiguous() for k, v in state_dict.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    return model


@dataclass
class Checkpoint:
    """Weights read from a file, with the architecture recorded in it (native) or detected (official)."""

    state_dict: dict[str, torch.Tensor]
    config: ModelConfig
    format: str  # "native", "official" or "state_dict"
    meta: dict[str, Any] = field(default_factory=dict)
    family: str = "mixformerv2"  # the registered model family (mfv2.models.family)


class _Opaque:
    """Stands in for a pickled object of a class we do not load; calling or building it runs nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Opaque:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


# Globals a checkpoint may call while unpickling: tensor rebuilders and plain containers.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only :data:`_ALLOWED_GLOBALS` and torch dtypes; every other global becomes a placeholder.

    ``find_class`` is the only way a pickle reaches a Python object (``GLOBAL``, ``STACK_GLOBAL``,
    ``INST``, ``OBJ`` and the extension-registry opcodes all call it), so nothing else can run.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        log.debug("checkpoint: %s.%s replaced by a placeholder", module, name)
        return type(name, (_Opaque,), {"__module__": f"mfv2.opaque.{module}"})


def _restricted_load(file: IO[bytes], **kwargs: Any) -> Any:
    """``pickle.load`` with :class:`_RestrictedUnpickler`: what torch calls for every plain pickle of a file."""
    return _RestrictedUnpickler(file, **kwargs).load()


class _RestrictedPickle:
    """The ``pickle_module`` handed to ``torch.load``: both ``load`` and ``Unpickler`` are restricted.

    PyTorch's legacy reader calls ``pickle_module.load`` for the magic number, protocol version,
    system info and storage keys, and ``pickle_module.Unpickler`` for the object itself; the zip
    reader uses ``Unpickler`` only. Neither may be the stock one (issue #18).
    """

    Unpickler = _RestrictedUnpickler
    load = staticmethod(_restricted_load)
    UnpicklingError = pickle.UnpicklingError
    __name__ = "mfv2_restricted_pickle"


Container = Literal["zip", "legacy", "tar", "torchscript", "pickle"]


def _container(path: Path) -> Container:
    """How a torch file is stored: zip (PyTorch >= 1.6), TorchScript zip, pre-1.0 tar or legacy pickle stream."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":  # torch.load's own zip test: the local-file-header magic at offset 0
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            return "zip"  # torch's reader reports the damage
        # torch.load hands archives holding constants.pkl to torch.jit.load (see torch.serialization).
        return "torchscript" if any(n.rsplit("/", 1)[-1] == "constants.pkl" for n in names) else "zip"
    # torch.load tries the tar format on every file that is not a zip archive, so test it the same way.
    if tarfile.is_tarfile(path):
        return "tar"
    # A legacy torch.save stream starts with a pickled magic number; anything else is a plain pickle
    # (or no pickle at all). Reading that first pickle restricted runs nothing.
    from torch.serialization import MAGIC_NUMBER

    with open(path, "rb") as f:
        try:
            first = _RestrictedUnpickler(f).load()
        except Exception:  # a damaged pickle, or none at all (torch's reader then reports it)
            return "pickle" if head[:1] == pickle.PROTO else "legacy"
    return "legacy" if isinstance(first, int) and first == MAGIC_NUMBER else "pickle"


def load_pickled(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` that runs no pickled code: plain files load with ``weights_only``, others restricted.

    Raises:
        ConfigError: a missing or unreadable file, a plain pickle, a TorchScript archive or a
            pre-1.0 tar-format file (those three are refused, not read).
    """
    p = Path(path)
    try:
        return _load_restricted(p)
    except Mfv2Error:
        raise
    except Exception as e:  # crafted or damaged files make torch raise nearly any type; none may escape raw
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise ConfigError(f"{p} is not a readable PyTorch checkpoint ({type(e).__name__}: {reason})") from e


def _load_restricted(p: Path) -> Any:
    kind = _container(p)
    if kind == "tar":
        raise ConfigError(
            f"{p} is in PyTorch's pre-1.0 tar format, which mfv2 does not read (PyTorch unpacks such archives to "
            "disk before checking them); re-save the weights with a current PyTorch in a trusted environment "
            "and pass that file"
        )
    if kind == "pickle":
        raise ConfigError(
            f"{p} is not a torch.save file (a plain or damaged pickle); mfv2 reads torch.save checkpoints only "
            "(re-save the weights with torch.save(state_dict, path))"
        )
    if kind == "torchscript":
        raise ConfigError(
            f"{p} is a TorchScript archive, not a checkpoint; mfv2 loads weights only. "
            "Pass the state dict it was scripted from (torch.save(model.state_dict(), 'model.pt'))"
        )
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Official training checkpoints pickle project classes; load them without running their code.
        log.info("%s holds pickled objects; loading it with a restricted unpickler", p)
    return torch.load(p, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickle)


def _tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read an official or native checkpoint (or a bare state dict) without executing pickled code."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"checkpoint {p} does not exist; pass the path of a .pth.tar or mfv2 .pt file")
    obj = load_pickled(p)
    if isinstance(obj, dict) and obj.get("format") == NATIVE_FORMAT:
        family = get_family(obj.get("family", FAMILIES.names()[0]))  # files written before families name none
        config = family.config_type.from_dict(obj["config"])
        return Checkpoint(_strip_prefix(obj["state_dict"]), config, "native", obj.get("meta", {}), family.name)
    if isinstance(obj, dict) and _tensor_dict(obj.get("net")):
        sd = _strip_prefix(obj["net"])
        meta = {k: obj[k] for k in ("epoch", "net_type") if isinstance(obj.get(k), (int, str))}
        family, config = detect_family(sd, str(p))
        return Checkpoint(sd, config, "official", meta, family.name)
    if _tensor_dict(obj):
        sd = _strip_prefix(obj)
        family, config = detect_family(sd, str(p))
        return Checkpoint(sd, config, "state_dict", family=family.name)
    keys = ", ".join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
    raise ConfigError(
        f"{p} is not a MixFormerV2 checkpoint: expected a dict with 'net' (official) or an mfv2 checkpoint, "
        f"found {keys}"
    )


def _strip_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix DistributedDataParallel adds."""
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    p = check_output_file(path)
    with atomic_path(p) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:  # torch's file writer reports OS errors (disk full) as RuntimeError
            raise ConfigError(f"cannot write {p}: {str(e).strip().splitlines()[0][:200]}") from e
    return p


def save_native(
    state_dict: dict[str, torch.Tensor],
    cfg: ModelConfig,
    path: str | os.PathLike[str],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write the mfv2 native format (loads with ``weights_only=True``) atomically."""
    sd = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    return _atomic_save(
        {"format": NATIVE_FORMAT, "format_version": _NATIVE_VERSION, "family": family_of(cfg).name,
         "config": cfg.to_dict(), "state_dict": sd, "meta": dict(meta or {})},
        path,
    )


def save_official(state_dict: dict[str, torch.Tensor], path: str | os.PathLike[str]) -> Path:
    """Write the official ``{'net': state_dict}`` layout the upstream tracker loads."""
    return _atomic_save({"net": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}}, path)


