"""The ask pipeline: coarse-to-fine selection (with a stub adapter), cache, evidence, cost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import box, shape

import lrsvqa
from lrsvqa.focus import FocusConfig
from lrsvqa.io import Window
from lrsvqa.pipeline import Pipeline, check_question
from lrsvqa.testing import Ship, make_ship_scene
from lrsvqa.testing.stub import StubAdapter

SHIP = Ship(1500, 400, 120, 40)


@pytest.fixture(scope="module")
def ship_scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scenes") / "one_ship.tif"
    make_ship_scene(path, 2048, ships=(SHIP,))
    return path


def _pipeline(**focus) -> Pipeline:
    return Pipeline(StubAdapter(), focus=FocusConfig(**focus))


def test_focus_walks_down_to_the_planted_ship(ship_scene: Path) -> None:
    pipeline = _pipeline(keep_ratio=0.05, max_tiles=2)
    answer = pipeline.ask(ship_scene, "where is the ship?")
    levels = answer.evidence.levels()
    assert levels == [0, 1, 2, 3, 4]  # 2048 px, 56 px tiles: level 0 is 1/16, native is 4
    finest = answer.evidence.finest_tiles()
    assert finest and all(t.level == 4 and t.factor == 1 for t in finest)
    ship = box(*SHIP.box)
    covered = [box(*t.window.to_box()) for t in finest]
    assert any(c.intersects(ship) for c in covered)
    # Every level's chosen tiles hold the ship: the focus never loses it on the way down.
    for level in levels:
        chosen = [box(*t.window.to_box()) for t in answer.evidence.tiles if t.level == level]
        assert any(c.intersects(ship) for c in chosen), level
    assert int(answer.text) >= 1  # bright tokens reached the "LLM"
    assert answer.cost.llm_vision_tokens <= FocusConfig().token_budget


def test_memory_follows_selected_tiles(ship_scene: Path) -> None:
    adapter = StubAdapter()
    pipeline = Pipeline(adapter, focus=FocusConfig(keep_ratio=0.05, max_tiles=2))
    answer = pipeline.ask(ship_scene, "where is the ship?")
    level0 = len(pipeline.session(ship_scene).pyramid.tiles(0))
    # thumbnail + level 0 + at most max_tiles per finer level: never the whole native grid
    assert adapter.encoded_images <= 1 + level0 + 2 * 4
    assert answer.cost.tiles_encoded["4"] <= 2


@pytest.mark.parametrize("selector", ["all", "uniform", "random", "thumbnail"])
def test_other_selectors(ship_scene: Path, selector: str) -> None:
    pipeline = _pipeline(selector=selector, max_tiles=3, token_budget=2000, seed=3)
    answer = pipeline.ask(ship_scene, "how many ships?")
    tokens = answer.cost.llm_vision_tokens
    assert 16 <= tokens <= 2000
    if selector == "thumbnail":
        assert answer.evidence.tiles == [] and tokens == 16
    if selector == "all":
        # the finest level whose every tile fits the budget, all tokens kept
        finest = answer.evidence.finest_tiles()
        level = pipeline.session(ship_scene).pyramid.level(finest[0].level)
        assert len(finest) == level.n_tiles and tokens == 16 + 16 * level.n_tiles
        assert answer.cost.focus_passes == []  # no scoring pass at all
    if selector in ("uniform", "random"):
        assert answer.evidence.finest_level == 4
        assert len(answer.evidence.finest_tiles()) <= 3
    if selector == "random":
        again = _pipeline(selector=selector, max_tiles=3, token_budget=2000, seed=3)
        assert again.ask(ship_scene, "x").evidence.to_dict() == answer.evidence.to_dict()


def test_token_budget_and_depth_limits(ship_scene: Path) -> None:
    answer = _pipeline(keep_ratio=1.0, max_tiles=6, token_budget=50).ask(ship_scene, "q")
    assert answer.cost.llm_vision_tokens <= 50
    shallow = _pipeline(max_depth=1).ask(ship_scene, "q")
    assert shallow.evidence.finest_level == 1
    capped = _pipeline(encode_budget=16 * 10).ask(ship_scene, "q")
    assert capped.evidence.finest_level == 0


def test_cache_is_reused_across_questions(ship_scene: Path) -> None:
    adapter = StubAdapter()
    pipeline = Pipeline(adapter, focus=FocusConfig(keep_ratio=0.05, max_tiles=2))
    first = pipeline.ask(ship_scene, "where is the ship?")
    encoded = adapter.encoded_images
    second = pipeline.ask(ship_scene, "is there a ship?")
    assert adapter.encoded_images == encoded  # same tiles: nothing re-read or re-encoded
    assert first.cost.cache_hits == 0
    assert second.cost.cache_hits == sum(first.cost.tiles_encoded.values())  # thumbnail too
    assert second.cost.tiles_encoded == {} and second.cost.vision_flops == 0
    assert second.cost.vision_tokens == first.cost.vision_tokens == first.cost.vision_tokens_encoded
    assert second.cost.flops < first.cost.flops
    assert second.evidence.to_dict() == first.evidence.to_dict()


def test_cache_respects_its_memory_cap(ship_scene: Path, monkeypatch) -> None:
    monkeypatch.setenv("LRSVQA_CACHE_MB", str(3 * 16 * 4 * 4 / 2**20))  # room for 3 tiles
    pipeline = Pipeline(StubAdapter(), focus=FocusConfig(keep_ratio=0.05, max_tiles=2))
    pipeline.ask(ship_scene, "q")
    session = pipeline.session(ship_scene)
    assert session.cached_bytes <= 3 * 16 * 4 * 4


def test_geojson_evidence(ship_scene: Path, tmp_path: Path) -> None:
    answer = _pipeline(keep_ratio=0.05, max_tiles=2).ask(ship_scene, "where is the ship?")
    with lrsvqa.open_scene(ship_scene) as scene:
        bounds = box(*scene.bounds)
    collection = answer.to_geojson()
    assert collection["type"] == "FeatureCollection"
    assert collection["crs"]["properties"]["name"].endswith("EPSG::32650")
    for feature in collection["features"]:
        geom = shape(feature["geometry"])
        assert geom.is_valid and bounds.buffer(1e-6).contains(geom)
        assert {"level", "score", "kept_tokens"} <= set(feature["properties"])
    lonlat = answer.to_geojson("EPSG:4326")
    from lrsvqa.io import reproject_geometry

    with lrsvqa.open_scene(ship_scene) as scene:
        extent = reproject_geometry(box(*scene.bounds), scene.crs, "EPSG:4326")
    for feature in lonlat["features"]:
        geom = shape(feature["geometry"])
        x, y = geom.centroid.coords[0]
        assert -180 <= x <= 180 and -90 <= y <= 90
        assert len(geom.exterior.coords) > 5  # edges densified: they curve in lon/lat
        assert extent.buffer(1e-7).covers(geom)  # edge tiles stay inside the scene
    data = answer.to_dict()
    json.dumps(data)
    assert data["cost"]["llm_vision_tokens"] == answer.cost.llm_vision_tokens
    assert data["config"]["model_id"] == "stub" and data["config"]["revision"] == "stub-1"
    assert set(data["cost"]["seconds"]) >= {"read", "encode", "focus", "generate", "total"}


def test_scene_without_crs_works_in_pixels(tmp_path: Path) -> None:
    path = tmp_path / "nocrs.tif"
    make_ship_scene(path, 600, ships=(Ship(300, 200, 60, 16),), crs=None)
    answer = _pipeline().ask(path, "q")
    assert answer.evidence.crs is None
    collection = answer.to_geojson()
    assert "pixel" in collection["properties"]["coordinates"]
    minx, miny, maxx, maxy = shape(collection["features"][0]["geometry"]).bounds
    assert 0 <= minx < maxx <= 600 and 0 <= miny < maxy <= 600
    with pytest.raises(lrsvqa.ConfigError, match="no CRS"):
        answer.to_geojson("EPSG:4326")


def test_overlay_png(ship_scene: Path, tmp_path: Path) -> None:
    from PIL import Image

    pipeline = _pipeline(keep_ratio=0.05, max_tiles=2)
    answer = pipeline.ask(ship_scene, "where is the ship?")
    out = pipeline.save_overlay(answer, str(tmp_path / "o.png"))
    image = Image.open(out)
    assert image.width > 1000 and image.height > 500
    pixels = np.asarray(image.convert("RGB"))
    assert (pixels[..., 0] > 200).sum() > 100  # heat and outlines are drawn
    # standalone (reopens the scene from the answer)
    assert Path(answer.save_overlay(str(tmp_path / "o2.png"))).stat().st_size > 1000


@pytest.mark.parametrize("question", ["", "   ", "x" * 100_000, "caf\udce9"])
def test_bad_questions(question: str) -> None:
    with pytest.raises(lrsvqa.ConfigError):
        check_question(question)


def test_scene_errors_surface_as_lrsvqa_errors(tmp_path: Path) -> None:
    with pytest.raises(lrsvqa.SceneOpenError):
        _pipeline().ask(tmp_path / "missing.tif", "q")


def test_read_window_and_stub_tokens_agree(ship_scene: Path) -> None:
    """The stub sees the same pixels the scene reader gives (a sanity check of the harness)."""
    adapter = StubAdapter()
    with lrsvqa.open_scene(ship_scene) as scene:
        tile = scene.read(Window(1484, 392, 56, 56))
    tokens = adapter.encode([tile])[0]
    assert tokens.embeds[:, 0].max() > 0.9


def test_all_over_budget_says_what_was_cut(ship_scene: Path) -> None:
    answer = _pipeline(selector="all", token_budget=100).ask(ship_scene, "q")
    assert answer.cost.llm_vision_tokens <= 100
    assert answer.notes and "raise --budget to 160" in answer.notes[0]
    assert answer.to_dict()["notes"] == answer.notes
    assert _pipeline(selector="all", token_budget=160).ask(ship_scene, "q").notes == []


def test_identical_tiles_go_through_the_vision_tower_once(tmp_path: Path) -> None:
    """A sparse scene's empty tiles are pixel-identical: one call encodes each distinct
    image once and identical tiles share its tokens, which equal their own encoding; every
    tile still counts as encoded (fresh) in the cost report."""
    import torch

    from lrsvqa.pipeline.session import Stopwatch

    path = make_ship_scene(tmp_path / "sparse.tif", 6144, ships=3, sparse=True, seed=3).path
    seen: list[int] = []

    class Counting(StubAdapter):
        def encode(self, images):  # type: ignore[no-untyped-def]
            seen.append(len(images))
            return super().encode(images)

    pipeline = Pipeline(Counting())
    session = pipeline.sessions.get(str(path), None, pipeline.pyramid, pipeline.adapter)
    level = len(session.pyramid.levels) - 2
    tiles = session.pyramid.tiles(level)
    got = session.encode_tiles(tiles, Stopwatch())
    assert len(tiles) >= 40 and sum(seen) < len(tiles) // 2, (sum(seen), len(tiles))
    assert all(got.fresh)
    reference = StubAdapter()
    distinct = set()
    for tile, tokens in zip(tiles, got.tokens, strict=True):
        image = session.pyramid.read_tile(tile)
        distinct.add(image.tobytes())
        assert torch.equal(tokens.embeds, reference.encode([image])[0].embeds), tile.key
    assert sum(seen) == len(distinct) > 1
    pipeline.close()
