"""The shipped micro model: it answers held-out questions, and the method works with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lrsvqa.micro.card import TEST_SET
from lrsvqa.micro.evaluate import evaluate_single_tile
from lrsvqa.models.loading import micro_folder, micro_models

MICRO = "micro/qwen2_vl"
# What issue 12 asks of the micro model and the shipped weights do not do yet (v9: presence
# 74 %, not 95; its focus finds the asked-about objects in big scenes 34 % of the time;
# counts stay near their prior; MODEL_CARD.md). strict: the day a retrained model meets one of these, the
# suite fails until the mark is removed.
NOT_YET = pytest.mark.xfail(
    strict=True, reason="micro/qwen2_vl v9 does not meet issue 12's bars yet (MODEL_CARD.md)"
)


@pytest.fixture(scope="module")
def micro():
    from lrsvqa.models import from_pretrained

    return from_pretrained(MICRO, device="cpu")


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((micro_folder(MICRO) / "card.json").read_text())


def test_micro_model_is_shipped_small_and_listed(micro) -> None:
    folder = micro_folder(MICRO)
    assert MICRO in micro_models()
    assert (folder / "model.safetensors").stat().st_size <= 25 * 2**20
    assert (folder / "MODEL_CARD.md").is_file()
    caps = micro.capabilities
    assert (caps.tile_size, caps.focus_layers, caps.family) == (224, (1,), "qwen2_vl")
    assert type(micro.model).__name__ == "Qwen2VLForConditionalGeneration"  # stock class


def test_answers_the_fixed_held_out_set_at_the_cards_rates(micro, card) -> None:
    got = evaluate_single_tile(micro, **TEST_SET)
    stated = card["test_set"]
    assert abs(got["overall"] - stated["overall"]) <= 3, (got["overall"], stated["overall"])
    for cat, row in stated["categories"].items():
        assert abs(got["categories"][cat]["accuracy"] - row["accuracy"]) <= 5, cat


@pytest.mark.parametrize(
    ("category", "margin"),
    [("object background", 30), ("object category", 20), ("presence", 15), ("object color", 15)],
)
def test_it_learned_these_categories(card, category: str, margin: float) -> None:
    """The categories the shipped model answers well above their majority baselines."""
    row = card["held_out"]["categories"][category]
    assert row["n"] >= 30 and row["accuracy"] >= row["majority_baseline"] + margin


@NOT_YET
def test_presence_well_above_the_majority_answer(card) -> None:
    row = card["held_out"]["categories"]["presence"]
    assert row["accuracy"] >= 95


def _one_small_ship(path: Path, size: int = 8192) -> tuple[Path, object]:
    from lrsvqa.testing.world import make_world, write_world

    world = make_world(size, seed=4242, counts={"ship": 1}, small=1.0)
    return write_world(path, world), world


@pytest.fixture(scope="module")
def small_ship_scene(tmp_path_factory):
    return _one_small_ship(tmp_path_factory.mktemp("micro") / "one_small_ship.tif")


@NOT_YET
def test_rfm_finds_a_ship_the_thumbnail_cannot_see(micro, small_ship_scene) -> None:
    from lrsvqa.focus import FocusConfig
    from lrsvqa.pipeline import Pipeline
    from lrsvqa.testing.world_questions import SUFFIX

    path, world = small_ship_scene
    ship = world.objects[0]
    question = "How many ships are there in this image?" + SUFFIX
    with Pipeline(micro, focus=FocusConfig(selector="thumbnail")) as thumb:
        seen_in_thumbnail = thumb.ask(path, question)
    with Pipeline(micro) as rfm:
        answer = rfm.ask(path, question)
    x0, y0, x1, y1 = ship.box
    finest = answer.evidence.finest_tiles()
    assert finest and finest[0].factor == 1  # native resolution
    assert any(
        t.window.col_off <= x0
        and x1 <= t.window.col_off + t.window.width
        and t.window.row_off <= y0
        and y1 <= t.window.row_off + t.window.height
        for t in finest
    ), "the ship is in none of the tiles whose tokens reached the LLM"
    assert answer.text == "1"
    assert seen_in_thumbnail.text != "1"


# Issue 12's acceptance: K from 0 to 7, S from 4,096 to 8,192, at least 8 of 10 right.
DEMO_PAIRS = [(0, 4096), (1, 4096), (2, 5120), (3, 5120), (4, 6144), (5, 6144), (6, 7168),
              (7, 7168), (1, 8192), (3, 8192)]  # fmt: skip


@NOT_YET
def test_demo_answers_follow_the_scene(tmp_path) -> None:
    """v8/v9 answer the same count for most scenes of one size (v9: 2 of these 10 right);
    two pairs alone were passed by v9 by that coincidence, so the test asks for all ten."""
    from click.testing import CliRunner

    from lrsvqa.cli.main import cli

    right = []
    for ships, size in DEMO_PAIRS:
        out = tmp_path / f"demo_{ships}_{size}"
        result = CliRunner().invoke(
            cli, ["demo", str(out), "--ships", str(ships), "--size", str(size), "--json"]
        )
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        assert payload["config"]["model_id"] == MICRO
        truth = json.loads((out / "scene.tif.world.json").read_text())
        assert len(truth["objects"]) == ships
        right.append(payload["text"] == str(ships))
    assert sum(right) >= 8, right


def test_demo_uses_the_micro_model_and_rewrites_the_scene_when_asked_for_another(tmp_path) -> None:
    from click.testing import CliRunner

    from lrsvqa.cli.main import cli

    out = tmp_path / "demo"
    for ships in (1, 3):
        result = CliRunner().invoke(
            cli, ["demo", str(out), "--ships", str(ships), "--size", "1024", "--json"]
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["config"]["model_id"] == MICRO
        truth = json.loads((out / "scene.tif.world.json").read_text())
        assert [o["cls"] for o in truth["objects"]] == ["ship"] * ships
    assert "micro model trained on synthetic scenes" in result.stderr


def test_evaluation_can_ask_only_some_categories(micro, tmp_path: Path) -> None:
    """``--categories`` asks n questions of those categories only (to compare counting
    between runs), and a misspelt category is one line, exit 2."""
    import os
    import shutil
    import subprocess
    import sys

    got = evaluate_single_tile(micro, n_questions=6, categories=("count",))
    assert got["questions"] == 6 and set(got["categories"]) <= {"count", "count 0-5"}
    assert got["categories"]["count"]["n"] == 6
    run = tmp_path / "run"
    run.mkdir()
    bad = subprocess.run(
        [sys.executable, "-m", "lrsvqa.micro.evaluate", str(run), "--categories", "counts"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert bad.returncode == 2 and "unknown categories ['counts']" in bad.stderr
    assert not list(run.iterdir())
    # the model folder instead of its run folder: one line naming the fix, no traceback
    (run / "model").mkdir()
    shutil.copy(micro_folder(MICRO) / "config.json", run / "model")
    (run / "settings.json").write_text("{}")

    def wrong(folder: Path) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "lrsvqa.micro.evaluate", str(folder), "--questions", "1"],
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert "not a training run" in proc.stderr
        return proc.stderr

    assert f"give its run folder, {run}" in wrong(run / "model")
    assert "evaluate_single_tile" in wrong(micro_folder(MICRO))  # shipped: no run folder


def test_the_trainers_focus_scores_are_the_pipelines(micro, tmp_path: Path) -> None:
    """--focus-fill ranks an answer pass's tokens by ``forward.focus_scores``: on the same
    single-tile scene and question these are the scores ``ask``'s Region Focus Module gives
    (the trainer keeps what inference keeps)."""
    import numpy as np
    import torch

    from lrsvqa.focus import FocusConfig
    from lrsvqa.micro.data import world_examples
    from lrsvqa.micro.forward import encode_with_grad, focus_scores
    from lrsvqa.micro.model import FOCUS_LAYER
    from lrsvqa.pipeline import Pipeline
    from lrsvqa.testing.world import make_world, write_world

    world = make_world(224, seed=5)
    path = write_world(tmp_path / "scene.tif", world)
    pipeline = Pipeline(micro, focus=FocusConfig(selector="rfm"), max_new_tokens=2)
    answers = [e for e in world_examples(world, 5, tmp_path) if e.answer is not None]
    for e in answers[:3]:
        with torch.no_grad():
            feats = encode_with_grad(micro, e.images)
        ours = focus_scores(micro, e, feats, FOCUS_LAYER)[0]
        theirs = pipeline.ask(path, e.question).focus.levels[-1].token_scores[0].ravel()
        assert np.corrcoef(ours, theirs)[0, 1] > 0.99, e.question
