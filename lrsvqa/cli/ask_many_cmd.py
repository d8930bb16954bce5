"""``lrsvqa ask-many``: the same questions over many scenes → GeoParquet/GeoJSON/CSV.

The model is built by ``make_answerer`` alone, so tests (and other front ends)
can swap in another answerer by replacing that one function.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lrsvqa.cli.ask_cmd import build_pipeline, model_options
from lrsvqa.cli.options import bands_option, echo_json, json_option, parse_bands

if TYPE_CHECKING:
    from lrsvqa.bench.catalog import ManyOptions


def make_answerer(options: ManyOptions) -> Any:
    """The real answerer: a ``Pipeline`` from the run's model options, on the device
    this process resolves (a Ray worker resolves its own)."""
    from lrsvqa.bench.shard import resolve_device

    model = dict(options.model)
    model["device"] = resolve_device(model.get("device", "auto"))
    return build_pipeline(**model)


@click.command("ask-many")
@click.argument("sources", nargs=-1)
@click.option(
    "-q",
    "--question",
    "questions",
    multiple=True,
    metavar="QUESTION",
    help="A question asked about every scene (repeatable).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Results table: .parquet (GeoParquet), .geojson or .csv. Rerun to resume.",
)
@click.option(
    "--asset",
    default="visual",
    show_default=True,
    help="The STAC asset read from each item.",
)
@bands_option
@click.option(
    "--evidence-table",
    is_flag=True,
    help="Also write OUT's .evidence table: every chosen tile (level, score, geometry).",
)
@click.option(
    "--shard",
    default=None,
    metavar="I/N",
    help="Run shard I of N (by scene); default: RANK/WORLD_SIZE from torchrun, else all.",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Run on Ray: a new local instance, or the cluster at ADDRESS ('auto', ray://…).",
)
@click.option("--ray-actors", type=int, default=None, help="Model actors (default: one per GPU).")
@click.option("--ray-num-cpus", type=int, default=None, help="CPUs of a new local Ray instance.")
@click.option(
    "--merge",
    "merge_only",
    is_flag=True,
    help="Only (re)write OUT's tables from its run folder (after sharded runs).",
)
@model_options
@json_option
def ask_many(
    sources: tuple[str, ...],
    questions: tuple[str, ...],
    out: Path,
    asset: str,
    bands: str | None,
    evidence_table: bool,
    shard: str | None,
    ray_address: str | None,
    ray_actors: int | None,
    ray_num_cpus: int | None,
    merge_only: bool,
    as_json: bool,
    **model_kw: Any,
) -> int:
    """Ask QUESTIONs about every scene of SOURCES: raster files, folders, globs, text
    files of paths/URLs, STAC Item/ItemCollection/Catalog JSON (local or URL).

    One row per scene × question with footprint and evidence in EPSG:4326; failed
    scenes go to OUT's .errors table. Killed? Run the same command again.
    """
    from lrsvqa.bench.catalog import ManyOptions, run_ask_many, write_results
    from lrsvqa.bench.shard import resolve_device, resolve_shard
    from lrsvqa.errors import ConfigError
    from lrsvqa.pipeline import check_question
    from lrsvqa.pipeline.tables import table_format

    table_format(out)
    if merge_only:
        tables = write_results(out)
        if as_json:
            echo_json({k: str(v) for k, v in tables.items()})
        else:
            click.echo("wrote " + ", ".join(str(v) for v in tables.values()))
        return 0
    if not sources:
        raise ConfigError("no SOURCES given: name raster files, folders, globs, lists or STAC")
    if not questions:
        raise ConfigError("no question given: add -q QUESTION (repeatable)")
    for question in questions:
        check_question(question)
    if ray_address is not None and ray_address != "local" and Path(ray_address).exists():
        raise ConfigError(
            f"--ray took {ray_address!r} as a Ray address; write --ray=ADDRESS, or put a bare "
            "--ray after the sources"
        )
    if ray_actors is not None and ray_actors < 1:
        raise ConfigError(f"--ray-actors {ray_actors}: give at least 1")
    if ray_address is None:
        resolve_device(model_kw["device"])  # an unusable device fails now, in one line
    options = ManyOptions(
        sources=sources,
        questions=tuple(dict.fromkeys(questions)),
        out=out,
        model=dict(model_kw),
        asset=asset,
        bands=parse_bands(bands),
        evidence_table=evidence_table,
        shard=resolve_shard(shard),
        progress=not as_json,
        ray=ray_address,
        ray_actors=ray_actors,
        ray_num_cpus=ray_num_cpus,
    )
    summary = run_ask_many(options, make_answerer)
    if as_json:
        echo_json(summary.to_dict())
    else:
        click.echo(
            f"{summary.status}: {summary.done}/{summary.total} answers "
            f"({summary.answered} this run, {summary.failed_scenes} scene(s) failed)"
            + (f" → {summary.tables['answers']}" if summary.tables else "")
        )
        if summary.failed_scenes and summary.tables:
            click.echo(f"failed scenes: see {summary.tables['errors']}", err=True)
        if not summary.tables:
            click.echo(
                f"shard {options.shard.rank}/{options.shard.world_size} done; the last shard "
                f"to finish writes the tables (or run `lrsvqa ask-many --merge --out {out}`)",
                err=True,
            )
    return 1 if summary.failed_scenes else 0
