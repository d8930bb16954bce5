"""The Dynamic Image Pyramid over one scene."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any

import numpy as np
from affine import Affine
from shapely.geometry import Polygon

from lrsvqa.errors import ConfigError
from lrsvqa.io.geo import reproject_geometry, window_polygon
from lrsvqa.io.limits import read_threads as default_read_threads
from lrsvqa.io.scene import Scene, open_scene
from lrsvqa.io.window import Window
from lrsvqa.pyramid.grid import (
    Level,
    PyramidConfig,
    Tile,
    iter_tiles,
    plan_levels,
    tile_at,
    tile_index,
)

_IDENTITY = Affine.identity()

# One pool per thread count for the whole process: sessions come and go (a benchmark
# opens 1,228 scenes) and must not each leave threads behind.
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _forget_pools_after_fork() -> None:
    # A forked child (a DataLoader worker, a fork-based process pool) inherits the pools
    # without their threads: work submitted there would wait forever. It starts its own.
    global _POOLS_LOCK
    _POOLS.clear()
    _POOLS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools_after_fork)


def _pool(threads: int) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="lrsvqa-read")
        return pool


class DynamicImagePyramid:
    """Levels of a scene, coarse to native, each a grid of fixed-size tiles.

    Nothing is read until ``read_tile`` or ``thumbnail`` is called, and each read
    goes through the scene's best overview for the tile's level.
    """

    def __init__(
        self,
        scene: Scene | str | os.PathLike[str],
        tile_size: int | None = None,
        coarse_tiles: int | None = None,
        *,
        config: PyramidConfig | None = None,
        read_threads: int | None = None,
    ):
        base = config or PyramidConfig()
        overrides: dict[str, Any] = {}
        if tile_size is not None:
            overrides["tile_size"] = tile_size
        if coarse_tiles is not None:
            overrides["coarse_tiles"] = coarse_tiles
        self.config = replace(base, **overrides)
        self._owns_scene = not isinstance(scene, Scene)
        self.scene = open_scene(scene) if not isinstance(scene, Scene) else scene
        self.levels: list[Level] = plan_levels(self.scene.width, self.scene.height, self.config)
        #: Threads reading the tiles of one ``read_tiles`` call (``$LRSVQA_READ_THREADS``).
        self.read_threads = read_threads if read_threads is not None else default_read_threads()
        if self.read_threads < 1:
            raise ConfigError(f"read_threads must be at least 1, got {self.read_threads}")
        self._prefetched: dict[tuple[int, int, int], np.ndarray] = {}
        self._thumbnails: dict[tuple[int, bool], np.ndarray] = {}
        self._prefetch_lock = threading.Lock()

    def close(self) -> None:
        if self._owns_scene:
            self.scene.close()

    def __enter__(self) -> DynamicImagePyramid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def tile_size(self) -> int:
        return self.config.tile_size

    @property
    def finest(self) -> Level:
        return self.levels[-1]

    def level(self, index: int) -> Level:
        if not 0 <= index < len(self.levels):
            raise ConfigError(f"level {index} does not exist; levels are 0..{len(self.levels) - 1}")
        return self.levels[index]

    def tiles(self, level: int) -> list[Tile]:
        """Every tile of a level in raster order."""
        return list(iter_tiles(self.level(level), self.tile_size))

    def tile(self, level: int, row: int, col: int) -> Tile:
        return tile_at(self.level(level), row, col, self.tile_size)

    def children(self, tile: Tile) -> list[Tile]:
        """The tiles of the next finer level under ``tile``: the 2 x 2 that cover its window
        exactly for power-of-two levels; for release levels (non-integer ratios) every finer
        tile whose window overlaps the part of ``tile`` inside the image."""
        if tile.level + 1 >= len(self.levels):
            return []
        finer = self.levels[tile.level + 1]
        if self.config.levels == "release":
            return self.tiles_under(tile.window, tile.level + 1)
        out = []
        for row in (2 * tile.row, 2 * tile.row + 1):
            for col in (2 * tile.col, 2 * tile.col + 1):
                if row < finer.rows and col < finer.cols:
                    out.append(tile_at(finer, row, col, self.tile_size))
        return out

    def parent(self, tile: Tile) -> Tile | None:
        """The coarser tile holding ``tile``'s window (for release levels: its top-left
        pixel inside the image)."""
        if tile.level == 0:
            return None
        if self.config.levels != "release":
            return self.tile(tile.level - 1, tile.row // 2, tile.col // 2)
        inside = self.image_window(tile)
        under = self.tiles_under(Window(inside.col_off, inside.row_off, 1, 1), tile.level - 1)
        return under[0] if under else None

    def tiles_under(self, window: Window, level: int) -> list[Tile]:
        """Tiles of ``level`` that overlap a native window."""
        lvl = self.level(level)
        side = self.tile_size * lvl.factor
        inside = window.clip(self.scene.width, self.scene.height)
        if inside.area == 0:
            return []
        r0, r1 = tile_index(inside.row_off, side), tile_index(inside.row_end - 1, side)
        c0, c1 = tile_index(inside.col_off, side), tile_index(inside.col_end - 1, side)
        r1, c1 = min(r1, lvl.rows - 1), min(c1, lvl.cols - 1)
        return [
            tile_at(lvl, r, c, self.tile_size) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)
        ]

    def image_window(self, tile: Tile) -> Window:
        """The part of the tile's window that lies inside the image."""
        return tile.window.clip(self.scene.width, self.scene.height)

    def read_tile(self, tile: Tile) -> np.ndarray:
        """uint8 (tile_size, tile_size, 3); the part past the image edge is black."""
        with self._prefetch_lock:
            ready = self._prefetched.pop(tile.key, None)
        if ready is not None:
            return ready
        return self.scene.read(tile.window, (self.tile_size, self.tile_size))

    def read_tiles(self, tiles: Sequence[Tile]) -> list[np.ndarray]:
        """Tiles in order, read by up to ``read_threads`` threads in parallel."""
        if self.read_threads == 1 or len(tiles) < 2:
            return [self.read_tile(t) for t in tiles]
        futures = [_pool(self.read_threads).submit(self.read_tile, t) for t in tiles]
        # Every read ends before the first error is raised: the caller may close the
        # scene next, and no read may still be running on it then.
        wait(futures)
        return [f.result() for f in futures]

    def prefetch(self, levels: Sequence[int] = (0,)) -> None:
        """Read ahead what a question needs first: the stretch statistics, the square
        thumbnail and every tile of ``levels``; later reads take them from memory once."""
        if self.scene.dtype != "uint8":
            self.scene.stretch()
        self.thumbnail(self.config.thumbnail_size, square=True)
        tiles = [t for level in levels for t in self.tiles(level)]
        images = self.read_tiles(tiles)
        with self._prefetch_lock:
            for tile, image in zip(tiles, images, strict=True):
                self._prefetched[tile.key] = image

    def thumbnail(self, size: int | None = None, *, square: bool = False) -> np.ndarray:
        """The whole scene with its long side ``size`` px → uint8 (H, W, 3).

        ``square=True`` pads to (size, size) with black, the image at the top left,
        so that thumbnail pixels keep a single scale in both axes.
        """
        size = size or self.config.thumbnail_size
        with self._prefetch_lock:
            ready = self._thumbnails.get((size, square))
        if ready is not None:
            return ready.copy()
        w, h = self.scene.width, self.scene.height
        scale = size / max(w, h)
        out_w, out_h = max(1, round(w * scale)), max(1, round(h * scale))
        image = self.scene.read(Window(0, 0, w, h), (out_h, out_w))
        if square:
            padded = np.zeros((size, size, 3), dtype=np.uint8)
            padded[:out_h, :out_w] = image
            image = padded
        with self._prefetch_lock:
            self._thumbnails[(size, square)] = image
        return image.copy()

    @property
    def prefetched_tiles(self) -> int:
        """Tiles read ahead by ``prefetch`` and not yet taken."""
        return len(self._prefetched)

    # -- geography -------------------------------------------------------------------

    @property
    def georeferenced(self) -> bool:
        """False when the scene has no CRS: geometries are then in pixel coordinates."""
        return self.scene.has_crs

    def geometry(self, tile: Tile | Window) -> Polygon:
        """The tile's footprint inside the image, in the scene CRS (pixels if none)."""
        window = self.image_window(tile) if isinstance(tile, Tile) else tile
        return window_polygon(window, self.scene.transform if self.georeferenced else _IDENTITY)

    def geometry_4326(self, tile: Tile | Window) -> Polygon:
        if not self.georeferenced:
            raise ConfigError(
                f"{self.scene.path}: the scene has no CRS, so it cannot be reprojected to EPSG:4326"
            )
        result = reproject_geometry(self.geometry(tile), self.scene.crs, "EPSG:4326")
        assert isinstance(result, Polygon)
        return result

    def plan(self, patch_size: int | None = None) -> list[dict[str, int | float]]:
        """One row per level: size, tiles, and vision tokens per tile for ``patch_size``."""
        rows = []
        for lvl in self.levels:
            row: dict[str, int | float] = {
                "level": lvl.index,
                "factor": lvl.factor,
                "width": lvl.width,
                "height": lvl.height,
                "rows": lvl.rows,
                "cols": lvl.cols,
                "tiles": lvl.n_tiles,
            }
            if patch_size:
                per_tile = (self.tile_size // patch_size) ** 2
                row["tokens_per_tile"] = per_tile
                row["tokens"] = per_tile * lvl.n_tiles
            rows.append(row)
        return rows
