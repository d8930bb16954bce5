"""``--budget`` as the LLM sees it: every vision position, separators and newlines included.

The selectors count vision *tokens*; LLaVA-NeXT and OneVision also put a newline embedding
after each scene row that keeps a token, and those positions reach the LLM too. After the
segments are assembled, ``fit_budget`` counts the positions the adapter will lay out and,
while they exceed the budget, drops the lowest-ranked tile tokens (by focus score where the
selector scored them, else the last in raster order). Dropping a row's last token drops its
newline too, so the loop converges. ``check_context`` refuses, before any tile is encoded, a
budget that cannot fit the model's context with the prompt's text and the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from lrsvqa.errors import ConfigError

if TYPE_CHECKING:
    from lrsvqa.focus import FocusResult
    from lrsvqa.models.base import Adapter, VisionSegment


def check_context(
    adapter: Adapter, question: str, budget: int, max_new_tokens: int, n_images: int = 2
) -> None:
    """ConfigError unless ``budget`` vision positions + prompt text + answer fit the context."""
    context = int(adapter.capabilities.context_length)
    if context <= 0:
        return
    text = adapter.prompt_text_tokens(question, n_images)
    need = budget + text + max_new_tokens
    if need > context:
        room = context - text - max_new_tokens
        fix = f"lower --budget to {room:,}" if room >= 1 else "shorten the question"
        raise ConfigError(
            f"--budget {budget:,} vision positions + {text:,} prompt tokens + {max_new_tokens:,} "
            f"answer tokens = {need:,} exceed {adapter.model_id}'s context of {context:,} "
            f"tokens; {fix} (or lower --max-new-tokens)"
        )


def check_thumbnail(thumbnail_positions: int, budget: int) -> None:
    """ConfigError if the global thumbnail alone is over the budget."""
    if thumbnail_positions > budget:
        raise ConfigError(
            f"--budget {budget:,} is below the {thumbnail_positions:,} vision positions of the "
            f"global thumbnail, which every answer sees; raise --budget to at least "
            f"{thumbnail_positions:,}"
        )


def _ranks(focus: FocusResult | None, segments: Sequence[VisionSegment]) -> list[np.ndarray]:
    """Per tile segment, a score per raster index (higher is kept longer)."""
    scored: dict[tuple[int, int, int], np.ndarray] = {}
    if focus is not None and focus.levels and focus.levels[-1].token_scores is not None:
        last = focus.levels[-1]
        for tile, grid in zip(last.encoded, last.token_scores or [], strict=True):
            scored[(tile.level + 1, tile.row, tile.col)] = np.asarray(grid, np.float64).ravel()
    out = []
    for seg in segments:
        n = seg.tokens.n
        rows, cols = seg.tokens.grid
        key = (seg.group, seg.offset[0] // max(rows, 1), seg.offset[1] // max(cols, 1))
        base = scored.get(key)
        # Ties (and unscored selectors) fall back to raster order: the last goes first.
        raster = -np.arange(n, dtype=np.float64) * 1e-12
        out.append(base + raster if base is not None and base.size == n else raster)
    return out


def fit_budget(
    adapter: Adapter,
    segments: Sequence[VisionSegment],
    budget: int,
    focus: FocusResult | None = None,
) -> tuple[list[VisionSegment], int]:
    """Segments whose LLM positions fit ``budget``, and how many tile tokens were dropped."""
    import torch

    segs = list(segments)
    total = adapter.llm_vision_positions(segs)
    if total <= budget:
        return segs, 0
    tile_ids = [i for i, s in enumerate(segs) if s.kind == "tile"]
    ranks = _ranks(focus, [segs[i] for i in tile_ids])
    keeps: dict[int, np.ndarray] = {}
    for i in tile_ids:
        keep = segs[i].keep
        keeps[i] = np.arange(segs[i].tokens.n) if keep is None else keep.cpu().numpy()
    dropped = 0
    while total > budget:
        pool = [(float(ranks[j][k]), i, int(k)) for j, i in enumerate(tile_ids) for k in keeps[i]]
        if not pool:
            break
        pool.sort()
        excess = total - budget
        for _, i, k in pool[:excess]:
            keeps[i] = keeps[i][keeps[i] != k]
        dropped += min(excess, len(pool))
        for i in tile_ids:
            segs[i] = replace(segs[i], keep=torch.as_tensor(keeps[i], dtype=torch.long))
        total = adapter.llm_vision_positions(segs)
    segs = [s for s in segs if s.kind != "tile" or s.keep is None or s.keep.numel()]
    return segs, dropped
