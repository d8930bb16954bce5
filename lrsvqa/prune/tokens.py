"""Assemble the LLM's vision input: the global thumbnail + the kept finest tokens.

Each kept token keeps its true 2-D position: its cell in its level's whole-scene
token grid (tile row x tokens per tile + row inside the tile), so pruning never
scrambles the spatial layout and relations across tiles stay visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lrsvqa.focus.segments import thumbnail_segment, tile_segment
from lrsvqa.prune.llm import LLMPruneConfig

if TYPE_CHECKING:
    from lrsvqa.focus.select import FocusResult
    from lrsvqa.models.base import VisionSegment, VisionTokens


@dataclass(frozen=True)
class PruneConfig:
    """What reaches the LLM, and any pruning inside it."""

    thumbnail: bool = True  # the global thumbnail's tokens go first
    llm: LLMPruneConfig = field(default_factory=LLMPruneConfig)  # dropping inside the LLM

    def to_dict(self) -> dict[str, Any]:
        return {"thumbnail": self.thumbnail, "llm": self.llm.to_dict()}


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


__all__ = ["PruneConfig", "assemble_segments", "thumbnail_segment", "tile_segment"]
