"""A scene: one raster opened for windowed, overview-aware reads to uint8 RGB.

Memory follows the pixels a caller asks for, never the image's size: a read of a
native window decodes only the blocks under it, and a coarse read goes through the
coarsest overview that is still at least as fine as the requested output.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioError

from lrsvqa.errors import (
    BandError,
    NoOverviewsWarning,
    RasterReadError,
    SceneOpenError,
    SceneTooLargeError,
)
from lrsvqa.io.gdal_config import REMOTE_OPEN_OPTIONS, configure_gdal
from lrsvqa.io.limits import SMALL_SCENE_PIXELS, max_pixels
from lrsvqa.io.memory import decode_rows, interleave_rgb, read_decoded, strip_rows
from lrsvqa.io.paths import check_local_file, gdal_message, is_remote, without_crs_warnings
from lrsvqa.io.stretch import BandStretch, percentile_stretch
from lrsvqa.io.window import Window

log = logging.getLogger(__name__)

#: Smallest GDAL block cache (bytes) while a memory-mode scene is decoded in strips.
DECODE_CACHE_MIN = 8 * 2**20
_DECODE_LOCK = threading.Lock()
_STATS_SIDE = 1024  # long side of the sample the stretch statistics come from
_CONVERT_HINT = "convert it first with `lrsvqa convert {path} OUT.tif` (tiled COG with overviews)"


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
    cached_cog: str | None = None  # the conversion-cache COG actually read, if any

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def open_scene(
    path: str | os.PathLike[str],
    bands: Sequence[int] | None = None,
    *,
    cog_cache: bool = False,
    progress: bool = False,
) -> Scene:
    """Open a raster (local path or http(s) URL) for windowed uint8 RGB reads.

    ``cog_cache=True``: a big scene that cannot be read piecewise (PNG, JPEG, striped
    GeoTIFF without overviews) is read from its tiled COG in the conversion cache,
    converted on first use (``lrsvqa.io.cogcache``); ``scene.path`` stays ``path``.
    """
    if cog_cache:
        from lrsvqa.io.cogcache import cached_cog

        cog = cached_cog(path, progress=progress)
        if cog is not None:
            return Scene(cog, bands=bands, label=os.fspath(path))
    return Scene(path, bands=bands)


class Scene:
    """An open raster. Use as a context manager, or call ``close()``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        bands: Sequence[int] | None = None,
        *,
        label: str | None = None,
    ):
        #: The file GDAL reads; ``path`` is the name the user gave (they differ when
        #: the scene is read from the conversion cache).
        self.read_path = os.fspath(path)
        self.path = label if label is not None else self.read_path
        configure_gdal()
        self._env_options = REMOTE_OPEN_OPTIONS if is_remote(self.read_path) else {}
        check_local_file(self.read_path)
        # rasterio handles are not thread-safe: each reading thread opens its own.
        self._lock = threading.RLock()
        self._local = threading.local()
        self._handles: list[Any] = []
        # Reads in flight on any thread: close() waits for them, since closing a GDAL
        # dataset under a running read crashes the process.
        self._reads_done = threading.Condition(self._lock)
        self._reads_in_flight = 0
        self._owner = threading.get_ident()
        self.warnings: list[str] = []
        self._overview_factors: list[float] | None = None
        self._stretch: list[BandStretch] | None = None
        self._memory: np.ndarray | None = None
        try:
            self._src = self._open_handle(None)
            with rasterio.Env(**self._env_options):  # GDAL's messages go to exceptions
                self._read_metadata(bands)
            self.read_mode = self._plan_read_mode()
        except (RasterioError, CPLE_BaseError) as exc:
            # GDAL reports some damage (a truncated TIFF directory) only when the
            # metadata is read, after the open itself succeeded.
            self.close()
            raise SceneOpenError(
                f"{self.path}: not a raster GDAL can read ({gdal_message(exc)}); "
                "check the file is a complete GeoTIFF, PNG or JPEG"
            ) from None
        except BaseException:
            self.close()
            raise

    def _read_metadata(self, bands: Sequence[int] | None) -> None:
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
        with self._lock:
            self._reads_done.wait_for(lambda: self._reads_in_flight == 0)
            for handle in self._handles:
                handle.close()
            self._handles.clear()
            self._local = threading.local()
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
        size = None if is_remote(self.read_path) else Path(self.read_path).stat().st_size
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
            cached_cog=self.read_path if self.read_path != self.path else None,
        )

    # -- reading -------------------------------------------------------------------

    def plan(self, window: Window, out_shape: tuple[int, int]) -> ReadPlan:
        """The coarsest overview still at least as fine as the requested output."""
        out_h, out_w = out_shape
        decimation = min(window.width / max(out_w, 1), window.height / max(out_h, 1))
        best = ReadPlan(None, 1.0)
        for level, factor in enumerate(self._exact_overview_factors()):
            if factor <= decimation * (1 + 1e-6) and factor > best.factor:
                best = ReadPlan(level, factor)
        return best

    def _exact_overview_factors(self) -> list[float]:
        """Native pixels per overview pixel, from each overview's real width."""
        if self._overview_factors is None:
            with self._lock:
                if self._overview_factors is None:
                    self._overview_factors = [
                        self.width / self._handle(level).width
                        for level in range(len(self.overview_factors))
                    ]
        return self._overview_factors

    def _handle(self, level: int | None) -> Any:
        """This thread's rasterio handle on the scene (``level``: an overview)."""
        handles: dict[int | None, Any] | None = getattr(self._local, "handles", None)
        if handles is None:
            handles = self._local.handles = {}
            if threading.get_ident() == self._owner and not self._src.closed:
                handles[None] = self._src
        handle = handles.get(level)
        if handle is None:
            if not self._handles:
                raise RasterReadError(f"{self.path}: the scene is closed; open it again")
            handle = handles[level] = self._open_handle(level)
        return handle

    def _open_handle(self, level: int | None) -> Any:
        kwargs = {} if level is None else {"overview_level": level}
        with rasterio.Env(**self._env_options), without_crs_warnings():
            handle = rasterio.open(self.read_path, **kwargs)
        with self._lock:
            self._handles.append(handle)
        return handle

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
            decoded = read_decoded(self._decoded(), window, out_shape)
            return np.repeat(decoded, 3, axis=2) if decoded.shape[2] == 1 else decoded
        raw, valid = self._read_raw(window, out_shape)
        return interleave_rgb(self._to_channels(raw, valid))

    def _read_raw(
        self, window: Window, out_shape: tuple[int, int], bands: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw band values (b, h, w) through the best overview, and a validity mask
        (``None`` when every pixel is valid: no nodata, not float)."""
        bands = list(self.bands if bands is None else bands)
        plan = self.plan(window, out_shape)
        with self._reading():
            handle = self._handle(plan.overview_level)
            data = self._read_plan(handle, plan, bands, window, out_shape)
        return data, self._valid(data)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        with self._lock:
            self._reads_in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._reads_in_flight -= 1
                self._reads_done.notify_all()

    def _read_plan(
        self,
        handle: Any,
        plan: ReadPlan,
        bands: list[int],
        window: Window,
        out_shape: tuple[int, int],
    ) -> np.ndarray:
        f = plan.factor
        from rasterio.windows import Window as RioWindow

        rio_window = RioWindow(
            window.col_off / f, window.row_off / f, window.width / f, window.height / f
        )
        decimating = window.width / out_shape[1] > 1 or window.height / out_shape[0] > 1
        resampling = Resampling.average if decimating else Resampling.bilinear
        if window.width / f == out_shape[1] and window.height / f == out_shape[0]:
            resampling = Resampling.nearest
        return self._gdal_read(
            handle,
            bands,
            window=rio_window,
            out_shape=(len(bands), *out_shape),
            resampling=resampling,
        )

    def _gdal_read(self, handle: Any, bands: list[int], **kwargs: Any) -> np.ndarray:
        try:
            with rasterio.Env(**self._env_options):
                return np.asarray(handle.read(bands, **kwargs))
        except (RasterioError, CPLE_BaseError) as exc:
            raise RasterReadError(
                f"{self.path}: cannot read pixels ({gdal_message(exc)}); the file is damaged "
                "or truncated, re-download or re-export it"
            ) from None

    def _valid(self, data: np.ndarray) -> np.ndarray | None:
        has_nodata = self.nodata is not None and not (
            isinstance(self.nodata, float) and math.isnan(self.nodata)
        )
        if not has_nodata and data.dtype.kind != "f":
            return None
        valid = data != self.nodata if has_nodata else np.ones(data.shape, dtype=bool)
        if data.dtype.kind == "f":
            valid &= np.isfinite(data)
        return valid

    def _to_channels(self, raw: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        """uint8 (b, h, w) from raw band values: stretched unless uint8, invalid → 0."""
        if raw.dtype == np.uint8:
            return raw if valid is None else np.where(valid, raw, 0).astype(np.uint8)
        stretch = self.stretch()
        return np.stack(
            [s.apply(raw[i], None if valid is None else valid[i]) for i, s in enumerate(stretch)],
            axis=0,
        )

    def stretch(self) -> list[BandStretch]:
        """Per-band 2–98 % stretch, computed once from an overview or a decimated read."""
        if self._stretch is None:
            with self._lock:
                if self._stretch is None:
                    whole = Window(0, 0, self.width, self.height)
                    scale = min(1.0, _STATS_SIDE / max(self.width, self.height))
                    shape = (max(1, round(self.height * scale)), max(1, round(self.width * scale)))
                    raw, valid = self._read_raw(whole, shape)
                    self._stretch = [
                        percentile_stretch(raw[i], None if valid is None else valid[i])
                        for i in range(raw.shape[0])
                    ]
                    log.debug("stretch for %s: %s", self.path, self._stretch)
        return self._stretch

    def _decoded(self) -> np.ndarray:
        """The whole scene as uint8 (1 or 3, H, W), decoded once (memory read mode)."""
        memory = self._memory
        if memory is None:
            with self._lock:
                if self._memory is None:
                    self._memory = self._decode()
                memory = self._memory
        return memory

    def _decode(self) -> np.ndarray:
        # One uint8 buffer of the pixels and nothing else full-size: strips are read
        # front to back (PNG decodes sequentially), converted to uint8 and copied in.
        # GDAL's whole-image PNG path is 3x faster but holds the compressed file and
        # a second full-size buffer (2x the pixels); its block cache is capped during
        # the decode so that it never holds more than ~1/16 of the pixels.
        bands = list(self.bands)
        out = np.empty((len(bands), self.height, self.width), dtype=np.uint8)
        cache = max(DECODE_CACHE_MIN, out.nbytes // 16)
        itemsize = np.dtype(self.dtype).itemsize
        rows = decode_rows(self.height, strip_rows(self.width, self.count, itemsize, cache // 4))
        # One decode at a time in the process: the cap is process-wide (restored on exit),
        # and two whole-scene decodes at once (a prefetch beside a question) would
        # double the peak.
        with _DECODE_LOCK, rasterio.Env(GDAL_CACHEMAX=cache):
            for y0 in range(0, self.height, rows):
                h = min(rows, self.height - y0)
                raw, valid = self._read_raw(Window(0, y0, self.width, h), (h, self.width))
                out[:, y0 : y0 + h] = self._to_channels(raw, valid)
                del raw, valid
        return out
