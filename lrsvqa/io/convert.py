"""Convert any GDAL raster to a tiled, compressed cloud-optimised GeoTIFF with overviews."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window as RioWindow

from lrsvqa.errors import ConfigError, RasterReadError, SceneOpenError
from lrsvqa.io.gdal_config import configure_gdal
from lrsvqa.io.memory import decode_rows
from lrsvqa.io.paths import check_local_file, gdal_message, without_crs_warnings

Progress = Callable[[int], None]


def convert_to_cog(
    src_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    *,
    blocksize: int = 512,
    compress: str = "deflate",
    overwrite: bool = False,
    progress: bool = True,
    desc: str = "copy",
    tags: dict[str, str] | None = None,
    part_suffix: str = ".part",
) -> Path:
    """Copy ``src_path`` to a COG at ``dst_path``; CRS, transform, nodata and bands kept.

    Streams: rows are copied in strips (PNG/JPEG decode once, front to back) into an
    uncompressed tiled file, overviews are built from that tiled file, and GDAL's
    COG driver compresses the final layout; GDAL's block cache is bounded
    (``lrsvqa.io.gdal_config``), so peak memory does not grow with the image. The
    result is written beside the target and renamed into place only when complete.
    """
    src_path, dst = os.fspath(src_path), Path(dst_path)
    check_local_file(src_path)
    if blocksize % 16 or blocksize < 64:
        raise ConfigError(f"--blocksize {blocksize}: use a multiple of 16, at least 64")
    if dst.exists() and not overwrite:
        raise ConfigError(f"{dst}: already exists; pass --overwrite or choose another name")
    if Path(src_path).resolve() == dst.resolve():
        raise ConfigError(f"{dst}: the output must differ from the input")
    tmp = dst.with_name(dst.name + part_suffix + ".tif")
    out_tmp = dst.with_name(dst.name + part_suffix)
    configure_gdal()
    try:
        # A PNG without georeferencing converts to a COG without one: opening it,
        # writing the tiled copy and the COG layout all warn about that.
        with without_crs_warnings():
            src = rasterio.open(src_path)
            with src:
                profile = src.profile.copy()
                profile.update(
                    driver="GTiff",
                    tiled=True,
                    blockxsize=blocksize,
                    blockysize=blocksize,
                    # The intermediate is read back twice (overviews, COG layout): not
                    # compressing it saves a compress and two decompress passes.
                    compress="none",
                    BIGTIFF="IF_SAFER",
                )
                profile.pop("photometric", None)  # e.g. YCbCr only makes sense with JPEG
                step = decode_rows(src.height, blocksize)
                rows = range(0, src.height, step)
                with rasterio.open(tmp, "w", **profile) as dst_ds:
                    dst_ds.colorinterp = src.colorinterp
                    if tags:
                        dst_ds.update_tags(**tags)
                    for y0 in _progress(rows, progress, desc, unit="strip"):
                        window = RioWindow(0, y0, src.width, min(step, src.height - y0))
                        _copy_strip(src, dst_ds, window)
                    factors = _factors(src.width, src.height, blocksize)
                    if factors:
                        for _ in _progress(range(1), progress, "overviews", unit="step"):
                            dst_ds.build_overviews(factors, Resampling.average)
            for _ in _progress(range(1), progress, "COG layout", unit="step"):
                rasterio.shutil.copy(
                    tmp,
                    out_tmp,
                    driver="COG",
                    COMPRESS=compress.upper(),
                    BLOCKSIZE=blocksize,
                    OVERVIEWS="FORCE_USE_EXISTING",
                    BIGTIFF="IF_SAFER",
                    NUM_THREADS="ALL_CPUS",
                )
            os.replace(out_tmp, dst)
    except RasterioError as exc:
        message = gdal_message(exc)
        if "not recognized" in message or "not a supported" in message.lower():
            raise SceneOpenError(f"{src_path}: not a raster GDAL can read ({message})") from None
        raise RasterReadError(
            f"{src_path}: conversion failed ({message}); the input may be damaged"
        ) from None
    finally:
        for leftover in (tmp, out_tmp):
            leftover.unlink(missing_ok=True)
    return dst


def _copy_strip(src: Any, dst: Any, window: RioWindow) -> None:
    dst.write(src.read(window=window), window=window)


def _factors(width: int, height: int, blocksize: int) -> list[int]:
    n = (
        math.ceil(math.log2(max(width, height) / blocksize))
        if max(width, height) > blocksize
        else 0
    )
    return [2**i for i in range(1, n + 1)]


def _progress(items: range, enabled: bool, desc: str, unit: str) -> Iterable[int]:
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit=unit, disable=None if enabled else True, leave=False)
