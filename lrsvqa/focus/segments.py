"""Vision segments of the pyramid's images: the thumbnail's group and a tile's place in its
level's whole-scene token grid (shared by the focus passes, the teacher and the pruner)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lrsvqa.models.base import VisionSegment, VisionTokens
    from lrsvqa.pyramid import Tile


def thumbnail_segment(tokens: VisionTokens) -> VisionSegment:
    """The global thumbnail: its own position group, all tokens kept."""
    from lrsvqa.models.base import VisionSegment

    return VisionSegment(tokens, None, (0, 0), 0, "thumbnail")


def tile_segment(tokens: VisionTokens, tile: Tile, keep: Any = None) -> VisionSegment:
    """A tile's tokens placed in its level's whole-scene token grid (group = level + 1)."""
    from lrsvqa.models.base import VisionSegment

    rows, cols = tokens.grid
    return VisionSegment(tokens, keep, (tile.row * rows, tile.col * cols), tile.level + 1, "tile")
