"""The exceptions mfv2 raises; the CLI maps each to one line and an exit code."""

from __future__ import annotations

__all__ = [
    "Mfv2Error",
    "ConfigError",
    "UnknownNameError",
    "BackendUnavailableError",
    "ExportError",
    "ShapeError",
]


class Mfv2Error(Exception):
    """Base class of every error mfv2 raises on purpose."""

    exit_code: int = 1


class ConfigError(Mfv2Error, ValueError):
    """The user gave something wrong: a file, an option, a box, a config key."""

    exit_code = 2


class UnknownNameError(ConfigError, KeyError):
    """A name (variant, backend, format) that no registry knows."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BackendUnavailableError(Mfv2Error, ImportError):
    """A runtime backend whose package is not installed."""

    exit_code = 2


class ExportError(Mfv2Error):
    """An export step failed (tracing, simplification, checking, parity)."""


class ShapeError(Mfv2Error, ValueError):
    """A tensor or frame arrived with the wrong shape or dtype."""

    exit_code = 2
