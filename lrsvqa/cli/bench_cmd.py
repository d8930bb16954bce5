"""``lrsvqa bench``: run a model over LRS-VQA (resumable, shardable); ``bench merge``.

The model is built by ``make_answerer`` alone, so tests (and other front ends)
can swap in another answerer by replacing that one function.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lrsvqa.cli.options import (
    FOCUS_PARAMS,
    apply_preset_knobs,
    check_output_folder,
    echo_json,
    field_default,
    focus_config,
    focus_options,
    json_option,
    llm_prune_config,
    llm_prune_options,
    mrope_option,
    preset_option,
    take,
)

if TYPE_CHECKING:
    from lrsvqa.bench.runner import Answerer, RunOptions

log = logging.getLogger(__name__)

# Options recorded in RunOptions' own fields (None there: the FocusConfig default).
_OWN = {"selector": "selector", "focus": "focus", "keep_ratio": "keep_ratio",
        "max_tiles": "max_tiles", "budget": "token_budget"}  # fmt: skip


def make_answerer(options: RunOptions) -> Answerer:
    """The real answerer: ``lrsvqa.pipeline.Pipeline`` with the run's focus options."""
    from lrsvqa.cli.ask_cmd import quiet_transformers
    from lrsvqa.focus import FocusConfig
    from lrsvqa.pipeline import Pipeline
    from lrsvqa.prune import LLMPruneConfig, PruneConfig

    focus: dict[str, Any] = {"selector": options.selector, "focus": options.focus}
    for key, value in (
        ("keep_ratio", options.keep_ratio),
        ("max_tiles", options.max_tiles),
        ("token_budget", options.budget),
    ):
        if value is not None:
            focus[key] = value
    focus.update(options.focus_extra)
    if "layers" in focus:
        focus["layers"] = tuple(focus["layers"])
    quiet_transformers()
    return Pipeline.from_pretrained(
        options.model,
        revision=options.revision,
        focus=FocusConfig(**focus),
        prune=PruneConfig(
            llm=LLMPruneConfig(**options.llm_prune), mrope_positions=options.mrope_positions
        ),
        device=options.device,
        max_new_tokens=options.max_new_tokens,
        preset=options.preset,
    )


def _choices(values: tuple[str, ...]) -> tuple[str, ...] | None:
    chosen = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return tuple(chosen) or None


