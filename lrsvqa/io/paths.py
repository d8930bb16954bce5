"""Path checks and GDAL messages shared by scene reads, conversion and the COG cache."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

from lrsvqa.errors import SceneOpenError

_URL_PREFIXES = ("http://", "https://", "s3://", "gs://", "/vsi")


def is_remote(path: str) -> bool:
    return path.startswith(_URL_PREFIXES)


def check_local_file(path: str) -> None:
    """Clear errors for the common local mistakes, before GDAL sees the path."""
    if is_remote(path):
        return
    p = Path(path)
    if not p.exists():
        raise SceneOpenError(f"{path}: no such file; check the path")
    if p.is_dir():
        raise SceneOpenError(f"{path}: is a folder, not a raster file")
    if p.stat().st_size == 0:
        raise SceneOpenError(f"{path}: the file is empty (0 bytes); re-download or re-export it")


def gdal_message(exc: BaseException) -> str:
    """The most specific GDAL message in an exception chain, on one line."""
    messages: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(messages) < 4:
        text = " ".join(str(seen).split())
        if text and "See previous exception" not in text:
            messages.append(text)
        seen = seen.__cause__ or seen.__context__
    return (messages[-1] if messages else type(exc).__name__)[:200]


@contextlib.contextmanager
def without_crs_warnings() -> Iterator[None]:
    """Silence rasterio's ``NotGeoreferencedWarning``: a raster without CRS (a PNG) is
    read, converted and cached in pixel coordinates, and ``info()`` says so."""
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield
