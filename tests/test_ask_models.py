"""`ask` end to end on the tiny models of every family: offline, from the CLI and Python."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from shapely.geometry import box, shape

from lrsvqa.cli.main import main
from lrsvqa.focus import FocusConfig
from lrsvqa.models import families
from lrsvqa.pipeline import Pipeline
from lrsvqa.pipeline.session import Stopwatch
from lrsvqa.prune import PruneConfig, assemble_segments, thumbnail_segment, tile_segment
from lrsvqa.testing import make_ship_scene

FAMILIES = families()


@pytest.fixture(scope="module")
def big_scene(tmp_path_factory) -> Path:
    """20,000 px, sparse (ships only), tiled with overviews: seconds to write."""
    path = tmp_path_factory.mktemp("big") / "scene20k.tif"
    make_ship_scene(path, 20_000, ships=8, sparse=True)
    return path


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("small") / "scene.tif"
    make_ship_scene(path, 900, 700, ships=3)
    return path


@pytest.mark.parametrize("family", FAMILIES)
def test_keep_all_equals_the_unpruned_input(family: str, small_scene: Path) -> None:
    pipeline = Pipeline.from_pretrained(
        f"tiny/{family}",
        device="cpu",
        # the most the tiny models' 8,192-token context takes with the prompt and answer
        focus=FocusConfig(selector="all", keep_ratio=1.0, token_budget=8_000),
    )
    answer = pipeline.ask(small_scene, "How many ships are there?")
    focus = answer.focus
    assert focus.final_tiles and all(
        len(k) == t.n for k, t in zip(focus.final_keep, focus.final_tokens, strict=True)
    )
    adapter = pipeline.adapter
    thumbnail = pipeline.session(small_scene).thumbnail(Stopwatch()).tokens[0]
    pruned = adapter.build_inputs(
        assemble_segments(focus, thumbnail, PruneConfig()), "How many ships are there?"
    )
    order = sorted(range(len(focus.final_tiles)), key=lambda i: focus.final_tiles[i].key)
    full = adapter.build_inputs(
        [thumbnail_segment(thumbnail)]
        + [tile_segment(focus.final_tokens[i], focus.final_tiles[i]) for i in order],
        "How many ships are there?",
    )
    assert torch.equal(pruned.inputs_embeds, full.inputs_embeds)
    assert torch.equal(pruned.position_ids, full.position_ids)
    assert torch.equal(pruned.input_ids, full.input_ids)
    unpruned = adapter.generate(full, max_new_tokens=pipeline.max_new_tokens)
    assert answer.text == unpruned.text.strip()


@pytest.mark.parametrize("family", FAMILIES)
def test_cli_ask_on_a_20k_scene(family: str, big_scene: Path, tmp_path: Path, capsys) -> None:
    geojson, overlay = tmp_path / "g.json", tmp_path / "o.png"
    code = main(
        [
            "ask",
            str(big_scene),
            "How many ships are there?",
            "--model",
            f"tiny/{family}",
            "--device",
            "cpu",
            "--json",
            "--geojson",
            str(geojson),
            "--overlay",
            str(overlay),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert isinstance(data["text"], str)
    cost = data["cost"]
    assert cost["llm_vision_tokens"] > 0 and cost["tflops"] > 0 and cost["peak_rss_mb"] > 0
    assert set(cost["vision_tokens_encoded"]) >= {"thumbnail", "0"}
    assert data["config"]["model_id"] == f"tiny/{family}" and data["config"]["revision"]
    import lrsvqa

    with lrsvqa.open_scene(big_scene) as scene:
        bounds = box(*scene.bounds).buffer(1e-6)
    features = json.loads(geojson.read_text())["features"]
    assert features
    for feature in features:
        geom = shape(feature["geometry"])
        assert geom.is_valid and bounds.contains(geom)
    from PIL import Image

    assert Image.open(overlay).size[0] > 1000


def test_cli_ask_bad_input(big_scene: Path, tmp_path: Path, capsys) -> None:
    cases = [
        [str(big_scene), ""],
        [str(big_scene), "x" * 100_000],
        [str(big_scene), "caf\udce9"],
        [str(big_scene), "q", "--model", "nobody/no-such-model"],
        [str(tmp_path / "missing.tif"), "q"],
        [str(big_scene), "q", "--keep-ratio", "0"],
        [str(big_scene), "q", "--model", "tiny/qwen2_vl", "--focus-layer", "99"],
    ]
    for args in cases:
        code = main(["ask", *args, "--device", "cpu"])
        _, err = capsys.readouterr()
        lines = [line for line in err.splitlines() if line.startswith("lrsvqa: error:")]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (args, err)


def test_later_questions_reuse_the_vision_prefix(small_scene: Path) -> None:
    pipeline = Pipeline.from_pretrained("tiny/llava_next", device="cpu")
    first = pipeline.ask(small_scene, "How many ships are there?")
    second = pipeline.ask(small_scene, "Is there a ship near the land on the left?")
    assert first.cost.focus_tokens_run == first.cost.focus_passes  # nothing cached yet
    # Level 0 (thumbnail + level-0 tiles) is the same prefix: only the question runs.
    assert second.cost.focus_tokens_run[0] < second.cost.focus_passes[0] // 10
    assert second.cost.focus_flops < first.cost.focus_flops
    assert (second.cost.vision_flops == 0) == (not second.cost.tiles_encoded)
