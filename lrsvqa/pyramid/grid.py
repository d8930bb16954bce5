"""Pyramid geometry: levels and tile grids as plain values (no I/O).

Level 0 is the coarsest; each finer level doubles the resolution; the last level is
native. Scales are powers of two, so the 2 x 2 children of a tile cover exactly its
native window and every native pixel lies in exactly one tile per level.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from lrsvqa.errors import ConfigError
from lrsvqa.io.window import Window


@dataclass(frozen=True)
class PyramidConfig:
    """How a scene is cut into levels and tiles."""

    tile_size: int = 448  # output pixels of one tile (Qwen default; 336 for LLaVA)
    coarse_tiles: int = 3  # the coarsest level's long side fits this many tiles
    thumbnail_size: int = 448  # long side of the global thumbnail

    def __post_init__(self) -> None:
        if self.tile_size < 8:
            raise ConfigError(f"tile_size must be at least 8 px, got {self.tile_size}")
        if self.coarse_tiles < 1:
            raise ConfigError(f"coarse_tiles must be at least 1, got {self.coarse_tiles}")
        if self.thumbnail_size < 8:
            raise ConfigError(f"thumbnail_size must be at least 8 px, got {self.thumbnail_size}")

    def to_dict(self) -> dict[str, int]:
        return {
            "tile_size": self.tile_size,
            "coarse_tiles": self.coarse_tiles,
            "thumbnail_size": self.thumbnail_size,
        }


@dataclass(frozen=True)
class Level:
    """One pyramid level: the scene scaled by ``1 / factor`` and cut into tiles."""

    index: int
    factor: int  # native pixels per level pixel (a power of two; 1 at native)
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
    """Levels from coarsest to native for an image of ``width`` x ``height``."""
    if width <= 0 or height <= 0:
        raise ConfigError(f"image size must be positive, got {width} x {height}")
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


def tile_at(level: Level, row: int, col: int, tile_size: int) -> Tile:
    if not (0 <= row < level.rows and 0 <= col < level.cols):
        raise IndexError(
            f"tile ({row}, {col}) outside level {level.index} grid {level.rows}x{level.cols}"
        )
    side = tile_size * level.factor
    return Tile(level.index, row, col, Window(col * side, row * side, side, side))


def iter_tiles(level: Level, tile_size: int) -> Iterator[Tile]:
    for row in range(level.rows):
        for col in range(level.cols):
            yield tile_at(level, row, col, tile_size)
