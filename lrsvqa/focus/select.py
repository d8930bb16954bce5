"""Coarse-to-fine tile selection over the pyramid (DESIGN §4).

Level 0 is encoded whole and scored; the top tokens are mapped to the tiles of the
next level under their footprint; the best tiles are read, encoded and scored in
turn, down to native resolution or until a budget stops the descent. The result
says, per level, which tiles were looked at, with what scores, and which tokens of
the finest tiles go to the LLM.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lrsvqa.focus.config import FocusConfig
from lrsvqa.focus.padding import inside_mask
from lrsvqa.io.window import Window
from lrsvqa.pyramid import DynamicImagePyramid, Tile

if TYPE_CHECKING:
    from lrsvqa.models.base import VisionTokens

# Encodes tiles (cached by the caller) → one VisionTokens per tile.
EncodeTiles = Callable[[Sequence[Tile]], "list[VisionTokens]"]
# Scores candidate tiles' tokens given the thumbnail → one (rows, cols) array per tile, or
# a ``ScoreResult`` (its grids, and the newline scores when newlines are in the softmax).
ScoreTiles = Callable[["VisionTokens", Sequence[Tile], "list[VisionTokens]"], Any]


@dataclass(frozen=True)
class TileChoice:
    """A tile looked at during focus: its score and how many of its tokens were kept."""

    tile: Tile
    score: float
    kept_tokens: int


@dataclass
class LevelFocus:
    """What happened at one level: tiles encoded, their token scores, tiles chosen."""

    level: int
    factor: float
    encoded: list[Tile]
    token_scores: list[np.ndarray] | None  # per encoded tile, (rows, cols); None: unscored
    chosen: list[TileChoice]  # passed to the next level (at the finest: the final tiles)


@dataclass
class FocusResult:
    """The selection: per-level history, the final tiles and their kept token indices."""

    config: FocusConfig
    levels: list[LevelFocus] = field(default_factory=list)
    final_tiles: list[Tile] = field(default_factory=list)
    final_keep: list[np.ndarray] = field(default_factory=list)  # sorted raster indices per tile
    final_tokens: list[VisionTokens] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the user should know (budget cuts)

    @property
    def finest_level(self) -> int | None:
        return self.final_tiles[0].level if self.final_tiles else None

    @property
    def kept_tokens(self) -> int:
        return int(sum(len(k) for k in self.final_keep))

    def to_dict(self) -> dict[str, Any]:
        return {
            "selector": self.config.selector,
            "finest_level": self.finest_level,
            "kept_tokens": self.kept_tokens,
            "notes": list(self.notes),
            "levels": [
                {
                    "level": lvl.level,
                    "factor": lvl.factor,
                    "encoded": len(lvl.encoded),
                    "chosen": [
                        {
                            "row": c.tile.row,
                            "col": c.tile.col,
                            "score": c.score,
                            "kept_tokens": c.kept_tokens,
                        }
                        for c in lvl.chosen
                    ],
                }
                for lvl in self.levels
            ],
        }


def levels_to_visit(
    pyramid: DynamicImagePyramid, config: FocusConfig, thumbnail_tokens: int
) -> int:
    """How many pyramid levels ``select`` will visit at most (a budget may stop it earlier)."""
    if config.selector == "thumbnail" or config.token_budget <= thumbnail_tokens:
        return 0
    if config.selector == "all":
        return 1
    last = len(pyramid.levels) - 1
    return 1 + (last if config.max_depth is None else min(last, config.max_depth))


def select(
    pyramid: DynamicImagePyramid,
    config: FocusConfig,
    *,
    thumbnail: VisionTokens,
    encode: EncodeTiles,
    score: ScoreTiles | None,
    tokens_per_tile: int,
) -> FocusResult:
    """Run the configured selector over ``pyramid``."""
    result = FocusResult(config)
    thumb_tokens = thumbnail.n
    llm_room = max(0, config.token_budget - thumb_tokens)
    if config.selector == "thumbnail" or llm_room == 0:
        return result
    if config.selector == "all":
        return _select_all(pyramid, config, result, encode, tokens_per_tile, llm_room)
    if config.selector == "rfm" and score is None:
        raise ValueError("the rfm selector needs a token scorer")
    rng = np.random.default_rng(config.seed)
    candidates = pyramid.tiles(0)
    encoded_total = thumb_tokens
    last = len(pyramid.levels) - 1
    stop = last if config.max_depth is None else min(last, config.max_depth)
    level = 0
    while True:
        tokens = encode(candidates)
        encoded_total += sum(t.n for t in tokens)
        inside = [
            _inside(pyramid, tile, tok.grid) for tile, tok in zip(candidates, tokens, strict=True)
        ]
        scores = None
        separators: dict[tuple[int, int], float] = {}
        if config.selector == "rfm":
            assert score is not None
            scored = score(thumbnail, candidates, tokens)
            if not isinstance(scored, list):
                separators = dict(getattr(scored, "separators", None) or {})
                scored = scored.grids
            if config.newlines == "in-softmax" and separators:
                scores = [np.where(m, s, 0.0) for s, m in zip(scored, inside, strict=True)]
            else:
                separators = {}
                scores = _only_inside(scored, inside)
        next_level_cost = config.max_tiles * tokens_per_tile
        budget_left = config.encode_budget is None or (
            encoded_total + next_level_cost <= config.encode_budget
        )
        next_tiles: list[Tile] = []
        if level < stop and budget_left:
            if scores is not None and config.tile_rule == "hit":
                chosen, next_tiles = descend_by_hits(
                    pyramid, config, candidates, scores, inside, separators, level
                )
            elif scores is not None:
                chosen, next_tiles = _descend_by_score(pyramid, config, candidates, scores, level)
            else:
                chosen, next_tiles = _descend_blind(pyramid, config, candidates, rng)
        if not next_tiles:
            keep = _final_keep(config, tokens, scores, inside, rng, llm_room, separators)
            totals = (
                [_tile_total(g, k, config) for g, k in zip(scores, keep, strict=True)]
                if scores is not None
                else [0.0] * len(candidates)
            )
            chosen = [
                TileChoice(t, total, len(k))
                for t, total, k in zip(candidates, totals, keep, strict=True)
            ]
            kept = [i for i, k in enumerate(keep) if len(k)]
            result.levels.append(_level(pyramid, level, candidates, scores, chosen))
            result.final_tiles = [candidates[i] for i in kept]
            result.final_keep = [keep[i] for i in kept]
            result.final_tokens = [tokens[i] for i in kept]
            return result
        result.levels.append(_level(pyramid, level, candidates, scores, chosen))
        candidates = next_tiles
        level += 1


def _level(
    pyramid: DynamicImagePyramid,
    level: int,
    encoded: list[Tile],
    scores: list[np.ndarray] | None,
    chosen: list[TileChoice],
) -> LevelFocus:
    return LevelFocus(level, pyramid.levels[level].factor, list(encoded), scores, chosen)


def _select_all(
    pyramid: DynamicImagePyramid,
    config: FocusConfig,
    result: FocusResult,
    encode: EncodeTiles,
    tokens_per_tile: int,
    llm_room: int,
) -> FocusResult:
    """The finest level whose every tile fits the budget, all tokens kept."""
    fitting = [lvl for lvl in pyramid.levels if lvl.n_tiles * tokens_per_tile <= llm_room]
    level = fitting[-1] if fitting else pyramid.levels[0]
    tiles = pyramid.tiles(level.index)
    tokens = encode(tiles)
    keep = [np.arange(t.n) for t in tokens]
    if not fitting:  # even level 0 is too big: keep its first tokens up to the budget
        keep = _cap(keep, llm_room)
        need = level.n_tiles * tokens_per_tile + config.token_budget - llm_room
        result.notes.append(
            f"selector 'all': level 0 ({level.n_tiles} tiles) needs {need:,} vision tokens with "
            f"the thumbnail, over the budget of {config.token_budget:,}; its last tokens in "
            f"raster order were cut (raise --budget to {need:,} to keep them all)"
        )
    result.levels.append(
        _level(
            pyramid,
            level.index,
            tiles,
            None,
            [TileChoice(t, 0.0, len(k)) for t, k in zip(tiles, keep, strict=True)],
        )
    )
    kept = [i for i, k in enumerate(keep) if len(k)]
    result.final_tiles = [tiles[i] for i in kept]
    result.final_keep = [keep[i] for i in kept]
    result.final_tokens = [tokens[i] for i in kept]
    return result


def _descend_by_score(
    pyramid: DynamicImagePyramid,
    config: FocusConfig,
    candidates: list[Tile],
    scores: list[np.ndarray],
    level: int,
) -> tuple[list[TileChoice], list[Tile]]:
    """Keep the top tokens, map them to next-level tiles, keep the best ``max_tiles``."""
    flat = np.concatenate([s.ravel() for s in scores])
    n_keep = config.keep_count(flat.size)
    threshold_order = np.argsort(-flat, kind="stable")[:n_keep]
    kept_mask = np.zeros(flat.size, dtype=bool)
    kept_mask[threshold_order] = True
    kept_mask &= flat > 0  # padding (score 0) never leads anywhere
    sums: dict[tuple[int, int, int], float] = {}
    maxes: dict[tuple[int, int, int], float] = {}
    counts: dict[tuple[int, int, int], int] = {}
    tiles_by_key: dict[tuple[int, int, int], Tile] = {}
    chosen: list[TileChoice] = []
    offset = 0
    for tile, grid in zip(candidates, scores, strict=True):
        rows, cols = grid.shape
        mask = kept_mask[offset : offset + grid.size].reshape(rows, cols)
        offset += grid.size
        chosen.append(TileChoice(tile, float(grid[mask].sum()), int(mask.sum())))
        for r, c in zip(*np.nonzero(mask), strict=True):
            for child in pyramid.tiles_under(
                _token_window(tile, rows, cols, int(r), int(c)), level + 1
            ):
                value = float(grid[r, c])
                sums[child.key] = sums.get(child.key, 0.0) + value
                maxes[child.key] = max(maxes.get(child.key, 0.0), value)
                counts[child.key] = counts.get(child.key, 0) + 1
                tiles_by_key[child.key] = child
    if config.tile_score == "sum":
        tile_scores = sums
    elif config.tile_score == "max":
        tile_scores = maxes
    else:
        tile_scores = {k: sums[k] / counts[k] for k in sums}
    best = sorted(tile_scores, key=lambda k: (-tile_scores[k], k))[: config.max_tiles]
    return [c for c in chosen if c.kept_tokens], sorted(tiles_by_key[k] for k in best)


def descend_by_hits(
    pyramid: DynamicImagePyramid,
    config: FocusConfig,
    candidates: list[Tile],
    scores: list[np.ndarray],
    inside: list[np.ndarray],
    separators: dict[tuple[int, int], float],
    level: int,
) -> tuple[list[TileChoice], list[Tile]]:
    """The release's rule (``get_next_level_fea``): the top ``keep_count`` of the tokens in
    the softmax (newlines included when they are scored, and then every newline kept) each
    hit the next-level tile at the same *relative* place of the level's unpadded token grid
    — cell (R, C) of an H x W' grid hits tile (floor(R * rows / H), floor(C * cols / W')),
    W' counting the newline column — and every tile hit goes on (no ``max_tiles``)."""
    finer = pyramid.level(level + 1)
    grid = scores[0].shape
    height, width = level_token_extent(pyramid, level, grid)
    wide = width + 1 if separators else width  # the newline column
    cells: list[tuple[float, int, int, int]] = []  # (score, tile index, R, C)
    for n, (tile, g, m) in enumerate(zip(candidates, scores, inside, strict=True)):
        for r, c in zip(*np.nonzero(m), strict=True):
            cells.append(
                (float(g[r, c]), n, tile.row * grid[0] + int(r), tile.col * grid[1] + int(c))
            )
    newline_cells = [(v, -1, row, width) for (_, row), v in sorted(separators.items())]
    ranked = sorted(cells + newline_cells, key=lambda t: -t[0])
    top = ranked[: config.keep_count(len(ranked))]
    hits = top + [cell for cell in newline_cells if cell not in top]  # newlines always kept
    keys: set[tuple[int, int]] = set()
    for _, _, big_r, big_c in hits:
        row = min(finer.rows - 1, big_r * finer.rows // height)
        col = min(finer.cols - 1, big_c * finer.cols // wide)
        keys.add((row, col))
    kept_per_tile: dict[int, list[float]] = {}
    for value, n, _, _ in top:
        if n >= 0:
            kept_per_tile.setdefault(n, []).append(value)
    chosen = [
        TileChoice(candidates[n], float(sum(v)), len(v)) for n, v in sorted(kept_per_tile.items())
    ]
    return chosen, [pyramid.tile(level + 1, r, c) for r, c in sorted(keys)]


def level_token_extent(
    pyramid: DynamicImagePyramid, level: int, grid: tuple[int, int]
) -> tuple[int, int]:
    """(rows, cols) of level ``level``'s whole-scene token grid that lie in the image: the
    release's ``int()`` unpadding for release levels, else every token row and column whose
    footprint starts inside the image."""
    from lrsvqa.pyramid.grid import release_token_extent

    lvl = pyramid.level(level)
    if pyramid.config.levels == "release":
        return release_token_extent(lvl, grid)
    cell_h, cell_w = pyramid.tile_size / grid[0], pyramid.tile_size / grid[1]
    return math.ceil(lvl.height / cell_h), math.ceil(lvl.width / cell_w)


def _descend_blind(
    pyramid: DynamicImagePyramid,
    config: FocusConfig,
    candidates: list[Tile],
    rng: np.random.Generator,
) -> tuple[list[TileChoice], list[Tile]]:
    """``uniform`` / ``random``: spread the choice over the children of the candidates."""
    children = sorted({child for tile in candidates for child in pyramid.children(tile)})
    m = min(config.max_tiles, len(children))
    if config.selector == "uniform":
        picks = np.unique(np.linspace(0, len(children) - 1, m).round().astype(int))
    else:
        picks = np.sort(rng.choice(len(children), size=m, replace=False))
    chosen_children = [children[i] for i in picks]
    parents = {pyramid.parent(c) for c in chosen_children}
    chosen = [TileChoice(t, 0.0, 0) for t in candidates if t in parents]
    return chosen, chosen_children


def _final_keep(
    config: FocusConfig,
    tokens: list[VisionTokens],
    scores: list[np.ndarray] | None,
    inside: list[np.ndarray],
    rng: np.random.Generator,
    llm_room: int,
    separators: dict[tuple[int, int], float] | None = None,
) -> list[np.ndarray]:
    """Indices of the tokens of each final tile that reach the LLM (never padding)."""
    total = sum(t.n for t in tokens)
    valid = np.concatenate([m.ravel() for m in inside])
    candidates = np.nonzero(valid)[0]
    if config.rounding == "floor":  # the release: int(25 %) of what its softmax held
        seps = np.array(sorted((separators or {}).values()), dtype=np.float64)
        n_keep = min(llm_room, len(candidates), config.keep_count(len(candidates) + len(seps)))
    else:
        seps = np.zeros(0)
        n_keep = min(llm_room, len(candidates), config.keep_count(total))
    if n_keep >= total:
        return [np.arange(t.n) for t in tokens]
    if scores is not None:
        flat = np.concatenate([s.ravel() for s in scores])
        ranked = candidates[np.argsort(-flat[candidates], kind="stable")]
        if len(seps):  # newlines ranked among the tokens take places of the top int(25 %)
            both = np.concatenate([flat[candidates], seps])
            top = np.argsort(-both, kind="stable")[:n_keep]
            n_keep = int(np.sum(top < len(candidates)))
        order = ranked[:n_keep]
    elif config.selector == "uniform":
        order = candidates[
            np.unique(np.linspace(0, len(candidates) - 1, n_keep).round().astype(int))
        ]
    else:
        order = rng.choice(candidates, size=n_keep, replace=False)
    mask = np.zeros(total, dtype=bool)
    mask[order] = True
    keep, offset = [], 0
    for t in tokens:
        keep.append(np.nonzero(mask[offset : offset + t.n])[0])
        offset += t.n
    return keep


def _inside(pyramid: DynamicImagePyramid, tile: Tile, grid: tuple[int, int]) -> np.ndarray:
    """(rows, cols) mask of the tokens whose footprint lies (partly) inside the image."""
    return inside_mask(pyramid, tile, grid)


def _only_inside(scores: list[np.ndarray], inside: list[np.ndarray]) -> list[np.ndarray]:
    """Padding past the image edge is black, not evidence: zero it and renormalise."""
    masked = [np.where(m, s, 0.0) for s, m in zip(scores, inside, strict=True)]
    total = sum(float(s.sum()) for s in masked)
    return [s / total for s in masked] if total > 0 else masked


def _cap(keep: list[np.ndarray], room: int) -> list[np.ndarray]:
    out = []
    for k in keep:
        out.append(k[: max(0, room)])
        room -= len(out[-1])
    return out


def _tile_total(scores: np.ndarray, keep: np.ndarray, config: FocusConfig) -> float:
    flat = scores.ravel()[keep] if len(keep) else np.zeros(1)
    if config.tile_score == "max":
        return float(flat.max())
    if config.tile_score == "mean":
        return float(flat.mean())
    return float(flat.sum())


def _token_window(tile: Tile, rows: int, cols: int, r: int, c: int) -> Window:
    """The native pixels under token (r, c) of a tile's (rows, cols) grid."""
    w = tile.window
    x0 = w.col_off + (c * w.width) // cols
    x1 = w.col_off + ((c + 1) * w.width) // cols
    y0 = w.row_off + (r * w.height) // rows
    y1 = w.row_off + ((r + 1) * w.height) // rows
    return Window(x0, y0, max(1, x1 - x0), max(1, y1 - y0))
