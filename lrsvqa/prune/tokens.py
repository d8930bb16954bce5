"""Assemble the LLM's vision input: the global thumbnail + the kept finest tokens.

Each kept token keeps its true 2-D position: its cell in its level's whole-scene
token grid (tile row x tokens per tile + row inside the tile), so pruning never
scrambles the spatial layout and relations across tiles stay visible. With
``mrope_positions="compact"`` (M-RoPE models) the tiles present are packed side by side
instead (``lrsvqa.focus.segments.compact_offsets``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lrsvqa.focus.segments import (
    compact_offsets,
    thumbnail_segment,
    tile_segment,
    tile_segments,
)
from lrsvqa.prune.llm import LLMPruneConfig

if TYPE_CHECKING:
    from lrsvqa.focus.select import FocusResult
    from lrsvqa.models.base import VisionSegment, VisionTokens


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


__all__ = [
    "MROPE_POSITIONS",
    "PruneConfig",
    "assemble_segments",
    "compact_offsets",
    "thumbnail_segment",
    "tile_segment",
    "tile_segments",
]
