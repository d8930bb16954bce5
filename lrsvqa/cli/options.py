"""Small helpers shared by subcommands: JSON output and band parsing."""

from __future__ import annotations

import json
from typing import Any

import click

from lrsvqa.errors import BandError


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def parse_bands(value: str | None) -> tuple[int, ...] | None:
    """'4,3,2' → (4, 3, 2)."""
    if value is None or value.strip() == "":
        return None
    try:
        return tuple(int(part) for part in value.split(","))
    except ValueError:
        raise BandError(f"--bands {value!r}: give 1-based band numbers such as 4,3,2") from None


bands_option = click.option(
    "--bands", default=None, metavar="R,G,B", help="1-based bands to show as RGB (e.g. 4,3,2)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def focus_option(func: Any) -> Any:
    return click.option(
        "--focus",
        "focus",
        default="attention",
        show_default=True,
        metavar="attention|distilled:PATH",
        help="Token scorer: the model's own attention, or a distilled RFM from `lrsvqa train-rfm`.",
    )(func)


def mrope_option(func: Any) -> Any:
    """--mrope-positions: how tile tokens get their M-RoPE (h, w) ids (Qwen2/2.5-VL)."""
    return click.option(
        "--mrope-positions",
        type=click.Choice(["scene", "compact"]),
        default="scene",
        show_default=True,
        help="M-RoPE ids of tile tokens: their cell in the level's whole-scene grid, or the "
        "tiles present packed side by side (ids within the trained range).",
    )(func)


def llm_prune_options(func: Any) -> Any:
    """--llm-prune and its knobs (PyramidDrop / FastV inside the LLM)."""
    options = [
        click.option(
            "--llm-prune",
            type=click.Choice(["none", "pdrop", "fastv"]),
            default="none",
            show_default=True,
            help="Drop image tokens inside the LLM: PyramidDrop or FastV.",
        ),
        click.option(
            "--pdrop-layers",
            default=None,
            metavar="L1,L2,…",
            help="PyramidDrop stage boundaries (default: L/4, L/2, 3L/4).",
        ),
        click.option(
            "--pdrop-ratio",
            type=float,
            default=0.5,
            show_default=True,
            help="PyramidDrop λ: share of image tokens kept at each boundary, in (0, 1].",
        ),
        click.option(
            "--pdrop-positions",
            type=click.Choice(["keep", "compact"]),
            default="keep",
            show_default=True,
            help="After a PyramidDrop drop: keep original position ids, or renumber them "
            "0..n-1 as the release does (1-D RoPE models only).",
        ),
        click.option(
            "--fastv-k",
            type=int,
            default=2,
            show_default=True,
            help="FastV: layers that see all tokens.",
        ),
        click.option(
            "--fastv-ratio",
            type=float,
            default=0.5,
            show_default=True,
            help="FastV R: share of image tokens dropped after layer K, in [0, 1).",
        ),
        click.option(
            "--fastv-query",
            type=click.Choice(["all", "last"]),
            default="all",
            show_default=True,
            help="FastV ranks by attention from all queries (paper) or from the last token.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def llm_prune_config(
    llm_prune: str = "none",
    pdrop_layers: str | None = None,
    pdrop_ratio: float = 0.5,
    fastv_k: int = 2,
    fastv_ratio: float = 0.5,
    fastv_query: str = "all",
    pdrop_positions: str = "keep",
) -> Any:
    """The LLMPruneConfig of the ``llm_prune_options``."""
    from lrsvqa.errors import ConfigError
    from lrsvqa.prune import LLMPruneConfig

    layers = None
    if pdrop_layers:
        try:
            layers = tuple(int(x) for x in pdrop_layers.split(","))
        except ValueError:
            raise ConfigError(
                f"--pdrop-layers {pdrop_layers!r}: give layer numbers such as 8,16,24"
            ) from None
    return LLMPruneConfig(
        method=llm_prune,
        pdrop_layers=layers,
        pdrop_ratio=pdrop_ratio,
        fastv_k=fastv_k,
        fastv_ratio=fastv_ratio,
        fastv_query=fastv_query,
        pdrop_positions=pdrop_positions,
    )
