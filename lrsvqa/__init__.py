"""lrsvqa: ask a vision-language model about gigapixel remote-sensing images."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from lrsvqa.errors import (
    BandError,
    ConfigError,
    DataError,
    LrsvqaError,
    LrsvqaWarning,
    ModelError,
    ModelNotFoundError,
    NoOverviewsWarning,
    RasterReadError,
    SceneOpenError,
    SceneTooLargeError,
    WordNetMissingError,
)

# Public names resolved lazily so that `import lrsvqa` stays light (no torch).
_LAZY: dict[str, str] = {
    "open_scene": "lrsvqa.io",
    "Scene": "lrsvqa.io",
    "Window": "lrsvqa.io",
    "DynamicImagePyramid": "lrsvqa.pyramid",
    "PyramidConfig": "lrsvqa.pyramid",
    "Tile": "lrsvqa.pyramid",
    "Level": "lrsvqa.pyramid",
    "FocusConfig": "lrsvqa.focus",
    "PruneConfig": "lrsvqa.prune",
    "Pipeline": "lrsvqa.pipeline",
    "Answer": "lrsvqa.pipeline",
    "ask": "lrsvqa.pipeline",
    "to_geodataframe": "lrsvqa.pipeline",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lrsvqa' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


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
    "__version__",
    *_LAZY,
]
