"""``lrsvqa ask``: answer a question about a scene, with map evidence and a cost line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from lrsvqa.cli.options import (
    bands_option,
    echo_json,
    focus_option,
    json_option,
    llm_prune_config,
    llm_prune_options,
    mrope_option,
    parse_bands,
)
from lrsvqa.focus.config import SELECTORS


def model_options(func: Any) -> Any:
    """Options shared by ``ask`` and ``demo``: the model and the focus/pruning knobs."""
    options = [
        click.option(
            "--model",
            "model_id",
            default=None,
            metavar="ID",
            help="Hugging Face id, local folder or tiny/<family> (default: Qwen/Qwen2.5-VL-7B-Instruct).",
        ),
        click.option("--revision", default=None, help="Model revision (branch, tag or commit)."),
        click.option(
            "--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N."
        ),
        click.option(
            "--dtype", default="auto", show_default=True, help="auto, float32, bfloat16, float16."
        ),
        click.option(
            "--selector",
            type=click.Choice(SELECTORS),
            default="rfm",
            show_default=True,
            help="How tiles are chosen: rfm (attention), all (no pruning), uniform, random, thumbnail.",
        ),
        click.option(
            "--keep-ratio",
            type=float,
            default=0.25,
            show_default=True,
            help="Share of each level's vision tokens kept.",
        ),
        click.option(
            "--max-tiles",
            type=int,
            default=6,
            show_default=True,
            help="Tiles chosen per finer level.",
        ),
        click.option(
            "--budget",
            type=int,
            default=2500,
            show_default=True,
            help="Most vision tokens reaching the LLM (thumbnail included).",
        ),
        click.option(
            "--max-depth",
            type=int,
            default=None,
            help="Finer levels visited below level 0 (default: to native).",
        ),
        click.option(
            "--focus-layer",
            "focus_layers",
            type=int,
            multiple=True,
            help="Decoder layer(s) whose attention ranks tokens (repeatable; default: a quarter of the depth).",
        ),
        click.option(
            "--seed", type=int, default=0, show_default=True, help="Seed of the random selector."
        ),
        click.option("--max-new-tokens", type=int, default=32, show_default=True),
    ]
    for option in reversed(options):
        func = option(func)
    return mrope_option(llm_prune_options(focus_option(func)))


def build_pipeline(
    *,
    model_id: str | None = None,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    selector: str = "rfm",
    keep_ratio: float = 0.25,
    max_tiles: int = 6,
    budget: int = 2500,
    max_depth: int | None = None,
    focus_layers: tuple[int, ...] = (),
    seed: int = 0,
    max_new_tokens: int = 32,
    focus: str = "attention",
    progress: bool = False,
    mrope_positions: str = "scene",
    **llm_prune: Any,
) -> Any:
    """A Pipeline from the command-line options (the same names as ``model_options``)."""
    from lrsvqa.focus import FocusConfig
    from lrsvqa.pipeline import Pipeline
    from lrsvqa.prune import PruneConfig

    focus_config = FocusConfig(
        selector=selector,
        focus=focus,
        layers=tuple(focus_layers) or None,
        keep_ratio=keep_ratio,
        max_tiles=max_tiles,
        token_budget=budget,
        max_depth=max_depth,
        seed=seed,
    )
    quiet_transformers()
    return Pipeline.from_pretrained(
        model_id,
        revision=revision,
        device=device,
        dtype=dtype,
        focus=focus_config,
        prune=PruneConfig(llm=llm_prune_config(**llm_prune), mrope_positions=mrope_positions),
        max_new_tokens=max_new_tokens,
        progress=progress,
    )


def quiet_transformers() -> None:
    """No weight-loading progress bars or advisory warnings in the middle of our output."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def write_outputs(
    pipeline: Any, answer: Any, geojson: str | None, geojson_crs: str, overlay: str | None
) -> None:
    if geojson:
        Path(geojson).write_text(json.dumps(answer.to_geojson(geojson_crs), indent=1))
    if overlay:
        pipeline.save_overlay(answer, overlay)


def report(answer: Any, as_json: bool, geojson: str | None, overlay: str | None) -> None:
    if as_json:
        data = answer.to_dict()
        data["outputs"] = {"geojson": geojson, "overlay": overlay}
        echo_json(data)
        return
    for note in answer.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(answer.text)
    click.echo(f"[{answer.cost.summary()}]")
    if answer.evidence.crs is None and answer.evidence.tiles:
        click.echo("[the scene has no CRS: evidence is in pixel coordinates]")
    for label, path in (("evidence", geojson), ("overlay", overlay)):
        if path:
            click.echo(f"[{label}: {path}]")


@click.command()
@click.argument("scene")
@click.argument("question")
@model_options
@bands_option
@click.option(
    "--geojson",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the chosen tiles as a GeoJSON FeatureCollection.",
)
@click.option(
    "--geojson-crs", type=click.Choice(["scene", "EPSG:4326"]), default="scene", show_default=True
)
@click.option(
    "--overlay",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a PNG: focus heat per level and the kept tiles.",
)
@json_option
def ask(
    scene: str,
    question: str,
    bands: str | None,
    geojson: str | None,
    geojson_crs: str,
    overlay: str | None,
    as_json: bool,
    **model_kw: Any,
) -> None:
    """Answer QUESTION about SCENE (a raster path or http(s) URL)."""
    from lrsvqa.io import open_scene
    from lrsvqa.pipeline import check_question

    check_question(question)
    band_choice = parse_bands(bands)
    # Open the scene before loading the model: a bad file fails in a second, not a minute.
    open_scene(scene, bands=band_choice).close()
    with build_pipeline(progress=not as_json, **model_kw) as pipeline:
        if pipeline.model_id.startswith("tiny/") and not as_json:
            click.echo(
                f"note: {pipeline.model_id} is a tiny random model: its answer is meaningless",
                err=True,
            )
        answer = pipeline.ask(scene, question, bands=band_choice)
        write_outputs(pipeline, answer, geojson, geojson_crs, overlay)
    report(answer, as_json, geojson, overlay)
