"""Vision-token pruning: which tokens reach the LLM (positions kept), and dropping inside it."""

from lrsvqa.prune.llm import LLMPruneConfig, generate_pruned, planned_tokens_per_layer
from lrsvqa.prune.tokens import (
    PruneConfig,
    assemble_segments,
    thumbnail_segment,
    tile_segment,
    tile_segments,
)

__all__ = [
    "LLMPruneConfig",
    "PruneConfig",
    "assemble_segments",
    "generate_pruned",
    "planned_tokens_per_layer",
    "thumbnail_segment",
    "tile_segment",
    "tile_segments",
]
