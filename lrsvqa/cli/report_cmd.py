"""``lrsvqa report``: accuracy, grounding and cost tables of a benchmark run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lrsvqa.cli.options import echo_json, json_option


@click.command("report")
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="Annotation file, for answer files lacking ground truth, category, size bin or hbox.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for report.md, report.json and the charts (default: the run folder).",
)
@json_option
def report(run: Path, data: Path | None, out: Path | None, as_json: bool) -> None:
    """Report on RUN (a run folder or an answer file): accuracy per source and
    category (official scorer), per size bin, beside published results;
    evidence grounding; cost. Writes report.md, report.json and PNG charts."""
    from lrsvqa.bench.mme_report import build_mme_report, is_mme_run, write_mme_report
    from lrsvqa.bench.report import build_report, write_report
    from lrsvqa.errors import DataError

    if data is not None and not data.is_file():
        raise DataError(f"{data}: no such annotation file (--data)")
    result: Any
    if is_mme_run(run):  # MME-RealWorld-RS answers carry their own truth and choices
        result = build_mme_report(run)
        written = write_mme_report(result, out)
    else:
        result = build_report(run, data)
        written = write_report(result, out)
    if as_json:
        echo_json({**result.to_dict(), "written": [str(p) for p in written]})
    else:
        click.echo(result.to_markdown())
        click.echo(f"written: {', '.join(str(p) for p in written)}", err=True)
