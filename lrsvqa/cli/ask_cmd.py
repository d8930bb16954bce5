"""``lrsvqa ask``: answer a question about a scene, with map evidence and a cost line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from lrsvqa.cli.options import (
    FOCUS_PARAMS,
    LLM_PRUNE_PARAMS,
    apply_preset,
    apply_preset_knobs,
    bands_option,
    check_output_path,
    echo_json,
    focus_config,
    focus_options,
    json_option,
    llm_prune_config,
    llm_prune_options,
    max_new_tokens_option,
    mrope_option,
    parse_bands,
    preset_option,
    take,
)
from lrsvqa.cli.options import model_options as _model_options


def model_options(func: Any) -> Any:
    """Options shared by ``ask`` and ``demo``: the model and every focus/pruning knob."""
    return _model_options(
        max_new_tokens_option(focus_options(llm_prune_options(mrope_option(preset_option(func)))))
    )


def build_pipeline(
    *,
    model_id: str | None = None,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    max_new_tokens: int | None = 32,
    progress: bool = False,
    mrope_positions: str = "scene",
    preset: str | None = None,
    echo_notes: bool = True,
    **knobs: Any,
) -> Any:
    """A Pipeline from the command-line options (the names of ``model_options``; focus and
    pruning knobs left out take their config's default, or ``preset``'s). Options given
    beside ``preset`` win, with a ``note:`` line on stderr unless ``echo_notes`` is off."""
    from lrsvqa.focus import FocusConfig
    from lrsvqa.pipeline import Pipeline
    from lrsvqa.prune import PruneConfig

    max_new_tokens, notes = apply_preset_knobs(knobs, preset, max_new_tokens)
    for note in notes if echo_notes else []:
        click.echo(f"note: {note}", err=True)
    focus_kw = take(knobs, FOCUS_PARAMS)
    prune_kw = take(knobs, LLM_PRUNE_PARAMS)
    if knobs:
        raise TypeError(f"unknown options {sorted(knobs)}")
    focus = focus_config(**focus_kw) if focus_kw else FocusConfig()
    quiet_transformers()
    return Pipeline.from_pretrained(
        model_id,
        revision=revision,
        device=device,
        dtype=dtype,
        focus=focus,
        prune=PruneConfig(llm=llm_prune_config(**prune_kw), mrope_positions=mrope_positions),
        max_new_tokens=max_new_tokens,
        progress=progress,
        preset=preset,
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
    from lrsvqa.errors import ConfigError
    from lrsvqa.io import open_scene
    from lrsvqa.io.cogcache import ensure_cog
    from lrsvqa.pipeline import check_question

    check_question(question)
    band_choice = parse_bands(bands)
    notes = apply_preset(model_kw, model_kw.get("preset"))
    # Bad input fails in a second, before a model loads for a minute: the scene, the
    # settings (a budget below the thumbnail is refused when the model is known), the
    # output paths. A big PNG/JPEG is converted into the COG cache now, once
    # (lrsvqa.io.cogcache).
    focus_config(**{k: model_kw[k] for k in FOCUS_PARAMS})
    llm_prune_config(**{k: model_kw[k] for k in LLM_PRUNE_PARAMS})
    check_output_path(geojson, "--geojson")
    check_output_path(overlay, "--overlay")
    cached = ensure_cog(scene, progress=not as_json)
    if cached.status == "converted":
        conversion = (
            f"{scene} converted once into the COG cache ({cached.seconds:.0f} s, not in the "
            "cost report): later questions read only the windows they need"
        )
        # Said at once on stderr; with --json it is one of the answer's notes instead.
        if as_json:
            notes.append(conversion)
        else:
            click.echo(f"note: {conversion}", err=True)
    with open_scene(scene, bands=band_choice, cog_cache=True) as opened:
        if geojson and geojson_crs == "EPSG:4326" and opened.crs is None:
            raise ConfigError(
                f"{scene}: the scene has no CRS, so --geojson-crs EPSG:4326 is impossible; "
                "use --geojson-crs scene (pixel coordinates)"
            )
    # The preset's notes go into the answer's notes (and --json) instead of stderr.
    with build_pipeline(progress=not as_json, echo_notes=False, **model_kw) as pipeline:
        if pipeline.model_id.startswith("tiny/") and not as_json:
            click.echo(
                f"note: {pipeline.model_id} is a tiny random model: its answer is meaningless",
                err=True,
            )
        answer = pipeline.ask(scene, question, bands=band_choice)
        answer.notes[:0] = notes
        write_outputs(pipeline, answer, geojson, geojson_crs, overlay)
    report(answer, as_json, geojson, overlay)
