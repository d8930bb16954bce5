"""``lrsvqa inspect``: a scene's metadata and pyramid plan, from headers only."""

from __future__ import annotations

import warnings

import click

from lrsvqa.cli.options import bands_option, echo_json, json_option, parse_bands
from lrsvqa.errors import NoOverviewsWarning


@click.command()
@click.argument("scene")
@bands_option
@click.option("--tile-size", default=448, show_default=True, help="Tile side in pixels.")
@click.option(
    "--patch-size",
    default=28,
    show_default=True,
    help="Pixels per vision token (28 for Qwen2/2.5-VL, 14 for CLIP-336 LLaVA).",
)
@click.option("--coarse-tiles", default=3, show_default=True, help="Tiles across level 0.")
@click.option(
    "--check", is_flag=True, help="Also decode the thumbnail and level-0 tiles (finds damage)."
)
@json_option
def inspect(
    scene: str,
    bands: str | None,
    tile_size: int,
    patch_size: int,
    coarse_tiles: int,
    check: bool,
    as_json: bool,
) -> None:
    """Describe SCENE: size, bands, CRS, overviews, blocks, and the pyramid plan."""
    from lrsvqa.io import open_scene
    from lrsvqa.pyramid import DynamicImagePyramid, PyramidConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoOverviewsWarning)  # reported in the output instead
        with open_scene(scene, bands=parse_bands(bands)) as sc:
            info = sc.info()
            config = PyramidConfig(tile_size=tile_size, coarse_tiles=coarse_tiles)
            pyramid = DynamicImagePyramid(sc, config=config)
            plan = pyramid.plan(patch_size)
            if check:
                pyramid.thumbnail()
                pyramid.read_tiles(pyramid.tiles(0))
    if as_json:
        echo_json(
            {"scene": info.to_dict(), "pyramid": {"config": config.to_dict(), "levels": plan}}
        )
        return
    crs = f"EPSG:{info.epsg}" if info.epsg else (info.crs or "none (pixel coordinates)")
    res = f"{info.resolution[0]:.4g} x {info.resolution[1]:.4g}"
    click.echo(f"{info.path}")
    click.echo(
        f"  size        {info.width} x {info.height} px, {info.count} band(s) {', '.join(info.dtypes)}"
    )
    click.echo(
        f"  driver      {info.driver}, {'tiled' if info.tiled else 'striped'} blocks "
        f"{info.block_shape[1]}x{info.block_shape[0]}, compression {info.compression or 'none'}"
    )
    click.echo(
        f"  bands used  {list(info.bands)} as RGB (colour interpretation: {', '.join(info.colorinterp)})"
    )
    click.echo(f"  CRS         {crs}{'  (rotated transform)' if info.rotated else ''}")
    click.echo(f"  resolution  {res} per pixel")
    click.echo(f"  overviews   {', '.join(map(str, info.overviews)) if info.overviews else 'none'}")
    click.echo(f"  nodata      {info.nodata if info.nodata is not None else 'none'}")
    click.echo(f"  read mode   {info.read_mode}")
    click.echo(
        f"  pyramid     {len(plan)} level(s), tile {tile_size} px, "
        f"{(tile_size // patch_size) ** 2} tokens per tile (patch {patch_size} px)"
    )
    for row in plan:
        click.echo(
            f"    level {row['level']}: 1/{row['factor']} scale, {row['width']} x {row['height']} px, "
            f"{row['rows']} x {row['cols']} = {row['tiles']} tiles, {row['tokens']} tokens"
        )
    for message in info.warnings:
        click.echo(f"  warning     {message}")
