"""A scene: one raster opened for windowed, overview-aware reads to uint8 RGB.

Memory follows the pixels a caller asks for, never the image's size: a read of a
native window decodes only the blocks under it, and a coarse read goes through the
coarsest overview that is still at least as fine as the requested output.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from lrsvqa.errors import (
    BandError,
    NoOverviewsWarning,
    RasterReadError,
    SceneOpenError,
    SceneTooLargeError,
)
from lrsvqa.io.limits import SMALL_SCENE_PIXELS, max_pixels
from lrsvqa.io.stretch import BandStretch, percentile_stretch
from lrsvqa.io.window import Window

log = logging.getLogger(__name__)

_URL_PREFIXES = ("http://", "https://", "s3://", "gs://", "/vsi")
# Options that keep remote opens to a few range requests (local files keep sidecars: .ovr).
_REMOTE_GDAL_OPTIONS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
}
_STATS_SIDE = 1024  # long side of the sample the stretch statistics come from
_CONVERT_HINT = "convert it first with `lrsvqa convert {path} OUT.tif` (tiled COG with overviews)"


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


@dataclass(frozen=True)
class ReadPlan:
    """How one read is served: which overview and at what decimation."""

    overview_level: int | None  # None = full resolution
    factor: float  # native pixels per overview pixel (1.0 at full resolution)


@dataclass
class SceneInfo:
    """Metadata of a scene, as ``lrsvqa inspect`` reports it."""

    path: str
    driver: str
    width: int
    height: int
    count: int
    dtypes: list[str]
    bands: tuple[int, ...]
    colorinterp: list[str]
    crs: str | None
    epsg: int | None
    transform: list[float]
    resolution: tuple[float, float]
    bounds: tuple[float, float, float, float]
    rotated: bool
    overviews: list[int]
    block_shape: tuple[int, int]
    tiled: bool
    compression: str | None
    nodata: float | None
    size_bytes: int | None
    read_mode: str
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def open_scene(path: str | os.PathLike[str], bands: Sequence[int] | None = None) -> Scene:
    """Open a raster (local path or http(s) URL) for windowed uint8 RGB reads."""
    return Scene(path, bands=bands)


class Scene:
    """An open raster. Use as a context manager, or call ``close()``."""

    def __init__(self, path: str | os.PathLike[str], bands: Sequence[int] | None = None):
        self.path = os.fspath(path)
        self._env = rasterio.Env(**(_REMOTE_GDAL_OPTIONS if is_remote(self.path) else {}))
        check_local_file(self.path)
        with self._env:
            try:
                with warnings.catch_warnings():
                    # A raster without CRS works in pixel coordinates; info() says so.
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    self._src = rasterio.open(self.path)
            except RasterioError as exc:
                raise SceneOpenError(
                    f"{self.path}: not a raster GDAL can read ({gdal_message(exc)}); "
                    "check the file is a complete GeoTIFF, PNG or JPEG"
                ) from None
        src = self._src
        self.width: int = src.width
        self.height: int = src.height
        self.count: int = src.count
        self.dtype: str = src.dtypes[0]
        self.crs = src.crs
        self.transform: Affine = src.transform
        self.nodata: float | None = src.nodata
        self.driver: str = src.driver
        self.block_shape: tuple[int, int] = tuple(src.block_shapes[0])
        self.tiled: bool = self.block_shape[1] < self.width and self.block_shape[0] < self.height
        self.overview_factors: list[int] = list(src.overviews(1)) if self.count else []
        self.bands: tuple[int, ...] = self._select_bands(bands)
        self.warnings: list[str] = []
        self._overview_src: dict[int, Any] = {}
        self._stretch: list[BandStretch] | None = None
        self._memory: np.ndarray | None = None
        self.read_mode = self._plan_read_mode()

    # -- opening -------------------------------------------------------------------

    def _select_bands(self, bands: Sequence[int] | None) -> tuple[int, ...]:
        if self.count == 0:
            raise SceneOpenError(f"{self.path}: the raster has no bands")
        if bands is not None:
            chosen = tuple(int(b) for b in bands)
            if len(chosen) not in (1, 3):
                raise BandError(
                    f"{self.path}: give 1 band (grey) or 3 bands (R,G,B), got {list(chosen)}"
                )
            bad = [b for b in chosen if not 1 <= b <= self.count]
            if bad:
                raise BandError(
                    f"{self.path}: band(s) {bad} do not exist; the scene has bands 1..{self.count}"
                )
            return chosen
        interp = list(self._src.colorinterp)
        rgb = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        if all(c in interp for c in rgb):
            return tuple(interp.index(c) + 1 for c in rgb)
        if self.count >= 3:
            return (1, 2, 3)
        return (1,)

    def _plan_read_mode(self) -> str:
        """'windowed' (blocks on demand), 'streamed' (strips) or 'memory' (decode once)."""
        pixels = self.width * self.height
        limit = max_pixels()
        if not self.overview_factors and pixels > limit:
            # Without overviews every coarse read decodes the whole image.
            raise SceneTooLargeError(
                f"{self.path}: {self.width} x {self.height} px without overviews is over the "
                f"{limit:,} px limit for rasters that cannot be read piecewise; "
                f"{_CONVERT_HINT.format(path=self.path)}, or raise LRSVQA_MAX_PIXELS"
            )
        if self.tiled or self.overview_factors:
            mode = "windowed"
        elif self.driver == "GTiff":
            mode = "streamed"
        else:
            mode = "memory"
        if pixels > SMALL_SCENE_PIXELS and not self.overview_factors:
            message = (
                f"{self.path}: {self.width} x {self.height} px without overviews: coarse reads "
                f"decode the full image; {_CONVERT_HINT.format(path=self.path)}"
            )
            self.warnings.append(message)
            warnings.warn(message, NoOverviewsWarning, stacklevel=4)
        return mode

    # -- context management --------------------------------------------------------

    def close(self) -> None:
        for handle in self._overview_src.values():
            handle.close()
        self._overview_src.clear()
        self._src.close()
        self._memory = None

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Scene({self.path!r}, {self.width}x{self.height}, bands={self.bands})"

    # -- metadata ------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in native pixels."""
        return (self.height, self.width)

    @property
    def has_crs(self) -> bool:
        return self.crs is not None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return tuple(self._src.bounds)

    def info(self) -> SceneInfo:
        src = self._src
        epsg = src.crs.to_epsg() if src.crs else None
        t = self.transform
        size = None if is_remote(self.path) else Path(self.path).stat().st_size
        return SceneInfo(
            path=self.path,
            driver=self.driver,
            width=self.width,
            height=self.height,
            count=self.count,
            dtypes=list(src.dtypes),
            bands=self.bands,
            colorinterp=[c.name for c in src.colorinterp],
            crs=src.crs.to_string() if src.crs else None,
            epsg=epsg,
            transform=[t.a, t.b, t.c, t.d, t.e, t.f],
            resolution=(math.hypot(t.a, t.d), math.hypot(t.b, t.e)),
            bounds=self.bounds,
            rotated=bool(t.b != 0 or t.d != 0),
            overviews=self.overview_factors,
            block_shape=self.block_shape,
            tiled=self.tiled,
            compression=src.compression.value if src.compression else None,
            nodata=self.nodata,
            size_bytes=size,
            read_mode=self.read_mode,
            warnings=list(self.warnings),
        )

    # -- reading -------------------------------------------------------------------

    def plan(self, window: Window, out_shape: tuple[int, int]) -> ReadPlan:
        """The coarsest overview still at least as fine as the requested output."""
        out_h, out_w = out_shape
        decimation = min(window.width / max(out_w, 1), window.height / max(out_h, 1))
        best = ReadPlan(None, 1.0)
        for level, _ in enumerate(self.overview_factors):
            factor = self._overview_factor(level)
            if factor <= decimation * (1 + 1e-6) and factor > best.factor:
                best = ReadPlan(level, factor)
        return best

    def _overview_factor(self, level: int) -> float:
        handle = self._overview(level)
        return self.width / handle.width

    def _overview(self, level: int) -> Any:
        if level not in self._overview_src:
            with self._env:
                self._overview_src[level] = rasterio.open(self.path, overview_level=level)
        return self._overview_src[level]

    def read(self, window: Window, out_shape: tuple[int, int] | None = None) -> np.ndarray:
        """Read a native window resampled to ``out_shape`` (h, w) → uint8 (h, w, 3).

        Parts of the window past the image edge are black.
        """
        out_h, out_w = out_shape if out_shape is not None else (window.height, window.width)
        if out_h <= 0 or out_w <= 0 or window.width <= 0 or window.height <= 0:
            raise ValueError(f"empty read: window {window}, out_shape {(out_h, out_w)}")
        out = np.zeros((out_h, out_w, 3), dtype=np.uint8)
        inside = window.clip(self.width, self.height)
        if inside.area == 0:
            return out
        sx, sy = out_w / window.width, out_h / window.height
        x0 = round((inside.col_off - window.col_off) * sx)
        x1 = round((inside.col_end - window.col_off) * sx)
        y0 = round((inside.row_off - window.row_off) * sy)
        y1 = round((inside.row_end - window.row_off) * sy)
        if x1 <= x0 or y1 <= y0:
            return out
        out[y0:y1, x0:x1] = self._read_inside(inside, (y1 - y0, x1 - x0))
        return out

    def _read_inside(self, window: Window, out_shape: tuple[int, int]) -> np.ndarray:
        if self.read_mode == "memory":
            return self._read_memory(window, out_shape)
        raw, valid = self._read_raw(window, out_shape)
        return self._to_rgb(raw, valid)

    def _read_raw(
        self, window: Window, out_shape: tuple[int, int], bands: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw band values (b, h, w) and a validity mask, through the best overview."""
        bands = list(self.bands if bands is None else bands)
        plan = self.plan(window, out_shape)
        handle = self._src if plan.overview_level is None else self._overview(plan.overview_level)
        f = plan.factor
        from rasterio.windows import Window as RioWindow

        rio_window = RioWindow(
            window.col_off / f, window.row_off / f, window.width / f, window.height / f
        )
        decimating = window.width / out_shape[1] > 1 or window.height / out_shape[0] > 1
        resampling = Resampling.average if decimating else Resampling.bilinear
        if window.width / f == out_shape[1] and window.height / f == out_shape[0]:
            resampling = Resampling.nearest
        try:
            with self._env:
                data = handle.read(
                    bands,
                    window=rio_window,
                    out_shape=(len(bands), *out_shape),
                    resampling=resampling,
                )
        except RasterioError as exc:
            raise RasterReadError(
                f"{self.path}: cannot read pixels ({gdal_message(exc)}); the file is damaged "
                "or truncated, re-download or re-export it"
            ) from None
        valid = np.ones(data.shape, dtype=bool)
        if self.nodata is not None and not (
            isinstance(self.nodata, float) and math.isnan(self.nodata)
        ):
            valid &= data != self.nodata
        if data.dtype.kind == "f":
            valid &= np.isfinite(data)
        return data, valid

    def _to_rgb(self, raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
        if raw.dtype == np.uint8:
            channels = np.where(valid, raw, 0).astype(np.uint8)
        else:
            stretch = self.stretch()
            channels = np.stack([s.apply(raw[i], valid[i]) for i, s in enumerate(stretch)], axis=0)
        if channels.shape[0] == 1:
            channels = np.repeat(channels, 3, axis=0)
        return np.ascontiguousarray(np.moveaxis(channels, 0, -1))

    def stretch(self) -> list[BandStretch]:
        """Per-band 2–98 % stretch, computed once from an overview or a decimated read."""
        if self._stretch is None:
            whole = Window(0, 0, self.width, self.height)
            scale = min(1.0, _STATS_SIDE / max(self.width, self.height))
            shape = (max(1, round(self.height * scale)), max(1, round(self.width * scale)))
            raw, valid = self._read_raw(whole, shape)
            self._stretch = [percentile_stretch(raw[i], valid[i]) for i in range(raw.shape[0])]
            log.debug("stretch for %s: %s", self.path, self._stretch)
        return self._stretch

    def _read_memory(self, window: Window, out_shape: tuple[int, int]) -> np.ndarray:
        if self._memory is None:
            whole = Window(0, 0, self.width, self.height)
            raw, valid = self._read_raw(whole, (self.height, self.width))
            self._memory = self._to_rgb(raw, valid)
        crop = self._memory[window.row_off : window.row_end, window.col_off : window.col_end]
        if crop.shape[:2] == out_shape:
            return crop.copy()
        from PIL import Image

        image = Image.fromarray(crop)
        shrinking = out_shape[0] < crop.shape[0] or out_shape[1] < crop.shape[1]
        method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
        return np.asarray(image.resize((out_shape[1], out_shape[0]), method))


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
