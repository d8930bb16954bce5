"""``lrsvqa convert-checkpoint``: an official LRS-VQA release → stock LLaVA folder + RFM."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from lrsvqa.cli.options import echo_json, json_option


@click.command("convert-checkpoint")
@click.argument("src", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--vision-tower",
    type=click.Path(file_okay=False),
    default=None,
    help="CLIP-336 folder, when the checkpoint does not hold its vision tower.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@json_option
def convert_checkpoint(
    src: str, out: str, vision_tower: str | None, overwrite: bool, as_json: bool
) -> None:
    """Convert release checkpoint SRC into OUT (a stock transformers LLaVA model) and
    OUT/rfm (its distilled Region Focus Module, for --focus distilled:OUT/rfm)."""
    from lrsvqa.errors import ConfigError
    from lrsvqa.focus.release import write_release_rfm
    from lrsvqa.models.convert_release import convert_release

    if not Path(src).is_dir():
        raise ConfigError(f"{src} is not a folder; give the release checkpoint's folder")
    target = Path(out)
    if target.exists() and any(target.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"{target} exists and is not empty; pass --overwrite or pick another OUT"
            )
        shutil.rmtree(target)
    report, rfm = convert_release(src, target, vision_tower=vision_tower)
    rfm_dir = write_release_rfm(rfm, target, target / "rfm")
    data = report.to_dict()
    data.update(
        {
            "model": str(target),
            "rfm_folder": str(rfm_dir),
            "rfm_layers": rfm.n_layers,
            "teacher_layers": list(rfm.teacher_layers),
        }
    )
    if as_json:
        echo_json(data)
        return
    click.echo(
        f"wrote {target} (stock LLaVA, {report.llm} LLM): {data['mapped']} tensors mapped, "
        f"{len(report.rfm)} to the RFM, {len(report.unused)} unused"
    )
    for name, why in report.unused.items():
        click.echo(f"  unused {name}: {why}")
    click.echo(
        f"wrote {rfm_dir} ({rfm.n_layers} layers for LLM layers {list(rfm.teacher_layers)})\n"
        f"run: lrsvqa bench --model {target} --focus distilled:{rfm_dir} (lrsvqa's defaults; "
        "add --preset lrsvqa-release for the release's own operating point)"
    )
