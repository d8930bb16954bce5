"""Size limits with defaults and environment overrides."""

from __future__ import annotations

import os

from lrsvqa.errors import ConfigError

#: Most pixels lrsvqa will decode for a raster that cannot be read piecewise
#: (PNG, JPEG, big striped GeoTIFFs without overviews). 1e9 px is about 3 GB as RGB.
DEFAULT_MAX_PIXELS = 1_000_000_000
MAX_PIXELS_ENV = "LRSVQA_MAX_PIXELS"

#: A scene larger than this must be read through overviews; below, "small" scenes
#: may be read whole without a warning.
SMALL_SCENE_PIXELS = 4096 * 4096


def max_pixels() -> int:
    """The pixel limit in force: ``$LRSVQA_MAX_PIXELS`` or the default."""
    raw = os.environ.get(MAX_PIXELS_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        raise ConfigError(
            f"{MAX_PIXELS_ENV}={raw!r} is not a number; set it to a pixel count such as 1e9"
        ) from None
    if value <= 0:
        raise ConfigError(f"{MAX_PIXELS_ENV}={raw!r} must be positive")
    return value


#: Threads reading the tiles of one pyramid level in parallel (GDAL releases the GIL).
READ_THREADS_ENV = "LRSVQA_READ_THREADS"
MAX_READ_THREADS = 32


def read_threads() -> int:
    """``$LRSVQA_READ_THREADS`` or the default, min(4, CPUs); 1 reads serially."""
    raw = os.environ.get(READ_THREADS_ENV, "").strip()
    if not raw:
        return max(1, min(4, os.cpu_count() or 1))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{READ_THREADS_ENV}={raw!r} is not a whole number; set it to 1..{MAX_READ_THREADS}"
        ) from None
    if not 1 <= value <= MAX_READ_THREADS:
        raise ConfigError(f"{READ_THREADS_ENV}={raw!r} must be between 1 and {MAX_READ_THREADS}")
    return value
