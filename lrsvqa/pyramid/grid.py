"""Pyramid geometry: levels and tile grids as plain values (no I/O).

Level 0 is the coarsest. By default (``levels="pow2"``) each finer level doubles the
resolution and the last level is native: scales are powers of two, so the 2 x 2 children
of a tile cover exactly its native window. ``levels="release"`` plans the levels as the
LRS-VQA release does (``release_levels``): scales 1, 1/2, 1/4 … and exactly
``coarse_tiles * tile_size`` over the long side, each level resized to whole tile counts,
so the ratio between two levels is not an integer and a tile's children are the finer
tiles whose windows overlap it. Either way every native pixel lies in exactly one tile
per level (tile edges are rounded to native pixels).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lrsvqa.errors import ConfigError
from lrsvqa.io.window import Window

LEVEL_PLANS = ("pow2", "release")


@dataclass(frozen=True)
class PyramidConfig:
    """How a scene is cut into levels and tiles."""

    tile_size: int = 448  # output pixels of one tile (Qwen default; 336 for LLaVA)
    coarse_tiles: int = 3  # the coarsest level's long side fits this many tiles
    thumbnail_size: int = 448  # long side of the global thumbnail
    levels: str = "pow2"  # pow2 (doubling down to native) | release (the LRS-VQA release's)
    # A tile's token grid is average-pooled tile_pool x tile_pool after encoding (the
    # release pools LLaVA's 24 x 24 CLIP tokens 2 x 2 to 12 x 12); 1: no pooling.
    tile_pool: int = 1

    @classmethod
    def release(cls, *, tile_size: int = 336, tile_pool: int = 2) -> PyramidConfig:
        """The LRS-VQA release's pyramid: 336 px blocks, coarsest level 3 blocks (1008 px)
        over the long side, the release's level sizes (``release_levels``), a 336 px global
        image and LLaVA tiles pooled 2 x 2 (``tile_pool=1`` for Qwen, whose tokens are
        already 2 x 2-merged patches)."""
        return cls(
            tile_size=tile_size,
            coarse_tiles=3,
            thumbnail_size=tile_size,
            levels="release",
            tile_pool=tile_pool,
        )

    def __post_init__(self) -> None:
        if self.tile_size < 8:
            raise ConfigError(f"tile_size must be at least 8 px, got {self.tile_size}")
        if self.coarse_tiles < 1:
            raise ConfigError(f"coarse_tiles must be at least 1, got {self.coarse_tiles}")
        if self.thumbnail_size < 8:
            raise ConfigError(f"thumbnail_size must be at least 8 px, got {self.thumbnail_size}")
        if self.levels not in LEVEL_PLANS:
            raise ConfigError(
                f"levels must be one of {', '.join(LEVEL_PLANS)}, got {self.levels!r}"
            )
        if self.tile_pool < 1 or self.tile_size % self.tile_pool:
            raise ConfigError(
                f"tile_pool must be a positive divisor of the tile size, got {self.tile_pool}"
            )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tile_size": self.tile_size,
            "coarse_tiles": self.coarse_tiles,
            "thumbnail_size": self.thumbnail_size,
        }
        # only when set away from the default, so older run manifests still match
        if self.levels != "pow2":
            out["levels"] = self.levels
        if self.tile_pool != 1:
            out["tile_pool"] = self.tile_pool
        return out


@dataclass(frozen=True)
class Level:
    """One pyramid level: the scene scaled by ``1 / factor`` and cut into tiles."""

    index: int
    # native pixels per level pixel: a power of two (1 at native) for ``pow2`` levels; any
    # ratio >= ~1 for ``release`` levels (long side of the image / long side of the level)
    factor: float
    width: int  # level size in pixels
    height: int
    rows: int  # tile grid
    cols: int

    @property
    def scale(self) -> float:
        return 1.0 / self.factor

    @property
    def n_tiles(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True, order=True)
class Tile:
    """One tile: its level, grid cell and native pixel window (may pass the edge)."""

    level: int
    row: int
    col: int
    window: Window

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.level, self.row, self.col)


def plan_levels(width: int, height: int, config: PyramidConfig) -> list[Level]:
    """Levels from coarsest to finest for an image of ``width`` x ``height``."""
    if width <= 0 or height <= 0:
        raise ConfigError(f"image size must be positive, got {width} x {height}")
    if config.levels == "release":
        return release_levels(width, height, config.tile_size, config.coarse_tiles)
    fit = config.coarse_tiles * config.tile_size
    long_side = max(width, height)
    n_finer = max(0, math.ceil(math.log2(long_side / fit))) if long_side > fit else 0
    levels = []
    for index in range(n_finer + 1):
        factor = 2 ** (n_finer - index)
        w, h = math.ceil(width / factor), math.ceil(height / factor)
        levels.append(
            Level(
                index=index,
                factor=factor,
                width=w,
                height=h,
                rows=math.ceil(h / config.tile_size),
                cols=math.ceil(w / config.tile_size),
            )
        )
    return levels


def release_scales(long_side: int, base_side: int) -> list[float]:
    """The release's pyramid scales, finest first: 1, 1/2, 1/4 … while the long side stays
    at least ``base_side``, then exactly ``base_side / long_side`` (LRS-VQA-Code
    ``llava/mm_utils.py`` ``process_images``, branch ``pyramid_crop``: the ``while
    current_scale >= min_scale`` loop and the ``min_scale`` appended after it)."""
    smallest = min(base_side / long_side, 1.0)
    scales: list[float] = []
    scale = 1.0
    while scale >= smallest:
        scales.append(scale)
        scale /= 2
    if scales[-1] > smallest:
        scales.append(smallest)
    return scales


def release_level_size(width: int, height: int, scale: float, tile: int) -> tuple[int, int]:
    """(width, height) of one release level: the image scaled by ``scale`` and rounded, then
    scaled up until one side fills a whole number of tiles (the other side is padded), as
    the ``pyramid_crop`` branch of ``process_images`` does: ``round`` of the scaled size,
    ``ceil`` block counts (``LS_Image_Patch.calculate_blocks(if_ceil=True)``), the smaller of
    the two block-filling scales, ``round`` again."""
    w_, h_ = round(width * scale), round(height * scale)
    w_, h_ = max(1, w_), max(1, h_)
    fill = min(math.ceil(h_ / tile) * tile / h_, math.ceil(w_ / tile) * tile / w_)
    return round(w_ * fill), round(h_ * fill)


def release_levels(width: int, height: int, tile_size: int, coarse_tiles: int) -> list[Level]:
    """The LRS-VQA release's levels, coarsest first (its ``scale_infos`` order)."""
    long_side = max(width, height)
    levels = []
    for index, scale in enumerate(reversed(release_scales(long_side, coarse_tiles * tile_size))):
        w, h = release_level_size(width, height, scale, tile_size)
        levels.append(
            Level(
                index=index,
                factor=long_side / max(w, h),
                width=w,
                height=h,
                rows=math.ceil(h / tile_size),
                cols=math.ceil(w / tile_size),
            )
        )
    return levels


