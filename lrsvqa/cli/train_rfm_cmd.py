"""``lrsvqa train-rfm``: distil a Region Focus Module from a model's own deep attention."""

from __future__ import annotations

from pathlib import Path

import click

from lrsvqa.cli.options import echo_json, json_option, model_options
from lrsvqa.errors import ConfigError
from lrsvqa.testing.questions import write_synthetic


def parse_layers(value: str | None, option: str) -> tuple[int, ...] | None:
    """'20,24,27' → (20, 24, 27); negative indices count from the last layer."""
    if value is None or not value.strip():
        return None
    try:
        return tuple(int(part) for part in value.split(","))
    except ValueError:
        raise ConfigError(
            f"{option} {value!r}: give layer indices such as 27 or 20,24,27"
        ) from None


@click.command("train-rfm")
@model_options
@click.option("--data", type=click.Path(dir_okay=False), default=None, help="LRS-VQA-format JSONL.")
@click.option(
    "--image-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder the JSONL's images are relative to (default: the JSONL's folder).",
)
@click.option(
    "--synthetic",
    type=int,
    default=None,
    metavar="N",
    help="Instead of --data: N templated questions on generated ship scenes (in OUT/synthetic).",
)
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    required=True,
    help="Checkpoint folder; rerunning the same command resumes there.",
)
@click.option(
    "--layers", "n_layers", default=3, show_default=True, help="Decoder layers in the RFM."
)
@click.option(
    "--teacher-layer",
    default=None,
    type=int,
    help="Teacher layer index (negative counts from the end) [default: the last layer].",
)
@click.option(
    "--teacher-layers", default=None, metavar="A,B,C", help="Mean over these teacher layers."
)
@click.option("--epochs", default=3, show_default=True)
@click.option("--lr", default=1e-4, show_default=True)
@click.option("--batch", default=4, show_default=True, help="Items per optimiser step.")
@click.option("--limit", default=None, type=int, help="Use only the first N questions.")
@click.option(
    "--val-fraction", default=0.1, show_default=True, help="Share held out (whole scenes)."
)
@click.option("--temperature", default=2.0, show_default=True, help="KL temperature.")
@click.option("--kl-weight", default=1.0, show_default=True)
@click.option("--mse-weight", default=1.0, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Teacher-target cache, shareable between runs [default: OUT/cache].",
)
@click.option("--progress/--no-progress", default=True, help="Progress bars on stderr.")
@json_option
def train_rfm(
    model_id: str | None,
    revision: str | None,
    data: str | None,
    image_root: str | None,
    synthetic: int | None,
    out: str,
    n_layers: int,
    teacher_layer: int | None,
    teacher_layers: str | None,
    epochs: int,
    lr: float,
    batch: int,
    limit: int | None,
    val_fraction: float,
    temperature: float,
    kl_weight: float,
    mse_weight: float,
    seed: int,
    cache_dir: str | None,
    device: str,
    dtype: str,
    progress: bool,
    as_json: bool,
) -> None:
    """Train an RFM of --layers layers to match the full model's attention at a deep layer."""
    if (data is None) == (synthetic is None):
        raise ConfigError("give exactly one of --data JSONL or --synthetic N")
    if teacher_layer is not None and teacher_layers is not None:
        raise ConfigError("give --teacher-layer or --teacher-layers, not both")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    layers = (
        (teacher_layer,)
        if teacher_layer is not None
        else parse_layers(teacher_layers, "--teacher-layers")
    )

    from lrsvqa.bench.rfm_items import items_from_lrsvqa
    from lrsvqa.focus.train import TrainConfig, train_rfm

    config = TrainConfig(
        n_layers=n_layers, teacher_layers=layers, epochs=epochs, lr=lr, batch=batch,
        val_fraction=val_fraction, temperature=temperature, kl_weight=kl_weight,
        mse_weight=mse_weight, seed=seed,
    )  # fmt: skip
    if synthetic is not None:
        data = str(write_synthetic(Path(out) / "synthetic", synthetic, seed=seed))
        image_root = None
    assert data is not None
    items = items_from_lrsvqa(data, image_root, limit)

    from lrsvqa.models import DEFAULT_MODEL_ID, from_pretrained

    adapter = from_pretrained(
        model_id or DEFAULT_MODEL_ID, revision=revision, device=device, dtype=dtype
    )
    result = train_rfm(adapter, items, out, config, progress=progress, cache_dir=cache_dir)
    if as_json:
        echo_json(
            {
                "out": str(result.out),
                "data": data,
                "resumed_from_epoch": result.resumed_from,
                "epochs_run": result.epochs_run,
                "baseline": result.baseline,
                "log": result.log,
            }
        )
        return
    if result.resumed_from:
        click.echo(f"resumed after epoch {result.resumed_from}")
    base = result.baseline
    if "untrained" in base:
        click.echo(
            f"before training: val loss {base['untrained']['loss']:.4f}, top-25% overlap "
            f"{base['untrained']['top25_overlap']:.3f} (random {base['random']['top25_overlap']:.3f})"
        )
    for e in result.log:
        extra = ""
        if "val_loss" in e:
            extra = f", val loss {e['val_loss']:.4f}, top-25% overlap {e['top25_overlap']:.3f}, spearman {e['spearman']:.3f}"
        click.echo(f"epoch {e['epoch']}: train loss {e['train_loss']:.4f}{extra}")
    click.echo(f"wrote {Path(out) / 'rfm.safetensors'} (+ rfm.json, {Path(out) / 'log.jsonl'})")
