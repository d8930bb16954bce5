"""``lrsvqa score``: score LRS-VQA answer files."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("score")
@click.argument("answers", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="Annotation file (LRS_VQA_merged.jsonl) for answers lacking ground_truth/category.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--markdown", is_flag=True, help="Print Markdown tables.")
@click.option(
    "--by",
    default="source",
    show_default=True,
    help="Table keys, comma-separated: source, size_bin (category: always the rows).",
)
@click.option(
    "--mode",
    type=click.Choice(["official", "normalised"]),
    default="official",
    show_default=True,
    help="official: reference rules; normalised: lenient matching, not comparable.",
)
def score(
    answers: tuple[Path, ...],
    data: Path | None,
    as_json: bool,
    markdown: bool,
    by: str,
    mode: str,
) -> None:
    """Score ANSWERS (answer .jsonl files or run folders holding answers*.jsonl).

    One table per source: categories with correct/total/accuracy, then OA and
    AA (the number papers report per source).
    """
    from lrsvqa.bench.scorer import score_files
    from lrsvqa.errors import DataError

    if data is not None and not data.is_file():
        raise DataError(f"{data}: no such annotation file (--data)")
    report = score_files(list(answers), data, by=by, mode=mode)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    elif markdown:
        click.echo(report.to_markdown())
    else:
        click.echo(report.to_text())
