"""Promises of README / DESIGN / docstrings, each pinned so that breaking it fails here.

Memory follows the tiles read; kept tokens keep their true 2-D M-RoPE ids across tiles and
the text after them continues from the full frame; the 2–98 % stretch; the focus score's
definition; the default focus layer; padding is never ranked, kept or passed on; progress.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lrsvqa.focus import FocusConfig, default_focus_layer
from lrsvqa.focus.scoring import AttentionScorer, candidate_distribution
from lrsvqa.focus.select import FocusResult
from lrsvqa.io import Window
from lrsvqa.models.base import AttentionReadout, PreparedInputs
from lrsvqa.pipeline import Pipeline, Progress
from lrsvqa.prune import PruneConfig, assemble_segments, thumbnail_segment, tile_segment
from lrsvqa.pyramid import Tile
from lrsvqa.testing import Ship, make_ship_scene, write_geotiff
from lrsvqa.testing.stub import StubAdapter


# ------------------------------------------------------------------ memory follows tiles
class _ReadCounter:
    """Wraps rasterio's dataset read: the pixels each call decodes into memory."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import rasterio.io

        self.reads: list[int] = []
        original = rasterio.io.DatasetReader.read

        def read(handle: Any, *args: Any, **kwargs: Any) -> Any:
            out = original(handle, *args, **kwargs)
            self.reads.append(int(out.shape[-1] * out.shape[-2]))
            return out

        monkeypatch.setattr(rasterio.io.DatasetReader, "read", read)


def test_memory_follows_the_tiles_read_not_the_image(tmp_path: Path, monkeypatch) -> None:
    """A windowed 6,144 px scene: every read decodes at most one tile-sized array (the
    stretch sample and thumbnail are bounded too); decoding the whole image once and
    slicing it — same pixels — would show up as one huge read."""
    path = tmp_path / "big.tif"
    make_ship_scene(path, 6144, ships=(Ship(4000, 3000, 200, 60),), sparse=True)
    counter = _ReadCounter(monkeypatch)
    adapter = StubAdapter()
    pipeline = Pipeline(adapter, focus=FocusConfig(keep_ratio=0.05, max_tiles=2))
    answer = pipeline.ask(path, "where is the ship?")
    assert answer.evidence.finest_level is not None
    tile_px = adapter.capabilities.tile_size**2
    assert counter.reads, "no raster reads seen"
    # Each read is one tile (or the thumbnail): never more than a few tiles' worth.
    assert max(counter.reads) <= 4 * tile_px, max(counter.reads)
    # In all: the tiles the focus read (thumbnail + level 0 + 2 per finer level), not the image.
    assert sum(counter.reads) <= (1 + len(counter.reads)) * tile_px
    assert sum(counter.reads) < 6144 * 6144 / 1000


# ------------------------------------------------------------------------ M-RoPE layout
@pytest.fixture(scope="module")
def qwen() -> Any:
    from lrsvqa.models import from_pretrained

    return from_pretrained("tiny/qwen2_vl", device="cpu")


def _tile(level: int, row: int, col: int, side: int) -> Tile:
    return Tile(level, row, col, Window(col * side, row * side, side, side))


def test_kept_tokens_keep_their_2d_positions_across_tiles(qwen: Any) -> None:
    """Tiles in a 2 x 3 arrangement (non-square), random kept subsets: every kept token's
    (t, h, w) = (s, s + tile_row * R + r, s + tile_col * C + c), and the text after the
    image continues from s + max(frame rows, frame cols), the full frame (not the largest
    kept id + 1)."""
    caps = qwen.capabilities
    side = caps.tile_size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
    tokens = qwen.encode([image])[0]
    rows, cols = tokens.grid
    assert rows * cols >= 4
    arrangement = [(0, 1), (0, 2), (1, 0), (1, 2)]  # frame spans 2 x 3 tiles
    tiles = [_tile(2, r, c, side) for r, c in arrangement]
    # Kept tokens avoid the frame's last token column, so "largest kept id + 1" differs.
    keeps = []
    for _ in tiles:
        choice = np.sort(rng.choice(rows * (cols - 1), size=3, replace=False))
        r, c = np.divmod(choice, cols - 1)
        keeps.append(np.sort(r * cols + c))
    focus = FocusResult(
        FocusConfig(),
        final_tiles=tiles,
        final_keep=keeps,
        final_tokens=[tokens] * len(tiles),
    )
    thumb = qwen.encode([image])[0]
    segments = assemble_segments(focus, thumb, PruneConfig())
    inputs = qwen.build_inputs(segments, "Where?")
    pos = inputs.position_ids[:, 0].cpu()
    tile_of = {i + 1: t for i, t in enumerate(sorted(tiles, key=lambda t: t.key))}
    seen = 0
    tile_positions = []
    for p, s, i in zip(
        inputs.vision_positions.tolist(),
        inputs.vision_segment.tolist(),
        inputs.vision_index.tolist(),
        strict=True,
    ):
        if s == 0:
            continue
        tile = tile_of[s]
        r, c = divmod(i, cols)
        t_id, h_id, w_id = (int(v) for v in pos[:, p])
        start = t_id
        assert (h_id - start, w_id - start) == (tile.row * rows + r, tile.col * cols + c)
        tile_positions.append(p)
        seen += 1
    assert seen == sum(len(k) for k in keeps)
    starts = {int(pos[0, p]) for p in tile_positions}
    assert len(starts) == 1  # one image block: one temporal id
    start = starts.pop()
    after = max(tile_positions) + 1
    frame = max(2 * rows, 3 * cols)
    assert torch.equal(pos[:, after], torch.full((3,), start + frame))
    kept_max = int(pos[:, tile_positions].max())
    assert start + frame != kept_max + 1  # the data tells the two rules apart


