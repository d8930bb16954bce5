"""``--budget`` counts every vision position the LLM receives, separators included; a budget
that cannot fit (under the thumbnail, or over the context) fails before any tile is encoded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lrsvqa.cli.main import main
from lrsvqa.errors import ConfigError
from lrsvqa.focus import FocusConfig
from lrsvqa.pipeline import Pipeline
from lrsvqa.testing import make_ship_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("budget") / "scene.tif"
    make_ship_scene(path, 2600, 1900, ships=4)
    return path


@pytest.fixture(scope="module")
def next_pipeline() -> Pipeline:
    return Pipeline.from_pretrained("tiny/llava_next", device="cpu", max_new_tokens=2)


@pytest.mark.parametrize(
    "selector",
    [
        "all",
        "rfm",
        pytest.param("uniform", marks=pytest.mark.slow),
        pytest.param("random", marks=pytest.mark.slow),
    ],
)
def test_llm_never_gets_more_positions_than_the_budget(
    selector: str, scene: Path, next_pipeline: Pipeline
) -> None:
    budget = 1000
    pipeline = Pipeline(
        next_pipeline.adapter,
        focus=FocusConfig(selector=selector, token_budget=budget, keep_ratio=0.9),
        max_new_tokens=2,
    )
    spy: dict[str, Any] = {}
    build = pipeline.adapter.build_inputs

    def record(segments: Any, question: str, **kw: Any) -> Any:
        inputs = build(segments, question, **kw)
        spy["n"] = int(inputs.vision_positions.numel() + inputs.separator_positions.numel())
        spy["sep"] = int(inputs.separator_positions.numel())
        return inputs

    pipeline.adapter.build_inputs = record  # type: ignore[method-assign]
    try:
        answer = pipeline.ask(scene, "How many ships are there?")
    finally:
        del pipeline.adapter.build_inputs
    assert spy["sep"] > 0  # LLaVA-NeXT's newlines are in the count
    assert spy["n"] <= budget
    assert answer.cost.llm_vision_tokens == spy["n"]
    # The budget is used, not left idle: within one tile row of newlines of it.
    assert spy["n"] >= budget - 2 * 24


def test_all_selector_at_the_issue_numbers(scene: Path, next_pipeline: Pipeline) -> None:
    pipeline = Pipeline(
        next_pipeline.adapter,
        focus=FocusConfig(selector="all", token_budget=2500),
        max_new_tokens=2,
    )
    answer = pipeline.ask(scene, "How many ships are there?")
    assert answer.cost.llm_vision_tokens <= 2500


def test_budget_under_the_thumbnail_is_refused_before_tiles(
    scene: Path, next_pipeline: Pipeline
) -> None:
    adapter = next_pipeline.adapter
    encoded: list[int] = []
    real = adapter.encode_images

    def counting(images):  # type: ignore[no-untyped-def]
        encoded.append(len(images))
        return real(images)

    adapter.encode_images = counting  # type: ignore[method-assign]
    try:
        with pytest.raises(ConfigError, match="raise --budget to at least 576"):
            pipeline = Pipeline(adapter, focus=FocusConfig(token_budget=100), max_new_tokens=2)
            pipeline.ask(scene, "How many ships are there?")
    finally:
        del adapter.encode_images
    assert sum(encoded) <= 1  # the thumbnail at most, never a tile


def test_budget_over_the_context_is_exit_2_before_encoding(
    scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "ask", str(scene), "How many ships?", "--model", "tiny/qwen2_vl", "--device", "cpu",
            "--budget", "9000", "--max-new-tokens", "4",
        ]
    )  # fmt: skip
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("lrsvqa:")]
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("lrsvqa: error: --budget 9,000 vision positions")
    assert "context of 8,192" in lines[0] and "lower --budget to" in lines[0]


def test_json_reports_the_positions(scene: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "ask", str(scene), "How many ships?", "--model", "tiny/llava_onevision",
            "--device", "cpu", "--selector", "all", "--budget", "1500", "--json",
            "--max-new-tokens", "2",
        ]
    )  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cost"]["llm_vision_tokens"] <= 1500
