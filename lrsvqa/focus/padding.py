"""Padding tokens never enter a focus pass (as the reference's "unpad" before its RFM).

Tiles at the right and bottom edges reach past the image and are padded black. Their
padding tokens are left out of the sequence every focus pass scores (training-free
attention, the distilled RFM and its teacher targets alike), so they take no share of
the softmax: restricting a softmax to a subset and renormalising equals a softmax over
that subset, and here the subset never holds padding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from lrsvqa.pyramid import DynamicImagePyramid, Tile


def inside_mask(pyramid: DynamicImagePyramid, tile: Tile, grid: tuple[int, int]) -> np.ndarray:
    """(rows, cols) mask of the tile's tokens whose footprint lies (partly) inside the image."""
    rows, cols = grid
    if getattr(getattr(pyramid, "config", None), "levels", "pow2") == "release":
        # the release's unpadding: the level's token grid cut with int() (a token row or
        # column only partly inside the image is padding there)
        from lrsvqa.pyramid.grid import release_token_extent

        limit_r, limit_c = release_token_extent(pyramid.level(tile.level), grid)
        r = tile.row * rows + np.arange(rows)
        c = tile.col * cols + np.arange(cols)
        return (r[:, None] < limit_r) & (c[None, :] < limit_c)
    w, h = pyramid.scene.width, pyramid.scene.height
    window = tile.window
    xs = window.col_off + (np.arange(cols) * window.width) // cols
    ys = window.row_off + (np.arange(rows) * window.height) // rows
    return (ys[:, None] < h) & (xs[None, :] < w)


def unpadded_keep(
    pyramid: DynamicImagePyramid, tile: Tile, grid: tuple[int, int]
) -> torch.Tensor | None:
    """Raster indices of the tile's non-padding tokens, or None when it has no padding
    (the segment then stays exactly as before, so cached prefixes still match)."""
    import torch

    mask = inside_mask(pyramid, tile, grid).ravel()
    if mask.all():
        return None
    return torch.as_tensor(np.nonzero(mask)[0], dtype=torch.long)