# ---------------------------------------------------------------------- 2–98 % stretch
def test_percentile_stretch_ignores_outliers(tmp_path: Path) -> None:
    """uint16 values spread over 1,000..2,000 with a few 0 and 65,535 outliers: the 2–98 %
    stretch maps the middle value to mid-grey; a min–max stretch would crush it to ~7."""
    import lrsvqa

    rng = np.random.default_rng(1)
    base = rng.uniform(1000, 2000, (256, 256))
    outliers = rng.random((256, 256)) < 0.005
    base[outliers] = np.where(rng.random(int(outliers.sum())) < 0.5, 0, 65535)

    def fill(x0: int, y0: int, w: int, h: int, band: int) -> np.ndarray:
        return base[y0 : y0 + h, x0 : x0 + w]

    path = write_geotiff(tmp_path / "u16.tif", 256, 256, dtype="uint16", fill=fill)
    with lrsvqa.open_scene(path) as scene:
        rgb = scene.read(Window(0, 0, 256, 256))
    middle = np.abs(base - 1500) < 5
    grey = rgb[..., 0][middle].astype(float)
    assert 110 <= grey.mean() <= 145, grey.mean()
    assert rgb[..., 0][base >= 65535].min() == 255 and rgb[..., 0][base == 0].max() == 0
    low = np.abs(base - 1010) < 2  # below the 2nd percentile (~1,020): black
    assert rgb[..., 0][low].max() <= 3


# ---------------------------------------------------------------- focus score definition
class _HeadsAdapter(StubAdapter):
    """Two heads that disagree: head 0 spends most of its mass outside the candidates."""

    def attention_readout(self, inputs: PreparedInputs, layers: Any) -> AttentionReadout:
        n = int(inputs.vision_positions.numel())
        ramp = torch.linspace(1.0, 2.0, n, dtype=torch.float64)
        head0 = ramp.clone()
        head0[inputs.vision_segment == 0] *= 50.0  # the thumbnail (not a candidate)
        head1 = ramp.flip(0)
        weights = torch.stack([head0 / head0.sum() * 0.5, head1 / head1.sum()])
        return AttentionReadout(weights[None].float(), inputs.length, inputs.length)


