"""Training examples for the micro model, read the way ``ask`` reads them.

Each world is written as a GeoTIFF with average overviews and opened with lrsvqa's own
``DynamicImagePyramid`` (224 px tiles and thumbnail), so every pixel the model trains on comes
from the same reads, overviews and resampling as at inference. An example is what one LLM
pass sees: the global thumbnail plus some tiles of one pyramid level, each with the token
indices it keeps and its (row, col) in the level's whole-scene token grid, then a question.

- *focus* examples: the candidates of one focus pass (every level-0 tile, or up to 6 tiles
  of a finer level), all tokens; they train only the grounding term;
- *answer* examples: the final tiles with 25 % of their tokens (the target objects' tokens
  first), as the pruned input reaches the LLM; they train the answer and the grounding.

Tiles of finer levels are sometimes shifted in the level grid (the pixels stay the same) so
that the model sees the large position ids of big scenes. World sides are jittered off the
multiples of 224 px (``size_jitter``), so that tiles at the right and bottom edges reach past
the image as they do in users' scenes: v9, trained on multiples of 224 px only, put its
focus on those edge tiles' boundary tokens in the demo's 4,096-8,192 px scenes.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lrsvqa.pyramid import DynamicImagePyramid, Tile

from lrsvqa.micro.model import TILE
from lrsvqa.testing.world import World, WorldObject, make_world, write_world
from lrsvqa.testing.world_questions import WorldQuestion, world_questions

KEEP_RATIO = 0.25
CENTRE_MAX = 3  # centre counts per token cell: 0, 1, 2, 3 or more
MAX_TILES = 6
GRID = TILE // 28  # LLM tokens per tile side
SIZES = (224, 224, 336, 448, 672, 896, 1344, 1792, 2688, 3584)
#: Sizes of the ``big_world_share`` worlds: the range of big scenes (bench_accuracy's are
#: 4,096-30,000 px), where objects vanish below a pixel at the coarse levels.
BIG_SIZES = (4480, 5376, 7168, 10752, 14336)


@dataclass
class Example:
    images: list[np.ndarray]  # [thumbnail, tile, tile, ...] uint8 (224, 224, 3)
    offsets: list[tuple[int, int]]  # per tile: (row, col) of its token grid in the level frame
    level: int
    keeps: list[np.ndarray]  # per tile: kept raster indices (sorted)
    targets: list[np.ndarray]  # per tile: raster indices of cells on the asked-about objects
    question: str
    answer: str | None  # None: a focus example (grounding only)
    category: str
    # per image (thumbnail first): (64,) class id of each token cell (0 = no object, else
    # 1 + index in CLASSES) and colour id (0 = none, else 1 + index in COLOURS), for the
    # auxiliary token loss; an object counts in an image only where it is >= 2 px wide
    labels: list[np.ndarray] | None = None
    colours: list[np.ndarray] | None = None
    # per image: (64,) surface id under each token's centre (0 water, 1 rural, 2 urban land)
    surfaces: list[np.ndarray] | None = None
    # per image: (64,) number of objects (>= 2 px wide there) whose centre lies in each token
    # cell, at most CENTRE_MAX: one mark per object, whatever its size, for counting
    centres: list[np.ndarray] | None = None
    # count and presence questions: how many objects the question is about (the count asked
    # for; 0 for an absent class), for the count readout
    n_targets: int | None = None
    # per tile: raster indices of its tokens inside the image (a focus pass's candidates)
    inside: list[np.ndarray] | None = None
    # count questions: per tile, the cell of each asked-about object's centre (one entry per
    # object >= 2 px wide there, so a cell holding two centres is listed twice)
    target_centres: list[np.ndarray] | None = None


def _cells(
    tile_window: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]]
) -> np.ndarray:
    """Raster indices of the tile's GRID x GRID tokens whose native footprint meets a box."""
    x0, y0, w, h = tile_window
    out: set[int] = set()
    for bx0, by0, bx1, by1 in boxes:
        c0 = math.floor((bx0 - x0) * GRID / w)
        c1 = math.ceil((bx1 - x0) * GRID / w) - 1
        r0 = math.floor((by0 - y0) * GRID / h)
        r1 = math.ceil((by1 - y0) * GRID / h) - 1
        for r in range(max(r0, 0), min(r1, GRID - 1) + 1):
            for c in range(max(c0, 0), min(c1, GRID - 1) + 1):
                out.add(r * GRID + c)
    return np.array(sorted(out), dtype=np.int64)


