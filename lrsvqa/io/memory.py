"""Reads from a raster decoded whole into memory (PNG, JPEG), at the cost of its pixels.

The decoded scene is one band-interleaved uint8 array (bands, H, W). A read crops a
view of it and resizes it in strips of output rows, so a read's working memory is a
few tens of MB however large the crop (a level-0 tile of a 27,000 px scene covers
~100 MB of native pixels) and the whole-scene thumbnail never copies the scene.
"""

from __future__ import annotations

import math

import numpy as np

from lrsvqa.io.window import Window

#: Source bytes one resize strip may copy (its (rows, W, bands) contiguous block), at
#: most 1/64 of the decoded scene: a strip costs ~3x its size (the copy, PIL's input and
#: output), and several read threads resize at once, so strips add a few % at most.
STRIP_BYTES = 8 * 2**20
MIN_STRIP_BYTES = 64 * 2**10
#: Source rows past a strip's edge that the resampling filter may still see.
_MARGIN = 3


def strip_rows(width: int, bands: int, itemsize: int = 1, budget: int = STRIP_BYTES) -> int:
    """How many full-width rows make one strip of about ``budget`` bytes."""
    return max(1, budget // max(1, width * bands * itemsize))


def decode_rows(height: int, rows: int) -> int:
    """Rows per strip when decoding a whole file: never the whole image in one read.

    GDAL's whole-image PNG path (GDAL >= 3.9, libdeflate) returns a truncated file's
    missing rows as zeros without an error; strip reads report it.
    """
    return max(1, min(rows, (height + 1) // 2))


def interleave_rgb(channels: np.ndarray) -> np.ndarray:
    """(1 or 3, h, w) → contiguous (h, w, 3); grey is repeated into R, G and B."""
    if channels.shape[0] == 1:
        channels = np.repeat(channels, 3, axis=0)
    return np.ascontiguousarray(np.moveaxis(channels, 0, -1))


def read_decoded(source: np.ndarray, window: Window, out_shape: tuple[int, int]) -> np.ndarray:
    """``window`` of a decoded (bands, H, W) uint8 array resized to ``out_shape`` → (h, w, bands).

    ``window`` must lie inside the array. Shrinking uses a box filter, enlarging a
    bilinear one (PIL's); strips give the same pixels as one whole resize, since each
    strip is resized over the exact source box of its output rows.
    """
    bands = source.shape[0]
    crop = source[:, window.row_off : window.row_end, window.col_off : window.col_end]
    crop_h, crop_w = crop.shape[1:]
    out_h, out_w = out_shape
    if (crop_h, crop_w) == (out_h, out_w):
        return np.ascontiguousarray(crop.transpose(1, 2, 0))
    from PIL import Image

    shrinking = out_h < crop_h or out_w < crop_w
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    scale_y = crop_h / out_h
    budget = min(STRIP_BYTES, max(MIN_STRIP_BYTES, source.nbytes // 64))
    rows_per_strip = max(1, int(strip_rows(crop_w, bands, 1, budget) / max(scale_y, 1.0)))
    out = np.empty((out_h, out_w, bands), dtype=np.uint8)
    for i0 in range(0, out_h, rows_per_strip):
        i1 = min(out_h, i0 + rows_per_strip)
        top, bottom = i0 * scale_y, i1 * scale_y
        r0 = max(0, math.floor(top) - _MARGIN)
        r1 = min(crop_h, math.ceil(bottom) + _MARGIN)
        part = np.ascontiguousarray(crop[:, r0:r1].transpose(1, 2, 0))
        image = Image.fromarray(part[..., 0] if bands == 1 else part)
        resized = image.resize(
            (out_w, i1 - i0), method, box=(0.0, top - r0, float(crop_w), bottom - r0)
        )
        out[i0:i1] = np.asarray(resized).reshape(i1 - i0, out_w, bands)
    return out
