"""M-RoPE position modes: tile tokens at their whole-scene cell, or packed within range."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lrsvqa.errors import ConfigError
from lrsvqa.focus import FocusConfig
from lrsvqa.io import Window
from lrsvqa.models import from_pretrained
from lrsvqa.models.base import VisionTokens
from lrsvqa.pipeline import Pipeline
from lrsvqa.prune import PruneConfig, thumbnail_segment, tile_segments
from lrsvqa.prune.tokens import compact_offsets
from lrsvqa.pyramid import Tile
from lrsvqa.testing import Ship, make_ship_scene

QUESTION = "How many ships are there?"


def _tile(row: int, col: int, level: int = 4) -> Tile:
    return Tile(level, row, col, Window(col * 448, row * 448, 448, 448))


def test_compact_offsets_keep_order_and_adjacency() -> None:
    tiles = [_tile(0, 0), _tile(0, 30), _tile(20, 30), _tile(21, 31), _tile(5, 5, level=1)]
    grids = [(16, 16)] * 5
    assert compact_offsets(tiles, grids) == [(0, 0), (0, 16), (16, 16), (32, 32), (0, 0)]


@pytest.fixture(scope="module")
def qwen() -> Any:
    return from_pretrained("tiny/qwen2_vl", device="cpu")


def _tile_ids(ad: Any, compact: bool) -> tuple[torch.Tensor, Any]:
    g = ad.capabilities.tokens_per_tile
    hidden = ad.language_model().config.hidden_size
    tok = VisionTokens(torch.zeros(g[0] * g[1], hidden), g)
    thumb = VisionTokens(torch.zeros(g[0] * g[1], hidden), g)
    tiles = [_tile(0, 0), _tile(20, 30), _tile(20, 31), _tile(60, 60)]  # a 27k px scene's ids
    segments = [
        thumbnail_segment(thumb),
        *tile_segments(tiles, [tok] * 4, [None] * 4, compact=compact),
    ]
    inputs = ad.build_inputs(segments, QUESTION)
    tiles_at = inputs.vision_positions[inputs.vision_segment >= 1]
    return inputs.position_ids[1:, 0, tiles_at], inputs  # (h, w) ids of the tile tokens


def test_compact_ids_stay_in_range(qwen: Any) -> None:
    scene, _ = _tile_ids(qwen, compact=False)
    packed, inputs = _tile_ids(qwen, compact=True)
    rows, cols = qwen.capabilities.tokens_per_tile
    span = lambda ids: (ids.max(dim=1).values - ids.min(dim=1).values).tolist()  # noqa: E731
    assert span(scene) == [60 * rows + rows - 1, 60 * cols + cols - 1]  # ~976 for 16-token tiles
    assert span(packed) == [3 * rows - 1, 4 * cols - 1]  # 3 distinct rows, 4 distinct columns
    # tokens keep their sequence order and their relative layout: the same sort by (h, w)
    order = lambda ids: np.lexsort((ids[1].numpy(), ids[0].numpy())).tolist()  # noqa: E731
    assert order(scene) == order(packed)
    # text after the image continues after the largest id, as stock Qwen does
    last = int(inputs.vision_positions.max())
    assert int(inputs.position_ids[0, 0, last + 1]) > int(
        inputs.position_ids[:, 0, : last + 1].max()
    )


def test_mode_is_recorded_and_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="scene, compact"):
        PruneConfig(mrope_positions="scaled")
    scene = tmp_path / "scene.tif"
    make_ship_scene(scene, 2048, ships=(Ship(1500, 400, 80, 30),))
    pipeline = Pipeline.from_pretrained(
        "tiny/qwen2_vl",
        device="cpu",
        focus=FocusConfig(max_depth=1, max_tiles=2),
        prune=PruneConfig(mrope_positions="compact"),
        max_new_tokens=2,
    )
    seen: list[list[Any]] = []  # the segments of every focus pass
    score = pipeline.scorer.score

    def recording(adapter: Any, segments: Any, question: str) -> Any:
        seen.append(list(segments))
        return score(adapter, segments, question)

    pipeline.scorer.score = recording  # type: ignore[method-assign]
    answer = pipeline.ask(scene, QUESTION)
    assert answer.config["prune"]["mrope_positions"] == "compact"
    # the focus passes place their candidate tiles packed as well, not at scene cells
    assert seen and any(len(segs) > 2 for segs in seen)
    for segs in seen:
        tiles = [s for s in segs[1:] if s.kind == "tile"]
        offsets = [s.offset for s in tiles]
        rows = sorted({o[0] for o in offsets})
        cols = sorted({o[1] for o in offsets})
        g = tiles[0].tokens.grid
        assert rows == [i * g[0] for i in range(len(rows))]
        assert cols == [i * g[1] for i in range(len(cols))]
    assert answer.cost.llm_vision_tokens > 0