def _token_labels(
    tile_window: tuple[int, int, int, int], world: World
) -> tuple[np.ndarray, np.ndarray]:
    """Class and colour ids per token cell of an image covering ``tile_window``."""
    from lrsvqa.testing.world import CLASSES, COLOURS

    classes = np.zeros(GRID * GRID, dtype=np.int64)
    colours = np.zeros(GRID * GRID, dtype=np.int64)
    x0, y0, w, h = tile_window
    scale = TILE / w
    colour_ids = {c: i + 1 for i, c in enumerate(COLOURS)}
    for obj in sorted(world.objects, key=lambda o: o.area):  # larger objects win shared cells
        bx0, by0, bx1, by1 = obj.box
        if bx1 <= x0 or by1 <= y0 or bx0 >= x0 + w or by0 >= y0 + h:
            continue
        if max(obj.width, obj.height) * scale < 2:
            continue
        cells = _cells(tile_window, [obj.box])
        classes[cells] = CLASSES.index(obj.cls) + 1
        colours[cells] = colour_ids[obj.colour]
    return classes, colours


def _centre_cells(tile_window: tuple[int, int, int, int], objects: list[WorldObject]) -> list[int]:
    """The cell of each object's centre that lies in an image covering ``tile_window``, one
    entry per object (objects < 2 px wide there are left out)."""
    x0, y0, w, h = tile_window
    scale = TILE / w
    cells: list[int] = []
    for obj in objects:
        if max(obj.width, obj.height) * scale < 2:
            continue
        cx, cy = obj.center
        c = math.floor((cx - x0) * GRID / w)
        r = math.floor((cy - y0) * GRID / h)
        if 0 <= r < GRID and 0 <= c < GRID:
            cells.append(r * GRID + c)
    return cells


def _centres(tile_window: tuple[int, int, int, int], world: World) -> np.ndarray:
    """Objects (>= 2 px wide in an image covering ``tile_window``) centred in each cell."""
    counts = np.bincount(
        np.array(_centre_cells(tile_window, list(world.objects)), dtype=np.int64),
        minlength=GRID * GRID,
    )
    return np.minimum(counts, CENTRE_MAX).astype(np.int64)


def _target_centres(
    tile_window: tuple[int, int, int, int], world: World, targets: tuple[int, ...]
) -> np.ndarray:
    """The cell of each of ``targets``' centres that lies in the tile (objects >= 2 px
    wide in it), one entry per object."""
    objects = [world.objects[i] for i in targets]
    return np.array(_centre_cells(tile_window, objects), dtype=np.int64)


def _surfaces(tile_window: tuple[int, int, int, int], world: World) -> np.ndarray:
    """Surface id (0 water, 1 rural land, 2 urban land) under each token cell's centre."""
    x0, _, w, _ = tile_window
    xs = x0 + ((np.arange(GRID) + 0.5) * w) / GRID
    land = np.where(xs < world.land_edge, 1 + int(world.urban), 0)
    return np.tile(land, GRID).astype(np.int64)


def _inside(tile_window: tuple[int, int, int, int], width: int, height: int) -> np.ndarray:
    x0, y0, w, h = tile_window
    xs = x0 + (np.arange(GRID) * w) // GRID
    ys = y0 + (np.arange(GRID) * h) // GRID
    return np.nonzero(((ys[:, None] < height) & (xs[None, :] < width)).ravel())[0]


