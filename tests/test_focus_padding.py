"""Padding tokens never enter a focus pass: not the training-free focus, not the RFM teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lrsvqa.focus import FocusConfig
from lrsvqa.focus.padding import inside_mask, unpadded_keep
from lrsvqa.focus.teacher import RfmItem, iter_prepared
from lrsvqa.pipeline import Pipeline
from lrsvqa.pyramid import DynamicImagePyramid
from lrsvqa.testing import Ship, make_ship_scene


@pytest.fixture(scope="module")
def padded_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # a wide, low strip: most of every level-0 tile lies below the image
    path = tmp_path_factory.mktemp("pad") / "strip.tif"
    make_ship_scene(path, 1400, 180, ships=(Ship(700, 90, 60, 20),))
    return path


def _spy(adapter: Any) -> list[list[Any]]:
    seen: list[list[Any]] = []
    build = adapter.build_inputs

    def spy(segments: Any, question: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(list(segments))
        return build(segments, question, *args, **kwargs)

    adapter.build_inputs = spy
    return seen


def _padding_in(segments: list[Any], pyramid: DynamicImagePyramid) -> tuple[int, int]:
    """(padding tokens in the sequence, tile tokens in the sequence) of one pass."""
    tiles = {t.key: t for lvl in pyramid.levels for t in pyramid.tiles(lvl.index)}
    padding = present = 0
    for seg in segments:
        if seg.kind != "tile":
            continue
        rows, cols = seg.tokens.grid
        level = seg.group - 1
        tile = tiles[(level, seg.offset[0] // rows, seg.offset[1] // cols)]
        inside = inside_mask(pyramid, tile, seg.tokens.grid).ravel()
        kept = np.arange(seg.tokens.n) if seg.keep is None else seg.keep.numpy()
        padding += int((~inside[kept]).sum())
        present += len(kept)
    return padding, present


def test_masks() -> None:
    class Scene:
        width, height = 10, 5

    class Pyr:
        scene = Scene()

    from lrsvqa.io import Window
    from lrsvqa.pyramid import Tile

    tile = Tile(0, 0, 0, Window(0, 0, 8, 8))  # 8x8 px window over a 10x5 image, 4x4 tokens
    mask = inside_mask(Pyr(), tile, (4, 4))  # type: ignore[arg-type]
    assert mask.tolist() == [[True] * 4] * 3 + [[False] * 4]  # rows at y 0, 2, 4 inside
    keep = unpadded_keep(Pyr(), tile, (4, 4))  # type: ignore[arg-type]
    assert keep is not None and keep.tolist() == list(range(12))
    inner = Tile(0, 0, 0, Window(0, 0, 4, 4))
    assert unpadded_keep(Pyr(), inner, (4, 4)) is None  # type: ignore[arg-type]


def test_focus_passes_and_teacher_never_see_padding(padded_scene: Path) -> None:
    # one level down is enough: the strip's padding is at every level's bottom edge
    pipeline = Pipeline.from_pretrained(
        "tiny/qwen2_vl", device="cpu", focus=FocusConfig(max_depth=1), max_new_tokens=2
    )
    adapter = pipeline.adapter
    seen = _spy(adapter)
    pipeline.ask(padded_scene, "Where is the ship?")
    assert len(seen) >= 2  # focus pass(es) + the answer
    with DynamicImagePyramid(
        padded_scene, config=pipeline.session(padded_scene).pyramid.config
    ) as p:
        counts = [_padding_in(segs, p) for segs in seen]
        encoded_tokens = sum(
            adapter.capabilities.n_tokens_per_tile for _ in p.tiles(0)
        )  # what level 0 would put in the pass with its padding
    assert all(pad == 0 for pad, _ in counts), counts
    first_pass_tokens = counts[0][1]
    assert first_pass_tokens < encoded_tokens / 2  # most of the strip's tiles is padding

    seen.clear()
    item = RfmItem("strip-1", padded_scene, "Where is the ship?")
    prepared = list(iter_prepared(adapter, [item], [0]))
    assert len(prepared) == 1 and seen
    with DynamicImagePyramid(
        padded_scene, config=pipeline.session(padded_scene).pyramid.config
    ) as p:
        assert all(_padding_in(segs, p)[0] == 0 for segs in seen)
    assert torch.isclose(prepared[0].teacher.sum(), torch.tensor(1.0), atol=1e-4)