def _edge(i: int, side: float) -> int:
    """Native pixel where tile ``i`` of a row (column) of tiles ``side`` px wide starts."""
    return round(i * side)


def tile_index(x: int, side: float) -> int:
    """The tile (along one axis) holding native pixel ``x``: ``_edge(i) <= x < _edge(i+1)``."""
    i = int(x // side)
    while i > 0 and _edge(i, side) > x:
        i -= 1
    while _edge(i + 1, side) <= x:
        i += 1
    return i


def tile_at(level: Level, row: int, col: int, tile_size: int) -> Tile:
    if not (0 <= row < level.rows and 0 <= col < level.cols):
        raise IndexError(
            f"tile ({row}, {col}) outside level {level.index} grid {level.rows}x{level.cols}"
        )
    side = tile_size * level.factor
    x0, y0 = _edge(col, side), _edge(row, side)
    window = Window(x0, y0, _edge(col + 1, side) - x0, _edge(row + 1, side) - y0)
    return Tile(level.index, row, col, window)


def iter_tiles(level: Level, tile_size: int) -> Iterator[Tile]:
    for row in range(level.rows):
        for col in range(level.cols):
            yield tile_at(level, row, col, tile_size)


def release_token_extent(level: Level, grid: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of a release level's token grid left after "unpadding": the padded grid
    of ``level.rows x level.cols`` tiles of ``grid`` tokens cut to the level's aspect with
    ``int()``, as ``unpad_image_hw`` of the release's ``multimodal_projector/builder.py``
    does (the side that fills its tiles keeps every token row or column)."""
    g_rows, g_cols = grid
    padded_h, padded_w = level.rows * g_rows, level.cols * g_cols
    if level.width / level.height > padded_w / padded_h:
        return int(level.height * padded_w / level.width), padded_w
    return padded_h, int(level.width * padded_h / level.height)