def test_focus_score_is_the_per_head_renormalised_mean() -> None:
    adapter = _HeadsAdapter()
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)
    tok = adapter.encode([image, image, image])
    segments = [thumbnail_segment(tok[0])] + [
        tile_segment(t, _tile(0, 0, i, 56)) for i, t in enumerate(tok[1:])
    ]
    result = AttentionScorer([0]).score(adapter, segments, "q")
    inputs = adapter.build_inputs(segments, "q")
    weights = adapter.attention_readout(inputs, [0]).weights[0].double().numpy()
    cand = (inputs.vision_segment >= 1).numpy()
    per_head = weights[:, cand] / weights[:, cand].sum(axis=1, keepdims=True)
    expected = per_head.mean(axis=0)
    got = np.concatenate([g.ravel() for g in result.grids])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    wrong = weights.mean(axis=0)[cand] / weights.mean(axis=0)[cand].sum()
    assert np.abs(wrong - expected).max() > 1e-3  # the data separates the two definitions
    direct = candidate_distribution(torch.from_numpy(weights)[None], torch.from_numpy(cand))
    np.testing.assert_allclose(direct.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize(("depth", "layer"), [(1, 0), (4, 1), (8, 1), (12, 2), (28, 6), (32, 7)])
def test_default_focus_layer(depth: int, layer: int) -> None:
    assert default_focus_layer(depth) == layer


# ---------------------------------------------------------------- padding never passed
def _inside_mask(tile_window: Window, grid: tuple[int, int], width: int, height: int) -> np.ndarray:
    rows, cols = grid
    out = np.zeros(grid, dtype=bool)
    for r in range(rows):
        for c in range(cols):
            x = tile_window.col_off + c * tile_window.width / cols
            y = tile_window.row_off + r * tile_window.height / rows
            out[r, c] = x < width and y < height
    return out


class _RecordingStub(StubAdapter):
    def __init__(self) -> None:
        super().__init__()
        self.generated: list[PreparedInputs] = []

    def generate(self, inputs: PreparedInputs, **kwargs: Any) -> Any:
        self.generated.append(inputs)
        return super().generate(inputs, **kwargs)


@pytest.mark.parametrize("selector", ["rfm", "uniform", "random"])
def test_padding_tokens_are_never_ranked_kept_or_passed(tmp_path: Path, selector: str) -> None:
    """A 610 x 470 px scene: the right and bottom tiles reach past the edge."""
    path = tmp_path / "edge.tif"
    make_ship_scene(path, 610, 470, ships=(Ship(590, 440, 18, 12),))
    adapter = _RecordingStub()
    focus = FocusConfig(selector=selector, keep_ratio=0.9, max_tiles=40, seed=4)
    pipeline = Pipeline(adapter, focus=focus)
    answer = pipeline.ask(path, "is there a ship in the corner?")
    result = answer.focus
    assert result is not None and result.final_tiles
    padded = 0
    for tile, keep, tokens in zip(
        result.final_tiles, result.final_keep, result.final_tokens, strict=True
    ):
        inside = _inside_mask(tile.window, tokens.grid, 610, 470).ravel()
        padded += int((~inside).sum())
        assert inside[keep].all(), (tile, keep[~inside[keep]])
    assert padded > 0  # the test scene does have padding among the final tiles
    for level in result.levels:
        if level.token_scores is None:
            continue
        for tile, grid in zip(level.encoded, level.token_scores, strict=True):
            inside = _inside_mask(tile.window, grid.shape, 610, 470)
            assert (grid[~inside] == 0).all()  # padding gets no score: never ranked
    # What reached the LLM: segment s >= 1 is the s-th final tile in raster order.
    sent = adapter.generated[-1]
    ordered = sorted(result.final_tiles, key=lambda t: t.key)
    by_tile = {t.key: tok for t, tok in zip(result.final_tiles, result.final_tokens, strict=True)}
    passed = 0
    for s, i in zip(sent.vision_segment.tolist(), sent.vision_index.tolist(), strict=True):
        if s == 0:
            continue
        tile = ordered[s - 1]
        assert _inside_mask(tile.window, by_tile[tile.key].grid, 610, 470).ravel()[i]
        passed += 1
    assert passed == result.kept_tokens > 0


# ------------------------------------------------------------------------------ progress
def test_progress_reports_every_stage_in_order(tmp_path: Path) -> None:
    path = tmp_path / "s.tif"
    make_ship_scene(path, 2048, ships=(Ship(1500, 400, 120, 40),))
    events: list[Progress] = []
    pipeline = Pipeline(StubAdapter(), focus=FocusConfig(keep_ratio=0.05, max_tiles=2))
    answer = pipeline.ask(path, "where is the ship?", progress=events.append)
    stages = [e.stage for e in events]
    assert stages[0] == "pyramid" and stages[-2:] == ["generate", "done"]
    levels = answer.evidence.levels()
    focus_levels = [e.level for e in events if e.stage == "focus"]
    assert focus_levels == levels == list(range(5))
    assert all(e.levels == 5 for e in events if e.stage in ("focus", "encode"))
    for level in levels:
        enc = [e for e in events if e.stage == "encode" and e.level == level]
        assert enc and enc[0].done == 0 and enc[-1].done == enc[-1].total
        assert [e.done for e in enc] == sorted(e.done for e in enc)
        encoded = answer.cost.tiles_encoded.get(str(level), 0)
        assert enc[-1].total == encoded
    # A second question: everything from the cache, nothing to encode.
    again: list[Progress] = []
    pipeline.ask(path, "is there a ship?", progress=again.append)
    assert all(e.total == 0 for e in again if e.stage == "encode")
    assert [e.stage for e in again if e.stage != "encode"][-2:] == ["generate", "done"]
