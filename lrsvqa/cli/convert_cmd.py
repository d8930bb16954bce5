"""``lrsvqa convert``: any raster → tiled, compressed COG with overviews."""

from __future__ import annotations

import click

from lrsvqa.cli.options import check_output_path, echo_json, json_option


@click.command()
@click.argument("src")
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--blocksize", default=512, show_default=True, help="Tile side in pixels.")
@click.option(
    "--compress",
    default="deflate",
    show_default=True,
    type=click.Choice(["deflate", "lzw", "zstd", "webp", "jpeg", "none"]),
)
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists.")
@json_option
def convert(
    src: str, dst: str, blocksize: int, compress: str, overwrite: bool, as_json: bool
) -> None:
    """Convert SRC to DST, a cloud-optimised GeoTIFF that lrsvqa reads piecewise."""
    from lrsvqa.io.convert import convert_to_cog
    from lrsvqa.io.scene import open_scene

    check_output_path(dst, "DST")
    out = convert_to_cog(
        src,
        dst,
        blocksize=blocksize,
        compress=compress,
        overwrite=overwrite,
        progress=not as_json,
    )
    with open_scene(out) as scene:
        info = scene.info()
    if as_json:
        echo_json(info.to_dict())
        return
    click.echo(
        f"wrote {out}: {info.width} x {info.height} px, blocks {info.block_shape[1]}, "
        f"overviews {', '.join(map(str, info.overviews)) or 'none'}"
    )
