"""The synthetic world: pixels follow the truth, questions' answers follow the truth."""

from __future__ import annotations

import numpy as np
import pytest

from lrsvqa.testing.world import COLOURS, WATER, load_world, make_world, write_world
from lrsvqa.testing.world_questions import CATEGORIES, SUFFIX, world_questions


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_blocks_render_like_the_whole(seed: int) -> None:
    world = make_world(700, seed=seed)
    whole = world.render(0, 0, 700, 700)
    block = world.render(256, 300, 190, 210)
    assert np.array_equal(block, whole[300:510, 256:446])


def test_objects_are_drawn_in_their_colour_where_the_truth_says() -> None:
    world = make_world(1500, seed=5, small=0.0)
    assert world.objects
    image = world.render(0, 0, 1500, 1500)
    for obj in world.objects:
        cx, cy = (int(v) for v in obj.center)
        assert tuple(image[cy, cx]) == COLOURS[obj.colour], obj
    # far from every object the water is water-coloured (+ ripple)
    x = world.width - 1
    free = [
        y
        for y in range(0, world.height, 50)
        if all(abs(y - o.center[1]) > 200 or abs(x - o.center[0]) > 200 for o in world.objects)
    ]
    assert free
    assert abs(int(image[free[0], x, 2]) - WATER[2]) <= 2


def test_questions_follow_the_truth() -> None:
    seen: set[str] = set()
    for seed in range(30):
        world = make_world(900, seed=seed)
        for q in world_questions(world, seed=seed):
            seen.add(q.category)
            assert q.text.endswith(SUFFIX)
            if q.category == "count":
                cls = next(c for c in ("storage tank", "ship", "plane", "vehicle") if c in q.text)
                assert int(q.answer) == len(world.of_class(cls))
                assert sorted(q.targets) == [i for i, o in enumerate(world.objects) if o.cls == cls]
            if q.category == "presence":
                assert (q.answer == "yes") == bool(q.targets)
            if q.category == "object color":
                assert q.answer == world.objects[q.targets[0]].colour
            if q.category == "object category":
                big = max(world.objects, key=lambda o: o.area)
                assert q.answer == big.cls
            if q.category == "rural or urban":
                assert q.answer == ("urban" if world.urban else "rural")
            if q.small:
                assert all(world.objects[i].small for i in q.targets)
    assert seen == set(CATEGORIES)


def test_written_world_round_trips(tmp_path) -> None:
    world = make_world(600, seed=9)
    path = write_world(tmp_path / "w.tif", world)
    assert load_world(path) == world
    import rasterio

    with rasterio.open(path) as src:
        assert src.overviews(1)  # average overviews for the coarse levels
        pixels = src.read(window=((100, 164), (200, 264)))
    assert np.array_equal(np.moveaxis(pixels, 0, -1), world.render(200, 100, 64, 64))


def test_surface_windows_are_the_texture_formula_at_any_offset() -> None:
    """render() slices each surface from a canvas one period larger than the window; every
    window (negative offsets too) must hold what the texture formula gives at its pixels."""
    import numpy as np

    from lrsvqa.testing.world import _PERIODS, _surface, _texture

    rng = np.random.default_rng(0)
    for kind in _PERIODS:
        for _ in range(25):
            x0, y0 = (int(v) for v in rng.integers(-3000, 30000, 2))
            w, h = (int(v) for v in rng.integers(1, 600, 2))
            want = _texture(kind, np.arange(x0, x0 + w), np.arange(y0, y0 + h))
            got = _surface(kind, x0, y0, w, h)
            assert got.flags.writeable and np.array_equal(got, want), (kind, x0, y0, w, h)
