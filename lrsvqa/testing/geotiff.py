"""A GeoTIFF factory for tests, demos and benchmarks.

Writes block by block, so a 100,000 px scene costs the memory of one block. Pixel
values follow a known formula (``expected_values``) so reads can be checked exactly.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, Resampling

# Fill(x0, y0, width, height, band_index) -> (height, width) values for that block.
Fill = Callable[[int, int, int, int, int], np.ndarray]

DEFAULT_CRS = "EPSG:32633"
DEFAULT_TRANSFORM = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_500_000.0)


def expected_values(x0: int, y0: int, width: int, height: int, band: int) -> np.ndarray:
    """The factory's default pattern (float64): smooth, distinct per band, exact per pixel."""
    ys, xs = np.mgrid[y0 : y0 + height, x0 : x0 + width]
    return ((xs * 3 + ys * 5 + band * 61) % 251).astype(np.float64)


def write_geotiff(
    path: str | os.PathLike[str],
    width: int,
    height: int,
    *,
    count: int = 3,
    dtype: str = "uint8",
    tiled: bool = True,
    blocksize: int = 256,
    overviews: Sequence[int] | bool = False,
    crs: str | None = DEFAULT_CRS,
    transform: Affine | None = None,
    nodata: float | None = None,
    fill: Fill | None = None,
    compress: str | None = "deflate",
    sparse: bool = False,
    colorinterp: Sequence[ColorInterp] | None = None,
    driver: str = "GTiff",
) -> Path:
    """Write a synthetic raster and return its path.

    ``overviews=True`` builds factors 2, 4, … down to one block; ``sparse=True`` leaves
    unwritten blocks empty (only blocks where ``fill`` returns non-zero are written).
    """
    path = Path(path)
    fill = fill or expected_values
    profile: dict[str, object] = {
        "driver": driver,
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "crs": crs,
        "transform": (transform or DEFAULT_TRANSFORM) if crs or transform else Affine.identity(),
        "nodata": nodata,
    }
    if driver == "GTiff":
        profile.update(tiled=tiled, BIGTIFF="IF_SAFER")
        if tiled:
            profile.update(blockxsize=blocksize, blockysize=blocksize)
        else:
            profile.update(blockysize=max(1, min(height, 8)))
        if compress:
            profile["compress"] = compress
        if sparse:
            profile["SPARSE_OK"] = "TRUE"
    step = blocksize if tiled else max(1, min(height, blocksize))
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        if colorinterp is not None:
            dst.colorinterp = list(colorinterp)
        for y0 in range(0, height, step):
            h = min(step, height - y0)
            x_step = blocksize if tiled else width
            for x0 in range(0, width, x_step):
                w = min(x_step, width - x0)
                block = np.stack([fill(x0, y0, w, h, b) for b in range(count)])
                if sparse and not np.any(block):
                    continue
                dst.write(block.astype(dtype), window=rasterio.windows.Window(x0, y0, w, h))
        factors = _overview_factors(width, height, blocksize) if overviews is True else overviews
        if factors:
            dst.build_overviews(list(factors), Resampling.average)
    return path


def _overview_factors(width: int, height: int, blocksize: int) -> list[int]:
    levels = max(1, math.ceil(math.log2(max(width, height) / blocksize)))
    return [2**i for i in range(1, levels + 1)]
