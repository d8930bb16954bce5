"""Assemble the LLM's vision input: the global thumbnail + the kept finest tokens.

Each kept token keeps its true 2-D position: its cell in its level's whole-scene
token grid (tile row x tokens per tile + row inside the tile), so pruning never
scrambles the spatial layout and relations across tiles stay visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lrsvqa.prune.llm import LLMPruneConfig

if TYPE_CHECKING:
    from lrsvqa.focus.select import FocusResult
    from lrsvqa.models.base import VisionSegment, VisionTokens
    from lrsvqa.pyramid import Tile


@dataclass(frozen=True)
class PruneConfig:
    """What reaches the LLM, and any pruning inside it."""

    thumbnail: bool = True  # the global thumbnail's tokens go first
    llm: LLMPruneConfig = field(default_factory=LLMPruneConfig)  # dropping inside the LLM

    def to_dict(self) -> dict[str, Any]:
        return {"thumbnail": self.thumbnail, "llm": self.llm.to_dict()}


def thumbnail_segment(tokens: VisionTokens) -> VisionSegment:
    """The global thumbnail: its own position group, all tokens kept."""
    from lrsvqa.models.base import VisionSegment

    return VisionSegment(tokens, None, (0, 0), 0, "thumbnail")


def tile_segment(tokens: VisionTokens, tile: Tile, keep: Any = None) -> VisionSegment:
    """A tile's tokens placed in its level's whole-scene token grid (group = level + 1)."""
    from lrsvqa.models.base import VisionSegment

    rows, cols = tokens.grid
    return VisionSegment(tokens, keep, (tile.row * rows, tile.col * cols), tile.level + 1, "tile")


def assemble_segments(
    focus: FocusResult, thumbnail: VisionTokens, config: PruneConfig
) -> list[VisionSegment]:
    """[thumbnail] + the final tiles in raster order, each with its kept token indices."""
    import torch

    segments: list[VisionSegment] = []
    if config.thumbnail or not focus.final_tiles:
        segments.append(thumbnail_segment(thumbnail))
    order = sorted(range(len(focus.final_tiles)), key=lambda i: focus.final_tiles[i].key)
    for i in order:
        keep = torch.as_tensor(focus.final_keep[i], dtype=torch.long)
        segments.append(tile_segment(focus.final_tokens[i], focus.final_tiles[i], keep))
    return segments
