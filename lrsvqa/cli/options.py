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
