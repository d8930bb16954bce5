"""``lrsvqa demo``: write a sample scene with ships and ask about it, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lrsvqa.cli.ask_cmd import build_pipeline, report, write_outputs
from lrsvqa.cli.options import (
    FOCUS_PARAMS,
    check_output_folder,
    focus_config,
    focus_options,
    json_option,
    llm_prune_options,
)

QUESTION = (
    "How many ships are there in this image? Answer the question using a single word or phrase."
)
MICRO_MODEL = "micro/qwen2_vl"
TINY_MODEL = "tiny/qwen2_5_vl"


def fallback_model() -> str:
    """The shipped micro model (trained on synthetic scenes), else a tiny random model."""
    from lrsvqa.models.loading import micro_models

    return MICRO_MODEL if MICRO_MODEL in micro_models() else TINY_MODEL


def demo_world(size: int, ships: int) -> object:
    """The demo's world: ``ships`` ships of 30-70 px on the water, nothing else (seeded)."""
    from lrsvqa.testing.world import make_world

    return make_world(size, seed=size * 31 + ships, counts={"ship": ships}, small=0.0)


def write_demo_scene(path: Path, size: int, ships: int) -> object:
    """Write the scene unless the one already at ``path`` has the same size and ships."""
    from lrsvqa.testing.world import load_world, write_world

    world = demo_world(size, ships)
    if path.exists() and Path(f"{path}.world.json").exists():
        try:
            if load_world(path) == world:
                return world
        except (OSError, ValueError, TypeError, KeyError):
            pass  # damaged or older truth file: write the scene again
    tmp = path.with_name(path.stem + ".part.tif")
    write_world(tmp, world)  # type: ignore[arg-type]
    Path(f"{tmp}.world.json").replace(f"{path}.world.json")
    tmp.replace(path)
    return world


def default_model_cached() -> bool:
    """True when the default model's files are in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    from lrsvqa.models import DEFAULT_MODEL_ID

    found = try_to_load_from_cache(DEFAULT_MODEL_ID, "config.json")
    return isinstance(found, str)


@click.command()
@click.argument("out_dir", default="lrsvqa-demo", type=click.Path(file_okay=False))
@click.option("--size", default=8192, show_default=True, help="Scene width and height in pixels.")
@click.option("--ships", default=6, show_default=True)
@click.option("--question", default=QUESTION, show_default=False)
@click.option(
    "--model",
    "model_id",
    default=None,
    help="Default: Qwen/Qwen2.5-VL-7B-Instruct when cached, else micro/qwen2_vl (a micro model trained on synthetic scenes, offline).",
)
@click.option("--device", default="auto", show_default=True)
@focus_options
@llm_prune_options
@json_option
def demo(
    out_dir: str,
    size: int,
    ships: int,
    question: str,
    model_id: str | None,
    device: str,
    as_json: bool,
    **knobs: Any,
) -> None:
    """Write OUT_DIR/scene.tif (ships at known places), ask about it, save evidence + overlay."""
    from lrsvqa.errors import ConfigError
    from lrsvqa.models import DEFAULT_MODEL_ID

    if size < 224:
        raise ConfigError(f"--size {size}: use at least 224 px")
    if not 0 <= ships <= 12:
        raise ConfigError(f"--ships {ships}: use 0 to 12 ships")
    focus_config(**{k: knobs[k] for k in FOCUS_PARAMS})  # bad settings fail before any work
    check_output_folder(out_dir, "OUT_DIR")
    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"OUT_DIR {folder}: cannot create it ({exc.strerror}); choose another folder"
        ) from None
    scene_path = folder / "scene.tif"
    world = write_demo_scene(scene_path, size, ships)
    placed = len(world.objects)  # type: ignore[attr-defined]
    if model_id is None:
        model_id = DEFAULT_MODEL_ID if default_model_cached() else fallback_model()
        if model_id == MICRO_MODEL:
            click.echo(
                f"note: {DEFAULT_MODEL_ID} is not in the local cache (get it with "
                f"`hf download {DEFAULT_MODEL_ID}`); using {MICRO_MODEL}, a 1.5M-parameter "
                "micro model trained on synthetic scenes (it knows ships, planes, storage tanks "
                "and vehicles on synthetic backgrounds, nothing else)",
                err=True,
            )
        elif model_id == TINY_MODEL:
            click.echo(
                f"note: {DEFAULT_MODEL_ID} is not in the local cache (get it with "
                f"`hf download {DEFAULT_MODEL_ID}`); using {TINY_MODEL}, a tiny random model "
                "that runs offline: its answer is meaningless",
                err=True,
            )
    geojson, overlay = str(folder / "evidence.geojson"), str(folder / "overlay.png")
    with build_pipeline(
        model_id=model_id, device=device, progress=not as_json, **knobs
    ) as pipeline:
        answer = pipeline.ask(scene_path, question)
        write_outputs(pipeline, answer, geojson, "scene", overlay)
    if not as_json:
        click.echo(
            f"scene: {scene_path} ({size} x {size} px, {placed} ships; truth in {scene_path}.world.json)"
        )
        click.echo(f"Q: {question}")
    report(answer, as_json, geojson, overlay)
