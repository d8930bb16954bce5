"""Assemble the LLM's vision input: the global thumbnail + the kept finest tokens.

Each kept token keeps its true 2-D position: its cell in its level's whole-scene
token grid (tile row x tokens per tile + row inside the tile), so pruning never
scrambles the spatial layout and relations across tiles stay visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lrsvqa.prune.llm import LLMPruneConfig

if TYPE_CHECKING:
    from lrsvqa.focus.select import FocusResult
    from lrsvqa.models.base import VisionSegment, VisionTokens
    from lrsvqa.pyramid import Tile


#: M-RoPE (h, w) ids of tile tokens: their cell in the level's whole-scene grid ("scene"),
#: or the tiles present packed side by side in their row/column order ("compact", ids
#: within what the model saw in training, as anyres would place the tiles).
MROPE_POSITIONS = ("scene", "compact")


@dataclass(frozen=True)
class PruneConfig:
    """What reaches the LLM, and any pruning inside it."""

    thumbnail: bool = True  # the global thumbnail's tokens go first
    llm: LLMPruneConfig = field(default_factory=LLMPruneConfig)  # dropping inside the LLM
    mrope_positions: str = "scene"  # scene | compact (M-RoPE models only)

    def __post_init__(self) -> None:
        if self.mrope_positions not in MROPE_POSITIONS:
            from lrsvqa.errors import ConfigError

            raise ConfigError(
                f"mrope_positions must be one of {', '.join(MROPE_POSITIONS)}, "
                f"got {self.mrope_positions!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "thumbnail": self.thumbnail,
            "llm": self.llm.to_dict(),
            "mrope_positions": self.mrope_positions,
        }


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


def assemble_segments(
    focus: FocusResult, thumbnail: VisionTokens, config: PruneConfig, *, mrope: bool = False
) -> list[VisionSegment]:
    """[thumbnail] + the final tiles in raster order, each with its kept token indices.

    ``mrope``: the model takes 2-D positions, so ``config.mrope_positions`` applies."""
    import torch

    segments: list[VisionSegment] = []
    if config.thumbnail or not focus.final_tiles:
        segments.append(thumbnail_segment(thumbnail))
    order = sorted(range(len(focus.final_tiles)), key=lambda i: focus.final_tiles[i].key)
    segments += tile_segments(
        [focus.final_tiles[i] for i in order],
        [focus.final_tokens[i] for i in order],
        [torch.as_tensor(focus.final_keep[i], dtype=torch.long) for i in order],
        compact=mrope and config.mrope_positions == "compact",
    )
    return segments
