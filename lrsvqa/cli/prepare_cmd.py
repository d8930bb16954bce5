"""``lrsvqa bench prepare``: convert a benchmark's big PNG/JPEG scenes into the COG cache."""

from __future__ import annotations

from pathlib import Path

import click

from lrsvqa.cli.options import echo_json, json_option


@click.command("prepare")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    help="Annotation file LRS_VQA_merged.jsonl.",
)
@click.option(
    "--image-root",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder the annotation's image paths are relative to.",
)
@click.option(
    "--jobs",
    "-j",
    type=int,
    default=None,
    help="Conversions in parallel (processes; default min(4, CPUs), each < 1 GB).",
)
@click.option(
    "--errors",
    "errors_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="One JSON line per scene that failed (default: errors.jsonl in the cache folder).",
)
@json_option
def prepare(
    data: Path, image_root: Path, jobs: int | None, errors_file: Path | None, as_json: bool
) -> int:
    """Convert every big scene that cannot be read piecewise into the conversion cache.

    Run it before `lrsvqa bench`: the benchmark then reads windows of tiled COGs.
    Killed? Run the same command again; finished scenes are skipped.
    """
    from lrsvqa.bench.prepare import prepare_benchmark
    from lrsvqa.errors import ConfigError, DataError

    if not data.is_file():
        raise DataError(f"{data}: no such annotation file (--data)")
    if not image_root.is_dir():
        raise ConfigError(f"{image_root}: no such folder (--image-root)")
    summary = prepare_benchmark(
        data, image_root, jobs=jobs, errors_file=errors_file, progress=not as_json
    )
    if as_json:
        echo_json(summary.to_dict())
        return 1 if summary.failed else 0
    c = summary.counts
    click.echo(
        f"{summary.images} scene(s): {c['converted']} converted, {c['cached']} already cached, "
        f"{c['not-needed']} read as they are, {c['missing']} missing, {c['failed']} failed "
        f"({summary.seconds:.0f} s) → {summary.cache_dir} "
        f"({summary.cache_bytes / 2**30:.1f} of {summary.cap_bytes / 2**30:.0f} GB)"
    )
    if summary.evicted:
        click.echo(
            f"{summary.evicted} converted scene(s) were evicted again: the cache cap is too "
            "small for this benchmark; raise LRSVQA_COG_CACHE_GB",
            err=True,
        )
    if summary.failed:
        click.echo(
            f"{len(summary.failed)} scene(s) failed (see {summary.errors_file}); "
            "fix or re-download them and run the same command again",
            err=True,
        )
    return 1 if summary.failed else 0
