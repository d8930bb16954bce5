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
FALLBACK_MODEL = "tiny/qwen2_5_vl"


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
    help="Default: Qwen/Qwen2.5-VL-7B-Instruct when cached, else tiny/qwen2_5_vl (offline, meaningless answers).",
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
    from lrsvqa.testing import make_ship_scene

    if size < 64:
        raise ConfigError(f"--size {size}: use at least 64 px")
    focus_config(**{k: knobs[k] for k in FOCUS_PARAMS})  # bad settings fail before any work
    check_output_folder(out_dir, "OUT_DIR")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    scene_path = folder / "scene.tif"
    if not scene_path.exists():
        make_ship_scene(scene_path, size, ships=ships)
    if model_id is None:
        model_id = DEFAULT_MODEL_ID if default_model_cached() else FALLBACK_MODEL
        if model_id == FALLBACK_MODEL:
            click.echo(
                f"note: {DEFAULT_MODEL_ID} is not in the local cache (get it with "
                f"`hf download {DEFAULT_MODEL_ID}`); using {FALLBACK_MODEL}, a tiny random model "
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
            f"scene: {scene_path} ({size} x {size} px, {ships} ships; boxes in {scene_path}.ships.json)"
        )
        click.echo(f"Q: {question}")
    report(answer, as_json, geojson, overlay)
