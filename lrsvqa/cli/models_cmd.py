"""``lrsvqa models``: the supported model families and their capabilities (no downloads)."""

from __future__ import annotations

import json
from typing import Any

import click


def _rows(only: str | None) -> list[dict[str, Any]]:
    from lrsvqa.models import loading, registry, tiny

    names = registry.families()
    if only is not None:
        registry.adapter_class(only)  # unknown family -> ModelError (exit 2)
        names = [only]
    micro: dict[str, list[str]] = {}
    for model_id in loading.micro_models():
        config = json.loads((loading.micro_folder(model_id) / "config.json").read_text())
        fam = registry.family_for_model_type(config.get("model_type"), model_id=model_id)
        micro.setdefault(fam, []).append(model_id)
    rows = []
    for family in names:
        cls = registry.adapter_class(family)
        rows.append(
            {
                "family": family,
                "model_types": list(cls.model_types),
                "reference_model_id": cls.reference_model_id,
                "default": cls.reference_model_id == loading.DEFAULT_MODEL_ID,
                "tiny_model_id": tiny.TINY_PREFIX + family,
                "micro_model_ids": micro.get(family, []),
                "capabilities": cls.capabilities_for(cls.reference_config()).to_dict(),
                "tiny_capabilities": cls.capabilities_for(tiny.config(family)).to_dict(),
            }
        )
    return rows


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--family", default=None, help="Show one family only.")
def models(as_json: bool, family: str | None) -> None:
    """List the supported model families and their capabilities."""
    rows = _rows(family)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    head = f"{'family':<16} {'reference model':<40} {'tile':>5} {'tokens':>7} {'M-RoPE':>6} {'newline':>7} {'layers':>6} {'hidden':>6}"
    click.echo(head)
    for row in rows:
        c = row["capabilities"]
        tokens = f"{c['tokens_per_tile'][0]}x{c['tokens_per_tile'][1]}"
        ref = row["reference_model_id"] + (" *" if row["default"] else "")
        click.echo(
            f"{row['family']:<16} {ref:<40} {c['tile_size']:>5} {tokens:>7} "
            f"{'yes' if c['mrope'] else 'no':>6} {'yes' if c['newline_tokens'] else 'no':>7} "
            f"{c['num_layers']:>6} {c['hidden_size']:>6}"
        )
    click.echo("* default model; tiny/<family> builds a random test model locally")
    shipped = [(m, row["family"]) for row in rows for m in row["micro_model_ids"]]
    for model_id, fam in shipped:
        click.echo(
            f"{model_id} ({fam}): shipped micro model trained on synthetic scenes "
            "(see its MODEL_CARD.md); answers offline"
        )
