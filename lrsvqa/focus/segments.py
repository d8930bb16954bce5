"""Vision segments of the pyramid's images: the thumbnail's group and a tile's place in its
level's whole-scene token grid (shared by the focus passes, the teacher and the pruner).

With M-RoPE ``compact`` positions (``PruneConfig.mrope_positions``) the tiles present are
packed side by side instead (``compact_offsets``), so their ids stay within the trained range.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lrsvqa.models.base import VisionSegment, VisionTokens
    from lrsvqa.pyramid import Tile


def compact_offsets(
    tiles: Sequence[Tile], grids: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Token-grid offsets of ``tiles`` packed per level: a tile's row (column) offset is the
    rank of its row (column) among the rows (columns) present, times tokens per tile. Order
    and adjacency are kept; ids stay below (rows present) x (tokens per tile row)."""
    out = []
    for tile, (rows, cols) in zip(tiles, grids, strict=True):
        same = [t for t in tiles if t.level == tile.level]
        r = sorted({t.row for t in same}).index(tile.row)
        c = sorted({t.col for t in same}).index(tile.col)
        out.append((r * rows, c * cols))
    return out


def thumbnail_segment(tokens: VisionTokens) -> VisionSegment:
    """The global thumbnail: its own position group, all tokens kept."""
    from lrsvqa.models.base import VisionSegment

    return VisionSegment(tokens, None, (0, 0), 0, "thumbnail")


def tile_segment(
    tokens: VisionTokens, tile: Tile, keep: Any = None, offset: tuple[int, int] | None = None
) -> VisionSegment:
    """A tile's tokens placed in its level's whole-scene token grid (group = level + 1),
    or at ``offset`` (see ``compact_offsets``)."""
    from lrsvqa.models.base import VisionSegment

    rows, cols = tokens.grid
    where = (tile.row * rows, tile.col * cols) if offset is None else offset
    return VisionSegment(tokens, keep, where, tile.level + 1, "tile")


def tile_segments(
    tiles: Sequence[Tile],
    tokens: Sequence[VisionTokens],
    keeps: Sequence[Any],
    *,
    compact: bool = False,
) -> list[VisionSegment]:
    """``tile_segment`` of each tile; ``compact`` packs them (``compact_offsets``)."""
    offsets: Sequence[tuple[int, int] | None] = (
        compact_offsets(tiles, [t.grid for t in tokens]) if compact else [None] * len(tiles)
    )
    return [
        tile_segment(tok, tile, keep, off)
        for tile, tok, keep, off in zip(tiles, tokens, keeps, offsets, strict=True)
    ]
