"""Vision-token pruning: which tokens reach the LLM, with their positions kept."""

from lrsvqa.prune.tokens import PruneConfig, assemble_segments, thumbnail_segment, tile_segment

__all__ = ["PruneConfig", "assemble_segments", "thumbnail_segment", "tile_segment"]
