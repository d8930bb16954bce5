"""Map tiles of a scene through rio-tiler, in lrsvqa's own band choice and stretch.

A scene with a CRS gives XYZ Web Mercator tiles (rio-tiler's ``Reader``: overviews,
reprojection); one without gives tiles of a pixel-coordinate view (``ImageReader``).
Either way the pixels go through the scene's band choice and the same 2–98 % stretch the
model sees (``Scene.stretch``), so the map shows what the model looked at.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import rasterio
from PIL import Image

from lrsvqa.errors import LrsvqaError, RasterReadError
from lrsvqa.io import BandStretch, Window, open_scene
from lrsvqa.io.gdal_config import REMOTE_OPEN_OPTIONS as REMOTE_GDAL_OPTIONS
from lrsvqa.io.gdal_config import configure_gdal
from lrsvqa.serve.scenes import SceneRef

TILE_SIZE = 256
MEMORY_SCENES = 2  # decoded PNG/JPEG scenes kept in memory for tiles


class TileService:
    """Renders PNG tiles; keeps stretch statistics and decoded in-memory scenes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scenes: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._memory: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    # -- what the page needs to set up a layer -------------------------------------

    def layer_info(self, ref: SceneRef, bands: tuple[int, ...] | None) -> dict[str, Any]:
        """Tile scheme ('mercator' or 'pixel') and zoom range of ``ref``."""
        meta = self._meta(ref, bands)
        with self._reader(ref, bands, meta) as reader:
            info = {
                "scheme": "mercator" if meta["crs"] else "pixel",
                "minzoom": int(reader.minzoom),
                "maxzoom": int(reader.maxzoom),
                "tile_size": TILE_SIZE,
                "width": meta["width"],
                "height": meta["height"],
            }
            if meta["crs"]:
                info["bounds"] = list(reader.get_geographic_bounds("EPSG:4326"))
            return info

    # -- tiles ---------------------------------------------------------------------

    def tile(
        self, ref: SceneRef, z: int, x: int, y: int, bands: tuple[int, ...] | None = None
    ) -> bytes | None:
        """A 256 px RGBA PNG, or None when the tile lies outside the scene."""
        from rio_tiler.errors import TileOutsideBounds

        try:
            meta = self._meta(ref, bands)
            with self._reader(ref, bands, meta) as reader:
                kwargs: dict[str, Any] = {"resampling_method": "bilinear"}
                if meta["crs"]:
                    kwargs["reproject_method"] = "bilinear"
                image = reader.tile(x, y, z, tilesize=TILE_SIZE, indexes=meta["indexes"], **kwargs)
        except TileOutsideBounds:
            return None
        except LrsvqaError:
            raise
        except Exception as exc:  # rasterio/rio-tiler errors on a damaged file
            raise RasterReadError(
                f"{ref.id}: cannot read tile {z}/{x}/{y} ({' '.join(str(exc).split())[:160]}); "
                "the file is damaged or truncated"
            ) from None
        return encode_png(to_rgba(image.array, meta["stretch"]))

    # -- internals -----------------------------------------------------------------

    def _meta(self, ref: SceneRef, bands: tuple[int, ...] | None) -> dict[str, Any]:
        """Band indexes, stretch and CRS of a scene, computed once per file version."""
        key = (*_identity(ref), bands)
        with self._lock:
            found = self._scenes.get(key)
        if found is not None:
            return found
        with open_scene(ref.path, bands=bands) as scene:
            memory = scene.read_mode == "memory"
            stretch: list[BandStretch] | None = None
            if not memory and scene.dtype != "uint8":
                stretch = scene.stretch()
            meta = {
                "key": key,
                "crs": scene.crs.to_string() if scene.crs else None,
                "width": scene.width,
                "height": scene.height,
                # In-memory scenes are already lrsvqa's RGB (bands chosen, stretched).
                "indexes": (1, 2, 3) if memory else tuple(scene.bands),
                "stretch": stretch,
                "memory": memory,
            }
        with self._lock:
            if len(self._scenes) > 256:
                self._scenes.clear()
            self._scenes[key] = meta
        return meta

    @contextmanager
    def _reader(
        self, ref: SceneRef, bands: tuple[int, ...] | None, meta: dict[str, Any]
    ) -> Iterator[Any]:
        from rio_tiler.errors import NoOverviewWarning
        from rio_tiler.io import ImageReader, Reader

        cls = Reader if meta["crs"] else ImageReader
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoOverviewWarning)
            if meta["memory"]:
                with (
                    self._memory_dataset(ref, bands, meta) as dataset,
                    cls(ref.id, dataset=dataset) as reader,
                ):
                    yield reader
            elif ref.remote:
                # lrsvqa's remote settings (few range requests, no directory listing), and
                # a timeout so a slow host cannot hold a thread forever.
                configure_gdal()
                with (
                    rasterio.Env(**REMOTE_GDAL_OPTIONS, GDAL_HTTP_TIMEOUT=30),
                    cls(ref.path) as reader,
                ):
                    yield reader
            else:
                with cls(ref.path) as reader:
                    yield reader

    @contextmanager
    def _memory_dataset(
        self, ref: SceneRef, bands: tuple[int, ...] | None, meta: dict[str, Any]
    ) -> Iterator[Any]:
        """A PNG/JPEG scene decoded once (within LRSVQA_MAX_PIXELS) into a tiled in-memory
        GeoTIFF with overviews. This is the one place to plug in an on-disk COG cache."""
        key = meta["key"]
        with self._lock:
            memfile = self._memory.get(key)
            if memfile is not None:
                self._memory.move_to_end(key)
        if memfile is None:
            memfile = _decode_to_memory(ref, bands)
            with self._lock:
                self._memory[key] = memfile
                while len(self._memory) > MEMORY_SCENES:
                    _, old = self._memory.popitem(last=False)
                    old.close()
        with memfile.open() as dataset:
            yield dataset

    def close(self) -> None:
        with self._lock:
            for memfile in self._memory.values():
                memfile.close()
            self._memory.clear()
            self._scenes.clear()


