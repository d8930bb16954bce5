"""``lrsvqa sample``: write a synthetic GeoTIFF with ships at known positions."""

from __future__ import annotations

import click

from lrsvqa.cli.options import check_output_path, echo_json, json_option


@click.command()
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--size", default=8192, show_default=True, help="Width and height in pixels.")
@click.option("--ships", default=6, show_default=True, help="Number of ships.")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--sparse", is_flag=True, help="Black background; only blocks with ships are written."
)
@json_option
def sample(out: str, size: int, ships: int, seed: int, sparse: bool, as_json: bool) -> None:
    """Write OUT: water, a land strip and bright ships, tiled, with overviews, EPSG:32650."""
    from lrsvqa.errors import ConfigError
    from lrsvqa.testing import make_ship_scene

    if size < 64:
        raise ConfigError(f"--size {size}: use at least 64 px")
    check_output_path(out, "OUT")
    scene = make_ship_scene(out, size, ships=ships, seed=seed, sparse=sparse)
    if as_json:
        echo_json(scene.to_dict())
        return
    click.echo(
        f"wrote {out}: {size} x {size} px, {len(scene.ships)} ships (boxes in {out}.ships.json)"
    )
