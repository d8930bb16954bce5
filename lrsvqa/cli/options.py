"""What subcommands share: options defined once from the config dataclasses' defaults and
help (``FocusConfig``, ``LLMPruneConfig``), output-path checks, JSON output, band parsing."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

import click

from lrsvqa.errors import BandError, ConfigError


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


def _field(cls: type, name: str) -> Field[Any]:
    for f in fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no field {name!r}")  # pragma: no cover


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


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass ``cls``'s field ``name``."""
    f = _field(cls, name)
    if f.default is MISSING and f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


def config_option(
    cls: type, name: str, flag: str | None = None, param: str | None = None, **kwargs: Any
) -> Callable[[Any], Any]:
    """A click option for field ``name`` of config dataclass ``cls``: its default, help,
    choices and type come from the dataclass, so every command shows the same."""
    f = _field(cls, name)
    meta = f.metadata
    default = field_default(cls, name)
    annotation = str(f.type)
    if "choices" in meta:
        kind: Any = click.Choice(list(meta["choices"]))
    elif "tuple" in annotation:
        kind = str  # parsed by the command (e.g. "8,16,24")
    elif "float" in annotation:
        kind = float
    elif "int" in annotation:
        kind = int
    else:
        kind = str
    options: dict[str, Any] = {
        "type": kind,
        "default": default,
        "show_default": default is not None,
        "help": meta.get("help"),
    }
    if "metavar" in meta:
        options["metavar"] = meta["metavar"]
    options.update(kwargs)
    return click.option(flag or "--" + name.replace("_", "-"), param or name, **options)


def _apply(func: Any, options: list[Callable[[Any], Any]]) -> Any:
    for option in reversed(options):
        func = option(func)
    return func


def _focus_options() -> list[Callable[[Any], Any]]:
    from lrsvqa.focus.config import FocusConfig as F

    return [
        config_option(F, "selector"),
        config_option(F, "keep_ratio"),
        config_option(F, "max_tiles"),
        config_option(F, "token_budget", "--budget", "budget"),
        config_option(F, "encode_budget"),
        config_option(F, "max_depth"),
        config_option(F, "layers", "--focus-layer", "focus_layers", type=int, multiple=True,
                      default=(), show_default=False),
        config_option(F, "tile_score"),
        config_option(F, "seed"),
        config_option(F, "focus"),
        config_option(F, "tile_rule"),
        config_option(F, "rounding"),
        config_option(F, "newlines"),
    ]  # fmt: skip


def focus_options(func: Any) -> Any:
    """Every ``FocusConfig`` knob as an option (ask, demo and bench share them)."""
    return _apply(func, _focus_options())


def focus_config(
    *,
    selector: str,
    keep_ratio: float,
    max_tiles: int,
    budget: int,
    encode_budget: int | None,
    max_depth: int | None,
    focus_layers: tuple[int, ...],
    tile_score: str,
    seed: int,
    focus: str,
    tile_rule: str = "best",
    rounding: str = "ceil",
    newlines: str = "excluded",
) -> Any:
    """The FocusConfig of the ``focus_options``."""
    from lrsvqa.focus import FocusConfig

    return FocusConfig(
        selector=selector,
        layers=tuple(focus_layers) or None,
        keep_ratio=keep_ratio,
        max_tiles=max_tiles,
        token_budget=budget,
        encode_budget=encode_budget,
        max_depth=max_depth,
        tile_score=tile_score,
        seed=seed,
        focus=focus,
        tile_rule=tile_rule,
        rounding=rounding,
        newlines=newlines,
    )


FOCUS_PARAMS = (
    "selector", "keep_ratio", "max_tiles", "budget", "encode_budget", "max_depth",
    "focus_layers", "tile_score", "seed", "focus", "tile_rule", "rounding", "newlines",
)  # fmt: skip
LLM_PRUNE_PARAMS = (
    "llm_prune", "pdrop_layers", "pdrop_ratio", "fastv_k", "fastv_ratio", "fastv_query",
    "pdrop_positions", "pdrop_rounding",
)  # fmt: skip


def preset_option(func: Any) -> Any:
    """--preset: a named operating point (``lrsvqa.pipeline.preset``)."""
    from lrsvqa.pipeline.preset import PRESETS

    return click.option(
        "--preset",
        type=click.Choice(list(PRESETS)),
        default=None,
        help="Run exactly the LRS-VQA release's operating point (its pyramid levels, tile "
        "rule, token layout, prompt and decoding); options given beside it win, with a note.",
    )(func)


