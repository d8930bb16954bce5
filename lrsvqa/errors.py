"""One error hierarchy: every error a user can cause is an ``LrsvqaError``.

Each subclass also inherits the matching builtin so callers can catch either.
Messages name the file (or value) at fault and say what to do about it.
"""

from __future__ import annotations


class LrsvqaError(Exception):
    """Base class of every error lrsvqa raises for bad input or environment."""


class SceneOpenError(LrsvqaError, OSError):
    """A scene cannot be opened: missing, empty, not a raster, unreachable."""


class RasterReadError(LrsvqaError, OSError):
    """A scene opened but its pixels cannot be read (damaged or truncated file)."""


class SceneTooLargeError(LrsvqaError, ValueError):
    """A read would need more memory than the configured limit allows."""


class BandError(LrsvqaError, ValueError):
    """A band selection does not fit the scene."""


class ConfigError(LrsvqaError, ValueError):
    """An option or configuration value is out of range or inconsistent."""


class ModelError(LrsvqaError, RuntimeError):
    """A model cannot be loaded or used (unknown family, missing weights, text-only)."""


class ModelNotFoundError(ModelError, LookupError):
    """A model id is not in the local cache (offline) or not on the hub."""


class DataError(LrsvqaError, ValueError):
    """A benchmark or answer file is malformed; the message gives line numbers."""


class WordNetMissingError(LrsvqaError, RuntimeError):
    """WordNet data needed by the official scorer is not installed."""


class LrsvqaWarning(UserWarning):
    """Base class of lrsvqa's warnings."""


class NoOverviewsWarning(LrsvqaWarning):
    """A large scene has no overviews: coarse reads decimate the full image (slow)."""


__all__ = [
    "BandError",
    "ConfigError",
    "DataError",
    "LrsvqaError",
    "LrsvqaWarning",
    "ModelError",
    "ModelNotFoundError",
    "NoOverviewsWarning",
    "RasterReadError",
    "SceneOpenError",
    "SceneTooLargeError",
    "WordNetMissingError",
]