@click.group("bench", invoke_without_command=True)
@click.option(
    "--benchmark",
    type=click.Choice(["lrsvqa", "mme-rs"]),
    default="lrsvqa",
    show_default=True,
    help="LRS-VQA, or MME-RealWorld's remote-sensing subset (multiple choice).",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Annotation file: LRS_VQA_merged.jsonl, or MME-RealWorld's JSON for mme-rs.",
)
@click.option(
    "--image-root",
    type=click.Path(path_type=Path),
    help="Folder the annotation's image paths are relative to.",
)
@click.option("--model", help="Model id (hub id or local folder).")
@click.option("--revision", default=None, help="Model revision (hub branch, tag or commit).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Run folder: answers, manifest, errors. Rerun the same command to resume.",
)
@click.option("--limit", type=int, default=None, help="Only the first N questions (after filters).")
@click.option("--source", multiple=True, help="Only this source (repeat or comma-separate).")
@click.option("--category", multiple=True, help="Only this category (repeatable).")
@click.option("--size-bin", multiple=True, help="Only this size bin (repeatable).")
@click.option(
    "--shard",
    default=None,
    metavar="I/N",
    help="Run shard I of N (by image); default: RANK/WORLD_SIZE from torchrun, else all.",
)
@click.option(
    "--skip-missing", is_flag=True, help="Skip questions whose image is missing (else exit 2)."
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="auto (CUDA if usable, else CPU; under torchrun cuda:$LOCAL_RANK), cpu, cuda, cuda:N.",
)
@click.option(
    "--max-new-tokens",
    type=int,
    default=32,
    show_default=True,
    help="Most tokens per answer (LRS-VQA answers are a word or phrase; under --preset "
    "lrsvqa-release the release's 1024 / 4096 / 128 unless given).",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Run on Ray: a new local instance, or the cluster at ADDRESS (write --ray=ADDRESS).",
)
@click.option("--ray-actors", type=int, default=None, help="Model actors (default: one per GPU).")
@click.option("--ray-num-cpus", type=int, default=None, help="CPUs of a new local Ray instance.")
@focus_options
@llm_prune_options
@mrope_option
@preset_option
@json_option
@click.pass_context
def bench(
    ctx: click.Context,
    benchmark: str,
    data: Path | None,
    image_root: Path | None,
    model: str | None,
    revision: str | None,
    out: Path | None,
    limit: int | None,
    source: tuple[str, ...],
    category: tuple[str, ...],
    size_bin: tuple[str, ...],
    shard: str | None,
    skip_missing: bool,
    device: str,
    max_new_tokens: int | None,
    ray_address: str | None,
    ray_actors: int | None,
    ray_num_cpus: int | None,
    as_json: bool,
    mrope_positions: str,
    preset: str | None,
    **knobs: Any,
) -> int:
    """Answer LRS-VQA (or MME-RealWorld-RS) questions, one fsynced JSON line per answer.

    Killed or failed runs resume where they stopped when the same command is
    run again. Shard across GPUs with --shard I/N or torchrun; then run
    `lrsvqa bench merge OUT`. Score with `lrsvqa report OUT`.
    """
    if ctx.invoked_subcommand is not None:
        return 0
    lacking = [
        flag
        for flag, value in (
            ("--data", data),
            ("--image-root", image_root),
            ("--model", model),
            ("--out", out),
        )
        if value is None
    ]
    if lacking:
        raise click.UsageError(f"missing option(s) {', '.join(lacking)}", ctx)
    assert data is not None and image_root is not None and model is not None and out is not None

    from lrsvqa.bench.runner import RunOptions, run_benchmark
    from lrsvqa.bench.shard import resolve_device, resolve_shard
    from lrsvqa.errors import ConfigError, DataError

    if not data.is_file():
        raise DataError(f"{data}: no such annotation file (--data)")
    if not image_root.is_dir():
        raise ConfigError(f"{image_root}: no such folder (--image-root)")
    check_output_folder(out, "--out")
    max_new_tokens, notes = apply_preset_knobs(knobs, preset, max_new_tokens)
    for note in notes:  # options given beside --preset win
        click.echo(f"note: {note}", err=True)
    focus_kw = take(knobs, FOCUS_PARAMS)
    config = focus_config(**focus_kw)  # bad settings fail before anything runs
    # Fields at their default stay None in the run's identity, as before these options, so
    # older run folders still resume.
    kept = {
        param: None if getattr(config, name) == field_default(type(config), name) else value
        for param, name in _OWN.items()
        for value in (getattr(config, name),)
    }
    extra = {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in config.to_dict().items()
        if name not in _OWN.values() and value != field_default(type(config), name)
    }
    options = RunOptions(
        data=data,
        image_root=image_root,
        out=out,
        model=model,
        revision=revision,
        selector=config.selector,
        keep_ratio=kept["keep_ratio"],
        max_tiles=kept["max_tiles"],
        budget=kept["budget"],
        focus_extra=extra,
        # on Ray each actor resolves `auto` for itself (the driver may have no GPU)
        device=device if ray_address is not None else resolve_device(device),
        limit=limit,
        sources=_choices(source),
        categories=_choices(category),
        size_bins=_choices(size_bin),
        shard=resolve_shard(shard),
        skip_missing=skip_missing,
        progress=not as_json,
        focus=config.focus,
        max_new_tokens=max_new_tokens,
        llm_prune=llm_prune_config(**knobs).to_dict(),
        ray=ray_address,
        ray_actors=ray_actors,
        ray_num_cpus=ray_num_cpus,
        benchmark=benchmark,
        mrope_positions=mrope_positions,
        preset=preset,
    )
    summary = run_benchmark(options, make_answerer)
    if as_json:
        echo_json(summary.to_dict())
    else:
        click.echo(
            f"{summary.status}: {summary.done}/{summary.total} answered "
            f"({summary.answered} this run, {summary.skipped} skipped, "
            f"{summary.failed} failed) → {summary.answers_file}"
        )
        if summary.failed:
            click.echo(
                f"{summary.failed} question(s) failed (see {out / options.shard.errors_name}); "
                "run the same command again to retry them",
                err=True,
            )
    return 1 if summary.failed else 0


@bench.command("merge")
@click.argument("run_dir", type=click.Path(path_type=Path))
@json_option
def merge(run_dir: Path, as_json: bool) -> None:
    """Merge RUN_DIR's shard answer files into answers.jsonl (first of duplicates kept)."""
    from lrsvqa.bench.shard import merge_run

    summary = merge_run(run_dir)
    if as_json:
        echo_json(summary.to_dict())
        return
    click.echo(
        f"merged {len(summary.files)} file(s): {summary.answers} answers "
        f"({summary.duplicates} duplicates dropped) → {summary.answers_file}"
    )
    if summary.missing:
        shown = ", ".join(summary.missing[:10]) + (" …" if len(summary.missing) > 10 else "")
        click.echo(
            f"{len(summary.missing)} of {summary.expected} questions have no answer: {shown}",
            err=True,
        )


# `lrsvqa bench prepare` lives in its own module (the conversion cache, issue 16).
from lrsvqa.cli.prepare_cmd import prepare  # noqa: E402

bench.add_command(prepare)