def apply_preset(params: dict[str, Any], preset: str | None) -> list[str]:
    """Set ``params`` (a command's keyword arguments) to ``preset``'s values, except those
    the user gave on the command line: those win, and a note says so (returned)."""
    if preset is None:
        return []
    from click.core import ParameterSource

    from lrsvqa.pipeline.preset import option_values

    ctx = click.get_current_context(silent=True)
    notes = []
    for name, value in option_values(preset).items():
        if name not in params:
            continue
        source = ctx.get_parameter_source(name) if ctx is not None else None
        if source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            if params[name] != value:
                flag = "--" + {"budget": "budget", "focus_layers": "focus-layer"}.get(
                    name, name.replace("_", "-")
                )
                shown = "per-model value" if value is None else repr(value)
                notes.append(
                    f"{flag} {params[name]!r} given beside --preset {preset} replaces the "
                    f"preset's {shown}"
                )
        else:
            params[name] = value
    given = ctx.get_parameter_source("max_tiles") if ctx is not None else None
    if params.get("tile_rule") == "hit" and given == ParameterSource.COMMANDLINE:
        notes.append("--max-tiles is not read under --tile-rule hit (every hit tile is kept)")
    return notes


def apply_preset_knobs(
    knobs: dict[str, Any], preset: str | None, max_new_tokens: int | None
) -> tuple[int | None, list[str]]:
    """``apply_preset`` on a command's focus/prune knobs and its ``--max-new-tokens``
    (which the preset sets too): the resolved ``max_new_tokens`` and the notes."""
    knobs["max_new_tokens"] = max_new_tokens
    notes = apply_preset(knobs, preset)
    return knobs.pop("max_new_tokens"), notes


def take(params: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Pop ``names`` out of a command's keyword arguments."""
    return {name: params.pop(name) for name in names if name in params}


def llm_prune_options(func: Any) -> Any:
    """--llm-prune and its knobs (PyramidDrop / FastV inside the LLM), from LLMPruneConfig."""
    from lrsvqa.prune.llm import LLMPruneConfig as P

    return _apply(
        func,
        [
            config_option(P, "method", "--llm-prune", "llm_prune"),
            config_option(P, "pdrop_layers"),
            config_option(P, "pdrop_ratio"),
            config_option(P, "fastv_k"),
            config_option(P, "fastv_ratio"),
            config_option(P, "fastv_query"),
            config_option(P, "pdrop_positions"),
            config_option(P, "pdrop_rounding"),
        ],
    )


def model_options(func: Any, *, model_help: str | None = None) -> Any:
    """--model, --revision, --device, --dtype (every command that loads a model)."""
    return _apply(
        func,
        [
            click.option(
                "--model",
                "model_id",
                default=None,
                metavar="ID",
                help=model_help
                or "Hugging Face id, local folder or tiny/<family> (default: "
                "Qwen/Qwen2.5-VL-7B-Instruct).",
            ),
            click.option(
                "--revision", default=None, help="Model revision (branch, tag or commit)."
            ),
            click.option(
                "--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N."
            ),
            click.option(
                "--dtype",
                default="auto",
                show_default=True,
                help="auto, float32, bfloat16, float16.",
            ),
        ],
    )


def max_new_tokens_option(func: Any) -> Any:
    return click.option(
        "--max-new-tokens",
        type=int,
        default=32,
        show_default=True,
        help="Most tokens per answer.",
    )(func)


def check_output_path(path: str | os.PathLike[str] | None, option: str) -> None:
    """ConfigError now (before any model loads) if ``path`` cannot be written later."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{option} {target}: is a folder; give a file name")
    parent = target.parent
    if not parent.is_dir():
        raise ConfigError(
            f"{option} {target}: the folder {parent} does not exist; create it or choose "
            "another path"
        )
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ConfigError(f"{option} {target}: not writable; choose another path")


def check_output_folder(path: str | os.PathLike[str] | None, option: str) -> None:
    """ConfigError now if folder ``path`` is a file or could not be created under its parent."""
    if path is None:
        return
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{option} {target}: is a file, not a folder; choose a folder")
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ConfigError(f"{option} {target}: {existing} is not a writable folder")


def llm_prune_config(
    llm_prune: str = "none",
    pdrop_layers: str | None = None,
    pdrop_ratio: float = 0.5,
    fastv_k: int = 2,
    fastv_ratio: float = 0.5,
    fastv_query: str = "all",
    pdrop_positions: str = "keep",
    pdrop_rounding: str = "compound",
) -> Any:
    """The LLMPruneConfig of the ``llm_prune_options``."""
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
        pdrop_rounding=pdrop_rounding,
    )
