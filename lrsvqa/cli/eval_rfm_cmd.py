"""``lrsvqa eval-rfm``: how well a distilled RFM ranks tokens like its teacher."""

from __future__ import annotations

import click

from lrsvqa.cli.options import echo_json, json_option
from lrsvqa.errors import ConfigError


@click.command("eval-rfm")
@click.option(
    "--model",
    "model_id",
    default=None,
    help="The RFM's base model (hub id, folder, tiny/<family>).",
)
@click.option("--revision", default=None)
@click.option("--rfm", "rfm", type=click.Path(), required=True, help="train-rfm --out folder.")
@click.option(
    "--data", type=click.Path(dir_okay=False), required=True, help="LRS-VQA-format JSONL."
)
@click.option(
    "--image-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder the JSONL's images are relative to (default: the JSONL's folder).",
)
@click.option("--held-out", is_flag=True, help="Only the questions the training run held out.")
@click.option("--limit", default=None, type=int, help="Evaluate only the first N questions.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random baseline.")
@click.option("--device", default="auto", show_default=True)
@click.option("--progress/--no-progress", default=True)
@json_option
def eval_rfm(
    model_id: str | None,
    revision: str | None,
    rfm: str,
    data: str,
    image_root: str | None,
    held_out: bool,
    limit: int | None,
    seed: int,
    device: str,
    progress: bool,
    as_json: bool,
) -> None:
    """Top-25% overlap and Spearman correlation with the teacher, vs untrained and random."""
    from lrsvqa.focus.distilled import read_meta

    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    folder, meta = read_meta(rfm)

    from lrsvqa.bench.rfm_items import items_from_lrsvqa
    from lrsvqa.focus.train import held_out_ids

    items = items_from_lrsvqa(data, image_root)
    if held_out:
        keep = set(held_out_ids(folder))
        items = [i for i in items if i.item_id in keep]
        if not items:
            raise ConfigError(
                f"none of the questions in {data} were held out by the run in {folder}"
            )
    if limit is not None:
        items = items[:limit]

    import torch

    from lrsvqa.focus.distilled import RegionFocusModule, load_rfm
    from lrsvqa.focus.teacher import iter_prepared
    from lrsvqa.focus.train import evaluate
    from lrsvqa.models import from_pretrained

    adapter = from_pretrained(model_id or meta.base_model_id, revision=revision, device=device)
    trained, meta = load_rfm(folder, adapter, dtype=torch.float32)
    untrained = RegionFocusModule.from_adapter(adapter, meta.n_layers, dtype=torch.float32).eval()
    results = evaluate(
        iter_prepared(adapter, items, meta.teacher_layers),
        {"trained": trained, "untrained": untrained},
        seed=seed,
        progress=progress,
        total=len(items),
    )
    report = {
        "rfm": str(folder),
        "model": adapter.model_id,
        "n_layers": meta.n_layers,
        "teacher_layers": list(meta.teacher_layers),
        "items": len(items),
        "results": results,
    }
    if as_json:
        echo_json(report)
        return
    layers = ",".join(map(str, meta.teacher_layers))
    click.echo(f"{len(items)} items; RFM of {meta.n_layers} layers vs teacher layer(s) {layers}")
    click.echo(f"{'ranking':<10} {'top-25% overlap':>16} {'spearman':>9}")
    for name, r in results.items():
        click.echo(f"{name:<10} {r['top25_overlap']:>16.3f} {r['spearman']:>9.3f}")