def _identity(ref: SceneRef) -> tuple[Any, ...]:
    if ref.remote:
        return (ref.path,)
    stat = os.stat(ref.path)
    return (ref.path, stat.st_mtime_ns, stat.st_size)


def _decode_to_memory(ref: SceneRef, bands: tuple[int, ...] | None) -> Any:
    from rasterio.enums import Resampling
    from rasterio.io import MemoryFile

    with open_scene(ref.path, bands=bands) as scene:
        rgb = scene.read(Window(0, 0, scene.width, scene.height))
        crs, transform = scene.crs, scene.transform
    height, width = rgb.shape[:2]
    memfile = MemoryFile()
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 3,
        "dtype": "uint8",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    if crs is not None:  # no CRS: leave the geotransform out (the pixel view needs none)
        profile.update(crs=crs, transform=transform)
    with memfile.open(**profile) as dst:
        dst.write(np.moveaxis(rgb, -1, 0))
        factors: list[int] = []
        side = max(width, height)
        while side > TILE_SIZE:
            factors.append(2 ** (len(factors) + 1))
            side //= 2
        if factors:
            dst.build_overviews(factors, Resampling.average)
    return memfile


def to_rgba(data: np.ma.MaskedArray, stretch: list[BandStretch] | None) -> np.ndarray:
    """(bands, h, w) masked values → (h, w, 4) uint8: lrsvqa's stretch, alpha = valid."""
    values = np.ma.getdata(data)
    invalid = np.ma.getmaskarray(data)
    valid = ~invalid
    if values.dtype.kind == "f":
        valid &= np.isfinite(values)
    if stretch is None:
        channels = np.where(valid, values, 0).astype(np.uint8)
    else:
        channels = np.stack([s.apply(values[i], valid[i]) for i, s in enumerate(stretch)])
    if channels.shape[0] == 1:
        channels = np.repeat(channels, 3, axis=0)
    alpha = np.where(valid.all(axis=0), 255, 0).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(np.concatenate([channels, alpha[None]]), 0, -1))


def encode_png(rgba: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
