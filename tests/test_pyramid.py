"""Dynamic Image Pyramid: level plan, tile math (property tests), reads and geometry."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import rasterio.windows
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

import lrsvqa
from lrsvqa.io import Window, open_scene
from lrsvqa.pyramid import DynamicImagePyramid, PyramidConfig, plan_levels
from lrsvqa.pyramid.grid import iter_tiles, tile_at

sizes = st.integers(min_value=1, max_value=60_000)
configs = st.builds(
    PyramidConfig,
    tile_size=st.sampled_from([28, 56, 112, 336, 448]),
    coarse_tiles=st.integers(min_value=1, max_value=4),
)


def test_level_plan_for_the_largest_lrsvqa_image() -> None:
    levels = plan_levels(27_328, 27_328, PyramidConfig(tile_size=336, coarse_tiles=3))
    assert [lvl.factor for lvl in levels] == [32, 16, 8, 4, 2, 1]
    assert max(levels[0].width, levels[0].height) <= 3 * 336
    assert levels[-1].width == 27_328


@given(sizes, sizes, configs)
def test_levels_double_and_end_at_native(width: int, height: int, config: PyramidConfig) -> None:
    levels = plan_levels(width, height, config)
    assert levels[-1].factor == 1 and (levels[-1].width, levels[-1].height) == (width, height)
    assert max(levels[0].width, levels[0].height) <= config.coarse_tiles * config.tile_size or (
        len(levels) == 1
    )
    for coarse, fine in itertools.pairwise(levels):
        assert coarse.factor == 2 * fine.factor


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000), configs)
def test_children_cover_their_parent_exactly(
    width: int, height: int, config: PyramidConfig
) -> None:
    levels = plan_levels(width, height, config)
    for k in range(len(levels) - 1):
        for parent in list(iter_tiles(levels[k], config.tile_size))[:12]:
            kids = [
                tile_at(levels[k + 1], r, c, config.tile_size)
                for r in (2 * parent.row, 2 * parent.row + 1)
                for c in (2 * parent.col, 2 * parent.col + 1)
                if r < levels[k + 1].rows and c < levels[k + 1].cols
            ]
            inside = parent.window.clip(width, height)
            assert sum(kid.window.clip(width, height).area for kid in kids) == inside.area
            for kid in kids:
                assert kid.window.intersection(parent.window) == kid.window


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 3000), configs, st.data())
def test_every_pixel_in_exactly_one_tile(
    width: int, height: int, config: PyramidConfig, data
) -> None:
    levels = plan_levels(width, height, config)
    x = data.draw(st.integers(0, width - 1))
    y = data.draw(st.integers(0, height - 1))
    for level in levels:
        hits = [
            t
            for t in iter_tiles(level, config.tile_size)
            if t.window.col_off <= x < t.window.col_end and t.window.row_off <= y < t.window.row_end
        ]
        assert len(hits) == 1
    areas = sum(t.window.clip(width, height).area for t in iter_tiles(levels[-1], config.tile_size))
    assert areas == width * height


transforms = st.builds(
    lambda x, y, res, angle: (
        Affine.translation(x, y) * Affine.rotation(angle) * Affine.scale(res, -res)
    ),
    st.floats(-1e6, 1e6),
    st.floats(-1e6, 1e6),
    st.floats(0.1, 100),
    st.sampled_from([0.0, 0.0, 17.0]),
)


@given(
    st.integers(0, 5000),
    st.integers(0, 5000),
    st.integers(1, 2000),
    st.integers(1, 2000),
    transforms,
)
def test_geometry_matches_rasterio_bounds(
    col: int, row: int, w: int, h: int, transform: Affine
) -> None:
    from lrsvqa.io import window_polygon

    window = Window(col, row, w, h)
    polygon = window_polygon(window, transform)
    corners = [transform @ (c, r) for c in (col, col + w) for r in (row, row + h)]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    np.testing.assert_allclose(
        polygon.bounds, (min(xs), min(ys), max(xs), max(ys)), rtol=1e-9, atol=1e-6
    )
    if transform.b == 0 and transform.d == 0:
        expected = rasterio.windows.bounds(window.to_rasterio(), transform)
        np.testing.assert_allclose(polygon.bounds, expected, rtol=1e-9, atol=1e-6)
    assert polygon.is_valid and polygon.area > 0


def test_pyramid_reads_tiles_and_thumbnail(geotiff) -> None:
    path = geotiff(2000, 1100, blocksize=256, overviews=True)
    with DynamicImagePyramid(path, tile_size=224, coarse_tiles=3) as pyramid:
        assert [lvl.factor for lvl in pyramid.levels] == [4, 2, 1]
        native = pyramid.tile(2, 1, 2)
        assert native.window == Window(448, 224, 224, 224)
        tile = pyramid.read_tile(native)
        assert tile.shape == (224, 224, 3) and tile.dtype == np.uint8
        with open_scene(path) as scene:
            np.testing.assert_array_equal(tile, scene.read(native.window))
        coarse = pyramid.tiles(0)
        assert len(coarse) == 2 * 3
        assert all(pyramid.read_tile(t).shape == (224, 224, 3) for t in coarse)
        kids = pyramid.children(coarse[0])
        assert [k.key for k in kids] == [(1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)]
        assert pyramid.parent(kids[3]) == coarse[0]
        assert pyramid.children(native) == []
        under = pyramid.tiles_under(Window(500, 300, 10, 10), 2)
        assert [t.key for t in under] == [(2, 1, 2)]
        thumb = pyramid.thumbnail(336)
        assert thumb.shape == (185, 336, 3)
        assert pyramid.thumbnail(336, square=True).shape == (336, 336, 3)


def test_image_smaller_than_one_tile(geotiff) -> None:
    with DynamicImagePyramid(geotiff(40, 30), tile_size=448) as pyramid:
        assert len(pyramid.levels) == 1 and len(pyramid.tiles(0)) == 1
        tile = pyramid.read_tile(pyramid.tiles(0)[0])
        assert tile.shape == (448, 448, 3)
        assert tile[30:].max() == 0 and tile[:, 40:].max() == 0 and tile[:30, :40].max() > 0
        geom = pyramid.geometry(pyramid.tiles(0)[0])
        np.testing.assert_allclose(geom.bounds, open_scene(pyramid.scene.path).bounds)


def test_geometry_in_crs_4326_and_pixel_space(geotiff, shared_data: Path) -> None:
    with DynamicImagePyramid(shared_data / "RGB.byte.tif", tile_size=336) as pyramid:
        assert pyramid.georeferenced
        geom = pyramid.geometry_4326(pyramid.tiles(0)[0])
        lon, lat = geom.centroid.x, geom.centroid.y
        assert -80 < lon < -76 and 23 < lat < 27  # the Bahamas, where the scene is
    with DynamicImagePyramid(geotiff(500, 400, crs=None), tile_size=224) as pyramid:
        assert not pyramid.georeferenced
        assert pyramid.geometry(pyramid.tile(0, 1, 1)).bounds == (224.0, 224.0, 448.0, 400.0)
        with pytest.raises(lrsvqa.ConfigError, match="no CRS"):
            pyramid.geometry_4326(pyramid.tile(0, 0, 0))


def test_bad_pyramid_config() -> None:
    with pytest.raises(lrsvqa.ConfigError):
        PyramidConfig(tile_size=0)
    with pytest.raises(lrsvqa.ConfigError):
        PyramidConfig(coarse_tiles=0)