def world_examples(world: World, seed: int, workdir: str | Path) -> list[Example]:
    """Every example of one world (written to ``workdir``, read back through the pyramid)."""
    from lrsvqa.io.scene import Scene
    from lrsvqa.pyramid import DynamicImagePyramid, PyramidConfig

    rng = np.random.default_rng(seed)
    path = write_world(Path(workdir) / f"world_{seed}.tif", world, compress="zstd")
    out: list[Example] = []
    with Scene(path) as scene:
        pyramid = DynamicImagePyramid(
            scene, config=PyramidConfig(tile_size=TILE, thumbnail_size=TILE)
        )
        thumb = pyramid.thumbnail(TILE, square=True)
        last = len(pyramid.levels) - 1
        cache: dict[tuple[int, int, int], np.ndarray] = {}

        def read(tile: object) -> np.ndarray:
            key = tile.key  # type: ignore[attr-defined]
            if key not in cache:
                cache[key] = pyramid.read_tile(tile)  # type: ignore[arg-type]
            return cache[key]

        def window(tile: object) -> tuple[int, int, int, int]:
            w = tile.window  # type: ignore[attr-defined]
            return (int(w.col_off), int(w.row_off), int(w.width), int(w.height))

        for q in world_questions(world, seed=seed):
            boxes = [world.objects[i].box for i in q.targets]
            # one focus pass per question: level 0 whole, or a finer level's candidates
            levels = [int(rng.integers(0, last + 1))] if last >= 1 else [0]
            for level in levels:
                tiles = (
                    pyramid.tiles(level) if level == 0 else _candidates(pyramid, level, boxes, rng)
                )
                if len(tiles) > 9:
                    tiles = list(rng.choice(np.array(tiles, dtype=object), 9, replace=False))
                    tiles.sort(key=lambda t: t.key)
                out.append(
                    _example(
                        thumb, tiles, level, None, boxes, q, read, window, world, rng, full=True
                    )
                )
            # the answer pass: usually native resolution, sometimes a coarser final level
            level = last if rng.random() < 0.7 or last == 0 else int(rng.integers(1, last + 1))
            tiles = _candidates(pyramid, level, boxes, rng) if level else pyramid.tiles(0)
            out.append(
                _example(
                    thumb, tiles, level, q.answer, boxes, q, read, window, world, rng, full=False
                )
            )
    for suffix in ("", ".world.json"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return out


def _candidates(
    pyramid: DynamicImagePyramid,
    level: int,
    boxes: list[tuple[int, int, int, int]],
    rng: np.random.Generator,
) -> list[Tile]:
    """Up to 6 tiles of ``level``: those under the targets first, then random others."""
    from lrsvqa.io.window import Window

    p = pyramid
    hit: dict[tuple[int, int, int], Tile] = {}
    for bx0, by0, bx1, by1 in boxes:
        for t in p.tiles_under(Window(bx0, by0, max(1, bx1 - bx0), max(1, by1 - by0)), level):
            hit[t.key] = t
    chosen = list(hit.values())
    rng.shuffle(chosen)
    chosen = chosen[: int(rng.integers(1, MAX_TILES + 1))] if len(chosen) > MAX_TILES else chosen
    every = p.tiles(level)
    want = int(rng.integers(max(1, len(chosen)), MAX_TILES + 1))
    others = [t for t in every if t.key not in {c.key for c in chosen}]
    if others and len(chosen) < want:
        extra = rng.choice(len(others), size=min(len(others), want - len(chosen)), replace=False)
        chosen += [others[int(i)] for i in extra]
    return sorted(chosen, key=lambda t: t.key)


def _example(
    thumb: np.ndarray,
    tiles: list[Tile],
    level: int,
    answer: str | None,
    boxes: list[tuple[int, int, int, int]],
    q: WorldQuestion,
    read: Callable[[Tile], np.ndarray],
    window: Callable[[Tile], tuple[int, int, int, int]],
    world: World,
    rng: np.random.Generator,
    *,
    full: bool,
) -> Example:
    wins = [window(t) for t in tiles]
    targets = [_cells(w, boxes) for w in wins]
    inside = [_inside(w, world.width, world.height) for w in wins]
    keeps: list[np.ndarray]
    if full:  # every token inside the image: a focus pass never holds padding (focus.padding)
        keeps = list(inside)
    else:
        keeps = pruned_keeps(targets, inside, lambda rest: _shuffled(rest, rng))
    shift = (0, 0)
    if level >= 1 and rng.random() < 0.5:
        shift = (int(rng.integers(0, 120)), int(rng.integers(0, 120)))
    offsets = [((t.row + shift[0]) * GRID, (t.col + shift[1]) * GRID) for t in tiles]
    side = max(world.width, world.height)
    thumb_window = (0, 0, side, side)
    labels, colours = zip(*(_token_labels(w, world) for w in [thumb_window, *wins]), strict=True)
    return Example(
        labels=list(labels),
        colours=list(colours),
        surfaces=[_surfaces(w, world) for w in [thumb_window, *wins]],
        centres=[_centres(w, world) for w in [thumb_window, *wins]],
        n_targets=len(q.targets) if q.category in ("count", "presence") else None,
        inside=inside,
        target_centres=(
            [_target_centres(w, world, q.targets) for w in wins] if q.category == "count" else None
        ),
        images=[thumb] + [read(t) for t in tiles],
        offsets=offsets,
        level=level,
        keeps=keeps,
        targets=targets,
        question=q.text,
        answer=answer,
        category=q.category,
    )


def _shuffled(items: list[int], rng: np.random.Generator) -> list[int]:
    rng.shuffle(items)  # in place, on the list: the same draws as every run before
    return items


def pruned_keeps(
    targets: list[np.ndarray],
    inside: list[np.ndarray],
    order: Callable[[list[int]], list[int]],
) -> list[np.ndarray]:
    """Per tile, the tokens an answer pass keeps: ``KEEP_RATIO`` of the tiles' tokens, the
    asked-about objects' cells (inside the image) first, then the other inside tokens in
    the ``order`` given to their flat indices (tile ``i``'s cell ``c`` is
    ``i * GRID**2 + c``): random in the data, the model's own focus ranking in the trainer
    (``--focus-fill``)."""
    n = GRID * GRID
    total = n * len(inside)
    n_keep = max(1, math.ceil(KEEP_RATIO * total))
    flat_targets = [i * n + c for i, t in enumerate(targets) for c in t if c in set(inside[i])]
    pool = [i * n + c for i, ins in enumerate(inside) for c in ins]
    taken = set(flat_targets)
    rest = [x for x in pool if x not in taken]
    chosen = set((flat_targets + [int(x) for x in order(rest)])[:n_keep])
    return [
        np.array(sorted(c - i * n for c in chosen if c // n == i), dtype=np.int64)
        for i in range(len(inside))
    ]


def world_size(
    rng: np.random.Generator,
    seed: int,
    index: int,
    single_tile_worlds: int = 0,
    single_tile_share: float = 0.0,
    big_world_share: float = 0.0,
    size_jitter: float = 0.0,
) -> int:
    """The side of training world ``index`` (draws once from ``rng``, the world's own).
    ``size_jitter`` scales every side but the single tile's by a factor drawn in
    [1 - jitter, 1 + jitter] (its own generator), so sides leave the multiples of 224 px."""
    size = int(SIZES[int(rng.integers(0, len(SIZES)))])
    if index < single_tile_worlds:
        return TILE
    if single_tile_share and np.random.default_rng([seed, 1]).random() < single_tile_share:
        return TILE  # its own generator: the other worlds stay those of a run without it
    if big_world_share and (big := np.random.default_rng([seed, 2])).random() < big_world_share:
        size = int(BIG_SIZES[int(big.integers(0, len(BIG_SIZES)))])
    if size == TILE or not size_jitter:
        return size
    factor = np.random.default_rng([seed, 3]).uniform(1 - size_jitter, 1 + size_jitter)
    return max(TILE, round(size * factor))


def shard(
    index: int,
    *,
    base_seed: int = 0,
    single_tile_worlds: int = 0,
    single_tile_share: float = 0.0,
    big_world_share: float = 0.0,
    size_jitter: float = 0.0,
) -> list[Example]:
    """The examples of training world ``index`` (deterministic). The first
    ``single_tile_worlds`` worlds are one 224 px tile each (the thumbnail is then the tile
    at native resolution): a curriculum that teaches reading objects before searching.
    ``single_tile_share`` makes that share of every later world a single tile too, mixed
    into the stream instead of a phase before it. ``big_world_share`` makes that share of
    the worlds after the phase one of ``BIG_SIZES`` (its own generator too); ``size_jitter``
    moves the sides off the multiples of 224 px (``world_size``)."""
    seed = base_seed + index
    rng = np.random.default_rng(seed)
    size = world_size(
        rng, seed, index, single_tile_worlds, single_tile_share, big_world_share, size_jitter
    )
    small = float(rng.uniform(0.2, 0.8))
    world = make_world(size, seed=seed, small=small)
    with tempfile.TemporaryDirectory(prefix="lrsvqa-micro-") as tmp:
        return world_examples(world, seed, tmp)
